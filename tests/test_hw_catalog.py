"""The mining-card catalog: content, NVML name matching, LHR by device id, malformed data."""

from __future__ import annotations

import pytest

from pot_cli.hw.catalog import (
    CatalogError,
    amd_cards,
    load_catalog,
    match_card,
    normalise_name,
    parse_catalog,
)

REQUIRED = [
    "GeForce GTX 1060 6GB",
    "GeForce GTX 1070",
    "GeForce GTX 1070 Ti",
    "GeForce GTX 1080",
    "GeForce GTX 1080 Ti",
    "GeForce GTX 1660 SUPER",
    "GeForce RTX 2060",
    "GeForce RTX 2070",
    "GeForce RTX 2080 Ti",
    "GeForce RTX 3060",
    "GeForce RTX 3060 Ti",
    "GeForce RTX 3070",
    "GeForce RTX 3080",
    "GeForce RTX 3090",
    "P106-100",
    "P104-100",
    "CMP 30HX",
    "CMP 40HX",
    "CMP 50HX",
    "CMP 90HX",
    "CMP 170HX",
]


def test_catalog_has_at_least_twenty_ex_eth_nvidia_cards() -> None:
    nvidia = [c for c in load_catalog() if c.vendor == "nvidia"]
    assert len(nvidia) >= 20
    for name in REQUIRED:
        card = match_card("NVIDIA " + name)
        assert card is not None, name
        assert card.vram_gb >= 4 and card.compute_capability


@pytest.mark.parametrize("card", load_catalog(), ids=lambda c: c.key)
def test_every_nvml_name_matches_its_entry_with_and_without_prefix(card: object) -> None:
    from pot_cli.hw.catalog import CatalogCard

    assert isinstance(card, CatalogCard)
    if card.vendor == "amd":
        assert card.nvml_names == () and not card.nvml_visible
        return
    assert card.nvml_names
    for name in card.nvml_names:
        assert match_card(name) is card
        bare = name.removeprefix("NVIDIA ")
        assert match_card(bare) is card
        assert match_card("NVIDIA " + bare) is card
        assert match_card("  " + name.upper() + " ") is card


def test_figures_and_flags_from_the_team_sheet() -> None:
    rtx3070 = match_card("NVIDIA GeForce RTX 3070")
    assert rtx3070 is not None
    assert rtx3070.eth_summary() == "ex-ETH: 59 MH/s at 120 W"
    cmp170 = match_card("NVIDIA CMP 170HX")
    assert cmp170 is not None and cmp170.mining_only and cmp170.compute_capability == "8.0"
    assert any("FMA" in limit for limit in cmp170.limits)
    assert any("x1" in limit for limit in cmp170.limits)
    p106 = match_card("P106-100")
    assert p106 is not None and p106.mining_only and p106.pcie == "1.0 x4"
    assert "not sourced" in p106.eth_summary()
    gtx1060 = match_card("GeForce GTX 1060 6GB")
    assert gtx1060 is not None and gtx1060.eth_summary() == "ex-ETH: 25 MH/s (power not sourced)"
    assert match_card("NVIDIA GeForce RTX 3090") is not None


def test_similar_names_do_not_collide() -> None:
    plain = match_card("NVIDIA GeForce RTX 3060")
    ti = match_card("NVIDIA GeForce RTX 3060 Ti")
    assert plain is not None and ti is not None and plain.key != ti.key
    assert plain.vram_gb == 12 and ti.vram_gb == 8
    assert match_card("NVIDIA GeForce GTX 1060 3GB") is None
    assert match_card("NVIDIA GeForce RTX 4090") is None
    assert match_card(None) is None


def test_lhr_is_told_apart_by_pci_device_id() -> None:
    card = match_card("NVIDIA GeForce RTX 3070")
    assert card is not None
    assert card.is_lhr("0x2488") is True
    assert card.is_lhr("0x2484") is False
    assert card.is_lhr(None) is None
    rtx3060 = match_card("NVIDIA GeForce RTX 3060")
    assert rtx3060 is not None and rtx3060.is_lhr(None) is True
    assert match_card("NVIDIA GeForce RTX 3090") is not None


def test_unknown_name_falls_back_to_a_unique_pci_device_id() -> None:
    card = match_card("Graphics Device", "0x1f0b")
    assert card is not None and card.name == "CMP 40HX"
    assert match_card("Graphics Device", "0xffff") is None


def test_amd_cards_are_listed_as_invisible_to_nvml() -> None:
    names = {c.name for c in amd_cards()}
    assert {"Radeon RX 570 8GB", "Radeon RX 580 8GB", "Radeon RX 5700 XT", "Radeon VII"} <= names
    for card in amd_cards():
        assert card.gfx and any("NVML" in limit for limit in card.limits)


def test_normalise_name() -> None:
    assert normalise_name("NVIDIA  GeForce RTX 3070") == "geforce rtx 3070"
    assert normalise_name("P106-100") == "p106-100"


_CARD = """
[[card]]
key = "x"
name = "X"
vendor = "nvidia"
nvml_names = ["NVIDIA X"]
pci_device_ids = []
lhr = "no"
chip = "GA104"
architecture = "Ampere"
vram_gb = 8
memory_type = "GDDR6"
compute_capability = "8.6"
tensor_cores = true
eth_figures = "none"
mining_only = false
pcie = "4.0 x16"
limits = []
"""


def test_parse_catalog_accepts_a_minimal_card_and_rejects_bad_ones() -> None:
    (card,) = parse_catalog(_CARD)
    assert card.eth_summary() == "ex-ETH: figures not sourced"
    with pytest.raises(CatalogError, match="malformed TOML"):
        parse_catalog("[[card]\n")
    with pytest.raises(CatalogError, match="missing 'vram_gb'"):
        parse_catalog(_CARD.replace("vram_gb = 8\n", ""))
    with pytest.raises(CatalogError, match="unknown field"):
        parse_catalog(_CARD + 'colour = "green"\n')
    with pytest.raises(CatalogError, match="compute_capability"):
        parse_catalog(_CARD.replace('"8.6"', '"eight"'))
    with pytest.raises(CatalogError, match="duplicate"):
        parse_catalog(_CARD + _CARD)
    with pytest.raises(CatalogError, match="NVML name"):
        parse_catalog(_CARD + _CARD.replace('key = "x"', 'key = "y"'))
    with pytest.raises(CatalogError, match="expected"):
        parse_catalog("")
