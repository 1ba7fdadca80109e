"""Calibration of the spot-check tolerance, and the honest-rejection count.

:func:`calibrate` trains a task honestly and, at checkpoints, measures the spot-check
discrepancy (relative L2 error, :func:`gradient_discrepancy`) of

* honest gradients computed with every :data:`MIXED_NUMERICS` variant (fp32 with 1 or 2
  threads, shuffled batch order, bf16 and fp16 autocast) against the validator's recompute in
  the precision the miner declares, after the wire compression (``honest_max``); for
  information, the same gradients against an fp32 recompute (``cross_precision_max``: what
  the tolerance would have to absorb if miners did not declare their precision); and
* forged gradients (stale by ``STALE_LAG`` rounds, wrong data, sign flip, noise, scaled,
  perturbed copy of another miner, lazy: half the assigned batch; stale and wrong data also
  computed and declared in bf16) against the recompute; and, for information, two near-honest
  forgeries closer to the tolerance: a gradient only one round stale, and a lazy one that skips
  only 1/8 of its batch (how much work a miner could leave out unnoticed).

The tolerance is sound when the largest honest error is well below it and the smallest forged
error well above it; the report gives both margins.

:func:`honest_rejections` runs many honest submissions with mixed numerics through
:func:`verify_round` with every submission re-computed, and counts rejections (target: 0).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from pot_cli.crypto import hash_object
from pot_cli.sim.attacks import PERTURBATION, SCALE, STALE_LAG, lazy_indices
from pot_cli.sim.pot import miner_identities
from pot_cli.training.aggregation import AggregationRule, aggregate, aggregate_flat
from pot_cli.training.assignment import assign_batch, round_seed
from pot_cli.training.codec import Compression, decode_gradient, encode_gradient
from pot_cli.training.errors import TrainingError
from pot_cli.training.gradients import Gradient, Numerics, compute_gradient
from pot_cli.training.optim import apply_update, init_optimizer_state
from pot_cli.training.state import model_hash
from pot_cli.training.tasks import Task
from pot_cli.training.verification import (
    RoundContext,
    Submission,
    VerificationPolicy,
    gradient_discrepancy,
    verify_round,
)

# fp16 autocast runs single-threaded: on CPU its multi-threaded kernels are pathologically
# slow (digits: 1.3 s per step with 2 threads vs 0.045 s with 1), and a miner would not use it.
MIXED_NUMERICS: tuple[Numerics, ...] = (
    Numerics(),
    Numerics(threads=1),
    Numerics(threads=2, order_seed=1),
    Numerics(dtype="bf16"),
    Numerics(dtype="fp16", threads=1),
    Numerics(dtype="bf16", threads=1, order_seed=2),
)


@dataclass
class CalibrationReport:
    task: str
    compression: str
    checkpoints: list[int]
    tolerance: float
    honest_max: dict[str, float] = field(default_factory=dict)
    cross_precision_max: dict[str, float] = field(default_factory=dict)
    forged_min: dict[str, float] = field(default_factory=dict)
    # A gradient only one round stale is not an attack we claim to catch: it is reported to
    # show how close it comes (it is near-honest work).
    stale_one_round_min: float | None = None
    # Likewise a lazy gradient on 7/8 of the batch: the smallest saving a lazy miner could want.
    lazy_eighth_min: float | None = None
    samples: int = 0

    @property
    def worst_honest(self) -> float:
        return max(self.honest_max.values())

    @property
    def closest_forged(self) -> float:
        return min(self.forged_min.values())

    def to_dict(self) -> dict[str, object]:
        return {
            "task": self.task,
            "compression": self.compression,
            "checkpoints": self.checkpoints,
            "tolerance": self.tolerance,
            "honest_max_rel_error": self.honest_max,
            "cross_precision_max_rel_error": self.cross_precision_max,
            "forged_min_rel_error": self.forged_min,
            "worst_honest": self.worst_honest,
            "closest_forged": self.closest_forged,
            "stale_one_round_min_rel_error": self.stale_one_round_min,
            "lazy_eighth_min_rel_error": self.lazy_eighth_min,
            "honest_margin": self.tolerance / self.worst_honest if self.worst_honest else None,
            "forged_margin": self.closest_forged / self.tolerance,
            "samples": self.samples,
        }


def _err(
    task: Task,
    grad: Gradient,
    ref: Gradient,
    compression: Compression,
    mh: str,
    numerics: str = "fp32",
) -> float:
    payload = encode_gradient(
        task, grad, model_hash=mh, height=0, compression=compression, numerics=numerics
    )
    decoded = decode_gradient(task, payload)
    err, _energy = gradient_discrepancy(task, decoded, ref, compression)
    return err


def _lower(old: float | None, new: float) -> float:
    return new if old is None or new < old else old


def calibrate(
    task: Task,
    *,
    rounds: int = 40,
    miners: int = 4,
    checkpoints: int = 4,
    seed: str = "calibration",
    numerics: Sequence[Numerics] = MIXED_NUMERICS,
    compression: Compression = Compression(),
    policy: VerificationPolicy = VerificationPolicy(),
) -> CalibrationReport:
    """Train ``rounds`` honest rounds; at ``checkpoints`` evenly spaced rounds, measure honest and
    forged spot-check errors for every miner."""
    if miners < 2:
        raise TrainingError("calibration needs at least 2 miners (a copier needs a victim)")
    addresses = [i.address for i in miner_identities(seed, miners)]
    params = task.initial_params()
    state = init_optimizer_state(task.optimizer, params)
    history = [params]
    # evenly spaced, the first at the initial model and the last at the final round
    last = rounds - 1
    marks = sorted({(k * last) // max(1, checkpoints - 1) for k in range(checkpoints)} | {last})
    report = CalibrationReport(task.name, compression.label(), marks, policy.tolerance_for(task))
    gen = torch.Generator().manual_seed(0)

    def note(table: dict[str, float], key: str, value: float, worst: str) -> None:
        old = table.get(key)
        if old is None or (value > old if worst == "max" else value < old):
            table[key] = value

    for h in range(rounds):
        seed_h = round_seed(seed, h)
        batches = {a: assign_batch(seed_h, a, task.train_size, task.batch_size) for a in addresses}
        grads = {a: compute_gradient(task, params, batches[a], policy.numerics) for a in addresses}
        if h in marks:
            mh = model_hash(params)
            for k, a in enumerate(addresses):
                ref = grads[a]
                refs = {"fp32": ref}
                for num in numerics:
                    if num.dtype not in refs:
                        declared = replace(policy.numerics, dtype=num.dtype)
                        refs[num.dtype] = compute_gradient(task, params, batches[a], declared)
                    g = compute_gradient(task, params, batches[a], num)
                    e = _err(task, g, refs[num.dtype], compression, mh, num.dtype)
                    note(report.honest_max, num.label(), e, "max")
                    e = _err(task, g, ref, compression, mh)
                    note(report.cross_precision_max, num.label(), e, "max")
                    report.samples += 1
                other = addresses[(k + 1) % len(addresses)]
                elsewhere = assign_batch(
                    round_seed(seed, h + 1_000_000), a, task.train_size, task.batch_size
                )
                forged: dict[str, Gradient] = {
                    "wrong-data": compute_gradient(task, params, elsewhere),
                    "lazy": compute_gradient(task, params, lazy_indices(batches[a])),
                    "sign-flip": {n: -t for n, t in ref.items()},
                    "scaled": {n: t * SCALE for n, t in ref.items()},
                    "copy-perturbed": {
                        n: t
                        + torch.randn(t.shape, generator=gen)
                        * (PERTURBATION * float(t.norm()))
                        / max(t.numel() ** 0.5, 1.0)
                        for n, t in grads[other].items()
                    },
                }
                total = sum(float(t.norm()) ** 2 for t in ref.values()) ** 0.5
                noise = {n: torch.randn(t.shape, generator=gen) for n, t in ref.items()}
                nn = sum(float(t.norm()) ** 2 for t in noise.values()) ** 0.5
                forged["noise"] = {n: t * (total / nn) for n, t in noise.items()}
                if len(history) > 1:
                    one = compute_gradient(task, history[-2], batches[a])
                    e1 = _err(task, one, ref, compression, mh)
                    report.stale_one_round_min = _lower(report.stale_one_round_min, e1)
                eighth = compute_gradient(task, params, lazy_indices(batches[a], 7 / 8))
                e8 = _err(task, eighth, ref, compression, mh)
                report.lazy_eighth_min = _lower(report.lazy_eighth_min, e8)
                if len(history) > STALE_LAG:
                    forged["stale"] = compute_gradient(task, history[-1 - STALE_LAG], batches[a])
                for name, g in forged.items():
                    note(report.forged_min, name, _err(task, g, ref, compression, mh), "min")
                # The same forgeries computed and declared in bf16, checked by a bf16 recompute.
                bf16 = replace(policy.numerics, dtype="bf16")
                ref16 = refs.get("bf16") or compute_gradient(task, params, batches[a], bf16)
                forged16 = {"wrong-data/bf16": compute_gradient(task, params, elsewhere, bf16)}
                if len(history) > STALE_LAG:
                    old_model = history[-1 - STALE_LAG]
                    forged16["stale/bf16"] = compute_gradient(task, old_model, batches[a], bf16)
                for name, g in forged16.items():
                    e = _err(task, g, ref16, compression, mh, "bf16")
                    note(report.forged_min, name, e, "min")
        agg = aggregate(AggregationRule("mean"), grads, task.param_shapes)
        params, state = apply_update(task.optimizer, params, state, agg)
        history = [*history[-STALE_LAG:], params]
    return report


@dataclass
class HonestReport:
    task: str
    submissions: int
    rejected: int
    flagged: int
    rounds: int
    miners: int
    max_rel_error: float
    by_numerics: dict[str, int]
    rejections: list[str]
    seconds: float
    tolerance: float

    def to_dict(self) -> dict[str, object]:
        return {
            "task": self.task,
            "submissions": self.submissions,
            "rejected": self.rejected,
            "flagged_then_cleared": self.flagged,
            "rounds": self.rounds,
            "miners": self.miners,
            "max_rel_error": self.max_rel_error,
            "tolerance": self.tolerance,
            "submissions_by_numerics": self.by_numerics,
            "rejections": self.rejections[:20],
            "seconds": self.seconds,
        }


def honest_rejections(
    task: Task,
    *,
    submissions: int = 10_000,
    miners: int = 20,
    seed: str = "honest",
    numerics: Sequence[Numerics] = MIXED_NUMERICS,
    compression: Compression = Compression(),
    policy: VerificationPolicy = VerificationPolicy(spot_check_rate=1.0),
    progress: Callable[[int, int, int], None] | None = None,
) -> HonestReport:
    """Run ``submissions`` honest submissions (``miners`` per round, numerics rotating through
    ``numerics``) through :func:`verify_round` and count rejections. ``progress(done, total,
    rejected)`` is called after every round."""
    t0 = time.perf_counter()
    addresses = [i.address for i in miner_identities(seed, miners)]
    params = task.initial_params()
    state = init_optimizer_state(task.optimizer, params)
    rounds = -(-submissions // miners)
    done = rejected = flagged = 0
    worst = 0.0
    by_numerics: dict[str, int] = {}
    rejections: list[str] = []
    rule = AggregationRule()
    for h in range(rounds):
        seed_h = round_seed(seed, h)
        mh = model_hash(params)
        subs = []
        for k, a in enumerate(addresses[: min(miners, submissions - done)]):
            num = numerics[int(hash_object({"h": h, "k": k})[0]) % len(numerics)]
            by_numerics[num.label()] = by_numerics.get(num.label(), 0) + 1
            g = compute_gradient(
                task, params, assign_batch(seed_h, a, task.train_size, task.batch_size), num
            )
            payload = encode_gradient(
                task, g, model_hash=mh, height=h, compression=compression, numerics=num.dtype
            )
            subs.append(Submission(a, payload))
        ctx = RoundContext(task, h, seed_h, params, mh, compression)
        result = verify_round(ctx, subs, policy)
        done += len(subs)
        for a, v in result.verdicts.items():
            if v.rel_error is not None:
                worst = max(worst, v.rel_error)
            if v.flags and v.accepted:
                flagged += 1
            if not v.accepted:
                rejected += 1
                rejections.append(f"round {h} {a[:12]}: {v.check}: {v.reason}")
        if result.accepted:
            agg = aggregate_flat(rule, result.accepted, task.param_shapes)
            params, state = apply_update(task.optimizer, params, state, agg)
        if progress is not None:
            progress(done, submissions, rejected)
    return HonestReport(
        task=task.name,
        submissions=done,
        rejected=rejected,
        flagged=flagged,
        rounds=rounds,
        miners=miners,
        max_rel_error=worst,
        by_numerics=by_numerics,
        rejections=rejections,
        seconds=time.perf_counter() - t0,
        tolerance=policy.tolerance_for(task),
    )
