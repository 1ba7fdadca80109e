"""The rig tab: one row per GPU (or the CPU) of every watched miner, with sparklines of
temperature and power, the verdict badge, and watchdog pauses highlighted."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Label, Sparkline, Static

from pot_cli.node.miner_client import DeviceOut
from pot_cli.tui.rig_info import device_info, pcie_text
from pot_cli.tui.state import DashboardState, DeviceTrack

STATE_STYLE = {
    "busy": "green",
    "idle": "",
    "paused": "bold black on yellow",
    "crashed": "bold white on red",
    "lost": "bold white on red",
}
BADGE_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def _num(value: Any, unit: str = "", fmt: str = "{:.0f}") -> str:
    return "—" if value is None else fmt.format(value) + unit


class DeviceSparks(Widget):
    """One GPU's temperature and power over the last minutes (Textual sparklines)."""

    def __init__(self, key: tuple[str, str], title: str) -> None:
        super().__init__(classes="device-sparks")
        self.key = key
        self.title = title

    def compose(self) -> ComposeResult:
        yield Label(self.title, classes="spark-title")
        yield Label("temp", classes="spark-label temp-label")
        yield Sparkline([], summary_function=max, classes="spark temp")
        yield Label("power", classes="spark-label power-label")
        yield Sparkline([], summary_function=max, classes="spark power")

    def update_from(self, track: DeviceTrack) -> None:
        temps, powers = list(track.temps), list(track.powers)
        self.query_one(".temp", Sparkline).data = temps
        self.query_one(".power", Sparkline).data = powers
        t = f"temp {temps[-1]:.0f}°C (max {max(temps):.0f})" if temps else "temp —"
        p = f"power {powers[-1]:.0f} W (max {max(powers):.0f})" if powers else "power —"
        self.query_one(".temp-label", Label).update(t)
        self.query_one(".power-label", Label).update(p)
        self.set_class(track.state == "paused", "-paused")


class RigPane(VerticalScroll):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._spark_keys: list[tuple[str, str]] = []
        self._width: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("waiting for the miner's status API…", id="rig-summary")
        yield DataTable(id="gpus", cursor_type="none", zebra_stripes=True)
        yield Static("", id="rig-notes")
        yield Grid(id="sparks")

    @staticmethod
    def columns(width: str) -> list[str]:
        """The table's columns: fewer on a narrow terminal, all of them on a wide one."""
        if width == "narrow":
            return ["dev", "card", "state", "temp", "power", "VRAM", "verdict"]
        cols = ["dev", "card", "state", "temp", "mem", "fan", "power/limit", "util", "VRAM"]
        if width == "wide":
            return [*cols[:2], "ex-ETH", *cols[2:], "PCIe", "verdict"]
        return [*cols, "verdict"]

    def update_from(self, state: DashboardState) -> None:
        w = self.app.size.width
        width = "wide" if w >= 150 else "narrow" if w < 100 else "medium"
        if width != self._width:
            table = self.query_one("#gpus", DataTable)
            table.clear(columns=True)
            for c in self.columns(width):
                table.add_column(c, key=c)
            self._width = width
        table = self.query_one("#gpus", DataTable)
        table.clear()
        lines: list[Text] = []
        notes: dict[str, list[str]] = {}  # message -> the devices it is about
        keys: list[tuple[str, str]] = []
        for url, s in state.summaries.items():
            paused = [d.name for d in s.devices if d.state == "paused"]
            line = Text()
            line.append(f"{s.miner.name}", style="bold")
            if width != "narrow":
                line.append(f"  {s.miner.address[:16]}…  task {s.miner.task}")
            sps = f"{s.samples_per_s:,.0f} samples/s" if s.samples_per_s else "— samples/s"
            line.append(f"  {sps}", style="cyan")
            line.append(f"  {len(s.devices)} worker{'s' if len(s.devices) > 1 else ''}")
            if width != "narrow":
                line.append(f"  up {s.uptime_s / 60:.0f} min")
            if paused:
                line.append(f"  ⏸ paused {', '.join(paused)}", style="bold black on yellow")
            lines.append(line)
            many = len(state.summaries) > 1
            for d in s.devices:
                label = f"{s.miner.name}·{d.name}" if many else d.name
                table.add_row(*self._row(label, d, state, width), key=f"{url}|{d.name}")
                info = device_info(d, state.task)
                for n in info.notes:
                    notes.setdefault(n, []).append(label)
                if d.reading is not None:
                    keys.append((url, d.name))
            if not any(d.reading for d in s.devices):
                notes.setdefault("no GPU (NVML unavailable): mining on the CPU", []).append(
                    s.miner.name
                )
        if lines:
            self.query_one("#rig-summary", Static).update(Text("\n").join(lines))
        self.query_one("#rig-notes", Static).update(
            Text(
                "\n".join(f"{', '.join(who)}: {msg}" for msg, who in notes.items()), style="yellow"
            )
        )
        self._sparks(state, keys)

    def _row(self, label: str, d: DeviceOut, state: DashboardState, width: str) -> list[Text | str]:
        r = d.reading or {}
        info = device_info(d, state.task)
        style = STATE_STYLE.get(d.state, "")
        temp = r.get("temperature_c")
        power, limit = r.get("power_draw_w"), r.get("power_limit_w")
        used, total = r.get("memory_used_mb"), r.get("memory_total_mb")
        cells: dict[str, Text | str] = {
            "dev": Text(label, style="bold"),
            "card": Text(info.card[:14] if width == "narrow" else info.card),
            "ex-ETH": info.eth or "—",
            "state": Text(d.state, style=style),
            "temp": Text(_num(temp, "°C"), style="bold red" if temp and temp >= 80 else ""),
            "mem": _num(r.get("memory_temperature_c"), "°C"),
            "fan": _num(r.get("fan_pct"), "%"),
            "power/limit": f"{_num(power)}/{_num(limit)} W" if r else "—",
            "power": _num(power, " W"),
            "util": _num(r.get("utilization_gpu_pct"), "%"),
            "VRAM": f"{used / 1024:.1f}/{total / 1024:.0f}G" if used is not None and total else "—",
            "PCIe": pcie_text(d.reading) or "—",
            "verdict": Text(
                info.short if width == "narrow" else info.badge,
                style=BADGE_STYLE.get(info.status, ""),
            ),
        }
        return [cells[c] for c in self.columns(width)]

    def _sparks(self, state: DashboardState, keys: list[tuple[str, str]]) -> None:
        grid = self.query_one("#sparks", Grid)
        if keys != self._spark_keys:
            grid.remove_children()
            many = len(state.summaries) > 1
            grid.mount_all(
                DeviceSparks(k, f"{state.sources[('miner', k[0])].label} {k[1]}" if many else k[1])
                for k in keys
            )
            self._spark_keys = keys
            self.call_after_refresh(self._sparks, state, keys)  # fill in once mounted
            return
        for w in grid.query(DeviceSparks):
            track = state.tracks.get(w.key)
            if track is not None and w.is_mounted:
                w.update_from(track)
