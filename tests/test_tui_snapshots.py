"""Snapshot tests (pytest-textual-snapshot) of every dashboard tab at 80x24 and 160x48, from the
recorded devnet session played all at once (deterministic: the clock is the recording's).

After an intended change of the layout: ``.venv/bin/python -m pytest tests/test_tui_snapshots.py
--snapshot-update`` and look at the SVGs under tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from pot_cli.tui.app import TABS, DashboardApp, DashboardConfig

SESSION = Path(__file__).parent / "data" / "dashboard" / "session.jsonl"


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")  # the events tab prints local times
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def show(tab: str) -> Callable[[Pilot[None]], object]:
    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, DashboardApp)
        await pilot.pause()
        app.action_show_tab(tab)
        await pilot.pause()
        app.tick(force=True)
        await pilot.pause()
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
@pytest.mark.parametrize("tab", TABS)
def test_tab_snapshot(snap_compare: Callable[..., bool], tab: str, size: tuple[int, int]) -> None:
    app = DashboardApp(DashboardConfig(replay=SESSION, speed=0))
    assert snap_compare(app, terminal_size=size, run_before=show(tab))
