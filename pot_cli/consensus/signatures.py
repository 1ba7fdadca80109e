"""Signature verification with a cache keyed by (sender, signature, SHA-256 of the signed bytes).

Verifying Ed25519 costs ~100-160 µs in this process, and PBFT sees the same signed message many
times (duplicates, retransmissions, and again inside view-change certificates and new-view
messages). Verification is a pure function of (key, bytes, signature), so caching its result is
exact. One :class:`Verifier` per replica is the honest cost model (``pot bench consensus``); the
simulator may share one between replicas, which changes CPU time and nothing else.
"""

from __future__ import annotations

from pot_cli.consensus.messages import Signed
from pot_cli.crypto import verify


class Verifier:
    """Checks that a signed message was signed by the replica it names."""

    def __init__(self, chain_id: str, public_keys: tuple[bytes, ...], max_cache: int = 100_000):
        self.chain_id = chain_id
        self.public_keys = public_keys
        self.max_cache = max_cache
        self._cache: dict[tuple[int, bytes, bytes], bool] = {}  # (sender, sig, sha256) -> ok
        self.verified = 0
        self.cache_hits = 0

    def check(self, msg: Signed) -> bool:
        sender = msg.sender
        if not 0 <= sender < len(self.public_keys):
            return False
        data = msg.signing_bytes(self.chain_id)
        # keyed by the digest of the signed bytes, not the bytes: a cache full of forged
        # 1 MiB messages would otherwise hold gigabytes
        key = (sender, msg.signature, msg.signing_digest(self.chain_id))
        hit = self._cache.get(key)
        if hit is not None:
            self.cache_hits += 1
            return hit
        ok = verify(self.public_keys[sender], data, msg.signature)
        self.verified += 1
        if len(self._cache) >= self.max_cache:
            self._cache.clear()
        self._cache[key] = ok
        return ok
