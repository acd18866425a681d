"""Scenario files: which peers a demo runs and the seed CMB that starts their work."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from xmesh_agent.config import AgentConfig, ConfigError, load_config, parse_config


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
    duration: str | None = Field(
        default=None, pattern=r"^\s*\d+(\.\d+)?\s*[smh]?\s*$", description="Default --duration (90s, 2m)."
    )


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario: ScenarioSpec
    seed: dict[str, str]
    tasks: list[dict[str, str]] = Field(
        default_factory=list, description="Further seeds that soak mode publishes in turn."
    )

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


def load_scenario(path: Path) -> tuple[Scenario, list[AgentConfig]]:
    try:
        scenario = Scenario.model_validate(tomllib.loads(path.read_text()))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(str(path), [str(exc).splitlines()[0]]) from None
    configs = [load_config(path.parent / p) for p in scenario.scenario.peers]
    return scenario, configs


def with_overrides(
    config: AgentConfig, *, group: str, adapter: Literal["offline", "openai", "anthropic", "ollama"] | None
) -> AgentConfig:
    """The peer as the demo runs it: the scenario's group, optionally another model adapter."""
    data: dict[str, Any] = config.model_dump(exclude_none=True)
    data["mesh"]["group"] = group
    if adapter and adapter != config.model.adapter:
        data["model"] = {"adapter": adapter, "max_tokens_per_call": config.model.max_tokens_per_call}
    return parse_config(data)
