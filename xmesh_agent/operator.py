"""Operator directives (MMP §14.10): a person's signed CAT7 CMB into a running mesh.

The operator is a node of its own: a persistent identity under the xmesh home (`operator-<user>`
unless named), its own small store, and a `MeshNode` that joins the group only long enough to
deliver. It goes through the node's ordinary publish path, so stock nodes and sym 0.5 peers get
it in their dialects, as they get a peer's replies.

Delivery waits only as long as it must: the peers the same-host registry and the config name are
known in advance, so the directive leaves as soon as all of them are connected (or the one it is
directed to), and at the latest when `wait` runs out. Registry peers are dialed directly (as static
addresses), whichever node id is smaller, so a short-lived operator need not wait for them to dial.

A directive is not privileged: a broadcast is SVAF-gated at every receiver like any CMB. Directed
(`to`), it is delivered unconditionally (§9.2.2).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from xmesh_agent import paths
from xmesh_agent.config import NAME_PATTERN, AgentConfig
from xmesh_agent.identity import NodeIdentity, load_or_create_identity
from xmesh_agent.mmp.cmb import CAT7, CMB, NEUTRAL, mint
from xmesh_agent.mmp.handshake import valid_group

DEFAULT_WAIT = 3.0
SETTLE = 0.4
"""With no peer known in advance (mDNS, relay): how long to wait for more after the first one."""
OPERATOR_PERSPECTIVE = "operator"
"""§14.10: a directive carries `perspective: "operator"` unless the operator says otherwise."""


class DirectiveError(ValueError):
    """Bad input: an unknown field, an empty directive, unreadable JSON (one line, exit 2)."""


class NotDelivered(RuntimeError):
    """Nobody (or not the `to` peer) was reached within the wait (one line, exit 1)."""


@dataclass(frozen=True)
class Directive:
    """What to publish: the seven texts (empty ones are minted "neutral"), mood's affect, audience."""

    texts: dict[str, str]
    mood: tuple[float, float] | None = None


@dataclass
class Target:
    """Where to publish: a group and the ways to reach it (a peer config's [mesh], or defaults)."""

    group: str
    static_peers: list[str] = field(default_factory=list)
    discovery: list[str] = field(default_factory=lambda: ["registry"])
    relay_url: str | None = None
    relay_token: str | None = None
    host: str = "127.0.0.1"

    @classmethod
    def from_config(cls, config: AgentConfig) -> Target:
        mesh = config.mesh
        return cls(
            group=mesh.group,
            static_peers=list(mesh.peers),
            discovery=list(mesh.discovery),
            relay_url=mesh.relay,
            relay_token=mesh.relay_token,
            host=mesh.host,
        )


@dataclass(frozen=True)
class PublishResult:
    key: str
    delivered_to: list[str]
    to: str | None
    """The recipient's node id of a directed directive; None for a broadcast."""
    cmb: CMB
    repeated: bool = False
    """The operator published these very texts before: same key, so peers holding it do not wake."""

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "delivered_to": self.delivered_to}


# -- input ---------------------------------------------------------------------------------------


def _unit(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not -1 <= value <= 1:
        raise DirectiveError(f"mood {name} must be a number in [-1, 1], not {value!r}")
    return float(value)


def directive_from_json(data: Any) -> Directive:
    """The object `sym publish` takes: each CAT7 field a string or {text[, valence, arousal]}."""
    if not isinstance(data, Mapping):
        raise DirectiveError('the directive must be a JSON object of CAT7 fields, e.g. {"focus": "..."}')
    unknown = [k for k in data if k not in CAT7]
    if unknown:
        raise DirectiveError(f"unknown field {unknown[0]!r}: the CAT7 fields are {', '.join(CAT7)}")
    texts: dict[str, str] = {}
    mood = None
    for name, value in data.items():
        if isinstance(value, Mapping):
            extra = [k for k in value if k not in ("text", "valence", "arousal")]
            if extra:
                raise DirectiveError(f"field {name!r}: unknown key {extra[0]!r} (text, valence, arousal)")
            text = value.get("text", "")
            if name == "mood" and ("valence" in value or "arousal" in value):
                mood = (
                    _unit(value.get("valence", 0.0), "valence"),
                    _unit(value.get("arousal", 0.0), "arousal"),
                )
        else:
            text = value
        if not isinstance(text, str):
            raise DirectiveError(f"field {name!r} must be text, not {type(text).__name__}")
        texts[name] = text
    return _checked(texts, mood)


def directive_from_text(raw: str) -> Directive:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DirectiveError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    return directive_from_json(data)


def directive_from_fields(texts: Mapping[str, str | None]) -> Directive:
    return _checked({k: v for k, v in texts.items() if v is not None}, None)


def _checked(texts: dict[str, str], mood: tuple[float, float] | None) -> Directive:
    if not any(t.strip() and t.strip().casefold() != NEUTRAL for t in texts.values()):
        raise DirectiveError("empty directive: give at least one field with text (e.g. --focus '...')")
    if not (texts.get("perspective") or "").strip():
        texts["perspective"] = OPERATOR_PERSPECTIVE
    return Directive(texts=texts, mood=mood)


# -- identity ------------------------------------------------------------------------------------


def default_operator_name(suffix: str = "") -> str:
    """`operator-<user>`, or `operator-<user>-<suffix>`.

    One identity can be on a mesh only once at a time (a peer keeps the first session of a node
    id, §5.2), so a long-lived operator node (the MCP server) takes a suffix of its own, or every
    `publish` would be refused while it runs.
    """
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    user = re.sub(r"[^A-Za-z0-9_.-]", "-", user).strip("-") or "user"
    tail = f"-{suffix}" if suffix else ""
    return f"operator-{user}"[: 64 - len(tail)] + tail


def operator_identity(name: str | None = None) -> NodeIdentity:
    """The operator's persistent identity (created on first use, key under <home>/keys)."""
    name = name or default_operator_name()
    if not re.match(NAME_PATTERN, name):
        raise DirectiveError(f"invalid operator name {name!r}: letters, digits, '.', '_' and '-', at most 64")
    return load_or_create_identity(name)


# -- delivery ------------------------------------------------------------------------------------


def _registry_addresses(group: str) -> dict[str, str]:
    """node id -> 127.0.0.1:port of every live same-host node of the group."""
    from xmesh_agent.mmp.discovery.registry import LoopbackRegistry

    scan = LoopbackRegistry("", "", group).scan()
    return {e.node_id: f"127.0.0.1:{e.port}" for e in scan}


def resolve_parents(keys: list[str]) -> list[CMB | str]:
    """Parent keys as a person types them (unique prefixes, stock `cmb-` keys) -> the CMBs this
    machine's peers hold (their lineage is carried), or full `cmb1-` keys none of them holds.
    DirectiveError (one line) for a key that names nothing or several."""
    from xmesh_agent.lookup import KeyLookupError, close_all, held_everywhere, open_readers, resolve_key

    if not keys:
        return []
    readers = open_readers()
    try:
        out: list[CMB | str] = []
        for text in keys:
            full = text.strip()
            if len(full) == 69 and full.startswith("cmb1-") and not any(r.get(full) for r in readers):
                out.append(full)  # a full key no local store holds: its key alone is the lineage
                continue
            try:
                out.append(held_everywhere(resolve_key(text, readers), readers)[0].cmb)
            except KeyLookupError as exc:
                raise DirectiveError(str(exc)) from None
        return out
    finally:
        close_all(readers)


def _stub(key: str) -> CMB:
    """A parent no local store holds: only its key goes into the lineage."""
    return CMB(key=key, created_by="", created_at=0, fields={})


async def publish(
    directive: Directive,
    target: Target,
    *,
    to: str | None = None,
    parents: list[CMB | str] | None = None,
    wait: float = DEFAULT_WAIT,
    name: str | None = None,
    identity: NodeIdentity | None = None,
) -> PublishResult:
    """Join `target.group` as the operator node, deliver the directive, leave.

    `to`: a peer name or node id (§9.2.2 directed); a name is resolved among the peers reached.
    `parents`: CMBs (their lineage is carried) or bare keys. Raises NotDelivered when nobody (or not
    `to`) was reached within `wait` seconds, DirectiveError on bad input.
    """
    from xmesh_agent.mmp.node import MeshNode
    from xmesh_agent.mmp.store import CMBStore

    if not valid_group(target.group):
        raise DirectiveError(f"invalid mesh group {target.group!r}: [a-z0-9-_.], at most 64")
    if wait <= 0:
        raise DirectiveError("--wait must be more than 0 seconds")
    identity = identity or operator_identity(name)
    deadline = time.monotonic() + wait
    known: dict[str, str] = {}
    use_registry = "registry" in target.discovery
    if use_registry:
        known = _registry_addresses(target.group)
        while not known and not target.static_peers and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # a peer may be starting: its registry entry comes within ~0.3 s
            known = _registry_addresses(target.group)
    statics = list(dict.fromkeys([*known.values(), *target.static_peers]))
    home = paths.ensure_dir(paths.xmesh_home() / "operators" / identity.name)
    store = CMBStore(home / "cmbs.db", group_commit=False)
    node = MeshNode(
        identity,
        target.group,
        store,
        host=target.host,
        static_peers=statics,
        discovery=[d for d in target.discovery if d != "registry"],
        relay_url=target.relay_url,
        relay_token=target.relay_token,
        reconnect_min=0.05,
        reconnect_max=0.5,
    )
    try:
        await node.start()
        recipients = await _reach(node, to, len(statics), deadline)
        parent_cmbs = [p if isinstance(p, CMB) else _stub(p) for p in parents or []]
        for parent in parent_cmbs:
            if parent.fields:  # the node reads parents from its store when it speaks a stock dialect
                store.put(parent, source="recall")
        cmb = mint(
            directive.texts,
            identity=identity,
            group=target.group,
            created_at=int(time.time() * 1000),
            parents=parent_cmbs,
            to=recipients[0].node_id if to else None,
            mood=directive.mood,
        )
        repeated = store.has(cmb.key)
        sent = await node.publish(cmb)
    finally:
        await node.stop()
        store.close()
    if sent == 0:
        raise NotDelivered(f"reached {', '.join(p.name for p in recipients)} but the send failed")
    return PublishResult(cmb.key, [p.name for p in recipients][:sent], cmb.to, cmb, repeated)


async def _reach(node: Any, to: str | None, expected: int, deadline: float) -> list:
    """The peers to deliver to, once all `expected` are connected (or `to` is), or at `deadline`."""
    settle_until: float | None = None
    while True:
        peers = node.peers()
        if to:
            match = [p for p in peers if to in (p.node_id, p.name)]
            if match:
                return match[:1]
        elif expected and len(peers) >= expected:
            return peers
        elif not expected and peers:
            settle_until = settle_until or time.monotonic() + SETTLE
            if time.monotonic() >= settle_until:
                return peers
        left = deadline - time.monotonic()
        if left <= 0:
            break
        await node.wait_for_peers(len(peers) + 1, min(left, 0.1 if settle_until else left))
    peers = node.peers()
    if to:
        seen = ", ".join(sorted(p.name for p in peers)) or "nobody"
        raise NotDelivered(f"peer {to!r} not reached in group {node.group!r} (reached: {seen})")
    if not peers:
        raise NotDelivered(f"nobody reached in group {node.group!r}: {_why_nobody(expected)}")
    return peers


def _why_nobody(expected: int) -> str:
    if expected:
        return f"{expected} known peer address(es) did not answer"
    return "no peer of the group on this machine's registry, no static peers (start one: xmesh-agent run)"
