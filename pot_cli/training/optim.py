"""The optimizer validators apply to the aggregated gradient: SGD (momentum, weight decay) and
Adam, written with element-wise tensor operations only.

Element-wise IEEE operations (add, multiply, divide, square root) give the same bits whatever
the thread count or SIMD width; reductions and fused kernels may not. So the update path uses
no reductions, no ``alpha=`` fused forms, and runs on the CPU in float32, in the canonical
parameter order. :func:`apply_update` is pure: it returns new tensors and never mutates its
inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from pot_cli.training.errors import TrainingError
from pot_cli.training.state import tensors_hash
from pot_cli.training.tasks import OptimizerSpec

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class OptimizerState:
    """Step count and per-parameter buffers (``momentum`` for SGD; ``m`` and ``v`` for Adam)."""

    step: int
    buffers: Mapping[str, Mapping[str, torch.Tensor]]

    def hash(self) -> str:
        flat = {f"{kind}/{name}": t for kind, ts in self.buffers.items() for name, t in ts.items()}
        flat["step"] = torch.tensor([self.step], dtype=torch.int64)
        return tensors_hash(flat, "pot/optimizer-state/v1")


def init_optimizer_state(spec: OptimizerSpec, params: Mapping[str, torch.Tensor]) -> OptimizerState:
    zeros = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    if spec.kind == "sgd":
        return OptimizerState(0, {"momentum": zeros} if spec.momentum else {})
    if spec.kind == "adam":
        return OptimizerState(0, {"m": zeros, "v": {n: z.clone() for n, z in zeros.items()}})
    raise TrainingError(f"unknown optimizer {spec.kind!r}")


def apply_update(
    spec: OptimizerSpec,
    params: Mapping[str, torch.Tensor],
    state: OptimizerState,
    grad: Mapping[str, torch.Tensor],
) -> tuple[Tensors, OptimizerState]:
    """One optimizer step with gradient ``grad``: returns (new params, new state)."""
    if set(grad) != set(params):
        raise TrainingError("gradient and parameters name different tensors")
    step = state.step + 1
    new_params: Tensors = {}
    if spec.kind == "sgd":
        lr, mom, wd = spec.learning_rate, spec.momentum, spec.weight_decay
        new_mom: Tensors = {}
        for n in sorted(params):
            p = params[n]
            g = grad[n].to(torch.float32)
            if wd:
                g = g + p * wd
            if mom:
                g = state.buffers["momentum"][n] * mom + g
                new_mom[n] = g
            new_params[n] = p - g * lr
        return new_params, OptimizerState(step, {"momentum": new_mom} if mom else {})
    if spec.kind == "adam":
        b1, b2, eps, wd = spec.beta1, spec.beta2, spec.eps, spec.weight_decay
        bc1 = 1.0 - b1**step
        bc2_sqrt = (1.0 - b2**step) ** 0.5
        step_size = spec.learning_rate / bc1
        new_m: Tensors = {}
        new_v: Tensors = {}
        for n in sorted(params):
            p = params[n]
            g = grad[n].to(torch.float32)
            if wd:
                g = g + p * wd
            m = state.buffers["m"][n] * b1 + g * (1.0 - b1)
            v = state.buffers["v"][n] * b2 + (g * g) * (1.0 - b2)
            denom = torch.sqrt(v) / bc2_sqrt + eps
            new_params[n] = p - (m / denom) * step_size
            new_m[n], new_v[n] = m, v
        return new_params, OptimizerState(step, {"m": new_m, "v": new_v})
    raise TrainingError(f"unknown optimizer {spec.kind!r}")
