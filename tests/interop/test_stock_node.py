"""LIVE interop with a real stock `sym` node (0.12.x): it publishes, our peer wakes and answers, the
stock node accepts the answer. Over same-host TCP (loopback registry) and over our relay server,
with the stock node's 0.12.1 emitter (`tcp`, `relay`) and with its v2.0 emitter (`v2`, `v2-relay`);
and over TCP found by DNS-SD (`mdns`: the stock node's own Bonjour, no registry on either side).

Skipped unless SYM_NODE_DIR names a checkout of the public `sym-bot/sym` repository with its npm
dependencies installed (docs/interop.md says how). The v2 cases use SYM_NODE_V2_DIR, a checkout
built with `lib/emit-policy.js` MMP_EMIT_V2 = true, when it is set; otherwise SYM_NODE_DIR with the
switch turned on at load time by the driver. The stock node runs in its own process with a scratch
HOME; tests/interop/stock_driver.js starts it and reports what IT observed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.peer_kit import eventually, peer_config
from tests.interop.node_process import NodeProcess, driver_command
from xmesh_agent.mmp.dialects.v2 import V2_SUITE
from xmesh_agent.mmp.e2e import aes_gcm_available
from xmesh_agent.mmp.relay.server import RelayServer
from xmesh_agent.workers.client import wake_id
from xmesh_agent.workers.peer import Peer
from xmesh_agent.workflows.wake import WakeWorkflow

SYM_NODE_DIR = os.environ.get("SYM_NODE_DIR", "")
SYM_NODE_V2_DIR = os.environ.get("SYM_NODE_V2_DIR", "")
DRIVER = Path(__file__).with_name("stock_driver.js")
STOCK = "stock-writer"
OURS = "xm-reviewer"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("node"), reason="install node.js to run a stock node"),
]


def _checkout(path: str) -> bool:
    return bool(path) and Path(path, "lib", "node.js").exists()


def _stock_checkout(v2: bool) -> tuple[str, bool | None]:
    """(checkout, emitV2 to force or None) for a case; skips when no usable checkout is set."""
    if v2 and _checkout(SYM_NODE_V2_DIR):
        return SYM_NODE_V2_DIR, None  # its own switch, already on: the test checks it is
    if not _checkout(SYM_NODE_DIR):
        pytest.skip("set SYM_NODE_DIR to a stock sym 0.12.x checkout (npm installed)")
    if v2 and not Path(SYM_NODE_DIR, "lib", "emit-policy.js").exists():
        pytest.skip("this stock checkout has no v2.0 emitter switch (lib/emit-policy.js)")
    return SYM_NODE_DIR, v2


class StockNode(NodeProcess):
    """The stock node process (stock_driver.js on `checkout`): JSON-line reports in, commands out."""

    def __init__(self, home: Path, opts: dict[str, Any], checkout: str):
        super().__init__(*driver_command(DRIVER, opts, home, SYM_NODE_DIR=checkout), "stock node")

    async def start(self) -> dict[str, Any]:  # type: ignore[override]  # returns the started report
        await super().start()
        return await self.wait(lambda e: e.get("event") == "started", 20)

    async def stop(self) -> None:  # type: ignore[override]
        await super().stop({"cmd": "stop"})


@pytest.mark.parametrize(
    ("transport", "v2"),
    [("tcp", False), ("relay", False), ("tcp", True), ("relay", True), ("mdns", False)],
    ids=["tcp", "relay", "v2", "v2-relay", "mdns"],
)
async def test_stock_node_publishes_we_wake_and_it_accepts_our_answer(
    temporal_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str, v2: bool
) -> None:
    checkout, emit_v2 = _stock_checkout(v2)
    suite = V2_SUITE if v2 else None  # what the stock node signs under, and what we must answer in
    client = temporal_env.client
    # unique texts too: wake ids are <peer>-<cmb key>, and a root key is a function of its texts
    group = f"t-{uuid.uuid4().hex[:8]}"
    stock_home = tmp_path / "stock-home"
    stock_home.mkdir()
    # our registry IS the stock node's ~/.sym/loopback
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(stock_home / ".sym" / "loopback"))
    relay: RelayServer | None = None
    stock_opts: dict[str, Any] = {"name": STOCK, "room": group}
    if emit_v2 is not None:
        stock_opts["emitV2"] = emit_v2
    mesh: dict[str, Any] = {"discovery": ["registry"]}
    if transport == "mdns":  # the stock node's own Bonjour adverts and browse; our DNS-SD, no registry
        stock_opts["mdns"] = True
        mesh = {"discovery": ["mdns"]}
    if transport == "relay":
        relay = RelayServer("127.0.0.1", 0, {"interop-token"})
        await relay.start()
        stock_opts.update(relay=relay.url, relayToken="interop-token", relayOnly=True)
        mesh = {"discovery": [], "relay": relay.url, "relay_token": "interop-token"}

    stock = StockNode(stock_home, stock_opts, checkout)
    peer: Peer | None = None
    our_events: list[tuple[str, dict]] = []
    try:
        await stock.start()
        peer = Peer(peer_config(OURS, "reviewer", group, mesh=mesh), client)
        peer.node.on_event = lambda name, data: our_events.append((name, data))
        await peer.start()
        assert peer.node.e2e_keypair is not None or not aes_gcm_available()

        # both sides see each other, over the transport under test
        await stock.wait(lambda e: e["event"] == "peer-joined" and e["name"] == OURS, 40)
        await eventually(lambda: [p for p in peer.node.peers() if p.name == STOCK], timeout=20)
        [seen] = [p for p in peer.node.peers() if p.name == STOCK]
        wire = "tcp" if transport == "mdns" else transport  # mDNS finds the address; the session is TCP
        assert seen.transport == wire and seen.version.startswith("0.")

        # the stock node publishes one CMB (signed mmp-sig-v2 or mmp-sig-v2.0, and encrypted to us)
        await stock.command(
            {
                "cmd": "remember",
                "categories": {
                    "focus": f"login endpoint rate limiting ({group})",
                    "issue": "credential stuffing spikes on /api/login at night",
                    "intent": "add a token bucket per account and per IP",
                    "motivation": "lockouts are hurting real users",
                },
            }
        )
        remembered = await stock.wait(lambda e: e["event"] == "remembered")
        assert remembered["key"] and remembered["signed"] is True and remembered["suite"] == suite

        # our peer verified, decrypted, stored it and woke on it
        def stock_cmb():
            return next(iter(peer.store.recent_by_author(STOCK, 1)), None)

        trigger = await eventually(stock_cmb, timeout=30)
        assert trigger.text("focus") == f"login endpoint rate limiting ({group})"
        assert [d for n, d in our_events if n == "cmb-rejected"] == []
        assert peer.node.verifier.has_signed(STOCK)  # its signature checked out here
        dialects = [d["dialect"] for n, d in our_events if n == "peer-dialect" and d["name"] == STOCK]
        assert dialects == ([V2_SUITE] if v2 else [])
        if aes_gcm_available():
            await stock.wait(
                lambda e: e["event"] == "log" and "E2E encrypted categories for peer" in e["msg"]
            )
        handle = client.get_workflow_handle_for(WakeWorkflow.run, wake_id(OURS, trigger.key))
        result = await asyncio.wait_for(handle.result(), 90)
        assert result.outcome == "emitted", result
        answer = peer.store.get(result.emitted_key)
        assert answer is not None and answer.parents == [trigger.key] and answer.created_by == OURS

        # the stock node got it (ciphertext on the wire), verified our signature, and accepted it
        frame = await stock.wait(lambda e: e["event"] == "cmb-frame" and e["from"] == OURS)
        assert frame["encrypted"] is aes_gcm_available() and frame["suite"] == suite
        sig = await stock.wait(lambda e: e["event"] == "signature" and e["from"] == OURS)
        assert sig["verified"] is True and sig["rejected"] is False
        # cmb-accepted is the stock node's own event: it stored a fused remix of our answer, naming
        # us among its sources and carrying our text
        accepted = await stock.wait(lambda e: e["event"] == "cmb-accepted" and OURS in (e["source"] or ""))
        assert accepted["remixed"] is True and answer.text("issue") in accepted["content"]
    finally:
        if peer is not None:
            await peer.stop()
        await stock.stop()
        if relay is not None:
            await relay.stop()
        print(f"\n--- stock node ({transport}, {suite or 'mmp-sig-v2'}) reported ---")
        for event in stock.events:
            if event["event"] != "log" or "E2E" in event["msg"] or "SVAF" in event["msg"]:
                print(json.dumps(event)[:300])
