"""The device-selection syntax shared by ``pot hw`` and ``pot mine``: ``--gpus all|0,2,5``.

Indices are NVML indices (PCI bus order, as nvidia-smi numbers them). Ranges ``0-3`` are accepted
too (a 12-card rig is tedious to list). The result keeps the order given, without duplicates
(a duplicate is an error: it usually means a typo).
"""

from __future__ import annotations

from collections.abc import Sequence

from pot_cli.errors import UsageError


class GpuSelectionError(UsageError):
    """A ``--gpus`` value is malformed or names a GPU this machine does not have."""


def _describe(available: Sequence[int]) -> str:
    if not available:
        return "this machine has no NVIDIA GPU visible to NVML"
    return "this machine has GPU " + ", ".join(str(i) for i in available)


def parse_gpu_spec(text: str) -> list[int] | None:
    """Syntax only: None for "all", else the indices in the order given (no machine needed:
    config validation can use it). Raises :class:`GpuSelectionError` for bad syntax or
    duplicates."""
    spec = text.strip().lower()
    if spec == "all":
        return None
    if not spec:
        raise GpuSelectionError('empty GPU selection: use "all" or indices like "0,2,5"')
    chosen: list[int] = []
    for part in spec.split(","):
        item = part.strip()
        if "-" in item:
            lo_text, _, hi_text = item.partition("-")
            lo_text, hi_text = lo_text.strip(), hi_text.strip()
            if not (lo_text.isdigit() and hi_text.isdigit()) or int(lo_text) > int(hi_text):
                raise GpuSelectionError(f'bad GPU range {item!r} in {text!r}: write it like "0-3"')
            indices = list(range(int(lo_text), int(hi_text) + 1))
        elif item.isdigit():
            indices = [int(item)]
        else:
            raise GpuSelectionError(
                f'bad GPU index {item!r} in {text!r}: use "all" or indices like "0,2,5"'
            )
        for index in indices:
            if index in chosen:
                raise GpuSelectionError(f"GPU {index} is listed twice in {text!r}")
            chosen.append(index)
    return chosen


def parse_gpu_selection(text: str, available_indices: Sequence[int]) -> list[int]:
    """Parse ``"all"``, ``"0,2,5"`` or ``"0-3,6"`` against the GPUs present.

    ``"all"`` gives every available index (an empty list on a machine without GPUs: the caller
    decides whether that means the CPU). Raises :class:`GpuSelectionError` for bad syntax,
    duplicates or indices not present.
    """
    available = sorted(set(available_indices))
    chosen = parse_gpu_spec(text)
    if chosen is None:
        return list(available)
    missing = [i for i in chosen if i not in available]
    if missing:
        names = ", ".join(str(i) for i in missing)
        raise GpuSelectionError(f"no GPU {names}: {_describe(available)}")
    return chosen
