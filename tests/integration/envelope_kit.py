"""Helpers for the safety-envelope and durability tests: triggers that SVAF admits, an observer node that
counts what peers emit, peers whose model is the loopback OpenAI fake, and history readers."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle

from tests.integration.peer_kit import eventually, peer_config
from xmesh_agent.clock import now_ms
from xmesh_agent.config import AgentConfig
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CMB, mint
from xmesh_agent.mmp.node import MeshNode
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.wake.payloads import WakeResult
from xmesh_agent.workers.client import wake_id
from xmesh_agent.workers.peer import Peer
from xmesh_agent.workflows.wake import WakeWorkflow

CASES = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
]
PRICED_MODEL = "gpt-4o-mini"
"""In the price table: $0.15 / $0.60 per million tokens, so the fake's (120, 30) usage costs $0.000036."""
ONE_CALL_USD = 120 * 0.15 / 1e6 + 30 * 0.60 / 1e6


def group_name() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def topic_fields(i: int) -> dict[str, str]:
    """Trigger i of one topic: related to every other (SVAF aligned), never a repeat (not redundant)."""
    case = CASES[i % len(CASES)] + ("" if i < len(CASES) else str(i))
    return {
        "focus": f"rate limiter for the billing API, case {case}",
        "intent": f"add a token bucket test for case {case}",
    }


def trigger(author: NodeIdentity, group: str, i: int, **extra: Any) -> CMB:
    fields = {**topic_fields(i), **extra}
    return mint(fields, identity=author, group=group, created_at=now_ms() + i)


def openai_config(name: str, group: str, base_url: str, **sections: dict) -> AgentConfig:
    """A peer whose model is the loopback OpenAI fake, priced (gpt-4o-mini is in the price table)."""
    model = {"adapter": "openai", "base_url": base_url, "model_name": PRICED_MODEL, "timeout_seconds": 30}
    model.update(sections.pop("model", {}))
    return peer_config(name, "reviewer", group, model=model, **sections)


async def deliver(peer: Peer, cmb: CMB, source: str | None = None) -> str:
    """What the node does with a new inbound CMB: store it, then hand it to the listener."""
    peer.store.put(cmb, source=source or cmb.created_by)
    await peer.starter.on_cmb(cmb)
    return wake_id(peer.config.name, cmb.key)


async def result_of(client: Client, workflow_id: str, timeout: float = 30.0) -> WakeResult:
    """Wait for the listener to start the wake, then for its result."""

    async def started() -> bool:
        try:
            await client.get_workflow_handle(workflow_id).describe()
            return True
        except Exception:  # noqa: BLE001 - not started yet
            return False

    await eventually(started, timeout=timeout)
    return await client.get_workflow_handle_for(WakeWorkflow.run, workflow_id).result()


async def wake(peer: Peer, cmb: CMB) -> WakeResult:
    return await result_of(peer.client, await deliver(peer, cmb))


class Observer:
    """A plain mesh node in the group that records every CMB it receives (by key, in arrival order)."""

    def __init__(self, home: Path, group: str, name: str = "observer", **node: Any):
        self.keys: list[str] = []
        self.store = CMBStore(home / f"{name}.db")
        self.identity = NodeIdentity.generate(name)
        opts: dict[str, Any] = dict(registry_interval=0.2, reconnect_min=0.05, reconnect_max=0.3)
        opts.update(node)
        self.node = MeshNode(self.identity, group, self.store, on_cmb=self._on_cmb, **opts)

    async def _on_cmb(self, cmb: CMB, sender: object = None) -> None:
        self.keys.append(cmb.key)

    def from_author(self, name: str) -> list[CMB]:
        cmbs = [self.store.get(k) for k in self.keys]
        return [c for c in cmbs if c is not None and c.created_by == name]

    async def start(self) -> Observer:
        await self.node.start()
        return self

    async def stop(self) -> None:
        await self.node.stop()
        self.store.close()


async def history_events(handle: WorkflowHandle) -> list[HistoryEvent]:
    history = await handle.fetch_history()
    return list(history.events)


def of_type(events: Iterable[HistoryEvent], kind: int) -> list[HistoryEvent]:
    return [e for e in events if e.event_type == kind]


def activity_attempts(events: list[HistoryEvent], name: str) -> list[HistoryEvent]:
    """The ActivityTaskStarted events of the regular activity `name` (each carries its attempt number)."""
    scheduled = {
        e.event_id
        for e in of_type(events, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
        if e.activity_task_scheduled_event_attributes.activity_type.name == name
    }
    return [
        e
        for e in of_type(events, EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED)
        if e.activity_task_started_event_attributes.scheduled_event_id in scheduled
    ]
