"""Catching up after a cut (mmp/catchup.py): replay on reconnect with `_anchor`, and cmb-fetch (§7)."""

from __future__ import annotations

import time
import uuid

from tests.unit.node_testkit import RawPeer, make_node, note, poll
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import mint


async def _frames(raw: RawPeer, kind: str, timeout: float = 1.2) -> list[dict]:
    """The frames of one type the node sends within `timeout`."""
    got = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        frame = await raw.recv(left)
        if frame is None:
            break
        if frame["type"] == "ping":  # stay alive: the node closes a silent peer after 1.5 s
            await raw.send({"type": "pong"})
        if frame["type"] == kind:
            got.append(frame)
    return got


async def test_a_returning_peer_gets_what_it_missed_and_a_new_one_no_history(tmp_path):
    node, _ = make_node(tmp_path, "alice")
    await node.start()
    bob = RawPeer(NodeIdentity.generate("bob"))
    try:
        await (await bob.connect(node.port)).handshake()
        before = note(node.identity, "team", "before the cut")
        await node.publish(before)
        await bob.close()  # the cable goes
        assert await poll(lambda: not node.peers())
        missed = [note(node.identity, "team", f"during the cut {i}") for i in range(3)]
        for cmb in missed:
            assert await node.publish(cmb) == 0
        await (await bob.connect(node.port)).handshake()
        replayed = await _frames(bob, "cmb")
        keys = [f["cmb"]["key"] for f in replayed]
        assert keys[-3:] == [c.key for c in missed]  # oldest first, all of them
        assert all(f["_anchor"] is True for f in replayed)
        assert set(keys) <= {before.key, *(c.key for c in missed)}

        carol = RawPeer(NodeIdentity.generate("carol"))
        await (await carol.connect(node.port)).handshake()
        assert await _frames(carol, "cmb", 0.8) == []  # joining does not replay history
        await carol.close()
    finally:
        await bob.close()
        await node.stop()


async def test_replayed_cmbs_already_held_are_not_delivered_twice(tmp_path):
    node, inbox = make_node(tmp_path, "bob")
    await node.start()
    alice = RawPeer(NodeIdentity.generate("alice"))
    try:
        await (await alice.connect(node.port)).handshake()
        first, second = note(alice.identity, "team", "one"), note(alice.identity, "team", "two")
        await alice.send_cmb(first)
        assert await inbox.wait(lambda: len(inbox.cmbs) == 1)
        for cmb in (first, second, first):  # a replay of what it holds, and one thing it lacks
            await alice.send({"type": "cmb", "timestamp": 1, "cmb": cmb.to_wire(), "_anchor": True})
        assert await inbox.wait(lambda: len(inbox.cmbs) == 2)
        await alice.send({"type": "ping"})
        assert (await alice.recv())["type"] in ("pong", "ping")
        assert [c.key for c, _ in inbox.cmbs] == [first.key, second.key]
    finally:
        await alice.close()
        await node.stop()


async def test_a_missing_parent_is_fetched_verified_and_delivered_once(tmp_path):
    node, inbox = make_node(tmp_path, "bob")
    await node.start()
    alice = RawPeer(NodeIdentity.generate("alice"))
    try:
        await (await alice.connect(node.port)).handshake()
        parent = note(alice.identity, "team", "the parent bob never got")
        child = mint(
            {"focus": "a reply", "intent": "answer"},
            identity=alice.identity,
            group="team",
            created_at=int(time.time() * 1000),
            parents=[parent],
        )
        await alice.send_cmb(child)
        (ask,) = await _frames(alice, "cmb-fetch")
        assert ask["key"] == parent.key and ask["reqId"]
        # An answer to a question never asked, and a forged answer, are both refused.
        other = note(alice.identity, "team", "unasked")
        await alice.send({"type": "cmb-fetch-result", "reqId": uuid.uuid4().hex, "key": other.key, "found": True,
                          "cmb": other.to_wire()})  # fmt: skip
        await alice.send({"type": "cmb-fetch-result", "reqId": ask["reqId"], "key": parent.key, "found": True,
                          "cmb": other.to_wire()})  # fmt: skip
        assert await inbox.wait(lambda: "not-asked" in inbox.rejects())
        assert not node.store.has(other.key) and not node.store.has(parent.key)
        # Asked again by the next child; this time the true parent comes back.
        child2 = mint({"focus": "another reply"}, identity=alice.identity, group="team",
                      created_at=int(time.time() * 1000), parents=[parent])  # fmt: skip
        await alice.send_cmb(child2)
        (ask,) = await _frames(alice, "cmb-fetch")
        await alice.send({"type": "cmb-fetch-result", "reqId": ask["reqId"], "key": parent.key, "found": True,
                          "cmb": parent.to_wire()})  # fmt: skip
        assert await inbox.wait(lambda: node.store.has(parent.key))
        assert await inbox.wait(lambda: len(inbox.cmbs) == 3)
        assert sorted(c.key for c, _ in inbox.cmbs) == sorted([child.key, child2.key, parent.key])
    finally:
        await alice.close()
        await node.stop()


async def test_fetches_are_answered_from_the_store_but_never_leak_a_cmb_for_someone_else(tmp_path):
    node, _ = make_node(tmp_path, "alice")
    await node.start()
    bob = RawPeer(NodeIdentity.generate("bob"))
    try:
        await (await bob.connect(node.port)).handshake()
        public = note(node.identity, "team", "for everyone")
        private = note(node.identity, "team", "for dave only", to="dave")
        node.store.put(public, source="own")
        node.store.put(private, source="own")
        for key in (public.key, private.key, "cmb1-" + "0" * 64):
            await bob.send({"type": "cmb-fetch", "reqId": key[-8:], "key": key})
        answers = {f["key"]: f for f in await _frames(bob, "cmb-fetch-result")}
        assert answers[public.key]["found"] is True and answers[public.key]["cmb"]["key"] == public.key
        assert answers[private.key]["found"] is False and answers[private.key]["cmb"] is None
        assert answers["cmb1-" + "0" * 64]["found"] is False
    finally:
        await bob.close()
        await node.stop()
