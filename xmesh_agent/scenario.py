"""Scenario files: which peers a demo runs and the seed CMB that starts their work."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from xmesh_agent.config import AgentConfig, ConfigError, describe_error, load_config, parse_config
from xmesh_agent.durations import parse_duration
from xmesh_agent.mmp.cmb import CAT7


def _scenarios_dir() -> Path:
    """Installed from a wheel they are `xmesh_agent/scenarios`; in a checkout, the top-level folder."""
    here = Path(__file__).resolve().parent
    installed = here / "scenarios"
    return installed if installed.is_dir() else here.parent / "scenarios"


SCENARIOS_DIR = _scenarios_dir()
DEFAULT_SCENARIO = "trio"


class ScenarioSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    group: str = "xmesh-demo"
    peers: list[str] = Field(min_length=1)
    duration: str | None = Field(default=None, description="Default --duration (300, 90s, 2m, 1h).")

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and not parse_duration(value) > 0:
            raise ValueError("a duration must be more than 0")
        return value


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario: ScenarioSpec
    seed: dict[str, str]
    tasks: list[dict[str, str]] = Field(
        default_factory=list, description="Further seeds that soak mode publishes in turn."
    )

    @field_validator("seed", "tasks")
    @classmethod
    def _cat7_only(
        cls, value: dict[str, str] | list[dict[str, str]]
    ) -> dict[str, str] | list[dict[str, str]]:
        for seed in [value] if isinstance(value, dict) else value:
            if not any(seed.get(f, "").strip() for f in ("focus", "issue", "intent")):
                raise ValueError("a seed needs at least one of focus, issue, intent")
        return value

    def task(self, index: int) -> dict[str, str]:
        """The index-th seed of soak mode: the main seed first, then each task in turn, round robin."""
        seeds = [self.seed, *self.tasks]
        return dict(seeds[index % len(seeds)])


def resolve(name_or_path: str | None) -> Path:
    """A scenario by name (scenarios/<name>.toml) or by path."""
    candidate = Path(name_or_path or DEFAULT_SCENARIO)
    if candidate.suffix == ".toml" and candidate.exists():
        return candidate
    named = SCENARIOS_DIR / f"{candidate.stem}.toml"
    if named.exists():
        return named
    known = ", ".join(sorted(p.stem for p in SCENARIOS_DIR.glob("*.toml"))) or "none"
    raise ConfigError(str(candidate), [f"no such scenario (known: {known})"])


def _unknown_seed_keys(data: dict[str, Any]) -> list[str]:
    """A seed's keys are CAT7 fields; a typo (`focsu`) would otherwise seed an empty field silently."""
    seeds = [("seed", data.get("seed"))]
    tasks = data.get("tasks")
    seeds += [(f"tasks.{i}", t) for i, t in enumerate(tasks)] if isinstance(tasks, list) else []
    return [
        f"{where}.{key}: unknown key (a seed takes the CAT7 fields: {', '.join(CAT7)})"
        for where, seed in seeds
        if isinstance(seed, dict)
        for key in seed
        if key not in CAT7
    ]


def load_scenario(path: Path) -> tuple[Scenario, list[AgentConfig]]:
    """Read and check a scenario file and its peers: every problem, each with its TOML path."""
    source = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    except OSError as exc:
        raise ConfigError(source, [f"cannot read: {exc.strerror}"]) from None
    problems = _unknown_seed_keys(data)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems += [
            describe_error(e).replace("`xmesh-agent schema` lists every key", "see scenarios/trio.toml")
            for e in exc.errors(include_url=False)
        ]
        raise ConfigError(source, problems) from None
    configs: list[AgentConfig] = []
    for i, peer in enumerate(scenario.scenario.peers):
        try:
            configs.append(load_config(path.parent / peer))
        except ConfigError as exc:
            problems += [f"scenario.peers.{i} ({peer}): {p}" for p in exc.problems]
    if problems:
        raise ConfigError(source, problems)
    return scenario, configs


def with_overrides(
    config: AgentConfig, *, group: str, adapter: Literal["offline", "openai", "anthropic", "ollama"] | None
) -> AgentConfig:
    """The peer as the demo runs it: the scenario's group, optionally another model adapter, and
    on this machine only (the demo is a local show: no listener on the LAN, no DNS-SD)."""
    data: dict[str, Any] = config.model_dump(exclude_none=True)
    data["mesh"].update(group=group, host="127.0.0.1", discovery=["registry"])
    if adapter and adapter != config.model.adapter:
        data["model"] = {"adapter": adapter, "max_tokens_per_call": config.model.max_tokens_per_call}
    return parse_config(data)
