"""Per-GPU readings taken through NVML, as plain typed values.

A value NVML does not give is ``None`` here, with the reason in ``GpuReading.unavailable``; a GPU
that is lost mid-read keeps what was read before and carries ``error``; the other GPUs are still
read. A memory-junction temperature of 0 °C is what many GeForce cards report when the sensor is
not exposed, so it counts as unavailable rather than as a (physically absurd) reading.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from pot_cli.hw import nvml
from pot_cli.hw.nvml import Field, GpuLostError, NvmlBackend, NvmlNotFound, Unavailable

MIB = 1024 * 1024


@dataclass
class GpuReading:
    index: int
    name: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    pci_device_id: str | None = None  # "0x2484" (device part only)
    pci_vendor_id: str | None = None  # "0x10de"
    pci_subsystem_id: str | None = None  # "0x146710de" as NVML gives it
    memory_total_mb: int | None = None
    memory_used_mb: int | None = None
    compute_capability: str | None = None  # "8.6"
    utilization_gpu_pct: int | None = None
    utilization_memory_pct: int | None = None
    temperature_c: int | None = None
    memory_temperature_c: int | None = None
    fan_pct: int | None = None
    power_draw_w: float | None = None
    power_limit_w: float | None = None
    clock_graphics_mhz: int | None = None
    clock_sm_mhz: int | None = None
    clock_memory_mhz: int | None = None
    max_clock_graphics_mhz: int | None = None
    max_clock_memory_mhz: int | None = None
    pcie_gen_current: int | None = None
    pcie_gen_max: int | None = None
    pcie_gen_gpu_max: int | None = None
    pcie_width_current: int | None = None
    pcie_width_max: int | None = None
    performance_state: str | None = None  # "P2"
    unavailable: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def cc_tuple(self) -> tuple[int, int] | None:
        if self.compute_capability is None:
            return None
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RigReading:
    """What NVML says about the whole machine."""

    nvml_available: bool
    message: str | None = None  # why NVML is not available (one line)
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # "12.2"
    gpus: list[GpuReading] = field(default_factory=list)


def _cc(value: Any) -> str:
    major, minor = value
    return f"{int(major)}.{int(minor)}"


def _mb(value: Any) -> int:
    return int(value) // MIB


def _watts(value: Any) -> float:
    return round(int(value) / 1000.0, 3)


def _pstate(value: Any) -> str | None:
    v = int(value)
    return None if v == 32 else f"P{v}"


def _pci_device(value: Any) -> str:
    return f"0x{(int(value) >> 16) & 0xFFFF:04x}"


def _pci_vendor(value: Any) -> str:
    return f"0x{int(value) & 0xFFFF:04x}"


def _hex32(value: Any) -> str:
    return f"0x{int(value) & 0xFFFFFFFF:08x}"


# attribute of GpuReading <- (NVML field, conversion)
_PLAN: list[tuple[str, Field, Any]] = [
    ("name", Field.NAME, str),
    ("uuid", Field.UUID, str),
    ("pci_bus_id", Field.PCI_BUS_ID, str),
    ("pci_device_id", Field.PCI_DEVICE_ID, _pci_device),
    ("pci_vendor_id", Field.PCI_DEVICE_ID, _pci_vendor),
    ("pci_subsystem_id", Field.PCI_SUBSYSTEM_ID, _hex32),
    ("memory_total_mb", Field.MEMORY_TOTAL, _mb),
    ("memory_used_mb", Field.MEMORY_USED, _mb),
    ("compute_capability", Field.COMPUTE_CAPABILITY, _cc),
    ("utilization_gpu_pct", Field.UTILIZATION_GPU, int),
    ("utilization_memory_pct", Field.UTILIZATION_MEMORY, int),
    ("temperature_c", Field.TEMPERATURE_GPU, int),
    ("memory_temperature_c", Field.TEMPERATURE_MEMORY, int),
    ("fan_pct", Field.FAN_SPEED, int),
    ("power_draw_w", Field.POWER_USAGE, _watts),
    ("power_limit_w", Field.POWER_LIMIT, _watts),
    ("clock_graphics_mhz", Field.CLOCK_GRAPHICS, int),
    ("clock_sm_mhz", Field.CLOCK_SM, int),
    ("clock_memory_mhz", Field.CLOCK_MEMORY, int),
    ("max_clock_graphics_mhz", Field.MAX_CLOCK_GRAPHICS, int),
    ("max_clock_memory_mhz", Field.MAX_CLOCK_MEMORY, int),
    ("pcie_gen_current", Field.PCIE_GEN_CURRENT, int),
    ("pcie_gen_max", Field.PCIE_GEN_MAX, int),
    ("pcie_gen_gpu_max", Field.PCIE_GEN_GPU_MAX, int),
    ("pcie_width_current", Field.PCIE_WIDTH_CURRENT, int),
    ("pcie_width_max", Field.PCIE_WIDTH_MAX, int),
    ("performance_state", Field.PERFORMANCE_STATE, _pstate),
]


def read_gpu(backend: NvmlBackend, index: int) -> GpuReading:
    """Read every value of GPU ``index``; never raises for NVML errors (see module doc)."""
    reading = GpuReading(index=index)
    try:
        for attr, fld, convert in _PLAN:
            raw = nvml.query(partial(backend.read, index, fld), index=index)
            if isinstance(raw, Unavailable):
                reading.unavailable[attr] = raw.reason
                continue
            try:
                setattr(reading, attr, convert(raw))
            except (TypeError, ValueError):
                reading.unavailable[attr] = f"unreadable value {raw!r}"
    except GpuLostError as exc:
        reading.error = str(exc)
    if reading.memory_temperature_c == 0:
        reading.memory_temperature_c = None
        reading.unavailable["memory_temperature_c"] = "reads 0 (sensor not exposed)"
    if reading.performance_state is None and "performance_state" not in reading.unavailable:
        reading.unavailable["performance_state"] = "unknown"
    return reading


def read_rig(backend: NvmlBackend) -> RigReading:
    """Start NVML, read every GPU, shut NVML down. No driver -> ``nvml_available=False``."""
    try:
        nvml.start(backend)
    except NvmlNotFound as exc:
        return RigReading(nvml_available=False, message=str(exc))
    try:
        driver = nvml.query(backend.driver_version)
        cuda = nvml.query(backend.cuda_driver_version)
        count = nvml.query(backend.device_count)
        rig = RigReading(
            nvml_available=True,
            driver_version=None if isinstance(driver, Unavailable) else driver,
            cuda_driver_version=None if isinstance(cuda, Unavailable) else _cuda_version(cuda),
        )
        if isinstance(count, Unavailable):
            rig.message = f"cannot count GPUs: {count.reason}"
            return rig
        rig.gpus = [read_gpu(backend, i) for i in range(count)]
        return rig
    finally:
        nvml.query(backend.shutdown)


def _cuda_version(value: int) -> str:
    """NVML encodes CUDA 12.2 as 12020."""
    return f"{value // 1000}.{(value % 1000) // 10}"
