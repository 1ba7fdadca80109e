"""The dashboard's plain parts: the recording format, the state folded from a recorded devnet
session, the backoff, and the typed miner client against a real local server."""

from __future__ import annotations

from pathlib import Path

import pytest

from pot_cli.errors import UsageError
from pot_cli.node.client import Unreachable
from pot_cli.node.miner_client import MinerClient
from pot_cli.tui.sources.live import Backoff
from pot_cli.tui.sources.observation import (
    Observation,
    Recorder,
    RecordingHeader,
    load_recording,
)
from pot_cli.tui.state import DashboardState
from tests.tui_server import SESSION, recorded_servers


def replayed() -> DashboardState:
    _, observations = load_recording(SESSION)
    state = DashboardState(live=False)
    for o in observations:
        state.apply(o)
    return state


def test_recording_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    rec = Recorder(path, RecordingHeader(["http://m"], ["http://v"], 1))
    rec.write(Observation(5, "miner", "http://m", "down", {"error": "x", "retry_in_s": 1.0}))
    rec.write(Observation(3, "validator", "http://v", "event", {"id": 1}))
    rec.close()
    header, obs = load_recording(path)
    assert header.miners == ["http://m"] and header.validators == ["http://v"]
    assert [o.t_ms for o in obs] == [3, 5]  # sorted by time


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("{}\n", "not a pot dashboard recording"),
        ('{"schema": "pot.dashboard.recording/1"}\n{"t": 1}\n', "missing or bad field"),
        ('{"schema": "pot.dashboard.recording/1"}\n'
         '{"t": 1, "role": "m", "url": "", "kind": "nope"}\n', "unknown kind"),
    ],
)  # fmt: skip
def test_bad_recordings_are_refused(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(UsageError, match=why):
        load_recording(path)


def test_state_from_the_recorded_devnet() -> None:
    s = replayed()
    assert s.bad == 0
    assert [m.miner.name for m in s.summaries.values()] == ["miner-0", "miner-1", "miner-2"]
    assert s.height() == 20
    rows = s.validator_rows()
    assert [r["name"] for r in rows] == ["val-0", "val-1", "val-2", "val-3"]
    assert all(r["up"] for r in rows)
    assert s.view_changes  # the primary was killed and came back
    assert any(r.category == "connection" and "reconnected" in r.text for r in s.log)
    assert any(r.category == "watchdog" or "paused" in r.text for r in s.log) or any(
        d.state == "paused" for m in s.summaries.values() for d in m.devices
    )
    slashes = [r for r in s.log if r.category == "slash"]
    assert slashes and "recompute-mismatch" in slashes[0].text
    spot = s.spot_check()
    assert spot is not None and spot["rate"] == 0.1 and spot["sample"] is not None
    hs, ms, bh, _bs = s.metric_series()
    assert hs and bh and ms[-1] > ms[0]  # the model learned
    url = next(iter(s.summaries))
    e = s.earnings(url)
    assert e is not None and e["per_round"] > 0 and e["cost_day"] > 0
    ejected = s.earnings(list(s.summaries)[2])
    assert ejected is not None and ejected["ejected"] and ejected["per_day"] is None


def test_a_replay_clock_is_the_recording_s() -> None:
    s = replayed()
    assert s.now_ms() == s.last_t_ms
    assert s.deadline_in_s() is not None


def test_backoff_grows_and_resets() -> None:
    b = Backoff()
    assert [b.next() for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    b.reset()
    assert b.next() == 1.0


def test_miner_client_reads_a_summary() -> None:
    miner, _, stop = recorded_servers()
    try:
        s = MinerClient(miner.url).summary()
        assert s.miner.name == "miner-0" and len(s.devices) == 7  # 8 cards, one lost
        assert any(d.state == "paused" for d in s.devices)
    finally:
        stop()
    with pytest.raises(Unreachable):
        MinerClient(miner.url, timeout=1).summary()
