"""The NVML module: query policy, replayed recordings of real cards, the real pynvml backend."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from pot_cli.hw import nvml
from pot_cli.hw.nvml import (
    NVML_ERROR_FUNCTION_NOT_FOUND,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NO_PERMISSION,
    NVML_ERROR_NOT_SUPPORTED,
    Field,
    GpuLostError,
    NvmlError,
    NvmlNotFound,
    PynvmlBackend,
    Unavailable,
)
from pot_cli.hw.nvml_replay import ReplayBackend, ReplayFormatError
from pot_cli.hw.readings import read_gpu, read_rig

DATA = Path(__file__).parent / "data" / "nvml"
RECORDINGS = sorted(p.name for p in DATA.glob("*.json"))


def replay(name: str) -> ReplayBackend:
    return ReplayBackend.from_file(DATA / name)


def raising(code: int) -> Any:
    def fn() -> Any:
        raise NvmlError(code)

    return fn


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (NVML_ERROR_NOT_SUPPORTED, "not supported"),
        (NVML_ERROR_NO_PERMISSION, "no permission"),
        (NVML_ERROR_FUNCTION_NOT_FOUND, "not in this driver"),
    ],
)
def test_query_turns_unsupported_calls_into_unavailable(code: int, reason: str) -> None:
    value = nvml.query(raising(code), index=0)
    assert isinstance(value, Unavailable)
    assert reason in value.reason


def test_query_turns_a_lost_gpu_into_a_per_device_error() -> None:
    with pytest.raises(GpuLostError, match="GPU 3 is lost"):
        nvml.query(raising(NVML_ERROR_GPU_IS_LOST), index=3)
    assert nvml.query(lambda: 42, index=3) == 42


def test_start_turns_a_missing_library_into_one_clear_line() -> None:
    backend = replay("no_driver.json")
    with pytest.raises(NvmlNotFound) as info:
        nvml.start(backend)
    message = str(info.value)
    assert "\n" not in message
    assert "NVML not found" in message and "using the CPU" in message


def test_the_real_pynvml_backend_on_this_machine_reports_no_driver_cleanly() -> None:
    """No GPU here: nvmlInit fails with LibraryNotFound and read_rig takes the CPU path."""
    backend = PynvmlBackend()
    try:
        backend.init()
    except NvmlError as exc:
        assert exc.code == NVML_ERROR_LIBRARY_NOT_FOUND
        rig = read_rig(PynvmlBackend())
        assert rig.nvml_available is False
        assert rig.message is not None and "using the CPU" in rig.message
    else:  # a machine with a driver: the real reading must work end to end
        backend.shutdown()
        rig = read_rig(PynvmlBackend())
        assert rig.nvml_available is True


def test_pynvml_errors_are_translated_to_nvml_error_codes() -> None:
    backend = PynvmlBackend()
    pynvml = backend._lib()

    def lost() -> None:
        raise pynvml.NVMLError_GpuIsLost()

    with pytest.raises(NvmlError) as info:
        backend._call(lost)
    assert info.value.code == NVML_ERROR_GPU_IS_LOST
    assert isinstance(pynvml.NVMLError(NVML_ERROR_NOT_SUPPORTED), pynvml.NVMLError_NotSupported)


def test_every_pynvml_name_the_backend_uses_exists_in_the_installed_package() -> None:
    pynvml = PynvmlBackend()._lib()
    source = Path(nvml.__file__).read_text(encoding="utf-8")
    names = set(re.findall(r"\bnv\.(\w+)", source))
    assert {"nvmlInit", "nvmlDeviceGetFieldValues", "NVML_FI_DEV_MEMORY_TEMP"} <= names
    missing = sorted(n for n in names if not hasattr(pynvml, n))
    assert missing == []
    assert pynvml.NVML_FI_DEV_MEMORY_TEMP == 82
    assert pynvml.NVML_TEMPERATURE_GPU == 0


class _FakeFieldValue:
    def __init__(self, ret: int, value: int) -> None:
        self.nvmlReturn = ret
        self.valueType = 1  # NVML_VALUE_TYPE_UNSIGNED_INT

        class V:
            uiVal = value

        self.value = V()


def test_memory_temperature_reads_the_field_value_and_its_own_return_code() -> None:
    backend = PynvmlBackend()
    pynvml = backend._lib()
    backend._handles[0] = object()
    original = pynvml.nvmlDeviceGetFieldValues
    try:
        pynvml.nvmlDeviceGetFieldValues = lambda h, ids: [_FakeFieldValue(0, 94)]
        assert backend.read(0, Field.TEMPERATURE_MEMORY) == 94
        pynvml.nvmlDeviceGetFieldValues = lambda h, ids: [
            _FakeFieldValue(NVML_ERROR_NOT_SUPPORTED, 0)
        ]
        with pytest.raises(NvmlError) as info:
            backend.read(0, Field.TEMPERATURE_MEMORY)
        assert info.value.code == NVML_ERROR_NOT_SUPPORTED
    finally:
        pynvml.nvmlDeviceGetFieldValues = original


@pytest.mark.parametrize("name", RECORDINGS)
def test_every_recording_replays(name: str) -> None:
    rig = read_rig(replay(name))
    if name == "no_driver.json":
        assert not rig.nvml_available
        return
    assert rig.nvml_available and rig.driver_version
    assert rig.gpus
    for gpu in rig.gpus:
        if gpu.error:
            continue
        assert gpu.name and gpu.uuid and gpu.uuid.startswith("GPU-")
        assert gpu.pci_bus_id and re.fullmatch(r"[0-9A-F]{8}:[0-9A-F]{2}:00\.0", gpu.pci_bus_id)
        assert gpu.pci_vendor_id == "0x10de"
        assert gpu.memory_total_mb and gpu.memory_total_mb >= 6144
        assert gpu.compute_capability in {"6.1", "7.5", "8.0", "8.6"}
        assert gpu.power_limit_w and gpu.power_draw_w and gpu.power_draw_w <= gpu.power_limit_w
        assert gpu.performance_state in {"P0", "P2"}


def test_rtx_3070_reading() -> None:
    rig = read_rig(replay("rtx3070.json"))
    (gpu,) = rig.gpus
    assert gpu.name == "NVIDIA GeForce RTX 3070"
    assert gpu.pci_device_id == "0x2484"
    assert gpu.memory_total_mb == 8192
    assert gpu.compute_capability == "8.6"
    assert gpu.power_draw_w == pytest.approx(117.35)
    assert gpu.power_limit_w == 130.0
    assert (gpu.pcie_gen_current, gpu.pcie_width_current) == (4, 16)
    assert gpu.memory_temperature_c is None
    assert "not supported" in gpu.unavailable["memory_temperature_c"]
    assert rig.cuda_driver_version == "12.2"


def test_memory_junction_reading_of_zero_counts_as_unavailable() -> None:
    (gpu,) = read_rig(replay("rtx3090.json")).gpus
    assert gpu.memory_temperature_c is None
    assert "reads 0" in gpu.unavailable["memory_temperature_c"]
    (hbm,) = read_rig(replay("cmp170hx.json")).gpus
    assert hbm.memory_temperature_c == 68


def test_passive_card_has_no_fan_reading_but_everything_else() -> None:
    (gpu,) = read_rig(replay("cmp170hx.json")).gpus
    assert gpu.fan_pct is None
    assert "not supported" in gpu.unavailable["fan_pct"]
    assert gpu.temperature_c == 55 and gpu.error is None


def test_old_driver_function_not_found_and_unprefixed_name() -> None:
    rig = read_rig(replay("gtx1060_6gb.json"))
    (gpu,) = rig.gpus
    assert gpu.name == "GeForce GTX 1060 6GB"
    assert gpu.pcie_gen_gpu_max is None
    assert "not in this driver" in gpu.unavailable["pcie_gen_gpu_max"]
    assert rig.cuda_driver_version == "11.2"


def test_one_lost_gpu_in_an_eight_gpu_rig_does_not_stop_the_others() -> None:
    rig = read_rig(replay("rig8.json"))
    assert len(rig.gpus) == 8
    lost = [g for g in rig.gpus if g.error]
    assert [g.index for g in lost] == [5]
    assert "GPU 5 is lost" in (lost[0].error or "")
    assert lost[0].name is None
    fine = [g for g in rig.gpus if not g.error]
    assert len(fine) == 7 and all(g.name and g.power_draw_w for g in fine)
    assert rig.gpus[4].unavailable["memory_temperature_c"] == "no permission"
    assert rig.gpus[6].memory_total_mb == 12288


def test_gpu_lost_midway_keeps_what_was_read() -> None:
    backend = ReplayBackend(
        {
            "driver_version": "535.183.01",
            "devices": [
                {
                    "name": "NVIDIA GeForce RTX 3070",
                    "uuid": "GPU-1",
                    "memory_total": {"error": "GPU_IS_LOST"},
                }
            ],
        }
    )
    backend.init()
    gpu = read_gpu(backend, 0)
    assert gpu.name == "NVIDIA GeForce RTX 3070" and gpu.uuid == "GPU-1"
    assert gpu.memory_total_mb is None and gpu.error and "lost" in gpu.error


def test_power_sequence_cycles() -> None:
    backend = replay("rig8.json")
    backend.init()
    seen = [backend.read(0, Field.POWER_USAGE) for _ in range(6)]
    assert seen == [118000, 121500, 119800, 120400, 117900, 118000]


def test_replay_refuses_malformed_recordings(tmp_path: Path) -> None:
    with pytest.raises(ReplayFormatError, match="unknown field"):
        ReplayBackend({"devices": [{"nmae": "typo"}]})
    with pytest.raises(ReplayFormatError, match="unknown init_error"):
        ReplayBackend({"init_error": "NOPE"})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ReplayFormatError, match="cannot read"):
        ReplayBackend.from_file(bad)
    backend = ReplayBackend({"devices": []})
    with pytest.raises(NvmlError):
        backend.device_count()  # not initialised: like NVML, calls before init fail
