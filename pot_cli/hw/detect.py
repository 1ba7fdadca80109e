"""``pot hw detect``: readings + catalog identity + verdict for every GPU, and the host.

:func:`detect` composes the layers (NVML readings, catalog, verdicts, PCI scan, electricity) into
a :class:`DetectReport`; :func:`render` prints it for people, ``DetectReport.to_dict`` is the
``--json`` schema (``"schema": "pot.hw.detect/1"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from pot_cli.hw.catalog import CatalogCard, match_card
from pot_cli.hw.nvml import NvmlBackend
from pot_cli.hw.pricing import cost_per_hour
from pot_cli.hw.readings import GpuReading, read_rig
from pot_cli.hw.selection import parse_gpu_selection
from pot_cli.hw.system import SYS_PCI_DEVICES, CpuInfo, PciGpu, cpu_info, scan_pci_gpus
from pot_cli.hw.verdicts import TaskNeed, TorchBuild, Verdict, judge
from pot_cli.output import console

SCHEMA = "pot.hw.detect/1"
AMD_NOTE = (
    "AMD cards are not visible through NVML (use amd-smi or rocm-smi for their telemetry); "
    "pot trains through CUDA, so they are not used"
)


@dataclass
class GpuReport:
    reading: GpuReading
    card: CatalogCard | None
    lhr: bool | None
    verdict: Verdict
    cost_per_hour_now: float | None
    cost_per_hour_at_limit: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.reading.to_dict(),
            "catalog": None
            if self.card is None
            else {**self.card.to_dict(), "lhr": self.lhr, "eth_summary": self.card.eth_summary()},
            "verdict": self.verdict.to_dict(),
            "cost_per_hour_now": self.cost_per_hour_now,
            "cost_per_hour_at_limit": self.cost_per_hour_at_limit,
        }


@dataclass
class DetectReport:
    cpu: CpuInfo
    torch: TorchBuild
    nvml_available: bool
    nvml_message: str | None
    driver_version: str | None
    cuda_driver_version: str | None
    price_per_kwh: float
    price_source: str
    gpus: list[GpuReport] = field(default_factory=list)
    pci_gpus: list[PciGpu] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total_power_w(self) -> float | None:
        draws = [g.reading.power_draw_w for g in self.gpus if g.reading.power_draw_w is not None]
        return round(sum(draws), 3) if draws else None

    def to_dict(self) -> dict[str, Any]:
        total = self.total_power_w
        return {
            "schema": SCHEMA,
            "cpu": self.cpu.to_dict(),
            "torch": {
                "version": self.torch.version,
                "cuda": self.torch.cuda,
                "arch_list": list(self.torch.arch_list),
            },
            "nvml": {
                "available": self.nvml_available,
                "message": self.nvml_message,
                "driver_version": self.driver_version,
                "cuda_driver_version": self.cuda_driver_version,
            },
            "electricity": {
                "price_per_kwh": self.price_per_kwh,
                "source": self.price_source,
                "rig_power_w": total,
                "rig_cost_per_hour": cost_per_hour(total, self.price_per_kwh),
            },
            "gpus": [g.to_dict() for g in self.gpus],
            "pci_gpus": [p.to_dict() for p in self.pci_gpus],
            "notes": list(self.notes),
        }


def detect(
    backend: NvmlBackend,
    build: TorchBuild,
    tasks: list[TaskNeed],
    price_per_kwh: float,
    price_source: str = "default",
    selection: str = "all",
    pci_root: Path = SYS_PCI_DEVICES,
    cpu: Callable[[], CpuInfo] = cpu_info,
) -> DetectReport:
    rig = read_rig(backend)
    report = DetectReport(
        cpu=cpu(),
        torch=build,
        nvml_available=rig.nvml_available,
        nvml_message=rig.message,
        driver_version=rig.driver_version,
        cuda_driver_version=rig.cuda_driver_version,
        price_per_kwh=price_per_kwh,
        price_source=price_source,
        pci_gpus=scan_pci_gpus(pci_root),
    )
    chosen = parse_gpu_selection(selection, [g.index for g in rig.gpus])
    by_index = {g.index: g for g in rig.gpus}
    for index in chosen:
        reading = by_index[index]
        card = match_card(reading.name, reading.pci_device_id)
        report.gpus.append(
            GpuReport(
                reading=reading,
                card=card,
                lhr=None if card is None else card.is_lhr(reading.pci_device_id),
                verdict=judge(reading, card, build, tasks),
                cost_per_hour_now=cost_per_hour(reading.power_draw_w, price_per_kwh),
                cost_per_hour_at_limit=cost_per_hour(reading.power_limit_w, price_per_kwh),
            )
        )
    nvidia_on_bus = [p for p in report.pci_gpus if p.vendor == "nvidia"]
    amd_on_bus = [p for p in report.pci_gpus if p.vendor == "amd"]
    if not rig.nvml_available and nvidia_on_bus:
        report.notes.append(
            f"{len(nvidia_on_bus)} NVIDIA GPU(s) on the PCI bus but NVML is unavailable: "
            "install or load the NVIDIA driver"
        )
    if amd_on_bus:
        names = sorted({p.name or f"device {p.device_id}" for p in amd_on_bus})
        report.notes.append(f"{len(amd_on_bus)} AMD GPU(s) on the PCI bus ({', '.join(names)})")
    if not rig.gpus:
        report.notes.append("no NVIDIA GPU found: training runs on the CPU")
    if amd_on_bus or not rig.gpus:
        report.notes.append(AMD_NOTE)
    for g in rig.gpus:
        if g.error:
            report.notes.append(g.error)
    return report


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


def render(report: DetectReport) -> None:
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
