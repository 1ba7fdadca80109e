"""The ``pot dashboard`` app: a header with every source's connection state, five tabs (Rig,
Training, Consensus, Earnings, Events) and a footer with the keys.

Data never arrives on the UI thread by a blocking call: pollers (and the model evaluator) run in
Textual thread workers and put observations into a :class:`~.sources.observation.Sink`; a timer
on the UI thread drains the sink into the :class:`~.state.DashboardState` and re-renders the
header, the visible tab and the new event rows, :data:`REFRESH_S` apart. A flood of events is
one drain per refresh; :attr:`DashboardApp.tick_ms` keeps how long each refresh took.

Entry points: :func:`run_dashboard` (live, what ``pot dashboard`` and ``pot devnet --dashboard``
call) and :func:`run_replay` (``pot dashboard --replay FILE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Input, TabbedContent, TabPane

from pot_cli.tui.screens.help import HelpScreen
from pot_cli.tui.sources.evaluate import ModelEvaluator
from pot_cli.tui.sources.live import live_pollers, now_ms
from pot_cli.tui.sources.observation import (
    DASHBOARD,
    MINER,
    VALIDATOR,
    Observation,
    Recorder,
    RecordingHeader,
    Sink,
    load_recording,
)
from pot_cli.tui.sources.recording import MinerAddresses, ReplayPlayer
from pot_cli.tui.state import DashboardState
from pot_cli.tui.widgets.consensus import ConsensusPane
from pot_cli.tui.widgets.earnings import EarningsPane
from pot_cli.tui.widgets.events import EventsPane
from pot_cli.tui.widgets.header import ConnectionBar
from pot_cli.tui.widgets.rig import RigPane
from pot_cli.tui.widgets.training import TrainingPane

REFRESH_S = 0.25
NARROW = 120  # below this many columns, side-by-side panels stack
TABS = ("rig", "training", "consensus", "earnings", "events")


@dataclass
class DashboardConfig:
    miners: list[str] = field(default_factory=list)
    validators: list[str] = field(default_factory=list)
    genesis: dict[str, Any] | None = None
    record: Path | None = None
    evaluate: bool = True
    pot_price: float | None = None
    replay: Path | None = None
    speed: float = 1.0  # replay speed; 0 = everything at once
    refresh_s: float = REFRESH_S


class DashboardApp(App[None]):
    CSS_PATH = "dashboard.tcss"
    TITLE = "pot dashboard"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("tab", "next_tab", "Next tab", priority=True),
        Binding("shift+tab", "prev_tab", "Prev tab", show=False, priority=True),
        Binding("1", "show_tab('rig')", "Rig", show=False),
        Binding("2", "show_tab('training')", "Training", show=False),
        Binding("3", "show_tab('consensus')", "Consensus", show=False),
        Binding("4", "show_tab('earnings')", "Earnings", show=False),
        Binding("5", "show_tab('events')", "Events", show=False),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("c", "cycle_category", "Category"),
        Binding("escape", "leave_filter", "Leave filter", show=False),
    ]

    def __init__(self, config: DashboardConfig) -> None:
        super().__init__()
        self.config = config
        self.state = DashboardState(live=config.replay is None, pot_price=config.pot_price)
        self.stop_event = threading.Event()
        self.recorder: Recorder | None = None
        self.player: ReplayPlayer | None = None
        self.replay_header: RecordingHeader | None = None
        self.observations: list[Observation] = []
        self.tick_ms: deque[float] = deque(maxlen=2000)
        self.applied = 0
        self._last_render = 0.0
        self._rendered_version = -1
        if config.replay is not None:
            self.replay_header, self.observations = load_recording(config.replay)
            mode = f"replay {config.replay.name}"
            miners, validators = self.replay_header.miners, self.replay_header.validators
        else:
            miners, validators = config.miners, config.validators
            mode = "live"
            if config.record is not None:
                self.recorder = Recorder(
                    config.record, RecordingHeader(list(miners), list(validators), now_ms())
                )
                mode += f", recording to {config.record.name}"
        self.sink = Sink(self.recorder)
        self.mode = mode
        for u in miners:
            self.state.add_source(MINER, u)
        for u in validators:
            self.state.add_source(VALIDATOR, u)
        self._miners, self._validators = list(miners), list(validators)

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield ConnectionBar(self.mode, id="conn")
        with TabbedContent(initial="rig", id="tabs"):
            with TabPane("1 Rig", id="rig"):
                yield RigPane(id="rig-pane")
            with TabPane("2 Training", id="training"):
                yield TrainingPane(id="training-pane")
            with TabPane("3 Consensus", id="consensus"):
                yield ConsensusPane(id="consensus-pane")
            with TabPane("4 Earnings", id="earnings"):
                yield EarningsPane(id="earnings-pane")
            with TabPane("5 Events", id="events"):
                yield EventsPane(id="events-pane")
        yield Footer()

    def on_mount(self) -> None:
        self._narrow(self.size.width)
        if self.config.replay is not None:
            if self.config.speed <= 0:
                for obs in self.observations:  # deterministic: all of it, now
                    self.sink.put(obs)
            else:
                self.player = ReplayPlayer(self.observations, speed=self.config.speed)
                self._worker(partial(self.player.run, self.sink, self.stop_event), "replay")
        else:
            self._start_live()
        self.set_interval(self.config.refresh_s, self.tick)
        self.tick(force=True)

    def _start_live(self) -> None:
        cfg = self.config
        if cfg.genesis is not None:
            self.sink.put(Observation(now_ms(), DASHBOARD, "", "genesis", cfg.genesis))
        addresses = MinerAddresses()
        self.sink.subscribe(["summary"], addresses.observe)
        workers: list[Any] = list(
            live_pollers(self._miners, self._validators, self.sink, addresses)
        )
        if cfg.evaluate and self._validators:
            evaluator = ModelEvaluator(self._validators, self.sink, genesis=cfg.genesis)
            self.sink.subscribe(["block", "summary"], evaluator.observe)
            workers.append(evaluator)
        for w in workers:
            self._worker(partial(w.run, self.stop_event), type(w).__name__)

    def _worker(self, fn: Callable[[], None], name: str) -> None:
        """A Textual worker around a dedicated daemon thread running ``fn``.

        Not ``run_worker(thread=True)``: that runs on the event loop's default executor, whose
        few threads (cpu count + 4) a dozen never-ending pollers would exhaust, leaving the
        rest waiting forever; a daemon thread also never holds up the exit."""

        async def run() -> None:
            loop = asyncio.get_running_loop()
            done = asyncio.Event()

            def target() -> None:
                try:
                    fn()
                finally:
                    with contextlib.suppress(RuntimeError):  # the loop closed first
                        loop.call_soon_threadsafe(done.set)

            threading.Thread(target=target, name=f"pot-dashboard-{name}", daemon=True).start()
            await done.wait()

        self.run_worker(run(), group="sources", name=name, exit_on_error=False)

    def on_unmount(self) -> None:
        self.stop_event.set()
        if self.recorder is not None:
            self.recorder.close()

    def on_resize(self, event: events.Resize) -> None:
        self._narrow(event.size.width)
        self.tick(force=True)
        if self.query_one(TabbedContent).active == "events":
            self.call_after_refresh(self.query_one(EventsPane).refilter, self.state)

    def _narrow(self, width: int) -> None:
        self.screen.set_class(width < NARROW, "-narrow")

    # ------------------------------------------------------------------ refresh

    def tick(self, force: bool = False) -> None:
        """Drain the sink into the state and re-render what is visible."""
        t0 = time.perf_counter()
        batch = self.sink.drain()
        for obs in batch:
            self.state.apply(obs)
        self.applied += len(batch)
        now = time.monotonic()
        changed = self.state.version != self._rendered_version
        if force or changed or now - self._last_render >= 1.0:
            self._render(force)
            self._last_render = now
            self._rendered_version = self.state.version
        self.tick_ms.append((time.perf_counter() - t0) * 1000)

    def _render(self, force: bool) -> None:
        if self.player is not None and self.player.done.is_set():
            self.query_one(ConnectionBar).mode = f"{self.mode} (ended)"
        self.query_one(ConnectionBar).update_from(self.state)
        events_pane = self.query_one(EventsPane)
        rows = self.state.take_new_rows()
        if rows:
            events_pane.append(rows)
        active = self.query_one(TabbedContent).active
        pane = self._pane(active)
        if pane is not None and not isinstance(pane, EventsPane):
            pane.update_from(self.state)

    def _pane(self, tab: str) -> RigPane | TrainingPane | ConsensusPane | EarningsPane | None:
        match tab:
            case "rig":
                return self.query_one(RigPane)
            case "training":
                return self.query_one(TrainingPane)
            case "consensus":
                return self.query_one(ConsensusPane)
            case "earnings":
                return self.query_one(EarningsPane)
        return None

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.tick(force=True)
        if self.query_one(TabbedContent).active == "events":
            # the log wraps at its width when a row is written: rewrite it now that it shows
            self.call_after_refresh(self.query_one(EventsPane).refilter, self.state)

    # ------------------------------------------------------------------ actions

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        if tab != "events" and isinstance(self.focused, Input):
            self.set_focus(None)

    def _step_tab(self, step: int) -> None:
        active = self.query_one(TabbedContent).active
        i = TABS.index(active) if active in TABS else 0
        self.action_show_tab(TABS[(i + step) % len(TABS)])

    def action_next_tab(self) -> None:
        self._step_tab(1)

    def action_prev_tab(self) -> None:
        self._step_tab(-1)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_filter(self) -> None:
        self.action_show_tab("events")
        self.query_one("#filter", Input).focus()

    def action_leave_filter(self) -> None:
        if isinstance(self.focused, Input):
            self.set_focus(None)

    def action_cycle_category(self) -> None:
        pane = self.query_one(EventsPane)
        pane.cycle()
        pane.refilter(self.state)

    # ------------------------------------------------------------------ tests and tools

    def tick_stats(self) -> dict[str, float]:
        """Refresh times (ms): how long draining and rendering took, worst and mean."""
        times = list(self.tick_ms)
        if not times:
            return {"ticks": 0, "max_ms": 0.0, "mean_ms": 0.0}
        return {"ticks": len(times), "max_ms": max(times), "mean_ms": sum(times) / len(times)}


def run_dashboard(
    miners: Sequence[str],
    validators: Sequence[str],
    *,
    genesis: dict[str, Any] | None = None,
    record: Path | None = None,
    evaluate: bool = True,
    pot_price: float | None = None,
) -> None:
    """Run the live dashboard in this terminal until the user quits (``q``)."""
    config = DashboardConfig(list(miners), list(validators), genesis, record, evaluate, pot_price)
    DashboardApp(config).run()


def run_replay(path: Path, *, speed: float = 1.0, pot_price: float | None = None) -> None:
    """Play a recording (``pot dashboard --replay FILE``)."""
    DashboardApp(DashboardConfig(replay=Path(path), speed=speed, pot_price=pot_price)).run()


__all__ = ["DashboardApp", "DashboardConfig", "run_dashboard", "run_replay"]
