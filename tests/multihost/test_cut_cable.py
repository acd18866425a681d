"""A cut cable: host 2's link goes down for 30 s while host 1 keeps publishing, then comes back.

The sessions re-form by themselves; what host 2's peer missed reaches it once the link is back
(host 1's nodes replay their CMBs since they last heard from it, and a reply whose parent it lacks
is completed by cmb-fetch); nothing is delivered twice (one wake per CMB). Prints how long the
sessions took to re-form and how many CMBs were replayed."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from tests.multihost.hostkit import HostPeer, agent_toml, published, seeder, wait_until

pytestmark = [pytest.mark.multihost, pytest.mark.slow]

GROUP = "lan"
CUT_SECONDS = 30
REFORM_TARGET_SECONDS = 15


def _ts(record: dict) -> float:
    return datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()


def _reconnected_at(peer: HostPeer, other: str, after: float) -> float | None:
    times = [_ts(e) for e in peer.events("peer-connected") if e["data"]["name"] == other and _ts(e) > after]
    return min(times) if times else None


def _replayed(events: list[dict], to: str, after: float) -> int:
    return sum(
        e["count"] for e in events if e.get("evt") == "cmb-replayed" and e["to"] == to and e["at"] > after
    )


def test_cut_cable_heals_and_loses_nothing(make_lan) -> None:
    lan = make_lan(2)
    h1, h2 = lan.hosts
    alpha = HostPeer(h1, "alpha", agent_toml("alpha", "reviewer", GROUP))
    beta = HostPeer(h2, "beta", agent_toml("beta", "reviewer", GROUP))
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda p: p.start().wait_up(), (alpha, beta)))
    wait_until(lambda: "beta" in alpha.connected_to() and "alpha" in beta.connected_to(), 30, "session")

    every, count = 2.0, 20  # 40 s of publishing: before, during and after the cut
    proc, out = seeder(
        h1, "seed-h1", GROUP, "rate-limit middleware on /api/login", "--discovery", "registry,mdns",
        "--wait-for", "alpha", "--wait-for", "beta", "--count", str(count), "--every", str(every),
        "--linger", "25",
    )  # fmt: skip
    wait_until(lambda: len(published(out)) >= 2, 30, "first CMBs before the cut")
    cut_at = time.time()
    h2.cut()
    time.sleep(CUT_SECONDS)
    h2.restore()
    back_at = time.time()
    h2.wait_link_up()

    reform = {}
    for other in ("alpha", "seed-h1"):
        at = wait_until(lambda o=other: _reconnected_at(beta, o, back_at), 40, f"beta and {other} again")
        reform[other] = at - back_at
    assert proc.wait(90) == 0, (h1.workdir / "seed-h1.out").read_text()[-3000:]
    keys = [p["key"] for p in published(out)]
    during = [p["key"] for p in published(out) if cut_at < p["at"] < back_at]
    assert len(keys) == count and len(during) >= CUT_SECONDS / every - 2

    # Nothing lost: every seed, and everything alpha said, reaches beta and wakes it once.
    wait_until(lambda: set(keys) <= set(beta.woken_by()), 40, "beta woke on every seed")
    alpha_said = {e["data"]["key"] for e in alpha.events("emitted")}
    wait_until(lambda: alpha_said <= set(beta.woken_by()) | set(keys), 40, "beta has all alpha said")
    time.sleep(2)  # late duplicates, if any, would land now
    for peer in (alpha, beta):
        doubled = {k: n for k, n in peer.woken_by().items() if n > 1}
        assert not doubled, f"{peer.name} woke twice on {doubled}"
    seeder_events = [
        json.loads(line)
        for line in (h1.workdir / "seed-h1.out").read_text().splitlines()
        if line.startswith("{")
    ]
    replayed_seed = _replayed(seeder_events, "beta", back_at - 1)
    replayed_alpha = sum(
        e["data"]["count"]
        for e in alpha.events("cmb-replayed")
        if e["data"]["to"] == "beta" and _ts(e) > back_at - 1
    )
    print(
        f"\ncut {CUT_SECONDS}s: sessions re-formed {reform['alpha']:.1f}s (alpha) / {reform['seed-h1']:.1f}s "
        f"(seeder) after the link came back; {len(during)} CMBs published during the cut; replayed to beta: "
        f"{replayed_seed} by the seeder, {replayed_alpha} by alpha"
    )
    assert max(reform.values()) < REFORM_TARGET_SECONDS, reform
    assert replayed_seed >= len(during)
