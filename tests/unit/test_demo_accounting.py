"""Soak accounting over real peer files (CMB store + wake ledger), and the demo's tables and lineage."""

from __future__ import annotations

from xmesh_agent import paths
from xmesh_agent.clock import now_ms
from xmesh_agent.demo.soak import account
from xmesh_agent.demo.watch import Tally, WakeRow, lineage_lines, ui_link
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CMB, mint
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.wake.ledger import WakeLedger
from xmesh_agent.workers.client import wake_id

GROUP = "g-acct"
SEEDER = NodeIdentity.generate("demo-seed")
PEER = NodeIdentity.generate("writer-01")


def _seed(text: str, at: int) -> CMB:
    return mint({"focus": text}, identity=SEEDER, group=GROUP, created_at=at)


def _reply(parent: CMB, text: str, at: int) -> CMB:
    return mint({"focus": text}, identity=PEER, group=GROUP, created_at=at, parents=[parent])


class PeerDisk:
    """The writer's store and ledger under the test's XMESH_HOME, closed before accounting reads them."""

    def __init__(self) -> None:
        home = paths.ensure_dir(paths.peer_dir("writer-01"))
        self.store = CMBStore(home / "cmbs.db")
        self.ledger = WakeLedger(home / "wakes.db")

    def receive(self, cmb: CMB) -> None:
        self.store.put(cmb, source="demo-seed")
        self.ledger.enqueue(cmb.key, cmb.created_by)

    def wake(self, cmb: CMB) -> str:
        wid = wake_id("writer-01", cmb.key)
        self.ledger.mark_woken(cmb.key, wid)
        return wid

    def emit(self, wid: str, reply: CMB) -> None:
        self.store.put(reply, source="own")
        self.ledger.record_emission(wid, reply.key)

    def close(self) -> None:
        self.store.close()
        self.ledger.close()


def _row(wid: str, outcome: str, cost: float = 0.0) -> WakeRow:
    return WakeRow(wid, "writer-01", outcome, cost, "demo-seed")


def _since() -> int:
    return now_ms() - 1000


def test_clean_run_passes_every_check():
    since, disk, tally = _since(), PeerDisk(), Tally()
    now = since + 500
    seed, waiting = _seed("rate limiter", now), _seed("pagination", now + 1)
    disk.receive(seed)
    disk.receive(waiting)  # still spooled when the peer stopped: not lost
    wid = disk.wake(seed)
    reply = _reply(seed, "writer takes up rate limiter", now + 2)
    disk.emit(wid, reply)
    disk.close()
    tally.closed[wid] = _row(wid, "emitted")
    checks = account(["writer-01"], GROUP, since, tally, [seed, reply], "demo-seed")
    assert [c.ok for c in checks] == [True, True, True], [c.line() for c in checks]
    assert "1 spooled" in checks[0].detail


def test_stored_cmb_without_wake_or_spool_is_a_lost_wake():
    since, disk, tally = _since(), PeerDisk(), Tally()
    seed = _seed("rate limiter", since + 500)
    disk.store.put(seed, source="demo-seed")  # stored, then the process died before spooling it
    disk.close()
    lost, _, _ = account(["writer-01"], GROUP, since, tally, [seed], "demo-seed")
    assert not lost.ok and seed.key[:20] in lost.detail


def test_two_answers_to_one_trigger_are_a_duplicate_emission():
    since, disk, tally = _since(), PeerDisk(), Tally()
    seed = _seed("rate limiter", since + 500)
    disk.receive(seed)
    wid = disk.wake(seed)
    first = _reply(seed, "writer takes up rate limiter", since + 600)
    second = _reply(seed, "writer takes up the rate limiter again", since + 700)
    disk.emit(wid, first)
    disk.store.put(second, source="own")  # a re-run wake minting a different CMB
    disk.close()
    tally.closed[wid] = _row(wid, "emitted")
    _, dup, _ = account(["writer-01"], GROUP, since, tally, [seed, first, second], "demo-seed")
    assert not dup.ok and "answered" in dup.detail and "sent 2 answers" in dup.detail


def test_emitted_wake_without_ledger_record_is_flagged():
    since, disk, tally = _since(), PeerDisk(), Tally()
    seed = _seed("rate limiter", since + 500)
    disk.receive(seed)
    wid = disk.wake(seed)
    disk.close()
    tally.closed[wid] = _row(wid, "emitted")
    _, dup, _ = account(["writer-01"], GROUP, since, tally, [seed], "demo-seed")
    assert not dup.ok and "no ledger record" in dup.detail


def test_running_or_unknown_outcome_is_unaccounted():
    since, disk, tally = _since(), PeerDisk(), Tally()
    seed = _seed("rate limiter", since + 500)
    disk.receive(seed)
    wid = disk.wake(seed)
    disk.close()
    tally.running.add(wid)
    lost, _, acct = account(["writer-01"], GROUP, since, tally, [seed], "demo-seed")
    assert lost.ok, "a running wake is not lost"
    assert not acct.ok and "still running" in acct.detail
    tally.running.clear()
    tally.closed[wid] = _row(wid, "terminated")
    assert not account(["writer-01"], GROUP, since, tally, [seed], "demo-seed")[2].ok


def test_missing_peer_files_mean_nothing_stored():
    checks = account(["never-ran"], GROUP, _since(), Tally(), [], "demo-seed")
    assert all(c.ok for c in checks)


def test_tally_table_and_summary():
    tally = Tally()
    for i, (peer, outcome, cost) in enumerate(
        [("writer-01", "emitted", 0.01), ("writer-01", "rejected", 0.0), ("reviewer-01", "emitted", 0.02)]
    ):
        tally.closed[f"w{i}"] = WakeRow(f"w{i}", peer, outcome, cost, "demo-seed")
    tally.running = {"w9"}
    table = tally.table()
    assert table[0].split()[:3] == ["peer", "rejected", "emitted"]  # outcome order, not alphabetical
    assert table[1].split() == ["reviewer-01", "0", "1", "1", "$0.0200"]
    assert table[-2].split() == ["total", "1", "2", "3", "$0.0300"]
    assert "still running" in table[-1]
    line = tally.summary_line()
    assert "3 wakes, 1 running, $0.0300" in line and "writer-01[rejected=1 emitted=1]" in line


def test_lineage_tree_and_ui_link():
    seed = _seed("rate limiter", 1_000)
    a = _reply(seed, "writer takes up rate limiter", 2_000)
    other = NodeIdentity.generate("reviewer-01")
    b = mint({"issue": "no burst test"}, identity=other, group=GROUP, created_at=3_000, parents=[a])
    lines = lineage_lines([b, a, seed], seed.key)
    assert [ln.split()[0] for ln in lines] == ["demo-seed", "writer-01", "reviewer-01"]
    assert lines[2].startswith("    ") and "issue: no burst test" in lines[2]
    link = ui_link("http://127.0.0.1:8233/", "default", "xmesh-demo")
    assert link == "http://127.0.0.1:8233/namespaces/default/workflows?query=XmGroup%20%3D%20%27xmesh-demo%27"
