"""An :class:`~pot_cli.hw.nvml.NvmlBackend` that replays recorded NVML readings of a rig.

A recording is JSON::

    {"description": "...", "driver_version": "535.183.01", "cuda_driver_version": 12020,
     "devices": [{"name": "NVIDIA GeForce RTX 3070", "pci_device_id": "0x248410DE", ...}]}

Each device maps :class:`~pot_cli.hw.nvml.Field` names to what NVML returned:

* a plain value (ints may be written as ``"0x..."`` strings; ``compute_capability`` is
  ``[major, minor]``);
* ``{"error": "NOT_SUPPORTED"}`` (any name of :data:`~pot_cli.hw.nvml.ERROR_NAMES`): the call
  raised that NVML error; a field that is absent raises NOT_SUPPORTED too;
* ``{"sequence": [v1, v2, ...]}``: successive calls return successive values, cycling (power
  draw sampled during a benchmark).

``"lost": true`` on a device makes every call for it raise GPU_IS_LOST (a card that fell off
the bus). ``"init_error": "LIBRARY_NOT_FOUND"`` at the top makes ``init`` fail (no driver).

Tests inject it directly; ``POT_NVML_REPLAY=path`` makes the CLI use it (demos, CLI tests).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pot_cli.errors import PotError
from pot_cli.hw.nvml import (
    ERROR_NAMES,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_INVALID_ARGUMENT,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNINITIALIZED,
    Field,
    NvmlError,
)

_HEX_FIELDS = {Field.PCI_DEVICE_ID.value, Field.PCI_SUBSYSTEM_ID.value}


class ReplayFormatError(PotError):
    """A recording file is unreadable or malformed."""


class ReplayBackend:
    """Replays one recorded rig. Calls are counted per field (for sequences and tests)."""

    def __init__(self, recording: dict[str, Any], source: str = "<memory>") -> None:
        devices = recording.get("devices", [])
        if not isinstance(devices, list) or not all(isinstance(d, dict) for d in devices):
            raise ReplayFormatError(f"{source}: 'devices' must be a list of objects")
        for i, device in enumerate(devices):
            for key in device:
                if key not in _DEVICE_KEYS:
                    raise ReplayFormatError(f"{source}: device {i}: unknown field {key!r}")
        init_error = recording.get("init_error")
        if init_error is not None and init_error not in ERROR_NAMES:
            raise ReplayFormatError(f"{source}: unknown init_error {init_error!r}")
        self.recording = recording
        self.source = source
        self.devices: list[dict[str, Any]] = devices
        self.calls: dict[tuple[int, str], int] = {}
        self.initialised = False

    @classmethod
    def from_file(cls, path: Path) -> ReplayBackend:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReplayFormatError(f"cannot read NVML recording {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ReplayFormatError(f"{path}: a recording is a JSON object")
        return cls(data, source=str(path))

    def init(self) -> None:
        err = self.recording.get("init_error")
        if err is not None:
            raise NvmlError(ERROR_NAMES[err])
        self.initialised = True

    def shutdown(self) -> None:
        self._require_init()
        self.initialised = False

    def _require_init(self) -> None:
        if not self.initialised:
            raise NvmlError(NVML_ERROR_UNINITIALIZED)

    def driver_version(self) -> str:
        self._require_init()
        return str(self._value(self.recording.get("driver_version"), (-1, "driver")))

    def cuda_driver_version(self) -> int:
        self._require_init()
        return int(self._value(self.recording.get("cuda_driver_version"), (-1, "cuda")))

    def device_count(self) -> int:
        self._require_init()
        return len(self.devices)

    def read(self, index: int, field: Field) -> Any:
        self._require_init()
        if not 0 <= index < len(self.devices):
            raise NvmlError(NVML_ERROR_INVALID_ARGUMENT)
        device = self.devices[index]
        if device.get("lost"):
            raise NvmlError(NVML_ERROR_GPU_IS_LOST)
        value = self._value(device.get(field.value), (index, field.value))
        if field.value in _HEX_FIELDS and isinstance(value, str):
            return int(value, 16)
        if field is Field.COMPUTE_CAPABILITY:
            return (int(value[0]), int(value[1]))
        return value

    def _value(self, raw: Any, key: tuple[int, str]) -> Any:
        count = self.calls.get(key, 0)
        self.calls[key] = count + 1
        if raw is None:
            raise NvmlError(NVML_ERROR_NOT_SUPPORTED)
        if isinstance(raw, dict):
            if "error" in raw:
                name = raw["error"]
                if name not in ERROR_NAMES:
                    raise ReplayFormatError(f"{self.source}: unknown NVML error {name!r}")
                raise NvmlError(ERROR_NAMES[name])
            if "sequence" in raw:
                seq = raw["sequence"]
                return seq[count % len(seq)]
            raise ReplayFormatError(f"{self.source}: bad value {raw!r} for {key[1]}")
        return raw


_DEVICE_KEYS = {f.value for f in Field} | {"lost", "comment"}
