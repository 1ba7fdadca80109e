"""The events tab: a scrolling log of rejections with reasons, slashes, view changes,
disconnections, watchdog actions, blocks and rounds; filtered by category (``c``) and text
(``/``)."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, RichLog, Static

from pot_cli.tui.state import FILTERS, DashboardState, LogRow

SEVERITY = {"info": "", "warn": "yellow", "error": "bold red"}
CATEGORY_STYLE = {
    "rejection": "yellow",
    "slash": "bold red",
    "view-change": "magenta",
    "connection": "red",
    "watchdog": "bold yellow",
    "error": "yellow",
    "block": "green",
    "round": "dim",
    "submission": "cyan",
}
MAX_LINES = 2000
PER_REFRESH = 100  # rows written per refresh at most: a flood shows its newest rows


def row_text(row: LogRow) -> Text:
    t = Text(no_wrap=False)
    t.append(time.strftime("%H:%M:%S", time.localtime(row.t_ms / 1000)), style="dim")
    t.append(f" {row.category:<11} ", style=CATEGORY_STYLE.get(row.category, ""))
    t.append(row.text, style=SEVERITY.get(row.severity, ""))
    return t


class EventsPane(Vertical):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.category = "all"
        self.text = ""
        self.shown = 0

    def compose(self) -> ComposeResult:
        with Horizontal(id="filter-row"):
            yield Input(placeholder="filter (/ to type, esc to leave)", id="filter")
            yield Static("", id="filter-cat")
        yield RichLog(id="log", max_lines=MAX_LINES, wrap=True, markup=False, min_width=20)

    def on_mount(self) -> None:
        self._label()

    def _label(self) -> None:
        self.query_one("#filter-cat", Static).update(
            Text.assemble(("category: ", "dim"), (self.category, "bold"), ("  (c)", "dim"))
        )

    def cycle(self) -> str:
        names = list(FILTERS)
        self.category = names[(names.index(self.category) + 1) % len(names)]
        self._label()
        return self.category

    def on_input_changed(self, event: Input.Changed) -> None:
        self.text = event.value.strip()
        self.app_state_refilter()

    def app_state_refilter(self) -> None:
        state: DashboardState | None = getattr(self.app, "state", None)
        if state is not None:
            self.refilter(state)

    def refilter(self, state: DashboardState) -> None:
        """Rewrite the log from the kept rows with the current filter."""
        log = self.query_one("#log", RichLog)
        log.clear()
        rows = [r for r in state.log if r.matches(self.category, self.text)][-MAX_LINES:]
        for r in rows:
            log.write(row_text(r))
        self.shown = len(rows)
        state.take_new_rows()

    def append(self, rows: list[LogRow]) -> None:
        log = self.query_one("#log", RichLog)
        match = [r for r in rows if r.matches(self.category, self.text)]
        if len(match) > PER_REFRESH:
            skipped = len(match) - PER_REFRESH
            log.write(Text(f"… {skipped} more events (a flood: narrow it with / or c)", "dim"))
            match = match[-PER_REFRESH:]
        for r in match:
            log.write(row_text(r))
        self.shown += len(match)
