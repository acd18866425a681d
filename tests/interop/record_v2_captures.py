"""Record tests/data/mmp/captures/stock-node-0.12.x-v2-* from two stock nodes with the v2.0 emitter on.

Not a test. `SYM_NODE_DIR=<sym checkout> .venv/bin/python -m tests.interop.record_v2_captures <dir>`
runs four throwaway stock nodes through tests/interop/stock_driver.js (switch forced on): alice and
bob over TCP through a logging proxy (4-byte length framing decoded per direction), carol and dave
relay-only through a logging WebSocket proxy in front of our relay server. It writes the frames and
the nodes' X25519 private keys (so the tests can open the e2e ciphertext).
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

import websockets

from tests.interop.node_process import NodeProcess, driver_command
from xmesh_agent.mmp.relay.server import RelayServer

DRIVER = Path(__file__).with_name("stock_driver.js")
PREFIX = "stock-node-0.12.x-v2"

ALICE = {
    "focus": "rate-limit middleware on /api/login",
    "issue": "no lockout after repeated failures",
    "intent": "draft a token-bucket spec",
    "motivation": "credential stuffing at night",
    "commitment": "bob reviews the draft",
    "perspective": "writer",
    "mood": {"text": "focused", "valence": 0.2, "arousal": 0.3},
}
BOB = {
    "focus": "review of the login rate limit",
    "issue": "per-IP buckets punish shared NAT",
    "intent": "bucket per account first, IP second",
    "motivation": "lockouts hurt real users",
    "perspective": "reviewer",
    "mood": "careful",
}
BOB_REMIX = {
    "focus": "review of the login rate limit",
    "issue": "per-IP buckets punish shared NAT",
    "intent": "ship per-account buckets behind a flag",
    "commitment": "alice: please confirm the thresholds",
    "perspective": "reviewer",
    "mood": "settled",
}


class Driven(NodeProcess):
    """One throwaway stock node (stock_driver.js, v2.0 emitter forced on)."""

    def __init__(self, name: str, room: str, home: Path, **extra: Any):
        opts = {"name": name, "room": room, "emitV2": True, **extra}
        super().__init__(*driver_command(DRIVER, opts, home), name)

    async def start(self) -> dict[str, Any]:  # type: ignore[override]  # returns the started report
        await super().start()
        return await self.wait(lambda e: e.get("event") == "started")

    async def e2e_key(self) -> str:
        await self.command({"cmd": "keys"})
        return (await self.wait(lambda e: e.get("event") == "keys"))["e2ePrivatePkcs8"]

    async def stop(self) -> None:  # type: ignore[override]
        await super().stop({"cmd": "stop"})


class Tap:
    """Frames of one TCP direction, decoded from the 4-byte big-endian length framing."""

    def __init__(self) -> None:
        self.buf = b""
        self.frames: list[Any] = []

    def feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4:
            (size,) = struct.unpack(">I", self.buf[:4])
            if len(self.buf) < 4 + size:
                return
            self.frames.append(json.loads(self.buf[4 : 4 + size]))
            self.buf = self.buf[4 + size :]


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tap: Tap) -> None:
    try:
        while data := await reader.read(65536):
            tap.feed(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def record_tcp(root: Path) -> tuple[list[Any], dict[str, str]]:
    alice = Driven("alice", "room1", root / "alice")
    bob = Driven("bob", "room1", root / "bob")
    taps: list[tuple[list[int], Tap]] = []
    started = await alice.start()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", started["port"])
        src = client_w.get_extra_info("peername")[1]
        up, down = Tap(), Tap()
        taps.extend([([src, started["port"]], up), ([started["port"], src], down)])
        await asyncio.gather(_pump(client_r, server_w, up), _pump(server_r, client_w, down))

    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
    await bob.start()
    port = proxy.sockets[0].getsockname()[1]
    await bob.command(
        {"cmd": "dial", "host": "127.0.0.1", "port": port, "peerId": started["nodeId"], "peerName": "alice"}
    )
    await alice.wait(lambda e: e["event"] == "peer-joined")
    await bob.wait(lambda e: e["event"] == "peer-joined")
    await asyncio.sleep(1.0)
    await alice.command({"cmd": "remember", "categories": ALICE})
    first = await alice.wait(lambda e: e["event"] == "remembered")
    await bob.wait(lambda e: e["event"] == "signature" and e["from"] == "alice")
    await asyncio.sleep(1.0)
    await bob.command({"cmd": "remember", "categories": BOB})
    seen = {first["key"], (await bob.wait(lambda e: e["event"] == "remembered"))["key"]}
    await alice.wait(lambda e: e["event"] == "signature" and e["from"] == "bob")
    remix = {"parents": [{"key": first["key"]}], "to": started["nodeId"]}
    await bob.command({"cmd": "remember", "categories": BOB_REMIX, "opts": remix})
    await alice.wait(lambda e: e["event"] == "signature" and e["key"] not in seen)
    await asyncio.sleep(1.5)
    keys = {"alice": await alice.e2e_key(), "bob": await bob.e2e_key()}
    await alice.stop()
    await bob.stop()
    proxy.close()
    return [[ports, tap.frames] for ports, tap in taps], keys


async def record_relay(root: Path) -> tuple[list[dict[str, str]], dict[str, str]]:
    relay = RelayServer("127.0.0.1", 0, {"sekret"})
    await relay.start()
    lines: list[dict[str, str]] = []

    async def handle(client: Any) -> None:
        async with websockets.connect(relay.url) as upstream:

            async def forward(src: Any, dst: Any, direction: str) -> None:
                async for msg in src:
                    lines.append({"dir": direction, "msg": msg})
                    await dst.send(msg)

            tasks = [
                asyncio.create_task(forward(client, upstream, "c2r")),
                asyncio.create_task(forward(upstream, client, "r2c")),
            ]
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()

    proxy = await websockets.serve(handle, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{proxy.sockets[0].getsockname()[1]}"
    opts = {"relay": url, "relayToken": "sekret", "relayOnly": True}
    dave = Driven("dave", "room2", root / "dave", **opts)
    carol = Driven("carol", "room2", root / "carol", **opts)
    await dave.start()
    await asyncio.sleep(0.5)
    await carol.start()
    await carol.wait(lambda e: e["event"] == "peer-joined")
    await dave.wait(lambda e: e["event"] == "peer-joined")
    await asyncio.sleep(1.0)
    await dave.command({"cmd": "remember", "categories": ALICE})
    await carol.wait(lambda e: e["event"] == "signature" and e["from"] == "dave")
    await asyncio.sleep(1.0)
    await carol.command({"cmd": "remember", "categories": BOB})
    await dave.wait(lambda e: e["event"] == "signature" and e["from"] == "carol")
    await asyncio.sleep(1.5)
    keys = {"carol": await carol.e2e_key(), "dave": await dave.e2e_key()}
    await carol.stop()
    await dave.stop()
    proxy.close()
    await relay.stop()
    return lines, keys


async def main(out: Path) -> None:
    if not os.environ.get("SYM_NODE_DIR"):
        raise SystemExit("set SYM_NODE_DIR to a stock sym 0.12.x checkout (npm installed)")
    with tempfile.TemporaryDirectory(prefix="v2-capture-") as tmp:
        root = Path(tmp)
        for name in ("alice", "bob", "carol", "dave"):
            (root / name).mkdir()
        directions, keys = await record_tcp(root)
        lines, relay_keys = await record_relay(root)
    (out / f"{PREFIX}-tcp.json").write_text(json.dumps(directions, ensure_ascii=False))
    (out / f"{PREFIX}-relay.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (out / f"{PREFIX}-e2e-keys.json").write_text(json.dumps({**keys, **relay_keys}, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
