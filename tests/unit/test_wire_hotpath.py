"""The inbound hot path stays cheap without losing durability: verify caches, store group commit."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from tests.unit.node_testkit import make_node, note, poll
from xmesh_agent.clock import now_ms
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CMB, CMBField, mint
from xmesh_agent.mmp.connection import PeerInfo
from xmesh_agent.mmp.store import CMBStore, dumps_cmb
from xmesh_agent.mmp.verify import KnownKey, Verifier


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XMESH_SYM_LOOPBACK_DIR", str(tmp_path / "loopback"))


def sender(identity: NodeIdentity) -> KnownKey:
    return KnownKey(identity.node_id, identity.name, identity.public_key, "handshake")


def rows(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_a_known_author_costs_no_sql_statement(tmp_path: Path) -> None:
    bob = NodeIdentity.generate("bob")
    verifier = Verifier("team", "host-id", "host", tmp_path / "v.db", admission="tofu")
    statements: list[str] = []
    verifier._db.set_trace_callback(statements.append)
    try:
        assert verifier.check(note(bob, "team", "first contact"), sender(bob)) is None
        assert any("pins" in s for s in statements) and any("signers" in s for s in statements)
        statements.clear()
        for i in range(20):
            assert verifier.check(note(bob, "team", f"again {i}"), sender(bob)) is None
        assert statements == []
    finally:
        verifier.close()


def test_pins_and_signer_marks_are_durable_in_a_wal_file(tmp_path: Path) -> None:
    bob = NodeIdentity.generate("bob")
    path = tmp_path / "v.db"
    verifier = Verifier("team", "host-id", "host", path, admission="tofu")
    assert verifier.check(note(bob, "team", "signed"), sender(bob)) is None
    verifier.close()
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]
    assert rows(path, "SELECT name, public_key FROM pins") == [("bob", bob.public_key)]
    reopened = Verifier("team", "host-id", "host", path, admission="tofu")
    try:
        assert reopened.has_signed("bob") and reopened.pinned("bob") == bob.public_key
        impostor = NodeIdentity.generate("bob")
        assert reopened.check(note(impostor, "team", "me too"), sender(impostor)) == "untrusted-key"
        stripped = note(bob, "team", "unsigned").model_copy(update={"sig": None, "sig_alg": None})
        assert reopened.check(stripped, sender(bob)) == "downgrade"
    finally:
        reopened.close()


def test_the_cache_follows_the_first_pin_another_writer_made(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    first = Verifier("team", "a", "a", path)
    second = Verifier("team", "b", "b", path)
    try:
        first.pin_if_new("carol", b"1" * 32)
        second.pin_if_new("carol", b"2" * 32)  # ignored in the file: the cache must say so too
        assert second.pinned("carol") == b"1" * 32
        assert not second.has_signed("carol")
        first._mark_signer("carol")
        assert second.has_signed("carol")  # a negative answer is never cached
    finally:
        first.close()
        second.close()


async def test_puts_on_a_loop_are_committed_by_its_next_iteration(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = CMBStore(path)
    alice = NodeIdentity.generate("alice")
    try:
        cmbs = [note(alice, "team", f"burst {i}") for i in range(50)]
        for cmb in cmbs:
            assert store.put(cmb, source="bob")
        assert store._db.in_transaction  # one transaction for the whole iteration...
        assert store.count() == 50  # ...which this connection already reads
        assert await poll(lambda: rows(path, "SELECT COUNT(*) FROM cmbs") == [(50,)], 5.0)
        assert not store._db.in_transaction
        assert not store.put(cmbs[0], source="bob")  # still deduplicated
    finally:
        store.close()


async def test_puts_from_a_worker_thread_commit_at_once_and_close_commits_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = CMBStore(path)
    alice = NodeIdentity.generate("alice")
    assert await asyncio.to_thread(store.put, note(alice, "team", "from a thread"), source="own")
    assert rows(path, "SELECT COUNT(*) FROM cmbs") == [(1,)]
    store.put(note(alice, "team", "pending at close"), source="own")
    store.close()  # before the loop ever ran the commit
    assert rows(path, "SELECT COUNT(*) FROM cmbs") == [(2,)]


async def test_a_surfaced_cmb_is_already_committed(tmp_path: Path) -> None:
    a, _ = make_node(tmp_path, "alice", discovery=[])
    b, inbox = make_node(tmp_path, "bob", discovery=[])
    seen: list[tuple[str, list[tuple]]] = []

    async def on_cmb(cmb: CMB, peer: PeerInfo) -> None:
        found = rows(b.store.path, f"SELECT key FROM cmbs WHERE key = '{cmb.key}'")
        seen.append((cmb.key, found))
        await inbox.on_cmb(cmb, peer)

    b.on_cmb = on_cmb
    await b.start()
    a.static_peers = [f"127.0.0.1:{b.port}"]
    await a.start()
    try:
        assert await a.wait_for_peers(1, 5.0) and await b.wait_for_peers(1, 5.0)
        for i in range(30):
            await a.publish(note(a.identity, "team", f"n {i}"))
        assert await inbox.wait(lambda: len(inbox.cmbs) == 30)
        assert all(found == [(key,)] for key, found in seen)
    finally:
        await a.stop()
        await b.stop()


def test_the_body_column_is_the_spec_json_and_odd_vectors_read_back(tmp_path: Path) -> None:
    alice = NodeIdentity.generate("alice")
    parent = note(alice, "team", "root")
    cmb = mint(
        {"focus": 'héllo "quoted" \u2028 ✓', "mood": "calm"},
        identity=alice,
        group="team",
        created_at=now_ms(),
        parents=[parent],
        to="bob",
        mood=(0.25, -1.0),
    )
    assert dumps_cmb(cmb) == json.dumps(cmb.to_wire(), separators=(",", ":"), ensure_ascii=False)
    odd = cmb.model_copy(
        update={"fields": {**cmb.fields, "focus": CMBField(text="v", vector=[float("nan"), 1e308 * 10])}}
    )
    store = CMBStore(tmp_path / "s.db")
    try:
        assert store.put(odd, source="own")
        back = store.get(odd.key)
        assert back is not None and back.fields["focus"].vector is not None
        assert back.fields["focus"].vector[1] == float("inf")
    finally:
        store.close()
