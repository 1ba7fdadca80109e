"""pot hw bench: the real CPU benchmark at tiny sizes, NVML power sampling, saved results."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from pot_cli.cli import app
from pot_cli.cli.output import write_json
from pot_cli.hw.bench import (
    SCHEMA,
    BenchError,
    BenchSizes,
    _Timing,
    bench_path,
    load_bench,
    load_bench_for,
    matmul_dtypes,
    run_bench,
    task_dtypes,
)
from pot_cli.hw.nvml_replay import ReplayBackend
from pot_cli.hw.power import PowerSampler, nvml_index_for_cuda

DATA = Path(__file__).parent / "data" / "nvml"
TINY = BenchSizes(matmul_n=32, membw_mb=1, copy_mb=1, min_seconds=0.01, task_steps=1, task_warmup=1)


@pytest.fixture(scope="module")
def cpu_result() -> object:
    """One real CPU run shared by the tests that only read it (keeps the suite fast)."""
    steps: list[tuple[str, int, int]] = []
    result = run_bench("cpu", TINY, ["digits"], on_step=lambda *a: steps.append(a), threads=1)
    return result, steps


def test_real_cpu_bench_measures_every_test(cpu_result: object) -> None:
    result, steps = cpu_result  # type: ignore[misc]
    assert result.schema == SCHEMA and result.device == "cpu"
    fp32 = result.get("matmul", dtype="fp32")
    assert fp32 is not None and fp32.status == "ok"
    assert fp32.value > 0 and fp32.iterations >= 3 and fp32.detail["n"] == 32
    assert 0 < fp32.detail["median"] <= fp32.value  # the fastest window is reported
    assert fp32.seconds >= 0.005  # the calibrated loop ran for (about) min_seconds
    bw = result.get("memory_bandwidth")
    assert bw is not None and bw.status == "ok" and bw.value > 0
    task = result.get("task", task="digits")
    assert task is not None and task.status == "ok" and task.value > 0
    assert task.dtype == "fp32" and task.detail["samples"] == task.detail["batch_size"]
    h2d = result.get("host_to_device")
    assert h2d is not None and h2d.status == "skipped" and "host" in (h2d.reason or "")
    assert result.power_source is None and task.avg_power_w is None
    assert result.load_average_1m is None or result.load_average_1m >= 0
    assert result.task_rates() == {"digits": {"fp32": task.value}}
    # progress hook: one call per test, then "done"
    assert steps[0][1:] == (0, len(steps) - 1) and steps[-1][0] == "done"


def test_timing_reports_the_fastest_window_and_keeps_the_median() -> None:
    timing = _Timing(iterations_per_window=4, window_seconds=(2.0, 1.0, 4.0))
    assert timing.iterations == 12 and timing.seconds == 7.0
    assert timing.rate(0.5) == 2.0  # 4 x 0.5 work in the fastest (1 s) window
    assert timing.median_rate(0.5) == 1.0


def test_cpu_low_precision_depends_on_cpu_flags() -> None:
    plain = matmul_dtypes("cpu", None, {"avx2", "fma"})
    assert plain["fp32"] is None and plain["bf16"] and plain["fp16"]
    bf16 = matmul_dtypes("cpu", None, {"avx512f", "avx512_bf16"})
    assert bf16["bf16"] is None
    assert matmul_dtypes("cuda", (6, 1), set())["bf16"] == "no native bf16 below CC 8.0"
    assert matmul_dtypes("cuda", (8, 6), set()) == {"fp32": None, "fp16": None, "bf16": None}


def test_task_dtypes() -> None:
    assert task_dtypes("cpu", None) == ["fp32"]
    assert task_dtypes("cuda", (6, 1)) == ["fp32"]
    assert task_dtypes("cuda", (7, 5)) == ["fp32", "fp16"]
    assert task_dtypes("cuda", (8, 6)) == ["fp32", "bf16"]
    assert task_dtypes("cuda", (8, 6), "fp16") == ["fp16"]


def test_power_sampling_through_the_nvml_fake_gives_samples_per_joule() -> None:
    backend = ReplayBackend.from_file(DATA / "rig8.json")
    backend.init()
    sampler = PowerSampler(backend, nvml_index=0, interval_s=0.001)
    result = run_bench("cpu", TINY, ["digits"], sampler=sampler, price_per_kwh=0.2, threads=1)
    assert result.power_source == "nvml" and result.nvml_index == 0
    sequence_w = [118.0, 121.5, 119.8, 120.4, 117.9]
    for m in result.measurements:
        if m.status != "ok":
            continue
        assert m.avg_power_w is not None and m.power_samples >= 2
        assert min(sequence_w) <= m.avg_power_w <= max(sequence_w)
        assert m.cost_per_hour == pytest.approx(m.avg_power_w / 1000 * 0.2)
    task = result.get("task", task="digits")
    assert task is not None and task.value is not None and task.avg_power_w is not None
    assert task.samples_per_joule == pytest.approx(task.value / task.avg_power_w)


def test_power_sampler_stops_cleanly_on_a_lost_or_unsupported_gpu() -> None:
    backend = ReplayBackend.from_file(DATA / "rig8.json")
    backend.init()
    with PowerSampler(backend, nvml_index=5, interval_s=0.001) as lost:
        pass
    assert lost.average_w is None and lost.unavailable and "lost" in lost.unavailable
    passive = ReplayBackend({"devices": [{"name": "x", "power_usage": {"error": "NOT_SUPPORTED"}}]})
    passive.init()
    with PowerSampler(passive, nvml_index=0, interval_s=0.001) as sampler:
        pass
    assert sampler.average_w is None and sampler.unavailable == "not supported by this card"


def test_cuda_device_is_matched_to_nvml_by_uuid_then_pci() -> None:
    nvml_devices = [
        (0, "GPU-00c0ffee-01a2-4b3c-8d4e-5f6071829300", "00000000:01:00.0"),
        (1, "GPU-01c0ffee-11a2-4b3c-8d4e-5f6071829301", "00000000:03:00.0"),
    ]
    by_uuid = SimpleNamespace(uuid="01c0ffee-11a2-4b3c-8d4e-5f6071829301")
    assert nvml_index_for_cuda(by_uuid, nvml_devices) == 1
    by_pci = SimpleNamespace(pci_bus_id=3, pci_device_id=0, pci_domain_id=0)
    assert nvml_index_for_cuda(by_pci, nvml_devices) == 1
    assert nvml_index_for_cuda(SimpleNamespace(pci_bus_id=9, pci_device_id=0), nvml_devices) is None
    prefixed = SimpleNamespace(uuid="GPU-00C0FFEE-01A2-4B3C-8D4E-5F6071829300")
    assert nvml_index_for_cuda(prefixed, nvml_devices) == 0
    assert nvml_index_for_cuda(SimpleNamespace(), nvml_devices[1:]) == 1  # the only GPU


def test_results_round_trip_through_the_loader(cpu_result: object, tmp_path: Path) -> None:
    result, _ = cpu_result  # type: ignore[misc]
    path = bench_path(tmp_path, "cpu")
    assert path == tmp_path / "hw" / "bench-cpu.json"
    assert bench_path(tmp_path, "cuda:1").name == "bench-cuda1.json"
    assert load_bench_for(tmp_path, "cpu") is None
    write_json(path, result.to_dict())
    loaded = load_bench_for(tmp_path, "cpu")
    assert loaded is not None
    assert loaded.to_dict() == json.loads(json.dumps(result.to_dict()))
    assert loaded.task_rates() == result.task_rates()


def test_loader_refuses_bad_files(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="run 'pot hw bench'"):
        load_bench(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2", encoding="utf-8")
    with pytest.raises(BenchError, match="unreadable"):
        load_bench(bad)
    bad.write_text(json.dumps({"schema": "other"}), encoding="utf-8")
    with pytest.raises(BenchError, match=r"not a pot\.hw\.bench/1"):
        load_bench(bad)
    bad.write_text(json.dumps({"schema": SCHEMA, "device": "cpu"}), encoding="utf-8")
    with pytest.raises(BenchError, match="missing"):
        load_bench(bad)


def test_bad_sizes_and_devices_are_clear_errors() -> None:
    from pot_cli.errors import UsageError

    with pytest.raises(UsageError, match="matmul n"):
        run_bench("cpu", BenchSizes(matmul_n=1), [])
    with pytest.raises(UsageError, match="unknown device"):
        run_bench("tpu:0", TINY, [])


# ---- CLI ---------------------------------------------------------------------------------------

runner = CliRunner()
# one thread: on a shared 2-core machine two OpenMP threads can collapse (see benchmarks notes)
TINY_ARGS = ["--matmul-n", "32", "--memory-mb", "1", "--min-seconds", "0.01", "--task-steps", "1",
             "--threads", "1"]  # fmt: skip


def test_cli_bench_json_writes_the_result_under_home(tmp_path: Path) -> None:
    import torch

    before = torch.get_num_threads()
    args = ["--home", str(tmp_path), "hw", "bench", "--quick", *TINY_ARGS]
    result = runner.invoke(app, [*args, "--json", "--tasks", "digits"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["schema"] == SCHEMA and data["device"] == "cpu"
    assert data["threads"] == 1 and torch.get_num_threads() == before
    assert data["sizes"]["matmul_n"] == 32 and data["sizes"]["task_warmup"] == 1
    saved = tmp_path / "hw" / "bench-cpu.json"
    assert f"wrote {saved}" in result.stderr.replace("\n", "")
    assert load_bench(saved).task_rates()["digits"]["fp32"] > 0


def test_cli_bench_table_with_all_tasks(tmp_path: Path) -> None:
    out = tmp_path / "custom.json"
    args = ["--home", str(tmp_path), "hw", "bench", *TINY_ARGS, "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "matmul fp32" in result.stdout and "task digits fp32" in result.stdout
    assert "task pycorpus fp32" in result.stdout
    assert "host->device copy: skipped" in result.stdout
    assert out.exists() and not (tmp_path / "hw" / "bench-cpu.json").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--device", "cuda:0"], 1, "CUDA is not available"),
        (["--device", "tpu"], 2, "device"),
        (["--tasks", "nope"], 2, "unknown task"),
        (["--task-dtype", "fp8"], 2, "unknown dtype"),
        (["--matmul-n", "4"], 2, "matmul n"),
        (["--threads", "0"], 2, "threads must be >= 1"),
    ],
)
def test_cli_bench_errors(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    result = runner.invoke(app, ["--home", str(tmp_path), "hw", "bench", *TINY_ARGS, *args])
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
