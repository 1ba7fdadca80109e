"""``pot hw bench``: what a device can do for training, measured.

Tests, in order: matmul TFLOP/s (fp32, then fp16 / bf16 where the device runs them natively),
device memory bandwidth (a large tensor copy: read + write), host<->device copy GB/s from pinned
memory (CUDA only: what the riser allows), and samples/s of every task's gradient step (through
:func:`pot_cli.training.throughput.measure_gradient_steps`, the very code miners run). Each timed
loop is preceded by warm-up runs and calibrated to last at least ``min_seconds``; CUDA work is
synchronised before the clock stops.

With an NVML power sampler, every test also records the average board power during the test,
so task results carry samples per joule and every test its electricity cost per hour.

Results are saved as JSON (``schema: pot.hw.bench/1``) under ``<home>/hw/bench-<device>.json``;
:func:`load_bench` reads them back for the miner, which advertises its capability from them.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from pot_cli.errors import PotError, UsageError
from pot_cli.hw.power import PowerSampler
from pot_cli.hw.pricing import cost_per_hour

SCHEMA = "pot.hw.bench/1"
OK, SKIPPED, FAILED = "ok", "skipped", "failed"


class BenchError(PotError):
    """A benchmark cannot run (device missing, bad sizes) or a result file is unusable."""


@dataclass(frozen=True)
class BenchSizes:
    matmul_n: int = 2048
    membw_mb: int = 256
    copy_mb: int = 256
    min_seconds: float = 0.5
    task_steps: int = 10
    task_warmup: int = 2

    def check(self) -> None:
        if self.matmul_n < 16 or self.membw_mb < 1 or self.copy_mb < 1:
            raise UsageError("bench sizes: matmul n >= 16, memory and copy sizes >= 1 MB")
        if self.min_seconds <= 0 or self.task_steps < 1 or self.task_warmup < 0:
            raise UsageError("bench sizes: min seconds > 0, task steps >= 1, warm-up >= 0")


QUICK_SIZES = BenchSizes(
    matmul_n=512, membw_mb=32, copy_mb=32, min_seconds=0.1, task_steps=3, task_warmup=1
)


@dataclass
class Measurement:
    test: str  # "matmul" | "memory_bandwidth" | "host_to_device" | "device_to_host" | "task"
    label: str  # "matmul fp32", "task digits bf16"
    unit: str  # "TFLOP/s" | "GB/s" | "samples/s"
    status: str = OK
    value: float | None = None
    dtype: str | None = None
    task: str | None = None
    seconds: float | None = None
    iterations: int | None = None
    reason: str | None = None
    avg_power_w: float | None = None
    power_samples: int = 0
    samples_per_joule: float | None = None
    cost_per_hour: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchResult:
    device: str
    device_name: str
    created_at: str
    torch_version: str
    threads: int
    sizes: dict[str, Any]
    price_per_kwh: float
    power_source: str | None  # "nvml" when power was sampled
    nvml_index: int | None = None
    load_average_1m: float | None = None  # host load when the run started (shared machines)
    measurements: list[Measurement] = field(default_factory=list)
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def get(
        self, test: str, dtype: str | None = None, task: str | None = None
    ) -> Measurement | None:
        for m in self.measurements:
            if (
                m.test == test
                and (dtype is None or m.dtype == dtype)
                and (task is None or m.task == task)
            ):
                return m
        return None

    def task_rates(self) -> dict[str, dict[str, float]]:
        """task -> dtype -> samples/s, successful measurements only (what a miner advertises)."""
        rates: dict[str, dict[str, float]] = {}
        for m in self.measurements:
            if m.test == "task" and m.status == OK and m.value is not None and m.task and m.dtype:
                rates.setdefault(m.task, {})[m.dtype] = m.value
        return rates


def device_slug(device: str) -> str:
    """File-name form of a device: "cpu", "cuda:1" -> "cuda1"."""
    return device.replace(":", "").replace("/", "_")


def bench_path(home: Path, device: str) -> Path:
    return Path(home) / "hw" / f"bench-{device_slug(device)}.json"


def _measurement_from_dict(raw: Any, where: str) -> Measurement:
    if not isinstance(raw, dict):
        raise BenchError(f"{where}: a measurement must be an object")
    known = set(Measurement.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown or not {"test", "label", "unit"} <= set(raw):
        raise BenchError(f"{where}: bad measurement keys {sorted(unknown) or sorted(raw)}")
    value = raw.get("value")
    if value is not None and not isinstance(value, int | float):
        raise BenchError(f"{where}: value must be a number")
    return Measurement(**raw)


def load_bench(path: Path) -> BenchResult:
    """Read a saved result; a missing, foreign or malformed file raises :class:`BenchError`."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"{path}: no benchmark result (run 'pot hw bench')") from None
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path}: unreadable benchmark result: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise BenchError(f"{path}: not a {SCHEMA} result")
    required = {
        "device",
        "device_name",
        "created_at",
        "torch_version",
        "threads",
        "sizes",
        "price_per_kwh",
        "power_source",
        "measurements",
    }
    missing = required - set(data)
    if missing:
        raise BenchError(f"{path}: missing {sorted(missing)}")
    if not isinstance(data["measurements"], list):
        raise BenchError(f"{path}: measurements must be a list")
    measurements = [
        _measurement_from_dict(m, f"{path}: measurement {i}")
        for i, m in enumerate(data["measurements"])
    ]
    return BenchResult(
        device=str(data["device"]),
        device_name=str(data["device_name"]),
        created_at=str(data["created_at"]),
        torch_version=str(data["torch_version"]),
        threads=int(data["threads"]),
        sizes=dict(data["sizes"]),
        price_per_kwh=float(data["price_per_kwh"]),
        power_source=data["power_source"],
        nvml_index=data.get("nvml_index"),
        load_average_1m=data.get("load_average_1m"),
        measurements=measurements,
    )


def load_bench_for(home: Path, device: str) -> BenchResult | None:
    """The saved result for ``device`` under ``home``, or None when never benchmarked."""
    path = bench_path(home, device)
    return load_bench(path) if path.exists() else None


# ---------------------------------------------------------------------------------------------
# measuring


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def matmul_dtypes(
    device_type: str, cc: tuple[int, int] | None, cpu_flags: set[str]
) -> dict[str, str | None]:
    """dtype -> None when it is measured, else the reason it is skipped."""
    out: dict[str, str | None] = {"fp32": None}
    if device_type == "cuda":
        out["fp16"] = None  # measured on every card: on Pascal it shows why fp16 does not pay
        out["bf16"] = None if cc is not None and cc >= (8, 0) else "no native bf16 below CC 8.0"
    else:
        native_bf16 = {"avx512_bf16", "amx_bf16"} & cpu_flags
        out["bf16"] = None if native_bf16 else "this CPU has no native bf16 (avx512_bf16/amx_bf16)"
        native_fp16 = {"avx512_fp16", "amx_fp16"} & cpu_flags
        out["fp16"] = None if native_fp16 else "this CPU has no native fp16 (avx512_fp16/amx_fp16)"
    return out


WINDOWS = 3
"""Timed windows per test: the fastest one is reported (least disturbed by other processes on a
shared machine, as ``timeit`` does), the median is kept in ``detail`` for comparison."""


@dataclass(frozen=True)
class _Timing:
    iterations_per_window: int
    window_seconds: tuple[float, ...]

    @property
    def iterations(self) -> int:
        return self.iterations_per_window * len(self.window_seconds)

    @property
    def seconds(self) -> float:
        return sum(self.window_seconds)

    def rate(self, work_per_iteration: float) -> float:
        """Best work per second over the windows."""
        return work_per_iteration * self.iterations_per_window / min(self.window_seconds)

    def median_rate(self, work_per_iteration: float) -> float:
        ordered = sorted(self.window_seconds)
        return work_per_iteration * self.iterations_per_window / ordered[len(ordered) // 2]


def _timed(fn: Callable[[], None], sync: Callable[[], None], min_seconds: float) -> _Timing:
    """Time ``fn`` (after the caller's warm-up) in :data:`WINDOWS` windows lasting
    ``min_seconds`` together. The windows are sized by probing with a doubling number of runs
    until a probe lasts a quarter of a window (as ``timeit``'s autorange does): one slow first
    run can no longer shrink the windows far below ``min_seconds``."""
    window = min_seconds / WINDOWS
    runs = 1
    while True:
        sync()
        t0 = time.perf_counter()
        for _ in range(runs):
            fn()
        sync()
        spent = time.perf_counter() - t0
        if spent >= window / 4 or runs >= 100_000:
            break
        runs *= 2
    one = max(spent / runs, 1e-9)
    iters = max(1, min(100_000, math.ceil(window / one)))
    for _ in range(2):
        windows = []
        for _ in range(WINDOWS):
            sync()
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            sync()
            windows.append(max(time.perf_counter() - t0, 1e-9))
        total = sum(windows)
        if total >= min_seconds / 2 or iters >= 100_000:
            break
        # the probe was slowed by a hiccup (the machine is shared), so the windows came out
        # far too short: size them again from what the windows themselves measured
        iters = max(1, min(100_000, math.ceil(iters * min_seconds / total)))
    return _Timing(iters, tuple(windows))


@dataclass
class _Env:
    torch: Any
    dev: Any
    sync: Callable[[], None]
    cc: tuple[int, int] | None


def parse_device(device: str) -> Any:
    """``torch.device`` of a ``--device`` value; anything but cpu / cuda[:N] is a usage error."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device {device!r}: use cpu or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"unsupported device {device!r}: use cpu or cuda:N")
    return dev


def _resolve_device(device: str) -> _Env:
    import torch

    dev = parse_device(device)
    if dev.type == "cpu":
        return _Env(torch, dev, lambda: None, None)
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise BenchError(
            f"CUDA is not available (torch {torch.__version__}, {build}; no usable GPU or "
            "driver): use --device cpu"
        )
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise UsageError(f"no CUDA device {index}: torch sees {torch.cuda.device_count()}")
    dev = torch.device("cuda", index)
    cc = torch.cuda.get_device_capability(dev)
    return _Env(torch, dev, lambda: torch.cuda.synchronize(dev), (int(cc[0]), int(cc[1])))


def device_name(device: str) -> str:
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return str(torch.cuda.get_device_name(dev))
    from pot_cli.hw.system import cpu_info

    info = cpu_info()
    return f"{info.model} ({info.logical_cores} logical cores)"


_TORCH_DTYPE = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _matmul(env: _Env, dtype: str, sizes: BenchSizes) -> Measurement:
    torch = env.torch
    n = sizes.matmul_n
    tdtype = getattr(torch, _TORCH_DTYPE[dtype])
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=env.dev, dtype=tdtype)
    b = torch.randn(n, n, generator=gen).to(device=env.dev, dtype=tdtype)
    out = torch.empty(n, n, device=env.dev, dtype=tdtype)

    def step() -> None:
        torch.matmul(a, b, out=out)

    for _ in range(2):  # warm-up: kernel selection, caches, clocks
        step()
    timing = _timed(step, env.sync, sizes.min_seconds)
    tflop = 2.0 * n**3 / 1e12
    return Measurement(
        test="matmul",
        label=f"matmul {dtype}",
        unit="TFLOP/s",
        dtype=dtype,
        value=timing.rate(tflop),
        seconds=timing.seconds,
        iterations=timing.iterations,
        detail={"n": n, "median": timing.median_rate(tflop)},
    )


def _memory_bandwidth(env: _Env, sizes: BenchSizes) -> Measurement:
    torch = env.torch
    nbytes = sizes.membw_mb * 1_000_000
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=env.dev)
    dst = torch.empty_like(src)

    def step() -> None:
        dst.copy_(src)

    for _ in range(2):
        step()
    timing = _timed(step, env.sync, sizes.min_seconds)
    gb = 2 * src.numel() * 4 / 1e9  # each copy reads and writes the buffer
    return Measurement(
        test="memory_bandwidth",
        label="memory bandwidth (copy)",
        unit="GB/s",
        value=timing.rate(gb),
        seconds=timing.seconds,
        iterations=timing.iterations,
        detail={
            "bytes": src.numel() * 4,
            "counts": "read + write",
            "median": timing.median_rate(gb),
        },
    )


def _host_copies(env: _Env, sizes: BenchSizes) -> list[Measurement]:
    torch = env.torch
    nbytes = sizes.copy_mb * 1_000_000
    host = torch.ones(nbytes // 4, dtype=torch.float32).pin_memory()
    devbuf = torch.empty(nbytes // 4, dtype=torch.float32, device=env.dev)

    def to_device() -> None:
        devbuf.copy_(host, non_blocking=True)

    def to_host() -> None:
        host.copy_(devbuf, non_blocking=True)

    results = []
    for test, label, step in (
        ("host_to_device", "host->device copy (pinned)", to_device),
        ("device_to_host", "device->host copy (pinned)", to_host),
    ):
        for _ in range(2):
            step()
        timing = _timed(step, env.sync, sizes.min_seconds)
        gb = host.numel() * 4 / 1e9
        results.append(
            Measurement(
                test=test,
                label=label,
                unit="GB/s",
                value=timing.rate(gb),
                seconds=timing.seconds,
                iterations=timing.iterations,
                detail={
                    "bytes": host.numel() * 4,
                    "pinned": True,
                    "median": timing.median_rate(gb),
                },
            )
        )
    return results


def task_dtypes(device_type: str, cc: tuple[int, int] | None, choice: str = "auto") -> list[str]:
    """Which dtypes to measure each task at: fp32, plus the card's best low precision (auto)."""
    if choice != "auto":
        if choice not in _TORCH_DTYPE:
            raise UsageError(f"unknown dtype {choice!r}: use auto, fp32, fp16 or bf16")
        return [choice]
    if device_type != "cuda" or cc is None:
        return ["fp32"]
    if cc >= (8, 0):
        return ["fp32", "bf16"]
    if cc >= (7, 0):
        return ["fp32", "fp16"]
    return ["fp32"]


def _task(env: _Env, task: str, dtype: str, sizes: BenchSizes) -> Measurement:
    from pot_cli.training.throughput import measure_gradient_steps

    m = measure_gradient_steps(
        task, device=str(env.dev), dtype=dtype, steps=sizes.task_steps, warmup=sizes.task_warmup
    )
    return Measurement(
        test="task",
        label=f"task {task} {dtype}",
        unit="samples/s",
        dtype=dtype,
        task=task,
        value=m.samples_per_second,
        seconds=m.seconds,
        iterations=m.steps,
        detail={"batch_size": m.batch_size, "samples": m.samples},
    )


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _as_list(fn: Callable[..., Measurement], *args: Any) -> list[Measurement]:
    return [fn(*args)]


StepHook = Callable[[str, int, int], None]
"""Called before each test with (label, position, total): the CLI drives a progress bar."""


def run_bench(
    device: str,
    sizes: BenchSizes,
    tasks: list[str],
    task_dtype: str = "auto",
    sampler: PowerSampler | None = None,
    price_per_kwh: float = 0.15,
    on_step: StepHook | None = None,
    name: str | None = None,
    threads: int | None = None,
) -> BenchResult:
    """Run every test on ``device`` and return the result (not yet saved).

    ``threads`` sets torch's intra-op CPU threads for the run (restored afterwards): rigs often
    have 2-core CPUs, where the default may oversubscribe them.
    """
    sizes.check()
    if threads is not None and threads < 1:
        raise UsageError(f"threads must be >= 1, got {threads}")
    env = _resolve_device(device)
    torch = env.torch
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_plan(env, sizes, tasks, task_dtype, sampler, price_per_kwh, on_step, name)
    finally:
        torch.set_num_threads(previous_threads)


def _run_plan(
    env: _Env,
    sizes: BenchSizes,
    tasks: list[str],
    task_dtype: str,
    sampler: PowerSampler | None,
    price_per_kwh: float,
    on_step: StepHook | None,
    name: str | None,
) -> BenchResult:
    torch = env.torch
    flags = _cpu_flags() if env.dev.type == "cpu" else set()
    plan: list[_Planned] = []
    skipped: list[Measurement] = []
    for dtype, reason in matmul_dtypes(env.dev.type, env.cc, flags).items():
        if reason is None:
            plan.append(
                _Planned(
                    "matmul",
                    f"matmul {dtype}",
                    "TFLOP/s",
                    partial(_as_list, _matmul, env, dtype, sizes),
                    dtype,
                )
            )
        else:
            skipped.append(
                Measurement(
                    test="matmul",
                    label=f"matmul {dtype}",
                    unit="TFLOP/s",
                    dtype=dtype,
                    status=SKIPPED,
                    reason=reason,
                )
            )
    plan.append(
        _Planned(
            "memory_bandwidth", "memory bandwidth", "GB/s", lambda: [_memory_bandwidth(env, sizes)]
        )
    )
    if env.dev.type == "cuda":
        plan.append(
            _Planned(
                "host_to_device", "host<->device copies", "GB/s", lambda: _host_copies(env, sizes)
            )
        )
    else:
        skipped.append(
            Measurement(
                test="host_to_device",
                label="host->device copy",
                unit="GB/s",
                status=SKIPPED,
                reason="the CPU is the host: no bus to cross",
            )
        )
    for dtype in task_dtypes(env.dev.type, env.cc, task_dtype):
        for task in tasks:
            plan.append(
                _Planned(
                    "task",
                    f"task {task} {dtype}",
                    "samples/s",
                    partial(_as_list, _task, env, task, dtype, sizes),
                    dtype,
                    task,
                )
            )

    result = BenchResult(
        device=str(env.dev),
        device_name=name or device_name(str(env.dev)),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        torch_version=str(torch.__version__),
        threads=int(torch.get_num_threads()),
        sizes=asdict(sizes),
        price_per_kwh=price_per_kwh,
        power_source="nvml" if sampler is not None else None,
        nvml_index=None if sampler is None else sampler.nvml_index,
        load_average_1m=_load_average(),
    )
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32, not TF32
    try:
        for position, planned in enumerate(plan):
            if on_step is not None:
                on_step(planned.label, position, len(plan))
            result.measurements += _run_one(planned, sampler, price_per_kwh)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    if on_step is not None:
        on_step("done", len(plan), len(plan))
    result.measurements += skipped
    return result


@dataclass
class _Planned:
    test: str
    label: str
    unit: str
    run: Callable[[], list[Measurement]]
    dtype: str | None = None
    task: str | None = None


def _run_one(
    planned: _Planned, sampler: PowerSampler | None, price_per_kwh: float
) -> list[Measurement]:
    def failed(reason: str) -> list[Measurement]:
        return [
            Measurement(
                test=planned.test,
                label=planned.label,
                unit=planned.unit,
                dtype=planned.dtype,
                task=planned.task,
                status=FAILED,
                reason=reason,
            )
        ]

    try:
        if sampler is None:
            measured = planned.run()
        else:
            with sampler:
                measured = planned.run()
    except PotError as exc:  # e.g. a dtype the device cannot autocast
        return failed(str(exc))
    except RuntimeError as exc:  # torch: out of memory, unsupported kernel
        return failed((str(exc).splitlines() or ["runtime error"])[0])
    if sampler is not None:
        for m in measured:
            m.avg_power_w = sampler.average_w
            m.power_samples = len(sampler.samples_w)
            m.cost_per_hour = cost_per_hour(m.avg_power_w, price_per_kwh)
            if m.test == "task" and m.value is not None and m.avg_power_w:
                m.samples_per_joule = m.value / m.avg_power_w
            if sampler.unavailable:
                m.detail["power"] = sampler.unavailable
    return measured
