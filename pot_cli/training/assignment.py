"""Deterministic work assignment and spot-check sampling, from hashes anyone can recompute.

* :func:`assign_batch`: the training samples miner ``address`` must use in the round with seed
  ``round_seed`` (``s_h = H(block h-1)``). Different miners get different samples; anyone can
  recompute any miner's batch.
* :func:`spot_check_seed` / :func:`select_spot_checks`: which submissions a validator
  re-computes. The seed hashes the round seed and a **beacon**: a value nobody knows before the
  set is frozen (``protocol/beacon.py``: every validator's hash-onion layer for the height,
  revealed only for one frozen set). Each miner is then drawn independently from (seed,
  address), so the set's other members never change whether one miner is drawn, and no miner
  can grind its payload against a sample it cannot compute.

SHA-256 (via :mod:`pot_cli.crypto`) is the only source of randomness, so the result never depends
on a library's random generator version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pot_cli.crypto import hash_object, sha256
from pot_cli.training.errors import TrainingError

# (address, payload hash) of every submission: a mapping, or pairs that may repeat an address
SubmittedHashes = Mapping[str, str] | Iterable[tuple[str, str]]


def round_seed(chain_seed: str, height: int) -> bytes:
    """A round seed for simulations and benches (the chain uses ``H(block h-1)`` instead)."""
    return hash_object({"domain": "pot/round-seed", "seed": chain_seed, "height": int(height)})


def assign_batch(round_seed: bytes, address: str, train_size: int, batch_size: int) -> list[int]:
    """The ``batch_size`` distinct sample indices in ``[0, train_size)`` assigned to ``address``."""
    if batch_size < 1 or train_size < batch_size:
        raise TrainingError(f"cannot draw a batch of {batch_size} from {train_size} samples")
    base = hash_object({"domain": "pot/assign", "round_seed": round_seed, "address": address})
    chosen: list[int] = []
    seen: set[int] = set()
    counter = 0
    while len(chosen) < batch_size:
        digest = sha256(base + counter.to_bytes(8, "little"))
        counter += 1
        for k in range(0, 32, 8):
            i = int.from_bytes(digest[k : k + 8], "little") % train_size
            if i not in seen and len(chosen) < batch_size:
                seen.add(i)
                chosen.append(i)
    return chosen


def _sorted_pairs(submitted: SubmittedHashes) -> list[tuple[str, str]]:
    """Every (address, payload hash) submitted, sorted: a mapping, or pairs that may repeat an
    address (a miner that submitted twice); either way the order they arrived in is gone."""
    pairs = submitted.items() if isinstance(submitted, Mapping) else submitted
    return sorted((str(a), str(h)) for a, h in pairs)


def spot_check_seed(round_seed: bytes, beacon: bytes) -> bytes:
    """Seed of the spot-check sample: the round seed and the beacon. The set of submissions is
    deliberately not in it: each miner is drawn from (seed, its address) alone, so which other
    submissions a primary freezes never changes whether one miner is drawn."""
    return hash_object({"domain": "pot/spot-check/v2", "round_seed": round_seed, "beacon": beacon})


def uniform_draw(seed: bytes, key: bytes) -> float:
    """A uniform number in [0, 1) from ``seed`` and ``key`` (SHA-256, the first 8 bytes)."""
    return int.from_bytes(sha256(seed + key)[:8], "little") / 2**64


def select_spot_checks(seed: bytes, addresses: Iterable[str], rate: float) -> list[str]:
    """Addresses chosen for re-computation: each independently with probability ``rate``."""
    if not 0.0 <= rate <= 1.0:
        raise TrainingError(f"spot-check rate must be in [0, 1], got {rate}")
    chosen = []
    for address in sorted(set(addresses)):
        if uniform_draw(seed, address.encode()) < rate:
            chosen.append(address)
    return chosen
