"""End to end: the live dashboard against a short real devnet (validators and miners as OS
processes): blocks commit, the miners earn, the model's metric and its centralized baseline
arrive from the dashboard's own evaluator, and the session it records replays."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from textual.widgets import Static

from pot_cli.node.devnet import DevnetSpec
from pot_cli.tui.app import DashboardApp, DashboardConfig
from pot_cli.tui.sources.observation import load_recording
from tests.net_harness import running_network
from tests.test_tui_pilot import until


def test_dashboard_follows_a_real_devnet(tmp_path: Path) -> None:
    spec = DevnetSpec(validators=4, miners=2, rounds=4, round_seconds=2.0)
    record = tmp_path / "session.jsonl"
    with running_network(tmp_path / "net", spec, miners=True) as net:
        layout = net.layout
        config = DashboardConfig(
            miners=[m.url for m in layout.miners],
            validators=[v.url for v in layout.validators],
            genesis=layout.genesis.to_dict(),
            record=record,
            evaluate=True,
            refresh_s=0.2,
        )
        app = DashboardApp(config)

        async def run() -> None:
            async with app.run_test(size=(120, 36)) as pilot:
                s = app.state

                def earning() -> bool:
                    return any(
                        v.kind == "accepted" and v.reward > 0
                        for b in s.blocks.values()
                        for v in b.verdicts
                    )

                await until(pilot, "both miners' summaries", lambda: len(s.summaries) == 2, 60)
                await until(pilot, "a block with accepted, rewarded work", earning, 60)
                await until(
                    pilot,
                    "two evaluated rounds with the baseline",
                    lambda: (
                        sum(
                            1
                            for p in s.metrics.values()
                            if p.metric is not None and p.baseline is not None
                        )
                        >= 2
                    ),
                    60,
                )
                assert all(src.up for src in s.sources.values())
                rows = s.validator_rows()
                assert len(rows) == 4 and all(r["up"] for r in rows)
                assert {a.address for a in s.accounts.values()} == {
                    m.address for m in layout.miners
                }
                await pilot.press("2")
                await pilot.pause(0.5)
                title = str(app.query_one("#round-line", Static).render())
                assert "round" in title and "height" in title
                await pilot.press("4")
                await pilot.pause(0.5)
                assert "balance" in str(app.query_one("#money", Static).render())
                await pilot.press("q")

        started = time.monotonic()
        asyncio.run(run())
        print(f"\ndashboard e2e: {time.monotonic() - started:.1f} s against the devnet")
    header, observations = load_recording(record)
    assert header.validators == [v.url for v in layout.validators]
    kinds = {o.kind for o in observations}
    assert {"summary", "status", "block", "event", "metric", "genesis"} <= kinds
    replay = DashboardApp(DashboardConfig(replay=record, speed=0))

    async def play() -> None:
        async with replay.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            assert replay.state.blocks and replay.state.metrics

    asyncio.run(play())
