"""One round of Proof of Training as a sans-IO state machine: events in, actions out.

:class:`RoundMachine` is THE round: the in-process simulation (``sim/pot.py``) drives it today
and the networked validator will drive it tomorrow. It never reads a clock, a socket or a
random generator: the host passes ``now`` (an integer in its own time units) inside the events,
runs the work the actions ask for (fetching a payload, running ``verify_round``) and feeds the
results back as events. The same events in the same order give the same actions, on every
validator.

Phases: ``open`` → ``frozen`` → ``verifying`` → ``verified`` → ``committed``.

Events (frozen dataclasses): :class:`SubmissionReceived`, :class:`Tick`,
:class:`PayloadFetched`, :class:`VerificationFinished`, :class:`BlockCommitted`.
Actions: :class:`SubmissionRefused`, :class:`PayloadRefused`, :class:`FreezeSet`,
:class:`FetchPayload`, :class:`StartVerification`, :class:`RoundVerified`, :class:`Committed`.

Rules:

* **Time.** Every event that carries ``now`` first advances the machine's clock to it (never
  backwards), exactly as a :class:`Tick` would: at ``now >= deadline`` the set of kept
  submissions freezes (:class:`FreezeSet`, sorted by address), a :class:`FetchPayload` is
  emitted for every frozen commitment whose bytes have not arrived, and once every payload is
  present :class:`StartVerification` hands the frozen submissions (sorted by address) to the
  host. At ``now >= fetch_deadline`` (default: the deadline) the payloads still missing are
  refused ``late`` and verification starts without them.
* **Intake** of a :class:`SubmissionReceived`, cheapest check first: a byte-identical replay of
  a kept submission (same miner, payload hash and signature) is *ignored* (if it carries the
  bytes the kept one still lacks, they are taken, after the size and hash checks); after the
  freeze ``late``; a commitment that names another chain, height or model ``wrong-chain`` /
  ``wrong-height`` / ``wrong-model``; ``unknown-miner`` (no public key), ``ejected``,
  ``not-staked`` (has a key, not ejected, not in ``admitted``); ``malformed`` fields (a payload
  hash that is not 64 lowercase hex digits, a payload that is not bytes); ``oversize`` (payload
  longer than ``max_payload_bytes``: refused before it is hashed); ``bad-signature`` (the
  commitment does not verify under the miner's key); a second, *different* commitment signed by
  a kept miner is ``duplicate`` (the first is kept: the miner signed two things, its own fault);
  ``round-full`` once ``max_submissions`` are kept; finally the bytes, when attached, must hash
  to the signed payload hash (``bad-signature`` otherwise). A commitment without its bytes
  (``payload=None``) is kept and its bytes fetched at the freeze; fetched bytes are checked
  against the committed hash (:class:`PayloadRefused` otherwise, and the commitment keeps
  waiting for the right bytes until the fetch deadline).
* **Refusals are actions, never exceptions** and never verdicts: a :class:`SubmissionRefused`
  answers one message and changes nothing that is kept, so a replayed or tampered copy of an
  honest miner's submission can never get that miner rejected. The codes are those of
  :data:`pot_cli.protocol.block.REJECT_CODES` plus ``round-full`` (intake only). The one
  refusal that concerns a *frozen* submission, a payload missing at the fetch deadline
  (``late``), is also kept in :attr:`RoundMachine.refused` for the block.
* **Bounded:** at most one kept submission per miner and ``max_submissions`` in all; payloads at
  most ``max_payload_bytes``; refused messages leave nothing behind.

The caller builds the block from :attr:`RoundMachine.commitments`, :attr:`RoundMachine.refused`
and the verification result (:class:`RoundVerified`, :attr:`RoundMachine.verification`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pot_cli.crypto import sha256_hex
from pot_cli.errors import PotError
from pot_cli.protocol.beacon import BeaconMessage
from pot_cli.protocol.block import MAX_SUBMISSIONS
from pot_cli.protocol.commitments import verify_commitment
from pot_cli.training.verification import RoundVerification, Submission

PHASES = ("open", "frozen", "verifying", "verified", "committed")
ROUND_FULL = "round-full"
# Every code a SubmissionRefused / PayloadRefused may carry: the block's REJECT_CODES that
# intake decides, and ``round-full`` (intake only: never recorded in a block).
REFUSAL_CODES = (
    "late",
    "wrong-chain",
    "wrong-height",
    "wrong-model",
    "unknown-miner",
    "ejected",
    "not-staked",
    "malformed",
    "oversize",
    "bad-signature",
    "duplicate",
    ROUND_FULL,
)

_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)


class RoundError(PotError):
    """Invalid round parameters (events never raise: they are refused or ignored)."""


# ------------------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class RoundParams:
    """What the round is, fixed when it opens (the previous block and the ledger decide it).

    ``miner_keys``: address -> Ed25519 public key of every miner with an account (another
    address is ``unknown-miner``); ``admitted``: the miners the ledger admits this round (staked,
    not ejected); ``ejected``: the ejected ones, so that their refusal says so (``not-staked``
    otherwise). ``deadline`` and ``fetch_deadline`` are in the host's time units.
    """

    chain_id: str
    height: int
    model_hash: str
    round_seed: bytes
    deadline: int
    max_payload_bytes: int
    miner_keys: Mapping[str, bytes]
    admitted: frozenset[str]
    ejected: frozenset[str] = frozenset()
    fetch_deadline: int | None = None  # None: the deadline (no grace for missing bytes)
    max_submissions: int = MAX_SUBMISSIONS

    def __post_init__(self) -> None:
        if self.fetch_deadline is None:
            object.__setattr__(self, "fetch_deadline", self.deadline)
        if self.fetch_deadline < self.deadline:  # type: ignore[operator]
            raise RoundError(
                f"fetch deadline {self.fetch_deadline} is before the deadline {self.deadline}"
            )
        if self.max_submissions < 1:
            raise RoundError(f"max_submissions must be >= 1, got {self.max_submissions}")
        if self.max_payload_bytes < 1:
            raise RoundError(f"max_payload_bytes must be >= 1, got {self.max_payload_bytes}")

    @property
    def payload_deadline(self) -> int:
        """When missing payloads count as late (``fetch_deadline``, resolved)."""
        assert self.fetch_deadline is not None
        return self.fetch_deadline


# ---------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class SubmissionReceived:
    """A miner's signed commitment, with its payload bytes or without them (``None``: seen
    before the bytes). ``chain_id`` / ``height`` / ``model_hash``: what the commitment message
    names, when the transport carries them (``None``: this round's; the signature decides)."""

    miner: str
    payload_hash: str
    commitment_sig: bytes
    payload: bytes | None
    now: int
    chain_id: str | None = None
    height: int | None = None
    model_hash: str | None = None


@dataclass(frozen=True)
class Tick:
    now: int


@dataclass(frozen=True)
class PayloadFetched:
    """Bytes the host fetched for a committed payload hash (from anyone: they are checked)."""

    payload_hash: str
    payload: bytes
    now: int


@dataclass(frozen=True)
class VerificationFinished:
    """The result of the host's verification job (``training.verification.verify_round``)."""

    job_id: str
    verification: RoundVerification


@dataclass(frozen=True)
class BlockCommitted:
    """Consensus made the round's block final (from any phase: the chain has moved on)."""

    height: int
    block_hash: str


Event = SubmissionReceived | Tick | PayloadFetched | VerificationFinished | BlockCommitted


# --------------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class SubmissionRefused:
    """An answer to one message; nothing kept changes. ``code`` is in :data:`REFUSAL_CODES`."""

    miner: str
    code: str
    reason: str


@dataclass(frozen=True)
class PayloadRefused:
    """Fetched bytes that are not the committed payload (the commitment keeps waiting)."""

    payload_hash: str
    code: str
    reason: str


@dataclass(frozen=True)
class FreezeSet:
    """The frozen set: every kept (miner, payload hash), sorted by address (the primary
    announces it with its beacon reveal: ``protocol/beacon.py``)."""

    frozen: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class FetchPayload:
    payload_hash: str
    miner: str


@dataclass(frozen=True)
class StartVerification:
    """Verify these submissions (sorted by address, payloads present, hashes checked) and feed
    the result back as :class:`VerificationFinished` with the same ``job_id``."""

    job_id: str
    submissions: tuple[Submission, ...]


@dataclass(frozen=True)
class RoundVerified:
    job_id: str
    verification: RoundVerification


@dataclass(frozen=True)
class Committed:
    height: int
    block_hash: str


@dataclass(frozen=True)
class BroadcastBeacon:
    """Send this validator's beacon message (an announcement of the frozen set with its
    reveal, or a reveal) to every other validator (``PotApp.beacon_message`` takes it)."""

    message: BeaconMessage


@dataclass(frozen=True)
class RelaySubmission:
    """A miner's signed commitment this validator has just kept: send it (without the payload,
    which peers fetch at the freeze if they lack it) to every other validator, so that a miner
    that reaches only some validators cannot split them on what the round holds."""

    miner: str
    public_key: bytes
    payload_hash: str
    commitment_sig: bytes
    height: int
    model_hash: str


Action = (
    SubmissionRefused
    | PayloadRefused
    | FreezeSet
    | FetchPayload
    | StartVerification
    | RoundVerified
    | Committed
    | BroadcastBeacon
    | RelaySubmission
)


@dataclass(frozen=True)
class Commitment:
    """A kept submission's commitment, as the block records it."""

    miner: str
    payload_hash: str
    commitment_sig: bytes


@dataclass
class _Kept:
    payload_hash: str
    sig: bytes
    payload: bytes | None


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# --------------------------------------------------------------------------------- machine


class RoundMachine:
    """The round at one height (see the module docstring). Drive it with :meth:`step`."""

    def __init__(self, params: RoundParams) -> None:
        self._p = params
        self._phase = "open"
        self._now: int | None = None
        self._kept: dict[str, _Kept] = {}
        self._frozen: tuple[tuple[str, str], ...] | None = None
        self._refused: dict[str, str] = {}  # frozen miners refused after the freeze -> code
        self._job_id = f"{params.chain_id}/{params.height}/verify"
        self._verification: RoundVerification | None = None
        self._block_hash: str | None = None

    # ----------------------------------------------------------------------- read-only views

    @property
    def params(self) -> RoundParams:
        return self._p

    @property
    def phase(self) -> str:
        return self._phase

    @property
    def now(self) -> int | None:
        return self._now

    @property
    def frozen(self) -> tuple[tuple[str, str], ...] | None:
        """The frozen (miner, payload hash) pairs, sorted; ``None`` while open."""
        return self._frozen

    @property
    def commitments(self) -> tuple[Commitment, ...]:
        """Every kept commitment, sorted by address (after the freeze: the frozen ones)."""
        return tuple(Commitment(m, k.payload_hash, k.sig) for m, k in sorted(self._kept.items()))

    @property
    def refused(self) -> Mapping[str, str]:
        """Frozen miners refused after the freeze (payload missing at the fetch deadline:
        ``late``), miner -> code."""
        return dict(self._refused)

    @property
    def missing(self) -> tuple[str, ...]:
        """Kept miners whose payload bytes have not arrived (and were not given up on)."""
        return tuple(
            m for m, k in sorted(self._kept.items()) if k.payload is None and m not in self._refused
        )

    @property
    def job_id(self) -> str:
        return self._job_id

    @property
    def verification(self) -> RoundVerification | None:
        return self._verification

    @property
    def block_hash(self) -> str | None:
        return self._block_hash

    # ------------------------------------------------------------------------------ stepping

    def step(self, event: Event) -> list[Action]:
        """Handle one event; returns the actions it causes, in order. Never raises for an
        event's content: what is wrong with it becomes a refusal or is ignored."""
        if isinstance(event, SubmissionReceived):
            return self._on_submission(event)
        if isinstance(event, Tick):
            return self._advance(event.now) if _is_int(event.now) else []
        if isinstance(event, PayloadFetched):
            return self._on_fetched(event)
        if isinstance(event, VerificationFinished):
            return self._on_verified(event)
        if isinstance(event, BlockCommitted):
            return self._on_committed(event)
        return []

    # ---------------------------------------------------------------------------- the clock

    def _advance(self, now: int) -> list[Action]:
        self._now = now if self._now is None else max(self._now, now)
        out: list[Action] = []
        if self._phase == "open" and self._now >= self._p.deadline:
            out += self._freeze()
        if self._phase == "frozen" and self._now >= self._p.payload_deadline:
            for m in self.missing:
                self._refused[m] = "late"
                out.append(
                    SubmissionRefused(m, "late", "payload not delivered by the fetch deadline")
                )
            out += self._start_verification()
        return out

    def _freeze(self) -> list[Action]:
        self._phase = "frozen"
        self._frozen = tuple((m, k.payload_hash) for m, k in sorted(self._kept.items()))
        out: list[Action] = [FreezeSet(self._frozen)]
        missing = self.missing
        out += [FetchPayload(self._kept[m].payload_hash, m) for m in missing]
        if not missing:
            out += self._start_verification()
        return out

    def _start_verification(self) -> list[Action]:
        assert self._frozen is not None
        self._phase = "verifying"
        subs = []
        for m, h in self._frozen:
            payload = self._kept[m].payload
            if m not in self._refused and payload is not None:
                subs.append(Submission(m, payload, h))
        return [StartVerification(self._job_id, tuple(subs))]

    def _after_payload(self) -> list[Action]:
        """Verification starts as soon as a frozen set has all its payloads."""
        if self._phase == "frozen" and not self.missing:
            return self._start_verification()
        return []

    # ------------------------------------------------------------------------------- intake

    def _check_bytes(self, payload: bytes, payload_hash: str) -> tuple[str, str] | None:
        """(code, reason) when ``payload`` is not the committed payload; None when it is."""
        if len(payload) > self._p.max_payload_bytes:
            return "oversize", (
                f"payload of {len(payload)} bytes exceeds the {self._p.max_payload_bytes}-byte "
                "limit"
            )
        if sha256_hex(payload) != payload_hash:
            return "bad-signature", "the payload's hash is not the signed payload hash"
        return None

    def _take_bytes(self, kept: _Kept, payload: bytes | None, miner: str) -> list[Action]:
        """A replay of a kept commitment: take its bytes if the kept one still lacks them."""
        if (
            payload is None
            or kept.payload is not None
            or miner in self._refused
            or self._phase not in ("open", "frozen")
        ):
            return []
        bad = self._check_bytes(payload, kept.payload_hash)
        if bad is not None:
            return [SubmissionRefused(miner, *bad)]
        kept.payload = payload
        return self._after_payload()

    def _on_submission(self, ev: SubmissionReceived) -> list[Action]:
        miner = ev.miner if isinstance(ev.miner, str) else ""
        if not _is_int(ev.now):
            return [SubmissionRefused(miner, "malformed", "the event carries no valid time")]
        payload = ev.payload
        if isinstance(payload, bytearray):
            payload = bytes(payload)
        if payload is not None and not isinstance(payload, bytes):
            return [SubmissionRefused(miner, "malformed", "the payload is not bytes")]
        out = self._advance(ev.now)
        p = self._p
        kept = self._kept.get(miner)
        same = kept is not None and kept.payload_hash == ev.payload_hash
        if kept is not None and same and kept.sig == ev.commitment_sig:
            return out + self._take_bytes(kept, payload, miner)  # a replay: ignored
        refusal = self._intake_refusal(ev, miner, payload)
        if refusal is not None:
            return [*out, SubmissionRefused(miner, *refusal)]
        key = p.miner_keys[miner]
        if not verify_commitment(
            key, ev.commitment_sig, p.chain_id, p.height, p.model_hash, ev.payload_hash
        ):
            reason = "the commitment does not verify under the miner's key"
            return [*out, SubmissionRefused(miner, "bad-signature", reason)]
        if kept is not None:
            if kept.payload_hash == ev.payload_hash:  # the same commitment, signed again
                return out + self._take_bytes(kept, payload, miner)
            return [
                *out,
                SubmissionRefused(
                    miner,
                    "duplicate",
                    f"a second, different submission in round {p.height} (the first is kept)",
                ),
            ]
        if len(self._kept) >= p.max_submissions:
            return [
                *out,
                SubmissionRefused(
                    miner, ROUND_FULL, f"the round keeps at most {p.max_submissions} submissions"
                ),
            ]
        if payload is not None:
            bad = self._check_bytes(payload, ev.payload_hash)
            if bad is not None:
                return [*out, SubmissionRefused(miner, *bad)]
        self._kept[miner] = _Kept(ev.payload_hash, ev.commitment_sig, payload)
        return out

    def _intake_refusal(
        self, ev: SubmissionReceived, miner: str, payload: bytes | None
    ) -> tuple[str, str] | None:
        """The checks that need neither the signature nor the payload's hash, cheapest first."""
        p = self._p
        if self._phase != "open":
            return "late", f"the round's set froze at {p.deadline}"
        if ev.chain_id is not None and ev.chain_id != p.chain_id:
            return "wrong-chain", "the commitment names another chain"
        if ev.height is not None and ev.height != p.height:
            return "wrong-height", f"the commitment names height {ev.height}, not {p.height}"
        if ev.model_hash is not None and ev.model_hash != p.model_hash:
            return "wrong-model", "the commitment names another model than the round's"
        if miner not in p.miner_keys:
            return "unknown-miner", "no account with a public key for this address"
        if miner in p.ejected:
            return "ejected", "the miner was ejected for a proven forgery"
        if miner not in p.admitted:
            return "not-staked", "the miner is not admitted this round (stake)"
        if not isinstance(ev.payload_hash, str) or not _HEX64.fullmatch(ev.payload_hash):
            return "malformed", "the payload hash is not 64 lowercase hexadecimal digits"
        if payload is not None and len(payload) > p.max_payload_bytes:
            return "oversize", (
                f"payload of {len(payload)} bytes exceeds the {p.max_payload_bytes}-byte limit"
            )
        return None

    # ------------------------------------------------------------------------ fetched bytes

    def _on_fetched(self, ev: PayloadFetched) -> list[Action]:
        if not _is_int(ev.now):
            return []
        out = self._advance(ev.now)
        if self._phase not in ("open", "frozen"):
            return out
        waiting = [
            k
            for m, k in sorted(self._kept.items())
            if k.payload is None and k.payload_hash == ev.payload_hash and m not in self._refused
        ]
        if not waiting:
            return out  # nobody waits for these bytes: ignored
        payload = bytes(ev.payload) if isinstance(ev.payload, bytearray) else ev.payload
        if not isinstance(payload, bytes):
            return [*out, PayloadRefused(ev.payload_hash, "malformed", "the payload is not bytes")]
        bad = self._check_bytes(payload, ev.payload_hash)
        if bad is not None:
            return [*out, PayloadRefused(ev.payload_hash, *bad)]
        for k in waiting:
            k.payload = payload
        return out + self._after_payload()

    # --------------------------------------------------------------------- results, commit

    def _on_verified(self, ev: VerificationFinished) -> list[Action]:
        if self._phase != "verifying" or ev.job_id != self._job_id:
            return []
        self._verification = ev.verification
        self._phase = "verified"
        return [RoundVerified(self._job_id, ev.verification)]

    def _on_committed(self, ev: BlockCommitted) -> list[Action]:
        if self._phase == "committed" or ev.height != self._p.height:
            return []
        self._phase = "committed"
        self._block_hash = ev.block_hash
        return [Committed(self._p.height, ev.block_hash)]
