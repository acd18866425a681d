"""Every read command's `--json`, as a script meets it: a real `xmesh-agent` process whose stdout parses
as JSON with every key, at every depth, in snake_case. Two in-process peers on the session's Temporal
answer on their control sockets (real Unix sockets) and have woken once, so no reply is empty."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import typer

from tests.integration.peer_kit import eventually, peer_config, start_peer
from tests.json_kit import non_snake_keys
from xmesh_agent.cli.app import app
from xmesh_agent.config import to_toml
from xmesh_agent.identity import load_identity
from xmesh_agent.mmp.cmb import mint
from xmesh_agent.workers.client import wake_id
from xmesh_agent.workflows.wake import WakeWorkflow

CLI = str(Path(sys.executable).parent / "xmesh-agent")

# Every command that reads and prints state. `schema` prints a JSON Schema (its keys are that standard's);
# `logs --json` prints one JSON object per line; the rest print one JSON document.
READ_COMMANDS = {
    "status",
    "cost",
    "peers",
    "trace",
    "logs",
    "watch",
    "wakes",
    "server status",
    "doctor",
    "dry-run",
    "fingerprint",
    "trust list",
    "trust seen",
    "recall",
    "show",
}
WRITE_COMMANDS_WITH_JSON = {"publish", "approve", "deny"}  # what they did, in the same key style
STREAMS_WITH_JSON = {"tail"}  # JSON lines as they happen (tests/integration/test_tail_cli.py)


def _commands_with_json(group: Any, prefix: str = "") -> set[str]:  # a click-style command group
    found: set[str] = set()
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if any("--json" in getattr(p, "opts", ()) for p in command.params):
            found.add(path)
        if hasattr(command, "commands"):
            found |= _commands_with_json(command, f"{path} ")
    return found


def test_every_read_command_takes_json() -> None:
    assert (
        _commands_with_json(typer.main.get_command(app))
        == READ_COMMANDS | WRITE_COMMANDS_WITH_JSON | STREAMS_WITH_JSON
    )


async def _run(*args: str) -> tuple[int, str, str]:
    result = await asyncio.to_thread(
        subprocess.run, [CLI, *args], capture_output=True, text=True, timeout=60, env=dict(os.environ)
    )
    return result.returncode, result.stdout, result.stderr


async def test_every_read_commands_json_parses_with_snake_case_keys(temporal_env, tmp_path: Path) -> None:
    client, group = temporal_env.client, f"t-{uuid.uuid4().hex[:8]}"
    address = client.service_client.config.target_host
    writer = await start_peer(client, peer_config("json-w", "writer", group))
    reviewer = await start_peer(client, peer_config("json-r", "reviewer", group))
    try:
        await eventually(lambda: len(writer.node.peers()) == 1 and len(reviewer.node.peers()) == 1)
        seed = mint(
            {"focus": "rate limiter", "intent": "implement a token bucket per API key"},
            identity=writer.identity,
            group=group,
            created_at=1_760_000_000_000,
        )
        await writer.node.publish(seed)
        handle = client.get_workflow_handle_for(WakeWorkflow.run, wake_id("json-r", seed.key))
        await eventually(lambda: reviewer.control.seen.get("emitted", 0) >= 1, timeout=30)
        reply_key = (await handle.result()).emitted_key
        assert reply_key
        config = tmp_path / "json-r.toml"
        config.write_text(to_toml(reviewer.config))
        pinned = load_identity("json-w")
        code, _, err = await _run(
            "trust", "add", "--group", group, "--peer", "json-w", "--public-key", pinned.public_key_b64url
        )
        assert code == 0, err

        async def visible() -> bool:
            code, out, _ = await _run("wakes", "--peer", "json-r", "--json", "--temporal-address", address)
            return code == 0 and bool(json.loads(out))

        await eventually(visible, timeout=30, interval=0.5)
        runs: dict[str, list[str]] = {
            "status": ["status", "json-r"],
            "cost": ["cost", "json-r"],
            "peers": ["peers"],
            "trace": ["trace", "json-r", reply_key],
            "logs": ["logs", "json-r", "-n", "200"],
            "watch": ["watch", "--once"],
            "wakes": ["wakes", "--peer", "json-r", "--temporal-address", address],
            "server status": ["server", "status"],
            "doctor": ["doctor"],
            "dry-run": ["dry-run", "--config", str(config), "--temporal-address", address],
            "fingerprint": ["fingerprint", "json-w"],
            "trust list": ["trust", "list", "--group", group],
            "trust seen": ["trust", "seen", "--peer", "json-r"],
            "recall": ["recall", "rate limiter", "--peer", "json-r"],
            "show": ["show", reply_key, "--peer", "json-r"],
        }
        assert set(runs) == READ_COMMANDS
        replies: dict[str, Any] = {}
        for name, args in runs.items():
            if name == "logs":
                continue
            code, out, err = await _run(*args, "--json")
            assert code in ((0, 1) if name == "doctor" else (0,)), f"{name}: {err}"
            replies[name] = data = json.loads(out)
            assert data, f"{name} --json printed an empty reply"
            assert non_snake_keys(data) == [], f"{name} --json: {non_snake_keys(data)}"
        code, out, err = await _run(*runs["logs"], "--json")
        assert code == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        assert events and all(non_snake_keys(e) == [] for e in events), [non_snake_keys(e) for e in events]
    finally:
        await writer.stop()
        await reviewer.stop()
    # a few keys that were camelCase before, by the names scripts now use
    assert replies["status"]["node_id"] == reviewer.identity.node_id
    assert (
        replies["status"]["uptime_seconds"] >= 0
        and replies["status"]["wakes"]["seen_this_run"]["emitted"] >= 1
    )
    assert replies["cost"]["run_id"] and "hour_usd" in replies["cost"]
    assert replies["trust list"] == [
        {"peer": "json-w", "keyprint": pinned.keyprint, "public_key": pinned.public_key_b64url}
    ]
    bound = {r["identity"]: r for r in replies["trust seen"] if r["kind"] == "node_id"}
    assert bound[writer.identity.node_id.lower()]["public_key"] == pinned.public_key_b64url
    assert replies["dry-run"]["passed"] is True and replies["wakes"][0]["workflow_id"] == handle.id
    assert any(e["evt"] == "wake-started" and "wake_id" in e["data"] for e in events)
