"""The PoT application that PBFT replicates: one block per round, PBFT sequence number = height.

:class:`PotApp` implements :class:`pot_cli.consensus.app.Application`. It holds the replicated
:class:`~.derive.ChainState` (height, head block hash, ledger, model parameters, optimizer
state, the last block's accepted gradients) and, beside it, this validator's own view of the
round in progress: a :class:`~.round.RoundMachine` fed by :meth:`PotApp.submit`, a payload
store and a registry of miners' public keys. Sans-IO like the rest of ``protocol/``: every call
that depends on time takes the host's ``now``.

The round at this validator
---------------------------
Round ``h = height + 1`` opens at the first ``now`` this app sees after executing block
``h - 1`` (``opened_at``); its deadline is ``opened_at + round_time``, its fetch deadline
``fetch_grace`` later. Submissions for ``h + 1`` (a miner that heard of block ``h`` first) wait
in a bounded buffer, one per miner, until round ``h + 1`` opens. Round times are local: each
validator's deadline is its own, and ``censor_grace`` absorbs the skew (below).

Miners' keys: genesis accounts hold addresses, not keys, so a submission carries the miner's
Ed25519 public key. It is registered when it derives the address
(``crypto.address_from_public_key``) of an account the ledger knows; the round machine's
``miner_keys`` is that (live) registry, so an address nobody announced a key for is
``unknown-miner``. Keys are self-certifying, so the registry is a cache, not replicated state.

Proposal format
---------------
``{"block": Block.to_dict(), "cut_off": {"validator": i, "signature": hex}}``. The block's
``beacon`` field holds 32 bytes and an Ed25519 signature is 64, so the block records
``sha256(signature)`` (the spot-check seed uses it) and the signature travels beside the block,
naming the genesis validator that made it (verified against that validator's key). The app does
not know PBFT's view, so it cannot insist on *the* primary's signature: any genesis validator's
cut-off over the block's frozen set is accepted. The soundness issue replaces this beacon with
one no single validator controls (``commitments.sign_cut_off`` / ``verify_cut_off``).

Primary and backups
-------------------
* ``has_pending(h, now)``: True once round ``h``'s deadline has passed at this validator (it
  arms PBFT's view-change timer; ``propose`` and ``validate`` only ever concern ``height + 1``).
* ``propose(h, now)``: once the machine has frozen the set and its payloads are in (or the
  fetch deadline refused the missing ones ``late``), sign the cut-off, derive the block
  (``derive.derive_round``: verification runs synchronously in this first version) and return
  the proposal; ``None`` until then.
* ``validate(h, proposal, now)``: strict parse, header (chain, height, prev hash, seed, task,
  rule, model before), censorship (below), availability (PENDING while a key or payload is
  missing: :meth:`missing`, :meth:`provide`), then ``derive.rederive_block`` (cut-off,
  commitments, re-verification, verdicts reconciled within the band, the whole block equal,
  ``model_after`` bit for bit). The derivation is a :class:`DerivationJob`: with
  ``sync_derivation=True`` (the default) ``validate`` runs it at once; with ``False`` it answers
  PENDING, the host runs :meth:`DerivationJob.run` in a worker (it holds its own inputs and a
  copy of the ledger), hands the outcome to :meth:`derivation_done` and calls
  ``Replica.resume(now)``. :meth:`take_resume` says when a resume is due (a derivation done,
  a payload provided, the chain advanced past a PENDING future block).
* **Censorship.** A backup refuses a block whose frozen set leaves out a submission it kept at
  or before its own ``deadline - censor_grace``, or marks ``late`` one whose payload it held by
  then. (A miner that signed two different payloads may be frozen with either one.)
* ``execute(h, proposal)``: the cached derivation when this validator validated or proposed
  that very proposal, else :func:`~.derive.settle_committed` (the block's own verdicts, no
  re-compute; the accepted payloads must be here, else :class:`ChainError`); then the ledger
  payout, ``Ledger.check_invariants``, the new head. ``None`` (a null block) advances only the
  height (and the ledger's, with an empty payout).

Snapshots are small JSON: height, head, the ledger, and the model, the optimizer buffers and
the previous round's accepted gradients as SHA-256 hashes of content-addressed blobs (each
tensor's little-endian float32 bytes). The certified snapshot digest covers the hashes, so a
state transfer moves the tensors in chunks, each checked against its hash: ``restore`` of a
snapshot whose blobs are not here lists them in :meth:`missing` and raises (nothing changes),
the host fetches them from peers like payloads (:meth:`payload` serves them, :meth:`provide`
takes them) and the transfer is retried. The blobs of the last few snapshots are kept to serve
peers (and written to the durable payload store).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from pot_cli.consensus.app import Validity
from pot_cli.consensus.messages import snapshot_digest as canonical_snapshot_digest
from pot_cli.crypto import (
    PUBLIC_KEY_SIZE,
    Identity,
    address_from_public_key,
    hash_object_hex,
    sha256_hex,
)
from pot_cli.errors import PotError
from pot_cli.protocol.beacon import (
    BeaconError,
    BeaconMessage,
    Onion,
    Reveal,
    RevealCheck,
    check_reveal,
    frozen_digest,
    make_reveal,
    onion_seed,
    parse_beacon_message,
    parse_reveal,
)
from pot_cli.protocol.block import (
    GENESIS_PREV,
    MAX_SUBMISSIONS,
    Block,
    BlockError,
    Verdict,
    block_hash,
    parse_block,
)
from pot_cli.protocol.commitments import verify_commitment
from pot_cli.protocol.derive import (
    DEFAULT_BAND,
    BeaconProof,
    ChainState,
    Derived,
    DeriveError,
    FrozenSubmission,
    RoundInputs,
    RoundRules,
    beacon_inputs,
    chain_round_seed,
    derive_round,
    genesis_params,
    rederive_block,
    settle_committed,
)
from pot_cli.protocol.genesis import BPS, Genesis
from pot_cli.protocol.ledger import Ledger, RoundPayout
from pot_cli.protocol.round import (
    Action,
    BroadcastBeacon,
    FetchPayload,
    PayloadFetched,
    RelaySubmission,
    RoundMachine,
    RoundParams,
    SubmissionReceived,
    SubmissionRefused,
    Tick,
    VerificationFinished,
)
from pot_cli.training.aggregation import AggregationRule
from pot_cli.training.codec import Compression, max_payload_bytes
from pot_cli.training.optim import OptimizerState, init_optimizer_state
from pot_cli.training.tasks import Task, load_task
from pot_cli.training.verification import VerificationPolicy

SNAPSHOT_VERSION = 2  # 2: tensors as content-addressed blobs (1: inline hex)
KEEP_SNAPSHOT_BLOBS = 4  # snapshots whose blobs this validator keeps serving
# The intake bound on one payload: the codec's exact limit (uncompressed) times this. A signed
# payload the codec refuses as oversize still reaches verification (a penalised verdict).
INTAKE_LIMIT_FACTOR = 4
# Judgements kept per height: a Byzantine primary may send many different proposals; the
# oldest refused ones are forgotten first (the accepted ones are needed by execute).
MAX_JUDGED = 64


class ChainError(PotError):
    """The application cannot apply a committed block (a payload it needs is missing, or its
    re-execution differs: this validator must fetch state)."""


# ------------------------------------------------------------------------------ proposals


@dataclass(frozen=True)
class Proposal:
    """What the primary proposes: the block and the validators' beacon reveals it was derived
    with (genesis order, ``None`` for a withheld one)."""

    block: Block
    reveals: tuple[Reveal | None, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "block": self.block.to_dict(),
            "reveals": [None if r is None else r.to_dict() for r in self.reveals],
        }

    @property
    def digest(self) -> str:
        return hash_object_hex(self.to_dict())


def block_pairs(block: Block) -> tuple[tuple[str, str], ...]:
    """The frozen (miner, payload hash) pairs of a block, sorted."""
    return tuple(sorted((s.miner, s.payload_hash) for s in block.submissions))


def block_late(block: Block) -> frozenset[str]:
    """The miners of a block's frozen set whose payload never arrived (``late``)."""
    return frozenset(s.miner for s in block.submissions if s.verdict == Verdict.rejected("late"))


def parse_proposal(obj: Any, validators: int = 1 << 10) -> Proposal:
    """Strictly parse an untrusted proposal; raises :class:`BlockError`."""
    if not isinstance(obj, dict) or set(obj) != {"block", "reveals"}:
        raise BlockError("proposal: expected exactly the fields 'block' and 'reveals'")
    block = parse_block(obj["block"])
    raw = obj["reveals"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= validators:
        raise BlockError(f"proposal.reveals: expected a list of at most {validators} entries")
    digest = frozen_digest(block_pairs(block), block_late(block))
    try:
        reveals = tuple(parse_reveal(r, i, block.height, digest) for i, r in enumerate(raw))
    except BeaconError as exc:
        raise BlockError(f"proposal.{exc}") from None
    return Proposal(block, reveals)


# ------------------------------------------------------------------------------ the round


@dataclass
class _Intake:
    """This validator's round in progress."""

    height: int
    opened_at: int
    deadline: int
    machine: RoundMachine
    kept: dict[str, tuple[str, int]] = field(default_factory=dict)  # miner -> (hash, when)
    bytes_at: dict[str, int] = field(default_factory=dict)  # payload hash -> when
    # the beacon (protocol/beacon.py): the set this validator revealed for (one per height),
    # the sets primaries announced, the reveals received per set, and when this validator
    # announced its own set as the primary
    revealed: str | None = None
    offers: dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...]]] = field(
        default_factory=dict
    )
    fetching: set[tuple[str, str]] = field(default_factory=set)  # asked for an offer
    rejected_from: set[int] = field(default_factory=set)  # sent an invalid reveal: ignored
    reveals: dict[str, dict[int, Reveal]] = field(default_factory=dict)
    announced_at: int | None = None


@dataclass(frozen=True)
class _Early:
    miner: str
    payload_hash: str
    sig: bytes
    payload: bytes | None
    model_hash: str | None


@dataclass(frozen=True)
class RoundInfo:
    """What a miner reads from a validator to work on the open round."""

    height: int
    model_hash: str
    round_seed: bytes
    params: Mapping[str, torch.Tensor]
    deadline: int


@dataclass(frozen=True)
class DerivationOutcome:
    key: str
    height: int
    derived: Derived | None
    reason: str = ""


@dataclass(frozen=True)
class DerivationJob:
    """A backup's re-derivation of one proposal: everything it needs is inside (a copy of the
    ledger, immutable tensors), so a host may :meth:`run` it in a worker thread or process."""

    key: str
    rules: RoundRules
    state: ChainState
    inputs: RoundInputs
    miner_keys: Mapping[str, bytes]
    proposal: Proposal
    check: RevealCheck = field(default_factory=RevealCheck, compare=False)

    def run(self) -> DerivationOutcome:
        try:
            derived = rederive_block(
                self.rules,
                self.state,
                self.inputs,
                self.miner_keys,
                self.proposal.block,
                BeaconProof(self.proposal.reveals, self.check),
            )
        except PotError as exc:
            return DerivationOutcome(self.key, self.inputs.height, None, str(exc))
        return DerivationOutcome(self.key, self.inputs.height, derived)


@dataclass(frozen=True)
class _Judgement:
    valid: bool
    reason: str = ""
    derived: Derived | None = None


def _copy_ledger(ledger: Ledger) -> Ledger:
    return replace(ledger, accounts=dict(ledger.accounts))


# ------------------------------------------------------------------------------- the app


class PotApp:
    """The PoT application (see the module docstring)."""

    def __init__(
        self,
        genesis: Genesis,
        *,
        identity: Identity | None = None,
        round_time: int,
        fetch_grace: int = 0,
        censor_grace: int = 0,
        reveal_grace: int | None = None,
        task: Task | None = None,
        rule: AggregationRule | None = None,
        policy: VerificationPolicy | None = None,
        compression: Compression | None = None,
        band: float = DEFAULT_BAND,
        sync_derivation: bool = True,
        max_payload: int | None = None,
        payload_store: MutableMapping[str, bytes] | None = None,
    ) -> None:
        if round_time < 1 or fetch_grace < 0 or censor_grace < 0:
            raise PotError("round_time must be >= 1, fetch_grace and censor_grace >= 0")
        task = task or load_task(genesis.task)
        self.rules = RoundRules(
            genesis,
            task,
            rule or AggregationRule(),
            # a validator runs the genesis' spot-check rate; harnesses may pass their own
            policy or VerificationPolicy(spot_check_rate=genesis.spot_check_bps / BPS),
            compression or Compression.parse(genesis.compression),
            band,
        )
        self.identity = identity
        self.index: int | None = None
        if identity is not None:
            keys = [v.public_key for v in genesis.validators]
            if identity.public_key not in keys:
                raise PotError("this identity is not a genesis validator")
            self.index = keys.index(identity.public_key)
        self.round_time = round_time
        self.fetch_grace = fetch_grace
        self.censor_grace = censor_grace
        # how long a primary waits for the other validators' reveals before it proposes a
        # full-check round without them
        self.reveal_grace = max(1, round_time // 4) if reveal_grace is None else reveal_grace
        self._onion: Onion | None = None
        if identity is not None and self.index is not None:
            self._onion = Onion(onion_seed(identity, genesis.chain_id), genesis.beacon_rounds)
            if self._onion.commit != genesis.validators[self.index].beacon_commit:
                raise PotError(
                    f"the genesis' beacon_commit of validators[{self.index}] is not this "
                    "validator's (wrong key, chain id or beacon_rounds)"
                )
        self._reveal_check = RevealCheck()
        self.sync_derivation = sync_derivation
        self.max_payload = max_payload or INTAKE_LIMIT_FACTOR * max_payload_bytes(
            task, Compression("none")
        )
        params = genesis_params(task, genesis.model_seed)
        self._genesis_state = ChainState(
            0,
            GENESIS_PREV,
            Ledger.from_genesis(genesis),
            params,
            init_optimizer_state(task.optimizer, params),
            {},
        )
        self.state = self._genesis_state
        self._keys: dict[str, bytes] = {}
        self._payloads: dict[str, tuple[int, bytes]] = {}  # hash -> (height, bytes)
        # the host's durable payload store (a node's disk): every payload taken is written
        # there too, and a payload missing from memory is looked up there (a restarted
        # validator re-executes logged blocks from it)
        self.payload_store = payload_store
        # snapshot blobs (tensor bytes by hash) of the last few snapshots, to serve peers
        self._blobs: dict[str, bytes] = {}
        self._fresh_blobs: set[str] = set()
        self._snapshot_blobs: list[set[str]] = []
        self._round: _Intake | None = None
        self._early: dict[str, _Early] = {}
        self._queued: list[Action] = []
        self._proposal: tuple[int, dict[str, Any]] | None = None
        self._judged: dict[str, _Judgement] = {}
        self._jobs: dict[str, DerivationJob] = {}
        self._started: set[str] = set()
        self._missing: dict[str, tuple[tuple[str, str], ...]] = {}
        self._resume = False
        self._future_waiting = False
        self._snapshot: dict[str, Any] | None = None
        self.last_invalid = ""  # why the last proposal was refused (diagnostics)

    # ------------------------------------------------------------------------- read-only

    @property
    def genesis(self) -> Genesis:
        return self.rules.genesis

    @property
    def task(self) -> Task:
        return self.rules.task

    @property
    def height(self) -> int:
        return self.state.height

    @property
    def ledger(self) -> Ledger:
        return self.state.ledger

    @property
    def model_hash(self) -> str:
        return self.state.model_hash

    def round_seed(self, height: int | None = None) -> bytes:
        h = self.state.height + 1 if height is None else height
        return chain_round_seed(self.rules.genesis_hash, self.state.head, h)

    def round_info(self, now: int) -> RoundInfo:
        """The open round, as a miner needs it (opens it at ``now`` if needed)."""
        intake = self._intake(now)
        return RoundInfo(
            intake.height,
            self.state.model_hash,
            self.round_seed(),
            self.state.params,
            intake.deadline,
        )

    def holds(self, miner: str, payload_hash: str) -> bool:
        """True when the open round already kept exactly this commitment of ``miner``."""
        r = self._round
        return r is not None and r.kept.get(miner, ("",))[0] == payload_hash

    def round_status(self) -> tuple[int, str, int, int] | None:
        """(height, phase, opened_at, deadline) of the round open at this validator (None until
        it opens): what a node's status API shows."""
        r = self._round
        if r is None:
            return None
        return r.height, r.machine.phase, r.opened_at, r.deadline

    def next_deadline(self) -> int | None:
        """When this app next needs the host's attention (the round's deadline or fetch
        deadline): the host ticks the replica then, so the primary proposes."""
        r = self._round
        if r is None:
            return None
        phase = r.machine.phase
        last = r.machine.now if r.machine.now is not None else r.opened_at
        waits = []
        if phase == "open":
            waits.append(r.deadline)
        if phase == "frozen":
            waits.append(r.machine.params.payload_deadline)
        proposed = self._proposal is not None and self._proposal[0] == r.height
        if (
            r.announced_at is not None
            and not proposed
            and r.announced_at + self.reveal_grace > last
        ):
            waits.append(r.announced_at + self.reveal_grace)
        reveal_at = r.deadline - self.censor_grace
        if r.revealed is None and r.offers and reveal_at > last:
            waits.append(reveal_at)
        return min(waits) if waits else None

    def take_resume(self) -> bool:
        """True (once) when the host should call ``Replica.resume(now)``."""
        out, self._resume = self._resume, False
        return out

    def take_actions(self) -> list[Action]:
        """Round actions caused inside consensus callbacks (FetchPayload, refusals)."""
        out, self._queued = self._queued, []
        return out

    # ------------------------------------------------------------------------------ intake

    def _intake(self, now: int) -> _Intake:
        """The round at ``height + 1``, opened at ``now`` if needed, its clock advanced."""
        h = self.state.height + 1
        r = self._round
        if r is None or r.height != h:
            ledger = self.state.ledger
            deadline = now + self.round_time
            params = RoundParams(
                chain_id=self.genesis.chain_id,
                height=h,
                model_hash=self.state.model_hash,
                round_seed=self.round_seed(h),
                deadline=deadline,
                max_payload_bytes=self.max_payload,
                miner_keys=self._keys,
                admitted=frozenset(a for a in ledger.accounts if ledger.admitted(a)),
                ejected=frozenset(a for a, acc in ledger.accounts.items() if acc.ejected),
                fetch_deadline=deadline + self.fetch_grace,
            )
            r = self._round = _Intake(h, now, deadline, RoundMachine(params))
            early, self._early = self._early, {}
            for e in early.values():
                self._queued += self._step(
                    r, e.miner, e.payload_hash, e.sig, e.payload, now, h, e.model_hash
                )
        self._queued += r.machine.step(Tick(now))
        self._maybe_reveal(r, now)
        return r

    # ---------------------------------------------------------------------------- beacon

    def beacon_message(self, message: Any, now: int, primary: int) -> bool:
        """A validator's beacon message (an announcement of the frozen set, from the validator
        the host knows as the current primary, or a plain reveal). Returns True when it was
        taken; anything malformed, forged or for another round is dropped."""
        n = len(self.genesis.validators)
        try:
            msg = parse_beacon_message(message, n, MAX_SUBMISSIONS)
        except BeaconError:
            return False
        r = self._intake(now)
        rv = msg.reveal
        if rv.height != r.height or (msg.frozen is not None and rv.validator != primary):
            return False
        known = r.reveals.get(rv.digest, {})
        if rv.validator in known or rv.validator in r.rejected_from:
            return False
        # bounded per sender: an honest validator reveals for one set per height (two digests
        # leave room for a view change), so one Byzantine validator cannot crowd others out
        mine = sum(1 for d in r.reveals.values() if rv.validator in d)
        if mine >= 2 or (rv.digest not in r.reveals and len(r.reveals) >= 2 * n):
            return False
        v = self.genesis.validators[rv.validator]
        problem = check_reveal(
            v.public_key,
            v.beacon_commit,
            self.genesis.beacon_rounds,
            self.genesis.chain_id,
            rv,
            self._reveal_check,
        )
        if problem:
            # the signature is checked first (anyone can send junk in a validator's name: that
            # costs one signature check and marks nobody); a validly signed wrong layer costs
            # up to `height` hashes to find out, so it is accepted once per validator and
            # height, and that validator's beacon messages are dropped for the round
            if "onion" in problem:
                r.rejected_from.add(rv.validator)
            return False
        r.reveals.setdefault(rv.digest, {})[rv.validator] = rv
        if msg.frozen is not None and len(r.offers) < n:
            r.offers.setdefault(rv.digest, (msg.frozen, msg.late))
        self._maybe_reveal(r, now)
        return True

    def _own_reveal(self, r: _Intake, digest: str) -> Reveal:
        assert self.identity is not None and self.index is not None and self._onion is not None
        own = make_reveal(
            self.identity, self.index, self._onion, self.genesis.chain_id, r.height, digest
        )
        r.revealed = digest
        r.reveals.setdefault(digest, {})[self.index] = own
        return own

    def _maybe_reveal(self, r: _Intake, now: int) -> None:
        """Reveal this validator's layer for the first announced set that keeps every
        submission it held by ``deadline - censor_grace``, once that time has passed (one set
        per height, whatever the view)."""
        if self._onion is None or r.revealed is not None or not r.offers:
            return
        if now < r.deadline - self.censor_grace or r.height > self.genesis.beacon_rounds:
            return
        for digest, (pairs, late) in r.offers.items():
            if self._censored(r, dict(pairs), frozenset(late)):
                continue
            absent = [(a, h) for a, h in pairs if a not in late and self.payload(h) is None]
            if absent:  # reveal only once every payload the block will judge is here
                for miner, payload_hash in absent:
                    if (miner, payload_hash) not in r.fetching:
                        r.fetching.add((miner, payload_hash))
                        self._queued.append(FetchPayload(payload_hash, miner))
                continue
            own = self._own_reveal(r, digest)
            self._queued.append(BroadcastBeacon(BeaconMessage(own)))
            return

    def _register_key(self, miner: str, public_key: bytes) -> str | None:
        """Register a miner's key; a refusal reason when it cannot be."""
        if self._keys.get(miner) == public_key:
            return None
        if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_SIZE:
            return "the public key is not 32 bytes"
        if address_from_public_key(public_key) != miner:
            return "the public key does not derive the miner's address"
        if miner not in self.state.ledger.accounts:
            return None  # the round machine answers unknown-miner
        self._keys[miner] = public_key
        return None

    def submit(
        self,
        miner: str,
        public_key: bytes,
        payload_hash: str,
        commitment_sig: bytes,
        payload: bytes | None,
        now: int,
        *,
        height: int | None = None,
        model_hash: str | None = None,
    ) -> list[Action]:
        """A miner's signed commitment (with its public key, and its payload bytes or not).
        Returns the round's actions (a :class:`SubmissionRefused` answers the miner)."""
        bad = self._register_key(miner, public_key)
        if bad is not None:
            return [SubmissionRefused(miner, "malformed", bad)]
        r = self._intake(now)
        out, self._queued = self._queued, []
        if height == r.height + 1 and miner in self._keys:
            signed = isinstance(model_hash, str) and verify_commitment(
                self._keys[miner], commitment_sig, self.genesis.chain_id, height,
                model_hash, payload_hash,
            )  # fmt: skip
            # one per miner, replayed when the round opens; only a commitment the miner
            # signed takes the slot, so nobody can squat it with a forged one
            if signed and miner not in self._early:
                self._early[miner] = _Early(
                    miner, payload_hash, commitment_sig, payload, model_hash
                )
            return out
        return out + self._step(
            r, miner, payload_hash, commitment_sig, payload, now, height, model_hash
        )

    def _step(
        self,
        r: _Intake,
        miner: str,
        payload_hash: str,
        sig: bytes,
        payload: bytes | None,
        now: int,
        height: int | None,
        model_hash: str | None,
    ) -> list[Action]:
        actions = r.machine.step(
            SubmissionReceived(
                miner, payload_hash, sig, payload, now, height=height, model_hash=model_hash
            )
        )
        last = actions[-1] if actions else None
        refused = isinstance(last, SubmissionRefused) and last.miner == miner
        at = r.machine.now if r.machine.now is not None else now
        if not refused and miner not in r.kept:
            r.kept[miner] = (payload_hash, at)
            actions.append(
                RelaySubmission(
                    miner, self._keys[miner], payload_hash, sig, r.height, self.state.model_hash
                )
            )
        # bytes are kept for what the machine kept, and for what a pending proposal lacks
        if payload is not None and (not refused or payload_hash in self._wanted()):
            stored = self._store(payload_hash, payload, r.height)
            if stored and not refused:
                r.bytes_at.setdefault(payload_hash, at)
        return actions

    def tick(self, now: int) -> list[Action]:
        """Advance the round's clock; returns the actions time causes (and queued ones)."""
        self._intake(now)
        return self.take_actions()

    def _store(self, payload_hash: str, payload: bytes, height: int) -> bool:
        """Keep ``payload`` when it hashes to ``payload_hash`` (True when it is here now)."""
        if payload_hash in self._payloads:
            return True
        if not isinstance(payload, bytes) or len(payload) > self.max_payload:
            return False
        if sha256_hex(payload) != payload_hash:
            return False
        self._payloads[payload_hash] = (height, payload)
        if self.payload_store is not None:
            self.payload_store[payload_hash] = payload
        return True

    def payload(self, payload_hash: str) -> bytes | None:
        """The bytes of ``payload_hash`` (a miner's payload or a snapshot blob) if this
        validator holds them (to serve a peer)."""
        have = self._payloads.get(payload_hash)
        if have is not None:
            return have[1]
        blob = self._blobs.get(payload_hash)
        if blob is not None:
            return blob
        if self.payload_store is not None:
            return self.payload_store.get(payload_hash)
        return None

    def miner_key(self, miner: str) -> bytes | None:
        """The public key a miner announced (to serve a peer that lacks it)."""
        return self._keys.get(miner)

    def _wanted(self) -> set[str]:
        wanted = {h for pairs in self._missing.values() for _, h in pairs}
        r = self._round
        if r is not None:
            wanted |= {h for _, h in r.fetching}
        return wanted

    def missing(self) -> tuple[tuple[str, str], ...]:
        """(miner, payload hash) a pending proposal lacks (its bytes, or the miner's key): the
        host fetches them from peers and hands them to :meth:`provide`."""
        return tuple(sorted({p for pairs in self._missing.values() for p in pairs}))

    def provide(
        self, miner: str, public_key: bytes, payload: bytes | None, now: int | None = None
    ) -> bool:
        """Bytes (and the miner's key) fetched for a pending proposal or for the round's frozen
        set. True when something new was taken (a resume becomes due)."""
        new = False
        if self._keys.get(miner) != public_key and self._register_key(miner, public_key) is None:
            new = miner in self._keys
        if payload is not None:
            digest = sha256_hex(payload) if isinstance(payload, bytes) else ""
            wanted = digest in self._wanted()
            r = self._round
            if r is not None and now is not None and r.height == self.state.height + 1:
                self._queued += r.machine.step(PayloadFetched(digest, payload, now))
                frozen = {h for _, h in r.machine.frozen or ()}
                wanted = wanted or digest in frozen
            if wanted and digest not in self._payloads:
                new = self._store(digest, payload, self.state.height + 1) or new
            if r is not None and now is not None and r.height == self.state.height + 1:
                self._maybe_reveal(r, now)
        if new and self._missing:
            self._resume = True
        return new

    # ----------------------------------------------------------------------- consensus: primary

    def has_pending(self, seq: int, now: int) -> bool:
        if seq != self.state.height + 1:
            return False
        return self._intake(now).machine.phase != "open"

    def propose(self, seq: int, now: int) -> Any:
        if self.identity is None or self.index is None or seq != self.state.height + 1:
            return None
        if self._proposal is not None and self._proposal[0] == seq:
            return self._proposal[1]
        r = self._intake(now)
        m = r.machine
        # the set and its late marks are final once every payload is in or the fetch
        # deadline has passed: only then is it announced (a miner that learnt the draw cannot
        # then withhold its payload to dodge a slash)
        if m.frozen is None or m.phase not in ("verifying", "verified"):
            return None
        subs = tuple(
            FrozenSubmission(c.miner, c.payload_hash, c.commitment_sig) for c in m.commitments
        )
        late = frozenset(a for a, code in m.refused.items() if code == "late")
        pairs = tuple(sorted((s.miner, s.payload_hash) for s in subs))
        digest = frozen_digest(pairs, late)
        if r.revealed is None and seq <= self.genesis.beacon_rounds:
            own = self._own_reveal(r, digest)  # announce the set with this validator's reveal
            r.announced_at = now
            self._queued.append(BroadcastBeacon(BeaconMessage(own, pairs, tuple(sorted(late)))))
        n = len(self.genesis.validators)
        have = r.reveals.get(digest, {}) if r.revealed == digest else {}
        waiting = r.announced_at is not None and now < r.announced_at + self.reveal_grace
        if len(have) < n and waiting:
            return None  # the other validators' reveals may still come
        payloads = {
            s.payload_hash: self._payloads[s.payload_hash][1]
            for s in subs
            if s.miner not in late and s.payload_hash in self._payloads
        }
        # a set this validator did not reveal for (it revealed for another primary's set
        # before a view change) carries no reveal of its own: a full-check round
        reveals = tuple(have.get(i) for i in range(n))
        beacon, full_check = beacon_inputs(self.rules, seq, reveals)
        inputs = RoundInputs(seq, beacon, subs, payloads, late, full_check)
        proof = BeaconProof(reveals, self._reveal_check)
        try:
            derived = derive_round(self.rules, self.state, inputs, self._keys, proof)
        except DeriveError as exc:
            self.last_invalid = f"cannot propose block {seq}: {exc}"
            return None
        if derived.verification is not None:
            self._queued += m.step(VerificationFinished(m.job_id, derived.verification))
        proposal = Proposal(derived.block, reveals)
        self._remember(proposal.digest, _Judgement(True, "", derived))
        self._proposal = (seq, proposal.to_dict())
        return self._proposal[1]

    # ----------------------------------------------------------------------- consensus: backup

    def validate(self, seq: int, proposal: Any, now: int) -> Validity:
        try:
            return self._validate(seq, proposal, now)
        except PotError as exc:
            self.last_invalid = f"block {seq}: {exc}"
            return Validity.INVALID

    def _validate(self, seq: int, proposal: Any, now: int) -> Validity:
        if seq <= self.state.height:
            raise DeriveError(f"height {seq} is already executed")
        if seq > self.state.height + 1:
            self._future_waiting = True
            return Validity.PENDING
        r = self._intake(now)
        prop = parse_proposal(proposal, len(self.genesis.validators))
        key = prop.digest
        judged = self._judged.get(key)
        if judged is None:
            judged = self._judge(r, seq, prop, key)
            if judged is None:
                return Validity.PENDING
        if not judged.valid:
            self.last_invalid = f"block {seq}: {judged.reason}"
            return Validity.INVALID
        return Validity.VALID

    def _judge(self, r: _Intake, seq: int, prop: Proposal, key: str) -> _Judgement | None:
        """Judge a parsed proposal; None while it waits (payloads, keys, a worker)."""
        reason = self._header_problem(seq, prop.block) or self._censorship(r, prop.block)
        if reason:
            return self._remember(key, _Judgement(False, reason))
        inputs, missing = self._inputs_for(prop.block)
        inputs = replace(inputs, full_check=None in prop.reveals)
        if missing:
            _bounded_put(self._missing, key, missing)
            return None
        self._missing.pop(key, None)
        job = DerivationJob(
            key,
            self.rules,
            replace(self.state, ledger=_copy_ledger(self.state.ledger)),
            inputs,
            {s.miner: self._keys[s.miner] for s in inputs.submissions},
            prop,
            self._reveal_check,
        )
        if self.sync_derivation:
            self.derivation_done(job.run())
            return self._judged.get(key)
        if key not in self._jobs:
            _bounded_put(self._jobs, key, job)
        return None

    def _remember(self, key: str, j: _Judgement) -> _Judgement:
        if len(self._judged) >= MAX_JUDGED:
            for old in [k for k, v in self._judged.items() if not v.valid][: MAX_JUDGED // 2]:
                del self._judged[old]
        self._judged[key] = j
        return j

    def _header_problem(self, seq: int, b: Block) -> str:
        s, g = self.state, self.genesis
        expected = {
            "chain_id": g.chain_id,
            "height": seq,
            "prev_hash": s.head,
            "round_seed": self.round_seed(seq).hex(),
            "task": g.task,
            "rule": self.rules.rule.name,
            "model_before": s.model_hash,
        }
        for name, want in expected.items():
            if getattr(b, name) != want:
                return f"block.{name} is {getattr(b, name)!r:.72}, expected {want!r:.72}"
        return ""

    def _censorship(self, r: _Intake, b: Block) -> str:
        if r.height != b.height:
            return ""
        frozen = {s.miner: s.payload_hash for s in b.submissions}
        return self._censored(r, frozen, block_late(b))

    def _censored(self, r: _Intake, frozen: Mapping[str, str], late: frozenset[str]) -> str:
        """Why a frozen set (miner -> payload hash, ``late`` ones marked) censors a submission
        this validator held by ``deadline - censor_grace`` ("" when it does not)."""
        cutoff = r.deadline - self.censor_grace
        for miner, (payload_hash, at) in sorted(r.kept.items()):
            if at > cutoff:
                continue
            if miner not in frozen:
                return f"censorship: the frozen set omits {miner}, kept here at {at} <= {cutoff}"
            have = r.bytes_at.get(payload_hash)
            if (
                miner in late
                and frozen[miner] == payload_hash
                and have is not None
                and have <= cutoff
            ):
                return f"censorship: {miner} marked late, its payload was here at {have}"
        return ""

    def _inputs_for(self, b: Block) -> tuple[RoundInputs, tuple[tuple[str, str], ...]]:
        """The block's frozen set as derivation inputs, and what is missing for it."""
        late = block_late(b)
        subs = tuple(
            FrozenSubmission(s.miner, s.payload_hash, bytes.fromhex(s.commitment_sig))
            for s in b.submissions
        )
        payloads: dict[str, bytes] = {}
        missing: list[tuple[str, str]] = []
        for s in subs:
            have = self.payload(s.payload_hash)
            if have is not None:
                payloads[s.payload_hash] = have
            if s.miner not in self._keys or (have is None and s.miner not in late):
                missing.append((s.miner, s.payload_hash))
        return RoundInputs(b.height, bytes.fromhex(b.beacon), subs, payloads, late), tuple(missing)

    def pending_derivations(self) -> list[DerivationJob]:
        """Jobs ``validate`` queued (``sync_derivation=False``) and not yet handed out."""
        jobs = [j for k, j in sorted(self._jobs.items()) if k not in self._started]
        self._started.update(j.key for j in jobs)
        return jobs

    def derivation_done(self, outcome: DerivationOutcome) -> None:
        """A derivation finished (in a worker, or inline): remember the judgement; the host
        then calls ``Replica.resume(now)``. Stale outcomes (the chain moved on) are dropped."""
        self._jobs.pop(outcome.key, None)
        self._started.discard(outcome.key)
        if outcome.height != self.state.height + 1:
            return
        valid = outcome.derived is not None
        self._remember(outcome.key, _Judgement(valid, outcome.reason, outcome.derived))
        if not self.sync_derivation:
            self._resume = True

    # ---------------------------------------------------------------------------- execute

    def execute(self, seq: int, proposal: Any) -> None:
        if seq != self.state.height + 1:
            raise ChainError(f"execute({seq}) does not follow height {self.state.height}")
        s = self.state
        ledger = _copy_ledger(s.ledger)
        if proposal is None:
            ledger.apply_payout(RoundPayout(seq, 0, (), (), ()))
            ledger.check_invariants()
            self._advance(replace(s, height=seq, ledger=ledger))
            return
        try:
            prop = parse_proposal(proposal)
        except BlockError as exc:
            raise ChainError(f"committed block {seq} does not parse: {exc}") from None
        judged = self._judged.get(prop.digest)
        derived = judged.derived if judged is not None else None
        if derived is None:
            inputs, missing = self._inputs_for(prop.block)
            accepted = {r.miner for r in prop.block.submissions if r.verdict.kind == "accepted"}
            lacking = tuple(
                (m, h) for m, h in missing if m in accepted and h not in inputs.payloads
            )
            if lacking:
                # listed by missing(): the host fetches them and resumes the replica, which
                # retries the execution (it never crashes on this)
                self._missing[f"execute:{seq}"] = lacking
                raise ChainError(f"block {seq} lacks {len(lacking)} accepted payload(s)")
            try:
                derived = settle_committed(self.rules, s, inputs, prop.block)
            except DeriveError as exc:
                raise ChainError(f"cannot apply committed block {seq}: {exc}") from None
        ledger.apply_payout(derived.payout)
        ledger.check_invariants()
        self._advance(
            ChainState(
                seq,
                block_hash(derived.block),
                ledger,
                derived.params,
                derived.opt_state,
                derived.accepted,
            )
        )

    def _advance(self, state: ChainState) -> None:
        self.state = state
        self._round = None
        self._proposal = None
        self._judged.clear()
        self._jobs.clear()
        self._started.clear()
        self._missing.clear()
        self._snapshot = None
        for h in [h for h, (height, _) in self._payloads.items() if height < state.height]:
            del self._payloads[h]
        if self._future_waiting:
            self._future_waiting = False
            self._resume = True

    # --------------------------------------------------------------------------- snapshots

    def snapshot(self) -> Any:
        if self._snapshot is None:
            s = self.state
            self._snapshot = {
                "version": SNAPSHOT_VERSION,
                "genesis": self.rules.genesis_hash,
                "height": s.height,
                "head": s.head,
                "ledger": s.ledger.snapshot(),
                "params": {n: self._blob(t) for n, t in sorted(s.params.items())},
                "optimizer": {
                    "step": s.opt_state.step,
                    "buffers": {
                        kind: {n: self._blob(t) for n, t in sorted(ts.items())}
                        for kind, ts in sorted(s.opt_state.buffers.items())
                    },
                },
                "previous": {a: self._blob(v) for a, v in sorted(s.previous.items())},
            }
            self._snapshot_blobs.append(set(self._fresh_blobs))
            self._fresh_blobs = set()
            while len(self._snapshot_blobs) > KEEP_SNAPSHOT_BLOBS:
                self._snapshot_blobs.pop(0)
                live = set().union(*self._snapshot_blobs)
                self._blobs = {h: b for h, b in self._blobs.items() if h in live}
        return self._snapshot

    def _blob(self, t: torch.Tensor) -> str:
        """A tensor's canonical bytes (little-endian float32, C order) as a content-addressed
        blob: the snapshot holds its SHA-256, peers fetch the bytes by that hash (as they fetch
        payloads) and check them against it, so a state transfer moves the model in chunks,
        each verified against the certified snapshot digest."""
        data = t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes()
        digest = sha256_hex(data)
        self._blobs[digest] = data
        self._fresh_blobs.add(digest)
        if self.payload_store is not None and digest not in self.payload_store:
            self.payload_store[digest] = data
        return digest

    def state_digest(self) -> str:
        return self.snapshot_digest(self.snapshot())

    def snapshot_digest(self, snapshot: Any) -> str:
        return canonical_snapshot_digest(snapshot)

    def restore(self, snapshot: Any) -> None:
        state = self._parse_snapshot(snapshot)
        self._advance(state)
        self._payloads.clear()
        self._early.clear()
        self._queued.clear()

    def _parse_snapshot(self, snap: Any) -> ChainState:
        keys = {
            "version",
            "genesis",
            "height",
            "head",
            "ledger",
            "params",
            "optimizer",
            "previous",
        }
        if not isinstance(snap, dict) or set(snap) != keys:
            raise ChainError("snapshot: expected exactly the fields " + ", ".join(sorted(keys)))
        if snap["version"] != SNAPSHOT_VERSION or snap["genesis"] != self.rules.genesis_hash:
            raise ChainError("snapshot: another version or another chain's genesis")
        height, head = snap["height"], snap["head"]
        if not isinstance(height, int) or isinstance(height, bool) or height < 0:
            raise ChainError("snapshot.height: expected a non-negative integer")
        if not isinstance(head, str) or len(head) != 64 or head.strip("0123456789abcdef"):
            raise ChainError("snapshot.head: expected 64 lowercase hex characters")
        ledger = Ledger.restore(snap["ledger"])
        if ledger.height != height:
            raise ChainError("snapshot: the ledger's height is not the chain's")
        shapes = self.task.param_shapes
        lacking: list[str] = []
        params = self._tensors(snap["params"], shapes, "snapshot.params", lacking)
        opt = snap["optimizer"]
        if not isinstance(opt, dict) or set(opt) != {"step", "buffers"}:
            raise ChainError("snapshot.optimizer: expected 'step' and 'buffers'")
        step, raw = opt["step"], opt["buffers"]
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ChainError("snapshot.optimizer.step: expected a non-negative integer")
        kinds = set(init_optimizer_state(self.task.optimizer, params).buffers)
        if not isinstance(raw, dict) or set(raw) != kinds:
            raise ChainError(f"snapshot.optimizer.buffers: expected {sorted(kinds)}")
        buffers = {
            k: self._tensors(raw[k], shapes, f"snapshot.optimizer.{k}", lacking)
            for k in sorted(raw)
        }
        prev = snap["previous"]
        if not isinstance(prev, dict):
            raise ChainError("snapshot.previous: expected an object")
        flat = {"vector": (self.task.num_params,)}
        previous = {}
        for a in sorted(prev):
            if a not in ledger.accounts:
                raise ChainError("snapshot.previous: an address without an account")
            previous[a] = self._tensors(
                {"vector": prev[a]}, flat, "snapshot.previous", lacking
            ).get("vector", torch.zeros(0))
        if lacking:
            # listed by missing(): the host fetches the blobs from peers (as payloads) and the
            # state transfer is retried; nothing of the state changed meanwhile
            self._missing["snapshot"] = tuple(("", h) for h in sorted(set(lacking)))
            raise ChainError(f"snapshot: {len(set(lacking))} blob(s) still to fetch")
        self._missing.pop("snapshot", None)
        return ChainState(height, head, ledger, params, OptimizerState(step, buffers), previous)

    def _tensors(
        self, raw: Any, shapes: Mapping[str, tuple[int, ...]], what: str, lacking: list[str]
    ) -> dict[str, torch.Tensor]:
        """Tensors named by blob hashes; the hashes whose bytes are not here go to
        ``lacking`` (those tensors are left out of the result)."""
        if not isinstance(raw, dict) or set(raw) != set(shapes):
            raise ChainError(f"{what}: expected exactly the tensors {sorted(shapes)[:8]}")
        out: dict[str, torch.Tensor] = {}
        for name, shape in shapes.items():
            digest = raw[name]
            if not isinstance(digest, str) or len(digest) != 64 or digest.strip("0123456789abcdef"):
                raise ChainError(f"{what}.{name}: expected a 64-hex blob hash")
            data = self.payload(digest)
            if data is None:
                lacking.append(digest)
                continue
            n = math.prod(shape)
            if len(data) != 4 * n or sha256_hex(data) != digest:
                raise ChainError(f"{what}.{name}: the blob does not match its hash or shape")
            arr = np.frombuffer(data, dtype="<f4").astype(np.float32).reshape(shape)
            t = torch.from_numpy(arr.copy())
            if not bool(torch.isfinite(t).all()):
                raise ChainError(f"{what}.{name}: non-finite values")
            out[name] = t
        return out


MAX_PENDING = 8  # proposals waiting at once for payloads or a worker (the rest: dropped)


def _bounded_put(table: dict[str, Any], key: str, value: Any) -> None:
    """Insert into a table of pending work, dropping the oldest entries past MAX_PENDING (a
    Byzantine primary must not make a backup hold unbounded work: at most one proposal per
    (view, seq) reaches the application, and views only change on timeouts)."""
    table[key] = value
    while len(table) > MAX_PENDING:
        del table[next(iter(table))]
