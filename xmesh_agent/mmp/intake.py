"""CMB frames in and out of one session, in the session's dialect: the spec's flat CMB, the stock
node's record (mmp-sig-v2 or v2.0) or sym 0.5's flat v0.2 CMB (docs/interop.md). Whatever the
dialect, one internal CMB is verified, stored and handed on.

The node builds one `CmbIntake` and gives it what it uses: identity, group, store, verifier, the
alias map, and callables to emit an audit event and to deliver a stored CMB.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from xmesh_agent.clock import now_ms
from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp.cmb import CMB, legacy_key, minted_texts
from xmesh_agent.mmp.connection import PeerInfo
from xmesh_agent.mmp.dialects.aliases import AliasMap
from xmesh_agent.mmp.dialects.stock import Signer, decode_stock_cmb, encode_stock_cmb
from xmesh_agent.mmp.dialects.stock_keys import StockDialectError, sign_stock_record, stock_key_for
from xmesh_agent.mmp.dialects.sym05 import UNSIGNED, Sym05EncryptedError, decode_sym05_cmb, encode_sym05_cmb
from xmesh_agent.mmp.dialects.v2 import (
    V2_SUITE,
    is_v2_record,
    sign_as_v2,
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
from xmesh_agent.mmp.session import Dialect, Session
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.mmp.verify import ExternalSig, KnownKey, Verifier

log = logging.getLogger(__name__)

Emit = Callable[[str, dict], None]
Deliver = Callable[[CMB, PeerInfo], Awaitable[None]]


def is_stock_record(body: dict[str, Any]) -> bool:
    return "metadata" in body and "fields" not in body


class CmbIntake:
    def __init__(
        self,
        identity: NodeIdentity,
        group: str,
        store: CMBStore,
        verifier: Verifier,
        aliases: AliasMap,
        *,
        emit: Emit,
        deliver: Deliver,
    ):
        self.identity = identity
        self.group = group
        self.store = store
        self.verifier = verifier
        self.aliases = aliases
        self._emit = emit
        self._deliver = deliver

    # -- in ------------------------------------------------------------------------------------

    async def receive(self, session: Session, frame: dict[str, Any]) -> None:
        """One `cmb` frame from `session`: decode, verify, store, deliver; or an audited drop."""
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
            match session.dialect:
                case Dialect.SYM05:
                    try:
                        cmb, external = self._decode_sym05(session, frame)
                    except Sym05EncryptedError:
                        self._emit("cmb-rejected", {**audit, "reason": "e2e-undecryptable"})
                        return
                case _ if is_stock_record(body):
                    cmb, external = self._decode_stock(frame, sender)
                case _:
                    cmb = CMB.from_wire(body)
        except (ValidationError, ValueError, TypeError):
            self._emit("cmb-rejected", {**audit, "reason": "malformed", "key": str(body.get("key"))[:80]})
            return
        if cmb.created_by in (self.identity.name, self.identity.node_id):
            return  # our own block echoed back
        if session.dialect is Dialect.STOCK:
            self.learn_dialect(session, body)  # before the duplicate check: replayed anchors count
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
        await self._deliver(cmb, info)

    def learn_dialect(self, session: Session, record: dict[str, Any]) -> None:
        """A stock peer whose OWN block verifies under mmp-sig-v2.0 (its handshake key and nodeId)
        runs the v2.0 emitter: from now on this session answers it in v2.0. Nothing else flips it."""
        info = session.info
        assert info is not None
        meta = record.get("metadata")
        if not (is_v2_record(record) and isinstance(meta, dict) and meta.get("createdBy") == info.name):
            return
        if verify_v2_record(record, info.public_key, node_id=info.node_id):
            session.dialect = Dialect.STOCK_V2
            self._emit("peer-dialect", {"nodeId": info.node_id, "name": info.name, "dialect": V2_SUITE})

    @staticmethod
    def _open_e2e(session: Session, record: dict[str, Any]) -> dict[str, Any] | None:
        """Plaintext categories of a stock e2e record, or None (no shared secret, or tampered)."""
        if session.e2e_secret is None:
            return None
        try:
            return decrypt_record(record, session.e2e_secret)
        except E2EError as exc:
            log.info("dropping an e2e cmb from %s: %s", session.info.name if session.info else "?", exc)
            return None

    def _decode_stock(self, frame: dict[str, Any], sender: KnownKey) -> tuple[CMB, ExternalSig]:
        """A stock record as our CMB plus its signature check (either suite). ValueError when unreadable."""
        meta = frame["cmb"].get("metadata")
        author = meta.get("createdBy") if isinstance(meta, dict) else None
        known = (
            sender
            if author == sender.name
            else self.verifier.resolve(author if isinstance(author, str) else "")
        )
        # A pin names a key but not its nodeId: "" means unknown, as None does.
        decoded = decode_stock_cmb(
            frame, author_node_id=(known.node_id or None) if known else None, aliases=self.aliases
        )
        self.aliases.learn(decoded.aliases)
        record = decoded.record
        # The record names its suite (0.12.1's mmp-sig-v2, or mmp-sig-v2.0 whose signed author
        # nodeId must be the node whose key verifies it).
        node_id = (known.node_id or None) if known else None
        external = ExternalSig(
            signed=decoded.sig is not None,
            verify=lambda key: verify_any_stock_record(record, key, node_id=node_id, check_content=False),
            content_ok=decoded.key_matches,
        )
        return decoded.cmb, external

    def _decode_sym05(self, session: Session, frame: dict[str, Any]) -> tuple[CMB, ExternalSig]:
        """A 0.5 peer's `cmb` for the verifier: our CMB and the unsigned-block marker."""
        info = session.info
        assert info is not None
        author = frame.get("cmb", {}).get("createdBy") if isinstance(frame.get("cmb"), dict) else None
        known = self.verifier.resolve(author) if isinstance(author, str) else None
        author_id = info.node_id if author == info.name else ((known.node_id or None) if known else None)
        decoded = decode_sym05_cmb(
            frame, secret=session.e2e_secret, author_node_id=author_id, aliases=self.aliases
        )
        self.aliases.learn(decoded.aliases)
        return decoded.cmb, UNSIGNED

    # -- out -----------------------------------------------------------------------------------

    def frame_for(self, cmb: CMB, session: Session) -> dict[str, Any] | None:
        """The `cmb` frame for this peer in its dialect, or None when it must not (or cannot) go."""
        match session.dialect:
            case Dialect.SPEC:
                return {"type": "cmb", "timestamp": now_ms(), "cmb": cmb.to_wire()}
            case Dialect.SYM05:
                return self._sym05_frame(cmb, session)
            case Dialect.STOCK:
                return self._stock_frame(cmb, session, sign_stock_record)
            case Dialect.STOCK_V2:
                return self._stock_frame(cmb, session, sign_as_v2)

    def _stock_frame(self, cmb: CMB, session: Session, sign: Signer) -> dict[str, Any] | None:
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
            frame = encode_stock_cmb(
                cmb,
                self.identity,
                self.group,
                info.node_id if (cmb.to and info) else None,
                timestamp=now_ms(),
                parents=parents,
                sign=sign,
            )
        except StockDialectError as exc:
            log.warning("cannot encode %s for a stock peer: %s", cmb.key, exc)
            return None
        self.aliases.learn({frame["cmb"]["metadata"]["key"]: cmb.key})
        if session.e2e_secret is not None:
            try:
                frame["cmb"] = encrypt_record(frame["cmb"], session.e2e_secret)
            except (E2EError, E2EUnavailableError) as exc:
                log.warning("cannot encrypt %s for %s: %s", cmb.key, info.name if info else "?", exc)
                return None  # never fall back to plaintext for a peer that expects ciphertext
        return frame

    def _sym05_frame(self, cmb: CMB, session: Session) -> dict[str, Any] | None:
        info = session.info
        if cmb.created_by != self.identity.name or info is None:
            return None  # a 0.5 node takes blocks from the delivering peer's own hand
        theirs = self.aliases.theirs()

        def their_key(key: str) -> str:
            parent = self.store.get(key)
            return theirs.get(key) or (legacy_key(minted_texts(parent.texts())) if parent else key)

        parents: list[str] = []
        for key in cmb.parents:
            parent = self.store.get(key)
            # A 0.5 node drops as an echo any block whose parent it authored itself, so an answer
            # to its own block travels to it as a root (our store keeps the lineage).
            if parent is not None and parent.created_by != info.name:
                parents.append(their_key(key))
        ancestors = [their_key(k) for k in cmb.ancestors if k not in cmb.parents] if parents else []
        try:
            frame = encode_sym05_cmb(cmb, parents=parents, ancestors=ancestors, secret=session.e2e_secret)
        except (E2EError, E2EUnavailableError) as exc:
            log.warning("cannot encrypt %s for %s: %s", cmb.key, info.name, exc)
            return None  # never fall back to plaintext for a peer that expects ciphertext
        self.aliases.learn({frame["cmb"]["key"]: cmb.key})
        return frame
