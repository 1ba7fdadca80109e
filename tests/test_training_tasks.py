"""Task registry, data sets, models, assignment, the gradient function and throughput."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pot_cli.errors import PotError
from pot_cli.training.assignment import (
    assign_batch,
    round_seed,
    select_spot_checks,
    spot_check_seed,
)
from pot_cli.training.data import load_pycorpus_dataset
from pot_cli.training.errors import DatasetError, TaskConfigError, TrainingError
from pot_cli.training.gradients import Numerics, compute_gradient, torch_threads
from pot_cli.training.state import flatten, model_hash, unflatten
from pot_cli.training.tasks import load_task, load_task_file, task_names, tasks_dir
from pot_cli.training.throughput import StepMeasurement, measure_gradient_steps


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Single-threaded torch: on a shared machine OpenMP spin-waits make 2 threads far slower."""
    with torch_threads(1):
        yield


GOOD = """
[task]
name = "{name}"
dataset = "digits"
metric = "accuracy"
batch_size = 8

[model]
kind = "digits_mlp"
hidden = 16

[optimizer]
kind = "sgd"
learning_rate = 0.1
"""


def test_builtin_tasks_and_repo_symlink() -> None:
    assert task_names() == ["digits", "pycorpus", "tiny"]
    repo_tasks = Path(__file__).resolve().parents[1] / "configs" / "tasks"
    assert sorted(p.name for p in repo_tasks.glob("*.toml")) == [
        "digits.toml",
        "pycorpus.toml",
        "tiny.toml",
    ]
    digits = load_task("digits")
    assert digits.metric_name == "accuracy" and digits.higher_is_better
    assert digits.batch_size > 0 and digits.learning_rate > 0 and digits.optimizer.kind == "sgd"
    py = load_task("pycorpus")
    assert py.metric_name == "bits_per_byte" and not py.higher_is_better
    assert py.optimizer.kind == "adam"
    tiny = load_task("tiny")
    assert tiny.num_params < 2000 and tiny.optimizer.kind == "sgd"
    for t in (digits, py):
        assert isinstance(t.vram_need_mb, int) and t.vram_need_mb > 512
        assert list(t.param_shapes) == sorted(t.param_shapes)


def test_unknown_task_names_directory() -> None:
    with pytest.raises(TaskConfigError, match="unknown task 'nope'") as exc:
        load_task("nope")
    assert str(tasks_dir()) in str(exc.value)
    assert exc.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[task\nname=", "invalid TOML"),
        (GOOD.replace("batch_size = 8", "batch_size = 0"), "task.batch_size"),
        (GOOD.replace('metric = "accuracy"', 'metric = "f1"'), "task.metric"),
        (GOOD.replace("learning_rate = 0.1", 'learning_rate = "x"'), "optimizer.learning_rate"),
        (GOOD.replace('kind = "sgd"', 'kind = "lion"'), "optimizer.kind"),
        (GOOD + "\n[extra]\n", "unknown table [extra]"),
        (GOOD.replace("hidden = 16", "hidden = -1"), "[model]"),
        (GOOD.replace("[optimizer]", "[optimizer]\nbeta7 = 1"), "unknown key 'beta7'"),
        (GOOD.replace("batch_size = 8", "batch_size = 8\ncolour = 1"), "unknown key 'colour'"),
    ],
)
def test_bad_task_files_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mytask.toml"
    path.write_text(text.format(name="mytask") if "{name}" in text else text)
    with pytest.raises(TaskConfigError) as exc:
        load_task_file(path)
    assert str(path) in str(exc.value) and message in str(exc.value)
    assert isinstance(exc.value, PotError)


def test_name_must_match_file(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(GOOD.format(name="b"))
    with pytest.raises(TaskConfigError, match=r"task\.name"):
        load_task_file(path)
    ok = tmp_path / "mlp.toml"
    ok.write_text(GOOD.format(name="mlp"))
    assert load_task_file(ok).num_params == 64 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10


def test_models_initialise_deterministically() -> None:
    for name in task_names():
        t = load_task(name)
        a = model_hash(dict(t.build_model(7).named_parameters()))
        b = model_hash(dict(t.build_model(7).named_parameters()))
        c = model_hash(dict(t.build_model(8).named_parameters()))
        assert a == b != c
        assert model_hash(t.initial_params()) == model_hash(t.initial_params())


def test_model_hash_covers_names_dtypes_shapes() -> None:
    x = {"a": torch.zeros(2, 3)}
    assert model_hash(x) != model_hash({"b": torch.zeros(2, 3)})
    assert model_hash(x) != model_hash({"a": torch.zeros(3, 2)})
    assert model_hash(x) != model_hash({"a": torch.zeros(2, 3, dtype=torch.float64)})
    y = {"a": torch.zeros(2, 3)}
    y["a"][0, 0] = -0.0  # a sign bit is a different model
    assert model_hash(x) != model_hash(y)
    t = load_task("digits")
    p = t.initial_params()
    assert unflatten(flatten(p, t.param_shapes), t.param_shapes).keys() == p.keys()
    assert model_hash(unflatten(flatten(p, t.param_shapes), t.param_shapes)) == model_hash(p)


def test_pycorpus_hash_detects_a_different_corpus(tmp_path: Path) -> None:
    for i in range(30):
        (tmp_path / f"m{i:02d}.py").write_text(f"x = {i}\n" * 200)
    a = load_pycorpus_dataset(16, 10, 4, str(tmp_path))
    load_pycorpus_dataset.cache_clear()
    assert load_pycorpus_dataset(16, 10, 4, str(tmp_path)).fingerprint == a.fingerprint
    (tmp_path / "m03.py").write_text("y = 1\n" * 200)
    load_pycorpus_dataset.cache_clear()
    assert load_pycorpus_dataset(16, 10, 4, str(tmp_path)).fingerprint != a.fingerprint
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="standard library"):
        load_pycorpus_dataset(16, 10, 4, str(empty))
    load_pycorpus_dataset.cache_clear()


def test_datasets_shapes_and_split() -> None:
    d = load_task("digits").dataset()
    assert d.train_size + d.eval_size == 1797
    assert d.train_x.shape[1:] == (1, 8, 8)
    p = load_task("pycorpus").dataset()
    assert p.train_x.shape[1] == 64 and torch.equal(p.train_x[:, 1:], p.train_y[:, :-1])
    assert len(p.fingerprint) == 64


def test_assignment_is_deterministic_and_distinct() -> None:
    s = round_seed("x", 3)
    a = assign_batch(s, "pot1aaa", 1000, 32)
    assert a == assign_batch(s, "pot1aaa", 1000, 32)
    assert len(set(a)) == 32 and all(0 <= i < 1000 for i in a)
    assert a != assign_batch(s, "pot1bbb", 1000, 32)
    assert a != assign_batch(round_seed("x", 4), "pot1aaa", 1000, 32)
    with pytest.raises(TrainingError):
        assign_batch(s, "a", 10, 11)


def test_spot_check_sample_draws_each_miner_alone() -> None:
    s = round_seed("x", 1)
    subs = [f"m{i}" for i in range(200)]
    seed1 = spot_check_seed(s, b"beacon")
    chosen = select_spot_checks(seed1, subs, 0.1)
    assert 5 < len(chosen) < 40
    assert chosen == select_spot_checks(seed1, subs, 0.1)
    assert select_spot_checks(seed1, subs, 0.0) == []
    assert select_spot_checks(seed1, subs, 1.0) == sorted(subs)
    # whatever else is in the set, one miner is drawn or not the same way
    for m in subs[:20]:
        alone = select_spot_checks(seed1, [m], 0.1)
        assert alone == ([m] if m in chosen else [])
        assert select_spot_checks(seed1, [m, *subs[100:150]], 0.1).count(m) == len(alone)


def test_spot_check_sample_follows_the_beacon() -> None:
    """Without the beacon anyone could compute the sample before submitting; a different
    beacon draws a different sample, the same beacon the same one."""
    s = round_seed("x", 1)
    subs = [f"m{i}" for i in range(50)]
    samples = {
        tuple(select_spot_checks(spot_check_seed(s, b), subs, 0.2))
        for b in (b"a" * 32, b"", b"other beacon", b"b" * 32)
    }
    assert len(samples) == 4
    assert select_spot_checks(spot_check_seed(s, b"a" * 32), subs, 0.2) == select_spot_checks(
        spot_check_seed(s, b"a" * 32), list(reversed(subs)), 0.2
    )


def test_gradient_function_and_numerics() -> None:
    t = load_task("digits")
    p = t.initial_params()
    idx = list(range(16))
    g = compute_gradient(t, p, idx)
    assert list(g) == list(t.param_shapes)
    assert all(x.dtype == torch.float32 and x.is_contiguous() for x in g.values())
    assert model_hash(g) == model_hash(compute_gradient(t, p, idx))
    shuffled = compute_gradient(t, p, idx, Numerics(order_seed=3, threads=1))
    for n in g:
        torch.testing.assert_close(shuffled[n], g[n], rtol=1e-4, atol=1e-6)
    with pytest.raises(TrainingError):
        Numerics(dtype="fp8")


def test_measure_gradient_steps() -> None:
    m = measure_gradient_steps("digits", steps=2, warmup=1)
    assert isinstance(m, StepMeasurement)
    assert m.samples == 2 * load_task("digits").batch_size
    assert m.seconds > 0 and m.samples_per_second > 0
    assert m.to_dict()["task"] == "digits"
    with pytest.raises(TrainingError):
        measure_gradient_steps("digits", dtype="fp64")
    with pytest.raises(TrainingError, match="CUDA"):
        measure_gradient_steps("digits", device="cuda")


def test_gradients_in_parallel_threads_do_not_mix_parameters() -> None:
    """``functional_call`` swaps a module's parameters in place, so the template is per
    thread: two threads computing at different models get exactly their own gradients."""
    import threading

    import torch

    from pot_cli.training.gradients import Numerics, compute_gradient
    from pot_cli.training.tasks import load_task

    task = load_task("digits")
    p0 = task.initial_params()
    p1 = {k: v + 0.01 for k, v in p0.items()}
    batch = list(range(64))
    refs = [compute_gradient(task, p, batch, Numerics(threads=1)) for p in (p0, p1)]
    wrong: list[int] = []

    def work(i: int, params: dict[str, torch.Tensor]) -> None:
        for _ in range(20):
            g = compute_gradient(task, params, batch, Numerics(threads=1))
            wrong.extend(i for k in g if not torch.equal(g[k], refs[i][k]))

    threads = [threading.Thread(target=work, args=(i, p)) for i, p in enumerate((p0, p1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
