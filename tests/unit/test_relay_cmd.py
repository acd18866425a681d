"""`xmesh-agent relay` as a real process: token channels over a real WebSocket, clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _listening(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(
                    f"relay exited early: {proc.stdout.read() if proc.stdout else ''}"
                ) from None
            if time.monotonic() > deadline:
                raise AssertionError("relay did not listen in time") from None
            await asyncio.sleep(0.1)


def _relay(port: int, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "xmesh_agent.cli.app", "relay", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, **(env or {})),
        text=True,
    )


async def _auth(port: int, name: str, token: str) -> tuple[object, dict]:
    ws = await connect(f"ws://127.0.0.1:{port}")
    await ws.send(json.dumps({"type": "relay-auth", "nodeId": f"id-{name}", "name": name, "token": token}))
    return ws, json.loads(await asyncio.wait_for(ws.recv(), 5))


async def test_relay_command_serves_token_channels_and_stops_on_sigterm():
    port = _free_port()
    proc = _relay(port, "--token", "alpha", "--token", "beta")
    try:
        await _listening(port, proc)
        a, first = await _auth(port, "a", "alpha")
        assert first == {"type": "relay-peers", "peers": []}
        b, second = await _auth(port, "b", "alpha")
        assert [p["name"] for p in second["peers"]] == ["a"]
        c, third = await _auth(port, "c", "beta")
        assert third["peers"] == [], "another token is another channel"
        await b.send(json.dumps({"payload": {"type": "ping"}}))
        got = json.loads(await asyncio.wait_for(a.recv(), 5))
        while got.get("type") == "relay-peer-joined":
            got = json.loads(await asyncio.wait_for(a.recv(), 5))
        assert got["fromName"] == "b" and got["payload"] == {"type": "ping"}
        bad = await connect(f"ws://127.0.0.1:{port}")
        await bad.send(json.dumps({"type": "relay-auth", "nodeId": "x", "name": "x", "token": "wrong"}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(bad.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4003
        for ws in (a, b, c):
            await ws.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 15)
    assert code == 0
    assert "2 token channel(s)" in (proc.stdout.read() if proc.stdout else "")


async def test_relay_token_from_environment():
    port = _free_port()
    proc = _relay(port, env={"XMESH_RELAY_TOKEN": "from-env"})
    try:
        await _listening(port, proc)
        ws, first = await _auth(port, "a", "from-env")
        assert first["type"] == "relay-peers"
        await ws.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 15)


def test_relay_bad_port_and_busy_port():
    bad = subprocess.run(
        [sys.executable, "-m", "xmesh_agent.cli.app", "relay", "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "--port" in bad.stderr
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = subprocess.run(
            [sys.executable, "-m", "xmesh_agent.cli.app", "relay", "--port", str(holder.getsockname()[1])],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert busy.returncode == 1 and "cannot listen" in busy.stderr


async def test_relay_token_from_environment_is_taken_whole():
    # issue 22: the variable was split on whitespace, so one word of a token got in and the whole
    # token was refused. A token keeps its inner spaces; commas or newlines separate tokens.
    port = _free_port()
    proc = _relay(port, env={"XMESH_RELAY_TOKEN": "correct horse battery, second token\nthird"})
    try:
        await _listening(port, proc)
        for token in ("correct horse battery", "second token", "third"):
            ws, first = await _auth(port, "a", token)
            assert first["type"] == "relay-peers", token
            await ws.close()
        for word in ("correct", "horse", "second"):
            ws = await connect(f"ws://127.0.0.1:{port}")
            await ws.send(json.dumps({"type": "relay-auth", "nodeId": "x", "name": "x", "token": word}))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4003, word
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 15)
    assert "3 token channel(s)" in (proc.stdout.read() if proc.stdout else "")


async def test_deeply_nested_json_is_dropped_without_a_traceback():
    # issue 22: 100000 nested `[` raised RecursionError in the relay's parser, logged as a traceback
    port = _free_port()
    proc = _relay(port, "--token", "t")
    nested = ["[" * 100_000, '{"a":' * 100_000, '{"payload":' + "[" * 100_000]
    try:
        await _listening(port, proc)
        unauthenticated = await connect(f"ws://127.0.0.1:{port}")
        await unauthenticated.send(nested[0])
        a, _ = await _auth(port, "a", "t")
        b, _ = await _auth(port, "b", "t")
        for text in nested:
            await b.send(text)
        await b.send(json.dumps({"payload": {"type": "ping"}}))
        got = json.loads(await asyncio.wait_for(a.recv(), 5))
        while got.get("type") == "relay-peer-joined":
            got = json.loads(await asyncio.wait_for(a.recv(), 5))
        assert got["fromName"] == "b" and got["payload"] == {"type": "ping"}, "the relay kept serving b"
        c, joined = await _auth(port, "c", "t")
        assert sorted(p["name"] for p in joined["peers"]) == ["a", "b"]
        for ws in (a, b, c, unauthenticated):
            await ws.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 15)
    log = proc.stdout.read() if proc.stdout else ""
    assert "Traceback" not in log and "RecursionError" not in log, log[-2000:]
