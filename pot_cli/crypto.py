"""Keys, signatures, hashes and addresses: the only place pot signs, verifies and hashes.

Canonical encoding (the bytes that are hashed and signed)
---------------------------------------------------------
``canonical_bytes(obj)`` is UTF-8 JSON with keys sorted by code point, no insignificant
whitespace (``","`` and ``":"`` separators), non-ASCII characters written as themselves, and:

* ``bytes`` values are written as lowercase hex strings;
* tuples are written as lists; dataclass instances as their field dict;
* floats must be finite (NaN and infinities are refused) and are written in Python's shortest
  round-trip form; integers exactly; ``True``/``False``/``None`` as ``true``/``false``/``null``;
* mapping keys must be strings; anything else raises :class:`EncodingError`.

The same object therefore always gives the same bytes, in every process and on every machine.

Signed messages
---------------
A signature never covers a bare payload. It covers a domain-separated envelope::

    b"pot/v1\\x00" + domain + b"\\x00"
        + canonical_bytes({"chain_id": ..., "height": ..., "body": ...})

so a signature made for one purpose (``domain``, e.g. ``"pbft/commit"``), one chain and one
height can never be replayed for another.

Addresses
---------
``pot1`` + hex(first 20 bytes of SHA-256(``b"pot/address\\x00"`` + public key)) + hex(first 2 bytes
of SHA-256 of those 20 bytes) — 48 characters, the last four a checksum that catches typos.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from pot_cli.errors import EncodingError, KeyFileError

PROTOCOL_TAG = b"pot/v1"
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
ADDRESS_PREFIX = "pot1"
ADDRESS_LENGTH = len(ADDRESS_PREFIX) + 40 + 4

# ---------------------------------------------------------------------------- hashing


def sha256(data: bytes) -> bytes:
    """SHA-256 digest of ``data`` (32 bytes)."""
    return hashlib.sha256(data).digest()


def sha256_hex(data: bytes) -> str:
    """SHA-256 digest of ``data`` as 64 lowercase hex characters."""
    return hashlib.sha256(data).hexdigest()


def hash_object(obj: Any) -> bytes:
    """SHA-256 of the canonical encoding of ``obj``."""
    return sha256(canonical_bytes(obj))


def hash_object_hex(obj: Any) -> str:
    """Hex SHA-256 of the canonical encoding of ``obj``."""
    return sha256_hex(canonical_bytes(obj))


class StreamingHash:
    """Incremental SHA-256 for large inputs (model weights, corpora)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, data: bytes) -> StreamingHash:
        self._h.update(data)
        return self

    def digest(self) -> bytes:
        return self._h.digest()

    def hexdigest(self) -> str:
        return self._h.hexdigest()


# ---------------------------------------------------------------------- canonical bytes


def _normalise(obj: Any, path: str) -> Any:
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise EncodingError(f"cannot encode non-finite float at {path or '<root>'}: {obj!r}")
        return obj
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise EncodingError(f"cannot encode non-string key {key!r} at {path or '<root>'}")
            out[key] = _normalise(value, f"{path}.{key}" if path else key)
        return out
    if isinstance(obj, list | tuple):
        return [_normalise(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _normalise({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, path)
    raise EncodingError(f"cannot encode value of type {type(obj).__name__} at {path or '<root>'}")


def canonical_bytes(obj: Any) -> bytes:
    """Deterministic bytes for ``obj`` (see the module docstring for the rule)."""
    return json.dumps(
        _normalise(obj, ""),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")


def signing_bytes(domain: str, chain_id: str, height: int, body: Any) -> bytes:
    """The exact bytes a signature covers: protocol tag, domain, chain id, height and body."""
    if not domain or "\x00" in domain:
        raise EncodingError(f"invalid signing domain {domain!r}")
    envelope = {"chain_id": chain_id, "height": int(height), "body": body}
    return PROTOCOL_TAG + b"\x00" + domain.encode("utf-8") + b"\x00" + canonical_bytes(envelope)


# ---------------------------------------------------------------------------- addresses


def address_from_public_key(public_key: bytes) -> str:
    """The ``pot1…`` address of a raw 32-byte Ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(
            f"an Ed25519 public key has {PUBLIC_KEY_SIZE} bytes, got {len(public_key)}"
        )
    body = sha256(b"pot/address\x00" + public_key)[:20]
    return ADDRESS_PREFIX + body.hex() + sha256(body)[:2].hex()


def is_valid_address(address: object) -> bool:
    """True when ``address`` is well formed and its checksum matches."""
    if not isinstance(address, str) or len(address) != ADDRESS_LENGTH:
        return False
    if not address.startswith(ADDRESS_PREFIX):
        return False
    rest = address[len(ADDRESS_PREFIX) :]
    try:
        body = bytes.fromhex(rest[:40])
        check = bytes.fromhex(rest[40:])
    except ValueError:
        return False
    return rest == rest.lower() and sha256(body)[:2] == check


# --------------------------------------------------------------------------- signatures


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``.

    Never raises: malformed keys or signatures simply do not verify.
    """
    if (
        not isinstance(public_key, bytes)
        or not isinstance(signature, bytes)
        or len(public_key) != PUBLIC_KEY_SIZE
        or len(signature) != SIGNATURE_SIZE
    ):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_signed(
    public_key: bytes, signature: bytes, domain: str, chain_id: str, height: int, body: Any
) -> bool:
    """Verify a signature made by :meth:`Identity.sign_message`."""
    try:
        message = signing_bytes(domain, chain_id, height, body)
    except EncodingError:
        return False
    return verify(public_key, message, signature)


@dataclass(frozen=True, repr=False)
class Identity:
    """A node identity: an Ed25519 key pair. ``repr`` never shows the private key."""

    _private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Deterministic identity from a 32-byte seed (simulations and tests only)."""
        if len(seed) != 32:
            seed = sha256(seed)
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def public_key(self) -> bytes:
        return self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def address(self) -> str:
        return address_from_public_key(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def sign_message(self, domain: str, chain_id: str, height: int, body: Any) -> bytes:
        """Sign ``body`` bound to ``domain``, ``chain_id`` and ``height``."""
        return self.sign(signing_bytes(domain, chain_id, height, body))

    def derive_secret(self, domain: str) -> bytes:
        """A 32-byte secret for ``domain`` derived from the private key (one key file holds
        every secret a node needs; nothing about the key can be learnt from the result)."""
        raw = self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return sha256(b"pot/derive-secret/v1\x00" + domain.encode() + b"\x00" + raw)

    def private_pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"Identity(address={self.address!r})"


# ---------------------------------------------------------------------------- key files

KEY_FILE_MODE = 0o600


def write_key_file(path: Path, identity: Identity, *, force: bool = False) -> None:
    """Write ``identity`` to ``path`` (PKCS#8 PEM, mode 0600), refusing to overwrite unless
    ``force``. The file is created with its final mode: never readable by others, not even
    briefly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not force:
        raise KeyFileError(f"{path}: a key already exists (use --force to replace it)")
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    try:
        os.fchmod(fd, KEY_FILE_MODE)
        os.write(fd, identity.private_pem())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_key_file(path: Path, *, allow_insecure: bool = False) -> Identity:
    """Load an identity, refusing (like ssh) a key that group or others may read."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no key file (run 'pot init' first)") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: key path is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077 and not allow_insecure:
        raise KeyFileError(
            f"{path}: permissions {mode:04o} are too open; the private key must be readable "
            f"by its owner only (run: chmod 600 {path})"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from None
    if len(data) > 64 * 1024:
        raise KeyFileError(f"{path}: key file is corrupt (too large to be an Ed25519 key)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(
            f"{path}: key file is corrupt or not an unencrypted PEM Ed25519 key"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: key file holds a {type(key).__name__}, not an Ed25519 key")
    return Identity(key)
