"""Aggregation rules (hand-computed cases), the optimizer, and bit-identical determinism of the
model update across thread counts and across processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pot_cli.training.aggregation import (
    AggregationRule,
    aggregate,
    aggregate_flat,
    aggregate_vectors,
    sort_rows,
)
from pot_cli.training.errors import TrainingError
from pot_cli.training.gradients import torch_threads
from pot_cli.training.optim import apply_update, init_optimizer_state
from pot_cli.training.tasks import OptimizerSpec, Task


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Single-threaded torch: on a shared machine OpenMP spin-waits make 2 threads far slower."""
    with torch_threads(1):
        yield


SHAPES = {"w": (2, 2)}
F32_1_6 = float(torch.tensor(8.0) / 5.0)  # 1.6 in float32


def _g(*values: float) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(values, dtype=torch.float32).reshape(2, 2)}


def _agg(rule: AggregationRule, grads: dict[str, dict[str, torch.Tensor]]) -> list[float]:
    return aggregate(rule, grads, SHAPES)["w"].reshape(-1).tolist()


GRADS = {
    "a": _g(1, 10, 0, 5),
    "b": _g(2, 20, 0, 5),
    "c": _g(3, 30, 0, 5),
    "d": _g(4, -40, 0, 5),
    "e": _g(100, 1000, 8, 5),
}


def test_mean() -> None:
    assert _agg(AggregationRule("mean"), GRADS) == [22.0, 204.0, F32_1_6, 5.0]


def test_median_odd_and_even() -> None:
    assert _agg(AggregationRule("median"), GRADS) == [3.0, 20.0, 0.0, 5.0]
    four = {k: GRADS[k] for k in "abcd"}
    assert _agg(AggregationRule("median"), four) == [2.5, 15.0, 0.0, 5.0]


def test_trimmed_mean() -> None:
    # 5 values, fraction 0.2 -> drop ceil(1.0) = 1 per side: mean of the middle three
    assert _agg(AggregationRule("trimmed_mean", trim_fraction=0.2), GRADS) == [3.0, 20.0, 0.0, 5.0]
    # fraction 0.1 -> ceil(0.5) = 1 as well; 0.0 -> plain mean
    assert _agg(AggregationRule("trimmed_mean", trim_fraction=0.1), GRADS) == [3.0, 20.0, 0.0, 5.0]
    assert _agg(AggregationRule("trimmed_mean", trim_fraction=0.0), GRADS) == [
        22.0,
        204.0,
        F32_1_6,
        5.0,
    ]
    four = {k: GRADS[k] for k in "abcd"}
    # 4 values: drop 1 per side -> mean of the two middle
    assert _agg(AggregationRule("trimmed_mean", trim_fraction=0.25), four) == [2.5, 15.0, 0.0, 5.0]


def test_multi_krum() -> None:
    # f = 1 (N // 4 with N=5), m = N - f = 4: the outlier "e" is left out, the rest averaged.
    assert _agg(AggregationRule("multi_krum"), GRADS) == [2.5, 5.0, 0.0, 5.0]
    # m = 1: plain Krum. f = 0 -> scores sum the 2 nearest squared distances:
    # a: 1 + 4 = 5, b: 1 + 1 = 2, c: 1 + 4 = 5, x: 48^2 + 49^2 -> b wins.
    grads = {"a": _g(0, 0, 0, 0), "b": _g(1, 0, 0, 0), "c": _g(2, 0, 0, 0), "x": _g(50, 0, 0, 0)}
    assert _agg(AggregationRule("multi_krum", krum_f=0, krum_m=1), grads) == [1.0, 0.0, 0.0, 0.0]
    # f = 1 -> 1 nearest: a, b, c all score 1; the tie goes to the first address, "a".
    assert _agg(AggregationRule("multi_krum", krum_f=1, krum_m=1), grads) == [0.0, 0.0, 0.0, 0.0]


def test_single_and_empty() -> None:
    for name in ("mean", "clipped_mean", "trimmed_mean", "median", "multi_krum"):
        assert _agg(AggregationRule(name), {"a": GRADS["a"]}) == [1.0, 10.0, 0.0, 5.0]
        with pytest.raises(TrainingError):
            aggregate(AggregationRule(name), {}, SHAPES)
    with pytest.raises(TrainingError):
        AggregationRule("average")
    with pytest.raises(TrainingError):
        AggregationRule("trimmed_mean", trim_fraction=0.5)


def test_order_of_submission_does_not_matter() -> None:
    rev = dict(reversed(list(GRADS.items())))
    for name in ("mean", "clipped_mean", "trimmed_mean", "median", "multi_krum"):
        assert _agg(AggregationRule(name), rev) == _agg(AggregationRule(name), GRADS)


def test_sorting_network_matches_torch_sort() -> None:
    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 5, 8, 13, 16, 17):
        rows = [torch.randn(257, generator=gen) for _ in range(n)]
        assert torch.equal(
            torch.stack(sort_rows(rows)), torch.sort(torch.stack(rows), dim=0).values
        )


def test_sgd_and_adam_by_hand() -> None:
    p = {"w": torch.tensor([1.0, -2.0])}
    g = {"w": torch.tensor([0.5, 1.0])}
    sgd = OptimizerSpec("sgd", learning_rate=0.1, momentum=0.9)
    s0 = init_optimizer_state(sgd, p)
    p1, s1 = apply_update(sgd, p, s0, g)
    torch.testing.assert_close(p1["w"], torch.tensor([0.95, -2.1]))
    p2, s2 = apply_update(sgd, p1, s1, g)  # buf = 0.9 * g + g = 1.9 g
    torch.testing.assert_close(p2["w"], torch.tensor([0.855, -2.29]))
    assert s2.step == 2 and p["w"].tolist() == [1.0, -2.0]  # inputs untouched
    adam = OptimizerSpec("adam", learning_rate=0.01)
    a1, _ = apply_update(adam, p, init_optimizer_state(adam, p), g)
    # first Adam step moves every coordinate by lr * sign(g) (up to eps)
    torch.testing.assert_close(a1["w"], torch.tensor([0.99, -2.01]))
    assert s1.hash() != s2.hash()


SCRIPT = r"""
import sys, torch
from pot_cli.training.codec import decode_gradient
from pot_cli.training.tasks import load_task
sys.path.insert(0, sys.argv[1])
from test_training_aggregation import _updates

torch.set_num_threads(1)
for name in sys.argv[3:]:
    task = load_task(name)
    blobs = open(f"{sys.argv[2]}/{name}.bin", "rb").read().split(b"--SEP--")
    print(" ".join(_updates(task, blobs)))
"""

RULE_NAMES = ("mean", "clipped_mean", "trimmed_mean", "median", "multi_krum")


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_flat_vectors_and_per_parameter_gradients_aggregate_to_the_same_bits(rule: str) -> None:
    shapes = {"a": (2, 3), "b": (4,)}
    gen = torch.Generator().manual_seed(3)
    grads = {
        f"m{i}": {n: torch.randn(s, generator=gen) * (1 + 3 * (i == 2)) for n, s in shapes.items()}
        for i in range(6)
    }
    flat = {k: torch.cat([g["a"].reshape(-1), g["b"]]) for k, g in grads.items()}
    by_dict = aggregate(AggregationRule(rule), grads, shapes)
    by_flat = aggregate_flat(AggregationRule(rule), dict(reversed(flat.items())), shapes)
    assert list(by_flat) == list(shapes)
    for n in shapes:
        assert by_flat[n].shape == shapes[n] and torch.equal(by_flat[n], by_dict[n])


def _updates(task: Task, blobs: list[bytes]) -> list[str]:
    """Decode the same bytes, aggregate with each rule and take two optimizer steps."""
    from pot_cli.training.codec import decode_gradient
    from pot_cli.training.state import model_hash

    # the validator's path: decoded flat vectors straight into the rule
    vectors = {f"m{i}": decode_gradient(task, b).vector for i, b in enumerate(blobs)}
    out = []
    for rule in RULE_NAMES:
        p = task.initial_params()
        s = init_optimizer_state(task.optimizer, p)
        for _ in range(2):
            agg = aggregate_flat(AggregationRule(rule), vectors, task.param_shapes)
            p, s = apply_update(task.optimizer, p, s, agg)
        out.append(f"{rule}:{model_hash(p)}:{s.hash()}")
    return out


def test_update_is_bit_identical_across_processes_and_threads(tmp_path: Path) -> None:
    """Validators receive the same bytes; the new model and optimizer state must hash equal in
    another process with another thread count (1 there, 2 here)."""
    from pot_cli.training.assignment import assign_batch, round_seed
    from pot_cli.training.codec import encode_gradient
    from pot_cli.training.gradients import compute_gradient
    from pot_cli.training.state import model_hash
    from pot_cli.training.tasks import load_task

    names = ["digits", "pycorpus"]
    mine = {}
    for name in names:
        task = load_task(name)
        params = task.initial_params()
        mh = model_hash(params)
        seed = round_seed("det", 0)
        blobs = []
        for i in range(5):
            idx = assign_batch(seed, f"m{i}", task.train_size, task.batch_size)
            g = compute_gradient(task, params, idx)
            if i == 4:  # one outlier, so that every rule gives a different update
                g = {n: t * 10.0 for n, t in g.items()}
            blobs.append(encode_gradient(task, g, model_hash=mh, height=0))
        (tmp_path / f"{name}.bin").write_bytes(b"--SEP--".join(blobs))
        with torch_threads(2):
            mine[name] = " ".join(_updates(task, blobs))
        assert len({r.split(":")[1] for r in mine[name].split()}) == 5  # rules really differ
    script = tmp_path / "agg.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(Path(__file__).parent), str(tmp_path), *names],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=180,
        check=True,
    )
    assert proc.stdout.split("\n")[:2] == [mine[n] for n in names]


def test_aggregate_vectors_is_pure() -> None:
    rows = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, -1.0]), torch.tensor([0.0, 0.0])]
    before = [r.clone() for r in rows]
    aggregate_vectors(AggregationRule("median"), rows, ["a", "b", "c"])
    assert all(torch.equal(a, b) for a, b in zip(rows, before, strict=True))


def test_clipped_mean() -> None:
    # norms: a = 3, b = 4, c = 5, d = 40 -> median 4.5, bound 2 x 4.5 = 9: only d is scaled,
    # by 9/40 = 0.225, to norm 9.
    grads = {
        "a": _g(3, 0, 0, 0),
        "b": _g(0, 4, 0, 0),
        "c": _g(0, 0, 5, 0),
        "d": _g(0, 0, 0, 40),
    }
    got = _agg(AggregationRule("clipped_mean"), grads)
    assert got == [0.75, 1.0, 1.25, 2.25]
    # without an outlier nothing is clipped: it is the plain mean
    honest = {k: grads[k] for k in "abc"}
    assert _agg(AggregationRule("clipped_mean"), honest) == _agg(AggregationRule("mean"), honest)
