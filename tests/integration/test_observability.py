"""[observability] with real parts: a peer process serving /metrics (scraped and parsed as Prometheus
would) and writing the OpenTelemetry trace of a wake, from the inbound frame to the reply it published.

The peer runs as `xmesh-agent run` in a child process (one Temporal Runtime and one tracer provider per
process, as in production); a raw MMP peer in the test sends it a trigger, a forged CMB and an unknown
frame type over TCP, and receives the reply.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.envelope_kit import group_name, trigger
from tests.integration.peer_kit import eventually, peer_config
from tests.integration.process_kit import PeerProcess, child_env, free_port
from tests.unit.node_testkit import RawPeer
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import mint

pytestmark = pytest.mark.slow


def scrape(port: int) -> dict[str, list]:
    """GET /metrics and parse it with Prometheus's own text parser: sample name -> samples."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


async def scraped(port: int, name: str, **labels: str) -> dict[str, list] | None:
    """A scrape in which `name` (with `labels`) is at least 1, else None (poll again)."""
    samples = await asyncio.to_thread(scrape, port)
    return samples if value(samples, name, **labels) >= 1 else None


async def reply_from(raw: RawPeer, author: str, timeout: float = 30.0) -> dict:
    """The first cmb frame `author` sends us (pings and peer-info are skipped)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        frame = await raw.recv(1.0)
        if frame and frame.get("type") == "cmb" and frame["cmb"].get("createdBy") == author:
            return frame["cmb"]
    raise AssertionError(f"no reply from {author} within {timeout}s")


def spans_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_peer_metrics_endpoint_and_wake_trace(temporal_env, tmp_path: Path) -> None:
    group, port = group_name(), free_port()
    traces = tmp_path / "traces.jsonl"
    obs = {"metrics": f"127.0.0.1:{port}", "tracing": "file", "traces_file": str(traces)}
    cfg = peer_config("obs-p", "reviewer", group, observability=obs)
    temporal = temporal_env.client.service_client.config.target_host
    proc = PeerProcess(cfg, tmp_path, child_env(tmp_path / "home", tmp_path / "loopback", temporal))
    proc.start()
    author = NodeIdentity.generate("author-o")
    raw = RawPeer(author, group)
    try:
        status = proc.status()
        assert status is not None
        await raw.connect(status["port"])
        await raw.handshake()
        cmb = trigger(author, group, 0)
        forged = trigger(author, group, 1).to_wire()
        forged["fields"]["focus"]["text"] = "swapped after signing"
        await raw.send({"type": "cmb", "cmb": forged})
        await raw.send({"type": "x-vendor-frame", "data": "ignored"})
        await raw.send({"type": "cmb", "cmb": cmb.to_wire()})
        reply = await reply_from(raw, "obs-p")
        assert reply["lineage"]["parents"] == [cmb.key], reply

        m = await eventually(lambda: scraped(port, "xmesh_wakes_total", outcome="emitted"), timeout=30)
        model = "offline/offline-echo"
        assert value(m, "xmesh_wakes_total", outcome="emitted", peer="obs-p", group=group) == 1
        assert value(m, "xmesh_model_calls_total", model=model, outcome="ok") == 1
        assert value(m, "xmesh_model_latency_seconds_count", model=model) == 1
        assert value(m, "xmesh_model_tokens_total", model=model, kind="input") > 0
        assert value(m, "xmesh_model_cost_usd_count", model=model) == 1
        assert value(m, "xmesh_model_cost_usd_sum", model=model) == 0  # offline: priced, and free
        assert value(m, "xmesh_frames_in_total", type="cmb") == 2
        assert value(m, "xmesh_frames_in_total", type="other") == 1
        assert value(m, "xmesh_frames_rejected_total") == 1
        assert value(m, "xmesh_frames_out_total", type="cmb") >= 1
        # gauges are sampled every 2 s
        m = await eventually(lambda: scraped(port, "xmesh_mesh_peers"))
        [breaker] = [s for s in m["xmesh_breaker_state"] if s.labels["model"] == model]
        assert breaker.value == 0
        assert [s.labels["window"] for s in m["xmesh_cost_usd"]] and value(m, "xmesh_cost_usd") == 0
        # the Temporal SDK's own metrics on the same endpoint, tagged with the peer
        assert value(m, "temporal_workflow_completed_total", peer="obs-p") >= 1
        assert value(m, "temporal_activity_execution_latency_count", activity_type="call_model") >= 1
        # a repeat in other words of nothing (same texts, another key) is rejected at arrival: counted too
        repeat = mint(cmb.texts(), identity=author, group=group, created_at=cmb.created_at + 1, parents=[cmb])
        await raw.send({"type": "cmb", "cmb": repeat.to_wire()})
        m = await eventually(lambda: scraped(port, "xmesh_wakes_total", outcome="rejected"), timeout=30)
        assert value(m, "xmesh_wakes_total", outcome="rejected", peer="obs-p", group=group) == 1
    finally:
        await raw.close()
        assert proc.stop() == 0, proc.log()
    # the trace of the wake, flushed at shutdown: one trace from the listener's start to the publish
    spans = spans_of(traces)
    by_id = {s["context"]["span_id"]: s for s in spans}
    [publish] = [s for s in spans if s["name"] == "mmp.publish"]
    assert publish["attributes"]["mmp.cmb.key"] == reply["key"]
    chain, span = [], publish
    while span is not None:
        chain.append(span["name"])
        span = by_id.get(span.get("parent_id"))
    # Temporal's interceptor parents the workflow's own spans on its StartWorkflow span
    assert chain == [
        "mmp.publish",
        "RunActivity:emit",
        "StartActivity:emit",
        "StartWorkflow:WakeWorkflow",
        "xmesh.wake",
    ]
    trace_id = publish["context"]["trace_id"]
    names = {s["name"] for s in spans if s["context"]["trace_id"] == trace_id}
    expected = {"RunWorkflow:WakeWorkflow", "RunActivity:admit", "RunActivity:call_model", "model.call"}
    assert expected <= names, names


class OTLPReceiver:
    """A loopback OTLP/HTTP traces endpoint: records the spans of every ExportTraceServiceRequest."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.spans: list = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                request = ExportTraceServiceRequest.FromString(body)
                receiver.paths.append(self.path)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        receiver.spans.extend(scope.spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def __enter__(self) -> OTLPReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_otlp_tracing_sends_the_wake_trace_to_a_collector(temporal_env, tmp_path: Path) -> None:
    group = group_name()
    temporal = temporal_env.client.service_client.config.target_host
    author = NodeIdentity.generate("author-t")
    with OTLPReceiver() as collector:
        cfg = peer_config(
            "otlp-p", "reviewer", group, observability={"tracing": "otlp", "otlp_endpoint": collector.url}
        )
        proc = PeerProcess(cfg, tmp_path, child_env(tmp_path / "home", tmp_path / "loopback", temporal))
        proc.start()
        raw = RawPeer(author, group)
        try:
            status = proc.status()
            assert status is not None
            await raw.connect(status["port"])
            await raw.handshake()
            cmb = trigger(author, group, 0)
            await raw.send({"type": "cmb", "cmb": cmb.to_wire()})
            reply = await reply_from(raw, "otlp-p")
        finally:
            await raw.close()
            assert proc.stop() == 0, proc.log()
        assert set(collector.paths) == {"/v1/traces"}
        [publish] = [s for s in collector.spans if s.name == "mmp.publish"]
        attrs = {a.key: a.value.string_value for a in publish.attributes}
        assert attrs["mmp.cmb.key"] == reply["key"]
        same_trace = {s.name for s in collector.spans if s.trace_id == publish.trace_id}
        assert {
            "xmesh.wake",
            "StartWorkflow:WakeWorkflow",
            "RunActivity:call_model",
            "model.call",
        } <= same_trace
        [root] = [s for s in collector.spans if s.name == "xmesh.wake"]
        assert {a.key: a.value.string_value for a in root.attributes}["mmp.cmb.key"] == cmb.key
        # the trace starts at the trigger's arrival (the root span ends once the wake is started)
        assert root.start_time_unix_nano == min(s.start_time_unix_nano for s in collector.spans)
