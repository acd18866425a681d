"""`watch`: one live table for every peer running on this machine."""

from __future__ import annotations

import asyncio
import json
import uuid

from typer.testing import CliRunner

from tests.integration.peer_kit import peer_config, start_peer
from xmesh_agent.cli.app import app

runner = CliRunner()


async def cli(*args: str):
    return await asyncio.to_thread(runner.invoke, app, list(args))


async def test_watch_once_shows_each_running_peer(temporal_env):
    group = f"t-{uuid.uuid4().hex[:8]}"
    first = await start_peer(temporal_env.client, peer_config("watch-a", "writer", group))
    second = await start_peer(temporal_env.client, peer_config("watch-b", "reviewer", group))
    try:
        result = await cli("watch", "--once", "--no-color")
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines[0].startswith("2 peer(s) at ")
        assert lines[1].split()[:3] == ["PEER", "STATE", "MODEL"]
        rows = {line.split()[0]: line.split() for line in lines[3:]}
        assert set(rows) == {"watch-a", "watch-b"}
        assert rows["watch-a"][1:4] == ["running", "offline/offline-echo", group]
        assert rows["watch-a"][-1] == "closed" and rows["watch-a"][-4:-1] == ["0/10", "0/100", "0/1000"]
        assert "\x1b[" not in result.output

        as_json = await cli("watch", "--once", "--json")
        data = json.loads(as_json.output)
        assert [d["peer"] for d in data] == ["watch-a", "watch-b"]
        assert data[0]["status"]["wakes"]["visibility"] is None  # brief: no visibility queries
    finally:
        await first.stop()
        await second.stop()
    after = await cli("watch", "--once", "--no-color")
    assert "no peers running on this machine" in after.output
