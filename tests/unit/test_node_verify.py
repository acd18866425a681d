"""Inbound CMB verification (§18.3.1) end to end: a raw peer sends crafted blocks over TCP."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.node_testkit import RawPeer, make_node, note
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp import trust
from xmesh_agent.mmp.cmb import CMB, content_key, mint, sign_cmb


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(tmp_path / "loopback"))


def unsigned(identity: NodeIdentity, text: str, group: str = "team") -> CMB:
    return note(identity, group, text).model_copy(update={"sig": None, "sig_alg": None})


async def _session(tmp_path: Path, identity: NodeIdentity, **kw):
    node, inbox = make_node(tmp_path, "host", discovery=[], **kw)
    await node.start()
    raw = await RawPeer(identity).connect(node.port)
    await raw.handshake()
    assert await node.wait_for_peers(1, 2.0)
    return node, inbox, raw


async def _settle(raw: RawPeer, inbox, node) -> None:
    """Round-trip a ping: the node handles frames in order, so everything before it is processed."""
    await raw.send({"type": "ping"})
    while True:
        frame = await raw.recv(2.0)
        assert frame is not None
        if frame["type"] == "pong":
            return


async def test_each_forgery_is_rejected_with_its_reason_and_nothing_is_stored(tmp_path: Path) -> None:
    bob = NodeIdentity.generate("bob")
    mallory = NodeIdentity.generate("mallory")
    node, inbox, raw = await _session(tmp_path, bob)
    try:
        good = note(bob, "team", "legit")
        forged_sig = sign_cmb(note(bob, "team", "forged"), mallory)
        swapped = good.model_copy(
            update={
                "fields": {**good.fields, "focus": good.fields["focus"].model_copy(update={"text": "evil"})}
            }
        )
        cross_group = note(bob, "other-team", "wrong audience")
        elsewhere = note(bob, "team", "not yours", to="someone-else")
        await raw.send_cmb(forged_sig)
        await raw.send_cmb(swapped)
        await raw.send_cmb(cross_group)
        await raw.send_cmb(elsewhere)
        await raw.send_cmb({"key": "cmb1-00", "createdBy": "bob"})  # no fields
        await raw.send({"type": "cmb", "cmb": "not an object"})
        await _settle(raw, inbox, node)
        assert inbox.rejects() == [
            "bad-signature",
            "key-mismatch",
            "wrong-group",
            "not-for-us",
            "malformed",
            "malformed",
        ]
        assert node.store.count() == 0 and inbox.cmbs == []
        await raw.send_cmb(good)
        to_us = note(bob, "team", "directed", to="host")
        await raw.send_cmb(to_us)
        assert await inbox.wait(lambda: len(inbox.cmbs) == 2)
        assert node.store.count() == 2
    finally:
        await raw.close()
        await node.stop()


async def test_downgrade_guard_survives_a_restart(tmp_path: Path) -> None:
    bob = NodeIdentity.generate("bob")
    legacy = NodeIdentity.generate("legacy")
    node, inbox, raw = await _session(tmp_path, bob)
    try:
        await raw.send_cmb(note(bob, "team", "signed once"))
        assert await inbox.wait(lambda: len(inbox.cmbs) == 1)
        await raw.send_cmb(unsigned(bob, "stripped"))
        await _settle(raw, inbox, node)
        assert inbox.rejects() == ["downgrade"]
    finally:
        await raw.close()
        await node.stop()
    # Same store, fresh process state: the memory of bob's signing is durable.
    node, inbox, raw = await _session(tmp_path, bob)
    try:
        await raw.send_cmb(unsigned(bob, "stripped again"))
        await _settle(raw, inbox, node)
        assert inbox.rejects() == ["downgrade"] and inbox.cmbs == []
    finally:
        await raw.close()
        await node.stop()
    # A peer that never signed may still send unsigned blocks (legacy emitters, tofu mode).
    node, inbox, raw = await _session(tmp_path, legacy)
    try:
        await raw.send_cmb(unsigned(legacy, "old style"))
        assert await inbox.wait(lambda: len(inbox.cmbs) == 1)
    finally:
        await raw.close()
        await node.stop()


async def test_tofu_pins_the_first_key_per_name(tmp_path: Path) -> None:
    bob = NodeIdentity.generate("bob")
    impostor = NodeIdentity.generate("bob")
    node, inbox, raw = await _session(tmp_path, bob)
    try:
        await raw.send_cmb(note(bob, "team", "first contact"))
        assert await inbox.wait(lambda: len(inbox.cmbs) == 1)
    finally:
        await raw.close()
        await node.stop()
    node, inbox, raw = await _session(tmp_path, impostor)
    try:
        await raw.send_cmb(note(impostor, "team", "i am bob, honest"))
        await raw.send_cmb(unsigned(impostor, "unsigned bob"))
        await _settle(raw, inbox, node)
        assert inbox.rejects() == ["untrusted-key", "downgrade"]
        assert inbox.cmbs == [] and node.store.count() == 1
    finally:
        await raw.close()
        await node.stop()


async def test_strict_mode_admits_only_trust_store_keys(tmp_path: Path) -> None:
    bob = NodeIdentity.generate("bob")
    node, inbox, raw = await _session(tmp_path, bob, admission="strict")
    try:
        await raw.send_cmb(note(bob, "team", "who am i"))
        await raw.send_cmb(unsigned(bob, "unsigned"))
        await _settle(raw, inbox, node)
        assert inbox.rejects() == ["untrusted-key", "untrusted-key"]
        trust.add("team", "bob", bob.public_key_b64url)
        assert trust.list("team") == {"bob": bob.public_key_b64url}
        await raw.send_cmb(note(bob, "team", "now trusted"))
        assert await inbox.wait(lambda: len(inbox.cmbs) == 1)
        assert trust.remove("team", "bob") and not trust.remove("team", "bob")
        await raw.send_cmb(note(bob, "team", "revoked"))
        await _settle(raw, inbox, node)
        assert inbox.rejects()[-1] == "untrusted-key" and len(inbox.cmbs) == 1
    finally:
        await raw.close()
        await node.stop()


async def test_open_mode_accepts_a_changed_key_but_still_checks_signatures(tmp_path: Path) -> None:
    bob = NodeIdentity.generate("bob")
    other_bob = NodeIdentity.generate("bob")
    node, inbox, raw = await _session(tmp_path, bob, admission="open")
    await raw.send_cmb(note(bob, "team", "one"))
    assert await inbox.wait(lambda: len(inbox.cmbs) == 1)
    await raw.close()
    raw = await RawPeer(other_bob).connect(node.port)
    try:
        await raw.handshake()
        await raw.send_cmb(note(other_bob, "team", "two"))
        assert await inbox.wait(lambda: len(inbox.cmbs) == 2)
        await raw.send_cmb(sign_cmb(note(other_bob, "team", "three"), bob))
        await _settle(raw, inbox, node)
        assert inbox.rejects() == ["bad-signature"]
    finally:
        await raw.close()
        await node.stop()


async def test_relayed_author_verifies_with_a_key_learned_from_a_handshake(tmp_path: Path) -> None:
    carol = NodeIdentity.generate("carol")
    bob = NodeIdentity.generate("bob")
    node, inbox, raw_carol = await _session(tmp_path, carol)
    raw_bob = await RawPeer(bob).connect(node.port)
    try:
        await raw_bob.handshake()
        parent = note(carol, "team", "carol's root")
        # bob forwards carol's block, then a remix carol authored (its key binds carol's nodeId).
        remix = mint({"focus": "built on it"}, identity=carol, group="team", created_at=1, parents=[parent])
        await raw_bob.send_cmb(parent)
        await raw_bob.send_cmb(remix)
        assert await inbox.wait(lambda: len(inbox.cmbs) == 2)
        assert node.store.source_of(parent.key) == "bob"
        # A remix whose key claims another minting node is a key mismatch.
        bad = remix.model_copy(update={"key": content_key(remix.texts(), [parent.key], bob.node_id)})
        await raw_bob.send_cmb(sign_cmb(bad, carol))
        await _settle(raw_bob, inbox, node)
        assert inbox.rejects() == ["key-mismatch"]
    finally:
        await raw_carol.close()
        await raw_bob.close()
        await node.stop()


async def test_own_blocks_echoed_back_are_ignored(tmp_path: Path) -> None:
    bob = NodeIdentity.generate("bob")
    node, inbox, raw = await _session(tmp_path, bob)
    try:
        mine = note(node.identity, "team", "mine")
        await raw.send_cmb(mine)
        await _settle(raw, inbox, node)
        assert inbox.cmbs == [] and inbox.rejects() == [] and not node.store.has(mine.key)
    finally:
        await raw.close()
        await node.stop()


async def test_gossip_tells_who_is_around_but_teaches_no_key(tmp_path: Path) -> None:
    from xmesh_agent.identity import b64url_encode

    bob, carol, dave = (NodeIdentity.generate(n) for n in ("bob", "carol", "dave"))
    node, inbox, raw_bob = await _session(tmp_path, bob)
    try:
        # A newcomer is told about the peers already connected (§5.6).
        raw_dave = await RawPeer(dave).connect(node.port)
        await raw_dave.handshake()
        gossip = await raw_dave.recv(2.0)
        assert gossip is not None and gossip["type"] == "peer-info"
        assert [(p["nodeId"], p["name"]) for p in gossip["peers"]] == [(bob.node_id, "bob")]
        assert gossip["peers"][0]["publicKey"] == bob.public_key_b64url
        # bob vouches for carol's key (and lies about dave's, which a handshake already gave us):
        # neither is taken, so carol's block stays unverifiable (test_node_trust.py has the attack).
        liar = NodeIdentity.generate("dave")
        await raw_bob.send(
            {
                "type": "peer-info",
                "peers": [
                    {"nodeId": carol.node_id, "name": "carol", "publicKey": carol.public_key_b64url},
                    {"nodeId": dave.node_id, "name": "dave", "publicKey": b64url_encode(liar.public_key)},
                ],
            }
        )
        await raw_bob.send_cmb(note(carol, "team", "relayed from carol"))
        await raw_bob.send_cmb(sign_cmb(note(carol, "team", "carol never said this"), bob))
        await raw_bob.send_cmb(note(liar, "team", "fake dave"))
        await _settle(raw_bob, inbox, node)
        assert inbox.cmbs == []
        assert inbox.rejects() == ["unknown-author", "unknown-author", "bad-signature"]
        await raw_dave.close()
    finally:
        await raw_bob.close()
        await node.stop()
