"""The earnings tab: balance and stake, reward per round, slashes, electricity cost (the
config's price x the measured power), net per day and per month, per GPU."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Static
from textual_plotext import PlotextPlot

from pot_cli.tui.state import DashboardState


def _f(value: float | None, fmt: str = "{:.4f}", unit: str = "") -> str:
    return "—" if value is None else fmt.format(value) + unit


class RewardPlot(PlotextPlot):
    def update_from(self, state: DashboardState) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        addresses = state.miner_addresses()[:4]
        series = {state.miner_name(a): state.rewards_per_round(a)[-30:] for a in addresses}
        if not addresses:
            plt.title("reward per round: waiting for the miner")
        elif len(addresses) == 1:
            ((name, points),) = series.items()
            plt.bar([h for h, _ in points], [v for _, v in points], color="green", width=0.6)
            plt.title(f"{name}: net reward per round ({state.unit})")
        else:
            n = len(series)
            colors = ("green", "cyan", "magenta", "yellow")
            for i, (name, points) in enumerate(series.items()):
                shift = (i - (n - 1) / 2) * 0.8 / n  # grouped bars, side by side per round
                xs = [h + shift for h, _ in points]
                plt.bar(xs, [v for _, v in points], color=colors[i], width=0.8 / n, label=name)
            heights = sorted({h for points in series.values() for h, _ in points})
            plt.xticks([float(h) for h in heights[:: max(1, len(heights) // 8)]])
            plt.title(f"net reward per round ({state.unit})")
        plt.xlabel("round")
        self.refresh()


class EarningsPane(VerticalScroll):
    def compose(self) -> ComposeResult:
        yield Static("", id="money")
        with Horizontal(id="earnings-body"):
            yield RewardPlot(id="reward-plot")
            yield DataTable(id="per-gpu", cursor_type="none", zebra_stripes=True)
        yield Static("", id="slashes")

    def on_mount(self) -> None:
        table = self.query_one("#per-gpu", DataTable)
        for c in ("dev", "power", "cost/day", "share", "POT/day"):
            table.add_column(c, key=c)

    def update_from(self, state: DashboardState) -> None:
        texts = []
        table = self.query_one("#per-gpu", DataTable)
        table.clear()
        for url in state.summaries:
            e = state.earnings(url)
            if e is None:
                continue
            texts.append(self._money(state, e))
            many = len(state.summaries) > 1
            for d in e["devices"]:
                table.add_row(
                    f"{e['name']}·{d['name']}" if many else d["name"],
                    _f(d["power_w"], "{:.0f}", " W"),
                    _f(d["cost_day"], "{:.2f}"),
                    _f(d["share"], "{:.0%}"),
                    _f(d["pot_day"], "{:.2f}"),
                )
        if not texts:
            texts.append(Text("waiting for the miner's status API…", style="yellow"))
        self.query_one("#money", Static).update(Text("\n").join(texts))
        self.query_one(RewardPlot).update_from(state)
        slashes = state.slashes()
        t = Text()
        if slashes:
            t.append("slashes and penalties: ", style="bold red")
            t.append(
                ", ".join(
                    f"round {s.height} {s.code} {state.amount(-s.penalty, True)}"
                    for s in slashes[:6]
                )
            )
        else:
            t.append("no slashes or penalties in view", style="green")
        self.query_one("#slashes", Static).update(t)

    @staticmethod
    def _money(state: DashboardState, e: dict[str, Any]) -> Text:
        u = state.unit
        t = Text()
        t.append(f"{e['name']} ", style="bold")
        t.append("balance ")
        t.append(_f(e["balance"], "{:,.4f}", f" {u}"), style="bold")
        t.append("  stake ")
        t.append(_f(e["stake"], "{:,.2f}", f" {u}"), style="bold")
        t.append("  earned ")
        t.append(
            _f(e["earned"], "{:+,.4f}", f" {u}"),
            style="bold green" if e["earned"] >= 0 else "bold red",
        )
        if e["ejected"]:
            t.append("  EJECTED (proven forgery): earns nothing more", style="bold red")
            return t
        t.append("\nper round ")
        t.append(_f(e["per_round"], "{:+.4f}"))
        t.append(f"  per day {_f(e['per_day'], '{:,.1f}')}  per month ")
        t.append(_f(e["per_month"], "{:,.0f}", f" {u}"), style="bold")
        t.append(f"\npower {_f(e['power_w'], '{:.0f}', ' W')} at {e['price_per_kwh']:g}/kWh: ")
        t.append(f"{_f(e['cost_hour'], '{:.3f}')}/h  {_f(e['cost_day'], '{:.2f}')}/day  ")
        if e["net_day"] is not None:
            t.append("net ")
            style = "bold green" if e["net_day"] >= 0 else "bold red"
            t.append(f"{e['net_day']:+.2f}/day {e['net_month']:+.0f}/month", style=style)
        elif e["break_even"] is not None:
            t.append(f"break-even at {e['break_even']:.4f} per {u} (--pot-price for net)")
        return t
