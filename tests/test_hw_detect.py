"""pot hw detect: the library report and the CLI (table and --json schema)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pot_cli.cli import app
from pot_cli.gpu_selection import GpuSelectionError
from pot_cli.hw.detect import SCHEMA, DetectReport, detect
from pot_cli.hw.nvml_replay import ReplayBackend
from pot_cli.hw.system import CpuInfo, scan_pci_gpus
from pot_cli.hw.verdicts import TaskNeed, TorchBuild

DATA = Path(__file__).parent / "data" / "nvml"
CU128 = TorchBuild("2.7.1+cu128", "12.8", ("sm_75", "sm_80", "sm_86", "sm_90", "sm_120"))
TASKS = [TaskNeed("digits", 516)]
CPU = CpuInfo(model="Intel(R) Celeron(R) CPU G3930 @ 2.90GHz", logical_cores=2,
              memory_total_mb=3900, machine="x86_64")  # fmt: skip


def run_detect(recording: str, pci_root: Path, selection: str = "all") -> DetectReport:
    return detect(
        ReplayBackend.from_file(DATA / recording),
        CU128,
        TASKS,
        price_per_kwh=0.2,
        price_source="test",
        selection=selection,
        pci_root=pci_root,
        cpu=lambda: CPU,
    )


def fake_sysfs(root: Path, devices: list[tuple[str, str, str, str]]) -> Path:
    """devices: (address, class, vendor, device) as the kernel writes them."""
    for address, cls, vendor, device in devices:
        d = root / address
        d.mkdir(parents=True)
        (d / "class").write_text(cls + "\n")
        (d / "vendor").write_text(vendor + "\n")
        (d / "device").write_text(device + "\n")
    return root


def test_eight_gpu_rig_report(tmp_path: Path) -> None:
    report = run_detect("rig8.json", tmp_path)
    assert [g.reading.index for g in report.gpus] == list(range(8))
    assert report.gpus[0].card is not None
    assert report.gpus[0].card.eth_summary() == "ex-ETH: 59 MH/s at 120 W"
    assert [g.lhr for g in report.gpus[:3]] == [False, True, True]
    assert report.gpus[5].card is None and report.gpus[5].verdict.status == "fail"
    assert any("GPU 5 is lost" in n for n in report.notes)
    draws = [g.reading.power_draw_w for g in report.gpus]
    assert draws[0] == 118.0 and draws[5] is None  # first of GPU 0's power sequence; lost GPU
    expected_w = sum(d for d in draws if d is not None)
    assert report.total_power_w == pytest.approx(expected_w)
    data = report.to_dict()
    assert data["electricity"]["rig_cost_per_hour"] == pytest.approx(expected_w / 1000 * 0.2)
    assert report.gpus[0].cost_per_hour_at_limit == pytest.approx(0.130 * 0.2)
    json.dumps(data, allow_nan=False)


def test_selection_filters_gpus_and_refuses_missing_ones(tmp_path: Path) -> None:
    report = run_detect("rig8.json", tmp_path, selection="0,7")
    assert [g.reading.index for g in report.gpus] == [0, 7]
    assert report.gpus[1].verdict.recommended_dtype == "fp32"  # GTX 1070
    with pytest.raises(GpuSelectionError, match="no GPU 9"):
        run_detect("rig8.json", tmp_path, selection="9")


def test_no_driver_with_cards_on_the_bus_says_what_to_do(tmp_path: Path) -> None:
    sysfs = fake_sysfs(
        tmp_path / "sys",
        [
            ("0000:01:00.0", "0x030000", "0x10de", "0x2484"),
            ("0000:02:00.0", "0x030000", "0x1002", "0x67df"),
            ("0000:00:1f.3", "0x040300", "0x8086", "0xa170"),  # audio: ignored
        ],
    )
    report = run_detect("no_driver.json", sysfs)
    assert not report.nvml_available and report.gpus == []
    text = " ".join(report.notes)
    assert "1 NVIDIA GPU(s) on the PCI bus but NVML is unavailable" in text
    assert "1 AMD GPU(s) on the PCI bus (Radeon RX 570 8GB / Radeon RX 580 8GB)" in text
    assert "AMD cards are not visible through NVML" in text


def test_pci_scan_names_known_cards_and_survives_missing_sysfs(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path, [("0000:03:00.0", "0x030200", "0x10de", "0x20c2")])
    (gpu,) = scan_pci_gpus(sysfs)
    assert gpu.vendor == "nvidia" and gpu.name == "CMP 170HX"
    assert scan_pci_gpus(tmp_path / "absent") == []


# ---- CLI ---------------------------------------------------------------------------------------

runner = CliRunner()


def cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, ["--home", str(tmp_path), "hw", *args], env=env)


def replay_env(name: str) -> dict[str, str]:
    return {"POT_NVML_REPLAY": str(DATA / name)}


_GPU_SCHEMA: dict[str, Any] = {
    "index": int,
    "name": (str, type(None)),
    "uuid": (str, type(None)),
    "pci_bus_id": (str, type(None)),
    "pci_device_id": (str, type(None)),
    "memory_total_mb": (int, type(None)),
    "memory_used_mb": (int, type(None)),
    "compute_capability": (str, type(None)),
    "utilization_gpu_pct": (int, type(None)),
    "temperature_c": (int, type(None)),
    "memory_temperature_c": (int, type(None)),
    "fan_pct": (int, type(None)),
    "power_draw_w": (float, int, type(None)),
    "power_limit_w": (float, int, type(None)),
    "clock_graphics_mhz": (int, type(None)),
    "clock_memory_mhz": (int, type(None)),
    "pcie_gen_current": (int, type(None)),
    "pcie_gen_max": (int, type(None)),
    "pcie_width_current": (int, type(None)),
    "pcie_width_max": (int, type(None)),
    "performance_state": (str, type(None)),
    "unavailable": dict,
    "error": (str, type(None)),
    "catalog": (dict, type(None)),
    "verdict": dict,
    "cost_per_hour_now": (float, type(None)),
    "cost_per_hour_at_limit": (float, type(None)),
}


def check_schema(data: dict[str, Any]) -> None:
    assert data["schema"] == SCHEMA
    assert set(data) == {
        "schema",
        "cpu",
        "torch",
        "nvml",
        "electricity",
        "gpus",
        "pci_gpus",
        "notes",
    }
    assert isinstance(data["cpu"]["model"], str) and isinstance(data["cpu"]["logical_cores"], int)
    assert isinstance(data["torch"]["arch_list"], list)
    assert isinstance(data["nvml"]["available"], bool)
    assert isinstance(data["electricity"]["price_per_kwh"], float | int)
    for gpu in data["gpus"]:
        for key, tp in _GPU_SCHEMA.items():
            assert key in gpu, key
            assert isinstance(gpu[key], tp), (key, gpu[key])
        verdict = gpu["verdict"]
        assert verdict["status"] in {"ok", "warn", "fail"}
        assert verdict["recommended_dtype"] in (
            {None} if gpu["error"] else {"fp32", "fp16", "bf16"}
        )
        for c in verdict["checks"]:
            assert set(c) == {"name", "status", "message"}
            assert c["status"] in {"ok", "warn", "fail", "info"}
        if gpu["catalog"] is not None:
            assert {"name", "eth_mhs", "eth_watts", "eth_summary", "lhr", "limits"} <= set(
                gpu["catalog"]
            )


def test_cli_detect_json_schema_on_the_eight_gpu_rig(tmp_path: Path) -> None:
    result = cli(tmp_path, "detect", "--json", env=replay_env("rig8.json"))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    check_schema(data)
    assert len(data["gpus"]) == 8
    assert data["gpus"][0]["catalog"]["eth_summary"] == "ex-ETH: 59 MH/s at 120 W"
    assert data["gpus"][5]["error"].startswith("GPU 5 is lost")
    assert data["gpus"][1]["verdict"]["tasks_fit"] == {
        "digits": True,
        "pycorpus": True,
        "tiny": True,
    }
    # the installed torch is a CPU build: every card gets a clear torch-build failure
    checks = {c["name"]: c for c in data["gpus"][7]["verdict"]["checks"]}
    assert checks["torch build"]["status"] == "fail" and "cu126" in checks["torch build"]["message"]


@pytest.mark.parametrize("name", ["rtx3070.json", "rtx3090.json", "gtx1060_6gb.json",
                                  "p106_100.json", "cmp40hx.json", "cmp170hx.json"])  # fmt: skip
def test_cli_detect_json_schema_on_each_card(tmp_path: Path, name: str) -> None:
    result = cli(tmp_path, "detect", "--json", env=replay_env(name))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    check_schema(data)
    (gpu,) = data["gpus"]
    assert gpu["catalog"] is not None, "every recorded card is in the catalog"


def test_cli_detect_table(tmp_path: Path) -> None:
    result = cli(tmp_path, "detect", "--gpus", "0,1,5,7", env=replay_env("rig8.json"))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "GPU 0 · NVIDIA GeForce RTX 3070 · ex-ETH: 59 MH/s at 120 W" in out
    assert "GPU 5 is lost" in out
    words = " ".join(out.split())  # titles may wrap
    assert words.count("(non-LHR figure; this card is LHR)") == 1  # GPU 1 (0x2488), not GPU 0
    assert "GeForce GTX 1070" in out and "GPU 3 ·" not in out
    assert "NVML: driver 535.183.01" in out


def test_cli_detect_without_a_driver_reports_the_cpu_in_one_line(tmp_path: Path) -> None:
    result = cli(tmp_path, "detect", env=replay_env("no_driver.json"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("CPU: ")
    nvml_lines = [line for line in lines if line.startswith("NVML:")]
    assert nvml_lines == [
        "NVML: NVML not found (no NVIDIA driver: libnvidia-ml.so.1 missing): using the CPU"
    ]
    assert "Traceback" not in result.output


def test_cli_detect_with_the_real_nvml_here(tmp_path: Path) -> None:
    """No replay: the real pynvml on this GPU-less machine must give the CPU path, no crash."""
    result = cli(tmp_path, "detect", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    check_schema(data)
    if not data["nvml"]["available"]:
        assert "using the CPU" in data["nvml"]["message"]


def test_cli_detect_bad_selection_is_a_usage_error(tmp_path: Path) -> None:
    result = cli(tmp_path, "detect", "--gpus", "0,9", env=replay_env("rig8.json"))
    assert result.exit_code == 2
    assert "no GPU 9" in result.output and "Traceback" not in result.output


def test_cli_detect_price_from_flag_config_and_default(tmp_path: Path) -> None:
    env = replay_env("rtx3070.json")
    data = json.loads(cli(tmp_path, "detect", "--json", env=env).stdout)
    assert data["electricity"] == {
        "price_per_kwh": 0.15,
        "source": "default",
        "rig_power_w": 117.35,
        "rig_cost_per_hour": pytest.approx(117.35 / 1000 * 0.15),
    }
    (tmp_path / "config.toml").write_text(
        '[node]\nrole = "miner"\nchain_id = "pot-devnet-1"\n\n'
        "[miner]\nelectricity_price_per_kwh = 0.32\n",
        encoding="utf-8",
    )
    data = json.loads(cli(tmp_path, "detect", "--json", env=env).stdout)
    assert data["electricity"]["price_per_kwh"] == 0.32
    assert data["electricity"]["source"].endswith("config.toml")
    assert data["gpus"][0]["cost_per_hour_now"] == pytest.approx(0.11735 * 0.32)
    data = json.loads(cli(tmp_path, "detect", "--json", "--price-per-kwh", "0.5", env=env).stdout)
    assert data["electricity"]["price_per_kwh"] == 0.5
    over = {**env, "POT_MINER_ELECTRICITY_PRICE_PER_KWH": "0.4"}
    data = json.loads(cli(tmp_path, "detect", "--json", env=over).stdout)
    assert data["electricity"]["price_per_kwh"] == 0.4
    assert data["electricity"]["source"] == "POT_MINER_ELECTRICITY_PRICE_PER_KWH"


def test_cli_detect_invalid_config_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        "[miner]\nelectricity_price_per_kwh = -1\n", encoding="utf-8"
    )
    result = cli(tmp_path, "detect", env=replay_env("rtx3070.json"))
    assert result.exit_code == 2
    assert "config.toml" in result.output and "Traceback" not in result.output
