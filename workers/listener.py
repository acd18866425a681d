"""The listener: every new inbound CMB becomes one wake workflow start, and nothing is lost.

SVAF is decided here, at start (admission follows store order, so this is the decision the wake's
admit step would reach). Most wakes of a busy mesh are rejected: such a wake starts with its outcome
already in its search attributes, memo and details, and its workflow only returns (one workflow
task, no activity, no upsert), so it still shows in the Web UI at the least cost.

A CMB is first spooled in the peer's wake ledger, then started as `wake-<peer>-<cmb key>` with
ALLOW_DUPLICATE_FAILED_ONLY + USE_EXISTING, so the same CMB never starts two wakes. While Temporal
is unreachable the spool keeps the CMB and the start is retried until it lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from xmesh_agent.clock import now_ms
from xmesh_agent.config import AgentConfig
from xmesh_agent.mmp.cmb import CAT7, CMB, NEUTRAL
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.observability import span
from xmesh_agent.wake.events import EventLog, no_log, wake_events
from xmesh_agent.wake.ledger import WakeLedger
from xmesh_agent.wake.payloads import AdmitResult, Outcome, WakeInput, rejected_result
from xmesh_agent.wake.steps import admission
from xmesh_agent.workers.client import task_queue, wake_id
from xmesh_agent.workflows import search
from xmesh_agent.workflows.wake import WakeWorkflow

log = logging.getLogger("xmesh.listener")

SUMMARY_BYTES = 200
RECONCILE_WINDOW_MS = 7 * 86_400_000
START_CONCURRENCY = 4
"""Wake starts in flight at once. Small: the peer's worker, not the start call, limits sustained wakes/s."""
DRAIN_BATCH = 100


def wake_summary(peer: str, cmb: CMB, directed: bool = False) -> str:
    """One line for the Web UI list: 'reviewer-01 <- writer-02: implement rate-limit middleware'
    ('<= ' and '(directed)' when the CMB was directed to the peer)."""
    topic = next((cmb.text(f) for f in ("focus", "intent", "issue") if cmb.text(f) not in ("", NEUTRAL)), "")
    arrow = "<= " if directed else "<- "
    line = f"{peer} {arrow}{cmb.created_by}{' (directed)' if directed else ''}: {topic}".strip().rstrip(":")
    data = line.encode("utf-8")[:SUMMARY_BYTES]
    return data.decode("utf-8", errors="ignore")


def wake_details(
    cmb: CMB, rejected: AdmitResult | None = None, verdict_at_arrival: AdmitResult | None = None
) -> str:
    rows = "\n".join(f"| {f} | {cmb.text(f)} |" for f in CAT7 if cmb.text(f) not in ("", NEUTRAL))
    parents = ", ".join(f"`{p}`" for p in cmb.parents) or "none (a root CMB)"
    verdict = f"**rejected** — {rejected.reason} at arrival\n\n" if rejected else ""
    if verdict_at_arrival is not None and verdict_at_arrival.directed:
        memory = (
            "kept in memory (remixed)" if verdict_at_arrival.remixed else "delivered only, not kept in memory"
        )
        verdict = (
            f"**directed** to this peer (MMP §9.2.2): delivered whatever SVAF says; "
            f"SVAF {verdict_at_arrival.decision} (drift {verdict_at_arrival.drift:.3f}): {memory}\n\n"
        )
    return (
        f"{verdict}**Trigger** `{cmb.key}` from **{cmb.created_by}** (group `{cmb.group}`)\n\n"
        f"Parents: {parents}\n\n| field | text |\n|---|---|\n{rows}"
    )


class WakeStarter:
    def __init__(
        self,
        client: Client,
        config: AgentConfig,
        store: CMBStore,
        ledger: WakeLedger,
        node_id: str | None = None,
    ):
        self.client = client
        self.node_id = node_id
        """This peer's node id: CMBs directed to it wake it whatever SVAF says (§9.2.2)."""
        self.config = config
        self.store = store
        self.ledger = ledger
        self.task_queue = task_queue(config.group, config.name)
        self._kick = asyncio.Event()
        self.started = 0
        self.start_concurrency = START_CONCURRENCY
        self.log: EventLog = no_log

    def kick(self) -> None:
        """Try the spooled wakes now (e.g. Temporal is reachable again)."""
        self._kick.set()

    async def on_cmb(self, cmb: CMB, sender: object = None) -> None:
        """Node callback: spool, then let the start loop take it."""
        if self.ledger.enqueue(cmb.key, cmb.created_by):
            self._kick.set()

    def reconcile(self, window_ms: int = RECONCILE_WINDOW_MS) -> int:
        """Spool every stored inbound CMB that has no wake yet: a crash between the node storing a CMB
        and the listener spooling it must not lose the wake. Returns how many were spooled."""
        since = now_ms() - window_ms
        spooled = sum(self.ledger.enqueue(key, author) for key, author in self.store.inbound_since(since))
        if spooled:
            self._kick.set()
        return spooled

    async def start_wake(self, cmb_key: str) -> WorkflowHandle:
        """Start (or find) the one wake of this CMB. Replays are workers/replay.py's job."""
        cmb = self.store.get(cmb_key)
        if cmb is None:
            raise LookupError(f"CMB {cmb_key} is not in {self.config.name}'s store")
        workflow_id = wake_id(self.config.name, cmb_key)
        verdict: AdmitResult | None = None
        try:
            verdict = await admission(self.store, self.config, cmb_key, self.node_id)
            rejected = None if verdict.admitted else verdict
        except Exception:  # the wake's own admit step decides (and retries) instead
            log.exception("admission of %s at arrival failed; the wake decides it", cmb_key)
            rejected = None
        directed = verdict is not None and verdict.directed
        pairs = [
            SearchAttributePair(search.PEER, self.config.name),
            SearchAttributePair(search.GROUP, self.config.group),
            SearchAttributePair(search.TRIGGER_AUTHOR, cmb.created_by),
            SearchAttributePair(search.STAGE, "done" if rejected else "queued"),
        ]
        summary = wake_summary(self.config.name, cmb, directed)
        # The summary in the memo too: visibility lists carry memos, so `wakes` needs no describe per row.
        memo: dict = {"trigger": cmb_key, "replay_of": "", "summary": summary}
        if rejected:
            pairs.append(SearchAttributePair(search.OUTCOME, Outcome.REJECTED.value))
            memo["result"] = rejected_result(rejected).model_dump(mode="json")
        approval = self.config.safety.approval_timeout_seconds
        attributes = {
            "xmesh.peer": self.config.name,
            "mmp.cmb.key": cmb_key,
            "mmp.cmb.author": cmb.created_by,
        }
        arrived = self.store.received_at(cmb_key)  # a wake's trace starts when its trigger arrived
        models = [m.label for m in self.config.model.chain()] if self.config.model.fallback else []
        with span("xmesh.wake", attributes, start_ms=arrived):
            handle = await self.client.start_workflow(
                WakeWorkflow.run,
                WakeInput(
                    peer=self.config.name,
                    group=self.config.group,
                    cmb_key=cmb_key,
                    trigger_author=cmb.created_by,
                    approval_timeout_seconds=approval,
                    rejected=rejected,
                    model=self.config.model.chain()[0].label,
                    models=models,
                ),
                id=workflow_id,
                task_queue=self.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                execution_timeout=timedelta(seconds=approval + 3600),
                search_attributes=TypedSearchAttributes(pairs),
                static_summary=summary,
                static_details=wake_details(cmb, rejected, verdict),
                memo=memo,
                request_eager_start=True,
            )
        if rejected:
            wake_events.admit(self.log, cmb_key, rejected)
        return handle

    async def drain_once(self) -> bool:
        """Start every spooled wake; False when Temporal did not answer (try again later).

        Up to `start_concurrency` starts are in flight at once (each is a round trip to Temporal, so a
        backlog drains in a fraction of the time); every key is still marked woken only after its own
        start returned, and a key whose start failed stays spooled.
        """
        while True:
            batch = self.ledger.pending(DRAIN_BATCH)
            if not batch:
                return True
            if not await self._start_batch(batch):
                return False
            if len(batch) < DRAIN_BATCH:
                return True

    async def _start_batch(self, batch: list[tuple[str, str]]) -> bool:
        slots = asyncio.Semaphore(self.start_concurrency)
        unreachable = asyncio.Event()

        async def start_one(cmb_key: str, author: str) -> None:
            async with slots:
                if not unreachable.is_set() and not await self._start_spooled(cmb_key, author):
                    unreachable.set()

        outcomes = await asyncio.gather(*(start_one(k, a) for k, a in batch), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            raise failures[0]
        return not unreachable.is_set()

    async def _start_spooled(self, cmb_key: str, author: str) -> bool:
        """One spooled CMB: start its wake and mark it woken; False when Temporal did not answer."""
        try:
            handle = await self.start_wake(cmb_key)
        except LookupError:
            log.warning("spooled CMB %s vanished from the store; dropping it from the spool", cmb_key)
            self.ledger.mark_woken(cmb_key, "")
            return True
        except WorkflowAlreadyStartedError as exc:
            # its wake ran and closed before the ledger recorded the start (a crash in between)
            log.info("wake of %s already ran (%s); marking it woken", cmb_key, exc.workflow_id)
            self.ledger.mark_woken(cmb_key, exc.workflow_id or wake_id(self.config.name, cmb_key))
            return True
        except (RPCError, OSError, RuntimeError) as exc:
            self.ledger.note_attempt(cmb_key)
            log.warning("Temporal unreachable, %s stays spooled: %s", cmb_key, exc)
            return False
        self.ledger.mark_woken(cmb_key, handle.id)
        self.started += 1
        self.log("wake-started", {"wakeId": handle.id, "cmbKey": cmb_key, "author": author})
        return True

    async def run(self, retry_seconds: float = 2.0) -> None:
        """Start loop: woken by new CMBs, retrying the spool while Temporal is away."""
        self._kick.set()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=retry_seconds)
            self._kick.clear()
            await self.drain_once()
