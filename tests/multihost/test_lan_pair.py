"""Two hosts of one LAN, each its own home and embedded Temporal: the peers meet by DNS-SD and answer
each other's tasks, both ways."""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.multihost.hostkit import HostPeer, agent_toml, cli_json, wait_until

pytestmark = [pytest.mark.multihost, pytest.mark.slow]

GROUP = "lan"


def _answers_to(peer: HostPeer, author: str, parent_key: str) -> list[str]:
    """Keys of CMBs by `author` stored by `peer` whose parents include `parent_key`."""
    db = peer.dir / "cmbs.db"
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        rows = conn.execute("SELECT key, body FROM cmbs WHERE created_by = ?", (author,)).fetchall()
    out = []
    for key, body in rows:
        lineage = json.loads(body).get("lineage") or {}
        if parent_key in (lineage.get("parents") or []):
            out.append(key)
    return out


def _seed_and_check(lan_host, seed_name: str, focus: str, via: HostPeer, answerer: HostPeer) -> None:
    """`xmesh-agent publish` on `lan_host`, over the transports of `via`'s config (the peer of that
    host), directs a task to `answerer` on the other host; it wakes on it and emits, and its answer
    reaches `via`."""
    seed = cli_json(
        lan_host, "publish", "--config", str(via.config), "--to", answerer.name, "--focus", focus,
        "--name", seed_name, "--wait", "20", "--json",
    )  # fmt: skip
    assert answerer.name in str(seed["delivered_to"]), seed
    wait_until(lambda: answerer.woken_by()[seed["key"]] == 1, 30, f"{answerer.name} woken by {seed_name}")
    answers = wait_until(
        lambda: _answers_to(via, answerer.name, seed["key"]), 40, f"{answerer.name}'s answer at {via.name}"
    )
    assert len(answers) == 1
    rows = [w for w in answerer.wakes() if w["trigger_key"] == seed["key"]]
    assert [(w["outcome"], w["trigger_author"]) for w in rows] == [("emitted", seed_name)]


def test_two_hosts_default_configs_meet_by_dns_sd_and_answer_both_ways(make_lan) -> None:
    lan = make_lan(2)
    h1, h2 = lan.hosts
    mesh = {"host": "0.0.0.0", "discovery": ["registry", "mdns"]}
    alpha = HostPeer(h1, "alpha", agent_toml("alpha", "reviewer", GROUP, mesh=mesh))
    beta = HostPeer(h2, "beta", agent_toml("beta", "reviewer", GROUP, mesh=mesh))
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda p: p.start().wait_up(), (alpha, beta)))
    wait_until(
        lambda: "beta" in alpha.connected_to() and "alpha" in beta.connected_to(), 30, "DNS-SD session"
    )
    (link,) = [e["data"] for e in alpha.events("peer-connected") if e["data"]["name"] == "beta"]
    assert link["transport"] == "tcp" and link["address"].startswith(f"{h2.ip}:"), link

    # A task published on each host, over that host's peer's transports, to the peer on the other.
    _seed_and_check(h1, "seed-h1", "rate-limit middleware on /api/login", alpha, beta)
    _seed_and_check(h2, "seed-h2", "retry budget for the billing webhook", beta, alpha)

    for peer in (alpha, beta):
        assert max(peer.woken_by().values()) == 1, f"{peer.name} woke twice on one CMB"
