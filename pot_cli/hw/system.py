"""The host side of a rig: the CPU and RAM, and display controllers on the PCI bus.

The PCI scan reads ``/sys/bus/pci/devices`` (no external tool). It finds what NVML cannot tell:
AMD cards (invisible to NVML) and NVIDIA cards present on the bus while the driver is missing.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pot_cli.hw.catalog import CatalogCard, load_catalog

SYS_PCI_DEVICES = Path("/sys/bus/pci/devices")
VENDOR_NVIDIA = "0x10de"
VENDOR_AMD = "0x1002"
_DISPLAY_CLASS_PREFIX = "0x03"  # PCI class 03xxxx: display controllers (VGA, 3D)


@dataclass(frozen=True)
class CpuInfo:
    model: str
    logical_cores: int
    memory_total_mb: int | None
    machine: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PciGpu:
    address: str  # "0000:03:00.0"
    vendor: str  # "nvidia" | "amd"
    device_id: str  # "0x67df"
    name: str | None  # catalog name when known

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_model(cpuinfo: Path) -> str:
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _mem_total_mb(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_info(proc: Path = Path("/proc")) -> CpuInfo:
    return CpuInfo(
        model=_cpu_model(proc / "cpuinfo"),
        logical_cores=os.cpu_count() or 1,
        memory_total_mb=_mem_total_mb(proc / "meminfo"),
        machine=platform.machine(),
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip().lower()
    except OSError:
        return None


def scan_pci_gpus(
    root: Path = SYS_PCI_DEVICES, cards: tuple[CatalogCard, ...] | None = None
) -> list[PciGpu]:
    """NVIDIA and AMD display controllers on the PCI bus (empty where sysfs is absent)."""
    cards = load_catalog() if cards is None else cards
    found: list[PciGpu] = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return found
    for entry in entries:
        cls = _read(entry / "class")
        vendor = _read(entry / "vendor")
        device = _read(entry / "device")
        if cls is None or vendor is None or device is None:
            continue
        if not cls.startswith(_DISPLAY_CLASS_PREFIX):
            continue
        if vendor == VENDOR_NVIDIA:
            kind = "nvidia"
        elif vendor == VENDOR_AMD:
            kind = "amd"
        else:
            continue
        names = sorted({c.name for c in cards if c.vendor == kind and device in c.pci_device_ids})
        found.append(
            PciGpu(
                address=entry.name,
                vendor=kind,
                device_id=device,
                name=" / ".join(names) if names else None,
            )
        )
    return found
