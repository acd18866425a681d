"""The frames recorded from stock nodes with the v2.0 emitter on, opened with the captured X25519
keys, and the ways a record can be tampered with: shared by the v2 reader and emitter tests."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

from tests.mmp_data import mmp_path
from xmesh_agent.mmp.e2e import X25519KeyPair, decrypt_record

CAPTURES = mmp_path("captures")
TCP = json.loads((CAPTURES / "stock-node-0.12.x-v2-tcp.json").read_text())
RELAY = [
    json.loads(line) for line in (CAPTURES / "stock-node-0.12.x-v2-relay.jsonl").read_text().splitlines()
]
E2E = {
    name: X25519KeyPair.from_pkcs8_der(base64.b64decode(der))
    for name, der in json.loads((CAPTURES / "stock-node-0.12.x-v2-e2e-keys.json").read_text()).items()
}
OLD_TCP = json.loads((CAPTURES / "stock-node-0.12.1-tcp.json").read_text())

STOCK_V2_METADATA_ORDER = [
    "key",
    "createdBy",
    "createdTimestamp",
    "lineage",
    "room",
    "to",
    "addressScheme",
    "signatureSuite",
    "createdByNodeId",
    "application",
    "assertionId",
    "sig",
    "sigAlg",
]


def _relay_payloads(direction: str = "r2c") -> list[dict[str, Any]]:
    out = []
    for line in RELAY:
        msg = json.loads(line["msg"])
        if line["dir"] == direction and "payload" in msg:
            out.append(msg["payload"])
    return out


TCP_FRAMES = [f for _ports, frames in TCP for f in frames]
FRAMES = TCP_FRAMES + _relay_payloads()
HANDSHAKES = {f["name"]: f for f in FRAMES if f.get("type") == "handshake"}
CMB_FRAMES = [f for f in FRAMES if f.get("type") == "cmb"]


def _recipient(author: str) -> str:
    return {"alice": "bob", "bob": "alice", "carol": "dave", "dave": "carol"}[author]


def _open(record: dict[str, Any]) -> dict[str, Any]:
    """The plaintext record, opened with the recipient's captured key and the author's e2e key."""
    author = record["metadata"]["createdBy"]
    secret = E2E[_recipient(author)].shared_secret(HANDSHAKES[author]["e2ePublicKey"])
    return decrypt_record(record, secret)


def author_of(record: dict[str, Any]) -> tuple[str, str]:
    hs = HANDSHAKES[record["metadata"]["createdBy"]]
    return hs["publicKey"], hs["nodeId"]


PLAIN = [_open(f["cmb"]) for f in CMB_FRAMES]


def application(raw: bytes, **over: Any) -> dict[str, Any]:
    app = {
        "mediaType": "application/json",
        "schema": "xmesh.test/v1",
        "encoding": "base64url",
        "data": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "byteLength": len(raw),
        "digest": "sha256-" + hashlib.sha256(raw).hexdigest(),
    }
    app.update(over)
    return app


def _flip_first(sig: str) -> str:
    """Another first character: a fixed one would leave a signature that starts with it unchanged."""
    return ("B" if sig[0] == "A" else "A") + sig[1:]


TAMPER: dict[str, Callable[[dict[str, Any]], None]] = {
    "focus text": lambda r: r["categories"]["focus"].update(text="no rate limit at all"),
    "category parents": lambda r: r["categories"]["issue"]["meta"].update(parents=["cmb-" + "0" * 64]),
    "addressScheme": lambda r: r["metadata"].update(addressScheme="mmp-cmb-flat-v1"),
    "suite stripped": lambda r: r["metadata"].pop("signatureSuite"),
    "suite unknown": lambda r: r["metadata"].update(signatureSuite="mmp-sig-v9"),
    "createdByNodeId": lambda r: r["metadata"].update(createdByNodeId="01a20000-0000-7000-8000-000000000000"),
    "assertionId": lambda r: r["metadata"].update(assertionId="asrt-" + "0" * 64),
    "assertionId gone": lambda r: r["metadata"].pop("assertionId"),
    "createdBy": lambda r: r["metadata"].update(createdBy="mallory"),
    "createdTimestamp": lambda r: r["metadata"].update(
        createdTimestamp=r["metadata"]["createdTimestamp"] + 1
    ),
    "room": lambda r: r["metadata"].update(room="room9"),
    "room null": lambda r: r["metadata"].update(room=None),
    "to": lambda r: r["metadata"].update(to="01a20000-0000-7000-8000-00000000000f"),
    "parents": lambda r: r["metadata"].update(lineage={"parents": ["cmb-" + "1" * 64], "method": "SVAF-v2"}),
    "application": lambda r: r["metadata"].update(application=application(b"rm -rf /")),
    "sigAlg": lambda r: r["metadata"].update(sigAlg="none"),
    "sig": lambda r: r["metadata"].update(sig=_flip_first(r["metadata"]["sig"])),
    "key": lambda r: r["metadata"].update(key="cmb-" + "0" * 64),
}
