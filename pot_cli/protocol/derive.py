"""Deriving a round's block from its frozen submissions: pure, deterministic, shared by the
primary (which proposes what it derives) and every backup (which re-derives before it prepares).

:func:`derive_round` = :func:`check_round` (who may be in the block, signatures, beacon) +
:func:`judge_round` (``training.verification.verify_round`` mapped to block verdicts) +
:func:`settle_round` (ledger payout, aggregation, optimizer step, the :class:`~.block.Block`).
A backup instead judges, reconciles its verdicts with the proposer's (:func:`reconcile`: equal,
or different only inside the declared bands around the tolerance and the statistics
thresholds; a slash is re-computed rather than trusted) and settles the reconciled verdicts:
the block it gets must equal the proposed one field for field, ``model_after`` bit for bit.
:func:`settle_round` alone, with a committed block's verdicts, re-executes a final block
without re-computing anything.

Choices:

* **Round seed.** ``s_h = H("pot/round-seed/v1", genesis hash, prev block hash, h)``
  (:func:`chain_round_seed`): DESIGN's ``H(block h-1)``, bound to the chain (the genesis hash
  makes round 1 differ between chains, whose blocks 1 all follow ``GENESIS_PREV``) and to the
  height (after a null block the prev hash repeats, the seed does not).
* **Beacon.** Every validator's onion layer for the height, signed over the frozen set
  (``protocol/beacon.py``): ``Block.beacon`` is ``beacon_value`` of them, the reveals travel
  next to the block in the proposal and :func:`check_round` checks each against its genesis
  commit (:class:`BeaconProof`). With a reveal missing the round re-computes every submission
  (``RoundInputs.full_check``). New identities (``Ledger.on_probation``) are always re-computed.
* **Verdicts.** ``verify_round``'s checks map to :data:`~.block.REJECT_CODES`: ``codec`` to
  ``oversize`` / ``non-finite`` / ``malformed`` (every other codec reason: header, layout,
  parse), ``zero``, ``duplicate``; a failed re-compute to a slash: ``copy`` when the copy flag
  sent it to re-compute, ``recompute-mismatch`` otherwise (spot check, norm or direction flag).
  Evidence holds integers only: ``rel_error_ppm``, ``tolerance_ppm`` and the ``check``.
  A frozen submission whose payload never arrived is ``rejected("late")``.
* **Weights.** Every accepted submission weighs ``task.batch_size`` samples; the other
  records say 0. Fees go to every genesis validator.
* **Determinism.** The model update depends only on the accepted payload bytes (decoded
  exactly), ``aggregate_flat`` and ``apply_update`` (element-wise CPU float32 in sorted order),
  so it is bit-identical across processes and thread counts. Verdicts come from float
  reductions (norms, cosines, re-computes) whose last bits depend on threads and kernels: that
  is what the band is for. This module never changes torch's global thread count; the
  validator's ``VerificationPolicy.numerics.threads`` decides how re-computes run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from pot_cli.crypto import hash_object, sha256_hex
from pot_cli.errors import PotError
from pot_cli.protocol.beacon import (
    Reveal,
    RevealCheck,
    beacon_value,
    check_reveal,
    frozen_digest,
)
from pot_cli.protocol.block import (
    FORGERY_CODES,
    MALFORMED_CODES,
    Block,
    BlockError,
    SubmissionRecord,
    Verdict,
    check_block,
)
from pot_cli.protocol.commitments import verify_commitment
from pot_cli.protocol.genesis import MAX_INT, Genesis, genesis_hash
from pot_cli.protocol.ledger import Ledger, LedgerError, Penalty, RoundOutcome, RoundPayout
from pot_cli.training.aggregation import AggregationRule, aggregate_flat
from pot_cli.training.codec import Compression, decode_gradient
from pot_cli.training.errors import CodecError
from pot_cli.training.optim import OptimizerState, apply_update
from pot_cli.training.state import model_hash
from pot_cli.training.tasks import Task
from pot_cli.training.verification import (
    FLAG_CHECKS,
    RoundContext,
    RoundVerification,
    Statistics,
    Submission,
    VerificationPolicy,
    recheck,
    verify_round,
)
from pot_cli.training.verification import Verdict as CheckVerdict

ROUND_SEED_DOMAIN = "pot/round-seed/v1"
# Half-width of the band around the tolerance, as a fraction of it: a backup accepts the
# proposer's verdict on a re-computed submission whose relative error it measures within
# ``band * tolerance`` of the tolerance. Within one precision, thread count and batch order
# move a gradient by up to 1.7e-4 (relative L2, 10,000 honest digits submissions), so two
# validators' errors on one submission differ by about that much: 1% of the calibrated 0.04
# (4e-4) covers it with room; 1e-3 x tolerance (4e-5) would not.
DEFAULT_BAND = 0.01
# Evidence drift allowed between proposer and backup on a submission both slash: the band, plus
# this share of the error itself (a large error's normalisation moves with the reference).
EVIDENCE_REL_DRIFT = 1e-3
PPM = 1_000_000


class DeriveError(PotError):
    """The round cannot be derived from these inputs, or a proposed block is not the one they
    give (the text says which field and why)."""


# ------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class RoundRules:
    """What every validator of one chain applies the same way: the genesis, its task, the
    aggregation rule, the verification policy, the wire compression and the band.

    The rule's name is recorded in every block; its parameters, the policy's thresholds and the
    compression are chain constants that belong in the genesis (a later change; today every
    validator is configured alike)."""

    genesis: Genesis
    task: Task
    rule: AggregationRule = field(default_factory=AggregationRule)
    policy: VerificationPolicy = field(default_factory=VerificationPolicy)
    compression: Compression = field(default_factory=Compression)
    band: float = DEFAULT_BAND
    genesis_hash: str = ""

    def __post_init__(self) -> None:
        if not self.genesis_hash:
            object.__setattr__(self, "genesis_hash", genesis_hash(self.genesis))
        if not 0.0 <= self.band < 1.0:
            raise DeriveError(f"band must be in [0, 1), got {self.band}")

    @property
    def tolerance(self) -> float:
        return self.policy.tolerance_for(self.task)

    @property
    def validator_addresses(self) -> tuple[str, ...]:
        return tuple(v.address for v in self.genesis.validators)


@dataclass(frozen=True)
class ChainState:
    """The replicated state between blocks. Treated as immutable: tensors are never modified in
    place (``apply_update`` is pure) and the ledger is only planned against here."""

    height: int
    head: str
    ledger: Ledger
    params: Mapping[str, torch.Tensor]
    opt_state: OptimizerState
    # the last block's accepted gradients (address -> flat vector): the copy check's history
    previous: Mapping[str, torch.Tensor]
    model_hash: str = ""

    def __post_init__(self) -> None:
        if not self.model_hash:
            object.__setattr__(self, "model_hash", model_hash(self.params))


@dataclass(frozen=True)
class FrozenSubmission:
    """One commitment of the frozen set."""

    miner: str
    payload_hash: str
    commitment_sig: bytes


@dataclass(frozen=True)
class RoundInputs:
    """What a round's block is derived from. ``submissions``: the frozen set, sorted by miner,
    one per miner; ``late``: frozen miners whose payload was missing at the fetch deadline;
    ``payloads``: payload hash -> bytes for every other one; ``beacon``: 32 bytes
    (``beacon.beacon_value`` of the validators' reveals; ``full_check`` when one is missing)."""

    height: int
    beacon: bytes
    submissions: tuple[FrozenSubmission, ...]
    payloads: Mapping[str, bytes]
    late: frozenset[str] = frozenset()
    full_check: bool = False  # a beacon reveal was withheld: every submission re-computed

    @property
    def frozen_pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple((s.miner, s.payload_hash) for s in self.submissions)


@dataclass(frozen=True)
class Judged:
    """One submission's verdict as the block records it, and what this validator measured."""

    verdict: Verdict
    spot_checked: bool = False
    rel_error: float | None = None
    sampled: bool = False
    statistics: Statistics | None = None
    support_energy: float | None = None


@dataclass(frozen=True)
class Derived:
    """A derived block and the state it leads to (the ledger is applied by the caller with
    ``payout``)."""

    block: Block
    payout: RoundPayout
    params: dict[str, torch.Tensor]
    opt_state: OptimizerState
    accepted: dict[str, torch.Tensor]  # the next round's ``previous``
    verification: RoundVerification | None = None


# -------------------------------------------------------------------------------- helpers


def chain_round_seed(genesis_hash_hex: str, prev_hash: str, height: int) -> bytes:
    """The seed of round ``height`` (see the module docstring)."""
    return hash_object(
        {
            "domain": ROUND_SEED_DOMAIN,
            "genesis": genesis_hash_hex,
            "prev": prev_hash,
            "height": int(height),
        }
    )


def genesis_params(task: Task, model_seed: int) -> dict[str, torch.Tensor]:
    """The model at height 0: the task's architecture initialised from the genesis'
    ``model_seed`` (canonical order, CPU float32)."""
    named = dict(task.build_model(model_seed).named_parameters())
    return {n: named[n].detach().clone().float().contiguous() for n in sorted(named)}


def to_ppm(value: float) -> int:
    """An error as integer parts per million (non-finite or huge: the largest integer)."""
    if not math.isfinite(value) or value * PPM >= MAX_INT:
        return MAX_INT
    return round(value * PPM)


def block_verdict(v: CheckVerdict, tolerance: float) -> Verdict:
    """A ``verify_round`` verdict as the block records it (see the module docstring)."""
    if v.accepted:
        return Verdict.accepted()
    if v.check == "codec":
        reason = v.reason.split(":", 1)[0]
        return Verdict.rejected(reason if reason in ("oversize", "non-finite") else "malformed")
    if v.check in ("zero", "duplicate"):
        return Verdict.rejected(v.check)
    code = "copy" if v.check == "copy" else "recompute-mismatch"
    error = v.rel_error if v.rel_error is not None else math.inf
    evidence: dict[str, int | str] = {
        "check": v.check,
        "rel_error_ppm": to_ppm(error),
        "tolerance_ppm": to_ppm(tolerance),
    }
    if v.support_energy is not None:  # topk: the energy the sent coordinates carry
        evidence["support_ppm"] = to_ppm(v.support_energy)
    return Verdict.slashed(code, evidence)


# --------------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class BeaconProof:
    """The validators' reveals a block's beacon is made of (``None``: withheld), in genesis
    order, and the memo that checks them."""

    reveals: tuple[Reveal | None, ...]
    check: RevealCheck = field(default_factory=RevealCheck, compare=False)


def beacon_inputs(
    rules: RoundRules, height: int, reveals: Sequence[Reveal | None]
) -> tuple[bytes, bool]:
    """(beacon, full_check) for a round whose validators revealed ``reveals``."""
    values = [None if r is None else r.value for r in reveals]
    return beacon_value(rules.genesis.chain_id, height, values), None in values


def check_round(
    rules: RoundRules,
    state: ChainState,
    inputs: RoundInputs,
    miner_keys: Mapping[str, bytes],
    proof: BeaconProof | None = None,
) -> None:
    """Everything about the frozen set that needs no re-compute (raises :class:`DeriveError`):
    the height follows the state, miners are sorted, unique, admitted by the ledger, their
    commitments verify, every payload that is not late is present and hashes right; with
    ``proof``, that every reveal in it is its validator's onion layer for this height signed
    over this frozen set, and that ``inputs.beacon`` / ``inputs.full_check`` follow from them."""
    g = rules.genesis
    h = inputs.height
    if h != state.height + 1 or state.ledger.height != state.height:
        raise DeriveError(f"height {h} does not follow the chain's {state.height}")
    miners = [s.miner for s in inputs.submissions]
    if miners != sorted(set(miners)):
        raise DeriveError("the frozen set must be sorted by miner, one submission each")
    if not inputs.late <= set(miners):
        raise DeriveError("a late miner is not in the frozen set")
    for s in inputs.submissions:
        if not state.ledger.admitted(s.miner):
            raise DeriveError(f"{s.miner} is not admitted by the ledger at height {h}")
        key = miner_keys.get(s.miner)
        if key is None:
            raise DeriveError(f"no public key for {s.miner}")
        if not verify_commitment(
            key, s.commitment_sig, g.chain_id, h, state.model_hash, s.payload_hash
        ):
            raise DeriveError(f"the commitment of {s.miner} does not verify")
        if s.miner in inputs.late:
            continue
        payload = inputs.payloads.get(s.payload_hash)
        if payload is None:
            raise DeriveError(f"the payload of {s.miner} is missing")
        if sha256_hex(payload) != s.payload_hash:
            raise DeriveError(f"the payload of {s.miner} does not hash to its commitment")
    if proof is None:
        return
    if len(proof.reveals) != len(g.validators):
        raise DeriveError(f"expected {len(g.validators)} reveals, got {len(proof.reveals)}")
    digest = frozen_digest(inputs.frozen_pairs, inputs.late)
    for i, r in enumerate(proof.reveals):
        if r is None:
            continue
        if r.validator != i or r.height != h or r.digest != digest:
            raise DeriveError(f"reveal {i} is not bound to validator {i}, height {h}, this set")
        v = g.validators[i]
        problem = check_reveal(
            v.public_key, v.beacon_commit, g.beacon_rounds, g.chain_id, r, proof.check
        )
        if problem:
            raise DeriveError(problem)
    if beacon_inputs(rules, h, proof.reveals) != (inputs.beacon, inputs.full_check):
        raise DeriveError("the beacon does not follow from the reveals")


# ---------------------------------------------------------------------------------- judge


def round_context(rules: RoundRules, state: ChainState, inputs: RoundInputs) -> RoundContext:
    """What ``verify_round`` needs to know of this round."""
    return RoundContext(
        task=rules.task,
        height=inputs.height,
        round_seed=chain_round_seed(rules.genesis_hash, state.head, inputs.height),
        params=state.params,
        model_hash=state.model_hash,
        compression=rules.compression,
        previous=[state.previous[a] for a in sorted(state.previous)],
        beacon=inputs.beacon,
        full_check=inputs.full_check,
        always_check=frozenset(
            s.miner for s in inputs.submissions if state.ledger.on_probation(s.miner)
        ),
    )


def _judged(v: CheckVerdict, tolerance: float) -> Judged:
    return Judged(
        block_verdict(v, tolerance),
        v.spot_checked,
        v.rel_error,
        v.sampled,
        v.statistics,
        v.support_energy,
    )


def judge_round(
    rules: RoundRules, state: ChainState, inputs: RoundInputs
) -> tuple[dict[str, Judged], RoundVerification]:
    """Run ``verify_round`` on the frozen set (payloads present) and map its verdicts."""
    subs = [
        Submission(s.miner, inputs.payloads[s.payload_hash], s.payload_hash)
        for s in inputs.submissions
        if s.miner not in inputs.late
    ]
    verification = verify_round(round_context(rules, state, inputs), subs, rules.policy)
    tol = rules.tolerance
    judged: dict[str, Judged] = {}
    for s in inputs.submissions:
        if s.miner in inputs.late:
            judged[s.miner] = Judged(Verdict.rejected("late"))
            continue
        judged[s.miner] = _judged(verification.verdicts[s.miner], tol)
    return judged, verification


def recheck_judged(
    rules: RoundRules, state: ChainState, inputs: RoundInputs, own: Judged, miner: str
) -> Judged:
    """``own`` (an accepted verdict reached without a re-compute) after re-computing the
    submission now: what a backup does before it weighs a slash it was not led to itself."""
    sub = next(s for s in inputs.submissions if s.miner == miner)
    ctx = round_context(rules, state, inputs)
    res = recheck(ctx, Submission(miner, inputs.payloads[sub.payload_hash]), rules.policy)
    v = CheckVerdict(
        miner,
        res.passed,
        "ok" if res.passed else "spot-check",
        "re-computed on demand",
        spot_checked=True,
        rel_error=res.rel_error,
        sampled=own.sampled,
        statistics=own.statistics,
        support_energy=res.support_energy,
    )
    return _judged(v, rules.tolerance)


def _evidence(v: Verdict) -> dict[str, int | str]:
    return dict(v.evidence or ())


def _near(a: float, b: float, width: float) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= width


def _both_on(
    p: Verdict, mine: float, proposer_ppm: int | str | None, threshold: float, band: float
) -> bool:
    """Accepted against ``recompute-mismatch`` on one measured threshold: agreement when our
    measurement lies within ``band * threshold`` of it and, for a proposed slash, the
    proposer's recorded one (parts per million) too."""
    width = band * threshold
    if not _near(mine, threshold, width):
        return False
    if p.kind == "accepted":
        return True
    return (
        p.code == "recompute-mismatch"
        and isinstance(proposer_ppm, int)
        and _near(proposer_ppm / PPM, threshold, width + 1.0 / PPM)
    )


def plausible_check(policy: VerificationPolicy, own: Judged, check: object) -> bool:
    """Whether a proposer whose statistics differ from ours by less than the band could have
    named ``check`` as the reason it re-computed: a flag it names lies past its threshold or
    within the band of it here, and every flag tested before it lies below its threshold or
    within the band (so the proposer may not have raised it); "spot-check" (no flag at all)
    needs every statistic below its threshold or within the band."""
    if own.statistics is None:
        return False
    band = policy.flag_band
    dist = own.statistics.distances(policy)
    if check == "spot-check":
        return all(d <= band for d in dist.values())
    if check not in FLAG_CHECKS:
        return False
    for c in FLAG_CHECKS:
        if c == check:
            return dist[c] >= -band
        if dist[c] > band:
            return False
    return False  # unreachable


def deferrable(policy: VerificationPolicy, own: Judged) -> bool:
    """Whether a backup may settle the proposer's *accepted* over its own failed re-compute
    because the re-compute was not one the proposer was bound to run: the submission is
    outside the random sample and every statistic lies more than the band clear of its
    threshold (the outer half of the re-compute margin, where a validator whose floats differ
    by less than the band may not have reached the margin at all)."""
    if own.sampled or own.statistics is None:
        return False
    return all(d < -policy.flag_band for d in own.statistics.distances(policy).values())


def reconcile(
    rules: RoundRules,
    own: Mapping[str, Judged],
    proposed: Sequence[SubmissionRecord],
    recheck_one: Callable[[str, Judged], Judged] | None = None,
) -> dict[str, Verdict]:
    """The verdicts a backup settles: the proposer's, where they equal its own or differ only
    inside a band; raises :class:`DeriveError` at the first clear contradiction.

    * a slash is never taken on the proposer's word: one this validator did not re-compute
      itself is re-computed now (``recheck_one``) before it is weighed;
    * equal verdicts stand;
    * both slashed for a forgery with the same tolerance: the proposer's measurement stands
      when it lies within the band (plus :data:`EVIDENCE_REL_DRIFT` of the error) of ours,
      and the check it names is one it could have raised (:func:`plausible_check`);
    * accepted against ``recompute-mismatch`` (either way round): allowed when this validator
      re-computed and its relative error lies within ``band * tolerance`` of the tolerance
      (and, for a proposed slash, the proposer's error too);
    * the proposer's accepted against our failed re-compute: allowed only when that
      re-compute was one the proposer need not have run (:func:`deferrable`); inside the
      statistics band, past a threshold or in the sample, accepting is a contradiction."""
    tol = rules.tolerance
    width = rules.band * tol
    if [r.miner for r in proposed] != sorted(own):
        raise DeriveError("the block's submissions are not the frozen set")
    final: dict[str, Verdict] = {}
    for r in proposed:
        p, j = r.verdict, own[r.miner]
        if (
            p.kind == "slashed"
            and j.verdict.kind == "accepted"
            and not j.spot_checked
            and recheck_one is not None
        ):
            j = recheck_one(r.miner, j)
        mine = j.verdict
        if p == mine:
            final[r.miner] = p
            continue
        pe, me = _evidence(p), _evidence(mine)
        if p.kind == mine.kind == "slashed" and pe.get("tolerance_ppm") == me.get("tolerance_ppm"):
            check = pe.get("check")
            label_ok = plausible_check(rules.policy, j, check) and p.code == (
                "copy" if check == "copy" else "recompute-mismatch"
            )
            p_err, m_err = pe.get("rel_error_ppm"), me.get("rel_error_ppm")
            if label_ok and isinstance(p_err, int) and isinstance(m_err, int):
                drift = width + EVIDENCE_REL_DRIFT * max(p_err, m_err) / PPM
                if _near(p_err / PPM, m_err / PPM, drift + 1.0 / PPM):
                    final[r.miner] = p
                    continue
        kinds = {p.kind, mine.kind}
        if kinds == {"accepted", "slashed"} and j.spot_checked and j.rel_error is not None:
            floor = rules.policy.topk_support_energy
            err_in_band = _both_on(p, j.rel_error, pe.get("rel_error_ppm"), tol, rules.band)
            # topk: the support-energy floor is a float comparison too, with its band
            energy_in_band = (
                j.support_energy is not None
                and j.rel_error <= tol + width
                and _both_on(p, j.support_energy, pe.get("support_ppm"), floor, rules.band)
            )
            if (
                err_in_band
                or energy_in_band
                or (p.kind == "accepted" and deferrable(rules.policy, j))
            ):
                final[r.miner] = p
                continue
        raise DeriveError(
            f"verdict for {r.miner}: proposed {p.to_dict()}, derived {mine.to_dict()}"
            + (f" (relative error {j.rel_error:.6g}, tolerance {tol:g})" if j.rel_error else "")
        )
    return final


# --------------------------------------------------------------------------------- settle


def accepted_vectors(
    rules: RoundRules,
    state: ChainState,
    inputs: RoundInputs,
    verdicts: Mapping[str, Verdict],
    have: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The flat gradient of every accepted submission: from ``have`` (a verification's
    ``accepted``) where it is, else decoded from its payload (raises :class:`DeriveError` when
    a payload is missing or does not decode: an accepted verdict on it is false)."""
    out: dict[str, torch.Tensor] = {}
    have = have or {}
    for s in inputs.submissions:
        if verdicts[s.miner].kind != "accepted":
            continue
        vec = have.get(s.miner)
        if vec is None:
            payload = inputs.payloads.get(s.payload_hash)
            if payload is None:
                raise DeriveError(f"the payload of accepted {s.miner} is missing")
            try:
                decoded = decode_gradient(
                    rules.task,
                    payload,
                    expected_model_hash=state.model_hash,
                    expected_height=inputs.height,
                    expected_compression=rules.compression,
                )
            except CodecError as exc:
                raise DeriveError(f"accepted {s.miner} does not decode: {exc}") from None
            vec = decoded.vector
            if not bool(torch.isfinite(vec).all()) or not bool((vec != 0).any()):
                raise DeriveError(f"accepted {s.miner} is all zero or not finite")
        out[s.miner] = vec
    return out


def settle_round(
    rules: RoundRules,
    state: ChainState,
    inputs: RoundInputs,
    verdicts: Mapping[str, Verdict],
    vectors: Mapping[str, torch.Tensor],
    verification: RoundVerification | None = None,
) -> Derived:
    """The block and the next state from final verdicts and the accepted flat vectors."""
    g, task = rules.genesis, rules.task
    h = inputs.height
    records: list[SubmissionRecord] = []
    weights: list[tuple[str, int]] = []
    penalties: list[Penalty] = []
    for s in inputs.submissions:
        v = verdicts[s.miner]
        samples = task.batch_size if v.kind == "accepted" else 0
        records.append(
            SubmissionRecord(s.miner, s.payload_hash, s.commitment_sig.hex(), samples, v)
        )
        if v.kind == "accepted":
            weights.append((s.miner, samples))
        elif v.kind == "slashed":
            assert v.code in FORGERY_CODES
            penalties.append(Penalty(s.miner, g.forgery_slash, str(v.code), eject=True))
        elif v.code in MALFORMED_CODES:
            penalties.append(Penalty(s.miner, g.malformed_penalty, str(v.code)))
    try:
        payout = state.ledger.plan_round(
            RoundOutcome(h, tuple(weights), rules.validator_addresses, tuple(penalties))
        )
    except LedgerError as exc:
        raise DeriveError(f"ledger: {exc}") from None
    accepted = {a: vectors[a] for a in sorted(vectors)}
    if sorted(accepted) != sorted(a for a, _ in weights):
        raise DeriveError("the accepted vectors are not the accepted miners")
    if accepted:
        agg = aggregate_flat(rules.rule, accepted, task.param_shapes)
        params, opt_state = apply_update(task.optimizer, state.params, state.opt_state, agg)
    else:
        params, opt_state = dict(state.params), state.opt_state
    block = Block(
        chain_id=g.chain_id,
        height=h,
        prev_hash=state.head,
        round_seed=chain_round_seed(rules.genesis_hash, state.head, h).hex(),
        beacon=inputs.beacon.hex(),
        task=g.task,
        model_before=state.model_hash,
        model_after=model_hash(params),
        rule=rules.rule.name,
        submissions=tuple(records),
        rewards=payout.rewards,
        penalties=tuple((p.address, p.amount, p.code) for p in payout.penalties),
        validator_fees=payout.validator_fees,
    )
    try:
        check_block(block)
    except BlockError as exc:  # a bug here, never the input's fault
        raise DeriveError(f"derived block is inconsistent: {exc}") from None
    return Derived(block, payout, params, opt_state, accepted, verification)


def derive_round(
    rules: RoundRules,
    state: ChainState,
    inputs: RoundInputs,
    miner_keys: Mapping[str, bytes],
    proof: BeaconProof | None = None,
) -> Derived:
    """The block of a round, as the primary proposes it (check, judge, settle)."""
    check_round(rules, state, inputs, miner_keys, proof)
    judged, verification = judge_round(rules, state, inputs)
    verdicts = {a: j.verdict for a, j in judged.items()}
    vectors = accepted_vectors(rules, state, inputs, verdicts, verification.accepted)
    return settle_round(rules, state, inputs, verdicts, vectors, verification)


def first_difference(a: Block, b: Block) -> str:
    """The first field in which two blocks differ ("" when equal)."""
    da, db = a.to_dict(), b.to_dict()
    for key in da:
        if da[key] != db[key]:
            return key
    return ""


def rederive_block(
    rules: RoundRules,
    state: ChainState,
    inputs: RoundInputs,
    miner_keys: Mapping[str, bytes],
    proposed: Block,
    proof: BeaconProof,
) -> Derived:
    """A backup's check of a proposed block (raises :class:`DeriveError` naming what differs):
    check the frozen set and the beacon's reveals, judge, reconcile with the proposed verdicts,
    settle, and compare the whole block."""
    check_round(rules, state, inputs, miner_keys, proof)
    judged, verification = judge_round(rules, state, inputs)

    def recheck_one(miner: str, own: Judged) -> Judged:
        return recheck_judged(rules, state, inputs, own, miner)

    verdicts = reconcile(rules, judged, proposed.submissions, recheck_one)
    vectors = accepted_vectors(rules, state, inputs, verdicts, verification.accepted)
    derived = settle_round(rules, state, inputs, verdicts, vectors, verification)
    diff = first_difference(derived.block, proposed)
    if diff:
        raise DeriveError(f"block.{diff} differs from the re-derived block")
    return derived


def settle_committed(
    rules: RoundRules,
    state: ChainState,
    inputs: RoundInputs,
    committed: Block,
) -> Derived:
    """Re-execute a final block from its own verdicts (no re-compute): the amounts and the
    model after must come out as recorded (raises :class:`DeriveError` otherwise)."""
    verdicts = {r.miner: r.verdict for r in committed.submissions}
    vectors = accepted_vectors(rules, state, inputs, verdicts)
    derived = settle_round(rules, state, inputs, verdicts, vectors)
    diff = first_difference(derived.block, committed)
    if diff:
        raise DeriveError(f"committed block.{diff} differs from its re-execution")
    return derived
