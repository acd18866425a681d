"""The structured peer log: line format, level filter, size-based rotation, redaction, tail/follow."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from xmesh_agent.config import LoggingConfig, SafetyConfig, parse_config
from xmesh_agent.logs import PeerLog, follow, log_path, tail
from xmesh_agent.safety import Gates
from xmesh_agent.wake.events import wake_events
from xmesh_agent.wake.payloads import AdmitResult, Outcome, ReserveResult, SafetyVerdict


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_json_event_per_line_with_the_five_keys(tmp_path: Path) -> None:
    log = PeerLog("rev-1", tmp_path / "peer.log")
    log.event("wake-started", {"wakeId": "wake-rev-1-cmb1-ab", "n": 3})
    log("emitted", {"key": "cmb1-cd"}, "info")
    log.close()
    events = lines(tmp_path / "peer.log")
    assert [e["evt"] for e in events] == ["wake-started", "emitted"]
    first = events[0]
    assert set(first) == {"ts", "level", "evt", "peer", "data"}
    assert first["peer"] == "rev-1" and first["level"] == "info" and first["data"]["n"] == 3
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert (tmp_path / "peer.log").stat().st_mode & 0o777 == 0o600


def test_keys_in_the_file_are_snake_case_and_emitted_carries_the_reply_text(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from xmesh_agent.cli.logs_cmd import as_json, readable

    log = PeerLog("rev-1", tmp_path / "peer.log")
    seen: list[dict] = []
    log.listeners.append(lambda evt, data: seen.append(data))
    reply = {"focus": "neutral", "commitment": "I will  review\nthe limiter", "mood": ""}
    emit = SimpleNamespace(key="cmb1-" + "ab" * 32, route="broadcast", to=None, delivered_to=2)
    wake_events.emitted(log, "wake-rev-1-cmb1-" + "cd" * 32, emit, reply)
    log.close()
    data = lines(tmp_path / "peer.log")[0]["data"]
    assert set(data) == {"wake_id", "key", "route", "to", "delivered_to", "text"}
    assert data["text"] == "commitment: I will review the limiter"
    assert "wakeId" in seen[0]  # listeners get the event as built; only the file is normalised
    line = (tmp_path / "peer.log").read_text().splitlines()[0]
    shown = readable(line)
    assert " rev-1  emitted " in shown and "cmb1-cdcdcdcd" in shown and "cmb1-abababab broadcast" in shown
    assert shown.endswith("2 peer(s): commitment: I will review the limiter")
    # a line written before keys were snake_case reads the same, and --json normalises it
    old = json.dumps(
        {
            "ts": "2026-12-01T10:00:00.000Z",
            "level": "warn",
            "evt": "model-call",
            "peer": "p",
            "data": {
                "wakeId": "w",
                "inputTokens": 12,
                "outputTokens": 3,
                "costUsd": None,
                "model": "m",
                "adapter": "a",
                "fields": ["focus"],
            },
        }
    )
    assert readable(old).startswith("2026-12-01 10:00:00 ! p  model-call")
    assert readable(old).endswith("a/m: 12+3 tokens, unknown price -> focus")
    assert json.loads(as_json(old))["data"]["input_tokens"] == 12
    assert readable("not json") == "not json"


def test_level_filter_drops_below_threshold_but_listeners_see_everything(tmp_path: Path) -> None:
    log = PeerLog("p", tmp_path / "peer.log", LoggingConfig(level="warn"))
    seen: list[str] = []
    log.listeners.append(lambda evt, data: seen.append(evt))
    log("debug-thing", level="debug")
    log("wake-started")
    log("budget-warning", level="warn")
    log("model-error", level="error")
    log.close()
    assert [e["evt"] for e in lines(tmp_path / "peer.log")] == ["budget-warning", "model-error"]
    assert seen == ["debug-thing", "wake-started", "budget-warning", "model-error"]


def test_rotation_keeps_n_files_each_under_the_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "peer.log"
    log = PeerLog("p", path, LoggingConfig(max_file_size=1024, keep=2))
    for i in range(200):
        log("tick", {"i": i, "pad": "x" * 40})
    log.close()
    assert path.exists() and Path(f"{path}.1").exists() and Path(f"{path}.2").exists()
    assert not Path(f"{path}.3").exists()
    for p in (path, Path(f"{path}.1"), Path(f"{path}.2")):
        assert 0 < p.stat().st_size <= 1024
    # newest in peer.log, older in .1 and .2, oldest dropped, order kept across the files
    ordered = lines(Path(f"{path}.2")) + lines(Path(f"{path}.1")) + lines(path)
    numbers = [e["data"]["i"] for e in ordered]
    assert numbers == list(range(numbers[0], 200)) and numbers[0] > 0


def test_api_keys_never_reach_the_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "env-secret-value-123456")
    cfg = parse_config(
        {
            "identity": {"name": "p"},
            "mesh": {},
            "model": {"adapter": "openai", "api_key": "configured-key-abcdef123"},
            "logging": {"file_path": str(tmp_path / "x" / "custom.log")},
        }
    )
    log = PeerLog.for_config(cfg)
    assert log.path == log_path(cfg) == tmp_path / "x" / "custom.log"
    log(
        "model-error",
        {
            "error": "401 for key configured-key-abcdef123 (env env-secret-value-123456)",
            "api_key": "whatever",
            "headers": {"Authorization": "Bearer abc"},
            "text": "leaked sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAAAAAA in output",
        },
    )
    log.close()
    raw = log.path.read_text()
    for secret in (
        "configured-key-abcdef123",
        "env-secret-value-123456",
        "whatever",
        "Bearer abc",
        "AAAAAAAA",
    ):
        assert secret not in raw
    data = lines(log.path)[0]["data"]
    assert data["api_key"] == "****" and data["headers"]["authorization"] == "****"
    assert "sk-ant-****" in data["text"]


def test_gate_blocked_text_is_logged_only_as_what_the_rule_matched(tmp_path: Path) -> None:
    gates = Gates.from_config(SafetyConfig())
    field_text = "now git push --force origin main and deploy the build to every region"
    verdict = gates.check({"intent": field_text})
    assert verdict.action in ("block", "approve")
    reason = f"rule {verdict.rule} on {verdict.field}: {verdict.excerpt}"
    log = PeerLog("p", tmp_path / "peer.log")
    wake_events.safety(
        log,
        "wake-1",
        SafetyVerdict(action="block", outcome=Outcome.SUPPRESSED_GATE, rule="git-push", reason=reason),
    )
    log.close()
    event = lines(tmp_path / "peer.log")[0]
    assert event["evt"] == "suppressed" and event["level"] == "warn"
    assert event["data"]["outcome"] == "suppressed-gate" and '"git push"' in event["data"]["reason"]
    assert field_text not in (tmp_path / "peer.log").read_text()


def test_wake_events_name_admission_and_budget(tmp_path: Path) -> None:
    log = PeerLog("p", tmp_path / "peer.log")
    wake_events.admit(log, "cmb1-a", AdmitResult(admitted=True, decision="aligned", drift=0.1))
    wake_events.admit(
        log, "cmb1-b", AdmitResult(admitted=False, decision="rejected", drift=0.9, reason="SVAF")
    )
    wake_events.reserve(log, "w1", ReserveResult(allowed=True, warning="wake budget at 80% of the burst cap"))
    wake_events.reserve(
        log, "w2", ReserveResult(allowed=False, outcome=Outcome.COST_CAP, reason="cost-cap-run")
    )
    log.close()
    events = lines(tmp_path / "peer.log")
    assert [e["evt"] for e in events] == ["admitted", "rejected", "budget-warning", "suppressed"]
    assert events[1]["data"]["drift"] == 0.9 and events[3]["data"]["outcome"] == "cost-cap"


def test_unwritable_log_costs_the_event_not_the_caller(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    log = PeerLog("p", blocker / "peer.log")
    log("wake-started", {"x": 1})  # must not raise
    log.close()


def test_tail_and_follow_across_rotation(tmp_path: Path) -> None:
    path = tmp_path / "peer.log"
    log = PeerLog("p", path, LoggingConfig(max_file_size=1024, keep=3))
    for i in range(5):
        log("early", {"i": i})
    assert [json.loads(x)["data"]["i"] for x in tail(path, 2)] == [3, 4]
    assert tail(path, 0) == [] and tail(tmp_path / "absent.log", 5) == []

    got: list[str] = []
    done = threading.Event()

    def reader() -> None:
        for line in follow(path, poll=0.02, stop=done.is_set):
            got.append(line)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    i = 0
    # keep writing (through at least one rotation) until the follower has seen 60 late events
    while sum('"late"' in g for g in got) < 60 and time.monotonic() < deadline:
        log("late", {"i": i, "pad": "y" * 60})
        i += 1
        time.sleep(0.005)
    done.set()
    thread.join(5)
    log.close()
    late = [json.loads(g)["data"]["i"] for g in got if '"late"' in g]
    assert len(late) >= 60 and Path(f"{path}.1").exists()
    assert late == sorted(late)


def test_token_counts_are_not_mistaken_for_credentials() -> None:
    from xmesh_agent.logs import _secret_key

    assert not _secret_key("inputTokens") and not _secret_key("output_tokens")
    assert _secret_key("relay_token") and _secret_key("apiKey".replace("K", "_k"))
