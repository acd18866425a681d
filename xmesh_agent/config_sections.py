"""The sections of agent.toml, one model each (xmesh_agent.config assembles, loads and writes them)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from xmesh_agent.roles import CAT7

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
GROUP_PATTERN = r"^[a-z0-9_.-]{1,64}$"

AdapterName = Literal["anthropic", "openai", "mistral", "ollama", "offline"]
ADAPTERS: tuple[str, ...] = get_args(AdapterName)

DEFAULT_MODELS = {
    "anthropic": "claude-haiku-4-5-20251001",
    "openai": "gpt-4o-mini",
    "mistral": "mistral-small-latest",
    "ollama": "llama3.2:3b",
    "offline": "offline-echo",
}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class IdentityConfig(Section):
    name: Annotated[str, Field(pattern=NAME_PATTERN, description="Peer name, unique on the mesh.")]
    role: str | None = Field(default=None, description="Role label; defaults to the name.")


LAN_HOST = "0.0.0.0"
LAN_DISCOVERY = ("registry", "mdns")
"""A peer whose config is silent listens on every interface and finds peers by DNS-SD as well as
through the same-host registry, as the original runtime and the stock node do (Bonjour)."""


class MeshConfig(Section):
    group: Annotated[str, Field(pattern=GROUP_PATTERN)] = "default"
    host: str = Field(
        default=LAN_HOST,
        description="Address the MMP TCP listener binds: all interfaces by default (peers on the LAN reach it); "
        '"127.0.0.1" keeps the peer on this machine.',
    )
    port: Annotated[int, Field(ge=0, le=65535)] = Field(default=0, description="0 picks a free port.")
    peers: list[str] = Field(default_factory=list, description="Static peers as host:port.")
    discovery: list[Literal["registry", "mdns"]] = Field(
        default_factory=lambda: list(LAN_DISCOVERY),
        description="registry: same-host ~/.sym/loopback; mdns: DNS-SD on the LAN. Both by default.",
    )
    relay: str | None = Field(default=None, description="WebSocket relay URL (ws:// or wss://).")
    relay_token: str | None = None
    retention_days: Annotated[float, Field(ge=0)] = Field(
        default=90.0, description="Days a CMB stays in the peer's store; 0 keeps them forever."
    )
    freshness_seconds: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="SVAF freshness τ (MMP §19.2): how fast a signal goes stale for admission. "
        "Default: the role's profile (coding roles: 7200).",
    )
    memory_days: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Profile retention (MMP §19.2): stored CMBs older than this stop anchoring SVAF "
        "admission, so a long-lived peer is not held to its first topics. Default: the role's "
        "profile (coding roles: 7).",
    )
    admission: Literal["tofu", "strict", "open"] = Field(
        default="tofu", description="tofu: pin first key seen; strict: trusted keys only; open."
    )
    encoder: Literal["lexical", "semantic"] = Field(
        default="lexical",
        description="SVAF field encoder: lexical (built in) or semantic (MiniLM; the semantic extra).",
    )


def mesh_reach(mesh: MeshConfig) -> str:
    """One line: where a peer listens, how it finds others, and how to keep it on this machine."""
    port = f"port {mesh.port}" if mesh.port else "a free port"
    local = mesh.host.startswith("127.") or mesh.host in ("::1", "localhost")
    where = "this machine only" if local else ("all interfaces" if mesh.host in ("0.0.0.0", "::", "") else "")
    found = " + ".join(
        {"registry": "same-host registry", "mdns": "DNS-SD on the LAN"}[d] for d in mesh.discovery
    )
    line = f"listens on {mesh.host} ({where}), {port}" if where else f"listens on {mesh.host}, {port}"
    line += f"; discovery: {found or 'none'}"
    if mesh.relay:
        line += f"; relay {mesh.relay}"
    if not local:
        line += (
            f"; admission {mesh.admission}. To keep it on this machine: "
            '[mesh] host = "127.0.0.1" (and discovery = ["registry"])'
        )
    return line


class RoleWeights(Section):
    focus: Annotated[float, Field(ge=0)] = 1.0
    issue: Annotated[float, Field(ge=0)] = 1.0
    intent: Annotated[float, Field(ge=0)] = 1.0
    motivation: Annotated[float, Field(ge=0)] = 1.0
    commitment: Annotated[float, Field(ge=0)] = 1.0
    perspective: Annotated[float, Field(ge=0)] = 1.0
    mood: Annotated[float, Field(ge=0)] = 1.0

    def as_dict(self) -> dict[str, float]:
        return {f: getattr(self, f) for f in CAT7}


MAX_FALLBACKS = 4


class FallbackModel(Section):
    """One model to try when the ones before it fail; unset keys come from [model] when the adapter is the same."""

    adapter: AdapterName | None = Field(default=None, description="Defaults to [model] adapter.")
    model_name: Annotated[str, Field(min_length=1)]
    api_key: str | None = Field(default=None, repr=False)
    base_url: str | None = None
    timeout_seconds: Annotated[float, Field(gt=0, le=600)] | None = None
    price_input_per_mtok: Annotated[float, Field(ge=0)] | None = None
    price_output_per_mtok: Annotated[float, Field(ge=0)] | None = None


def _fallback_item(i: int, item: Any) -> Any:
    """`"openai/gpt-4o-mini"` or `"claude-sonnet-4-6"` (same adapter) as a FallbackModel table."""
    if isinstance(item, dict):
        return item
    if not isinstance(item, str):
        raise ValueError(f'fallback[{i}] must be "adapter/model", "model" or a table (got {item!r})')
    text = item.strip()
    head, sep, tail = text.partition("/")
    if sep and head in ADAPTERS:
        return {"adapter": head, "model_name": tail}
    return {"model_name": text}


class ModelConfig(Section):
    adapter: AdapterName
    model_name: str | None = Field(default=None, description="Defaults per adapter.")
    api_key: str | None = Field(default=None, repr=False, description="Prefer the vendor's env variable.")
    base_url: str | None = None
    max_tokens_per_call: Annotated[int, Field(ge=1, le=200_000)] = 1024
    timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 60.0
    price_input_per_mtok: Annotated[float, Field(ge=0)] | None = None
    price_output_per_mtok: Annotated[float, Field(ge=0)] | None = None
    fallback: Annotated[list[FallbackModel], Field(max_length=MAX_FALLBACKS)] = Field(
        default_factory=list,
        description="Models tried in order when this one fails for a wake (breaker open, permanent error, "
        'retries used up): "adapter/model", "model" (same adapter) or a table with adapter, model_name, '
        "base_url, api_key, timeout_seconds, prices.",
    )

    @field_validator("fallback", mode="before")
    @classmethod
    def _fallback_strings(cls, value: Any) -> Any:
        return [_fallback_item(i, v) for i, v in enumerate(value)] if isinstance(value, list) else value

    @field_validator("fallback")
    @classmethod
    def _fallback_once(cls, value: list[FallbackModel], info: ValidationInfo) -> list[FallbackModel]:
        adapter = info.data.get("adapter")
        if adapter is None:
            return value  # the adapter itself is wrong; that error is reported
        seen = {f"{adapter}/{info.data.get('model_name') or DEFAULT_MODELS[adapter]}"}
        for i, item in enumerate(value):
            label = f"{item.adapter or adapter}/{item.model_name}"
            if label in seen:
                raise ValueError(f"fallback[{i}] {label!r} is already in the chain (list each model once)")
            seen.add(label)
        return value

    @model_validator(mode="after")
    def _default_model(self) -> ModelConfig:
        if not self.model_name:
            self.model_name = DEFAULT_MODELS[self.adapter]
        return self

    @property
    def label(self) -> str:
        """`adapter/model`: how a model is named in wake results, breakers and metrics."""
        return f"{self.adapter}/{self.model_name}"

    def chain(self) -> list[ModelConfig]:
        """This model, then each fallback as a full [model] section (same adapter: key, URL, timeout inherited)."""
        models = [self.model_copy(update={"fallback": []})]
        for item in self.fallback:
            adapter = item.adapter or self.adapter
            same = adapter == self.adapter
            models.append(
                ModelConfig(
                    adapter=adapter,
                    model_name=item.model_name,
                    api_key=item.api_key or (self.api_key if same else None),
                    base_url=item.base_url or (self.base_url if same else None),
                    max_tokens_per_call=self.max_tokens_per_call,
                    timeout_seconds=item.timeout_seconds or self.timeout_seconds,
                    price_input_per_mtok=item.price_input_per_mtok,
                    price_output_per_mtok=item.price_output_per_mtok,
                )
            )
        return models


class ContextConfig(Section):
    k_lineage: Annotated[int, Field(ge=0)] = 3
    n_own: Annotated[int, Field(ge=0)] = 5
    n_group: Annotated[int, Field(ge=0)] = 10
    max_context_tokens: Annotated[int, Field(ge=256)] = 8000


class BudgetConfig(Section):
    max_wakes_per_minute: Annotated[int, Field(ge=1)] = 10
    max_wakes_per_hour: Annotated[int, Field(ge=1)] = 100
    max_wakes_per_day: Annotated[int, Field(ge=1)] = 1000
    max_cost_usd_per_hour: Annotated[float, Field(ge=0)] = 1.0
    max_cost_usd_per_day: Annotated[float, Field(ge=0)] = 10.0
    max_cost_usd_per_run: Annotated[float, Field(ge=0)] = 5.0


class GateRule(Section):
    name: str
    pattern: str
    fields: list[Literal[CAT7]] = Field(default_factory=lambda: list(CAT7))  # type: ignore[valid-type]
    action: Literal["block", "approve"] = "block"

    @model_validator(mode="after")
    def _compiles(self) -> GateRule:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"pattern is not a valid regular expression: {exc}") from exc
        return self


class SafetyConfig(Section):
    cycle_depth: Annotated[int, Field(ge=1, le=64)] = 5
    approval_gates: Literal["default", "approve", "none"] = Field(
        default="default",
        description="default: the built-in rules (git push, deploy, .env, secrets...) block; approve: they "
        "wait for `xmesh-agent approve`; none: off. Secret-shaped text (private keys, API keys) always blocks.",
    )
    gates: list[GateRule] = Field(default_factory=list, description="Custom rules, added.")
    approval_timeout_seconds: Annotated[int, Field(ge=1)] = 3600


class RoutingConfig(Section):
    response_routing: Literal["broadcast", "targeted", "auto"] = "broadcast"


class AttachConfig(Section):
    mode: Literal["headless"] = "headless"


class LoggingConfig(Section):
    level: Literal["error", "warn", "info", "debug"] = "info"
    file_path: str | None = Field(default=None, description="Defaults to the peer's log dir.")
    max_file_size: Annotated[int, Field(ge=1024)] = 5 * 1024 * 1024
    keep: Annotated[int, Field(ge=1)] = 5


class TemporalConfig(Section):
    address: str | None = Field(default=None, description="host:port; unset = embedded server.")
    namespace: str | None = Field(
        default=None, description="Defaults to $TEMPORAL_NAMESPACE, else 'default'."
    )
    api_key: str | None = None
    tls: bool = False


class ObservabilityConfig(Section):
    metrics: str | None = Field(
        default=None,
        description='host:port of this peer\'s Prometheus endpoint (GET /metrics), e.g. "127.0.0.1:9464": '
        "Temporal SDK metrics and the peer's own. Unset: no endpoint.",
    )
    tracing: Literal["off", "otlp", "file"] = Field(
        default="off",
        description="OpenTelemetry traces of every wake (needs the otel extra): otlp sends them to "
        "otlp_endpoint over HTTP, file appends them as JSON lines to traces_file.",
    )
    otlp_endpoint: str = Field(
        default="http://127.0.0.1:4318/v1/traces", description="OTLP/HTTP traces endpoint."
    )
    traces_file: str | None = Field(default=None, description="Defaults to traces.jsonl in the peer's dir.")

    @field_validator("metrics")
    @classmethod
    def _metrics_address(cls, value: str | None) -> str | None:
        host, sep, port = (value or "").strip().rpartition(":")
        if value is not None and (not sep or not host or not port.isdigit() or not 0 < int(port) < 65536):
            raise ValueError('must be "host:port" with a port 1-65535, e.g. "127.0.0.1:9464"')
        return value.strip() if value else None

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (OTLP over HTTP)")
        return value
