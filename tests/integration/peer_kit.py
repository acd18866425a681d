"""Helpers for integration tests: real peers (node + worker + listener) on the session's Temporal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus

from xmesh_agent.config import AgentConfig, parse_config
from xmesh_agent.workers.peer import Peer

FAST_NODE: dict[str, Any] = dict(registry_interval=0.2, reconnect_min=0.05, reconnect_max=0.3)


def peer_config(name: str, role: str, group: str, **sections: dict) -> AgentConfig:
    data: dict[str, Any] = {
        "identity": {"name": name, "role": role},
        "mesh": {"group": group, "host": "127.0.0.1", "discovery": ["registry"]},  # hermetic: no LAN
        "model": {"adapter": "offline"},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return parse_config(data)


async def start_peer(client: Client, config: AgentConfig) -> Peer:
    peer = Peer(config, client)
    await peer.start()
    return peer


async def eventually(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll until predicate() is truthy (awaiting it if it is a coroutine); fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def closed_wakes(client: Client, query: str) -> list:
    return [wf async for wf in client.list_workflows(query) if wf.status != WorkflowExecutionStatus.RUNNING]


async def all_wakes(client: Client, query: str) -> list:
    return [wf async for wf in client.list_workflows(query)]
