"""[observability]: the peer process's Prometheus endpoint (a Temporal Runtime) and its OpenTelemetry traces.

One endpoint serves both the Temporal SDK's metrics (workflow/activity task latencies, pollers, sticky
cache...) and the peer's own (xmesh_agent.observability), because ours are made on the same Runtime's
meter. Traces use Temporal's TracingInterceptor, so a wake is one trace: the listener's `xmesh.wake`
span, StartWorkflow, RunWorkflow, each activity, the model call and the `mmp.publish` of the reply.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from xmesh_agent import paths
from xmesh_agent.config import AgentConfig, ObservabilityConfig
from xmesh_agent.observability import BUCKETS, PeerMetrics

OTEL_HINT = "install the otel extra: pip install 'xmesh-agent[otel]'"


class TelemetryError(Exception):
    """[observability] asks for something this process cannot do; the message says what to change."""


@dataclass
class Telemetry:
    runtime: Runtime | None = None
    metrics: PeerMetrics = field(default_factory=PeerMetrics)
    interceptors: list[Any] = field(default_factory=list)
    provider: Any = None
    """The OpenTelemetry TracerProvider this process set up (flushed at shutdown)."""

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()  # flushes the batch of spans not yet exported


def metrics_runtime(cfg: AgentConfig) -> Runtime | None:
    """A Temporal Runtime serving GET /metrics on `[observability] metrics`, tagged with peer and group."""
    address = cfg.observability.metrics
    if not address:
        return None
    prometheus = PrometheusConfig(bind_address=address, histogram_bucket_overrides=BUCKETS)
    telemetry = TelemetryConfig(metrics=prometheus, global_tags={"peer": cfg.name, "group": cfg.group})
    try:
        return Runtime(telemetry=telemetry)
    except (ValueError, RuntimeError) as exc:
        raise TelemetryError(
            f"[observability] metrics = {address!r}: cannot serve metrics there ({exc}); "
            "pick a free port (an IP address, not a host name)"
        ) from None


def traces_path(cfg: AgentConfig) -> Path:
    obs = cfg.observability
    return (
        Path(obs.traces_file).expanduser() if obs.traces_file else paths.peer_dir(cfg.name) / "traces.jsonl"
    )


def _exporter(cfg: AgentConfig) -> Any:
    obs = cfg.observability
    if obs.tracing == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise TelemetryError(
                f"[observability] tracing = 'otlp' needs the OTLP exporter: {OTEL_HINT}"
            ) from None
        return OTLPSpanExporter(endpoint=obs.otlp_endpoint)
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    path = paths.ensure_dir(traces_path(cfg).parent) / traces_path(cfg).name
    out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the exporter
    return ConsoleSpanExporter(out=out, formatter=lambda s: s.to_json(indent=None) + "\n")


def tracing(cfg: AgentConfig) -> tuple[list[Any], Any]:
    """(client interceptors, tracer provider) for `[observability] tracing`; ([], None) when off."""
    if cfg.observability.tracing == "off":
        return [], None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from temporalio.contrib.opentelemetry import TracingInterceptor
    except ImportError:
        raise TelemetryError(f"[observability] tracing needs OpenTelemetry: {OTEL_HINT}") from None
    resource = Resource.create(
        {"service.name": "xmesh-agent", "xmesh.peer": cfg.name, "xmesh.group": cfg.group}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter(cfg)))
    trace.set_tracer_provider(provider)
    return [TracingInterceptor(trace.get_tracer("xmesh_agent.temporal"))], provider


def open_telemetry(cfg: AgentConfig) -> Telemetry:
    """Everything [observability] asks for, before the Temporal client is made (it takes the Runtime)."""
    runtime = metrics_runtime(cfg)
    interceptors, provider = tracing(cfg)
    metrics = PeerMetrics(runtime.metric_meter if runtime is not None else None)
    return Telemetry(runtime, metrics, interceptors, provider)


def check(obs: ObservabilityConfig) -> list[tuple[str, bool, str]]:
    """dry-run rows: is the metrics port free, can this install trace as asked. Nothing is started."""
    rows: list[tuple[str, bool, str]] = []
    if obs.metrics:
        host, _, port = obs.metrics.rpartition(":")
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
                s.bind((host.strip("[]"), int(port)))
            rows.append(("metrics", True, f"Prometheus endpoint http://{obs.metrics}/metrics"))
        except OSError as exc:
            rows.append(("metrics", False, f"cannot listen on {obs.metrics}: {exc.strerror or exc}"))
    else:
        rows.append(("metrics", True, 'off (set [observability] metrics = "127.0.0.1:9464")'))
    if obs.tracing == "off":
        rows.append(("tracing", True, "off"))
        return rows
    try:
        import opentelemetry.sdk.trace  # noqa: F401
        import temporalio.contrib.opentelemetry  # noqa: F401

        if obs.tracing == "otlp":
            import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
    except ImportError:
        rows.append(("tracing", False, f"{obs.tracing}: OpenTelemetry is not installed; {OTEL_HINT}"))
        return rows
    where = (
        obs.otlp_endpoint if obs.tracing == "otlp" else (obs.traces_file or "traces.jsonl in the peer's dir")
    )
    rows.append(("tracing", True, f"{obs.tracing} -> {where}"))
    return rows
