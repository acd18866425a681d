"""Three hosts and no multicast: the peers on hosts 1 and 2 can meet only through the relay on host 3."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.multihost.hostkit import PYTHON, HostPeer, agent_toml, published, seeder, wait_until

pytestmark = [pytest.mark.multihost, pytest.mark.slow]

GROUP = "lan"
TOKEN = "multihost-relay-token"


def test_peers_meet_only_through_the_relay_on_a_third_host(make_lan) -> None:
    lan = make_lan(3, multicast=False)
    h1, h2, h3 = lan.hosts
    relay = h3.spawn(
        [
            PYTHON,
            "-m",
            "xmesh_agent.cli.app",
            "relay",
            "--host",
            "0.0.0.0",
            "--port",
            "8765",
            "--token",
            TOKEN,
        ],
        h3.workdir / "relay.out",
    )
    url = f"ws://{h3.ip}:8765"
    mesh = {
        "relay": url,
        "relay_token": TOKEN,
    }  # and the defaults: all interfaces, DNS-SD (no multicast here)
    alpha = HostPeer(h1, "alpha", agent_toml("alpha", "reviewer", GROUP, mesh=mesh))
    beta = HostPeer(h2, "beta", agent_toml("beta", "reviewer", GROUP, mesh=mesh))
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda p: p.start().wait_up(), (alpha, beta)))
    wait_until(lambda: "beta" in alpha.connected_to() and "alpha" in beta.connected_to(), 30, "relay session")
    assert relay.poll() is None
    for peer, other in ((alpha, "beta"), (beta, "alpha")):
        (hello,) = [e["data"] for e in peer.events("peer-connected") if e["data"]["name"] == other]
        assert hello["transport"] == "relay", hello  # DNS-SD had no multicast to work with

    proc, out = seeder(
        h1, "seed-h1", GROUP, "rate-limit middleware on /api/login", "--discovery", "registry",
        "--wait-for", "alpha",
    )  # fmt: skip
    assert proc.wait(60) == 0, (h1.workdir / "seed-h1.out").read_text()
    (seed,) = published(out)
    # alpha (host 1) takes the task up; its answer crosses the relay and beta (host 2) answers it.
    wait_until(lambda: alpha.woken_by()[seed["key"]] == 1, 30, "alpha woken by the seed")
    wait_until(lambda: "alpha" in beta.wake_authors(), 30, "beta woken by alpha's answer, via the relay")
    wait_until(lambda: "beta" in alpha.wake_authors(), 30, "alpha woken by beta's answer, via the relay")
    emitted = [w for w in beta.wakes() if w["trigger_author"] == "alpha" and w["outcome"] == "emitted"]
    assert emitted, beta.wakes()
    for peer in (alpha, beta):
        assert max(peer.woken_by().values()) == 1
    # Still no direct session (a TCP one would be preferred over the relay and shown here).
    assert alpha.mesh_view()["beta"]["transport"] == "relay"
    assert beta.mesh_view()["alpha"]["transport"] == "relay"
