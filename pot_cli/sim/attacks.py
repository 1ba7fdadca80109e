"""Byzantine behaviours the simulator and benchmarks can play. Each forges one submission's
payload bytes for a round; the verifier must refuse it (see the check each one meets below).

=================  =====================================================  ===================
attack             what the miner sends                                   caught by
=================  =====================================================  ===================
sign-flip          minus its honest gradient                              direction / spot
scaled             its honest gradient x100                               norm / spot
noise              Gaussian noise with the norm of its honest gradient    direction / spot
garbage            random bytes the length of an honest payload           codec
zero               an all-zero gradient (free rider)                      zero
stale              honest gradient of the model ``STALE_LAG`` rounds old  spot check
copy               another miner's payload, byte for byte                 copy (+ recompute)
copy-perturbed     another miner's gradient + 1% noise                    copy (+ recompute)
wrong-data         gradient on a batch other than its assigned one        spot check
nan                an honest gradient with NaN and Inf entries            codec (non-finite)
wrong-shape        an honest payload with one tensor reshaped             codec (layout)
oversize           an honest payload padded past the size limit           codec (oversize)
lazy               its gradient on half of its assigned batch (half the   spot check
                   work, claimed as the whole)
inside-flags       a harmful vector aimed just inside the public          spot check
                   statistics flags: cosine to the others' median
                   ``min_cosine`` + ``INSIDE_FLAGS_MARGIN``, norm
                   ``INSIDE_FLAGS_NORM`` x ``norm_factor`` x their median
                   norm, the rest along a direction fixed for the whole
                   run and shared by the attackers (``group_seed``), plus
                   its own noise so that no two copies look alike (no
                   gradient is computed)
inside-suspicion   the same construction aimed inside the suspicion       spot check
                   score too: norm and cosine (to the others' median)
                   ``INSIDE_SUSPICION_SHARE`` x ``suspicion_start``
                   robust deviations from the honest ones' (estimated
                   from the gradients others published), so it looks
                   statistically unremarkable
partial            its gradient on ``PARTIAL_FRACTION`` of its batch,     spot check
                   scaled to the others' median norm (looks whole)
noisy-copy         its colluding ``partner``'s gradient (or another       spot check
                   miner's) + ``NOISY_COPY_NOISE`` relative noise,
                   orthogonal to it: cosine 0.9874, just clear of the
                   copy flag and its re-compute margin (two rewards for
                   one computation)
=================  =====================================================  ===================

Checks marked "spot" are probabilistic when statistics do not flag the forgery (they are
caught with probability ``spot_check_rate``); the others are caught every time.

The last four (:data:`ECONOMIC_ATTACKS`) know the verification policy's public thresholds
(``ForgeContext.policy``) and are built to pass the statistics flags (``inside-flags`` the
hard thresholds only, so the suspicion score may still send it to a re-compute), so mostly the
random spot check catches them; they are kept out of :data:`ATTACKS` (so ``mixed`` rotations, and
with them the default ``pot bench quality`` model hash, stay as they were) and are played by
``pot bench economics``. So is :class:`AdaptiveCheater` (kind ``adaptive``): a strategy over
rounds rather than one forgery: honest while its identity is new (its first
``probation_rounds`` accepted rounds), then whichever of :data:`ADAPTIVE_CHOICES` has paid it
best so far (each tried first), re-entering under a new identity when ejected (the
bench gives it the identities).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from pot_cli.training.codec import (
    Compression,
    encode_gradient,
    max_payload_bytes,
    write_safetensors,
)
from pot_cli.training.errors import TrainingError
from pot_cli.training.gradients import Gradient, Params, compute_gradient
from pot_cli.training.state import flatten, unflatten
from pot_cli.training.tasks import Task
from pot_cli.training.verification import (
    MIN_COSINE_SCALE,
    MIN_LOG_NORM_SCALE,
    VerificationPolicy,
)

ATTACKS = (
    "sign-flip",
    "scaled",
    "noise",
    "garbage",
    "zero",
    "stale",
    "copy",
    "copy-perturbed",
    "wrong-data",
    "nan",
    "wrong-shape",
    "oversize",
    "lazy",
)
MIXED = "mixed"
STALE_LAG = 5
SCALE = 100.0
PERTURBATION = 0.01
LAZY_FRACTION = 0.5  # share of its assigned batch a lazy miner computes on
# Flag-aware attacks (see the table): not in ATTACKS, which ``mixed`` rotates through.
ECONOMIC_ATTACKS = ("inside-flags", "inside-suspicion", "partial", "noisy-copy")
PARTIAL_FRACTION = 0.25  # share of its batch a partial miner computes on
# Relative noise of a noisy copy: the cosine 1/sqrt(1 + 0.16**2) = 0.9874 lies below the copy
# flag (0.99) by more than its re-compute margin (2 x flag_band = 0.002); 0.15 would not.
NOISY_COPY_NOISE = 0.16
INSIDE_FLAGS_MARGIN = 0.01  # cosine above min_cosine (the re-compute margin is 0.002)
INSIDE_FLAGS_NORM = 0.9  # x norm_factor x the others' median norm
INSIDE_SUSPICION_SHARE = 0.8  # of suspicion_start: the robust deviations it stays within


def lazy_indices(indices: Sequence[int], fraction: float = LAZY_FRACTION) -> list[int]:
    """The part of an assigned batch a lazy miner uses: its first ``fraction`` (at least one
    sample, at most all but one: a lazy miner skips something)."""
    k = min(max(1, round(len(indices) * fraction)), max(1, len(indices) - 1))
    return list(indices[:k])


def attack_for(attack: str, byzantine_index: int, height: int) -> str:
    """The attack a Byzantine miner plays in a round: ``attack`` itself, or for ``mixed`` a
    rotation through :data:`ATTACKS` (by miner and height, so every attack gets played)."""
    if attack == MIXED:
        return ATTACKS[(byzantine_index + height) % len(ATTACKS)]
    if attack not in ATTACKS:
        raise TrainingError(
            f"unknown attack {attack!r} (use one of {', '.join((*ATTACKS, MIXED))})"
        )
    return attack


@dataclass(frozen=True)
class ForgeContext:
    """What a Byzantine miner knows when it forges: the round, its batch, older models and the
    payloads other miners have published (a copier needs one)."""

    task: Task
    height: int
    model_hash: str
    params: Params
    history: Sequence[Params]  # older models, most recent last
    compression: Compression
    indices: Sequence[int]  # the attacker's assigned batch
    other_indices: Sequence[int]  # a batch other than the assigned one
    others: Mapping[str, bytes]  # address -> payload of miners who submitted already
    others_grads: Mapping[str, Gradient]
    seed: int
    # Optional, for the flag-aware attacks: the public verification policy (its thresholds),
    # a colluding partner's address (in ``others_grads``) and a seed shared by the attackers
    # of a run (a harmful direction fixed for the run).
    policy: VerificationPolicy | None = None
    partner: str | None = None
    group_seed: int = 0


def _encode(ctx: ForgeContext, grad: Mapping[str, torch.Tensor]) -> bytes:
    return encode_gradient(
        ctx.task, grad, model_hash=ctx.model_hash, height=ctx.height, compression=ctx.compression
    )


def _rewrite(payload: bytes, edit: str, task: Task, compression: Compression) -> bytes:
    """Re-serialize a (self-made) payload with one structural defect."""
    from safetensors.torch import load

    hlen = struct.unpack("<Q", payload[:8])[0]
    meta = json.loads(payload[8 : 8 + hlen])["__metadata__"]
    tensors = dict(load(payload))
    first = sorted(tensors)[0]
    float_name = next(n for n in sorted(tensors) if tensors[n].dtype == torch.float32)
    if edit == "nan":
        t = tensors[float_name].clone().reshape(-1)
        t[0] = float("nan")
        t[-1] = float("inf")
        tensors[float_name] = t.reshape(tensors[float_name].shape)
    elif edit == "wrong-shape":
        t = tensors[first]
        tensors[first] = torch.cat([t.reshape(-1), t.reshape(-1)[:1]]).contiguous()
    elif edit == "oversize":
        extra = max_payload_bytes(task, compression) // 4 + 1
        tensors["padding"] = torch.zeros(extra, dtype=torch.float32)
    return write_safetensors(tensors, meta)


def _median(values: list[float]) -> float:
    v = sorted(values)
    k = len(v) // 2
    return v[k] if len(v) % 2 else (v[k - 1] + v[k]) / 2.0


def _median_norm(ctx: ForgeContext) -> float | None:
    """The median norm of the gradients other miners published (None: none yet)."""
    if not ctx.others_grads:
        return None
    shapes = ctx.task.param_shapes
    return _median([float(flatten(g, shapes).norm()) for g in ctx.others_grads.values()])


def _coordinate_median(vecs: torch.Tensor) -> torch.Tensor:
    s = vecs.sort(dim=0).values
    n = s.shape[0]
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _aimed(
    ctx: ForgeContext, gen: torch.Generator, cosine: float, norm: float
) -> dict[str, torch.Tensor]:
    """A vector with ``cosine`` to the coordinate-wise median of the gradients others
    published and norm ``norm``; the rest along a direction fixed for the run and shared by
    the attackers (``group_seed``) plus its own noise (so that no two forgeries are copies)."""
    shapes = ctx.task.param_shapes
    vecs = torch.stack(
        [flatten(ctx.others_grads[a], shapes) for a in sorted(ctx.others_grads)]
    ).double()
    median = _coordinate_median(vecs)
    m = median / max(float(median.norm()), 1e-30)
    shared = torch.randn(m.numel(), generator=torch.Generator().manual_seed(ctx.group_seed))
    own = torch.randn(m.numel(), generator=gen)
    w = (shared + own).double()
    w = w - (w @ m) * m
    w = w / max(float(w.norm()), 1e-30)
    v = cosine * m + math.sqrt(1.0 - cosine * cosine) * w
    return unflatten((v * norm).float(), shapes)


def _inside_flags(ctx: ForgeContext, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A harmful vector just inside the hard statistics thresholds (see the module table)."""
    if not ctx.others_grads:
        raise TrainingError("an inside-flags attack needs other miners' gradients")
    policy = ctx.policy or VerificationPolicy()
    median_norm = _median_norm(ctx)
    assert median_norm is not None
    cosine = policy.min_cosine + INSIDE_FLAGS_MARGIN
    return _aimed(ctx, gen, cosine, INSIDE_FLAGS_NORM * policy.norm_factor * median_norm)


def _inside_suspicion(ctx: ForgeContext, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A harmful vector inside the suspicion score as well: the attacker estimates the round's
    robust spread of norms and cosines from the honest gradients it saw, as the verifier
    measures them (median absolute deviation x 1.4826, the verifier's floors), and stays
    ``INSIDE_SUSPICION_SHARE`` x ``suspicion_start`` deviations from the middle."""
    if len(ctx.others_grads) < 3:
        raise TrainingError("an inside-suspicion attack needs three other miners' gradients")
    policy = ctx.policy or VerificationPolicy()
    shapes = ctx.task.param_shapes
    vecs = [flatten(ctx.others_grads[a], shapes).double() for a in sorted(ctx.others_grads)]
    norms = [float(v.norm()) for v in vecs]
    cosines = []
    for i, v in enumerate(vecs):
        ref = _coordinate_median(torch.stack(vecs[:i] + vecs[i + 1 :]))
        cosines.append(float(v @ ref) / max(norms[i] * float(ref.norm()), 1e-30))
    median_norm = _median(norms)
    logs = [math.log(n / median_norm) for n in norms]
    log_scale = max(1.4826 * _median([abs(x) for x in logs]), MIN_LOG_NORM_SCALE)
    med_cos = _median(cosines)
    cos_scale = max(1.4826 * _median([abs(c - med_cos) for c in cosines]), MIN_COSINE_SCALE)
    k = INSIDE_SUSPICION_SHARE * policy.suspicion_start
    cosine = max(med_cos - k * cos_scale, policy.min_cosine + INSIDE_FLAGS_MARGIN)
    norm = median_norm * min(math.exp(k * log_scale), INSIDE_FLAGS_NORM * policy.norm_factor)
    return _aimed(ctx, gen, min(cosine, 0.99), norm)


def _noisy_copy(ctx: ForgeContext, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The partner's (or another miner's) gradient plus orthogonal relative noise."""
    if not ctx.others_grads:
        raise TrainingError("a noisy-copy attack needs another miner's gradient")
    victim = ctx.partner
    if victim is None or victim not in ctx.others_grads:
        victim = sorted(ctx.others_grads)[ctx.seed % len(ctx.others_grads)]
    g = flatten(ctx.others_grads[victim], ctx.task.param_shapes).double()
    unit = g / max(float(g.norm()), 1e-30)
    noise = torch.randn(g.numel(), generator=gen).double()
    noise = noise - (noise @ unit) * unit
    noise = noise * (NOISY_COPY_NOISE * float(g.norm()) / max(float(noise.norm()), 1e-30))
    return unflatten((g + noise).float(), ctx.task.param_shapes)


def forge(attack: str, ctx: ForgeContext) -> bytes:
    """The payload bytes of one forged submission."""
    task = ctx.task
    gen = torch.Generator().manual_seed(ctx.seed)
    if attack == "inside-flags":
        return _encode(ctx, _inside_flags(ctx, gen))
    if attack == "inside-suspicion":
        return _encode(ctx, _inside_suspicion(ctx, gen))
    if attack == "partial":
        part = compute_gradient(task, ctx.params, lazy_indices(ctx.indices, PARTIAL_FRACTION))
        target = _median_norm(ctx)
        if target is not None:
            norm = float(flatten(part, task.param_shapes).norm())
            part = {n: t * (target / max(norm, 1e-30)) for n, t in part.items()}
        return _encode(ctx, part)
    if attack == "noisy-copy":
        return _encode(ctx, _noisy_copy(ctx, gen))
    if attack in ("copy", "copy-perturbed"):
        if not ctx.others:
            raise TrainingError("a copy attack needs another miner's submission")
        victim = sorted(ctx.others)[ctx.seed % len(ctx.others)]
        if attack == "copy":
            return ctx.others[victim]
        g = ctx.others_grads[victim]
        noisy = {}
        for n, t in g.items():
            noise = torch.randn(t.shape, generator=gen)
            noisy[n] = t + noise * (
                PERTURBATION * float(t.norm()) / max(float(noise.norm()), 1e-30)
            )
        return _encode(ctx, noisy)
    if attack == "stale":
        old = ctx.history[-STALE_LAG] if len(ctx.history) >= STALE_LAG else ctx.history[0]
        return _encode(ctx, compute_gradient(task, old, ctx.indices))
    if attack == "wrong-data":
        return _encode(ctx, compute_gradient(task, ctx.params, ctx.other_indices))
    if attack == "lazy":
        return _encode(ctx, compute_gradient(task, ctx.params, lazy_indices(ctx.indices)))
    if attack == "zero":
        return _encode(ctx, {n: torch.zeros(s) for n, s in task.param_shapes.items()})
    honest = compute_gradient(task, ctx.params, ctx.indices)
    if attack == "sign-flip":
        return _encode(ctx, {n: -t for n, t in honest.items()})
    if attack == "scaled":
        return _encode(ctx, {n: t * SCALE for n, t in honest.items()})
    if attack == "noise":
        total = sum(float(t.norm()) ** 2 for t in honest.values()) ** 0.5
        fake = {n: torch.randn(s, generator=gen) for n, s in task.param_shapes.items()}
        fake_norm = sum(float(t.norm()) ** 2 for t in fake.values()) ** 0.5
        return _encode(ctx, {n: t * (total / fake_norm) for n, t in fake.items()})
    payload = _encode(ctx, honest)
    if attack == "garbage":
        return (
            torch.randint(0, 256, (len(payload),), generator=gen, dtype=torch.uint8)
            .numpy()
            .tobytes()
        )
    if attack in ("nan", "wrong-shape", "oversize"):
        return _rewrite(payload, attack, task, ctx.compression)
    raise TrainingError(f"unknown attack {attack!r}")


ADAPTIVE = "adaptive"
ADAPTIVE_CHOICES = ("partial", "inside-suspicion", "inside-flags")


@dataclass
class AdaptiveCheater:
    """A cheater that knows the defaults and learns from its own outcomes: honest while its
    current identity is new (until it has ``probation_rounds`` accepted rounds, when the chain
    puts new identities on probation), then the attack of :data:`ADAPTIVE_CHOICES` with the
    best mean payoff per play so far, each tried ``trials`` times first (ties: the earlier
    one, ``partial``, the cheaper). Its payoffs carry over from one identity to the next (the
    operator behind them learns); :meth:`new_identity` restarts only the probation count."""

    probation_rounds: int
    trials: int = 2
    accepted_rounds: int = 0  # of the current identity
    plays: dict[str, int] = field(default_factory=dict)
    payoff: dict[str, int] = field(default_factory=dict)

    def new_identity(self) -> None:
        self.accepted_rounds = 0

    def choose(self) -> str | None:
        """The attack to play this round; ``None``: honest work."""
        if self.accepted_rounds < self.probation_rounds:
            return None
        for attack in ADAPTIVE_CHOICES:
            if self.plays.get(attack, 0) < self.trials:
                return attack
        return max(
            ADAPTIVE_CHOICES,
            key=lambda a: (self.payoff[a] / self.plays[a], -ADAPTIVE_CHOICES.index(a)),
        )

    def record(self, played: str | None, accepted: bool, payoff: int) -> None:
        """The outcome of a round: ``payoff`` = its reward minus what it lost."""
        if accepted:
            self.accepted_rounds += 1
        if played is not None:
            self.plays[played] = self.plays.get(played, 0) + 1
            self.payoff[played] = self.payoff.get(played, 0) + payoff
