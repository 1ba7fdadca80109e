"""The spot-check beacon: one hash onion per validator, every layer revealed once, bound to the
round's frozen set. No miner can predict the sample when it submits and no validator, the
primary included, can choose it.

Each genesis validator commits to ``H^N(seed)`` (``Genesis.validators[i].beacon_commit``, ``N``
= ``Genesis.beacon_rounds``), where ``seed`` is derived from its private key and the chain id
(:func:`onion_seed`). Its reveal for height ``h`` is the layer ``x_h = H^(N-h)(seed)``: anyone
checks ``H^h(x_h) == commit`` (or, faster, ``H^(h-j)(x_h) == x_j`` against a layer already
checked, :class:`RevealCheck`). A reveal is therefore **fixed at genesis**: a validator cannot
pick it, only withhold it; and nobody can compute ``x_h`` before its owner reveals it (a
preimage of SHA-256).

The round (``protocol/app.py`` carries it out):

1. once the set is frozen and its fetch phase is over (every payload in, or the fetch deadline
   passed and the missing ones marked ``late``), the primary **announces** it: the (miner,
   payload hash) pairs, the late miners, and its own reveal signed over their digest
   (:func:`frozen_digest`, :func:`make_reveal`);
2. a backup reveals (signed over that digest) only once its own censorship window has passed,
   the announced set keeps every submission it held by then, and it holds every payload the
   block will judge (it fetches what it lacks first); for **one** set per height, whatever
   the view;
3. the primary proposes with the reveals it has: with all ``n`` the beacon is
   :func:`beacon_value` of them and the spot-check sample follows from it; with any missing
   the round **falls back to re-computing every submission** (``full_check``), as it does
   past the onion's last layer.

Why the sample cannot be steered: honest reveals exist only after the set and its late marks
are fixed and its payloads are with the revealers, and only for that set, so neither a miner
nor the primary knows the beacon while either can still change the set or withhold a payload;
the sample draws each miner independently (``training.assignment.select_spot_checks``), so
adding or dropping other submissions never changes whether one miner is drawn; withholding a
reveal only turns the round into a full check, which never helps a forger. The remaining
bias: none on who is drawn; a Byzantine primary (or one withheld reveal) can only make a round
cost a full re-compute. Limits: past ``beacon_rounds`` heights every round is a full check
until the validators publish new commits, and a validator that loses its memory of which set
it revealed for (a crash without persistence) could reveal twice (only useful to an adversary
if every honest validator did so for the same height).

Pure functions and a memo (:class:`RevealCheck`): no clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pot_cli.crypto import Identity, hash_object, hash_object_hex, sha256, verify_signed
from pot_cli.errors import PotError
from pot_cli.protocol.genesis import MAX_BEACON_ROUNDS

ONION_DOMAIN = "pot/beacon-onion/v1"
REVEAL_DOMAIN = "pot/beacon-reveal/v1"
BEACON_DOMAIN = "pot/beacon/v1"
LAYER_SIZE = 32
CHECKPOINT_EVERY = 1024


class BeaconError(PotError):
    """A reveal or beacon input is unusable (the text says why)."""


def onion_seed(identity: Identity, chain_id: str) -> bytes:
    """The secret innermost layer of a validator's onion for one chain."""
    return identity.derive_secret(f"{ONION_DOMAIN}/{chain_id}")


def _peel(x: bytes, times: int) -> bytes:
    for _ in range(times):
        x = sha256(x)
    return x


class Onion:
    """A validator's hash onion: layer ``k`` is ``H^k(seed)``; the commit is layer ``rounds``
    and the reveal for height ``h`` is layer ``rounds - h``. Checkpoints every
    :data:`CHECKPOINT_EVERY` layers make a reveal cost at most that many hashes."""

    def __init__(self, seed: bytes, rounds: int) -> None:
        if not 1 <= rounds <= MAX_BEACON_ROUNDS:
            raise BeaconError(f"beacon rounds must be in [1, {MAX_BEACON_ROUNDS}], got {rounds}")
        self.rounds = rounds
        self._checkpoints: list[bytes] = []
        x = seed
        for k in range(rounds + 1):
            if k % CHECKPOINT_EVERY == 0:
                self._checkpoints.append(x)
            if k < rounds:
                x = sha256(x)
        self.commit = x

    def layer(self, k: int) -> bytes:
        base = k // CHECKPOINT_EVERY
        return _peel(self._checkpoints[base], k - base * CHECKPOINT_EVERY)

    def reveal(self, height: int) -> bytes:
        if not 1 <= height <= self.rounds:
            raise BeaconError(f"no reveal for height {height}: the onion has {self.rounds}")
        return self.layer(self.rounds - height)


def onion_commit(identity: Identity, chain_id: str, rounds: int) -> str:
    """The hex commit a genesis records for this validator."""
    return Onion(onion_seed(identity, chain_id), rounds).commit.hex()


class RevealCheck:
    """Checks reveals against genesis commits, remembering the highest layer checked per commit
    (a memo: the answer is the same with or without it, only faster)."""

    def __init__(self) -> None:
        self._known: dict[bytes, tuple[int, bytes]] = {}

    def valid(self, commit: bytes, rounds: int, height: int, value: bytes) -> bool:
        if len(value) != LAYER_SIZE or not 1 <= height <= rounds:
            return False
        known = self._known.get(commit)
        if known is not None and known[0] == height:
            return known[1] == value
        if known is not None and known[0] < height:
            ok = _peel(value, height - known[0]) == known[1]
        else:
            ok = _peel(value, height) == commit
        if ok and (known is None or known[0] < height):
            self._known[commit] = (height, value)
        return ok


# ----------------------------------------------------------------------------- reveals


def frozen_digest(pairs: Iterable[tuple[str, str]], late: Iterable[str] = ()) -> str:
    """The digest a reveal is bound to: the frozen (miner, payload hash) pairs, sorted, and the
    miners among them the primary marks ``late`` (payload missing at its fetch deadline). The
    late set is fixed before anyone reveals, so a miner cannot withhold its payload once it
    has learnt that it is drawn."""
    return hash_object_hex(
        {
            "frozen": sorted((str(a), str(h)) for a, h in pairs),
            "late": sorted(str(a) for a in late),
        }
    )


def _body(digest: str, value: bytes) -> dict[str, str]:
    return {"frozen": digest, "reveal": value.hex()}


@dataclass(frozen=True)
class Reveal:
    """Validator ``validator``'s layer for ``height``, signed over the frozen set's digest."""

    validator: int
    height: int
    digest: str
    value: bytes
    signature: bytes

    def to_dict(self) -> dict[str, str]:
        return {"reveal": self.value.hex(), "signature": self.signature.hex()}


def make_reveal(
    identity: Identity,
    index: int,
    onion: Onion,
    chain_id: str,
    height: int,
    digest: str,
) -> Reveal:
    value = onion.reveal(height)
    sig = identity.sign_message(REVEAL_DOMAIN, chain_id, height, _body(digest, value))
    return Reveal(index, height, digest, value, sig)


def check_reveal(
    public_key: bytes,
    commit: bytes,
    rounds: int,
    chain_id: str,
    reveal: Reveal,
    check: RevealCheck,
) -> str:
    """Why ``reveal`` is not this validator's layer bound to its digest ("" when it is)."""
    body = _body(reveal.digest, reveal.value)
    if not verify_signed(
        public_key, reveal.signature, REVEAL_DOMAIN, chain_id, reveal.height, body
    ):
        return f"validator {reveal.validator}'s reveal signature does not verify"
    if not check.valid(commit, rounds, reveal.height, reveal.value):
        return f"validator {reveal.validator}'s reveal is not its onion's layer {reveal.height}"
    return ""


def parse_reveal(obj: object, index: int, height: int, digest: str) -> Reveal | None:
    """A reveal as a proposal carries it (``None`` for a missing one); raises
    :class:`BeaconError` on anything else."""
    if obj is None:
        return None
    if not isinstance(obj, dict) or set(obj) != {"reveal", "signature"}:
        raise BeaconError(f"reveals[{index}]: expected null or exactly 'reveal', 'signature'")
    value, sig = obj["reveal"], obj["signature"]
    for name, text, size in (("reveal", value, LAYER_SIZE), ("signature", sig, 64)):
        if (
            not isinstance(text, str)
            or len(text) != 2 * size
            or any(c not in "0123456789abcdef" for c in text)
        ):
            raise BeaconError(f"reveals[{index}].{name}: expected {2 * size} lowercase hex")
    assert isinstance(value, str) and isinstance(sig, str)
    return Reveal(index, height, digest, bytes.fromhex(value), bytes.fromhex(sig))


def beacon_value(chain_id: str, height: int, reveals: Sequence[bytes | None]) -> bytes:
    """The 32-byte beacon of a round from its validators' layers (``None``: withheld)."""
    return hash_object(
        {
            "domain": BEACON_DOMAIN,
            "chain_id": chain_id,
            "height": int(height),
            "reveals": [None if r is None else r.hex() for r in reveals],
        }
    )


# ---------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class BeaconMessage:
    """What validators exchange during a round: a reveal, and with the primary's announcement
    the frozen set its digest names (``frozen``: sorted (miner, payload hash) pairs)."""

    reveal: Reveal
    frozen: tuple[tuple[str, str], ...] | None = None
    late: tuple[str, ...] = ()  # with ``frozen``: the miners marked late

    def to_dict(self) -> dict[str, object]:
        r = self.reveal
        return {
            "validator": r.validator,
            "height": r.height,
            "digest": r.digest,
            "reveal": r.value.hex(),
            "signature": r.signature.hex(),
            "frozen": None if self.frozen is None else [list(p) for p in self.frozen],
            "late": list(self.late),
        }


_MESSAGE_KEYS = frozenset(
    {"validator", "height", "digest", "reveal", "signature", "frozen", "late"}
)


def _int(value: object, what: str, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= hi:
        raise BeaconError(f"{what}: expected an integer in [0, {hi}]")
    return value


def parse_beacon_message(obj: object, validators: int, max_pairs: int) -> BeaconMessage:
    """Strictly parse an untrusted beacon message (signatures are checked by the caller);
    raises :class:`BeaconError`."""
    if not isinstance(obj, dict) or set(obj) != _MESSAGE_KEYS:
        raise BeaconError(f"beacon message: expected exactly the fields {sorted(_MESSAGE_KEYS)}")
    index = _int(obj["validator"], "beacon message.validator", validators - 1)
    height = _int(obj["height"], "beacon message.height", MAX_BEACON_ROUNDS)
    digest = obj["digest"]
    if (
        not isinstance(digest, str)
        or len(digest) != 64
        or any(c not in "0123456789abcdef" for c in digest)
    ):
        raise BeaconError("beacon message.digest: expected 64 lowercase hex characters")
    reveal = parse_reveal(
        {"reveal": obj["reveal"], "signature": obj["signature"]}, index, height, digest
    )
    assert reveal is not None
    frozen_obj, late_obj = obj["frozen"], obj["late"]
    if frozen_obj is None:
        if late_obj != []:
            raise BeaconError("beacon message.late: only an announcement names late miners")
        return BeaconMessage(reveal)
    if not isinstance(frozen_obj, list) or len(frozen_obj) > max_pairs:
        raise BeaconError(f"beacon message.frozen: expected a list of at most {max_pairs} pairs")
    pairs: list[tuple[str, str]] = []
    for i, item in enumerate(frozen_obj):
        if (
            not isinstance(item, (list, tuple))
            or len(item) != 2
            or not all(isinstance(x, str) and 0 < len(x) <= 128 for x in item)
        ):
            raise BeaconError(f"beacon message.frozen[{i}]: expected [miner, payload hash]")
        pairs.append((item[0], item[1]))
    if pairs != sorted(set(pairs)) or len({a for a, _ in pairs}) != len(pairs):
        raise BeaconError("beacon message.frozen: expected sorted pairs, one per miner")
    miners = {a for a, _ in pairs}
    if (
        not isinstance(late_obj, list)
        or not all(isinstance(a, str) and a in miners for a in late_obj)
        or late_obj != sorted(set(late_obj))
    ):
        raise BeaconError("beacon message.late: expected sorted, distinct frozen miners")
    if frozen_digest(pairs, late_obj) != digest:
        raise BeaconError("beacon message.frozen: does not hash to the digest")
    return BeaconMessage(reveal, tuple(pairs), tuple(late_obj))
