"""One handshaken conversation with one peer over one link, and the dialect it is held in.

The dialect is read once from the peer's handshake (`dialect_of`); the only later change is a
stock peer proving it signs under mmp-sig-v2.0 (intake's `learn_dialect`), which moves the session
from STOCK to STOCK_V2. Everything that reads or writes a `cmb` frame matches on it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from enum import Enum
from typing import Any

from xmesh_agent.mmp.connection import Link, PeerInfo
from xmesh_agent.mmp.e2e import E2EError, X25519KeyPair

log = logging.getLogger(__name__)


class Dialect(Enum):
    SPEC = "spec"  # the spec's flat CMB
    STOCK = "stock"  # the stock reference node, mmp-sig-v2 records (docs/interop.md)
    STOCK_V2 = "stock-v2"  # a stock node that signs its own blocks under mmp-sig-v2.0: answered in kind
    SYM05 = "sym05"  # sym 0.5.x, the original xmesh-agent runtime: unsigned flat v0.2 CMB


_PRE_1_0_VERSION = re.compile(r"^0\.\d+\.\d+$")


def dialect_of(handshake: Mapping[str, Any]) -> Dialect:
    """The dialect a peer speaks, from its handshake frame.

    Stock 0.12 and sym 0.5 both announce a pre-1.0 version ("0.2.3"); sym 0.5 names its group
    `group` and never `room`, stock names it `room`. A handshake with `room` and no `group` is
    stock whatever its version. Everything else (ours included: we send both) is the spec.
    """
    if not isinstance(handshake, Mapping) or handshake.get("type") != "handshake":
        return Dialect.SPEC
    version = handshake.get("version")
    pre_1_0 = isinstance(version, str) and bool(_PRE_1_0_VERSION.fullmatch(version))
    if pre_1_0 and isinstance(handshake.get("group"), str) and "room" not in handshake:
        return Dialect.SYM05
    if pre_1_0 or ("group" not in handshake and isinstance(handshake.get("room"), str)):
        return Dialect.STOCK
    return Dialect.SPEC


class Session:
    def __init__(self, link: Link, self_id: str):
        self.link = link
        self.self_id = self_id
        self.info: PeerInfo | None = None
        self.dialect = Dialect.SPEC
        self.e2e_secret: bytes | None = None  # X25519 secret with a peer that announced e2ePublicKey
        self.last_rx = time.monotonic()
        self.last_ping = 0.0

    @property
    def canonical(self) -> bool:
        """Dialed by the smaller nodeId, as §5.1 prescribes (used to settle simultaneous dials)."""
        assert self.info is not None
        return self.link.outbound == (self.self_id < self.info.node_id)

    def agree_e2e(self, keypair: X25519KeyPair | None, handshake: Mapping[str, Any]) -> None:
        """The shared secret with a peer that announced an X25519 key, when we announced one too."""
        announced = handshake.get("e2ePublicKey")
        if keypair is None or not isinstance(announced, str):
            return
        try:
            self.e2e_secret = keypair.shared_secret(announced)
        except E2EError as exc:
            log.info("ignoring %s's e2e key: %s", str(handshake.get("name"))[:80], exc)
