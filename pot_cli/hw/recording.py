"""Record what NVML reports on this rig, in the format :mod:`pot_cli.hw.nvml_replay` replays.

``pot hw record`` lets a rig owner capture real readings (the test recordings shipped with pot
were reconstructed from published ``nvidia-smi`` output, not captured from live cards): every
:class:`~pot_cli.hw.nvml.Field` of every GPU, with each failing call kept as the NVML error it
raised, so a replay reproduces the rig's quirks (NotSupported fields, a lost card) exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pot_cli.errors import PotError
from pot_cli.hw import nvml
from pot_cli.hw.nvml import ERROR_NAMES, NVML_ERROR_GPU_IS_LOST, Field, NvmlBackend, NvmlError

_CODE_NAMES = {code: name for name, code in ERROR_NAMES.items()}
_HEX_FIELDS = {Field.PCI_DEVICE_ID, Field.PCI_SUBSYSTEM_ID}


class RecordError(PotError):
    """Nothing to record (no NVML on this machine)."""


def _error(exc: NvmlError) -> dict[str, str]:
    return {"error": _CODE_NAMES.get(exc.code, "UNKNOWN")}


def _plain(field: Field, value: Any) -> Any:
    if field in _HEX_FIELDS:
        return f"0x{int(value) & 0xFFFFFFFF:08X}"
    if field is Field.COMPUTE_CAPABILITY:
        return [int(value[0]), int(value[1])]
    return value


def record_device(backend: NvmlBackend, index: int) -> dict[str, Any]:
    device: dict[str, Any] = {}
    for field in Field:
        try:
            device[field.value] = _plain(field, backend.read(index, field))
        except NvmlError as exc:
            if exc.code == NVML_ERROR_GPU_IS_LOST:
                return {**device, "lost": True}
            device[field.value] = _error(exc)
    return device


def record_rig(backend: NvmlBackend, description: str = "") -> dict[str, Any]:
    """A replayable recording of the rig behind ``backend``."""
    try:
        nvml.start(backend)
    except nvml.NvmlNotFound as exc:
        raise RecordError(f"cannot record: {str(exc).removesuffix(': using the CPU')}") from None
    try:
        out: dict[str, Any] = {
            "description": description
            or f"Recorded with pot hw record on {datetime.now(UTC).date().isoformat()}.",
        }
        for key, call in (
            ("driver_version", backend.driver_version),
            ("cuda_driver_version", backend.cuda_driver_version),
        ):
            try:
                out[key] = call()
            except NvmlError as exc:
                out[key] = _error(exc)
        try:
            count = backend.device_count()
        except NvmlError as exc:
            raise RecordError(f"cannot count GPUs: {exc}") from None
        out["devices"] = [record_device(backend, i) for i in range(count)]
        return out
    finally:
        nvml.query(backend.shutdown)
