"""Power sampling through NVML while a benchmark runs, and mapping CUDA devices to NVML indices.

A :class:`PowerSampler` polls ``nvmlDeviceGetPowerUsage`` (through the NVML module's query
policy) on a background thread every ``interval_s`` while a test runs; the average of the samples
is the test's power. NVML updates the power reading about every 20-100 ms depending on the
board, so the default 50 ms interval sees each update. Tests inject the replay backend.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from pot_cli.hw import nvml
from pot_cli.hw.nvml import Field, GpuLostError, NvmlBackend, Unavailable


class PowerSampler:
    """Context manager: samples one GPU's power draw (W) while the block runs."""

    def __init__(self, backend: NvmlBackend, nvml_index: int, interval_s: float = 0.05) -> None:
        self.backend = backend
        self.nvml_index = nvml_index
        self.interval_s = interval_s
        self.samples_w: list[float] = []
        self.unavailable: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_once(self) -> None:
        try:
            raw = nvml.query(
                lambda: self.backend.read(self.nvml_index, Field.POWER_USAGE), self.nvml_index
            )
        except GpuLostError as exc:
            self.unavailable = str(exc)
            self._stop.set()
            return
        if isinstance(raw, Unavailable):
            self.unavailable = raw.reason
            self._stop.set()
            return
        self.samples_w.append(int(raw) / 1000.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample_once()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PowerSampler:
        self.samples_w = []
        self.unavailable = None
        self._stop.clear()
        self.sample_once()  # at least one sample even for a very short test
        self._thread = threading.Thread(target=self._run, name="pot-power-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.unavailable is None:
            self.sample_once()

    @property
    def average_w(self) -> float | None:
        if not self.samples_w:
            return None
        return sum(self.samples_w) / len(self.samples_w)


def _normalise_uuid(text: str) -> str:
    text = text.strip().lower()
    return text[4:] if text.startswith("gpu-") else text


def _bus_tuple(bus_id: str) -> tuple[int, int, int] | None:
    """'00000000:01:00.0' -> (domain, bus, device)."""
    try:
        domain, bus, rest = bus_id.split(":")
        device = rest.split(".")[0]
        return int(domain, 16), int(bus, 16), int(device, 16)
    except ValueError:
        return None


def nvml_index_for_cuda(
    props: Any, nvml_devices: list[tuple[int, str | None, str | None]]
) -> int | None:
    """The NVML index of a CUDA device (torch's device properties ``props``).

    CUDA numbers GPUs fastest-first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, NVML numbers them
    by PCI bus, so the index cannot be assumed equal: match by UUID (torch gives it with or
    without NVML's ``GPU-`` prefix), else by PCI location, else the only GPU there is.
    ``nvml_devices`` lists (index, uuid, pci_bus_id) as NVML reports them.
    """
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        wanted = _normalise_uuid(str(uuid))
        for index, nv_uuid, _ in nvml_devices:
            if nv_uuid is not None and _normalise_uuid(nv_uuid) == wanted:
                return index
    bus = getattr(props, "pci_bus_id", None)
    device = getattr(props, "pci_device_id", None)
    domain = getattr(props, "pci_domain_id", 0)
    if bus is not None and device is not None:
        for index, _, nv_bus in nvml_devices:
            if nv_bus is not None and _bus_tuple(nv_bus) == (int(domain), int(bus), int(device)):
                return index
    if len(nvml_devices) == 1:
        return nvml_devices[0][0]  # a single NVIDIA GPU: nothing to confuse it with
    return None
