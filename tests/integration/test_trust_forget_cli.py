"""A squatter reached a nodeId before its owner ever met this peer: the owner is refused, the operator
sees the squatter's key with `trust seen` and forgets it with `trust forget` (the CLI in a real
process), and the owner's next handshake binds afresh over a real socket."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.node_testkit import FAST, RawPeer
from xmesh_agent.identity import NodeIdentity, keyprint
from xmesh_agent.mmp.node import MeshNode
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.workers.control import control_path

CLI = [sys.executable, "-m", "xmesh_agent.cli.app"]


def xmesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=dict(os.environ))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XMESH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def keeper(home: Path, identity: NodeIdentity) -> MeshNode:
    """A peer named keeper whose store sits where `xmesh-agent run` keeps it."""
    store = CMBStore(home / "peers" / "keeper" / "cmbs.db")
    return MeshNode(identity, "team", store, discovery=[], **FAST)


async def closes_on(raw: RawPeer) -> str | None:
    frames, closed = await raw.frames_until_closed(3.0)
    errors = [f.get("message") for f in frames if f.get("type") == "error"]
    return errors[0] if closed and errors else None


async def test_a_squatted_nodeId_is_seen_forgotten_and_then_bound_by_its_owner(home: Path) -> None:
    me = NodeIdentity.generate("keeper")
    owner = NodeIdentity.generate("owner")
    mallory = NodeIdentity.generate("mallory")
    squatter = NodeIdentity("mallory", owner.node_id, mallory.signing_key, mallory.created_at)
    node = keeper(home, me)
    await node.start()
    try:
        raw = await RawPeer(squatter).connect(node.port)
        await raw.handshake()  # offers no key proof, as a stock peer: bound on first sight, unproven
        assert await node.wait_for_peers(1, 3.0)
        await raw.close()
        refused = await RawPeer(owner).connect(node.port)
        await refused.handshake(prove=True)
        assert await closes_on(refused) is not None, (
            "the owner is refused while the squatter holds its nodeId"
        )
    finally:
        await node.stop()

    seen = xmesh("trust", "seen", "--peer", "keeper", "--json")
    assert seen.returncode == 0, seen.stderr
    bound = {r["identity"]: r for r in json.loads(seen.stdout) if r["kind"] == "node_id"}
    assert bound[owner.node_id.lower()]["keyprint"] == keyprint(squatter.public_key)
    human = xmesh("trust", "seen", "--peer", "keeper")
    assert keyprint(squatter.public_key) in human.stdout and owner.node_id.lower() in human.stdout

    # another process answering on the peer's control socket: forgetting is refused, nothing changes
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(control_path("keeper")))
    listener.listen()
    try:
        busy = xmesh("trust", "forget", owner.node_id, "--peer", "keeper")
    finally:
        listener.close()
        control_path("keeper").unlink()
    assert busy.returncode == 1 and "stop it" in busy.stderr and "Traceback" not in busy.stderr

    forgot = xmesh("trust", "forget", owner.node_id.upper(), "--peer", "keeper")
    assert forgot.returncode == 0, forgot.stderr
    assert f"forgot nodeId {owner.node_id.lower()}" in forgot.stdout
    again = xmesh("trust", "forget", owner.node_id, "--peer", "keeper")
    assert again.returncode == 1 and "nothing on trust" in again.stderr

    node = keeper(home, me)
    await node.start()
    try:
        raw = await RawPeer(owner).connect(node.port)
        await raw.handshake(prove=True)
        assert await node.wait_for_peers(1, 3.0), "the owner binds its nodeId once the squatter is forgotten"
        binding = node.verifier.binding(owner.node_id, fresh=True)
        assert binding is not None and binding.public_key == owner.public_key and binding.proven
    finally:
        await node.stop()


def test_bad_input_is_a_clear_error(home: Path) -> None:
    unknown = xmesh("trust", "forget", "someone", "--peer", "nobody-here")
    assert unknown.returncode == 2 and "no peer nobody-here" in unknown.stderr
    bad = xmesh("trust", "seen", "--peer", "../etc")
    assert bad.returncode == 2 and "invalid peer name" in bad.stderr
    (home / "peers" / "fresh").mkdir(parents=True)
    empty = xmesh("trust", "seen", "--peer", "fresh")
    assert empty.returncode == 0 and "no key on trust" in empty.stdout
    assert xmesh("trust", "seen", "--peer", "fresh", "--json").stdout.strip() == "[]"
