"""The operator node as other nodes meet it: a stock 0.12 node gets a directive as a signed stock
record in its own dialect, through the same publish path as a peer's replies."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.mmp_data import mmp_path
from xmesh_agent.mmp import framing
from xmesh_agent.mmp.cmb import legacy_key
from xmesh_agent.mmp.dialects.stock_keys import verify_stock_record
from xmesh_agent.operator import (
    DirectiveError,
    Target,
    directive_from_fields,
    directive_from_text,
    operator_identity,
    publish,
)

CAPTURE = mmp_path("captures", "stock-node-0.12.1-tcp.json")
SYM05_CAPTURE = mmp_path("captures", "sym-0.5.8-tcp.json")


def _stock_handshake() -> dict:
    if not CAPTURE.exists():
        pytest.skip("stock captures not present")
    for _ports, frames in json.loads(CAPTURE.read_text()):
        if frames and frames[0].get("name") == "bob":
            return frames[0]
    raise AssertionError("bob's direction not in the capture")


async def _deliver_to(node_handshake: dict, group: str, to: str | None) -> tuple[object, dict, dict]:
    """Publish a directive to a node that answers with `node_handshake`; (result, our hello, the cmb frame)."""
    got: asyncio.Future = asyncio.get_running_loop().create_future()

    async def node(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        theirs = await framing.read_frame(reader)
        writer.write(framing.encode_frame(node_handshake))
        await writer.drain()
        while (frame := await framing.read_frame(reader))["type"] != "cmb":
            pass
        got.set_result((theirs, frame))

    server = await asyncio.start_server(node, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        target = Target(group=group, static_peers=[f"127.0.0.1:{port}"], discovery=[])
        directive = directive_from_fields({"focus": "review the login limiter", "intent": "today"})
        result = await publish(directive, target, to=to, wait=5, name="operator-test")
        hello, frame = await asyncio.wait_for(got, 5)
    finally:
        server.close()
    return result, hello, frame


async def test_a_directive_reaches_a_stock_node_as_a_signed_stock_record() -> None:
    bob = _stock_handshake()
    result, hello, frame = await _deliver_to(bob, bob["room"], "bob")
    me = operator_identity("operator-test")  # persistent: the same key signed it
    assert hello["name"] == "operator-test" and hello["nodeId"] == me.node_id
    assert result.delivered_to == ["bob"] and result.to == bob["nodeId"]
    record = frame["cmb"]
    assert record["categories"]["focus"]["text"] == "review the login limiter"
    assert record["categories"]["perspective"]["text"] == "operator"  # §14.10
    assert record["metadata"]["createdBy"] == "operator-test" and record["metadata"]["to"] == bob["nodeId"]
    assert verify_stock_record(record, me.public_key)


async def test_a_directive_reaches_a_sym05_peer_in_its_flat_frame() -> None:
    if not SYM05_CAPTURE.exists():
        pytest.skip("sym 0.5 captures not present")
    capture = json.loads(SYM05_CAPTURE.read_text())
    hs = next(
        e["frame"]
        for e in capture["frames"]
        if e["from"] == "sym05-writer" and e["frame"]["type"] == "handshake"
    )
    result, _, frame = await _deliver_to(hs, hs["group"], None)
    assert result.delivered_to == ["sym05-writer"] and result.to is None
    body = frame["cmb"]
    assert "metadata" not in body and body["createdBy"] == "operator-test"
    fields = {f: v["text"] for f, v in body["fields"].items()}  # no e2e key from the operator: plaintext
    assert fields["focus"] == "review the login limiter" and fields["perspective"] == "operator"
    assert body["key"] == legacy_key(fields)


def test_directive_input_as_sym_publish_takes_it() -> None:
    d = directive_from_text('{"focus": "f", "mood": {"text": "tense", "valence": -0.4, "arousal": 0.9}}')
    assert d.texts == {"focus": "f", "mood": "tense", "perspective": "operator"} and d.mood == (-0.4, 0.9)
    assert directive_from_text('{"focus": "f", "perspective": "lead"}').texts["perspective"] == "lead"
    for raw, words in [
        ("[1]", "JSON object"),
        ('{"focus": 3}', "must be text"),
        ('{"mood": {"text": "x", "valence": 2}}', "in [-1, 1]"),
        ('{"focus": {"txt": "x"}}', "unknown key 'txt'"),
        ('{"focus": "neutral"}', "empty directive"),
    ]:
        with pytest.raises(DirectiveError, match=words.replace("[", r"\[").replace("]", r"\]")):
            directive_from_text(raw)
