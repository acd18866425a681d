"""Who a peer is, attacked over real sockets (issue 22): key proofs at handshake, nodeId squatting,
forged authorship, gossiped keys, and a flood of connections that never handshake."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.unit.node_testkit import RawPeer, make_node, note, poll
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp import keyproof
from xmesh_agent.mmp.cmb import mint, sign_cmb
from xmesh_agent.mmp.handshake import build_handshake


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(tmp_path / "loopback"))


def squatter_of(victim_node_id: str, name: str = "mallory") -> NodeIdentity:
    """An identity of its own key that claims someone else's nodeId."""
    own = NodeIdentity.generate(name)
    return NodeIdentity(name, victim_node_id, own.signing_key, own.created_at)


async def refused(raw: RawPeer) -> str | None:
    """The node's error message when it closes on us after the handshake, else None."""
    frames, closed = await raw.frames_until_closed(3.0)
    errors = [f.get("message") for f in frames if f.get("type") == "error"]
    return errors[0] if closed and errors else None


async def settle(raw: RawPeer) -> None:
    """A ping round trip: every frame sent before it has been handled."""
    await raw.send({"type": "ping"})
    while (frame := await raw.recv(2.0)) is not None and frame["type"] != "pong":
        pass
    assert frame is not None


async def test_our_nodes_prove_their_keys_to_each_other(tmp_path: Path) -> None:
    a, _ = make_node(tmp_path, "alice", discovery=[])
    await a.start()
    b, inbox_b = make_node(tmp_path, "bob", discovery=[], static_peers=[f"127.0.0.1:{a.port}"])
    await b.start()
    try:
        assert await a.wait_for_peers(1, 5.0) and await b.wait_for_peers(1, 5.0)
        bound_at_a, bound_at_b = (
            a.verifier.binding(b.identity.node_id),
            b.verifier.binding(a.identity.node_id),
        )
        assert bound_at_a is not None and bound_at_a.proven and bound_at_a.public_key == b.identity.public_key
        assert bound_at_b is not None and bound_at_b.proven and bound_at_b.public_key == a.identity.public_key
        assert await a.publish(note(a.identity, "team", "proven")) == 1
        assert await inbox_b.wait(lambda: len(inbox_b.cmbs) == 1)
    finally:
        await b.stop()
        await a.stop()


async def test_a_wrong_or_replayed_proof_is_refused_and_a_peer_without_the_extension_connects(
    tmp_path: Path,
) -> None:
    node, inbox = make_node(tmp_path, "host", discovery=[])
    await node.start()
    bob = NodeIdentity.generate("bob")
    try:
        # A proof signed for another connection (another nonce) does not open this one.
        first = await RawPeer(bob).connect(node.port)
        ours = build_handshake(bob, "team", nonce=keyproof.new_nonce())
        await first.send(ours)
        theirs = await first.recv()
        assert theirs is not None and keyproof.offers_proof(theirs)
        captured = keyproof.prove(bob, ours, theirs, "team", we_dialed=True)
        await first.close()
        replay = await RawPeer(bob).connect(node.port)
        await replay.send({**ours, "nonce": keyproof.new_nonce()})
        await replay.recv()
        await replay.send(captured)
        assert await refused(replay) == "key proof failed"
        # A key we do not hold cannot sign for it.
        stranger = NodeIdentity.generate("bob")
        liar = await RawPeer(NodeIdentity("bob", bob.node_id, stranger.signing_key, "")).connect(node.port)
        await liar.send(ours)  # bob's key in the handshake, stranger's signature below
        theirs = await liar.recv()
        assert theirs is not None
        await liar.send(keyproof.prove(liar.identity, ours, theirs, "team", we_dialed=True))
        assert await refused(liar) == "key proof failed"
        assert (
            node.peers() == []
            and [e["reason"] for e in inbox.named("peer-refused")] == ["key proof failed"] * 2
        )
        # A stock-style peer that offers no proof still connects, under tofu.
        plain = await RawPeer(bob).connect(node.port)
        await plain.handshake()
        assert await node.wait_for_peers(1, 2.0)
        bound = node.verifier.binding(bob.node_id)
        assert bound is not None and not bound.proven
        await plain.close()
    finally:
        await node.stop()


async def test_a_handshake_altered_in_transit_breaks_the_proof(tmp_path: Path) -> None:
    """The proof covers every field of both handshakes: whoever passes them on (a relay, a proxy)
    cannot swap the e2e key (to read what follows) nor change the extensions and keep the proof."""
    from xmesh_agent.mmp.e2e import X25519KeyPair

    node, inbox = make_node(tmp_path, "host", discovery=[])
    await node.start()
    bob = NodeIdentity.generate("bob")
    try:
        sent = build_handshake(
            bob, "team", X25519KeyPair.generate().public_spki_b64, nonce=keyproof.new_nonce()
        )
        swapped = {**sent, "e2ePublicKey": X25519KeyPair.generate().public_spki_b64}
        raw = await RawPeer(bob).connect(node.port)
        await raw.send(swapped)
        theirs = await raw.recv()
        assert theirs is not None
        await raw.send(keyproof.prove(bob, sent, theirs, "team", we_dialed=True))
        assert await refused(raw) == "key proof failed" and node.peers() == []
        raw = await RawPeer(bob).connect(node.port)
        await raw.send(sent)
        theirs = await raw.recv()
        assert theirs is not None
        stripped = {**theirs, "extensions": ["mmp-handshake-proof-v2", "x"]}  # rewritten on the way
        await raw.send(keyproof.prove(bob, sent, stripped, "team", we_dialed=True))
        assert await refused(raw) == "key proof failed"
        assert len(inbox.named("peer-refused")) == 2
    finally:
        await node.stop()


async def test_a_squatter_of_a_known_nodeId_is_refused_first_or_second_and_the_owner_keeps_its_place(
    tmp_path: Path,
) -> None:
    node, inbox = make_node(tmp_path, "host", discovery=[])
    await node.start()
    bob = NodeIdentity.generate("bob")
    try:
        owner = await RawPeer(bob).connect(node.port)
        await owner.handshake(prove=True)
        assert await node.wait_for_peers(1, 2.0)
        # Second: the holder keeps its place; the squatter is told why.
        second = await RawPeer(squatter_of(bob.node_id)).connect(node.port)
        await second.handshake(prove=True)
        assert await refused(second) == "nodeId is bound to another key"
        await settle(owner)
        assert [p.public_key for p in node.peers()] == [bob.public_key]
        await owner.close()
        assert await poll(lambda: node.peers() == [])
        # First, while the owner is away: with its own key, or with the owner's copied public key
        # and no proof (the owner proved its key before, so it must again).
        early = await RawPeer(squatter_of(bob.node_id)).connect(node.port)
        await early.handshake()
        assert await refused(early) == "nodeId is bound to another key"
        copycat = await RawPeer(squatter_of(bob.node_id)).connect(node.port)
        await copycat.send({**build_handshake(copycat.identity, "team"), "publicKey": bob.public_key_b64url})
        assert await refused(copycat) == "nodeId has proven its key before and did not prove it now"
        # The nodeId in another case is the same nodeId (§3.1.1).
        upper = await RawPeer(squatter_of(bob.node_id.upper())).connect(node.port)
        await upper.handshake(prove=True)
        assert await refused(upper) == "nodeId is bound to another key"
        back = await RawPeer(bob).connect(node.port)
        await back.handshake(prove=True)
        assert await node.wait_for_peers(1, 2.0)
        await back.send_cmb(note(bob, "team", "still me"))
        assert await inbox.wait(lambda: len(inbox.cmbs) == 1)
        await back.close()
    finally:
        await node.stop()


async def test_the_bindings_survive_a_restart(tmp_path: Path) -> None:
    bob = NodeIdentity.generate("bob")
    host = NodeIdentity.generate("host")
    node, _ = make_node(tmp_path, "host", identity=host, discovery=[])
    await node.start()
    owner = await RawPeer(bob).connect(node.port)
    await owner.handshake(prove=True)
    assert await node.wait_for_peers(1, 2.0)
    await owner.close()
    await node.stop()
    node, inbox = make_node(tmp_path, "host", identity=host, discovery=[])
    await node.start()
    try:
        squatter = await RawPeer(squatter_of(bob.node_id)).connect(node.port)
        await squatter.handshake(prove=True)
        assert await refused(squatter) == "nodeId is bound to another key"
        # bob is not connected in this run; what carol relays in his name is checked against the
        # key pinned for him then, a root and a remix (whose key binds bob's nodeId) alike.
        carol = NodeIdentity.generate("carol")
        relay = await RawPeer(carol).connect(node.port)
        await relay.handshake(prove=True)
        parent = note(carol, "team", "carol asks")
        remix = mint({"focus": "bob answers"}, identity=bob, group="team", created_at=1, parents=[parent])
        forged = sign_cmb(note(bob, "team", "bob never said this"), carol)
        for cmb in (parent, remix, forged):
            await relay.send_cmb(cmb)
        await settle(relay)
        assert inbox.rejects() == ["bad-signature"]
        assert node.store.has(parent.key) and node.store.has(remix.key) and not node.store.has(forged.key)
        await relay.close()
    finally:
        await node.stop()


async def test_a_squatter_of_a_name_as_nodeId_cannot_author_for_that_name(tmp_path: Path) -> None:
    node, inbox = make_node(tmp_path, "host", discovery=[])
    await node.start()
    bob = NodeIdentity.generate("bob")
    try:
        # mallory takes "bob" as her nodeId before bob ever met us, then bob arrives.
        mallory = await RawPeer(squatter_of("bob")).connect(node.port)
        await mallory.handshake(prove=True)
        owner = await RawPeer(bob).connect(node.port)
        await owner.handshake(prove=True)
        assert await node.wait_for_peers(2, 2.0)
        forged = sign_cmb(note(bob, "team", "bob wants the deploy now"), mallory.identity)
        await mallory.send_cmb(forged)
        await settle(mallory)
        assert inbox.rejects() == ["untrusted-key"] and not node.store.has(forged.key)
        await owner.send_cmb(note(bob, "team", "the real bob"))
        assert await inbox.wait(lambda: len(inbox.cmbs) == 1)
        assert inbox.cmbs[0][0].created_by == "bob" and inbox.cmbs[0][1].public_key == bob.public_key
        # A name that already names a key cannot be taken as a nodeId by another key.
        carol = await RawPeer(NodeIdentity.generate("carol")).connect(node.port)
        await carol.handshake(prove=True)
        assert await node.wait_for_peers(3, 2.0)
        again = await RawPeer(squatter_of("carol", "eve")).connect(node.port)
        await again.handshake()
        assert await refused(again) == "nodeId is the name of another key"
        await carol.close()
        for raw in (mallory, owner):
            await raw.close()
    finally:
        await node.stop()


async def test_a_block_authored_by_another_known_node_but_signed_by_the_sender_is_dropped(
    tmp_path: Path,
) -> None:
    node, inbox = make_node(tmp_path, "host", discovery=[])
    await node.start()
    bob, mallory = NodeIdentity.generate("bob"), NodeIdentity.generate("mallory")
    try:
        owner = await RawPeer(bob).connect(node.port)
        await owner.handshake(prove=True)
        raw = await RawPeer(mallory).connect(node.port)
        await raw.handshake(prove=True)
        assert await node.wait_for_peers(2, 2.0)
        by_name = sign_cmb(note(bob, "team", "signed by mallory, says bob"), mallory)
        by_node_id = sign_cmb(
            note(bob, "team", "by bob's nodeId").model_copy(update={"created_by": bob.node_id}), mallory
        )
        await raw.send_cmb(by_name)
        await raw.send_cmb(by_node_id)
        await settle(raw)
        assert inbox.rejects() == ["bad-signature", "bad-signature"] and node.store.count() == 0
        for peer in (owner, raw):
            await peer.close()
    finally:
        await node.stop()


async def test_gossip_never_vouches_for_a_key(tmp_path: Path) -> None:
    node, inbox = make_node(tmp_path, "host", discovery=[])
    await node.start()
    bob, carol = NodeIdentity.generate("bob"), NodeIdentity.generate("carol")
    try:
        gossiper = await RawPeer(bob).connect(node.port)
        await gossiper.handshake(prove=True)
        assert await node.wait_for_peers(1, 2.0)
        # bob says carol's key is bob's own, then writes as carol.
        lie = {"nodeId": carol.node_id, "name": "carol", "publicKey": bob.public_key_b64url, "lastSeen": 1}
        await gossiper.send({"type": "peer-info", "peers": [lie]})
        forged = sign_cmb(note(carol, "team", "carol never said this"), bob)
        unsigned = note(carol, "team", "nor this").model_copy(update={"sig": None, "sig_alg": None})
        await gossiper.send_cmb(forged)
        await gossiper.send_cmb(unsigned)
        await settle(gossiper)
        assert inbox.rejects() == ["unknown-author", "unknown-author"] and node.store.count() == 0
        assert node.verifier.pinned("carol") is None and node.verifier.binding(carol.node_id) is None
        # The real carol is not locked out, and what she relays later through bob verifies.
        real = await RawPeer(carol).connect(node.port)
        await real.handshake(prove=True)
        assert await node.wait_for_peers(2, 2.0)
        await real.send_cmb(note(carol, "team", "the real carol"))
        await gossiper.send_cmb(note(carol, "team", "carol, relayed by bob"))
        assert await inbox.wait(lambda: len(inbox.cmbs) == 2)
        for raw in (gossiper, real):
            await raw.close()
    finally:
        await node.stop()


async def _idle_flood(port: int, count: int, stop: asyncio.Event, until: float, opened: list[int]) -> None:
    """`count` connections from 127.0.0.1 that never handshake, each reopened as soon as it is
    dropped, until `stop` or the deadline."""

    async def one(index: int) -> None:
        await asyncio.sleep(index * 0.004)  # in waves, so the listen backlog takes them all
        while not stop.is_set() and time.monotonic() < until:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            opened[0] += 1
            while not stop.is_set() and time.monotonic() < until:
                try:
                    if not await asyncio.wait_for(reader.read(4096), 0.2):
                        break  # dropped by the node: knock again at once
                except TimeoutError:
                    continue
                except OSError:
                    break
            writer.close()

    await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)


async def test_a_flood_of_idle_connections_from_one_address_does_not_keep_a_new_peer_out(
    tmp_path: Path,
) -> None:
    node, _ = make_node(tmp_path, "host", discovery=[], handshake_timeout=10.0)
    await node.start()
    stop, opened = asyncio.Event(), [0]
    flood = asyncio.ensure_future(_idle_flood(node.port, 300, stop, time.monotonic() + 15.0, opened))
    try:
        assert await poll(lambda: opened[0] >= 300, 5.0)  # the whole flood has knocked at least once
        started = time.monotonic()
        newcomer = RawPeer(NodeIdentity.generate("newcomer"))
        theirs: dict[str, Any] | None = None
        while theirs is None and time.monotonic() - started < 3.0:
            await newcomer.connect(node.port, source="127.0.0.2")
            await newcomer.send(build_handshake(newcomer.identity, "team"))
            theirs = await newcomer.recv(1.0)
            if theirs is None:
                await newcomer.close()
        assert theirs is not None and theirs["type"] == "handshake"
        assert await node.wait_for_peers(1, 3.0 - (time.monotonic() - started))
        assert node._quota.pending <= node._quota.per_source + 1
        await newcomer.close()
    finally:
        stop.set()
        await asyncio.wait_for(flood, 15.0)
        await node.stop()


async def test_a_flood_of_invented_identities_does_not_grow_the_verifiers_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each handshake under a new nodeId and key used to add a few cache entries for the life of the
    process: a LAN attacker churning identities grew a peer without bound. The caches now keep the most
    recent identities; the db behind them still knows every one, so an early author's relayed CMBs
    verify (and forgeries in its name do not) after the flood."""
    from xmesh_agent.mmp import verify

    monkeypatch.setattr(verify, "CACHED_IDENTITIES", 8)
    node, inbox = make_node(tmp_path, "host", discovery=[])
    await node.start()
    early = NodeIdentity.generate("early")
    try:
        first = await RawPeer(early).connect(node.port)
        await first.handshake(prove=True)
        assert await node.wait_for_peers(1, 2.0)
        await first.send_cmb(note(early, "team", "before the flood"))
        assert await inbox.wait(lambda: len(inbox.cmbs) == 1)
        await first.close()
        for i in range(60):
            raw = await RawPeer(NodeIdentity.generate(f"sock-{i}")).connect(node.port)
            await raw.handshake(prove=True)
            await raw.send_cmb(note(raw.identity, "team", f"invented {i}"))
            await settle(raw)
            await raw.close()
        assert await inbox.wait(lambda: len(inbox.cmbs) == 61)
        v = node.verifier
        assert max(len(v._keys), len(v._pins), len(v._bindings), len(v._signers)) <= 8
        carol = NodeIdentity.generate("carol")
        relay = await RawPeer(carol).connect(node.port)
        await relay.handshake(prove=True)
        await relay.send_cmb(note(early, "team", "relayed after the flood"))
        forged = note(squatter_of(early.node_id, name="early"), "team", "forged after the flood")
        await relay.send_cmb(forged)
        await settle(relay)
        assert await inbox.wait(lambda: len(inbox.cmbs) == 62)
        assert inbox.cmbs[-1][0].fields["focus"].text == "relayed after the flood"
        assert [e["reason"] for e in inbox.named("cmb-rejected")][-1:] == ["bad-signature"]
        assert len(inbox.cmbs) == 62, "the forgery in its name is not stored"
        await relay.close()
    finally:
        await node.stop()


def test_a_binding_pushed_out_of_the_cache_is_read_again_not_taken_for_unbound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The negative cache (nodeIds nobody holds) must not outlive a later binding once the positive
    cache has let that binding go: a forger would otherwise find the nodeId free again."""
    from xmesh_agent.mmp import verify

    monkeypatch.setattr(verify, "CACHED_IDENTITIES", 2)
    v = verify.Verifier("team", "host-id", "host", tmp_path / "verify.db")
    bob = NodeIdentity.generate("bob")
    assert v.binding(bob.node_id) is None  # looked up before bob ever came: remembered as unbound
    assert v.claim(bob.node_id, "bob", bob.public_key, proven=True) is None
    for i in range(5):
        other = NodeIdentity.generate(f"other-{i}")
        assert v.claim(other.node_id, other.name, other.public_key, proven=True) is None
    assert bob.node_id.lower() not in v._bindings
    bound = v.binding(bob.node_id)
    assert bound is not None and bound.public_key == bob.public_key
    mallory = squatter_of(bob.node_id)
    assert (
        v.claim(bob.node_id, "mallory", mallory.public_key, proven=True) == "nodeId is bound to another key"
    )
    v.close()


def test_under_strict_an_author_pushed_out_of_the_cache_is_checked_against_the_operators_pin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xmesh_agent.mmp import trust, verify
    from xmesh_agent.mmp.verify import KnownKey

    monkeypatch.setattr(verify, "CACHED_IDENTITIES", 4)
    early, carol = NodeIdentity.generate("early"), NodeIdentity.generate("carol")
    for who in (early, carol):
        trust.add("team", who.name, who.public_key_b64url)
    v = verify.Verifier("team", "host-id", "host", tmp_path / "verify.db", admission="strict")
    v.learn(early.node_id, early.name, early.public_key)
    for i in range(10):
        other = NodeIdentity.generate(f"other-{i}")
        v.learn(other.node_id, other.name, other.public_key)
    assert early.name not in v._keys
    sender = KnownKey(carol.node_id, carol.name, carol.public_key, "handshake")
    assert v.check(note(early, "team", "relayed by carol"), sender) is None
    forged = note(
        NodeIdentity("early", early.node_id, NodeIdentity.generate("x").signing_key, ""), "team", "f"
    )
    assert v.check(forged, sender) == "bad-signature"
    v.close()
