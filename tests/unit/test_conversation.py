"""What tail shows: blocks rendered from CMBs, and wake outcomes read from a peer's real event log."""

from __future__ import annotations

import os
from types import SimpleNamespace

from xmesh_agent.conversation import OutcomeFollower, Said, StoreFollower, render_said
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.logs import PeerLog, default_log_path
from xmesh_agent.mmp.cmb import mint
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.wake.events import wake_events

WRITER = NodeIdentity.generate("writer-u")


def test_a_block_shows_author_audience_parent_and_only_the_fields_with_text():
    root = mint({"focus": "rate limiter"}, identity=WRITER, group="g", created_at=1_760_000_000_000)
    reply = mint(
        {"focus": "rate limiter", "issue": "no burst limit", "mood": "  "},
        identity=WRITER,
        group="g",
        created_at=1_760_000_001_000,
        parents=[root],
        to="reviewer-u",
    )
    lines = render_said(Said(reply)).splitlines()
    assert lines[0].endswith(f"] writer-u -> reviewer-u  {reply.key[:17]}  re {root.key[:17]}")
    assert lines[1:] == ["  focus  rate limiter", "  issue  no burst limit"]
    as_json = Said(reply, 5, "writer-u").as_json()
    assert as_json["fields"]["mood"] == "neutral" and as_json["parents"] == [root.key]
    assert as_json["to"] == "reviewer-u" and as_json["received_at"] == 5


def _wake(peer: str, key: str) -> str:
    return f"wake-{peer}-{key}"


def test_outcomes_come_from_the_events_the_wake_steps_log():
    log = PeerLog("reviewer-u")
    rejected = SimpleNamespace(admitted=False, decision="redundant", drift=0.05, reason="SVAF redundant")
    wake_events.admit(log, "cmb1-aaa", rejected)
    budget = SimpleNamespace(allowed=False, outcome="budget-exceeded", reason="burst", warning=None)
    wake_events.reserve(log, _wake("reviewer-u", "cmb1-bbb"), budget)
    held = SimpleNamespace(action="approve", rule="deploy", reason="gate deploy", outcome=None)
    wake_events.safety(log, _wake("reviewer-u", "cmb1-ccc") + "-replay-1", held)
    emitted = SimpleNamespace(key="cmb1-reply", route="broadcast", to=None, delivered_to=["writer-u"])
    wake_events.emitted(log, _wake("reviewer-u", "cmb1-ddd"), emitted)
    log.close()

    follower = OutcomeFollower(peers=["reviewer-u"], history=True)
    found = {w.cmb_key: w for w in follower.poll()}
    assert found["cmb1-aaa"].outcome == "rejected" and found["cmb1-aaa"].reason == "SVAF redundant"
    assert found["cmb1-bbb"].outcome == "budget-exceeded"
    assert found["cmb1-ccc"].outcome == "awaiting-approval"
    assert found["cmb1-ddd"].outcome == "emitted" and found["cmb1-ddd"].reply == "cmb1-reply"
    assert follower.poll() == []  # nothing new

    path = default_log_path("reviewer-u")
    os.rename(path, path.with_suffix(".log.1"))  # rotated: the new file is read from its start
    again = PeerLog("reviewer-u")
    wake_events.admit(again, "cmb1-eee", rejected)
    again.close()
    assert [w.cmb_key for w in follower.poll()] == ["cmb1-eee"]


def test_a_follower_started_now_skips_what_was_logged_before():
    log = PeerLog("writer-u")
    rejected = SimpleNamespace(admitted=False, decision="redundant", drift=0.05, reason="r")
    wake_events.admit(log, "cmb1-old", rejected)
    follower = OutcomeFollower(peers=["writer-u"])
    assert follower.poll() == []
    wake_events.admit(log, "cmb1-new", rejected)
    log.close()
    assert [w.cmb_key for w in follower.poll()] == ["cmb1-new"]


def test_the_store_follower_reads_history_then_only_new_rows(tmp_path):
    store = CMBStore(tmp_path / "cmbs.db", group_commit=False)
    cmbs = [mint({"focus": f"topic {i}"}, identity=WRITER, group="g", created_at=i) for i in range(5)]
    for cmb in cmbs[:3]:
        store.put(cmb, source="own")
    follower = StoreFollower(tmp_path / "cmbs.db")
    assert [s.cmb.key for s in follower.recent(limit=2)] == [c.key for c in cmbs[1:3]]
    assert follower.poll() == []
    for cmb in cmbs[3:]:
        store.put(cmb, source="writer-u")
    assert [s.cmb.key for s in follower.poll()] == [c.key for c in cmbs[3:]]
    follower.close()
    store.close()
