"""The safety envelope's pure policies: wake budget, cost ledger, cycle detection, approval gates,
circuit breaker and response routing. No Temporal here; time is always passed in as `now_ms`."""

from xmesh_agent.safety.breaker import BreakerPermit, BreakerSnapshot, CircuitBreaker
from xmesh_agent.safety.budget import BudgetCounts, BudgetDecision, WakeBudget
from xmesh_agent.safety.cost import CostDecision, CostLedger, CostTotals, clamp_max_tokens
from xmesh_agent.safety.cycle import Verdict, detect_cycle
from xmesh_agent.safety.gates import GateHit, Gates, GateVerdict, check_gates, redact
from xmesh_agent.safety.routing import Route, choose_route

__all__ = [
    "BreakerPermit",
    "BreakerSnapshot",
    "BudgetCounts",
    "BudgetDecision",
    "CircuitBreaker",
    "CostDecision",
    "CostLedger",
    "CostTotals",
    "GateHit",
    "GateVerdict",
    "Gates",
    "Route",
    "Verdict",
    "WakeBudget",
    "check_gates",
    "choose_route",
    "clamp_max_tokens",
    "detect_cycle",
    "redact",
]
