"""THE gradient function. Miner, spot check, centralized baseline and throughput benchmark all
call :func:`compute_gradient`; nothing else computes a task gradient.

A gradient is a ``dict[str, Tensor]`` in the task's canonical parameter order, CPU float32,
contiguous: the mean loss gradient over the batch.

:class:`Numerics` describes the honest ways two machines may differ when they compute the same
gradient: compute precision (fp32, or bf16/fp16 autocast), thread count and the order of the
samples inside the batch. The spot-check tolerance is calibrated against exactly these
(see :mod:`pot_cli.sim.calibration`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from pot_cli.training.errors import TrainingError
from pot_cli.training.tasks import Task

Gradient = dict[str, torch.Tensor]
Params = Mapping[str, torch.Tensor]

DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


@dataclass(frozen=True)
class Numerics:
    """How a gradient is computed. The default is the reference: CPU, fp32, current threads,
    samples in assignment order."""

    dtype: str = "fp32"
    threads: int | None = None
    order_seed: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise TrainingError(f"unknown dtype {self.dtype!r} (use one of {', '.join(DTYPES)})")
        if self.threads is not None and self.threads < 1:
            raise TrainingError(f"threads must be >= 1, got {self.threads}")

    def label(self) -> str:
        parts = [self.device, self.dtype]
        if self.threads is not None:
            parts.append(f"{self.threads}t")
        if self.order_seed is not None:
            parts.append(f"order{self.order_seed}")
        return "/".join(parts)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` intra-op threads, restoring the previous setting afterwards."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def reference_precision(device: torch.device) -> Iterator[None]:
    """On CUDA, compute in the precision the miner declares and nothing less: no TF32 for
    "fp32" matmuls and convolutions, no reduced-precision (bf16/fp16) split-K reductions under
    autocast. PyTorch allows some of these by default; each would move a GPU gradient away from
    the CPU validator's recompute in the same declared precision. Restores the flags after."""
    if device.type != "cuda":
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (
        matmul.allow_tf32,
        cudnn.allow_tf32,
        matmul.allow_bf16_reduced_precision_reduction,
        matmul.allow_fp16_reduced_precision_reduction,
    )
    matmul.allow_tf32 = cudnn.allow_tf32 = False
    matmul.allow_bf16_reduced_precision_reduction = False
    matmul.allow_fp16_reduced_precision_reduction = False
    try:
        yield
    finally:
        (
            matmul.allow_tf32,
            cudnn.allow_tf32,
            matmul.allow_bf16_reduced_precision_reduction,
            matmul.allow_fp16_reduced_precision_reduction,
        ) = saved


def _order(indices: Sequence[int], order_seed: int | None) -> list[int]:
    if order_seed is None:
        return list(indices)
    g = torch.Generator().manual_seed(order_seed)
    perm = torch.randperm(len(indices), generator=g).tolist()
    return [indices[i] for i in perm]


def compute_gradient(
    task: Task,
    params: Params,
    indices: Sequence[int],
    numerics: Numerics = Numerics(),
) -> Gradient:
    """Mean-loss gradient of ``task`` at model ``params`` on the training samples ``indices``.

    ``params`` may already live on ``numerics.device`` (the throughput benchmark keeps them
    there); the result is always CPU float32 in canonical order.
    """
    from torch.func import functional_call

    missing = set(task.param_shapes) - set(params)
    if missing:
        raise TrainingError(f"{task.name}: model state lacks parameters {sorted(missing)[:3]}")
    device = torch.device(numerics.device)
    x, y = task.dataset().batch(_order(indices, numerics.order_seed))
    x, y = x.to(device), y.to(device)
    names = list(task.param_shapes)
    leaves = {n: params[n].detach().to(device).requires_grad_(True) for n in names}
    # The template lives on the CPU; moving it (a walk over every submodule, ~0.2 ms) only when
    # another device is asked for matters for many small per-miner batches.
    template = task.template if device.type == "cpu" else task.template.to(device)
    autocast_dtype = DTYPES[numerics.dtype]
    with torch_threads(numerics.threads), reference_precision(device):
        try:
            ctx = (
                torch.autocast(device_type=device.type, dtype=autocast_dtype)
                if autocast_dtype is not None
                else contextlib.nullcontext()
            )
            with ctx:
                out = functional_call(template, leaves, (x,))
            loss = task.loss(out, y)
            grads = torch.autograd.grad(loss, [leaves[n] for n in names])
        except RuntimeError as exc:
            raise TrainingError(
                f"{task.name}: gradient step failed with {numerics.label()}: {exc}"
            ) from None
    return {
        n: g.detach().to("cpu", torch.float32).contiguous()
        for n, g in zip(names, grads, strict=True)
    }
