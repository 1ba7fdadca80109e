"""Rich views of data the libraries return (the libraries themselves never render)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from pot_cli.cli.output import console
from pot_cli.hw.detect import DetectReport, GpuReport
from pot_cli.hw.pricing import cost_per_hour


def _or_na(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.0f}{unit}"
    return f"{value}{unit}"


def _pair(a: Any, b: Any, unit: str) -> str:
    return f"{_or_na(a)} / {_or_na(b)}{unit}"


def _cost(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}/h"


def _summary_rows(report: DetectReport) -> list[list[str]]:
    rows = []
    for g in report.gpus:
        r = g.reading
        rows.append(
            [
                str(r.index),
                r.name or "?",
                _or_na(r.memory_total_mb, " MB"),
                r.compute_capability or "n/a",
                _or_na(r.temperature_c, " °C"),
                _pair(r.power_draw_w, r.power_limit_w, " W"),
                "n/a"
                if r.pcie_width_current is None
                else f"gen{r.pcie_gen_current or '?'} x{r.pcie_width_current}",
                g.verdict.recommended_dtype or "n/a",
                "lost" if r.error else g.verdict.status,
            ]
        )
    return rows


def _gpu_table(g: GpuReport, price: float) -> Table:
    r = g.reading
    title = f"GPU {r.index} · {r.name or 'unknown'}"
    if g.card is not None:
        title += f" · {g.card.eth_summary()}"
        if g.lhr and g.card.lhr == "by-device-id":
            title += " (non-LHR figure; this card is LHR)"
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    rows: list[tuple[str, str]] = []

    def add(key: str, text: str, *values: Any) -> None:
        """Add a reading row; a lost GPU shows only what it answered before it went."""
        if r.error and all(v is None for v in values):
            return
        rows.append((key, text))

    mem_reason = r.unavailable.get("memory_temperature_c", "unknown")
    fan_reason = r.unavailable.get("fan_pct", "unknown")
    add("UUID", r.uuid or "n/a", r.uuid)
    add(
        "PCI",
        f"{r.pci_bus_id or 'n/a'}  id {r.pci_vendor_id or '?'}:{r.pci_device_id or '?'}",
        r.pci_bus_id,
        r.pci_device_id,
    )
    add(
        "VRAM used / total",
        _pair(r.memory_used_mb, r.memory_total_mb, " MB"),
        r.memory_used_mb,
        r.memory_total_mb,
    )
    add("compute capability", r.compute_capability or "n/a", r.compute_capability)
    add(
        "utilization gpu / mem",
        _pair(r.utilization_gpu_pct, r.utilization_memory_pct, " %"),
        r.utilization_gpu_pct,
    )
    add("temperature core", _or_na(r.temperature_c, " °C"), r.temperature_c)
    add(
        "temperature memory junction",
        _or_na(r.memory_temperature_c, " °C")
        if r.memory_temperature_c is not None
        else f"n/a ({mem_reason})",
        r.memory_temperature_c,
    )
    add(
        "fan",
        _or_na(r.fan_pct, " %") if r.fan_pct is not None else f"n/a ({fan_reason}: passive card?)",
        r.fan_pct,
    )
    add("power draw / limit", _pair(r.power_draw_w, r.power_limit_w, " W"), r.power_draw_w)
    add(
        "cost per hour now / at limit",
        f"{_cost(g.cost_per_hour_now)} / {_cost(g.cost_per_hour_at_limit)} at {price}/kWh",
        g.cost_per_hour_now,
        g.cost_per_hour_at_limit,
    )
    add(
        "clock core / sm / mem",
        f"{_or_na(r.clock_graphics_mhz)} / {_or_na(r.clock_sm_mhz)} / "
        f"{_or_na(r.clock_memory_mhz)} MHz",
        r.clock_graphics_mhz,
    )
    add(
        "max clock core / mem",
        _pair(r.max_clock_graphics_mhz, r.max_clock_memory_mhz, " MHz"),
        r.max_clock_graphics_mhz,
    )
    add(
        "PCIe now / max",
        f"gen {_or_na(r.pcie_gen_current)} x{_or_na(r.pcie_width_current)} / "
        f"gen {_or_na(r.pcie_gen_max)} x{_or_na(r.pcie_width_max)}",
        r.pcie_gen_current,
        r.pcie_width_current,
    )
    add("performance state", r.performance_state or "n/a", r.performance_state)
    if g.card is not None:
        c = g.card
        flags = [c.architecture, c.chip, c.memory_type]
        if c.mining_only:
            flags.append("mining-only")
        if g.lhr:
            flags.append("LHR")
        rows.append(("catalog", f"{c.name} ({', '.join(flags)})"))
        rows += [("known limit", limit) for limit in c.limits]
    else:
        rows.append(("catalog", "not a known mining card"))
    for check in g.verdict.checks:
        style = {"ok": "green", "warn": "yellow", "fail": "red"}.get(check.status, "cyan")
        rows.append((f"[{style}]{check.status}[/] {check.name}", check.message))
    rows.append(("recommended dtype", g.verdict.recommended_dtype or "n/a"))
    for key, value in rows:
        table.add_row(key, value)
    return table


def render_detect(report: DetectReport) -> None:
    """The human view: host line, NVML line, a rig summary, then one table per GPU."""
    cpu = report.cpu
    mem = f", {cpu.memory_total_mb} MB RAM" if cpu.memory_total_mb else ""
    console.print(
        f"[bold]CPU[/]: {cpu.model} ({cpu.logical_cores} logical cores{mem})", soft_wrap=True
    )
    t = report.torch
    kind = "CPU-only build" if t.cpu_only else f"CUDA {t.cuda}"
    console.print(f"[bold]torch[/]: {t.version} ({kind})", soft_wrap=True)
    if not report.nvml_available:
        console.print(f"[bold yellow]NVML[/]: {report.nvml_message}", soft_wrap=True)
    else:
        console.print(
            f"[bold]NVML[/]: driver {report.driver_version or 'n/a'}, CUDA "
            f"{report.cuda_driver_version or 'n/a'}, {len(report.gpus)} GPU(s) shown",
            soft_wrap=True,
        )
    if report.gpus:
        table = Table(title="GPUs")
        for col in ("#", "name", "VRAM", "CC", "temp", "power", "PCIe", "dtype", "verdict"):
            table.add_column(col)
        for row in _summary_rows(report):
            table.add_row(*row)
        console.print(table)
        total = report.total_power_w
        if total is not None:
            cost = cost_per_hour(total, report.price_per_kwh)
            console.print(
                f"rig draw now {total:.0f} W: {cost:.3f} per hour at "
                f"{report.price_per_kwh}/kWh ({report.price_source})",
                soft_wrap=True,
            )
        for g in report.gpus:
            console.print(_gpu_table(g, report.price_per_kwh))
    for note in report.notes:
        console.print(f"[bold]note[/]: {note}", soft_wrap=True)
