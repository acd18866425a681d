"""The operator's trust store: pinned peer keys per group, one JSON file per peer.

Strict admission accepts only authors whose key is here. Files live under
`paths.trusted_keys_dir(group)/<peer>.json` = {peer, group, publicKey, keyprint, addedAt}.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from xmesh_agent import paths
from xmesh_agent.identity import b64url_decode, b64url_encode, keyprint
from xmesh_agent.mmp.handshake import valid_group

_PEER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")


class TrustError(ValueError):
    """A bad group, peer name or key: nothing was written."""


def _check(group: str, peer: str) -> None:
    if not valid_group(group):
        raise TrustError(f"invalid group {group!r}")
    if not _PEER_RE.fullmatch(peer):
        raise TrustError(f"invalid peer name {peer!r}")


def _file(group: str, peer: str) -> Path:
    _check(group, peer)
    return paths.trusted_keys_dir(group) / f"{peer}.json"


def _decode_key(public_key_b64url: str) -> bytes:
    try:
        raw = b64url_decode(public_key_b64url.strip())
    except (ValueError, UnicodeEncodeError, AttributeError) as exc:
        raise TrustError("public key is not base64url") from exc
    if len(raw) != 32:
        raise TrustError("public key is not a 32-byte ed25519 key")
    return raw


def add(group: str, peer: str, public_key_b64url: str) -> Path:
    """Pin `peer`'s key for `group` (replacing any earlier pin)."""
    raw = _decode_key(public_key_b64url)
    path = _file(group, peer)
    paths.ensure_dir(path.parent)
    record = {
        "peer": peer,
        "group": group,
        "publicKey": b64url_encode(raw),
        "keyprint": keyprint(raw),
        "addedAt": datetime.now(UTC).isoformat(),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def remove(group: str, peer: str) -> bool:
    path = _file(group, peer)
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def list(group: str) -> dict[str, str]:  # noqa: A001 - the trust store's own verb
    """{peer: publicKey base64url} for every readable pin of the group."""
    if not valid_group(group):
        raise TrustError(f"invalid group {group!r}")
    directory = paths.trusted_keys_dir(group)
    out: dict[str, str] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(path.read_text())
            key = record["publicKey"]
            _decode_key(key)
        except (OSError, ValueError, KeyError, TypeError, TrustError):
            continue
        out[path.stem] = key
    return out


def get(group: str, peer: str) -> bytes | None:
    """The pinned raw key of `peer`, or None (also for names that cannot be pinned)."""
    try:
        path = _file(group, peer)
        record = json.loads(path.read_text())
        return _decode_key(record["publicKey"])
    except (OSError, ValueError, KeyError, TypeError, TrustError):
        return None
