"""The production shape: one Temporal on its own host (`xmesh-agent server --ip 0.0.0.0`), peers on two
other hosts pointed at it with `[temporal] address`. Every wake of both peers is in that one server,
and a restart of the Temporal host while CMBs arrive loses and doubles no wake."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.multihost.hostkit import PYTHON, HostPeer, agent_toml, cli_json, published, seeder, wait_until
from tests.multihost.lan import Host

pytestmark = [pytest.mark.multihost, pytest.mark.slow]

GROUP = "lan"
PORT, UI_PORT = 7233, 8233


def _start_server(h3: Host) -> subprocess.Popen:
    argv = [PYTHON, "-m", "xmesh_agent.cli.app", "server", "--ip", "0.0.0.0", "--port", str(PORT),
            "--ui-port", str(UI_PORT)]  # fmt: skip
    log = h3.workdir / "server.out"
    starts = log.read_text().count("Temporal dev server at") if log.exists() else 0
    proc = h3.spawn(argv, log)
    wait_until(lambda: log.read_text().count("Temporal dev server at") > starts, 60, "server up")
    assert proc.poll() is None, log.read_text()
    return proc


def _shape(make_lan) -> tuple[Host, HostPeer, HostPeer, subprocess.Popen]:
    h1, h2, h3 = make_lan(3).hosts
    server = _start_server(h3)
    address = f"{h3.ip}:{PORT}"
    alpha = HostPeer(h1, "alpha", agent_toml("alpha", "reviewer", GROUP, temporal={"address": address}))
    beta = HostPeer(h2, "beta", agent_toml("beta", "reviewer", GROUP, temporal={"address": address}))
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda p: p.start().wait_up(), (alpha, beta)))
    wait_until(lambda: "beta" in alpha.connected_to() and "alpha" in beta.connected_to(), 30, "session")
    for peer in (alpha, beta):
        assert peer.status()["temporal"] == {"address": address, "embedded": False, "lostSince": None}
        assert not (peer.host.home / "temporal" / "server.json").exists(), "a peer started its own server"
    return h3, alpha, beta, server


def _server_wakes(h3: Host, peer: str) -> list[dict]:
    """The peer's wakes as the one server lists them, asked on the server's host."""
    return cli_json(
        h3, "wakes", "--temporal-address", f"127.0.0.1:{PORT}", "--peer", peer, "--json", "-n", "1000"
    )


def _all_in_server(h3: Host, peer: HostPeer, keys: list[str]) -> list[dict] | None:
    rows = _server_wakes(h3, peer.name)
    return rows if set(keys) <= {w["trigger_key"] for w in rows} else None


def _wake_ids(peer: HostPeer) -> set[str]:
    return {r["data"]["wake_id"] for r in peer.events("wake-started")}


def test_peers_on_two_hosts_share_one_temporal_on_a_third(make_lan) -> None:
    h3, alpha, beta, _ = _shape(make_lan)
    proc, out = seeder(
        alpha.host, "seed-h1", GROUP, "rate-limit middleware on /api/login", "--discovery", "registry",
        "--wait-for", "alpha",
    )  # fmt: skip
    assert proc.wait(60) == 0
    (seed,) = published(out)
    wait_until(lambda: "alpha" in beta.wake_authors() and "beta" in alpha.wake_authors(), 40, "both answered")
    for peer in (alpha, beta):
        started = _wake_ids(peer)
        visible = wait_until(
            lambda p=peer, s=started: (
                (ids := {w["workflow_id"] for w in _server_wakes(h3, p.name)}) >= s and ids
            ),
            20,
            f"{peer.name}'s wakes in the shared server",
        )
        assert visible == started  # every wake the peer started, and none it did not
    assert any(w["trigger_key"] == seed["key"] for w in _server_wakes(h3, "alpha"))
    # The Web UI of that server answers from the peers' hosts (asked inside host 1, never from here).
    fetch = f"import urllib.request as u; print(u.urlopen('http://{h3.ip}:{UI_PORT}/', timeout=10).status)"
    assert alpha.host.run([PYTHON, "-c", fetch]).stdout.strip() == "200"


def test_temporal_host_restart_while_cmbs_arrive_loses_and_doubles_no_wake(make_lan) -> None:
    h3, alpha, beta, server = _shape(make_lan)
    proc, out = seeder(
        alpha.host, "seed-h1", GROUP, "rate-limit middleware on /api/login", "--discovery", "registry,mdns",
        "--wait-for", "alpha", "--wait-for", "beta", "--count", "8", "--every", "1.5",
    )  # fmt: skip
    wait_until(lambda: len(published(out)) >= 2, 30, "first CMBs out")
    server.send_signal(signal.SIGTERM)  # the Temporal host goes down while CMBs keep coming
    assert server.wait(30) == 0
    down_at = time.time()
    wait_until(lambda: len(published(out)) >= 5, 30, "CMBs published while Temporal is down")
    _start_server(h3)  # back on the same address and database
    missed = [p for p in published(out) if p["at"] > down_at]
    assert missed, "no CMB arrived while Temporal was down"
    assert proc.wait(60) == 0
    keys = [p["key"] for p in published(out)]
    assert len(keys) == 8
    for peer in (alpha, beta):
        wait_until(lambda p=peer: set(keys) <= set(p.woken_by()), 60, f"{peer.name} woke on every seed")
        assert max(peer.woken_by().values()) == 1
        rows = wait_until(
            lambda p=peer: _all_in_server(h3, p, keys), 30, f"{peer.name}'s wakes in the server"
        )
        per_trigger = Counter(w["trigger_key"] for w in rows)
        assert max(per_trigger.values()) == 1, per_trigger  # one workflow run per CMB, never two
        assert {w["workflow_id"] for w in rows} == _wake_ids(peer)
