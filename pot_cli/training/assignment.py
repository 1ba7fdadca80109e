"""Deterministic work assignment and spot-check sampling, from hashes anyone can recompute.

* :func:`assign_batch`: the training samples miner ``address`` must use in the round with seed
  ``round_seed`` (``s_h = H(block h-1)``). Different miners get different samples; anyone can
  recompute any miner's batch.
* :func:`spot_check_seed` / :func:`select_spot_checks`: which submissions a validator
  re-computes. The seed hashes the round seed, the frozen set of submissions (every payload
  hash, duplicates included, sorted) and a **beacon**: a value nobody knows before the
  cut-off. The network's beacon is the primary's Ed25519 signature over the frozen set
  (deterministic: for a given set the primary cannot grind it, and it is secret until
  published). Without the beacon, a miner that sees the other payloads before submitting could
  grind its own (resubmit small variations) until the hash leaves it out of the sample.

  **Limit:** the primary chooses *which* set to freeze. A Byzantine primary colluding with a
  forger can sign several candidate sets in private (leaving a submission out, or picking one
  of several distinct gradients the forger hands it) and freeze one that leaves the forger out
  of the sample. The codec's canonical encoding removes the free variants (one gradient, one
  payload), but distinct gradients remain. The fix belongs to the network node: a beacon no
  single validator controls once the set is frozen (a unique threshold signature of f+1
  validators over it, or a commit-reveal among them).

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


def cut_off_body(submitted: SubmittedHashes) -> dict[str, object]:
    """What the primary signs at the cut-off (its signature is the round's beacon)."""
    return {"submissions": _sorted_pairs(submitted)}


def spot_check_seed(round_seed: bytes, submitted: SubmittedHashes, beacon: bytes = b"") -> bytes:
    """Seed of the spot-check sample: the round seed, every (address, payload hash) submitted,
    duplicates included, in sorted order, and the beacon (see the module docstring)."""
    return hash_object(
        {
            "domain": "pot/spot-check",
            "round_seed": round_seed,
            "submissions": _sorted_pairs(submitted),
            "beacon": beacon,
        }
    )


def select_spot_checks(seed: bytes, addresses: Iterable[str], rate: float) -> list[str]:
    """Addresses chosen for re-computation: each independently with probability ``rate``."""
    if not 0.0 <= rate <= 1.0:
        raise TrainingError(f"spot-check rate must be in [0, 1], got {rate}")
    chosen = []
    for address in sorted(set(addresses)):
        draw = int.from_bytes(sha256(seed + address.encode())[:8], "little") / 2**64
        if draw < rate:
            chosen.append(address)
    return chosen
