"""Compatibility verdicts: torch arch list, bf16, fp16, VRAM per task, PCIe risers."""

from __future__ import annotations

from pathlib import Path

import pytest

from pot_cli.hw.catalog import match_card
from pot_cli.hw.nvml_replay import ReplayBackend
from pot_cli.hw.readings import GpuReading, read_rig
from pot_cli.hw.verdicts import (
    FAIL,
    OK,
    WARN,
    TaskNeed,
    TorchBuild,
    Verdict,
    build_runs,
    installed_torch_build,
    judge,
    suggested_build,
)

DATA = Path(__file__).parent / "data" / "nvml"
CPU_BUILD = TorchBuild(version="2.13.0+cpu", cuda=None, arch_list=())
CU126 = TorchBuild(
    version="2.7.1+cu126",
    cuda="12.6",
    arch_list=("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"),
)
CU128 = TorchBuild(
    version="2.7.1+cu128",
    cuda="12.8",
    arch_list=("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"),
)
TASKS = [TaskNeed("digits", 516), TaskNeed("big", 7000)]


def reading(name: str, index: int = 0) -> GpuReading:
    return read_rig(ReplayBackend.from_file(DATA / name)).gpus[index]


def verdict_for(name: str, build: TorchBuild, index: int = 0) -> tuple[GpuReading, Verdict]:
    r = reading(name, index)
    return r, judge(r, match_card(r.name, r.pci_device_id), build, TASKS)


def check(verdict: Verdict, name: str) -> tuple[str, str]:
    for c in verdict.checks:
        if c.name == name:
            return c.status, c.message
    raise AssertionError(f"no check {name}")


def test_installed_build_is_cpu_only_here() -> None:
    build = installed_torch_build()
    assert build.cpu_only and build.arch_list == ()


@pytest.mark.parametrize(
    ("cc", "arch", "expected"),
    [
        ((6, 1), CU126.arch_list, "native"),  # sm_60 cubin runs on 6.1
        ((6, 1), CU128.arch_list, "no"),
        ((8, 6), CU128.arch_list, "native"),
        ((8, 9), ("sm_80", "sm_86"), "native"),
        ((12, 0), ("sm_90", "compute_90"), "ptx"),
        ((7, 5), ("sm_80", "sm_86"), "no"),
        ((8, 6), (), "no"),
        ((9, 0), ("sm_90a",), "native"),
    ],
)
def test_build_runs(cc: tuple[int, int], arch: tuple[str, ...], expected: str) -> None:
    assert build_runs(cc, arch) == expected


def test_pascal_on_a_cpu_build_names_the_cuda_build_it_needs() -> None:
    _, v = verdict_for("gtx1060_6gb.json", CPU_BUILD)
    status, message = check(v, "torch build")
    assert status == FAIL
    assert "CPU-only" in message and "sm_61" in message and "cu126" in message
    assert "cu128" in message  # and says which builds dropped it
    assert v.runs_with_this_torch is False


def test_pascal_on_cu128_fails_and_on_cu126_runs() -> None:
    _, v128 = verdict_for("p106_100.json", CU128)
    assert check(v128, "torch build")[0] == FAIL
    assert "cu126" in check(v128, "torch build")[1]
    _, v126 = verdict_for("p106_100.json", CU126)
    assert check(v126, "torch build")[0] == OK
    assert v126.runs_with_this_torch is True


def test_bf16_native_only_from_cc_8_0() -> None:
    _, ampere = verdict_for("rtx3070.json", CU128)
    assert ampere.bf16_native is True and ampere.recommended_dtype == "bf16"
    _, ga100 = verdict_for("cmp170hx.json", CU128)
    assert ga100.bf16_native is True
    _, turing = verdict_for("cmp40hx.json", CU128)
    assert turing.bf16_native is False
    assert "emulated" in check(turing, "bf16")[1]
    assert turing.recommended_dtype == "fp16"


def test_fp16_needs_tensor_cores() -> None:
    _, pascal = verdict_for("gtx1060_6gb.json", CU126)
    assert pascal.fp16_worthwhile is False and pascal.recommended_dtype == "fp32"
    assert "1/64" in check(pascal, "fp16")[1]
    gtx16 = GpuReading(index=0, name="NVIDIA GeForce GTX 1660 SUPER", compute_capability="7.5")
    v = judge(gtx16, match_card(gtx16.name), CU128, TASKS)
    assert v.fp16_worthwhile is False and v.recommended_dtype == "fp32"
    unknown_gtx16 = GpuReading(index=0, name="NVIDIA GeForce GTX 1650", compute_capability="7.5")
    assert judge(unknown_gtx16, None, CU128, TASKS).fp16_worthwhile is False
    unknown_rtx = GpuReading(index=0, name="NVIDIA GeForce RTX 2080", compute_capability="7.5")
    assert judge(unknown_rtx, None, CU128, TASKS).fp16_worthwhile is True


def test_vram_against_each_task() -> None:
    _, v8 = verdict_for("rtx3070.json", CU128)
    assert v8.tasks_fit == {"digits": True, "big": True}
    _, v6 = verdict_for("gtx1060_6gb.json", CU126)
    assert v6.tasks_fit == {"digits": True, "big": False}
    status, message = check(v6, "vram big")
    assert status == FAIL and "needs 7000 MB of 5632 MB usable" in message
    p104 = GpuReading(index=0, name="P104-100", compute_capability="6.1", memory_total_mb=4096)
    assert judge(p104, match_card("P104-100"), CU126, [TaskNeed("t", 3700)]).tasks_fit == {
        "t": False
    }


def test_pcie_riser_warning_states_its_effect() -> None:
    _, riser = verdict_for("gtx1060_6gb.json", CU126)
    status, message = check(riser, "pcie")
    assert status == WARN
    assert "gen 1 x1" in message and "0.25 GB/s" in message and "keep the data set" in message
    assert riser.pcie_host_gb_s == pytest.approx(0.25)
    _, slot = verdict_for("rtx3070.json", CU128)
    assert check(slot, "pcie")[0] == OK
    assert slot.pcie_host_gb_s == pytest.approx(16 * 1.969)
    _, x4 = verdict_for("cmp40hx.json", CU128)
    assert check(x4, "pcie")[0] == WARN and "x4 link" in check(x4, "pcie")[1]


def test_riser_limited_below_what_the_card_can_do_and_idle_link() -> None:
    _, v = verdict_for("rig8.json", CU128, index=1)
    message = check(v, "pcie")[1]
    assert "the card can do gen 4" in message and "limits it to gen 2" in message
    idle = GpuReading(
        index=0,
        name="NVIDIA GeForce RTX 3070",
        compute_capability="8.6",
        pcie_gen_current=1,
        pcie_gen_max=4,
        pcie_width_current=16,
        pcie_width_max=16,
    )
    assert "drop the link speed when idle" in check(judge(idle, None, CU128, []), "pcie")[1]


def test_lost_gpu_verdict_is_a_failure_not_a_crash() -> None:
    r, v = verdict_for("rig8.json", CU128, index=5)
    assert r.error is not None
    assert v.status == FAIL
    assert [c.name for c in v.checks] == ["nvml"]  # nothing else can be judged
    assert v.recommended_dtype is None


def test_suggested_build_by_generation() -> None:
    assert "no current PyTorch build" in suggested_build((3, 5))
    assert "cu126" in suggested_build((7, 0))
    assert "any current" in suggested_build((8, 6))
