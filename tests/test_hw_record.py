"""pot hw record: capture NVML readings in the replay format; pot hw catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pot_cli.cli import app
from pot_cli.hw.nvml_replay import ReplayBackend
from pot_cli.hw.readings import read_rig
from pot_cli.hw.recording import RecordError, record_rig

DATA = Path(__file__).parent / "data" / "nvml"
runner = CliRunner()


def _first(value: Any) -> Any:
    """What one call returns: the first element of a recorded sequence."""
    if isinstance(value, dict) and "sequence" in value:
        return value["sequence"][0]
    return value


@pytest.mark.parametrize("name", ["rig8.json", "gtx1060_6gb.json", "cmp170hx.json"])
def test_recording_a_replayed_rig_reproduces_it(name: str) -> None:
    original = json.loads((DATA / name).read_text(encoding="utf-8"))
    recorded = record_rig(ReplayBackend(original), "again")
    assert recorded["description"] == "again"
    assert recorded["driver_version"] == original["driver_version"]
    assert len(recorded["devices"]) == len(original["devices"])
    for before, after in zip(original["devices"], recorded["devices"], strict=True):
        if before.get("lost"):
            assert after == {"lost": True}
            continue
        for key, value in before.items():
            if key == "comment":
                continue
            if key in ("pci_device_id", "pci_subsystem_id"):
                assert int(after[key], 16) == int(value, 16)
            else:
                assert after[key] == _first(value), key
    # and the recording replays to the same readings
    again = read_rig(ReplayBackend(recorded))
    first = read_rig(ReplayBackend(original))
    assert [g.to_dict() for g in again.gpus] == [g.to_dict() for g in first.gpus]


def test_record_without_nvml_is_a_clear_error() -> None:
    backend = ReplayBackend.from_file(DATA / "no_driver.json")
    with pytest.raises(RecordError, match="cannot record: NVML not found"):
        record_rig(backend)


def test_cli_record_then_detect_the_recording(tmp_path: Path) -> None:
    env = {"POT_NVML_REPLAY": str(DATA / "rig8.json")}
    result = runner.invoke(app, ["--home", str(tmp_path), "hw", "record"], env=env)
    assert result.exit_code == 0, result.output
    target = tmp_path / "hw" / "nvml-recording.json"
    assert "recorded 8 GPU(s)" in result.stdout and target.exists()
    env = {"POT_NVML_REPLAY": str(target)}
    result = runner.invoke(app, ["--home", str(tmp_path), "hw", "detect", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["gpus"]) == 8


def test_cli_record_with_no_driver_exits_1(tmp_path: Path) -> None:
    env = {"POT_NVML_REPLAY": str(DATA / "no_driver.json")}
    result = runner.invoke(app, ["--home", str(tmp_path), "hw", "record"], env=env)
    assert result.exit_code == 1
    assert "cannot record" in result.output and "Traceback" not in result.output


def test_cli_catalog_lists_every_card(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--home", str(tmp_path), "hw", "catalog", "--json"])
    assert result.exit_code == 0, result.output
    cards = json.loads(result.stdout)
    assert len(cards) == 25
    by_name = {c["name"]: c for c in cards}
    assert by_name["CMP 170HX"]["nvml_names"] == ["NVIDIA CMP 170HX", "CMP 170HX"]
    assert by_name["Radeon VII"]["nvml_names"] == []
    table = runner.invoke(app, ["--home", str(tmp_path), "hw", "catalog"])
    assert table.exit_code == 0 and "Mining-card catalog" in table.stdout
    assert "not visible through NVML" in " ".join(table.stdout.split())
