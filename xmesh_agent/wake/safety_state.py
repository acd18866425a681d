"""A peer's safety state: wake budget, cost ledger, model breakers (one SQLite file) and its gates.

What the safety envelope remembers between wakes; the policies themselves are in xmesh_agent.safety.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from xmesh_agent.clock import now_ms
from xmesh_agent.config import AgentConfig
from xmesh_agent.safety import CircuitBreaker, CostDecision, CostLedger, Gates, WakeBudget

log = logging.getLogger("xmesh.safety")


@dataclass
class SafetyState:
    budget: WakeBudget
    cost: CostLedger
    breaker: CircuitBreaker
    gates: Gates
    run_id: str
    run_started_ms: int
    fallback_breakers: list[CircuitBreaker] = field(default_factory=list)
    """One per [model] fallback, in chain order (the primary's is `breaker`, named "model" as always)."""
    _capped: str | None = field(default=None, init=False, repr=False)

    @property
    def breakers(self) -> list[CircuitBreaker]:
        """The breaker of each model in the chain, primary first."""
        return [self.breaker, *self.fallback_breakers]

    @classmethod
    def open(cls, path: Path, config: AgentConfig, run_id: str | None = None) -> SafetyState:
        started = now_ms()
        run_id = run_id or f"run-{started}"
        return cls(
            budget=WakeBudget(path, config.budget),
            cost=CostLedger(path, config.budget, run_id=run_id, run_started_ms=started),
            breaker=CircuitBreaker(path),
            gates=Gates.from_config(config.safety),
            run_id=run_id,
            run_started_ms=started,
            fallback_breakers=[CircuitBreaker(path, f"model:{m.label}") for m in config.model.chain()[1:]],
        )

    def check_cost(self, now_ms: int) -> CostDecision:
        """The cost caps at `now_ms`; says so in the log once when a cap stops this peer's wakes."""
        decision = self.cost.check(now_ms)
        if decision.allowed:
            self._capped = None
        elif decision.reason != self._capped:
            self._capped = decision.reason
            t = decision.totals
            log.warning(
                "cost cap reached (%s): spent $%.6f this hour, $%.6f today, $%.6f this run; "
                "this peer stops waking (its wakes end cost-cap) until the window frees up or it restarts",
                decision.reason,
                t.hour_usd,
                t.day_usd,
                t.run_usd,
            )
        return decision

    def close(self) -> None:
        self.budget.close()
        self.cost.close()
        for breaker in self.breakers:
            breaker.close()
