"""The consensus tab: height, view and primary; each validator up or down with its last-seen
height; commit latency over the recent blocks; view changes and evidence; the last round's
spot-check sample."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static
from textual_plotext import PlotextPlot

from pot_cli.tui.state import DashboardState


class LatencyPlot(PlotextPlot):
    def update_from(self, state: DashboardState) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        points = state.commit_latencies()
        if points:
            plt.bar([h for h, _ in points], [v for _, v in points], color="cyan", width=0.6)
            mean = sum(v for _, v in points) / len(points)
            plt.title(
                f"commit latency after the deadline (s): last {points[-1][1]:.2f}, mean {mean:.2f}"
            )
        else:
            plt.title("commit latency: no blocks yet")
        plt.xlabel("block")
        self.refresh()


class ConsensusPane(Vertical):
    def compose(self) -> ComposeResult:
        yield Static("", id="chain-line")
        with Horizontal(id="consensus-body"):
            yield DataTable(id="validators", cursor_type="none", zebra_stripes=True)
            yield LatencyPlot(id="latency-plot")
        with VerticalScroll(id="consensus-notes"):
            yield Static("", id="spot")

    def on_mount(self) -> None:
        table = self.query_one("#validators", DataTable)
        for c in ("validator", "state", "height", "view", "phase", "peers", "seen"):
            table.add_column(c, key=c)

    def update_from(self, state: DashboardState) -> None:
        self.query_one("#chain-line", Static).update(self._chain_line(state))
        table = self.query_one("#validators", DataTable)
        table.clear()
        for r in state.validator_rows():
            up = r["up"]
            name = Text(("★ " if r["primary"] else "  ") + str(r["name"]), style="bold")
            st = Text(r["state"], style="green" if up else "bold red" if up is False else "dim")
            seen = r["seen_ago_s"]
            table.add_row(
                name,
                st,
                "—" if r["height"] is None else str(r["height"]),
                "—" if r["view"] is None else str(r["view"]),
                r["phase"] or "—",
                "—" if r["peers_up"] is None else str(r["peers_up"]),
                "—" if seen is None else f"{seen:.0f}s ago",
            )
        self.query_one(LatencyPlot).update_from(state)
        self.query_one("#spot", Static).update(self._notes(state))

    @staticmethod
    def _chain_line(state: DashboardState) -> Text:
        t = Text()
        head = state.head_status()
        if head is None:
            return Text("no validator answered yet", style="yellow")
        t.append(f"{head.chain_id}  ", style="dim")
        t.append("height ")
        t.append(str(state.height()), style="bold")
        t.append("  view ")
        t.append(str(head.view), style="bold")
        t.append("  primary ")
        t.append(state.validator_name(head.primary), style="bold")
        t.append(f"  phase {head.phase}  view changes ")
        vc = max((s.view_changes for s in state.statuses.values()), default=0)
        t.append(str(vc), style="bold yellow" if vc else "bold")
        interval = state.block_interval_s()
        if interval:
            t.append(f"  a block every {interval:.1f} s")
        return t

    @staticmethod
    def _notes(state: DashboardState) -> Text:
        t = Text()
        spot = state.spot_check()
        if spot is None:
            t.append("spot checks: no round with submissions yet\n", style="dim")
        else:
            t.append(f"spot checks of block {spot['height']}", style="bold")
            t.append(f" ({spot['submitters']} submissions): ")
            if spot["sample"] is None:
                t.append("sample unknown (needs the genesis' spot-check rate: --genesis)")
            else:
                t.append(f"drawn at {spot['rate']:.0%}: ")
                t.append(", ".join(spot["sample"]) or "none", style="cyan")
            if spot["probation"]:
                t.append("; on probation (always re-computed): ")
                t.append(", ".join(spot["probation"]), style="cyan")
            if spot["caught"]:
                t.append("; caught: ")
                t.append(", ".join(spot["caught"]), style="bold red")
            t.append("\n")
        if state.view_changes:
            t.append("view changes: ", style="bold")
            t.append(", ".join(f"view {v}" for _, v in state.view_changes[-6:]) + "\n")
        evidence = state.evidence()
        if evidence:
            t.append("evidence:\n", style="bold")
            for line in evidence:
                t.append(f"  {line}\n", style="red")
        return t
