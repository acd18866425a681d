"""`wakes export` JSON: payloads decoded in place, and read back by `replay --history`."""

from __future__ import annotations

import json
from pathlib import Path

from xmesh_agent.workers.history_json import readable, replayable
from xmesh_agent.workers.replay import check_history, load_history

APPROVED = Path(__file__).resolve().parents[1] / "fixtures" / "wake-approved.json"


def _events(text: str) -> list[dict]:
    return json.loads(text)["events"]


def test_every_json_payload_reads_as_json_not_base64() -> None:
    events = _events(readable(APPROVED.read_text()))
    started = events[0]["workflowExecutionStartedEventAttributes"]
    (wake,) = started["input"]["payloads"]
    assert wake["metadata"] == {"encoding": "json/plain"} and wake["json"]["peer"] == "rec-approved"
    decision = next(e for e in events if "workflowExecutionUpdateAcceptedEventAttributes" in e)
    (args,) = decision["workflowExecutionUpdateAcceptedEventAttributes"]["acceptedRequest"]["input"]["args"][
        "payloads"
    ]
    assert args["json"]["approved"] is True and args["json"]["by"] == "recorder"
    reply = next(e for e in events if "activityTaskCompletedEventAttributes" in e)
    (result,) = reply["activityTaskCompletedEventAttributes"]["result"]["payloads"]
    assert "launch the rocket" in json.dumps(result["json"]["fields"])
    assert '"data"' not in json.dumps(wake)


async def test_a_readable_export_replays_like_the_raw_history() -> None:
    raw = APPROVED.read_text()
    assert json.loads(replayable(raw)) == json.loads(raw)
    report = await check_history(load_history(readable(raw), "readable"))
    assert report.ok, report.message
