"""The per-frame CPU bill of the wire benchmark (wire.py), part by part, each timed in-process with
perf_counter over many iterations: key, signature, JSON, the inbound check, the store, first contact.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import Row, fmt_us, median, time_per_call

from xmesh_agent.identity import NodeIdentity
from xmesh_agent.mmp import framing
from xmesh_agent.mmp.cmb import (
    CMB,
    content_key,
    key_matches,
    mint,
    minted_texts,
    sign_cmb,
    verify_cmb_signature,
)
from xmesh_agent.mmp.store import CMBStore
from xmesh_agent.mmp.verify import KnownKey, Verifier

Texts = Callable[[int], dict[str, str]]


def first_contact_row(tmp: Path, group: str, texts: Texts, authors: int = 40) -> Row:
    """A new author's first CMB on a tofu receiver: bind its nodeId, pin its key, mark it a signer
    (disk writes)."""
    verifier = Verifier(group, "receiver-id", "receiver", tmp / "first.db", admission="tofu")
    costs = []
    for i in range(authors):
        ident = NodeIdentity.generate(f"author-{i}")
        cmb = mint(texts(i), identity=ident, group=group, created_at=1_760_000_000_000)
        start = time.perf_counter()
        assert verifier.claim(ident.node_id, ident.name, ident.public_key, proven=True) is None
        verifier.learn(ident.node_id, ident.name, ident.public_key)
        verifier.check(cmb, KnownKey(ident.node_id, ident.name, ident.public_key, "handshake"))
        costs.append(time.perf_counter() - start)
    verifier.close()
    return Row(
        "wire-cpu",
        "first contact (claim + learn + check, new author)",
        fmt_us(median(costs)),
        note=f"median of {authors}",
    )


def cpu_rows(iterations: int, group: str, texts: Texts) -> list[Row]:
    """The per-frame CPU bill, part by part, in this process."""
    ident = NodeIdentity.generate("cpu")
    cmb = mint(texts(1), identity=ident, group=group, created_at=1_760_000_000_000)
    unsigned = cmb.model_copy(update={"sig": None, "sig_alg": None})
    full = minted_texts(texts(1))
    frame = {"type": "cmb", "timestamp": 1_760_000_000_000, "cmb": cmb.to_wire()}
    body = framing.encode_frame(frame)[4:]
    tmp = tempfile.mkdtemp(prefix="wire-cpu-")
    store = CMBStore(Path(tmp) / "s.db", group_commit=False)  # one transaction per put
    grouped = CMBStore(Path(tmp) / "g.db")  # as on the node's loop: one commit per loop iteration
    verifier = Verifier(group, "receiver-id", "receiver", Path(tmp) / "v.db", admission="open")
    sender = KnownKey(ident.node_id, ident.name, ident.public_key, "handshake")
    counter = iter(range(10**9))

    def put() -> None:
        store.put(cmb.model_copy(update={"key": f"cmb1-{next(counter):064d}"}), source="x")

    batch = 32  # frames one TCP read typically yields to the session loop under load

    def put_grouped() -> None:  # timed per CMB below (the per-call figure divided by `batch`)
        for _ in range(batch):
            grouped.put(cmb.model_copy(update={"key": f"cmb1-{next(counter):064d}"}), source="x")
        grouped.flush()

    parts = [
        ("cmb1- key (sha256 over CAT7)", lambda: content_key(full)),
        ("sign (mmp-sig-v1 ed25519)", lambda: sign_cmb(unsigned, ident)),
        ("verify signature", lambda: verify_cmb_signature(cmb, ident.public_key)),
        ("re-check cmb1- key on receipt", lambda: key_matches(cmb)),
        ("JSON encode frame (to_wire+dumps)", lambda: framing.encode_frame({**frame, "cmb": cmb.to_wire()})),
        ("JSON decode frame (loads+model)", lambda: CMB.from_wire(framing.decode_body(body)["cmb"])),
        ("verifier.check (whole inbound check)", lambda: verifier.check(cmb, sender)),
        ("store.put, own transaction (SQLite WAL)", put),
        (f"store.put, group commit of {batch}", put_grouped),
        (
            "mint (key+model+sign), sender total",
            lambda: mint(full, identity=ident, group=group, created_at=1),
        ),
    ]
    rows = []
    for label, fn in parts:
        fn()
        per = (
            time_per_call(fn, iterations // batch) / batch
            if fn is put_grouped
            else time_per_call(fn, iterations)
        )
        rows.append(Row("wire-cpu", label, fmt_us(per), note=f"{1 / per:,.0f}/s on one core"))
    store.close()
    grouped.close()
    verifier.close()
    rows.append(first_contact_row(Path(tmp), group, texts))
    rows.append(Row("wire-cpu", "frame size (spec CMB, 4 fields)", f"{len(body)} B"))
    return rows
