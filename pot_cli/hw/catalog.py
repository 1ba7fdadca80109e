"""The mining-card catalog: ex-Ethereum GPUs, their figures and known limits.

The data lives in ``pot_cli/data/mining_cards.toml`` (data, not code: extend it without touching
Python). :func:`match_card` recognises a GPU from the name NVML prints, accepting both the modern
"NVIDIA GeForce RTX 3070" and the pre-R470 "GeForce RTX 3070" forms; the PCI device id, when
known, then tells Lite Hash Rate revisions apart (RTX 3070 0x2484 vs 0x2488 LHR). Matching is on
the whole normalised name, never on a prefix, so "RTX 3060" does not claim an "RTX 3060 Ti".
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from pot_cli.errors import PotError

CATALOG_RESOURCE = "mining_cards.toml"


class CatalogError(PotError):
    """The catalog data file is malformed."""


@dataclass(frozen=True)
class CatalogCard:
    key: str
    name: str
    vendor: str  # "nvidia" | "amd"
    nvml_names: tuple[str, ...]
    pci_device_ids: tuple[str, ...]
    lhr: str  # "yes" | "no" | "by-device-id"
    lhr_device_ids: tuple[str, ...]
    chip: str
    architecture: str
    vram_gb: int
    memory_type: str
    compute_capability: str | None
    compute_capability_inferred: bool
    gfx: str | None
    tensor_cores: bool
    eth_mhs: float | None
    eth_watts: float | None
    eth_figures: str
    mining_only: bool
    pcie: str
    limits: tuple[str, ...]

    @property
    def nvml_visible(self) -> bool:
        return self.vendor == "nvidia"

    def eth_summary(self) -> str:
        """ "ex-ETH: 59 MH/s at 120 W" (or what is known)."""
        if self.eth_mhs is None and self.eth_watts is None:
            return "ex-ETH: figures not sourced"
        if self.eth_mhs is None:
            return f"ex-ETH: MH/s not sourced, {self.eth_watts:g} W"
        if self.eth_watts is None:
            return f"ex-ETH: {self.eth_mhs:g} MH/s (power not sourced)"
        return f"ex-ETH: {self.eth_mhs:g} MH/s at {self.eth_watts:g} W"

    def is_lhr(self, pci_device_id: str | None) -> bool | None:
        """True/False for this physical card; None when the device id is needed but unknown."""
        if self.lhr == "yes":
            return True
        if self.lhr == "no":
            return False
        if pci_device_id is None:
            return None
        return pci_device_id.lower() in self.lhr_device_ids

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "vendor": self.vendor,
            "chip": self.chip,
            "architecture": self.architecture,
            "vram_gb": self.vram_gb,
            "memory_type": self.memory_type,
            "compute_capability": self.compute_capability,
            "compute_capability_inferred": self.compute_capability_inferred,
            "tensor_cores": self.tensor_cores,
            "eth_mhs": self.eth_mhs,
            "eth_watts": self.eth_watts,
            "eth_figures": self.eth_figures,
            "mining_only": self.mining_only,
            "pcie": self.pcie,
            "limits": list(self.limits),
        }


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "key": str,
    "name": str,
    "vendor": str,
    "nvml_names": list,
    "pci_device_ids": list,
    "lhr": str,
    "chip": str,
    "architecture": str,
    "vram_gb": int,
    "memory_type": str,
    "tensor_cores": bool,
    "eth_figures": str,
    "mining_only": bool,
    "pcie": str,
    "limits": list,
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "lhr_device_ids": list,
    "compute_capability": str,
    "compute_capability_inferred": bool,
    "gfx": str,
    "eth_mhs": (int, float),
    "eth_watts": (int, float),
}


def _card_from_dict(raw: dict[str, Any], where: str) -> CatalogCard:
    for key, tp in _REQUIRED.items():
        if key not in raw:
            raise CatalogError(f"{where}: missing {key!r}")
        if not isinstance(raw[key], tp):
            raise CatalogError(f"{where}: {key!r} has the wrong type")
    for key, tp in _OPTIONAL.items():
        if key in raw and not isinstance(raw[key], tp):
            raise CatalogError(f"{where}: {key!r} has the wrong type")
    unknown = set(raw) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise CatalogError(f"{where}: unknown field(s) {sorted(unknown)}")
    if raw["vendor"] not in ("nvidia", "amd"):
        raise CatalogError(f"{where}: vendor must be nvidia or amd")
    if raw["lhr"] not in ("yes", "no", "by-device-id"):
        raise CatalogError(f"{where}: lhr must be yes, no or by-device-id")
    cc = raw.get("compute_capability")
    if raw["vendor"] == "nvidia" and cc is None:
        raise CatalogError(f"{where}: an NVIDIA card needs compute_capability")
    if cc is not None:
        parts = cc.split(".")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise CatalogError(f"{where}: compute_capability must look like '8.6'")
    return CatalogCard(
        key=raw["key"],
        name=raw["name"],
        vendor=raw["vendor"],
        nvml_names=tuple(str(n) for n in raw["nvml_names"]),
        pci_device_ids=tuple(str(d).lower() for d in raw["pci_device_ids"]),
        lhr=raw["lhr"],
        lhr_device_ids=tuple(str(d).lower() for d in raw.get("lhr_device_ids", [])),
        chip=raw["chip"],
        architecture=raw["architecture"],
        vram_gb=raw["vram_gb"],
        memory_type=raw["memory_type"],
        compute_capability=cc,
        compute_capability_inferred=bool(raw.get("compute_capability_inferred", False)),
        gfx=raw.get("gfx"),
        tensor_cores=raw["tensor_cores"],
        eth_mhs=float(raw["eth_mhs"]) if "eth_mhs" in raw else None,
        eth_watts=float(raw["eth_watts"]) if "eth_watts" in raw else None,
        eth_figures=raw["eth_figures"],
        mining_only=raw["mining_only"],
        pcie=raw["pcie"],
        limits=tuple(str(x) for x in raw["limits"]),
    )


def parse_catalog(text: str, where: str = CATALOG_RESOURCE) -> tuple[CatalogCard, ...]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{where}: malformed TOML: {exc}") from None
    cards_raw = data.get("card")
    if not isinstance(cards_raw, list) or not cards_raw:
        raise CatalogError(f"{where}: expected [[card]] entries")
    cards = tuple(_card_from_dict(c, f"{where}: card {i}") for i, c in enumerate(cards_raw))
    keys = [c.key for c in cards]
    if len(set(keys)) != len(keys):
        raise CatalogError(f"{where}: duplicate card keys")
    seen: dict[str, str] = {}
    for card in cards:
        for name in card.nvml_names:
            norm = normalise_name(name)
            if norm in seen and seen[norm] != card.key:
                raise CatalogError(f"{where}: NVML name {name!r} in {seen[norm]} and {card.key}")
            seen[norm] = card.key
    return cards


@lru_cache(maxsize=1)
def load_catalog() -> tuple[CatalogCard, ...]:
    """The packaged catalog (parsed once per process)."""
    text = resources.files("pot_cli").joinpath("data", CATALOG_RESOURCE).read_text("utf-8")
    return parse_catalog(text)


def load_catalog_file(path: Path) -> tuple[CatalogCard, ...]:
    return parse_catalog(Path(path).read_text(encoding="utf-8"), where=str(path))


def normalise_name(name: str) -> str:
    """Lower case, single spaces, without the "NVIDIA " prefix R470+ drivers add."""
    words = name.strip().lower().split()
    if words and words[0] == "nvidia":
        words = words[1:]
    return " ".join(words)


def match_card(
    nvml_name: str | None,
    pci_device_id: str | None = None,
    cards: tuple[CatalogCard, ...] | None = None,
) -> CatalogCard | None:
    """The catalog entry for a GPU, by its NVML name (else by its PCI device id)."""
    cards = load_catalog() if cards is None else cards
    if nvml_name:
        norm = normalise_name(nvml_name)
        for card in cards:
            if any(normalise_name(n) == norm for n in card.nvml_names):
                return card
    if pci_device_id:
        dev = pci_device_id.lower()
        hits = [c for c in cards if c.vendor == "nvidia" and dev in c.pci_device_ids]
        if len(hits) == 1:
            return hits[0]
    return None


def amd_cards(cards: tuple[CatalogCard, ...] | None = None) -> tuple[CatalogCard, ...]:
    cards = load_catalog() if cards is None else cards
    return tuple(c for c in cards if c.vendor == "amd")
