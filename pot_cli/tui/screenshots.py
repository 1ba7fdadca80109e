"""SVG screenshots of every tab from a recording (Textual's own export): the README's images,
``pot dashboard --replay FILE --screenshots DIR``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pot_cli.tui.app import TABS, DashboardApp, DashboardConfig


async def _shoot(replay: Path, out: Path, size: tuple[int, int]) -> list[Path]:
    app = DashboardApp(DashboardConfig(replay=Path(replay), speed=0))
    paths: list[Path] = []
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        for tab in TABS:
            app.action_show_tab(tab)
            await pilot.pause()
            app.tick(force=True)
            await pilot.pause()
            await pilot.pause()
            name = f"{tab}.svg"
            app.save_screenshot(filename=name, path=str(out))
            paths.append(out / name)
    return paths


def save_screenshots(replay: Path, out: Path, size: tuple[int, int] = (120, 36)) -> list[Path]:
    """One SVG per tab (``rig.svg``, ``training.svg``, …) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_shoot(replay, out, size))


__all__ = ["save_screenshots"]
