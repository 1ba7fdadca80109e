"""The centralized baseline: the same model, optimizer, learning rate, global batch (all the
miners' assigned batches of the round, concatenated) and number of samples, trained in one plain
loop with the same :func:`compute_gradient` and :func:`apply_update`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from pot_cli.training.assignment import assign_batch, round_seed
from pot_cli.training.gradients import Numerics, compute_gradient
from pot_cli.training.optim import apply_update, init_optimizer_state
from pot_cli.training.state import model_hash
from pot_cli.training.tasks import Task


@dataclass(frozen=True)
class CentralizedResult:
    metric: float
    seconds: float  # batch assembly, gradient and update (the final evaluation is not timed)
    samples: int
    model_hash: str


def global_batch(task: Task, seed: str, height: int, addresses: Sequence[str]) -> list[int]:
    """Every miner's batch of round ``height``, concatenated in sorted-address order."""
    s = round_seed(seed, height)
    out: list[int] = []
    for a in sorted(addresses):
        out.extend(assign_batch(s, a, task.train_size, task.batch_size))
    return out


class CentralizedTrainer:
    """The baseline one round (global batch) at a time, so benchmarks can interleave it with
    the simulation under the same machine load."""

    def __init__(
        self, task: Task, *, addresses: Sequence[str], seed: str, numerics: Numerics = Numerics()
    ) -> None:
        task.dataset()
        self.task, self.addresses, self.seed, self.numerics = task, list(addresses), seed, numerics
        self.params = task.initial_params()
        self.state = init_optimizer_state(task.optimizer, self.params)
        self.height = 0
        self.samples = 0
        self.seconds = 0.0

    def step(self) -> None:
        t0 = time.perf_counter()
        batch = global_batch(self.task, self.seed, self.height, self.addresses)
        grad = compute_gradient(self.task, self.params, batch, self.numerics)
        self.params, self.state = apply_update(self.task.optimizer, self.params, self.state, grad)
        self.seconds += time.perf_counter() - t0
        self.samples += len(batch)
        self.height += 1

    def result(self) -> CentralizedResult:
        return CentralizedResult(
            self.task.evaluate(self.params), self.seconds, self.samples, model_hash(self.params)
        )


def train_centralized(
    task: Task, *, rounds: int, addresses: Sequence[str], seed: str, numerics: Numerics = Numerics()
) -> CentralizedResult:
    trainer = CentralizedTrainer(task, addresses=addresses, seed=seed, numerics=numerics)
    for _ in range(rounds):
        trainer.step()
    return trainer.result()
