"""`pot bench quality`, `pot bench honest`, `pot bench calibrate`: tables, --json, --out, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pot_cli.cli import app
from pot_cli.training.gradients import torch_threads


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Single-threaded torch: on a shared machine OpenMP spin-waits make 2 threads far slower."""
    with torch_threads(1):
        yield


runner = CliRunner()


def test_bench_quality_json_and_out(tmp_path: Path) -> None:
    out = tmp_path / "q.json"
    result = runner.invoke(
        app,
        [
            "--home", str(tmp_path), "bench", "quality", "--miners", "4", "--rounds", "3",
            "--byzantine", "0.25", "--attack", "scaled", "--json", "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert json.loads(out.read_text()) == report
    assert report["config"]["byzantine_miners"] == 1
    pot = report["pot"]
    assert pot["attacks"]["scaled"] == {
        "submitted": 3, "caught": 3, "missed": 0, "missed_after_recompute": 0,
        "caught_by": {"norm": 3},
    }  # fmt: skip
    assert pot["honest_submitted"] == 9 and pot["honest_rejected"] == 0
    assert report["plain_mean_no_verification"]["attacks"]["scaled"]["missed"] == 3
    assert set(report["bytes_per_submission"]) == {"none", "int8", "topk:0.2"}
    assert 0 < report["centralized"]["metric"] <= 1
    assert {t["name"] for t in report["targets"]} >= {"honest submissions wrongly rejected == 0"}
    for key in ("quality_ratio", "wall_ratio", "parallel_wall_ratio", "seconds"):
        assert pot[key] is not None
    # The wall-time breakdown: disjoint parts of the PoT run's time, so each is >= 0 and they
    # add up to no more than the whole; the floor is its first three parts (training work, the
    # random sample's recomputes, hashing and signing), and hashing and signing did happen.
    parts = list(pot["wall_breakdown_vs_centralized"].values())
    assert len(parts) == 6 and all(v >= 0 for v in parts)
    assert sum(parts) <= pot["wall_ratio"] + 1e-9
    assert pot["wall_floor_ratio"] == pytest.approx(sum(parts[:3]))
    assert pot["miner_crypto_seconds"] > 0 and pot["validator_crypto_seconds"] > 0


def test_bench_quality_pools_several_seeds(tmp_path: Path) -> None:
    args = ["--home", str(tmp_path), "bench", "quality", "--miners", "4", "--rounds", "2"]
    result = runner.invoke(app, [*args, "--byzantine", "0", "--seed", "3,4", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    per_seed = report["per_seed"]
    assert [r["seed"] for r in per_seed] == ["3", "4"] and report["config"]["seed"] == ["3", "4"]
    mean = (per_seed[0]["centralized_metric"] + per_seed[1]["centralized_metric"]) / 2
    assert report["centralized"]["metric"] == pytest.approx(mean)
    assert report["pot"]["honest_submitted"] == 2 * 2 * 4  # seeds x rounds x miners
    single = json.loads(
        runner.invoke(app, [*args, "--byzantine", "0", "--seed", "4", "--json"]).stdout
    )
    assert single["centralized"]["metric"] == per_seed[1]["centralized_metric"]
    bad = runner.invoke(app, [*args, "--seed", "1,,2"])
    assert bad.exit_code == 2 and "--seed" in bad.output


def test_bench_quality_table_default_out(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "--home", str(tmp_path), "bench", "quality", "--miners", "4", "--rounds", "2",
            "--compression", "int8", "--rule", "median", "--byzantine", "0",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "centralized" in result.output and "Bytes per submission" in result.output
    path = tmp_path / "bench" / "quality-digits.json"
    assert json.loads(path.read_text())["config"]["compression"] == "int8"
    assert str(path) in result.output


def test_bench_errors_are_one_line(tmp_path: Path) -> None:
    for args, code, text in (
        (["--task", "nope"], 2, "unknown task 'nope'"),
        (["--rule", "avg"], 1, "unknown aggregation rule"),
        (["--attack", "bribe"], 1, "unknown attack"),
        (["--compression", "zip"], 1, "unknown compression"),
    ):
        result = runner.invoke(app, ["--home", str(tmp_path), "bench", "quality", *args])
        assert result.exit_code == code, result.output
        assert text in result.output and "Traceback" not in result.output


def test_bench_honest_and_calibrate(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["--home", str(tmp_path), "bench", "honest", "--submissions", "6", "--miners", "3",
         "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["submissions"] == 6 and report["rejected"] == 0
    assert (tmp_path / "bench" / "honest-digits.json").exists()
    result = runner.invoke(
        app,
        ["--home", str(tmp_path), "bench", "calibrate", "--rounds", "2", "--checkpoints", "1",
         "--miners", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "honest cpu/bf16" in result.output
    data = json.loads((tmp_path / "bench" / "calibrate-digits.json").read_text())
    assert data["worst_honest"] < data["tolerance"]
