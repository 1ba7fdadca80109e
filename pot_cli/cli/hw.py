"""``pot hw …`` commands (thin: the logic lives in the pot_cli.hw library).

torch and pynvml are imported inside the commands so that ``pot --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pot_cli.cli.context import get_state
from pot_cli.cli.output import console, emit_json, err_console, print_table, save_result, write_json
from pot_cli.errors import UsageError

if TYPE_CHECKING:
    from pot_cli.hw.bench import BenchResult
    from pot_cli.hw.power import PowerSampler
    from pot_cli.hw.verdicts import TaskNeed

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
PriceOpt = Annotated[
    float | None,
    typer.Option(
        "--price-per-kwh",
        help="Electricity price per kWh (default: miner.electricity_price_per_kwh of the config).",
        show_default=False,
    ),
]


def _task_needs() -> list[TaskNeed]:
    from pot_cli.hw.verdicts import TaskNeed
    from pot_cli.training.tasks import load_task, task_names

    return [TaskNeed(name, int(load_task(name).vram_need_mb)) for name in task_names()]


def detect_command(
    ctx: typer.Context,
    gpus: Annotated[
        str, typer.Option("--gpus", help='GPUs to show: "all" or indices like "0,2,5".')
    ] = "all",
    price_per_kwh: PriceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Find GPUs through NVML, recognise mining cards and judge them for training."""
    from pot_cli.cli.views import render_detect
    from pot_cli.hw.backend import default_backend
    from pot_cli.hw.detect import detect
    from pot_cli.hw.pricing import resolve_price
    from pot_cli.hw.verdicts import installed_torch_build

    state = get_state(ctx)
    price, source = resolve_price(price_per_kwh, state.config_path)
    report = detect(
        default_backend(),
        installed_torch_build(),
        _task_needs(),
        price,
        price_source=source,
        selection=gpus,
    )
    if json_out:
        emit_json(report.to_dict())
    else:
        render_detect(report)


@contextlib.contextmanager
def _nvml_sampler(device: str) -> Iterator[tuple[PowerSampler | None, str | None]]:
    """A power sampler for a CUDA device (NVML index matched by UUID / PCI), or why not."""
    import torch

    from pot_cli.hw import nvml
    from pot_cli.hw.backend import default_backend
    from pot_cli.hw.nvml import Field, NvmlNotFound, Unavailable
    from pot_cli.hw.power import PowerSampler, nvml_index_for_cuda

    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        yield None, "power is sampled through NVML for CUDA devices only"
        return
    backend = default_backend()
    try:
        nvml.start(backend)
    except NvmlNotFound as exc:
        yield None, str(exc)
        return
    try:
        count = nvml.query(backend.device_count)
        devices: list[tuple[int, str | None, str | None]] = []
        for i in range(0 if isinstance(count, Unavailable) else count):
            try:
                uuid = nvml.query(functools.partial(backend.read, i, Field.UUID), i)
                bus = nvml.query(functools.partial(backend.read, i, Field.PCI_BUS_ID), i)
            except nvml.GpuLostError:
                continue
            devices.append(
                (
                    i,
                    None if isinstance(uuid, Unavailable) else str(uuid),
                    None if isinstance(bus, Unavailable) else str(bus),
                )
            )
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        nvml_index = nvml_index_for_cuda(torch.cuda.get_device_properties(index), devices)
        if nvml_index is None:
            yield None, "cannot match the CUDA device to an NVML device"
        else:
            yield PowerSampler(backend, nvml_index), None
    finally:
        nvml.query(backend.shutdown)


def _print_bench(result: BenchResult) -> None:
    """One row per test; power columns only where power was sampled; reasons below."""
    powered = result.power_source is not None
    columns = ["test", "value", "unit", "status"]
    if powered:
        columns += ["avg W", "samples/J", "cost/h"]
    rows = []
    reasons = []
    for m in result.measurements:
        row: list[object] = [m.label, m.value, m.unit, m.status]
        if powered:
            row += [m.avg_power_w, m.samples_per_joule, m.cost_per_hour]
        rows.append(row)
        if m.reason:
            reasons.append(f"{m.label}: {m.status}: {m.reason}")
    power = "NVML" if powered else "no power sensor"
    print_table(
        f"{result.device}: {result.device_name}",
        columns,
        rows,
        caption=f"torch {result.torch_version}, {result.threads} threads, power: {power}, "
        f"price {result.price_per_kwh}/kWh",
    )
    for line in reasons:
        console.print(line, soft_wrap=True)


def bench_command(
    ctx: typer.Context,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda:N.")] = "cpu",
    quick: Annotated[
        bool, typer.Option("--quick", help="Small sizes: a fast smoke run, rough figures.")
    ] = False,
    matmul_n: Annotated[
        int | None,
        typer.Option(
            "--matmul-n",
            help="Matrix size n of the n x n matmul (default 2048, --quick 512).",
            show_default=False,
        ),
    ] = None,
    memory_mb: Annotated[
        int | None,
        typer.Option(
            "--memory-mb",
            help="MB copied by the bandwidth test (default 256, --quick 32).",
            show_default=False,
        ),
    ] = None,
    copy_mb: Annotated[
        int | None,
        typer.Option(
            "--copy-mb",
            help="MB per host-to-device copy (default 256, --quick 32).",
            show_default=False,
        ),
    ] = None,
    min_seconds: Annotated[
        float | None,
        typer.Option(
            "--min-seconds",
            help="Timed seconds per test, over 3 windows (default 0.5, --quick 0.1).",
            show_default=False,
        ),
    ] = None,
    task_steps: Annotated[
        int | None,
        typer.Option(
            "--task-steps",
            help="Timed gradient steps per task (default 10, --quick 3).",
            show_default=False,
        ),
    ] = None,
    tasks: Annotated[
        str, typer.Option("--tasks", help='Tasks to time: "all" or names like "digits".')
    ] = "all",
    task_dtype: Annotated[
        str,
        typer.Option("--task-dtype", help="auto (fp32 + the card's best), fp32, fp16 or bf16."),
    ] = "auto",
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", help="CPU threads for torch (default: torch's choice).", show_default=False
        ),
    ] = None,
    price_per_kwh: PriceOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Result file. Default: `<home>/hw/bench-<device>.json`."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Measure matmul TFLOP/s, memory bandwidth, host-to-device copies and task samples/s."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from pot_cli.hw.bench import QUICK_SIZES, BenchSizes, bench_path, parse_device, run_bench
    from pot_cli.hw.pricing import resolve_price
    from pot_cli.training.tasks import task_names

    state = get_state(ctx)
    parse_device(device)
    price, _ = resolve_price(price_per_kwh, state.config_path)
    base = QUICK_SIZES if quick else BenchSizes()
    sizes = BenchSizes(
        matmul_n=base.matmul_n if matmul_n is None else matmul_n,
        membw_mb=base.membw_mb if memory_mb is None else memory_mb,
        copy_mb=base.copy_mb if copy_mb is None else copy_mb,
        min_seconds=base.min_seconds if min_seconds is None else min_seconds,
        task_steps=base.task_steps if task_steps is None else task_steps,
        task_warmup=base.task_warmup,
    )
    known = task_names()
    chosen = known if tasks.strip() == "all" else [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in known]
    if unknown or not chosen:
        raise UsageError(f"unknown task(s) {unknown or tasks!r}: choose from {', '.join(known)}")

    with _nvml_sampler(device) as (sampler, power_note):
        if json_out:
            result = run_bench(device, sizes, chosen, task_dtype, sampler, price, threads=threads)
        else:
            with Progress(
                TextColumn("[bold]{task.description:<28}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            ) as progress:
                bar = progress.add_task("bench", total=None)

                def on_step(label: str, position: int, total: int) -> None:
                    progress.update(bar, description=label, completed=position, total=total)

                result = run_bench(
                    device, sizes, chosen, task_dtype, sampler, price, on_step, threads=threads
                )
    target = out if out is not None else bench_path(state.home, result.device)
    if not json_out:
        _print_bench(result)
        if power_note and sampler is None:
            console.print(f"power: {power_note}")
    save_result(target, result.to_dict(), as_json=json_out)


def _whole(value: float | None) -> float | int | None:
    return int(value) if value is not None and value.is_integer() else value


def catalog_command(json_out: JsonOpt = False) -> None:
    """List the ex-Ethereum mining cards pot recognises, with their figures and limits."""
    from pot_cli.hw.catalog import load_catalog

    cards = load_catalog()
    if json_out:
        emit_json([{**c.to_dict(), "nvml_names": list(c.nvml_names)} for c in cards])
        return
    rows = [
        [
            c.name,
            c.vram_gb,
            c.compute_capability or c.gfx or "n/a",
            _whole(c.eth_mhs),
            _whole(c.eth_watts),
            "yes" if c.mining_only else "",
            c.lhr,
            "; ".join(c.limits),
        ]
        for c in cards
    ]
    print_table(
        "Mining-card catalog",
        ["card", "GB", "CC", "ETH MH/s", "W", "mining-only", "LHR", "known limits"],
        rows,
        caption="AMD cards are not visible through NVML; pot trains through CUDA.",
    )


def record_command(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write. Default: `<home>/hw/nvml-recording.json`."),
    ] = None,
    description: Annotated[
        str, typer.Option("--description", help="A line about the rig (board, risers, PSU).")
    ] = "",
) -> None:
    """Record this rig's NVML readings in the replay format (to share, or to test against)."""
    from pot_cli import paths
    from pot_cli.hw.backend import default_backend
    from pot_cli.hw.nvml import REPLAY_ENV
    from pot_cli.hw.recording import record_rig

    recording = record_rig(default_backend(), description)
    target = (
        out
        if out is not None
        else paths.data_dir(get_state(ctx).home, "hw") / ("nvml-recording.json")
    )
    write_json(target, recording)
    console.print(
        f"recorded {len(recording['devices'])} GPU(s) to {target} "
        f"(replay with {REPLAY_ENV}={target} pot hw detect)",
        soft_wrap=True,
    )


def register(hw_app: typer.Typer) -> None:
    """Add the hardware commands to ``pot hw``."""
    hw_app.command("detect")(detect_command)
    hw_app.command("bench")(bench_command)
    hw_app.command("catalog")(catalog_command)
    hw_app.command("record")(record_command)
