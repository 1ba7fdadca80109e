"""The one door to NVML: the only module of pot that imports ``pynvml`` (nvidia-ml-py).

Everything above this module talks to a :class:`NvmlBackend`, a deliberately tiny interface:
``init``/``shutdown``, two system reads, ``device_count`` and ``read(index, field)`` where
``field`` is one of :class:`Field`. :class:`PynvmlBackend` implements it with real NVML calls;
:mod:`pot_cli.hw.nvml_replay` implements it from recorded readings of real cards, which is how the
tests (and ``POT_NVML_REPLAY``) run everything above NVML on a machine without a GPU.

Every call goes through :func:`query`, which applies one policy:

* NotSupported, NoPermission, FunctionNotFound (and any other per-call NVML error) -> the value
  is :class:`Unavailable` with a reason; the caller shows "n/a" and carries on;
* GpuIsLost -> :class:`GpuLostError`, which the caller turns into a per-device error (the other
  GPUs of the rig are still read);
* a missing library or driver at ``init`` -> :class:`NvmlNotFound` (one clear line, CPU path).

Errors travel as :class:`NvmlError` carrying the NVML C return code (stable across driver
versions), so the backends need not share pynvml's exception classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

# NVML return codes (nvml.h, nvmlReturn_t); pynvml uses the same numbers.
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_UNKNOWN = 999

ERROR_NAMES: dict[str, int] = {
    "UNINITIALIZED": NVML_ERROR_UNINITIALIZED,
    "INVALID_ARGUMENT": NVML_ERROR_INVALID_ARGUMENT,
    "NOT_SUPPORTED": NVML_ERROR_NOT_SUPPORTED,
    "NO_PERMISSION": NVML_ERROR_NO_PERMISSION,
    "NOT_FOUND": NVML_ERROR_NOT_FOUND,
    "DRIVER_NOT_LOADED": NVML_ERROR_DRIVER_NOT_LOADED,
    "TIMEOUT": NVML_ERROR_TIMEOUT,
    "LIBRARY_NOT_FOUND": NVML_ERROR_LIBRARY_NOT_FOUND,
    "FUNCTION_NOT_FOUND": NVML_ERROR_FUNCTION_NOT_FOUND,
    "GPU_IS_LOST": NVML_ERROR_GPU_IS_LOST,
    "LIB_RM_VERSION_MISMATCH": NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    "UNKNOWN": NVML_ERROR_UNKNOWN,
}

_REASONS: dict[int, str] = {
    NVML_ERROR_NOT_SUPPORTED: "not supported by this card",
    NVML_ERROR_NO_PERMISSION: "no permission",
    NVML_ERROR_FUNCTION_NOT_FOUND: "not in this driver's NVML",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_TIMEOUT: "timed out",
    NVML_ERROR_UNKNOWN: "unknown NVML error",
}

# Codes that mean "this value is not available here", by policy not an error.
UNAVAILABLE_CODES = frozenset(
    {NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_NO_PERMISSION, NVML_ERROR_FUNCTION_NOT_FOUND}
)
# Codes at init that mean "no usable NVIDIA driver on this machine".
NO_DRIVER_CODES = frozenset(
    {
        NVML_ERROR_LIBRARY_NOT_FOUND,
        NVML_ERROR_DRIVER_NOT_LOADED,
        NVML_ERROR_LIB_RM_VERSION_MISMATCH,
        NVML_ERROR_NO_PERMISSION,
        NVML_ERROR_UNINITIALIZED,
    }
)

REPLAY_ENV = "POT_NVML_REPLAY"
"""Environment variable: path of a recorded rig (JSON) to replay instead of the real NVML."""


class NvmlError(Exception):
    """An NVML call failed with return code ``code`` (see ``nvml.h``)."""

    def __init__(self, code: int, message: str | None = None) -> None:
        self.code = code
        super().__init__(message or reason_for(code))


class GpuLostError(Exception):
    """A GPU stopped answering (NVML_ERROR_GPU_IS_LOST): a per-device failure."""

    def __init__(self, index: int) -> None:
        self.index = index
        super().__init__(
            f"GPU {index} is lost (fell off the bus: check its riser, power and driver logs)"
        )


class NvmlNotFound(Exception):
    """NVML cannot start here: no NVIDIA driver, library or permission. Not a crash: CPU path."""


@dataclass(frozen=True)
class Unavailable:
    """A reading NVML does not give on this card or driver, with the reason."""

    reason: str


def reason_for(code: int) -> str:
    return _REASONS.get(code, f"NVML error {code}")


class Field(StrEnum):
    """Every per-device value pot reads through NVML (one backend call each)."""

    NAME = "name"
    UUID = "uuid"
    PCI_BUS_ID = "pci_bus_id"
    PCI_DEVICE_ID = "pci_device_id"  # 32-bit: (device << 16) | vendor, e.g. 0x248410DE
    PCI_SUBSYSTEM_ID = "pci_subsystem_id"
    MEMORY_TOTAL = "memory_total"  # bytes
    MEMORY_USED = "memory_used"  # bytes
    COMPUTE_CAPABILITY = "compute_capability"  # (major, minor)
    UTILIZATION_GPU = "utilization_gpu"  # %
    UTILIZATION_MEMORY = "utilization_memory"  # %
    TEMPERATURE_GPU = "temperature_gpu"  # °C, NVML_TEMPERATURE_GPU
    TEMPERATURE_MEMORY = "temperature_memory"  # °C, field NVML_FI_DEV_MEMORY_TEMP
    FAN_SPEED = "fan_speed"  # % of max
    POWER_USAGE = "power_usage"  # mW
    POWER_LIMIT = "power_limit"  # mW, the enforced limit
    CLOCK_GRAPHICS = "clock_graphics"  # MHz
    CLOCK_SM = "clock_sm"
    CLOCK_MEMORY = "clock_memory"
    MAX_CLOCK_GRAPHICS = "max_clock_graphics"
    MAX_CLOCK_MEMORY = "max_clock_memory"
    PCIE_GEN_CURRENT = "pcie_gen_current"
    PCIE_GEN_MAX = "pcie_gen_max"  # the most this card *and this slot* allow
    PCIE_GEN_GPU_MAX = "pcie_gen_gpu_max"  # the card alone
    PCIE_WIDTH_CURRENT = "pcie_width_current"
    PCIE_WIDTH_MAX = "pcie_width_max"  # card and slot
    PERFORMANCE_STATE = "performance_state"  # 0 (P0) .. 15, 32 = unknown


class NvmlBackend(Protocol):
    """The whole surface of NVML that pot uses. Methods raise :class:`NvmlError`."""

    def init(self) -> None: ...

    def shutdown(self) -> None: ...

    def driver_version(self) -> str: ...

    def cuda_driver_version(self) -> int: ...

    def device_count(self) -> int: ...

    def read(self, index: int, field: Field) -> Any: ...


T = TypeVar("T")


def query(fn: Callable[[], T], index: int | None = None) -> T | Unavailable:
    """Run one NVML call under the module's policy (see the module docstring).

    ``index`` names the device for a lost GPU; system calls pass None.
    """
    try:
        return fn()
    except NvmlError as exc:
        if exc.code == NVML_ERROR_GPU_IS_LOST and index is not None:
            raise GpuLostError(index) from exc
        return Unavailable(reason_for(exc.code) if exc.code in _REASONS else str(exc))


def start(backend: NvmlBackend) -> None:
    """Initialise NVML; a missing driver or library becomes :class:`NvmlNotFound`."""
    try:
        backend.init()
    except NvmlError as exc:
        if exc.code in NO_DRIVER_CODES:
            raise NvmlNotFound(no_driver_message(exc.code)) from exc
        raise NvmlNotFound(f"NVML failed to start ({exc}): using the CPU") from exc


def no_driver_message(code: int) -> str:
    if code == NVML_ERROR_LIBRARY_NOT_FOUND:
        return "NVML not found (no NVIDIA driver: libnvidia-ml.so.1 missing): using the CPU"
    if code == NVML_ERROR_DRIVER_NOT_LOADED:
        return "NVIDIA driver not loaded (NVML present, kernel module absent): using the CPU"
    if code == NVML_ERROR_LIB_RM_VERSION_MISMATCH:
        return (
            "NVML and kernel driver versions differ (reboot after a driver update): using the CPU"
        )
    if code == NVML_ERROR_NO_PERMISSION:
        return "no permission to open the NVIDIA devices (/dev/nvidia*): using the CPU"
    return f"NVML unavailable ({reason_for(code)}): using the CPU"


class PynvmlBackend:
    """The real NVML through nvidia-ml-py. ``pynvml`` is imported on first use, here only."""

    def __init__(self) -> None:
        self._nv: Any = None
        self._handles: dict[int, Any] = {}

    def _lib(self) -> Any:
        if self._nv is None:
            import pynvml  # the single import of pynvml in pot

            self._nv = pynvml
        return self._nv

    def _call(self, fn: Callable[[], T]) -> T:
        nv = self._lib()
        try:
            return fn()
        except nv.NVMLError as exc:
            raise NvmlError(int(exc.value), str(exc)) from exc

    def init(self) -> None:
        nv = self._lib()
        self._call(nv.nvmlInit)

    def shutdown(self) -> None:
        nv = self._lib()
        self._handles.clear()
        self._call(nv.nvmlShutdown)

    def driver_version(self) -> str:
        nv = self._lib()
        return str(self._call(nv.nvmlSystemGetDriverVersion))

    def cuda_driver_version(self) -> int:
        nv = self._lib()
        return int(self._call(nv.nvmlSystemGetCudaDriverVersion))

    def device_count(self) -> int:
        nv = self._lib()
        return int(self._call(nv.nvmlDeviceGetCount))

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            nv = self._lib()
            self._handles[index] = self._call(lambda: nv.nvmlDeviceGetHandleByIndex(index))
        return self._handles[index]

    def read(self, index: int, field: Field) -> Any:
        nv = self._lib()
        h = self._handle(index)
        return self._call(lambda: _PYNVML_READERS[field](nv, h))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _memory_temperature(nv: Any, h: Any) -> int:
    values = nv.nvmlDeviceGetFieldValues(h, [nv.NVML_FI_DEV_MEMORY_TEMP])
    value = values[0]
    if value.nvmlReturn != 0:
        raise nv.NVMLError(value.nvmlReturn)
    kinds = {
        nv.NVML_VALUE_TYPE_DOUBLE: "dVal",
        nv.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
        nv.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
        nv.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
        nv.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
        nv.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    }
    return int(getattr(value.value, kinds.get(value.valueType, "uiVal")))


_PYNVML_READERS: dict[Field, Callable[[Any, Any], Any]] = {
    Field.NAME: lambda nv, h: _text(nv.nvmlDeviceGetName(h)),
    Field.UUID: lambda nv, h: _text(nv.nvmlDeviceGetUUID(h)),
    Field.PCI_BUS_ID: lambda nv, h: _text(nv.nvmlDeviceGetPciInfo(h).busId),
    Field.PCI_DEVICE_ID: lambda nv, h: int(nv.nvmlDeviceGetPciInfo(h).pciDeviceId),
    Field.PCI_SUBSYSTEM_ID: lambda nv, h: int(nv.nvmlDeviceGetPciInfo(h).pciSubSystemId),
    Field.MEMORY_TOTAL: lambda nv, h: int(nv.nvmlDeviceGetMemoryInfo(h).total),
    Field.MEMORY_USED: lambda nv, h: int(nv.nvmlDeviceGetMemoryInfo(h).used),
    Field.COMPUTE_CAPABILITY: lambda nv, h: tuple(nv.nvmlDeviceGetCudaComputeCapability(h)),
    Field.UTILIZATION_GPU: lambda nv, h: int(nv.nvmlDeviceGetUtilizationRates(h).gpu),
    Field.UTILIZATION_MEMORY: lambda nv, h: int(nv.nvmlDeviceGetUtilizationRates(h).memory),
    Field.TEMPERATURE_GPU: lambda nv, h: int(
        nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)
    ),
    Field.TEMPERATURE_MEMORY: _memory_temperature,
    Field.FAN_SPEED: lambda nv, h: int(nv.nvmlDeviceGetFanSpeed(h)),
    Field.POWER_USAGE: lambda nv, h: int(nv.nvmlDeviceGetPowerUsage(h)),
    Field.POWER_LIMIT: lambda nv, h: int(nv.nvmlDeviceGetEnforcedPowerLimit(h)),
    Field.CLOCK_GRAPHICS: lambda nv, h: int(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_GRAPHICS)),
    Field.CLOCK_SM: lambda nv, h: int(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
    Field.CLOCK_MEMORY: lambda nv, h: int(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
    Field.MAX_CLOCK_GRAPHICS: lambda nv, h: int(
        nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_GRAPHICS)
    ),
    Field.MAX_CLOCK_MEMORY: lambda nv, h: int(nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_MEM)),
    Field.PCIE_GEN_CURRENT: lambda nv, h: int(nv.nvmlDeviceGetCurrPcieLinkGeneration(h)),
    Field.PCIE_GEN_MAX: lambda nv, h: int(nv.nvmlDeviceGetMaxPcieLinkGeneration(h)),
    Field.PCIE_GEN_GPU_MAX: lambda nv, h: int(nv.nvmlDeviceGetGpuMaxPcieLinkGeneration(h)),
    Field.PCIE_WIDTH_CURRENT: lambda nv, h: int(nv.nvmlDeviceGetCurrPcieLinkWidth(h)),
    Field.PCIE_WIDTH_MAX: lambda nv, h: int(nv.nvmlDeviceGetMaxPcieLinkWidth(h)),
    Field.PERFORMANCE_STATE: lambda nv, h: int(nv.nvmlDeviceGetPerformanceState(h)),
}
