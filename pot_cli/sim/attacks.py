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
=================  =====================================================  ===================

Checks marked "spot" are probabilistic when statistics do not flag the forgery (they are
caught with probability ``spot_check_rate``); the others are caught every time.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from pot_cli.training.codec import (
    Compression,
    encode_gradient,
    max_payload_bytes,
    write_safetensors,
)
from pot_cli.training.errors import TrainingError
from pot_cli.training.gradients import Gradient, Params, compute_gradient
from pot_cli.training.tasks import Task

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


def forge(attack: str, ctx: ForgeContext) -> bytes:
    """The payload bytes of one forged submission."""
    task = ctx.task
    gen = torch.Generator().manual_seed(ctx.seed)
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
