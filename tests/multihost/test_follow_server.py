"""A peer follows its machine's embedded Temporal: stopped, then started again on another port (its
old one taken meanwhile), the server is found again; `server stop` names the peers that used it and
`doctor` flags the peer while it has lost Temporal. One host, so the ports are the host's own."""

from __future__ import annotations

import json
import time

import pytest

from tests.multihost.hostkit import PYTHON, HostPeer, agent_toml, cli, published, seeder, wait_until

pytestmark = [pytest.mark.multihost, pytest.mark.slow]

HOLD_PORT = (
    "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
    "s.bind(('127.0.0.1', 7233)); s.listen(); print('holding', flush=True); time.sleep(600)"
)


def _temporal(peer: HostPeer) -> dict:
    return (peer.status() or {}).get("temporal") or {}


def test_peer_follows_the_embedded_server_to_another_port(make_lan) -> None:
    (h1,) = make_lan(1).hosts
    alpha = HostPeer(h1, "alpha", agent_toml("alpha", "reviewer", "lan")).start().wait_up()
    assert _temporal(alpha) == {"address": "127.0.0.1:7233", "embedded": True, "lostSince": None}

    stopped = cli(h1, "server", "stop")
    assert stopped.returncode == 0 and "alpha" in stopped.stdout, stopped.stdout
    h1.spawn([PYTHON, "-c", HOLD_PORT], h1.workdir / "squatter.out")  # 7233 is taken meanwhile
    wait_until(lambda: "holding" in (h1.workdir / "squatter.out").read_text(), 10, "7233 taken")
    wait_until(lambda: _temporal(alpha).get("lostSince"), 15, "alpha notices it lost Temporal")
    doctor = cli(h1, "doctor")
    assert doctor.returncode == 1 and "peer alpha has lost Temporal at 127.0.0.1:7233" in doctor.stdout

    h1.spawn([PYTHON, "-m", "xmesh_agent.cli.app", "server"], h1.workdir / "server.out")
    state = h1.home / "temporal" / "server.json"
    moved = wait_until(lambda: state.exists() and json.loads(state.read_text())["address"], 60, "server back")
    assert moved != "127.0.0.1:7233"
    wait_until(lambda: _temporal(alpha).get("address") == moved, 15, "alpha follows the server")
    assert _temporal(alpha)["lostSince"] is None
    doctor = cli(h1, "doctor")
    assert "lost Temporal" not in doctor.stdout and doctor.returncode == 0, doctor.stdout
    assert "used by: alpha" in cli(h1, "server", "status").stdout

    # The peer works on the new server: a CMB wakes it, and the wake is in that server's visibility.
    proc, out = seeder(
        h1, "seed-h1", "lan", "rate-limit middleware", "--discovery", "registry", "--wait-for", "alpha"
    )
    assert proc.wait(60) == 0, (h1.workdir / "seed-h1.out").read_text()
    (seed,) = published(out)
    wait_until(
        lambda: [w for w in alpha.wakes() if w["trigger_key"] == seed["key"] and w["outcome"] == "emitted"],
        30,
        "alpha's wake on the new server",
    )
    # ...and its output is quiet again: no SDK warnings about the old address piling up.
    before = alpha.stdout_log.stat().st_size
    time.sleep(3)
    grown = alpha.stdout_log.read_text(errors="replace")[before:]
    assert "7233" not in grown, grown[-2000:]
