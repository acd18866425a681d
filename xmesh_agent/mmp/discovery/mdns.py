"""DNS-SD discovery (§5.1) with zeroconf, in the spec's form and in the form stock nodes use.

The spec advertises `_sym._tcp.local.` with a `group` TXT entry. A stock node keeps rooms apart by
SERVICE TYPE instead: in room R it advertises and browses `_R._tcp` (only the room `default` uses
`_sym._tcp`) and its TXT carries no group. So for a group other than `default` we advertise under
both types and browse both; an instance under `_<group>._tcp` without a `group` TXT is in that group.
A group that is no valid service name (more than 15 characters, `_` or `.`, no letter, ...) cannot
be a service type: it is advertised as `_sym._tcp` only, with an `mdns-warning` event.

Best-effort by design: a host without multicast (containers, VMs, no network) logs the failure and
the node carries on with the registry, static peers and the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import socket
from collections.abc import Callable
from typing import Any

from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.handshake import DEFAULT_GROUP

log = logging.getLogger(__name__)

SERVICE_TYPE = "_sym._tcp.local."
STOCK_TXT_KEYS = ("node-id", "node-name", "public-key", "hostname")  # what a stock node publishes
OnFound = Callable[[str, str, str, str, int], None]  # (source, nodeId, name, host, port)
OnEvent = Callable[[str, dict], None]

_SERVICE_NAME_MAX = 15  # RFC 6763 §7.2 / RFC 6335 §5.1, not counting the leading underscore
_SERVICE_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_TXT_VALUE_MAX = 200  # a TXT string is at most 255 bytes including "key="
_IGNORED_MAX = 256


def room_type_problem(group: str) -> str | None:
    """Why `group` cannot be a DNS-SD service type (None when it can). `default` never needs one."""
    if len(group) > _SERVICE_NAME_MAX:
        return f"group {group!r} is longer than {_SERVICE_NAME_MAX} characters"
    if not _SERVICE_NAME_RE.fullmatch(group) or "--" in group:
        return f"group {group!r} is not a service name (letters, digits, single inner hyphens)"
    if not re.search(r"[a-z]", group):
        return f"group {group!r} has no letter, which a service name needs"
    return None


def room_service_type(group: str) -> str | None:
    """The stock node's service type for `group` (`_<group>._tcp.local.`), None for `default` or when
    the group cannot be one (see room_type_problem)."""
    if group == DEFAULT_GROUP or room_type_problem(group) is not None:
        return None
    return f"_{group}._tcp.local."


def instance_label(node_id: str) -> str:
    """Our DNS-SD instance (and host) label: the nodeId, as stock nodes use, when it is a valid
    label; otherwise a stable digest, because peers read the nodeId from the TXT anyway."""
    if _LABEL_RE.fullmatch(node_id):
        return node_id
    return "xm-" + hashlib.sha256(node_id.encode("utf-8", "replace")).hexdigest()[:32]


def _txt(props: dict[bytes, bytes | None], key: str) -> str | None:
    value = props.get(key.encode())
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _clip(text: str) -> str:
    return text.encode("utf-8")[:_TXT_VALUE_MAX].decode("utf-8", "ignore")


class MdnsDiscovery:
    """Advertise this node and report peers of our group to `on_found`, once per nodeId and address."""

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
        on_event: OnEvent | None = None,
    ):
        self.identity = identity
        self.group = group
        self.port = port
        self.on_found = on_found
        self.on_event = on_event
        self.host = host
        self.interfaces = interfaces
        self.resolve_timeout_ms = resolve_timeout_ms
        self.failed: str | None = None
        self.room_type = room_service_type(group)
        self.service_types = [SERVICE_TYPE] + ([self.room_type] if self.room_type else [])
        self.label = instance_label(identity.node_id)
        # nodeId -> service types it was resolved under (for our group); the ones we dropped and why.
        self.found_under: dict[str, set[str]] = {}
        self.ignored: dict[str, str] = {}
        self._reported: dict[str, tuple[str, int]] = {}
        self._instances: dict[tuple[str, str], str] = {}  # (service type, instance name) -> nodeId
        self._zc: Any = None
        self._browser: Any = None
        self._infos: list[Any] = []
        self._tasks: set[asyncio.Task] = set()

    def _event(self, name: str, data: dict) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(name, data)
        except Exception:  # an audit sink must never stop discovery
            log.exception("on_event handler failed for %s", name)

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

    def _service_info(self, service_type: str, extra: dict[str, str]) -> Any:
        from zeroconf.asyncio import AsyncServiceInfo

        props = {
            "node-id": self.identity.node_id,
            "node-name": _clip(self.identity.name),
            "public-key": self.identity.public_key_b64url,
            "hostname": _clip(socket.gethostname()),
            **extra,
        }
        return AsyncServiceInfo(
            service_type,
            f"{self.label}.{service_type}",
            addresses=self._addresses(),
            port=self.port,
            properties=props,
            server=f"{self.label}.local.",
        )

    async def start(self) -> None:
        if self.room_type is None and self.group != DEFAULT_GROUP:
            problem = room_type_problem(self.group) or "no service type"
            log.warning(
                "mDNS: %s; advertising %s only, stock nodes in that room cannot see us", problem, SERVICE_TYPE
            )
            self._event(
                "mdns-warning",
                {
                    "reason": "no-room-service-type",
                    "detail": problem,
                    "group": self.group,
                    "serviceType": SERVICE_TYPE,
                },
            )
        try:
            from zeroconf import InterfaceChoice
            from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

            self._zc = AsyncZeroconf(interfaces=self.interfaces or InterfaceChoice.All)
            # The spec's record carries the group; the room record carries exactly the stock keys.
            self._infos = [self._service_info(SERVICE_TYPE, {"group": self.group})]
            if self.room_type:
                self._infos.append(self._service_info(self.room_type, {}))
            self._browser = AsyncServiceBrowser(
                self._zc.zeroconf, list(self.service_types), handlers=[self._on_change]
            )
        except Exception as exc:  # multicast unavailable, permissions, no interfaces
            await self._fail(exc)
            return
        # Probing and announcing take about a second; the node need not wait for them.
        self._spawn(self._register())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _register(self) -> None:
        for index, info in enumerate(list(self._infos)):
            try:
                await self._zc.async_register_service(info)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if index == 0:  # the spec's record: without it there is no mDNS presence at all
                    await self._fail(exc)
                    return
                # The room record alone failed: spec peers still see us, stock ones in the room do not.
                self._infos.remove(info)
                log.warning("mDNS: could not advertise %s: %s", info.type, exc)
                self._event(
                    "mdns-warning",
                    {"reason": "room-register-failed", "detail": str(exc), "serviceType": info.type},
                )

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
            for info in self._infos:
                with contextlib.suppress(Exception):
                    await self._zc.async_unregister_service(info)
            with contextlib.suppress(Exception):
                await self._zc.async_close()
            self._zc = None
        self._infos = []

    def _on_change(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        from zeroconf import ServiceStateChange

        if name.startswith(self.label + "."):
            return
        if state_change is ServiceStateChange.Removed:
            self._forget(service_type, name)
            return
        if state_change not in (ServiceStateChange.Added, ServiceStateChange.Updated):
            return
        self._spawn(self._resolve(service_type, name))

    def _forget(self, service_type: str, name: str) -> None:
        node_id = self._instances.pop((service_type, name), None)
        if node_id is None:
            return
        types = self.found_under.get(node_id, set())
        types.discard(service_type.lower())
        if not types:  # gone under every type: a comeback is reported again, even at the same address
            self.found_under.pop(node_id, None)
            self._reported.pop(node_id, None)

    def _group_of(self, service_type: str, props: dict[bytes, bytes | None]) -> str | None:
        """An explicit `group` TXT wins; without one, the service type says it (stock nodes)."""
        if b"group" in props:
            return _txt(props, "group")
        if self.room_type and service_type.lower() == self.room_type.lower():
            return self.group
        if service_type.lower() == SERVICE_TYPE:
            return DEFAULT_GROUP
        return None

    async def _resolve(self, service_type: str, name: str) -> None:
        from zeroconf.asyncio import AsyncServiceInfo

        if self._zc is None:
            return
        try:
            info = AsyncServiceInfo(service_type, name)
            if not await info.async_request(self._zc.zeroconf, self.resolve_timeout_ms):
                return
            props = info.properties or {}
            addresses = info.parsed_addresses()
        except Exception as exc:  # malformed names or records from the LAN: drop, never crash
            log.debug("mDNS resolve of %s failed: %s", name, exc)
            return
        node_id = _txt(props, "node-id")
        node_name = _txt(props, "node-name") or "unknown"
        group = self._group_of(service_type, props)
        if not node_id or node_id == self.identity.node_id:
            return
        if group != self.group:
            if len(self.ignored) >= _IGNORED_MAX:  # a noisy LAN must not grow this without bound
                self.ignored.pop(next(iter(self.ignored)))
            self.ignored[node_id] = f"group {group!r} under {service_type}"
            return
        if not info.port or not addresses:
            return
        host = "127.0.0.1" if "127.0.0.1" in addresses else addresses[0]
        self._instances[(service_type, name)] = node_id
        self.found_under.setdefault(node_id, set()).add(service_type.lower())
        # The same node under both types (or re-announced) is reported once per address.
        if self._reported.get(node_id) == (host, info.port):
            return
        self._reported[node_id] = (host, info.port)
        self.on_found("mdns", node_id, node_name, host, info.port)
