"""Whole-peer behaviour as a process: a name already claimed on the relay by another key does not
take the holder's place, and does not stop the newcomer either (it logs and retries: anyone could
have made that claim). Only a replacement proven with the peer's own key exits 3 (test_node_relay.py)."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.envelope_kit import group_name
from tests.integration.peer_kit import peer_config
from tests.integration.process_kit import PeerProcess, child_env
from xmesh_agent.mmp.relay.server import RelayServer


@pytest.mark.slow
async def test_second_peer_with_a_claimed_name_is_refused_and_keeps_retrying(temporal_env, tmp_path):
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
            while second.log().count("is held by another connection") < 2:
                assert asyncio.get_running_loop().time() < deadline + 40, second.log()
                assert second.proc.poll() is None, second.log()
                await asyncio.sleep(0.2)
            log = second.log()
            assert "'twin'" in log or "twin/" in log
            assert "identity collision" not in log and "Traceback" not in log
            # the first keeps its place and runs on
            assert first.proc.poll() is None and relay.peers() == [(first_id, "twin")]
            assert await asyncio.to_thread(first.stop) == 0
            assert await asyncio.to_thread(second.stop) == 0
        finally:
            await asyncio.to_thread(first.stop)
            await asyncio.to_thread(second.stop)
