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

from pot_cli.gpu_selection import parse_gpu_selection
from pot_cli.hw.catalog import CatalogCard, match_card
from pot_cli.hw.nvml import NvmlBackend
from pot_cli.hw.pricing import cost_per_hour
from pot_cli.hw.readings import GpuReading, read_rig
from pot_cli.hw.system import SYS_PCI_DEVICES, CpuInfo, PciGpu, cpu_info, scan_pci_gpus
from pot_cli.hw.verdicts import TaskNeed, TorchBuild, Verdict, judge

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
