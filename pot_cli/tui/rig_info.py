"""What the rig tab says about one worker: the card's ex-ETH identity from the catalog and its
verdict badge (plain Python; the widget renders it).

The badge's **torch** part is what the miner actually does with the card: a worker computing on
``cuda:N`` proves its torch build runs the card, one that falls back to the CPU proves it does
not (the dashboard may run elsewhere, with another torch: its own build would say nothing). bf16,
fp16, VRAM fit and the PCIe link come from :func:`pot_cli.hw.verdicts.judge` on the card's
readings and catalog entry, with the task's VRAM need when the evaluator has loaded the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pot_cli.hw.catalog import CatalogCard, match_card
from pot_cli.hw.readings import GpuReading
from pot_cli.hw.verdicts import FAIL, OK, WARN, TaskNeed, TorchBuild, judge
from pot_cli.node.miner_client import DeviceOut

_NO_BUILD = TorchBuild("miner", None, ())  # judge's torch check is replaced (see above)


@dataclass(frozen=True)
class DeviceInfo:
    name: str  # gpu3 / cpu
    card: str  # the catalog's name, else NVML's, else "CPU"
    eth: str  # "59 MH/s at 120 W" or ""
    badge: str  # "torch ok · bf16 · fits"
    short: str  # "cuda·bf16·fits" (narrow terminals)
    status: str  # ok | warn | fail
    notes: tuple[str, ...]


def reading_of(device: DeviceOut) -> GpuReading | None:
    r = device.reading
    if not r:
        return None
    known = set(GpuReading.__dataclass_fields__)
    try:
        return GpuReading(**{k: v for k, v in r.items() if k in known})
    except TypeError:
        return None


def device_info(device: DeviceOut, task: dict[str, Any] | None = None) -> DeviceInfo:
    reading = reading_of(device)
    if reading is None:
        return DeviceInfo(
            device.name,
            "CPU" if device.device == "cpu" else device.device,
            "",
            f"computes on {device.device}",
            device.device,
            OK,
            (),
        )
    card: CatalogCard | None = match_card(reading.name, reading.pci_device_id)
    eth = card.eth_summary().removeprefix("ex-ETH: ") if card else ""
    if eth == "figures not sourced":
        eth = ""
    needs = []
    if task and task.get("vram_need_mb"):
        needs = [TaskNeed(str(task.get("name", "task")), int(task["vram_need_mb"]))]
    verdict = judge(reading, card, _NO_BUILD, needs)
    parts: list[str] = []
    status = OK
    notes: list[str] = []
    if reading.error:
        return DeviceInfo(
            device.name,
            card.name if card else reading.name or "?",
            eth,
            "lost",
            "lost",
            FAIL,
            (reading.error,),
        )
    if device.device.startswith("cuda"):
        parts.append("torch ok")
    else:
        parts.append("CPU fallback")
        status = WARN
        notes.append("the miner's torch cannot use the card: computing on the CPU")
    if verdict.bf16_native:
        parts.append("bf16")
    elif verdict.fp16_worthwhile:
        parts.append("fp16")
    else:
        parts.append("fp32")
    for fits in verdict.tasks_fit.values():
        parts.append("fits" if fits else "VRAM short")
        if not fits:
            status = FAIL
            notes.append(next(c.message for c in verdict.checks if c.name.startswith("vram ")))
    for c in verdict.checks:
        if c.name == "pcie" and c.status == WARN:
            if status == OK:
                status = WARN
            notes.append(c.message.split(": host")[0] + ": slow host↔device copies (riser)")
    fit = ["fits" if ok else "short" for ok in verdict.tasks_fit.values()]
    short = "·".join(["cuda" if device.device.startswith("cuda") else "cpu!", parts[1], *fit])
    return DeviceInfo(
        device.name,
        card.name if card else (reading.name or "?").removeprefix("NVIDIA "),
        eth,
        " · ".join(parts),
        short,
        status,
        tuple(notes),
    )


def pcie_text(reading: dict[str, Any] | None) -> str:
    if not reading:
        return ""
    gen, width = reading.get("pcie_gen_current"), reading.get("pcie_width_current")
    if gen is None and width is None:
        return "n/a"
    return f"gen{gen or '?'} x{width or '?'}"


__all__ = ["DeviceInfo", "device_info", "pcie_text", "reading_of"]
