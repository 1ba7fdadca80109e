"""The centralized baseline of the benches: the same model, optimizer, learning rate, global batch
(all the miners' assigned batches of the round, concatenated) and number of samples, trained in
one plain loop (:class:`pot_cli.training.baseline.BaselineTrainer`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pot_cli.training.assignment import round_seed
from pot_cli.training.baseline import BaselineTrainer, round_batch
from pot_cli.training.gradients import Numerics
from pot_cli.training.state import model_hash
from pot_cli.training.tasks import Task


@dataclass(frozen=True)
class CentralizedResult:
    metric: float
    seconds: float  # gradient and update (the final evaluation is not timed)
    samples: int
    model_hash: str


def global_batch(task: Task, seed: str, height: int, addresses: Sequence[str]) -> list[int]:
    """Every miner's batch of round ``height``, concatenated in sorted-address order."""
    return round_batch(task, round_seed(seed, height), addresses)


class CentralizedTrainer:
    """The baseline one round (global batch) at a time, so benchmarks can interleave it with
    the simulation under the same machine load."""

    def __init__(
        self, task: Task, *, addresses: Sequence[str], seed: str, numerics: Numerics = Numerics()
    ) -> None:
        task.dataset()
        self.task, self.addresses, self.seed = task, list(addresses), seed
        self.trainer = BaselineTrainer(task, task.initial_params(), numerics)
        self.height = 0

    def step(self) -> None:
        self.trainer.step(global_batch(self.task, self.seed, self.height, self.addresses))
        self.height += 1

    def result(self) -> CentralizedResult:
        t = self.trainer
        return CentralizedResult(t.metric(), t.seconds, t.samples, model_hash(t.params))


def train_centralized(
    task: Task, *, rounds: int, addresses: Sequence[str], seed: str, numerics: Numerics = Numerics()
) -> CentralizedResult:
    trainer = CentralizedTrainer(task, addresses=addresses, seed=seed, numerics=numerics)
    for _ in range(rounds):
        trainer.step()
    return trainer.result()
