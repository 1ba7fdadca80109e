"""The header line: every source's connection state, always visible."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from pot_cli.tui.sources.observation import MINER, VALIDATOR
from pot_cli.tui.state import DashboardState


class ConnectionBar(Static):
    """``pot · miner-0 ● · val-0 ● val-1 ✖ disconnected, retrying in 4s · eval …``"""

    def __init__(self, mode: str, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self.mode = mode  # "live", "replay FILE", ...

    def update_from(self, state: DashboardState) -> None:
        now = state.now_ms()
        t = Text(no_wrap=False, overflow="fold")
        t.append(" pot ", style="bold reverse")
        t.append(f" {self.mode} ", style="dim")
        compact = self.app.size.width < 120
        for role in (MINER, VALIDATOR):
            srcs = sorted(
                (s for (r, _), s in state.sources.items() if r == role), key=lambda s: s.label
            )
            if not srcs:
                continue
            t.append("│ ", style="dim")
            up = [s for s in srcs if s.up]
            if compact and len(srcs) > 1:  # "validators 3/4 ●" and the ones not up, in full
                t.append(f"{role}s {len(up)}/{len(srcs)} ", style="bold")
                t.append("● ", style="green" if len(up) == len(srcs) else "yellow")
                srcs = [s for s in srcs if not s.up]
            for s in srcs:
                t.append(f"{s.label} ", style="bold")
                if s.up:
                    t.append("● ", style="green")
                elif s.up is None:
                    t.append("… connecting ", style="yellow")
                else:
                    t.append(f"✖ {s.state_text(now)} ", style="bold red")
        if state.task is not None or state.eval_note:
            t.append("│ ", style="dim")
            if state.eval_note and not state.metrics:
                t.append(f"eval: {state.eval_note} ", style="yellow")
            else:
                t.append("eval ", style="bold")
                t.append("● ", style="green")
        self.update(t)
