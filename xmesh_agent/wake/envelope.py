"""A peer's safety envelope state: budget, cost ledger, breaker (one SQLite file) and its gates."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from xmesh_agent.config import AgentConfig
from xmesh_agent.safety import CircuitBreaker, CostLedger, Gates, WakeBudget


@dataclass
class Envelope:
    budget: WakeBudget
    cost: CostLedger
    breaker: CircuitBreaker
    gates: Gates
    run_id: str
    run_started_ms: int

    @classmethod
    def open(cls, path: Path, config: AgentConfig, run_id: str | None = None) -> Envelope:
        started = int(time.time() * 1000)
        run_id = run_id or f"run-{started}"
        return cls(
            budget=WakeBudget(path, config.budget),
            cost=CostLedger(path, config.budget, run_id=run_id, run_started_ms=started),
            breaker=CircuitBreaker(path),
            gates=Gates.from_config(config.safety),
            run_id=run_id,
            run_started_ms=started,
        )

    def close(self) -> None:
        self.budget.close()
        self.cost.close()
        self.breaker.close()
