"""Two hosts of one LAN, each its own home and embedded Temporal, each running one of the original
runtime's configs as it is: the peers meet by DNS-SD and answer each other's tasks, both ways."""

from __future__ import annotations

import json
import re
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.multihost.hostkit import HostPeer, cli_json, wait_until

pytestmark = [pytest.mark.multihost, pytest.mark.slow]

ORIGINAL_CONFIGS = Path(__file__).resolve().parents[1] / "data" / "original-configs"


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


def original_config(name: str) -> str:
    """One of tests/data/original-configs with its [model] section swapped for the offline adapter."""
    text = (ORIGINAL_CONFIGS / name).read_text()
    return re.sub(r"\[model\]\n.*?(?=\n\[)", '[model]\nadapter = "offline"\n', text, count=1, flags=re.S)


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
    # The original runtime's own configs, unchanged but for the model (offline instead of a paid API):
    # nothing in them about host or discovery.
    alpha = HostPeer(h1, "reviewer-01", original_config("reviewer.toml"))
    beta = HostPeer(h2, "writer-01", original_config("writer.toml"))
    assert "host" not in alpha.config.read_text() and "discovery" not in alpha.config.read_text()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda p: p.start().wait_up(), (alpha, beta)))
    wait_until(
        lambda: beta.name in alpha.connected_to() and alpha.name in beta.connected_to(), 30, "DNS-SD session"
    )
    (link,) = [e["data"] for e in alpha.events("peer-connected") if e["data"]["name"] == beta.name]
    assert link["transport"] == "tcp" and link["address"].startswith(f"{h2.ip}:"), link

    # A task published on each host, over that host's peer's transports, to the peer on the other.
    _seed_and_check(h1, "seed-h1", "rate-limit middleware on /api/login", alpha, beta)
    _seed_and_check(h2, "seed-h2", "retry budget for the billing webhook", beta, alpha)

    for peer in (alpha, beta):
        assert max(peer.woken_by().values()) == 1, f"{peer.name} woke twice on one CMB"
