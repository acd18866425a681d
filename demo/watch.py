"""What the demo shows: each wake as it closes, a running tally per peer, the final table, the lineage.

Wakes are read from Temporal visibility (our search attributes), so what the demo prints is what the
Web UI shows; nothing here talks to the peers themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

from temporalio.client import Client, WorkflowExecutionStatus

from xmesh_agent.mmp.cmb import CAT7, CMB, NEUTRAL
from xmesh_agent.wake.payloads import Outcome
from xmesh_agent.workflows import search

OUTCOME_ORDER = [o.value for o in Outcome]
TERMINAL_STATUS = {
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.TIMED_OUT: "timed-out",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.CANCELED: "canceled",
}


@dataclass
class WakeRow:
    """One closed wake as visibility reports it."""

    workflow_id: str
    peer: str
    outcome: str
    cost_usd: float
    trigger_author: str

    @property
    def trigger_key(self) -> str:
        prefix = f"wake-{self.peer}-"
        return self.workflow_id[len(prefix) :] if self.workflow_id.startswith(prefix) else ""


@dataclass
class Tally:
    """Every wake of the run seen so far: closed ones by id, and how many are still running."""

    closed: dict[str, WakeRow] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    held: dict[str, dict] = field(default_factory=dict)
    """Running wakes held at an approval gate: peer, reason, the reply they hold (memo `held`)."""

    def busy(self) -> set[str]:
        """Running wakes the mesh still waits for: all but those that wait for an operator."""
        return self.running - self.held.keys()

    def outcomes(self) -> list[str]:
        seen = {r.outcome for r in self.closed.values()}
        return [o for o in OUTCOME_ORDER if o in seen] + sorted(seen - set(OUTCOME_ORDER))

    def by_peer(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for row in self.closed.values():
            counts = table.setdefault(row.peer, {})
            counts[row.outcome] = counts.get(row.outcome, 0) + 1
        return dict(sorted(table.items()))

    def by_outcome(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.closed.values():
            counts[row.outcome] = counts.get(row.outcome, 0) + 1
        return counts

    def total_cost(self) -> float:
        return sum(r.cost_usd for r in self.closed.values())

    def summary_line(self) -> str:
        """One compact line: per peer its outcomes, then totals (the periodic progress line)."""
        parts = []
        for peer, counts in self.by_peer().items():
            shown = " ".join(f"{_short(o)}={n}" for o, n in sorted(counts.items(), key=_order))
            parts.append(f"{peer}[{shown}]")
        running = f", {len(self.running)} running" if self.running else ""
        if self.held:
            running += f" ({len(self.held)} awaiting your approval)"
        return f"  ··· {len(self.closed)} wakes{running}, ${self.total_cost():.4f} · " + " ".join(parts)

    def table(self) -> list[str]:
        """The final table: a row per peer, a column per outcome seen, wakes and cost."""
        cols = self.outcomes()
        widths = [max(len(c), 4) for c in cols]
        head = f"{'peer':<20}" + "".join(f"{c:>{w + 2}}" for c, w in zip(cols, widths, strict=True))
        lines = [head + f"{'wakes':>8}{'cost':>11}"]
        totals = {c: 0 for c in cols}
        for peer, counts in self.by_peer().items():
            cost = sum(r.cost_usd for r in self.closed.values() if r.peer == peer)
            row = f"{peer:<20}" + "".join(
                f"{counts.get(c, 0):>{w + 2}}" for c, w in zip(cols, widths, strict=True)
            )
            lines.append(row + f"{sum(counts.values()):>8}{'$' + format(cost, '.4f'):>11}")
            for c in cols:
                totals[c] += counts.get(c, 0)
        total = f"{'total':<20}" + "".join(f"{totals[c]:>{w + 2}}" for c, w in zip(cols, widths, strict=True))
        lines.append("-" * len(lines[0]))
        lines.append(total + f"{len(self.closed):>8}{'$' + format(self.total_cost(), '.4f'):>11}")
        if self.busy():
            lines.append(f"({len(self.busy())} wake(s) still running)")
        return lines


def _short(outcome: str) -> str:
    return outcome.replace("suppressed-", "supp-").replace("budget-exceeded", "budget")


def _order(item: tuple[str, int]) -> int:
    return OUTCOME_ORDER.index(item[0]) if item[0] in OUTCOME_ORDER else len(OUTCOME_ORDER)


def group_query(group: str, since: datetime | None = None) -> str:
    query = f"XmGroup = '{group}'"
    return query + (f" AND StartTime >= '{since.isoformat()}'" if since else "")


async def poll_wakes(
    client: Client,
    query: str,
    tally: Tally,
    on_closed: Callable[[WakeRow], None] | None = None,
    on_held: Callable[[str, dict], None] | None = None,
) -> int:
    """Read visibility once; record newly closed wakes (calling on_closed), the running set and the
    wakes held at an approval gate (calling on_held once for each).

    Returns how many wakes closed since the last poll.
    """
    running: set[str] = set()
    fresh = 0
    async for wf in client.list_workflows(query):
        if wf.status == WorkflowExecutionStatus.RUNNING:
            running.add(wf.id)
            if (
                wf.typed_search_attributes.get(search.STAGE) == "awaiting-approval"
                and wf.id not in tally.held
            ):
                memo = await wf.memo()
                held = memo.get("held") if isinstance(memo.get("held"), dict) else {"reply": None}
                tally.held[wf.id] = {**held, "peer": wf.typed_search_attributes.get(search.PEER) or "?"}
                if on_held:
                    on_held(wf.id, tally.held[wf.id])
            continue
        if wf.id in tally.closed:
            continue
        attrs = wf.typed_search_attributes
        outcome = attrs.get(search.OUTCOME)
        if wf.status in TERMINAL_STATUS and outcome != Outcome.FAILED.value:
            outcome = TERMINAL_STATUS[wf.status]
        row = WakeRow(
            workflow_id=wf.id,
            peer=attrs.get(search.PEER) or "?",
            outcome=outcome or "?",
            cost_usd=float(attrs.get(search.COST) or 0.0),
            trigger_author=attrs.get(search.TRIGGER_AUTHOR) or "?",
        )
        tally.closed[wf.id] = row
        fresh += 1
        if on_closed:
            on_closed(row)
    tally.running = running
    tally.held = {wid: held for wid, held in tally.held.items() if wid in running}
    return fresh


def wake_line(row: WakeRow) -> str:
    return (
        f"  wake  {row.peer:<18} {row.outcome:<17} ${row.cost_usd:.4f}  "
        f"on {row.trigger_author}'s {row.trigger_key[:17]}…"
    )


def ui_link(ui_url: str, namespace: str, group: str) -> str:
    """The Web UI's workflow list filtered to this mesh group."""
    return f"{ui_url.rstrip('/')}/namespaces/{namespace}/workflows?query={quote(group_query(group))}"


def lineage_lines(cmbs: list[CMB], root: str, width: int = 90) -> list[str]:
    """The conversation as a tree from the seed: who answered what, replies in time order."""
    children: dict[str, list[CMB]] = {}
    for cmb in cmbs:
        for parent in cmb.parents:
            children.setdefault(parent, []).append(cmb)
    by_key = {c.key: c for c in cmbs}
    lines: list[str] = []
    seen: set[str] = set()

    def walk(key: str, depth: int) -> None:
        cmb = by_key.get(key)
        if cmb is None or key in seen:
            return
        seen.add(key)
        said = next((f"{f}: {cmb.text(f)}" for f in CAT7 if cmb.text(f) not in ("", NEUTRAL)), "")
        lines.append(f"{'  ' * depth}{cmb.created_by} {cmb.key[:17]}…  {said[:width]}")
        for child in sorted(children.get(key, []), key=lambda c: (c.created_at, c.key)):
            walk(child.key, depth + 1)

    walk(root, 0)
    return lines
