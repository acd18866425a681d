"""One place for how we talk to Temporal: the plugin (pydantic payloads) and the connection."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.plugin import SimplePlugin
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

XMESH_PLUGIN = SimplePlugin("xmesh-agent", data_converter=pydantic_data_converter)
PROBE_SECONDS = 3.0
CONNECT_SECONDS = 10.0
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")
_H2_SETTINGS = 0x04


class TemporalUnreachable(RuntimeError):
    """No Temporal frontend at the address; the message is one line naming it and what answered."""


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


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise TemporalUnreachable(f"Temporal address {address!r} is not host:port (e.g. 127.0.0.1:7233)")
    return host.strip("[]"), int(port)


async def probe(address: str, tls: bool = False, timeout: float = PROBE_SECONDS) -> None:
    """Check that something speaking HTTP/2 (gRPC) listens at `address`, else raise TemporalUnreachable.

    A TCP connect, then (without TLS) the HTTP/2 client preface: a gRPC server answers with a SETTINGS
    frame, an HTTP/1 server (a Web UI port) with `HTTP/1.x 400`.
    """
    host, port = _host_port(address)
    where = f"cannot reach Temporal at {address}"
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        raise TemporalUnreachable(
            f"{where}: no answer to a TCP connect within {timeout:g} s (timeout)"
        ) from None
    except ConnectionRefusedError:
        raise TemporalUnreachable(f"{where}: nothing is listening there (connection refused)") from None
    except OSError as exc:
        raise TemporalUnreachable(f"{where}: cannot connect ({exc.strerror or exc})") from None
    try:
        if tls:
            return
        writer.write(_H2_PREFACE)
        await writer.drain()
        try:
            head = await asyncio.wait_for(reader.read(256), timeout)
        except TimeoutError:
            raise TemporalUnreachable(
                f"{where}: a TCP port that gives no gRPC answer within {timeout:g} s (timeout)"
            ) from None
        except OSError:
            head = b""
        if head.startswith((b"HTTP/", b"<")):  # a status line, or an HTTP/0.9-style error page
            raise TemporalUnreachable(
                f"{where}: an HTTP server (not gRPC) answers there; is it a Web UI port? "
                "The frontend is usually port 7233"
            )
        if len(head) < 4 or head[3] != _H2_SETTINGS:
            raise TemporalUnreachable(f"{where}: the server there does not speak gRPC (HTTP/2)")
    finally:
        writer.close()


def probe_problem(address: str, tls: bool = False) -> str | None:
    """`probe` for synchronous callers (dry-run, doctor): None when gRPC answers, else what did."""
    try:
        asyncio.run(probe(address, tls=tls))
    except TemporalUnreachable as exc:
        return str(exc)
    return None


async def connect(
    target: TemporalTarget, runtime: Runtime | None = None, interceptors: Sequence[Interceptor] = ()
) -> Client:
    """`runtime`: one with a Prometheus endpoint ([observability] metrics); `interceptors`: tracing.

    A wrong address fails within seconds with a TemporalUnreachable that says what answered there.
    """
    tls: bool | TLSConfig = target.tls or bool(target.api_key)
    await probe(target.address, tls=bool(tls))
    try:
        return await asyncio.wait_for(
            Client.connect(
                target.address,
                namespace=target.namespace,
                api_key=target.api_key,
                tls=tls,
                plugins=[XMESH_PLUGIN],
                runtime=runtime,
                interceptors=interceptors,
            ),
            CONNECT_SECONDS,
        )
    except TimeoutError:
        raise TemporalUnreachable(
            f"cannot reach Temporal at {target.address}: a gRPC server answers but no Temporal frontend within "
            f"{CONNECT_SECONDS:g} s (timeout)"
        ) from None
    except RuntimeError as exc:
        if isinstance(exc, TemporalUnreachable) or "Failed client connect" not in str(exc):
            raise
        raise TemporalUnreachable(f"cannot reach Temporal at {target.address}: {_reason(str(exc))}") from None


def _reason(text: str) -> str:
    """The SDK's `Status { code: ..., message: "..." }` as its message alone, on one line."""
    found = re.search(r'message: "([^"]+)"', text)
    return (found.group(1) if found else text.splitlines()[0])[:200]
