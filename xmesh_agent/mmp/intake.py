"""CMB frames in and out of a MeshNode, in the peer's dialect: the spec's flat CMB, or the stock
node's record (docs/interop.md). Either way one internal CMB is verified, stored and surfaced.

A mixin over MeshNode; it uses the node's `identity`, `group`, `store`, `verifier`, `on_cmb` and
`_emit`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from xmesh_agent.mmp.cmb import CMB
from xmesh_agent.mmp.connection import PeerInfo
from xmesh_agent.mmp.dialects.v2 import (
    V2_SUITE,
    encode_v2_cmb,
    is_v2_record,
    verify_any_stock_record,
    verify_v2_record,
)
from xmesh_agent.mmp.e2e import (
    E2EError,
    E2EUnavailableError,
    decrypt_record,
    encrypt_record,
    is_encrypted_record,
)
from xmesh_agent.mmp.verify import ExternalSig, KnownKey

if TYPE_CHECKING:
    from xmesh_agent.mmp.node import MeshNode, _Session

log = logging.getLogger(__name__)


def is_stock_record(body: dict[str, Any]) -> bool:
    return "metadata" in body and "fields" not in body


class IntakeMixin:
    async def _on_cmb_frame(self: MeshNode, session: _Session, frame: dict[str, Any]) -> None:
        info = session.info
        assert info is not None
        body = frame.get("cmb")
        audit = {"from": info.name, "fromNodeId": info.node_id}
        if not isinstance(body, dict):
            self._emit("cmb-rejected", {**audit, "reason": "malformed"})
            return
        if is_encrypted_record(body):
            opened = self._open_e2e(session, body)
            if opened is None:
                self._emit("cmb-rejected", {**audit, "reason": "e2e-undecryptable"})
                return
            body, frame = opened, {**frame, "cmb": opened}
        sender = KnownKey(info.node_id, info.name, info.public_key, "handshake")
        external: ExternalSig | None = None
        try:
            if session.sym05:
                from xmesh_agent.mmp.dialects.sym05 import Sym05EncryptedError, sym05_intake

                try:
                    cmb, external = sym05_intake(self, session, frame)
                except Sym05EncryptedError:
                    self._emit("cmb-rejected", {**audit, "reason": "e2e-undecryptable"})
                    return
            elif is_stock_record(body):
                cmb, external = self._decode_stock(frame, sender)
            else:
                cmb = CMB.from_wire(body)
        except (ValidationError, ValueError, TypeError):
            self._emit("cmb-rejected", {**audit, "reason": "malformed", "key": str(body.get("key"))[:80]})
            return
        if cmb.created_by in (self.identity.name, self.identity.node_id):
            return  # our own block echoed back
        if session.stock and not session.stock_v2:
            self._learn_dialect(session, body)  # before the duplicate check: replayed anchors count
        if self.store.has(cmb.key):
            return  # duplicate: already verified and surfaced once
        reason = self.verifier.check(cmb, sender, external=external)
        if reason is not None:
            self._emit(
                "cmb-rejected",
                {**audit, "reason": reason, "key": cmb.key[:80], "createdBy": cmb.created_by[:80]},
            )
            return
        if not self.store.put(cmb, source=info.name):
            return
        if self.on_cmb is not None:
            # Surfaced by one worker, in arrival order, so a slow handler never stalls this
            # session's reads (and with them its heartbeat).
            await self._deliveries.put((cmb, info))

    def _learn_dialect(self: MeshNode, session: _Session, record: dict[str, Any]) -> None:
        """A stock peer whose OWN block verifies under mmp-sig-v2.0 (its handshake key and nodeId)
        runs the v2.0 emitter: from now on this session answers it in v2.0. Nothing else flips it."""
        info = session.info
        assert info is not None
        meta = record.get("metadata")
        if not (is_v2_record(record) and isinstance(meta, dict) and meta.get("createdBy") == info.name):
            return
        if verify_v2_record(record, info.public_key, node_id=info.node_id):
            session.stock_v2 = True
            self._emit("peer-dialect", {"nodeId": info.node_id, "name": info.name, "dialect": V2_SUITE})

    @staticmethod
    def _open_e2e(session: _Session, record: dict[str, Any]) -> dict[str, Any] | None:
        """Plaintext categories of a stock e2e record, or None (no shared secret, or tampered)."""
        if session.e2e_secret is None:
            return None
        try:
            return decrypt_record(record, session.e2e_secret)
        except E2EError as exc:
            log.info("dropping an e2e cmb from %s: %s", session.info.name if session.info else "?", exc)
            return None

    async def _deliver_loop(self: MeshNode) -> None:
        while True:
            cmb, info = await self._deliveries.get()
            try:
                if self.on_cmb is not None:
                    await self.on_cmb(cmb, info)
            except Exception:
                log.exception("on_cmb handler failed for %s", cmb.key)
            finally:
                self._deliveries.task_done()

    def _decode_stock(self: MeshNode, frame: dict[str, Any], sender: KnownKey) -> tuple[CMB, ExternalSig]:
        """A stock record as our CMB plus its signature check (either suite). ValueError when unreadable."""
        from xmesh_agent.mmp.dialects.stock import decode_stock_cmb

        meta = frame["cmb"].get("metadata")
        author = meta.get("createdBy") if isinstance(meta, dict) else None
        known = (
            sender
            if author == sender.name
            else self.verifier.resolve(author if isinstance(author, str) else "")
        )
        decoded = decode_stock_cmb(
            frame, author_node_id=known.node_id if known else None, aliases=self._stock_aliases
        )
        self._stock_aliases.learn(decoded.aliases)
        record = decoded.record
        # The record names its suite (0.12.1's mmp-sig-v2, or mmp-sig-v2.0 whose signed author
        # nodeId must be the node whose key verifies it).
        node_id = known.node_id if known else None
        external = ExternalSig(
            signed=decoded.sig is not None,
            verify=lambda key: verify_any_stock_record(record, key, node_id=node_id, check_content=False),
            content_ok=decoded.key_matches,
        )
        return decoded.cmb, external

    def _cmb_frame_for(self: MeshNode, cmb: CMB, session: _Session) -> dict[str, Any] | None:
        """The `cmb` frame for this peer: a signed stock record for stock nodes, the flat v0.2 CMB
        for sym 0.5 peers, else the spec CMB."""
        if session.sym05:
            from xmesh_agent.mmp.dialects.sym05 import sym05_frame_for

            return sym05_frame_for(self, cmb, session)
        if not session.stock:
            return {"type": "cmb", "timestamp": _now_ms(), "cmb": cmb.to_wire()}
        from xmesh_agent.mmp.dialects.stock import encode_stock_cmb
        from xmesh_agent.mmp.dialects.stock_keys import StockDialectError, stock_key_for

        encode = encode_v2_cmb if session.stock_v2 else encode_stock_cmb

        if cmb.created_by != self.identity.name:
            return None  # a stock node verifies only the delivering peer's own blocks
        info: PeerInfo | None = session.info
        parents = []
        for key in cmb.parents:
            parent = self.store.get(key)
            # A stock node drops as an echo any block whose parents it holds, so an answer to its
            # own block travels to it as a root (our store keeps the lineage; docs/interop.md).
            if parent is not None and not (info and parent.created_by == info.name):
                parents.append(stock_key_for(parent))
        try:
            frame = encode(
                cmb,
                self.identity,
                self.group,
                info.node_id if (cmb.to and info) else None,
                timestamp=_now_ms(),
                parents=parents,
            )
        except StockDialectError as exc:
            log.warning("cannot encode %s for a stock peer: %s", cmb.key, exc)
            return None
        self._stock_aliases.learn({frame["cmb"]["metadata"]["key"]: cmb.key})
        if session.e2e_secret is not None:
            try:
                frame["cmb"] = encrypt_record(frame["cmb"], session.e2e_secret)
            except (E2EError, E2EUnavailableError) as exc:
                log.warning("cannot encrypt %s for %s: %s", cmb.key, info.name if info else "?", exc)
                return None  # never fall back to plaintext for a peer that expects ciphertext
        return frame


def _now_ms() -> int:
    return int(time.time() * 1000)
