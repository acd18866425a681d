"""One place for how we talk to Temporal: the plugin (pydantic payloads) and the connection."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.plugin import SimplePlugin
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

XMESH_PLUGIN = SimplePlugin("xmesh-agent", data_converter=pydantic_data_converter)


@dataclass(frozen=True)
class TemporalTarget:
    address: str
    namespace: str = "default"
    api_key: str | None = None
    tls: bool = False


def task_queue(group: str, peer: str) -> str:
    return f"xmesh-{group}-{peer}"


def wake_id(peer: str, cmb_key: str) -> str:
    return f"wake-{peer}-{cmb_key}"


def external_target(
    address: str | None = None, namespace: str | None = None, api_key: str | None = None, tls: bool = False
) -> TemporalTarget | None:
    """The configured Temporal (flag, then TEMPORAL_ADDRESS), or None for the embedded server."""
    address = address or os.environ.get("TEMPORAL_ADDRESS")
    if not address:
        return None
    return TemporalTarget(
        address=address,
        namespace=namespace or os.environ.get("TEMPORAL_NAMESPACE", "default"),
        api_key=api_key or os.environ.get("TEMPORAL_API_KEY"),
        tls=tls or bool(os.environ.get("TEMPORAL_TLS")),
    )


async def connect(
    target: TemporalTarget, runtime: Runtime | None = None, interceptors: Sequence[Interceptor] = ()
) -> Client:
    """`runtime`: one with a Prometheus endpoint ([observability] metrics); `interceptors`: tracing."""
    tls: bool | TLSConfig = target.tls or bool(target.api_key)
    return await Client.connect(
        target.address,
        namespace=target.namespace,
        api_key=target.api_key,
        tls=tls,
        plugins=[XMESH_PLUGIN],
        runtime=runtime,
        interceptors=interceptors,
    )
