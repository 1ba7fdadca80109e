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
    seconds: float  # training loop only (the final evaluation is not timed)
    samples: int
    model_hash: str


def global_batch(task: Task, seed: str, height: int, addresses: Sequence[str]) -> list[int]:
    """Every miner's batch of round ``height``, concatenated in sorted-address order."""
    s = round_seed(seed, height)
    out: list[int] = []
    for a in sorted(addresses):
        out.extend(assign_batch(s, a, task.train_size, task.batch_size))
    return out


def train_centralized(
    task: Task, *, rounds: int, addresses: Sequence[str], seed: str, numerics: Numerics = Numerics()
) -> CentralizedResult:
    params = task.initial_params()
    state = init_optimizer_state(task.optimizer, params)
    batches = [global_batch(task, seed, h, addresses) for h in range(rounds)]
    samples = 0
    t0 = time.perf_counter()
    for batch in batches:
        grad = compute_gradient(task, params, batch, numerics)
        params, state = apply_update(task.optimizer, params, state, grad)
        samples += len(batch)
    seconds = time.perf_counter() - t0
    return CentralizedResult(task.evaluate(params), seconds, samples, model_hash(params))
