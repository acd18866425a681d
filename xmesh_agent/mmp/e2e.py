"""End-to-end encryption of CMB categories as stock reference nodes do it.

A stock node announces an X25519 key in its handshake (`e2ePublicKey`: DER/SPKI, standard
base64). Once both keys are known, every `cmb` it sends to that peer carries its `categories`
as base64(AES-256-GCM(JSON text) ‖ 16-byte tag) with a random 12-byte nonce in `_e2e.nonce`.
The key is the RAW 32-byte X25519 shared secret: no KDF, no associated data (a weakness of
the stock scheme we reproduce only for interop; docs/interop.md). Metadata stays clear.

AES-GCM comes from libsodium through PyNaCl, which needs AES-NI / ARMv8 crypto; without it
`E2EUnavailableError` is raised (`cryptography` is not a dependency of this project).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base
from nacl.exceptions import CryptoError
from nacl.exceptions import RuntimeError as NaclRuntimeError

X25519_SPKI_PREFIX = bytes.fromhex("302a300506032b656e032100")
X25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b656e04220420")
NONCE_BYTES = 12
TAG_BYTES = 16


class E2EError(ValueError):
    """Bad key material, a frame that is not e2e-shaped, or a ciphertext that fails to open."""


class E2EUnavailableError(RuntimeError):
    """This CPU/libsodium build offers no AES-256-GCM."""


def _aes_gcm() -> tuple[Any, Any]:
    try:
        from nacl._sodium import lib  # noqa: PLC0415 - availability probe lives only here
        from nacl.bindings import crypto_aead_aes256gcm_decrypt, crypto_aead_aes256gcm_encrypt
    except ImportError as exc:  # pragma: no cover - depends on the installed PyNaCl
        raise E2EUnavailableError("PyNaCl exposes no AES-256-GCM binding") from exc
    if not lib.crypto_aead_aes256gcm_is_available():  # pragma: no cover - hardware dependent
        raise E2EUnavailableError("libsodium AES-256-GCM needs AES-NI or ARMv8 crypto extensions")
    return crypto_aead_aes256gcm_encrypt, crypto_aead_aes256gcm_decrypt


def aes_gcm_available() -> bool:
    try:
        _aes_gcm()
    except E2EUnavailableError:
        return False
    return True


# ── keys ──────────────────────────────────────────────────────────────────────────────────


def spki_encode(public_key: bytes) -> str:
    """Raw 32-byte X25519 public key -> base64(DER SubjectPublicKeyInfo), as stock nodes announce."""
    if len(public_key) != 32:
        raise E2EError("an X25519 public key is 32 bytes")
    return base64.b64encode(X25519_SPKI_PREFIX + public_key).decode("ascii")


def spki_decode(text: str) -> bytes:
    """base64 DER/SPKI (what arrives as `e2ePublicKey`) -> raw 32-byte X25519 public key."""
    if not isinstance(text, str):
        raise E2EError("e2ePublicKey must be a string")
    try:
        der = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise E2EError("e2ePublicKey is not base64") from exc
    if len(der) != 44 or not der.startswith(X25519_SPKI_PREFIX):
        raise E2EError("e2ePublicKey is not an X25519 SubjectPublicKeyInfo")
    return der[len(X25519_SPKI_PREFIX) :]


@dataclass(frozen=True)
class X25519KeyPair:
    """A node's e2e keypair. Persisting it next to the identity key is the caller's job."""

    private_key: bytes
    public_key: bytes

    @classmethod
    def generate(cls) -> X25519KeyPair:
        return cls.from_private_bytes(os.urandom(32))

    @classmethod
    def from_private_bytes(cls, private_key: bytes) -> X25519KeyPair:
        if len(private_key) != 32:
            raise E2EError("an X25519 private key is 32 bytes")
        return cls(bytes(private_key), crypto_scalarmult_base(bytes(private_key)))

    @classmethod
    def from_pkcs8_der(cls, der: bytes) -> X25519KeyPair:
        """Load a stock node's `e2e-keypair.json` privateKey (base64-decoded PKCS#8 DER)."""
        if len(der) != 48 or not der.startswith(X25519_PKCS8_PREFIX):
            raise E2EError("not an X25519 PKCS#8 private key")
        return cls.from_private_bytes(der[len(X25519_PKCS8_PREFIX) :])

    def pkcs8_der(self) -> bytes:
        return X25519_PKCS8_PREFIX + self.private_key

    @property
    def public_spki_b64(self) -> str:
        return spki_encode(self.public_key)

    def shared_secret(self, peer_public: bytes | str) -> bytes:
        """Raw X25519 agreement with a peer key (raw bytes or the announced SPKI base64)."""
        return shared_secret(self.private_key, peer_public)


def shared_secret(private_key: bytes, peer_public: bytes | str) -> bytes:
    """The 32-byte X25519 shared secret; an all-zero result (low-order peer key) is refused."""
    peer = spki_decode(peer_public) if isinstance(peer_public, str) else peer_public
    if len(peer) != 32 or len(private_key) != 32:
        raise E2EError("X25519 keys are 32 bytes")
    try:
        secret = crypto_scalarmult(private_key, peer)
    except NaclRuntimeError as exc:  # libsodium refuses an all-zero result itself
        raise E2EError("peer X25519 key is a low-order point") from exc
    if secret == bytes(32):
        raise E2EError("peer X25519 key is a low-order point")
    return secret


# ── categories ────────────────────────────────────────────────────────────────────────────


def _js_ready(value: Any) -> Any:
    """Shape numbers the way JSON.stringify prints them (integral floats without `.0`)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return {str(k): _js_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_js_ready(v) for v in value]
    return value


def js_json(value: Any) -> str:
    """JSON text as a stock node's JSON.stringify would write it (compact, raw UTF-8)."""
    return json.dumps(_js_ready(value), separators=(",", ":"), ensure_ascii=False)


def encrypt_categories(
    categories: Mapping[str, Any], secret: bytes, nonce: bytes | None = None
) -> tuple[str, str]:
    """(ciphertext base64, nonce base64): AES-256-GCM over the categories' JSON text."""
    if len(secret) != 32:
        raise E2EError("the shared secret is 32 bytes")
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    if len(nonce) != NONCE_BYTES:
        raise E2EError("the AES-GCM nonce is 12 bytes")
    encrypt, _ = _aes_gcm()
    sealed = encrypt(js_json(categories).encode("utf-8"), None, nonce, secret)
    return base64.b64encode(sealed).decode("ascii"), base64.b64encode(nonce).decode("ascii")


def decrypt_categories(ciphertext: str, nonce: str, secret: bytes) -> dict[str, Any]:
    """Open and parse e2e categories; any tampering or wrong key raises E2EError."""
    try:
        sealed = base64.b64decode(ciphertext.encode("ascii"), validate=True)
        nonce_raw = base64.b64decode(nonce.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError) as exc:
        raise E2EError("e2e ciphertext or nonce is not base64") from exc
    if len(nonce_raw) != NONCE_BYTES or len(sealed) < TAG_BYTES or len(secret) != 32:
        raise E2EError("e2e frame has a bad nonce, ciphertext or key length")
    _, decrypt = _aes_gcm()
    try:
        plain = decrypt(sealed, None, nonce_raw, secret)
    except CryptoError as exc:
        raise E2EError("e2e ciphertext failed authentication") from exc
    try:
        value = json.loads(plain.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise E2EError("e2e plaintext is not JSON") from exc
    if not isinstance(value, dict):
        raise E2EError("e2e plaintext is not a categories object")
    return value


def is_encrypted_record(record: Mapping[str, Any]) -> bool:
    return isinstance(record.get("categories"), str) and isinstance(record.get("_e2e"), Mapping)


def encrypt_record(record: Mapping[str, Any], secret: bytes) -> dict[str, Any]:
    """A copy of a (signed) stock record with ciphertext categories and `_e2e: {nonce}` appended."""
    cats = record.get("categories")
    if not isinstance(cats, Mapping):
        raise E2EError("record has no plaintext categories to encrypt")
    ciphertext, nonce = encrypt_categories(cats, secret)
    out = dict(record)
    out["categories"] = ciphertext
    out["_e2e"] = {"nonce": nonce}
    return out


def decrypt_record(record: Mapping[str, Any], secret: bytes) -> dict[str, Any]:
    """A copy of an e2e record with plaintext categories and no `_e2e`."""
    if not is_encrypted_record(record):
        raise E2EError("record is not e2e-encrypted")
    nonce = record["_e2e"].get("nonce")
    if not isinstance(nonce, str):
        raise E2EError("_e2e.nonce missing")
    out = {k: v for k, v in record.items() if k != "_e2e"}
    out["categories"] = decrypt_categories(record["categories"], nonce, secret)
    return out
