"""Node identity: an ed25519 keypair and a UUID v7 nodeId, persisted per peer under ~/.xmesh/keys."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from xmesh_agent import paths
from xmesh_agent.clock import now_ms

if TYPE_CHECKING:
    from xmesh_agent.mmp.e2e import X25519KeyPair


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def b64url_field(value: object, max_len: int, size: int | None = None) -> bytes | None:
    """A base64url field of a peer's frame, or None when it is not a short, well-formed one."""
    if not isinstance(value, str) or len(value) > max_len:
        return None
    try:
        raw = b64url_decode(value)
    except (ValueError, UnicodeEncodeError):
        return None
    return raw if size is None or len(raw) == size else None


def length_prefixed(value: str) -> bytes:
    """`<byte length>:<utf-8 bytes>`: fields joined this way cannot be re-split into others."""
    data = value.encode("utf-8")
    return str(len(data)).encode("ascii") + b":" + data


def uuid7() -> str:
    """A time-ordered UUID v7 (RFC 9562): 48-bit ms timestamp, version 7, random tail."""
    ms = now_ms()
    value = (ms & ((1 << 48) - 1)) << 80 | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))


def fingerprint(public_key: bytes) -> str:
    """64-hex SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(public_key).hexdigest()


def keyprint(public_key: bytes) -> str:
    """The short form users compare aloud: the first 16 hex of the fingerprint."""
    return fingerprint(public_key)[:16]


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(public_key).verify(message, signature)
        return True
    except (BadSignatureError, ValueError, TypeError):
        return False


@dataclass(frozen=True)
class NodeIdentity:
    name: str
    node_id: str
    signing_key: SigningKey
    created_at: str

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def public_key_b64url(self) -> str:
        return b64url_encode(self.public_key)

    @property
    def keyprint(self) -> str:
        return keyprint(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature

    @classmethod
    def generate(cls, name: str) -> NodeIdentity:
        return cls(name, uuid7(), SigningKey.generate(), datetime.now(UTC).isoformat())


class KeyExistsError(Exception):
    pass


def key_paths(peer: str) -> tuple[Path, Path]:
    """(private seed file, public metadata file) for a peer."""
    base = paths.keys_dir()
    return base / f"{peer}.key", base / f"{peer}.json"


def save_identity(identity: NodeIdentity, *, force: bool = False) -> Path:
    key_file, meta_file = key_paths(identity.name)
    paths.ensure_dir(key_file.parent)
    if key_file.exists() and not force:
        raise KeyExistsError(str(key_file))
    seed = b64url_encode(bytes(identity.signing_key))
    tmp = key_file.with_suffix(".key.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(seed + "\n")
    os.replace(tmp, key_file)
    meta = {
        "peer": identity.name,
        "algorithm": "ed25519",
        "nodeId": identity.node_id,
        "createdAt": identity.created_at,
        "keyprint": identity.keyprint,
        "fingerprint": fingerprint(identity.public_key),
        "publicKey": identity.public_key_b64url,
    }
    meta_file.write_text(json.dumps(meta, indent=2) + "\n")
    return key_file


def load_identity(peer: str) -> NodeIdentity | None:
    key_file, meta_file = key_paths(peer)
    if not key_file.exists():
        return None
    seed = b64url_decode(key_file.read_text().strip())
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    node_id = meta.get("nodeId") or uuid7()
    return NodeIdentity(peer, node_id, SigningKey(seed), meta.get("createdAt", ""))


def load_or_create_identity(peer: str) -> NodeIdentity:
    identity = load_identity(peer)
    if identity is None:
        identity = NodeIdentity.generate(peer)
        save_identity(identity)
    return identity


def e2e_key_path(peer: str) -> Path:
    """The peer's X25519 private key for stock-node end-to-end encryption (raw 32 bytes, base64url)."""
    return paths.keys_dir() / f"{peer}.x25519"


def load_or_create_e2e_keypair(peer: str) -> X25519KeyPair:
    """The peer's persistent X25519 keypair: stock nodes encrypt to the key we announce, so it must
    survive restarts (a new key would make them send ciphertext we cannot open until they re-handshake).
    """
    from xmesh_agent.mmp.e2e import X25519KeyPair  # noqa: PLC0415 - keeps identity free of mmp at import

    key_file = e2e_key_path(peer)
    if key_file.exists():
        try:
            return X25519KeyPair.from_private_bytes(b64url_decode(key_file.read_text().strip()))
        except ValueError:
            pass  # corrupt: replace it below, as a fresh key only costs peers a re-handshake
    pair = X25519KeyPair.generate()
    paths.ensure_dir(key_file.parent)
    tmp = key_file.with_suffix(".x25519.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(b64url_encode(pair.private_key) + "\n")
    os.replace(tmp, key_file)
    return pair
