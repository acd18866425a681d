"""agent.toml: one peer's whole configuration, validated with clear, path-named errors.

The section models live in config_sections.py and are re-exported here."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from xmesh_agent.config_sections import (
    ADAPTERS,
    DEFAULT_MODELS,
    GROUP_PATTERN,
    LAN_DISCOVERY,
    LAN_HOST,
    MAX_FALLBACKS,
    NAME_PATTERN,
    AdapterName,
    AttachConfig,
    BudgetConfig,
    ContextConfig,
    FallbackModel,
    GateRule,
    IdentityConfig,
    LoggingConfig,
    MeshConfig,
    ModelConfig,
    ObservabilityConfig,
    RoleWeights,
    RoutingConfig,
    SafetyConfig,
    Section,
    TemporalConfig,
    mesh_reach,
)
from xmesh_agent.roles import preset_weights, profile

__all__ = [
    "NAME_PATTERN",
    "GROUP_PATTERN",
    "AdapterName",
    "ADAPTERS",
    "DEFAULT_MODELS",
    "Section",
    "IdentityConfig",
    "LAN_HOST",
    "LAN_DISCOVERY",
    "MeshConfig",
    "mesh_reach",
    "RoleWeights",
    "MAX_FALLBACKS",
    "FallbackModel",
    "ModelConfig",
    "ContextConfig",
    "BudgetConfig",
    "GateRule",
    "SafetyConfig",
    "RoutingConfig",
    "AttachConfig",
    "LoggingConfig",
    "TemporalConfig",
    "ObservabilityConfig",
    "AgentConfig",
    "ConfigError",
    "describe_error",
    "parse_config",
    "load_config",
    "json_schema",
    "to_toml",
]


class AgentConfig(Section):
    identity: IdentityConfig
    mesh: MeshConfig
    model: ModelConfig
    role_weights: RoleWeights | None = None
    context: ContextConfig = Field(default_factory=ContextConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    attach: AttachConfig = Field(default_factory=AttachConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    temporal: TemporalConfig = Field(default_factory=TemporalConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)

    @model_validator(mode="after")
    def _role_defaults(self) -> AgentConfig:
        if self.identity.role is None:
            self.identity.role = self.identity.name
        if self.role_weights is None:
            preset = preset_weights(self.identity.role) or {}
            self.role_weights = RoleWeights(**preset)
        freshness, memory = profile(self.identity.role)
        if self.mesh.freshness_seconds is None:
            self.mesh.freshness_seconds = freshness
        if self.mesh.memory_days is None:
            self.mesh.memory_days = memory
        return self

    @property
    def name(self) -> str:
        return self.identity.name

    @property
    def group(self) -> str:
        return self.mesh.group

    @property
    def weights(self) -> dict[str, float]:
        assert self.role_weights is not None
        return self.role_weights.as_dict()


class ConfigError(Exception):
    """A config that cannot be used. `problems` holds one line per problem, each naming its path."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def describe_error(error: dict[str, Any]) -> str:
    """One pydantic error as `toml.path: what is wrong (got value)`."""
    loc = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        return f"{loc}: unknown key (check the spelling; `xmesh-agent schema` lists every key)"
    if kind == "missing":
        if len(error["loc"]) == 1:
            return f"[{loc}]: missing required section"
        return f"{loc}: missing required key"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return f"{loc}: {message} (got {shown})"


def parse_config(data: dict[str, Any], source: str = "agent.toml") -> AgentConfig:
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        problems = [describe_error(e) for e in exc.errors(include_url=False)]
        raise ConfigError(source, problems) from None


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate an agent.toml; every problem becomes one ConfigError line."""
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            source, ["file not found (create one with `xmesh-agent init <peer> --role <role>`)"]
        ) from None
    except OSError as exc:
        raise ConfigError(source, [f"cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    return parse_config(data, source)


def json_schema() -> dict[str, Any]:
    schema = AgentConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "xmesh-agent agent.toml"
    return schema


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(config: AgentConfig | dict[str, Any]) -> str:
    """Write a config as agent.toml (sections of scalars; `[[safety.gates]]` tables)."""
    data = config.model_dump(exclude_none=True) if isinstance(config, AgentConfig) else config
    out: list[str] = []
    for section, body in data.items():
        tables = {k: v for k, v in body.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        out.append(f"[{section}]")
        out += [f"{k} = {_toml_value(v)}" for k, v in body.items() if k not in tables]
        out.append("")
        for name, rows in tables.items():
            for row in rows:
                out.append(f"[[{section}.{name}]]")
                out += [f"{k} = {_toml_value(v)}" for k, v in row.items()]
                out.append("")
    return "\n".join(out)
