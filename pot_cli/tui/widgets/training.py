"""The training tab: the model's metric per round against the centralized baseline, samples/s,
the round's phase with a countdown to its deadline, and the watched miners' last verdicts."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, ProgressBar, Static
from textual_plotext import PlotextPlot

from pot_cli.tui.state import DashboardState

VERDICT_STYLE = {"accepted": "green", "rejected": "yellow", "slashed": "bold red"}


class MetricPlot(PlotextPlot):
    """The PoT model's metric per round and the centralized baseline (plotext lines)."""

    def update_from(self, state: DashboardState) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        name = str((state.task or {}).get("metric", "metric")).replace("_", " ")
        hs, ms, bh, bs = state.metric_series()
        if hs:
            plt.plot(hs, ms, label="PoT", marker="braille", color="green")
        if bh:
            plt.plot(bh, bs, label="centralized", marker="braille", color="blue")
        if not hs and not bh:
            note = state.eval_note or (
                "no evaluations in this recording" if not state.live else "evaluating…"
            )
            plt.title(f"{name} per round: {note}")
        else:
            last = f"{ms[-1]:.4f}" if ms else "—"
            base = f" vs centralized {bs[-1]:.4f}" if bs else " (baseline unknown)"
            plt.title(f"{name} per round: {last}{base}")
        plt.xlabel("round")
        self.refresh()


class TrainingPane(Vertical):
    def compose(self) -> ComposeResult:
        with Horizontal(id="round-row"):
            yield Static("", id="round-line")
            yield ProgressBar(total=1000, show_eta=False, show_percentage=False, id="round-bar")
        yield Static("", id="rate-line")
        with Horizontal(id="training-body"):
            yield MetricPlot(id="metric-plot")
            yield DataTable(id="subs", cursor_type="none", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one("#subs", DataTable)
        for c in ("round", "miner", "verdict", "reason", "amount"):
            table.add_column(c, key=c)

    def update_from(self, state: DashboardState) -> None:
        self.query_one("#round-line", Static).update(self._round_line(state))
        self.query_one("#rate-line", Static).update(self._rate_line(state))
        left, length = state.deadline_in_s(), state.round_length_s()
        done = 1.0 if left is None or not length else min(1.0, max(0.0, 1 - left / length))
        self.query_one("#round-bar", ProgressBar).update(progress=round(done * 1000))
        self.query_one(MetricPlot).update_from(state)
        table = self.query_one("#subs", DataTable)
        table.clear()
        many = len(state.summaries) > 1
        for s in state.submissions(n=30):
            net = s.reward - s.penalty
            table.add_row(
                str(s.height),
                state.miner_name(s.miner) if many else state.miner_name(s.miner)[:10],
                Text(s.kind, style=VERDICT_STYLE.get(s.kind, "")),
                s.code or "",
                Text(state.amount(net, sign=True), style="red" if net < 0 else ""),
            )

    @staticmethod
    def _round_line(state: DashboardState) -> Text:
        t = Text()
        head = state.head_status()
        if head is None:
            t.append("no validator answered yet", style="yellow")
        else:
            left = state.deadline_in_s()
            t.append(f"round {head.round_height} ", style="bold")
            t.append(f"{head.phase}", style="bold cyan" if head.phase == "open" else "yellow")
            if left is not None:
                if left >= 0:
                    t.append(f"  deadline in {left:4.1f} s")
                else:
                    t.append(f"  closed {-left:.1f} s ago: committing")
            t.append(f"  height {head.height}")
        return t

    @staticmethod
    def _rate_line(state: DashboardState) -> Text:
        t = Text()
        sps, net = state.samples_per_s(), state.network_samples_per_s()
        t.append("miner ")
        t.append(f"{sps:,.0f}" if sps else "—", style="bold")
        t.append(" samples/s (gradient)   network ")
        t.append(f"{net:,.0f}" if net else "—", style="bold")
        t.append(" accepted samples/s")
        task: dict[str, Any] = state.task or {}
        if task:
            t.append(f"   task {task.get('name')}")
        return t
