"""Verification of a round's submissions: accept or reject each, with the check and a reason.

Checks, cheapest first:

1. **Structure** (every submission): the codec's checks (size before parsing, header bound to
   the round's task / model hash / height / compression, names, shapes, dtypes, finite values),
   then an all-zero gradient (a free rider) is refused.
2. **Robust statistics** (every submission): the gradient's norm against the round's median
   norm, its direction against the coordinate-wise median of the other submissions, and a **copy
   check**: cosine similarity with every other submission of the round and with the previous
   round's submissions. Statistics never reject on their own: honest gradients on small batches
   can be legitimately unusual, and one wrongly rejected honest miner is a failure. A flagged
   submission is instead *always* re-computed (step 3), so a flag costs one gradient
   computation and an honest miner is cleared by its own recompute. For a copy pair both sides
   are re-computed: the original matches its batch, the copier does not.
3. **Spot check**: the validator re-computes the gradient on the submission's assigned batch
   (the same :func:`compute_gradient`) **in the numerics the miner declared** in its signed
   header (fp32, bf16 or fp16 autocast), compresses it the same way and compares: relative L2
   error ``|g_sub - g_ref| / |g_ref|`` within ``tolerance`` (and, for topk, the sent
   coordinates must carry at least ``topk_support_energy`` of the true top-k energy). Besides
   the flagged ones (and those within the band of a flag, and new identities on probation:
   ``RoundContext.always_check``), each submission is re-computed with probability
   ``spot_check_rate``, drawn per miner from the round seed and the round's beacon
   (``protocol/beacon.py``), so no miner knows it when it submits.

The tolerance is calibrated in :mod:`pot_cli.sim.calibration` against the honest
numerical differences of :class:`~pot_cli.training.gradients.Numerics`. Re-computing in the
declared precision is what makes one tolerance separate honest from forged work: within one
precision, thread count and batch order move a gradient by at most ~1e-3 (relative L2), while
across precisions (an fp32 recompute of a bf16 gradient) the gap reaches 0.3 on a trained
digits model, as large as the gap between a fresh gradient and one five rounds stale.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from pot_cli.crypto import sha256_hex
from pot_cli.training.aggregation import sort_rows
from pot_cli.training.assignment import (
    assign_batch,
    select_spot_checks,
    spot_check_seed,
    uniform_draw,
)
from pot_cli.training.codec import (
    Compression,
    DecodedGradient,
    compress_vector,
    decode_gradient,
    int8_round_trip,
    topk_count,
)
from pot_cli.training.errors import CodecError, TrainingError
from pot_cli.training.gradients import Gradient, Numerics, Params, compute_gradient
from pot_cli.training.state import flatten
from pot_cli.training.tasks import Task

DEFAULT_SPOT_CHECK_RATE = 0.1
# Relative L2 error allowed between a submission and the validator's recompute, when the task
# does not set its own (``spot_check_tolerance`` in the task TOML). It is a property of the
# task: calibrated per task with ``pot bench calibrate`` (see calibration.py, BENCHMARKS.md).
DEFAULT_TOLERANCE = 0.1


@dataclass(frozen=True)
class VerificationPolicy:
    spot_check_rate: float = DEFAULT_SPOT_CHECK_RATE
    tolerance: float | None = None  # None: the task's calibrated spot_check_tolerance
    norm_factor: float = 4.0  # flag norm > factor x median or < median / factor
    min_cosine: float = 0.02  # flag cosine with the others' median gradient below this
    copy_cosine: float = 0.99  # flag near-duplicates at or above this cosine
    # Declared band around each statistics threshold (log-ratio for the norm, absolute for the
    # cosines). Every submission within ``2 * flag_band`` of a threshold, or past it, is
    # re-computed, so a statistic that lands on different sides of a threshold on two
    # validators (float reductions differ in the last bits across threads and CPUs) leads both
    # to the same re-compute instead of to different verdicts (see protocol/derive.py).
    flag_band: float = 1e-3
    # Suspicion: a submission whose norm or direction lies ``z`` robust deviations (median
    # absolute deviations x 1.4826) away from the round's is re-computed with probability
    # rising linearly from 0 at ``suspicion_start`` to 1 at ``suspicion_full``, besides the
    # random sample: a forgery that stays statistically unremarkable is bounded in what it can
    # do to the model, and one that is not is re-computed (ARCHITECTURE.md: "Soundness").
    suspicion_start: float = 2.5
    suspicion_full: float = 5.0
    topk_support_energy: float = 0.8
    # The validator's own way of computing (threads, device); the precision of a recompute is
    # always the one the submission declares.
    numerics: Numerics = field(default_factory=Numerics)

    def __post_init__(self) -> None:
        if not 0.0 <= self.spot_check_rate <= 1.0:
            raise TrainingError(f"spot-check rate must be in [0, 1], got {self.spot_check_rate}")
        if self.tolerance is not None and not self.tolerance > 0:
            raise TrainingError(f"tolerance must be positive, got {self.tolerance}")
        if not 0.0 <= self.flag_band < 0.1:
            raise TrainingError(f"flag band must be in [0, 0.1), got {self.flag_band}")
        if not 0.0 < self.suspicion_start < self.suspicion_full:
            raise TrainingError("suspicion thresholds must satisfy 0 < start < full")

    def tolerance_for(self, task: Task) -> float:
        return self.tolerance if self.tolerance is not None else task.spot_check_tolerance


@dataclass(frozen=True)
class Submission:
    address: str
    payload: bytes
    # SHA-256 hex of ``payload`` when the caller has already computed it (a node hashes every
    # payload once, to check the miner's signed commitment); computed here otherwise.
    payload_hash: str | None = None


@dataclass(frozen=True)
class RoundContext:
    """What a validator knows about the round being verified."""

    task: Task
    height: int
    round_seed: bytes
    params: Params
    model_hash: str
    compression: Compression = field(default_factory=Compression)
    previous: Sequence[torch.Tensor] = ()  # flat gradients accepted in earlier rounds
    # Unknown to miners until the set is frozen (protocol/beacon.py: every validator's
    # revealed layer); it salts the spot-check sample against grinding.
    beacon: bytes = b""
    # Re-compute every submission (the beacon fell back: a reveal was withheld).
    full_check: bool = False
    # Miners whose every submission is re-computed (new identities on probation).
    always_check: frozenset[str] = frozenset()

    def decode(self, payload: bytes) -> DecodedGradient:
        """A payload decoded for this round (raises :class:`CodecError`)."""
        return decode_gradient(
            self.task,
            payload,
            expected_model_hash=self.model_hash,
            expected_height=self.height,
            expected_compression=self.compression,
        )


# the statistics flags, in the order tested
FLAG_CHECKS = ("norm", "direction", "copy", "suspicion")
# robust scales never below these (a round of near-identical gradients has a MAD near 0)
MIN_COSINE_SCALE = 0.02
MIN_LOG_NORM_SCALE = 0.05


@dataclass(frozen=True)
class Statistics:
    """What the statistics step measured of one decoded submission."""

    norm_ratio: float  # its norm / the round's median norm
    cosine: float  # with the others' coordinate-wise median (1.0 with fewer than 3)
    copy_cosine: float  # highest with another submission, this round or earlier (-1.0: none)
    # the suspicion draw: re-compute probability minus this miner's uniform draw (>= 0: drawn)
    suspicion: float = -1.0

    def distances(self, policy: VerificationPolicy) -> dict[str, float]:
        """How far past its threshold each statistic lies (> 0: flagged, < 0: clear), on
        the band's scale: log-ratio for the norm, absolute for the cosines."""
        return {
            "norm": abs(math.log(max(self.norm_ratio, 1e-300))) - math.log(policy.norm_factor),
            "direction": policy.min_cosine - self.cosine,
            "copy": self.copy_cosine - policy.copy_cosine,
            "suspicion": self.suspicion,
        }


@dataclass(frozen=True)
class Verdict:
    address: str
    accepted: bool
    check: str  # "ok" or the check that rejected: codec, zero, spot-check, copy, norm, direction
    reason: str
    flags: tuple[str, ...] = ()
    spot_checked: bool = False
    rel_error: float | None = None
    sampled: bool = False  # in the round's random spot-check sample
    statistics: Statistics | None = None  # None: refused before the statistics step
    support_energy: float | None = None  # topk: the re-compute's energy on the sent support


@dataclass
class RoundVerification:
    verdicts: dict[str, Verdict]
    # address -> the accepted gradient as the codec decoded it: one flat float32 vector in the
    # task's canonical order (``training.state.unflatten`` gives per-parameter views), in
    # sorted-address order; ``aggregation.aggregate_flat`` combines them as they are.
    accepted: dict[str, torch.Tensor]
    spot_seed: bytes
    recomputed: int = 0
    seconds: float = 0.0
    recompute_seconds: float = 0.0
    # of which the random spot-check sample (the rest: flagged submissions outside it)
    sample_recompute_seconds: float = 0.0

    @property
    def rejected(self) -> dict[str, Verdict]:
        return {a: v for a, v in self.verdicts.items() if not v.accepted}


@dataclass(frozen=True)
class SpotCheckResult:
    passed: bool
    rel_error: float
    support_energy: float | None = None

    def describe(self, tolerance: float) -> str:
        text = (
            f"recomputed gradient differs: relative error {self.rel_error:.3g} "
            f"(tolerance {tolerance:g})"
        )
        if self.support_energy is not None:
            text += f", top-k support energy {self.support_energy:.3f}"
        return text


def _norm(v: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(v.to(torch.float64)))


def gradient_discrepancy(
    task: Task,
    submitted: DecodedGradient,
    reference: Gradient,
    compression: Compression,
) -> tuple[float, float | None]:
    """(relative L2 error, top-k support energy or None) of a submission against a recompute."""
    ref = flatten(reference, task.param_shapes)
    sub = submitted.vector
    if compression.mode == "topk" and submitted.support is not None:
        s = submitted.support
        # the reference's values on the sent coordinates, quantized as the sender's were
        ref_s = int8_round_trip(ref[s])
        err = _norm(sub[s] - ref_s) / max(_norm(ref_s), 1e-30)
        best = torch.topk(ref.abs(), topk_count(ref.numel(), compression.topk_fraction)).values
        energy = _norm(ref_s) ** 2 / max(_norm(best) ** 2, 1e-60)
        return err, energy
    ref_c = compress_vector(ref, compression)
    return _norm(sub - ref_c) / max(_norm(ref_c), 1e-30), None


def spot_check(
    task: Task,
    params: Params,
    indices: Sequence[int],
    submitted: DecodedGradient,
    compression: Compression,
    policy: VerificationPolicy,
) -> SpotCheckResult:
    """Re-compute the gradient on ``indices``, in the precision ``submitted`` declares, and
    compare it with ``submitted``."""
    numerics = replace(policy.numerics, dtype=submitted.header.numerics)
    reference = compute_gradient(task, params, indices, numerics)
    err, energy = gradient_discrepancy(task, submitted, reference, compression)
    passed = math.isfinite(err) and err <= policy.tolerance_for(task)
    if energy is not None and energy < policy.topk_support_energy:
        passed = False
    return SpotCheckResult(passed, err, energy)


def recheck_decoded(
    ctx: RoundContext, address: str, submitted: DecodedGradient, policy: VerificationPolicy
) -> SpotCheckResult:
    """Re-compute one decoded submission on its assigned batch and compare."""
    task = ctx.task
    indices = assign_batch(ctx.round_seed, address, task.train_size, task.batch_size)
    return spot_check(task, ctx.params, indices, submitted, ctx.compression, policy)


def recheck(ctx: RoundContext, sub: Submission, policy: VerificationPolicy) -> SpotCheckResult:
    """Re-compute one submission on demand (a backup checking a slash it was not itself led
    to re-compute); raises :class:`CodecError` when the payload does not decode."""
    return recheck_decoded(ctx, sub.address, ctx.decode(sub.payload), policy)


def _leave_one_out_cosines(vecs: list[torch.Tensor], norms: list[float]) -> list[float]:
    """Cosine of each vector with the coordinate-wise median of the *other* vectors.

    Leaving the vector itself out matters: a forged vector inside the median pulls the
    reference towards itself (pure noise would look mildly aligned). The leave-one-out median
    is read off one coordinate-wise sort with element-wise selects: for N-1 odd, the others'
    median is ``s[m+1]`` where the vector is at or below ``s[m]`` (m = N/2 - 1), else ``s[m]``;
    for N-1 even it is the mean of the two middle values that remain.
    """
    s = sort_rows(vecs)
    n = len(vecs)
    out = []
    for v, norm in zip(vecs, norms, strict=True):
        if n % 2 == 0:
            m = n // 2 - 1
            ref = torch.where(v <= s[m], s[m + 1], s[m])
        else:
            k = (n - 1) // 2
            low = (s[k] + s[k + 1]) / 2.0  # v below the middle value
            high = (s[k - 1] + s[k]) / 2.0  # v above it
            mid = (s[k - 1] + s[k + 1]) / 2.0  # v is the middle value
            ref = torch.where(v < s[k], low, torch.where(v > s[k], high, mid))
        ref_norm = float(torch.linalg.vector_norm(ref))
        out.append(float(v @ ref) / max(norm * ref_norm, 1e-30))
    return out


def _robust_scale(values: list[float], center: float, floor: float) -> float:
    deviations = [abs(v - center) for v in values]
    return max(1.4826 * statistics.median(deviations), floor)


def _suspicion(
    stats: dict[str, Statistics], policy: VerificationPolicy
) -> dict[str, tuple[float, float]]:
    """Per miner: (robust deviation score, re-compute probability). The score is the larger
    of the norm's (|log ratio to the median| in robust deviations) and the direction's (how
    far below the round's median cosine, in robust deviations)."""
    if not stats:
        return {}
    logs = {a: math.log(max(st.norm_ratio, 1e-300)) for a, st in stats.items()}
    cos = {a: st.cosine for a, st in stats.items()}
    log_scale = _robust_scale(list(logs.values()), 0.0, MIN_LOG_NORM_SCALE)
    med_cos = statistics.median(list(cos.values()))
    cos_scale = _robust_scale(list(cos.values()), med_cos, MIN_COSINE_SCALE)
    out: dict[str, tuple[float, float]] = {}
    span = policy.suspicion_full - policy.suspicion_start
    for a in stats:
        score = max(abs(logs[a]) / log_scale, (med_cos - cos[a]) / cos_scale)
        out[a] = (score, min(max((score - policy.suspicion_start) / span, 0.0), 1.0))
    return out


def _no_clock() -> float:
    return 0.0


def verify_round(
    ctx: RoundContext,
    submissions: Sequence[Submission],
    policy: VerificationPolicy,
    *,
    clock: Callable[[], float] | None = None,
) -> RoundVerification:
    """Verify every submission of a round; returns verdicts and the accepted gradients (flat
    vectors). Repeats of one (address, payload hash) count as one submission; different
    payloads from one address are all refused (``duplicate``).

    ``clock`` (e.g. ``time.perf_counter``) times the work into the result's ``seconds``
    fields; without one they are 0 (verification itself reads no clock: it is sans-IO, as the
    protocol that runs it)."""
    now = clock or _no_clock
    t0 = now()
    task = ctx.task
    verdicts: dict[str, Verdict] = {}
    decoded: dict[str, DecodedGradient] = {}
    # Every distinct (address, payload hash) submitted, a miner's different payloads included.
    # A byte-identical repeat of a submission (same address, same payload hash) is the same
    # submission: it is verified once and counted once, so replaying an honest miner's
    # submission can never get it refused.
    unique: dict[tuple[str, str], Submission] = {}
    for s in submissions:
        key = (s.address, s.payload_hash or sha256_hex(bytes(s.payload)))
        unique.setdefault(key, s)
    submitted = sorted(unique)
    counts = Counter(a for a, _ in submitted)
    for (address, _), sub in sorted(unique.items(), key=lambda item: item[0]):
        if counts[address] > 1:
            # different payloads from one miner: all are refused, whichever came first
            verdicts[address] = Verdict(
                address,
                False,
                "duplicate",
                f"{counts[address]} submissions from one miner in a round",
            )
            continue
        try:
            d = ctx.decode(sub.payload)
        except CodecError as exc:
            verdicts[sub.address] = Verdict(
                sub.address, False, "codec", f"{exc.reason}: {exc.detail}"
            )
            continue
        amax = float(d.vector.abs().max())
        if amax == 0.0:
            verdicts[sub.address] = Verdict(
                sub.address, False, "zero", "all-zero gradient (no work)"
            )
            continue
        if not math.isfinite(amax):  # the codec refuses these; never let one reach the model
            verdicts[sub.address] = Verdict(
                sub.address, False, "codec", "non-finite: decoded gradient holds NaN or Inf"
            )
            continue
        decoded[sub.address] = d

    seed = spot_check_seed(ctx.round_seed, ctx.beacon)
    addresses = sorted(decoded)
    flags: dict[str, list[str]] = {a: [] for a in addresses}
    stats: dict[str, Statistics] = {}
    if addresses:
        vecs = [decoded[a].vector for a in addresses]
        mat = torch.stack(vecs)
        norms = torch.linalg.vector_norm(mat, dim=1).clamp_min(1e-30)
        median_norm = float(norms.median())
        if len(addresses) >= 3:
            cosines = _leave_one_out_cosines(vecs, norms.tolist())
        else:
            cosines = [1.0] * len(addresses)
        sims = ((mat @ mat.T) / torch.outer(norms, norms)).tolist()
        prev_best: list[float] = []
        if ctx.previous:
            prev = torch.stack(list(ctx.previous))
            prev_norms = torch.linalg.vector_norm(prev, dim=1).clamp_min(1e-30)
            prev_best = ((mat @ prev.T) / torch.outer(norms, prev_norms)).amax(dim=1).tolist()
        for i, a in enumerate(addresses):
            n = float(norms[i])
            if n > policy.norm_factor * median_norm or n * policy.norm_factor < median_norm:
                flags[a].append(f"norm: {n / median_norm:.3g}x the round median")
            if cosines[i] < policy.min_cosine:
                flags[a].append(f"direction: cosine {cosines[i]:.3f} to the round median")
            for j, b in enumerate(addresses):
                if j != i and sims[i][j] >= policy.copy_cosine:
                    flags[a].append(f"copy: cosine {sims[i][j]:.4f} with {b}")
                    break
            if prev_best and prev_best[i] >= policy.copy_cosine:
                flags[a].append(f"copy: cosine {prev_best[i]:.4f} with an earlier round")
            others = [sims[i][j] for j in range(len(addresses)) if j != i]
            stats[a] = Statistics(
                n / median_norm, cosines[i], max(others + prev_best[i : i + 1] + [-1.0])
            )
        for a, (score, chance) in _suspicion(stats, policy).items():
            draw = chance - uniform_draw(seed, f"/suspicion/{a}".encode())
            stats[a] = replace(stats[a], suspicion=draw)
            if draw >= 0.0:
                flags[a].append(
                    f"suspicion: {score:.1f} robust deviations from the round "
                    f"(re-computed with probability {chance:.2f})"
                )

    rate = 1.0 if ctx.full_check else policy.spot_check_rate
    sample = set(select_spot_checks(seed, addresses, rate)) | (ctx.always_check & set(addresses))
    margin = 2.0 * policy.flag_band
    in_margin = {a for a in addresses if max(stats[a].distances(policy).values()) >= -margin}
    to_check = sample | in_margin | {a for a in addresses if flags[a]}
    accepted: dict[str, torch.Tensor] = {}

    def recompute(a: str) -> SpotCheckResult:
        return recheck_decoded(ctx, a, decoded[a], policy)

    checked = [a for a in addresses if a in to_check]
    results: dict[str, SpotCheckResult] = {}
    t_rec = t_sample = 0.0
    for a in checked:
        t1 = now()
        results[a] = recompute(a)
        dt = now() - t1
        t_rec += dt
        if a in sample:
            t_sample += dt
    recomputed = len(checked)
    for a in addresses:
        d = decoded[a]
        fl = tuple(flags[a])
        sampled, st = a in sample, stats[a]
        if a not in to_check:
            verdicts[a] = Verdict(
                a, True, "ok", "passed structure and statistics", fl, statistics=st
            )
            accepted[a] = d.vector
            continue
        res = results[a]
        if res.passed:
            note = "flag cleared by recompute" if fl else "spot check passed"
            verdicts[a] = Verdict(
                a, True, "ok", note, fl, True, res.rel_error, sampled, st, res.support_energy
            )
            accepted[a] = d.vector
        else:
            check = fl[0].split(":", 1)[0] if fl else "spot-check"
            reason = res.describe(policy.tolerance_for(task))
            if fl:
                reason = f"{'; '.join(fl)}; {reason}"
            verdicts[a] = Verdict(
                a, False, check, reason, fl, True, res.rel_error, sampled, st, res.support_energy
            )
    return RoundVerification(
        verdicts=verdicts,
        accepted=accepted,
        spot_seed=seed,
        recomputed=recomputed,
        seconds=now() - t0,
        recompute_seconds=t_rec,
        sample_recompute_seconds=t_sample,
    )
