"""A peer's own metrics and trace spans, over whatever meter and tracer the process set up.

No Temporal import: the meter is anything with Temporal's MetricMeter shape (create_counter,
create_histogram_float, create_gauge, create_gauge_float), so the peer's numbers land on the same
Prometheus endpoint as the Temporal SDK's. With no meter every call is a no-op. Spans go through
the OpenTelemetry API when it is installed (a no-op until a tracer provider is set), else nowhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]
COST_BUCKETS = [0.00001, 0.0001, 0.001, 0.01, 0.1, 1.0]
BUCKETS = {"xmesh_model_latency_seconds": LATENCY_BUCKETS, "xmesh_model_cost_usd": COST_BUCKETS}
"""Histogram buckets for the exporter (seconds and USD; its defaults are milliseconds)."""
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}
WAKES_METRIC = "xmesh_wakes_total"
"""Counted by the wake workflow itself, through Temporal's replay-safe workflow meter."""


class _Noop:
    def add(self, value: Any, attrs: Any = None) -> None: ...

    def record(self, value: Any, attrs: Any = None) -> None: ...

    def set(self, value: Any, attrs: Any = None) -> None: ...


class PeerMetrics:
    """Model calls (latency, tokens, cost, outcome), breakers, mesh peers, frames in/out/rejected, cost."""

    def __init__(self, meter: Any = None) -> None:
        self.enabled = meter is not None
        noop = _Noop()

        def make(kind: str, name: str, description: str, unit: str | None = None) -> Any:
            return getattr(meter, kind)(name, description, unit) if meter is not None else noop

        self._calls = make("create_counter", "xmesh_model_calls_total", "Model calls by model and outcome")
        self._latency = make(
            "create_histogram_float", "xmesh_model_latency_seconds", "Model call latency", "s"
        )
        self._tokens = make("create_counter", "xmesh_model_tokens_total", "Model tokens by model and kind")
        self._cost = make("create_histogram_float", "xmesh_model_cost_usd", "USD per priced model call")
        self._unpriced = make(
            "create_counter", "xmesh_model_calls_unpriced_total", "Model calls whose price is unknown"
        )
        self._breaker = make(
            "create_gauge", "xmesh_breaker_state", "Circuit breaker per model: 0 closed, 1 half-open, 2 open"
        )
        self._peers = make("create_gauge", "xmesh_mesh_peers", "Connected, handshaken mesh peers")
        self._frames_in = make("create_counter", "xmesh_frames_in_total", "MMP frames received, by type")
        self._frames_out = make("create_counter", "xmesh_frames_out_total", "MMP frames sent, by type")
        self._rejected = make(
            "create_counter", "xmesh_frames_rejected_total", "Inbound CMB frames refused, by reason"
        )
        self._spent = make("create_gauge_float", "xmesh_cost_usd", "USD spent by window (run, hour, day)")

    def model_call(
        self,
        model: str,
        outcome: str,
        seconds: float,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float | None = None,
    ) -> None:
        """One call: `outcome` is ok, transient, permanent or circuit-open (then nothing else is recorded)."""
        self._calls.add(1, {"model": model, "outcome": outcome})
        if outcome == "circuit-open":
            return
        self._latency.record(seconds, {"model": model})
        if outcome != "ok":
            return
        self._tokens.add(input_tokens, {"model": model, "kind": "input"})
        self._tokens.add(output_tokens, {"model": model, "kind": "output"})
        if cost_usd is None:
            self._unpriced.add(1, {"model": model})
        else:
            self._cost.record(cost_usd, {"model": model})

    def breaker(self, model: str, state: str) -> None:
        self._breaker.set(BREAKER_STATES.get(state, 2), {"model": model})

    def mesh_peers(self, count: int) -> None:
        self._peers.set(count)

    def frame_in(self, kind: str) -> None:
        self._frames_in.add(1, {"type": _kind(kind)})

    def frame_out(self, kind: str, count: int = 1) -> None:
        if count:
            self._frames_out.add(count, {"type": _kind(kind)})

    def frame_rejected(self, reason: str) -> None:
        """`reason` comes from our own intake (malformed, signature, e2e-undecryptable, ...): bounded."""
        self._rejected.add(1, {"reason": str(reason)[:40]})

    def spent(self, run_usd: float, hour_usd: float, day_usd: float) -> None:
        for window, usd in (("run", run_usd), ("hour", hour_usd), ("day", day_usd)):
            self._spent.set(usd, {"window": window})


NO_METRICS = PeerMetrics()


FRAME_TYPES = frozenset({"handshake", "ping", "pong", "cmb", "peer-info", "error"})


def _kind(value: object) -> str:
    """A frame type as a label: a peer that invents types must not mint unbounded series."""
    return value if isinstance(value, str) and value in FRAME_TYPES else "other"


try:  # the OpenTelemetry API: present with the otel extra (and often through other packages)
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - depends on the environment
    _otel_trace = None


@contextlib.contextmanager
def span(name: str, attributes: dict[str, Any] | None = None, start_ms: int | None = None) -> Iterator[Any]:
    """A child span of whatever is current (a wake's activity span), or nothing without OpenTelemetry.

    `start_ms`: when it began, if before now (a wake's trace starts when its trigger's frame arrived).
    """
    if _otel_trace is None:
        yield None
        return
    tracer = _otel_trace.get_tracer("xmesh_agent")
    clean = {k: v for k, v in (attributes or {}).items() if v is not None}
    start = start_ms * 1_000_000 if start_ms else None
    with tracer.start_as_current_span(name, attributes=clean, start_time=start) as current:
        yield current
