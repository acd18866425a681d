"""Whole-peer behaviour as a process: a name already claimed on the relay makes `xmesh-agent run` exit 3."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.envelope_kit import group_name
from tests.integration.peer_kit import peer_config
from tests.integration.process_kit import PeerProcess, child_env
from xmesh_agent.mmp.relay.server import RelayServer
from xmesh_agent.workers.peer import EXIT_IDENTITY_COLLISION


@pytest.mark.slow
async def test_second_peer_with_a_claimed_name_exits_with_code_3(temporal_env, tmp_path):
    address = temporal_env.client.service_client.config.target_host
    group = group_name()
    async with RelayServer(duplicate_window=120, ping_interval=1.0) as relay:
        cfg = peer_config("twin", "reviewer", group, mesh={"discovery": [], "relay": relay.url})
        # two machines: separate homes (separate keys), one relay, one name
        first = PeerProcess(cfg, tmp_path, child_env(tmp_path / "home-a", tmp_path / "lb-a", address))
        second = PeerProcess(cfg, tmp_path, child_env(tmp_path / "home-b", tmp_path / "lb-b", address))
        second.toml = tmp_path / "twin-b.toml"
        second.toml.write_text(first.toml.read_text())
        second.runs = 10  # its own log file
        try:
            await asyncio.to_thread(first.start)
            deadline = asyncio.get_running_loop().time() + 30
            while [name for _, name in relay.peers()] != ["twin"]:
                assert asyncio.get_running_loop().time() < deadline, "first twin never reached the relay"
                await asyncio.sleep(0.1)
            [(first_id, _)] = relay.peers()
            second.start(wait=False)
            code = await asyncio.to_thread(second.proc.wait, 40)
            assert code == EXIT_IDENTITY_COLLISION, second.log()
            log = second.log()
            assert "identity collision" in log and "'twin'" in log and "duplicate-rejected" in log
            assert "Traceback" not in log
            # the first keeps its place and runs on
            assert first.proc.poll() is None and relay.peers() == [(first_id, "twin")]
            assert await asyncio.to_thread(first.stop) == 0
        finally:
            await asyncio.to_thread(first.stop)
            await asyncio.to_thread(second.stop)
