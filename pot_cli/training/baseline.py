"""THE centralized baseline: the same model, optimizer and gradient function as the network,
trained in one plain loop on given batches. ``pot bench quality`` and ``pot bench economics``
feed it the miners' global batch of each round; the devnet report and the dashboard feed it the
samples a committed chain accepted (:func:`round_batch` of each block's accepted miners).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

import torch

from pot_cli.training.assignment import assign_batch
from pot_cli.training.gradients import Numerics, compute_gradient
from pot_cli.training.optim import apply_update, init_optimizer_state
from pot_cli.training.tasks import Task


def round_batch(task: Task, round_seed: bytes, miners: Iterable[str]) -> list[int]:
    """Every miner's assigned batch of one round, concatenated in sorted-address order."""
    out: list[int] = []
    for address in sorted(miners):
        out.extend(assign_batch(round_seed, address, task.train_size, task.batch_size))
    return out


class BaselineTrainer:
    """Centralized training from ``params``: one optimizer step per :meth:`step`; counts the
    samples and the seconds spent in gradient and update (the evaluation is not timed)."""

    def __init__(
        self, task: Task, params: Mapping[str, torch.Tensor], numerics: Numerics = Numerics()
    ) -> None:
        self.task, self.numerics = task, numerics
        self.params = dict(params)
        self.state = init_optimizer_state(task.optimizer, self.params)
        self.steps = 0
        self.samples = 0
        self.seconds = 0.0

    def step(self, batch: Sequence[int]) -> None:
        t0 = time.perf_counter()
        grad = compute_gradient(self.task, self.params, batch, self.numerics)
        self.params, self.state = apply_update(self.task.optimizer, self.params, self.state, grad)
        self.seconds += time.perf_counter() - t0
        self.samples += len(batch)
        self.steps += 1

    def metric(self) -> float:
        return self.task.evaluate(self.params)
