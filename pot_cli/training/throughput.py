"""Gradient-step throughput of a task on a device: what the hardware benchmark reports as the
task's samples/s. It times :func:`pot_cli.training.gradients.compute_gradient`, the very function
miners and spot checks run (stable signature: the hw package calls it)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from pot_cli.training.errors import TrainingError
from pot_cli.training.gradients import DTYPES, Numerics, compute_gradient
from pot_cli.training.tasks import load_task


@dataclass(frozen=True)
class StepMeasurement:
    """Timed gradient steps: ``samples`` processed in ``seconds`` (warm-up excluded)."""

    task: str
    device: str
    dtype: str
    batch_size: int
    steps: int
    samples: int
    seconds: float
    samples_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_gradient_steps(
    task_name: str,
    device: str = "cpu",
    dtype: str = "fp32",
    steps: int = 5,
    warmup: int = 1,
) -> StepMeasurement:
    """Time ``steps`` gradient steps of ``task_name`` (after ``warmup`` untimed ones) on
    ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``…) with ``dtype`` compute (fp32, or bf16/fp16
    autocast). Each step is one miner batch (``task.batch_size`` samples), gradient copied back
    to the host as float32 as a miner must before encoding it.

    Raises :class:`TrainingError` for an unknown dtype or device, or when the device cannot run
    the step (e.g. fp16 autocast unsupported there).
    """
    if steps < 1 or warmup < 0:
        raise TrainingError(f"steps must be >= 1 and warmup >= 0, got {steps}, {warmup}")
    if dtype not in DTYPES:
        raise TrainingError(f"unknown dtype {dtype!r} (use one of {', '.join(DTYPES)})")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise TrainingError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {device!r} requested but CUDA is not available")
    task = load_task(task_name)
    numerics = Numerics(dtype=dtype, device=str(dev))
    params = {n: p.to(dev) for n, p in task.initial_params().items()}
    n = task.train_size
    b = task.batch_size

    def batch(i: int) -> list[int]:
        start = (i * b) % max(1, n - b)
        return list(range(start, start + b))

    for i in range(warmup):
        compute_gradient(task, params, batch(i), numerics)
    _sync(dev)
    t0 = time.perf_counter()
    for i in range(steps):
        compute_gradient(task, params, batch(warmup + i), numerics)
    _sync(dev)
    seconds = time.perf_counter() - t0
    samples = steps * b
    return StepMeasurement(
        task=task.name,
        device=str(dev),
        dtype=dtype,
        batch_size=b,
        steps=steps,
        samples=samples,
        seconds=seconds,
        samples_per_second=samples / seconds if seconds > 0 else float("inf"),
    )
