"""DNS-SD discovery (§5.1) with zeroconf: advertise `_sym._tcp.local.` and browse for group peers.

Best-effort by design: a host without multicast (containers, VMs, no network) logs the failure and
the node carries on with the registry, static peers and the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.handshake import DEFAULT_GROUP

log = logging.getLogger(__name__)

SERVICE_TYPE = "_sym._tcp.local."
OnFound = Callable[[str, str, str, str, int], None]  # (source, nodeId, name, host, port)


def _txt(props: dict[bytes, bytes | None], key: str) -> str | None:
    value = props.get(key.encode())
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


class MdnsDiscovery:
    def __init__(
        self,
        identity: NodeIdentity,
        group: str,
        port: int,
        on_found: OnFound,
        *,
        host: str = "127.0.0.1",
        interfaces: Any = None,
        resolve_timeout_ms: int = 3000,
    ):
        self.identity = identity
        self.group = group
        self.port = port
        self.on_found = on_found
        self.host = host
        self.interfaces = interfaces
        self.resolve_timeout_ms = resolve_timeout_ms
        self.failed: str | None = None
        self._zc: Any = None
        self._browser: Any = None
        self._info: Any = None
        self._tasks: set[asyncio.Task] = set()

    def _addresses(self) -> list[bytes]:
        from zeroconf import get_all_addresses

        if self.host in ("", "0.0.0.0", "::"):
            ips = [ip for ip in get_all_addresses() if not ip.startswith("127.")] or ["127.0.0.1"]
        else:
            ips = [self.host]
        out = []
        for ip in ips:
            with contextlib.suppress(OSError):
                out.append(socket.inet_aton(ip))
        return out

    async def start(self) -> None:
        try:
            from zeroconf import InterfaceChoice
            from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

            self._zc = AsyncZeroconf(interfaces=self.interfaces or InterfaceChoice.All)
            hostname = socket.gethostname()
            self._info = AsyncServiceInfo(
                SERVICE_TYPE,
                f"{self.identity.node_id}.{SERVICE_TYPE}",
                addresses=self._addresses(),
                port=self.port,
                properties={
                    "node-id": self.identity.node_id,
                    "node-name": self.identity.name,
                    "public-key": self.identity.public_key_b64url,
                    "hostname": hostname,
                    "group": self.group,
                },
                server=f"{self.identity.node_id}.local.",
            )
            self._browser = AsyncServiceBrowser(self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_change])
        except Exception as exc:  # multicast unavailable, permissions, no interfaces
            await self._fail(exc)
            return
        # Probing and announcing take about a second; the node need not wait for them.
        task = asyncio.ensure_future(self._register())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _register(self) -> None:
        try:
            await self._zc.async_register_service(self._info)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._fail(exc)

    async def _fail(self, exc: Exception) -> None:
        self.failed = str(exc) or type(exc).__name__
        log.warning("mDNS discovery unavailable: %s", self.failed)
        await self.stop()

    async def stop(self) -> None:
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await self._browser.async_cancel()
            self._browser = None
        if self._zc is not None:
            with contextlib.suppress(Exception):
                if self._info is not None:
                    await self._zc.async_unregister_service(self._info)
            with contextlib.suppress(Exception):
                await self._zc.async_close()
            self._zc = None

    def _on_change(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        from zeroconf import ServiceStateChange

        if state_change not in (ServiceStateChange.Added, ServiceStateChange.Updated):
            return
        if name.startswith(self.identity.node_id + "."):
            return
        task = asyncio.ensure_future(self._resolve(service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        from zeroconf.asyncio import AsyncServiceInfo

        if self._zc is None:
            return
        info = AsyncServiceInfo(service_type, name)
        try:
            if not await info.async_request(self._zc.zeroconf, self.resolve_timeout_ms):
                return
        except Exception as exc:
            log.debug("mDNS resolve of %s failed: %s", name, exc)
            return
        props = info.properties or {}
        node_id = _txt(props, "node-id")
        node_name = _txt(props, "node-name") or "unknown"
        group = _txt(props, "group") or DEFAULT_GROUP
        if not node_id or group != self.group or not info.port:
            return
        addresses = info.parsed_addresses()
        if not addresses:
            return
        host = "127.0.0.1" if "127.0.0.1" in addresses else addresses[0]
        self.on_found("mdns", node_id, node_name, host, info.port)
