"""The shared --gpus parser (pot hw now, pot mine later)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pot_cli.errors import UsageError
from pot_cli.gpu_selection import GpuSelectionError, parse_gpu_selection, parse_gpu_spec

RIG = list(range(8))


def test_all_and_lists() -> None:
    assert parse_gpu_selection("all", RIG) == RIG
    assert parse_gpu_selection(" ALL ", [2, 0]) == [0, 2]
    assert parse_gpu_selection("0,2,5", RIG) == [0, 2, 5]
    assert parse_gpu_selection("5, 0", RIG) == [5, 0]
    assert parse_gpu_selection("0-3,6", RIG) == [0, 1, 2, 3, 6]
    assert parse_gpu_selection("all", []) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("0,,2", "bad GPU index ''"),
        ("a", "bad GPU index 'a'"),
        ("-1", "bad GPU range"),
        ("3-1", "bad GPU range"),
        ("0,0", "listed twice"),
        ("0-2,1", "listed twice"),
        ("9", "no GPU 9: this machine has GPU 0, 1, 2, 3, 4, 5, 6, 7"),
        ("1.5", "bad GPU index"),
    ],
)
def test_bad_selections_get_clear_errors(text: str, message: str) -> None:
    with pytest.raises(GpuSelectionError) as info:
        parse_gpu_selection(text, RIG)
    assert message in str(info.value)
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_syntax_alone_for_config_validation() -> None:
    assert parse_gpu_spec("all") is None
    assert parse_gpu_spec("7,0-1") == [7, 0, 1]
    with pytest.raises(GpuSelectionError, match="listed twice"):
        parse_gpu_spec("1,1")


def test_no_gpu_machine_names_the_cause() -> None:
    with pytest.raises(GpuSelectionError, match="no NVIDIA GPU visible to NVML"):
        parse_gpu_selection("0", [])


@settings(deadline=None, max_examples=60)
@given(
    available=st.sets(st.integers(0, 15), max_size=12),
    picked=st.lists(st.integers(0, 15), unique=True, min_size=1, max_size=6),
)
def test_lists_roundtrip_or_name_the_missing(available: set[int], picked: list[int]) -> None:
    text = ",".join(str(i) for i in picked)
    if set(picked) <= available:
        assert parse_gpu_selection(text, sorted(available)) == picked
    else:
        with pytest.raises(GpuSelectionError) as info:
            parse_gpu_selection(text, sorted(available))
        first_missing = next(i for i in picked if i not in available)
        assert f"no GPU {first_missing}" in str(info.value)
