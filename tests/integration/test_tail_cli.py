"""`xmesh-agent tail` as a user runs it: a real process, a real mesh on loopback, a real peer's store."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.peer_kit import FAST_NODE, eventually, peer_config, start_peer
from tests.json_kit import non_snake_keys
from xmesh_agent import paths
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import mint
from xmesh_agent.mmp.node import MeshNode
from xmesh_agent.mmp.store import CMBStore

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "xmesh_agent.cli.app"]


class TailProcess:
    """A running `xmesh-agent tail ...`, its stdout read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.ready = ""

    @classmethod
    async def start(cls, *args: str) -> TailProcess:
        proc = await asyncio.create_subprocess_exec(
            *CLI, "tail", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        tail = cls(proc)
        ready = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert ready.startswith(b"tail: "), ready + await proc.stderr.read()
        tail.ready = ready.decode().strip()
        return tail

    async def line(self, timeout: float = 20.0) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        assert raw, f"tail exited: {(await self.proc.stderr.read()).decode()}"
        return raw.decode().rstrip("\n")

    async def json_until(self, predicate, timeout: float = 30.0) -> list[dict]:  # noqa: ANN001
        seen: list[dict] = []
        try:
            async with asyncio.timeout(timeout):
                while not any(predicate(x) for x in seen):
                    seen.append(json.loads(await self.line(timeout)))
        except TimeoutError:
            raise AssertionError(f"not seen within {timeout}s; tail printed {seen}") from None
        return seen

    async def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(self.proc.communicate(), 20)
        return self.proc.returncode, err.decode()


def _stderr_of(proc_err: str) -> str:
    return proc_err.strip()


async def test_observer_prints_what_a_group_says_and_ctrl_c_exits_0(tmp_path: Path):
    group = f"t-{uuid.uuid4().hex[:8]}"
    author = NodeIdentity.generate("writer-t")
    node = MeshNode(author, group, CMBStore(tmp_path / "w.db"), **FAST_NODE)
    await node.start()
    tail = await TailProcess.start("--group", group, "--json", "--name", "observer-test")
    try:
        await eventually(lambda: [p.name for p in node.peers()] == ["observer-test"], timeout=30)
        root = mint(
            {"focus": "rate limiter", "intent": "token bucket per key"},
            identity=author,
            group=group,
            created_at=1,
        )
        reply = mint(
            {"focus": "rate limiter", "issue": "no burst limit"},
            identity=author,
            group=group,
            created_at=2,
            parents=[root],
        )
        assert await node.publish(root) == 1
        assert await node.publish(reply) == 1
        seen = await tail.json_until(lambda x: x.get("key") == reply.key)
        cmbs = [x for x in seen if x["kind"] == "cmb"]
        assert [c["key"] for c in cmbs] == [root.key, reply.key]
        assert cmbs[0]["author"] == "writer-t" and cmbs[0]["fields"]["intent"] == "token bucket per key"
        assert cmbs[1]["parents"] == [root.key] and cmbs[1]["fields"]["mood"] == "neutral"
        code, err = await tail.interrupt()
        assert code == 0, err
        assert "Traceback" not in err
    finally:
        if tail.proc.returncode is None:
            tail.proc.kill()
        await node.stop()
    # the observer kept what it heard: a second tail prints it as history, as readable blocks
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "tail",
        "--group",
        group,
        "--name",
        "observer-test",
        "--no-follow",
        "-n",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert f"writer-t -> all  {reply.key[:17]}  re {root.key[:17]}" in text
    assert "issue  no burst limit" in text and root.key[:17] + "\n" not in text.split("re ")[0]
    # its store sits beside the peers' for recall, but it is no peer: status does not list it
    status = await asyncio.create_subprocess_exec(
        *CLI, "status", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(status.communicate(), 30)
    assert status.returncode == 1 and "no peer has run on this machine" in err.decode()


async def test_attached_to_a_peer_shows_its_store_and_its_wake_outcomes(temporal_env):
    group = f"t-{uuid.uuid4().hex[:8]}"
    peer = await start_peer(temporal_env.client, peer_config("reviewer-t", "reviewer", group))
    author = NodeIdentity.generate("writer-t2")
    node = MeshNode(author, group, CMBStore(":memory:"), **FAST_NODE)
    await node.start()
    tail = await TailProcess.start("--peer", "reviewer-t", "--json", "-n", "0")
    try:
        await eventually(lambda: len(node.peers()) == 1, timeout=30)
        seed = mint(
            {"focus": "rate limiter", "intent": "implement a token bucket per API key"},
            identity=author,
            group=group,
            created_at=3,
        )
        assert await node.publish(seed) == 1
        seen = await tail.json_until(lambda x: x.get("kind") == "wake" and x["cmb"] == seed.key, timeout=60)
        assert [non_snake_keys(x) for x in seen] == [[] for _ in seen]
        woke = next(x for x in seen if x.get("kind") == "wake")
        assert woke["peer"] == "reviewer-t" and woke["outcome"] == "emitted"
        keys = [x["key"] for x in seen if x["kind"] == "cmb"]
        assert keys[0] == seed.key
        if woke["reply"] not in keys:  # the reply may land a poll after the wake line
            seen += await tail.json_until(lambda x: x.get("key") == woke["reply"])
        reply = next(x for x in seen if x.get("key") == woke["reply"])
        assert reply["author"] == "reviewer-t" and reply["parents"] == [seed.key]
        code, err = await tail.interrupt()
        assert code == 0 and "Traceback" not in err, err
    finally:
        if tail.proc.returncode is None:
            tail.proc.kill()
        await node.stop()
        await peer.stop()
    assert (paths.peer_dir("reviewer-t") / "cmbs.db").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--group", "Bad Group"], 2, "invalid group 'Bad Group'"),
        (["--peer", "nobody"], 1, "peer nobody has no store"),
        ([], 2, "give --group G or --config peer.toml"),
        (["--peer", "x", "--group", "g"], 2, "do not also give --group"),
        (["--group", "g", "--since", "yesterday-ish"], 2, "--since 'yesterday-ish'"),
    ],
)
async def test_mistakes_are_one_line(args: list[str], code: int, message: str):
    proc = await asyncio.create_subprocess_exec(
        *CLI, "tail", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == code and len(lines) == 1 and message in lines[0], lines


async def test_an_observer_never_takes_a_peers_name():
    from xmesh_agent.wake.ledger import WakeLedger

    WakeLedger(paths.ensure_dir(paths.peer_dir("reviewer-x")) / "wakes.db").close()
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "tail",
        "--group",
        "g",
        "--name",
        "reviewer-x",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert err.decode().strip() == "xmesh-agent: reviewer-x is a peer's name here: pick another with --name"


async def test_two_tails_never_share_one_identity():
    first = await TailProcess.start("--group", "g-one")
    second = await TailProcess.start("--group", "g-two")
    named = await TailProcess.start("--group", "g-one", "--name", "obs-a")
    try:
        from xmesh_agent.observer import default_name

        me = default_name("observer")
        assert first.ready.startswith(f"tail: {me} joined group g-one")
        assert second.ready.startswith(f"tail: {me}-2 joined group g-two")
        _, err_first = await first.interrupt()
        _, err_second = await second.interrupt()
        assert err_first == "" and err_second == ""  # the ready lines were read at start
        clash = await asyncio.create_subprocess_exec(
            *CLI,
            "tail",
            "--group",
            "g-one",
            "--name",
            "obs-a",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(clash.communicate(), 30)
        assert clash.returncode == 2
        assert (
            err.decode().strip()
            == "xmesh-agent: obs-a is in use by another tail or mcp on this machine: give another --name"
        )
        assert (paths.peer_dir(me) / "node.lock").exists() and (
            paths.peer_dir(f"{me}-2") / "node.lock"
        ).exists()
    finally:
        for t in (first, second, named):
            if t.proc.returncode is None:
                t.proc.kill()
                await t.proc.wait()


async def test_config_gives_the_group_and_a_broken_config_is_reported(tmp_path: Path):
    good = tmp_path / "peer.toml"
    good.write_text(
        '[identity]\nname = "cfg-peer"\n[mesh]\ngroup = "cfg-group"\nhost = "127.0.0.1"\n'
        'discovery = ["registry"]\n[model]\nadapter = "offline"\n'
    )
    observer = await TailProcess.start("--config", str(good), "--name", "obs-cfg")
    code, _ = await observer.interrupt()
    assert observer.ready.startswith("tail: obs-cfg joined group cfg-group") and code == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[identity]\nname = "cfg-peer"\n[mesh]\ngroup = "Not A Group"\n')
    proc = await asyncio.create_subprocess_exec(
        *CLI, "tail", "--config", str(bad), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and "mesh.group" in err.decode() and "Traceback" not in err.decode()
