"""Everything the dashboard knows, folded from observations; plain Python (no textual).

:class:`DashboardState` takes each :class:`~pot_cli.tui.sources.observation.Observation` in
:meth:`~DashboardState.apply` and keeps the latest miner summaries, validator statuses, blocks,
accounts, metrics, per-GPU histories (for the sparklines) and the event log; the widgets only
read it through the query methods below. ``now_ms`` is the wall clock live and the time of the
last observation in a replay, so a replay renders the same whenever it is played.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from pot_cli.node.api_models import AccountOut, BlockOut, EventOut, StatusOut, ValidatorOut
from pot_cli.node.miner_client import MinerSummary
from pot_cli.protocol.block import REJECT_CODES
from pot_cli.tui.sources.observation import DASHBOARD, EVAL, MINER, VALIDATOR, Observation

HISTORY = 300  # readings kept per GPU for the sparklines (5 minutes at one a second)
MAX_BLOCKS = 256
MAX_LOG = 5000
DAY_S = 86_400.0

# event log categories, and the filters the events tab cycles through
CATEGORIES = (
    "rejection",
    "slash",
    "view-change",
    "connection",
    "watchdog",
    "error",
    "block",
    "round",
    "submission",
)
FILTERS: dict[str, frozenset[str] | None] = {
    "all": None,
    "problems": frozenset({"rejection", "slash", "view-change", "connection", "watchdog", "error"}),
    "verdicts": frozenset({"rejection", "slash", "submission"}),
    "consensus": frozenset({"block", "round", "view-change"}),
    "rig": frozenset({"watchdog", "error"}),
    "connection": frozenset({"connection"}),
}


@dataclass
class SourceState:
    role: str
    url: str
    name: str = ""
    up: bool | None = None  # None: not heard from yet
    error: str = ""
    retry_at_ms: int | None = None
    last_ok_ms: int | None = None
    down_since_ms: int | None = None

    @property
    def label(self) -> str:
        return self.name or self.url.removeprefix("http://")

    def state_text(self, now_ms: int) -> str:
        if self.up is None:
            return "connecting"
        if self.up:
            return "up"
        if self.retry_at_ms is None:
            return "disconnected"
        left = max(0, -(-(self.retry_at_ms - now_ms) // 1000))
        return f"disconnected, retrying in {left}s"


@dataclass(frozen=True)
class LogRow:
    t_ms: int
    category: str
    text: str
    severity: str = "info"  # info | warn | error

    def matches(self, flt: str, text: str) -> bool:
        cats = FILTERS.get(flt)
        if cats is not None and self.category not in cats:
            return False
        return not text or text.lower() in self.text.lower() or text.lower() in self.category


@dataclass
class DeviceTrack:
    temps: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    powers: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    state: str = ""


@dataclass(frozen=True)
class MetricPoint:
    height: int
    metric: float | None
    baseline: float | None


@dataclass(frozen=True)
class Submission:
    height: int
    miner: str
    kind: str
    code: str | None
    reward: int
    penalty: int


class DashboardState:
    def __init__(self, *, live: bool = True, pot_price: float | None = None) -> None:
        self.live = live
        self.pot_price = pot_price
        self.sources: dict[tuple[str, str], SourceState] = {}
        self.summaries: dict[str, MinerSummary] = {}
        self.tracks: dict[tuple[str, str], DeviceTrack] = {}
        self.statuses: dict[str, StatusOut] = {}
        self.status_at: dict[str, int] = {}
        self.validator_list: list[ValidatorOut] = []
        self.blocks: dict[int, BlockOut] = {}
        self.accounts: dict[str, AccountOut] = {}
        self.deadlines: dict[int, int] = {}  # round height -> deadline (ms), from round events
        self.metrics: dict[int, MetricPoint] = {}
        self.task: dict[str, Any] | None = None
        self.genesis: dict[str, Any] | None = None
        self.view_changes: list[tuple[int, int]] = []  # (t_ms, view)
        self.log: deque[LogRow] = deque(maxlen=MAX_LOG)
        self.log_total = 0
        self.new_rows: list[LogRow] = []  # appended since the events tab last took them
        self.events_seen = 0
        self.version = 0
        self.last_t_ms = 0
        self.bad = 0  # observations that did not parse (a newer node?)
        self.eval_note = ""

    # ------------------------------------------------------------------ time

    def now_ms(self) -> int:
        if self.live:
            return time.time_ns() // 1_000_000
        return self.last_t_ms

    # ------------------------------------------------------------------ sources

    def add_source(self, role: str, url: str) -> SourceState:
        key = (role, url.rstrip("/"))
        if key not in self.sources:
            self.sources[key] = SourceState(role, key[1])
        return self.sources[key]

    def _heard(self, obs: Observation) -> None:
        src = self.add_source(obs.role, obs.url)
        if src.up is False:
            self._row(obs.t_ms, "connection", f"{obs.role} {src.label} reconnected")
        src.up, src.error, src.retry_at_ms = True, "", None
        src.last_ok_ms, src.down_since_ms = obs.t_ms, None

    def _down(self, obs: Observation) -> None:
        data = obs.data if isinstance(obs.data, dict) else {}
        if obs.role == EVAL:
            self.eval_note = str(data.get("error", ""))
            return
        src = self.add_source(obs.role, obs.url)
        if data.get("chain") and src.up:
            return  # the chain poller failed over; the status poller speaks for this one
        retry = data.get("retry_in_s")
        if src.up is not False:
            self._row(
                obs.t_ms,
                "connection",
                f"{obs.role} {src.label} disconnected: {data.get('error', '')}",
                "error",
            )
            src.down_since_ms = obs.t_ms
        src.up = False
        src.error = str(data.get("error", ""))
        src.retry_at_ms = obs.t_ms + int(float(retry) * 1000) if retry is not None else None

    # ------------------------------------------------------------------ apply

    def apply(self, obs: Observation) -> None:
        self.last_t_ms = max(self.last_t_ms, obs.t_ms)
        self.version += 1
        try:
            self._apply(obs)
        except (ValidationError, KeyError, TypeError, ValueError):
            self.bad += 1

    def _apply(self, obs: Observation) -> None:
        kind, data = obs.kind, obs.data
        if kind == "down":
            self._down(obs)
            return
        if obs.role in (MINER, VALIDATOR) and kind in ("summary", "status"):
            self._heard(obs)
        if kind == "summary":
            self._summary(obs, MinerSummary.parse(data))
        elif kind == "status":
            status = StatusOut.model_validate(data)
            self.statuses[obs.url] = status
            self.status_at[obs.url] = obs.t_ms
            self.add_source(VALIDATOR, obs.url).name = status.node
        elif kind == "validators":
            self.validator_list = [ValidatorOut.model_validate(v) for v in data]
            for v in self.validator_list:
                if v.url:
                    self.add_source(VALIDATOR, v.url).name = v.name
        elif kind == "block":
            self._block(obs, BlockOut.model_validate(data))
        elif kind == "account":
            acc = AccountOut.model_validate(data)
            self.accounts[acc.address] = acc
        elif kind == "event":
            self._event(EventOut.model_validate(data))
        elif kind == "metric":
            h = int(data["height"])
            m, b = data.get("metric"), data.get("baseline")
            old = self.metrics.get(h)
            self.metrics[h] = MetricPoint(
                h,
                float(m) if m is not None else (old.metric if old else None),
                float(b) if b is not None else (old.baseline if old else None),
            )
            self.eval_note = str(data.get("note") or "")
            while len(self.metrics) > MAX_BLOCKS:
                del self.metrics[min(self.metrics)]
        elif kind == "task":
            self.task = dict(data)
        elif kind == "genesis" and obs.role in (DASHBOARD, VALIDATOR, EVAL):
            self.genesis = dict(data)

    def _summary(self, obs: Observation, s: MinerSummary) -> None:
        src = self.add_source(MINER, obs.url)
        src.name = s.miner.name
        old = self.summaries.get(obs.url)
        self.summaries[obs.url] = s
        if old is None:  # keep them in name order: every tab lists miners in this order
            self.summaries = dict(sorted(self.summaries.items(), key=lambda kv: kv[1].miner.name))
        for d in s.devices:
            track = self.tracks.setdefault((obs.url, d.name), DeviceTrack())
            r = d.reading or {}
            if r.get("temperature_c") is not None:
                track.temps.append(float(r["temperature_c"]))
            if r.get("power_draw_w") is not None:
                track.powers.append(float(r["power_draw_w"]))
            if track.state and d.state != track.state:
                self._device_change(obs.t_ms, s.miner.name, d.name, track.state, d.state, r)
            track.state = d.state
        if old is not None:
            err, was = s.last_error, old.last_error
            if err and (not was or err.get("at_ms") != was.get("at_ms")):
                self._row(obs.t_ms, "error", f"{s.miner.name}: {err.get('message', '')}", "warn")

    def _device_change(
        self, t: int, miner: str, dev: str, was: str, now: str, reading: dict[str, Any]
    ) -> None:
        temp = reading.get("temperature_c")
        at = f" at {temp} °C" if temp is not None else ""
        if now == "paused":
            self._row(t, "watchdog", f"{miner} {dev}: paused by the watchdog{at}", "warn")
        elif was == "paused":
            self._row(t, "watchdog", f"{miner} {dev}: resumed{at}")
        elif now in ("crashed", "lost"):
            self._row(t, "watchdog", f"{miner} {dev}: {now}", "error")
        elif was == "crashed":
            self._row(t, "watchdog", f"{miner} {dev}: restarted")

    def _block(self, obs: Observation, b: BlockOut) -> None:
        if b.height in self.blocks:
            return
        self.blocks[b.height] = b
        while len(self.blocks) > MAX_BLOCKS:
            del self.blocks[min(self.blocks)]
        for v in b.verdicts:
            if v.kind == "accepted":
                continue
            reason = REJECT_CODES.get(v.code or "", "")
            amount = f", penalty {self.amount(v.penalty)}" if v.penalty else ""
            cat = "slash" if v.kind == "slashed" else "rejection"
            text = f"block {b.height}: {self.miner_name(v.miner)} {v.kind}: {v.code}{amount}"
            if reason:
                text += f" ({reason})"
            self._row(b.committed_ms or obs.t_ms, cat, text, "error" if cat == "slash" else "warn")

    def _event(self, e: EventOut) -> None:
        self.events_seen += 1
        d = e.data
        if e.kind == "round":
            if isinstance(d.get("height"), int) and isinstance(d.get("deadline_ms"), int):
                self.deadlines[d["height"]] = d["deadline_ms"]
                while len(self.deadlines) > MAX_BLOCKS:
                    del self.deadlines[min(self.deadlines)]
            self._row(e.at_ms, "round", f"round {d.get('height')} opened")
        elif e.kind == "block":
            self._row(
                e.at_ms,
                "block",
                f"block {d.get('height')} committed (view {d.get('view')}): "
                f"{d.get('accepted', 0)} accepted, {d.get('rejected', 0)} rejected, "
                f"{d.get('slashed', 0)} slashed",
            )
        elif e.kind == "view-change":
            view = int(d.get("view", 0))
            if not self.view_changes or self.view_changes[-1][1] != view:
                self.view_changes.append((e.at_ms, view))
                self._row(e.at_ms, "view-change", f"view change to view {view}", "warn")
        elif e.kind == "submission":
            self._row(
                e.at_ms,
                "submission",
                f"round {d.get('height')}: {self.miner_name(str(d.get('miner', '')))} "
                f"submission {d.get('status', '')}",
            )
        else:
            self._row(e.at_ms, "error" if "error" in e.kind else "round", f"{e.kind}: {d}")

    def _row(self, t_ms: int, category: str, text: str, severity: str = "info") -> None:
        row = LogRow(t_ms, category, text, severity)
        self.log.append(row)
        self.new_rows.append(row)
        if len(self.new_rows) > MAX_LOG:
            del self.new_rows[: len(self.new_rows) - MAX_LOG]
        self.log_total += 1

    def take_new_rows(self) -> list[LogRow]:
        rows, self.new_rows = self.new_rows, []
        return rows

    # ------------------------------------------------------------------ queries

    @property
    def decimals(self) -> int:
        for s in self.statuses.values():
            return s.decimals
        for m in self.summaries.values():
            return m.earnings.decimals
        return int((self.genesis or {}).get("decimals", 6))

    @property
    def unit(self) -> str:
        for s in self.statuses.values():
            return s.unit
        return str((self.genesis or {}).get("unit", "POT"))

    def amount(self, base: int | float, sign: bool = False) -> str:
        value = base / 10**self.decimals
        return f"{value:+.4f} {self.unit}" if sign else f"{value:.4f} {self.unit}"

    def miner_addresses(self) -> list[str]:
        return [s.miner.address for s in self.summaries.values()]

    def miner_name(self, address: str) -> str:
        for s in self.summaries.values():
            if s.miner.address == address:
                return s.miner.name
        return address[:12] + "…" if len(address) > 13 else address

    def validator_name(self, index: int) -> str:
        for v in self.validator_list:
            if v.index == index:
                return v.name
        for s in self.statuses.values():
            if s.validator_index == index:
                return s.node
        return f"#{index}"

    def head_status(self) -> StatusOut | None:
        """The status of the most advanced validator that answers."""
        up = [
            (s.height, s.view, u)
            for u, s in self.statuses.items()
            if self.sources.get((VALIDATOR, u), SourceState("", "")).up
        ]
        if not up:
            return max(self.statuses.values(), key=lambda s: s.height, default=None)
        return self.statuses[max(up)[2]]

    def height(self) -> int:
        top = max(self.blocks, default=0)
        s = self.head_status()
        return max(top, s.height if s else 0)

    def deadline_in_s(self) -> float | None:
        """Seconds to the open round's deadline (negative: past it, the round is closing)."""
        for url, s in sorted(self.statuses.items(), key=lambda kv: -kv[1].height):
            if s.deadline_in_ms is None:
                continue
            elapsed = self.now_ms() - self.status_at.get(url, self.now_ms())
            return (s.deadline_in_ms - elapsed) / 1000.0
        return None

    def round_length_s(self) -> float | None:
        for s in self.summaries.values():
            if s.round and s.round.get("round_ms"):
                return float(s.round["round_ms"]) / 1000.0
        return None

    def validator_rows(self) -> list[dict[str, Any]]:
        """One row per validator: name, url, up, last-seen height, view, peers up, seen ago."""
        names = {v.url.rstrip("/"): (v.index, v.name) for v in self.validator_list if v.url}
        urls = [k[1] for k in self.sources if k[0] == VALIDATOR]
        for u in names:
            if u not in urls:
                urls.append(u)
        head = self.head_status()
        rows: list[dict[str, Any]] = []
        for url in urls:
            src = self.sources.get((VALIDATOR, url))
            s = self.statuses.get(url)
            index, name = names.get(url, (s.validator_index if s else -1, s.node if s else ""))
            if src is None and head is not None:  # not watched: what the head validator says
                peer = next((p for p in head.peers if p.index == index), None)
                up = peer.up if peer else None
            else:
                up = src.up if src else None
            rows.append(
                {
                    "index": index,
                    "name": name or url,
                    "url": url,
                    "up": up,
                    "state": src.state_text(self.now_ms()) if src else "not watched",
                    "height": s.height if s else None,
                    "view": s.view if s else None,
                    "phase": s.phase if s else None,
                    "peers_up": s.peers_up if s else None,
                    "seen_ago_s": (self.now_ms() - src.last_ok_ms) / 1000
                    if src and src.last_ok_ms
                    else None,
                    "primary": head is not None and index == head.primary,
                }
            )
        rows.sort(key=lambda r: (r["index"] < 0, r["index"], r["url"]))
        return rows

    def commit_latencies(self, n: int = 40) -> list[tuple[int, float]]:
        """(height, seconds from the round's deadline to its commit) for the recent blocks;
        between commits when the deadline is unknown."""
        out: list[tuple[int, float]] = []
        prev: int | None = None
        for h in sorted(self.blocks)[-n - 1 :]:
            b = self.blocks[h]
            if b.committed_ms is None:
                continue
            deadline = self.deadlines.get(h)
            if deadline is not None:
                out.append((h, max(0.0, (b.committed_ms - deadline) / 1000.0)))
            elif prev is not None and self.blocks.get(h - 1) is not None:
                out.append((h, (b.committed_ms - prev) / 1000.0))
            prev = b.committed_ms
        return out[-n:]

    def block_interval_s(self) -> float | None:
        times = [self.blocks[h].committed_ms for h in sorted(self.blocks)[-33:]]
        ts = [t for t in times if t is not None]
        if len(ts) < 2:
            return None
        return max(1e-3, (ts[-1] - ts[0]) / 1000.0 / (len(ts) - 1))

    def submissions(self, address: str | None = None, n: int = 20) -> list[Submission]:
        """The verdicts of the watched miners (or of ``address``), newest first."""
        mine = {address} if address else set(self.miner_addresses())
        out: list[Submission] = []
        for h in sorted(self.blocks, reverse=True):
            for v in self.blocks[h].verdicts:
                if v.miner in mine:
                    out.append(Submission(h, v.miner, v.kind, v.code, v.reward, v.penalty))
            if len(out) >= n:
                break
        return out[:n]

    def rewards_per_round(self, address: str) -> list[tuple[int, float]]:
        """(height, net reward in units) for every block in view (0 when not in the block)."""
        out = []
        scale = 10**self.decimals
        for h in sorted(self.blocks):
            net = sum(v.reward - v.penalty for v in self.blocks[h].verdicts if v.miner == address)
            out.append((h, net / scale))
        return out

    def slashes(self, address: str | None = None) -> list[Submission]:
        return [s for s in self.submissions(address, n=10_000) if s.kind == "slashed" or s.penalty]

    def earnings(self, url: str) -> dict[str, Any] | None:
        """Earnings of the miner at ``url``: balance, stake, per day, electricity, net."""
        s = self.summaries.get(url)
        if s is None:
            return None
        scale = 10**self.decimals
        acc = self.accounts.get(s.miner.address)
        balance = acc.balance if acc else (s.balance.balance if s.balance else None)
        stake = acc.stake if acc else (s.balance.stake if s.balance else None)
        ejected = bool((acc and acc.ejected) or (s.balance and s.balance.ejected))
        series = [v for _, v in self.rewards_per_round(s.miner.address)[-32:]]
        interval = self.block_interval_s()
        per_round = sum(series) / len(series) if series and not ejected else None
        per_day = per_round * DAY_S / interval if per_round is not None and interval else None
        e = s.electricity
        cost_h = e.cost_per_hour
        cost_day = cost_h * 24 if cost_h is not None else None
        net_day = None
        if per_day is not None and cost_day is not None and self.pot_price is not None:
            net_day = per_day * self.pot_price - cost_day
        devices = []
        total_samples = sum(d.samples for d in s.devices) or 0
        for d in s.devices:
            power = (d.reading or {}).get("power_draw_w")
            share = d.samples / total_samples if total_samples else None
            devices.append(
                {
                    "name": d.name,
                    "card": d.card or ("CPU" if d.reading is None else ""),
                    "power_w": power,
                    "cost_day": power / 1000 * e.price_per_kwh * 24 if power is not None else None,
                    "share": share,
                    "pot_day": per_day * share
                    if per_day is not None and share is not None
                    else None,
                }
            )
        return {
            "name": s.miner.name,
            "address": s.miner.address,
            "ejected": ejected,
            "balance": balance / scale if balance is not None else None,
            "stake": stake / scale if stake is not None else None,
            "earned": s.earnings.net / scale,
            "per_round": per_round,
            "per_day": per_day,
            "per_month": per_day * 30 if per_day is not None else None,
            "price_per_kwh": e.price_per_kwh,
            "power_w": e.power_w,
            "energy_kwh": e.energy_kwh,
            "cost_so_far": e.cost,
            "cost_hour": cost_h,
            "cost_day": cost_day,
            "net_day": net_day,
            "net_month": net_day * 30 if net_day is not None else None,
            "break_even": cost_day / per_day if cost_day and per_day and per_day > 0 else None,
            "devices": devices,
        }

    def spot_check(self) -> dict[str, Any] | None:
        """The last committed round's spot-check sample: each submitter drawn alone from the
        round seed and the beacon at the genesis rate (the genesis must be known), plus the
        miners still on probation (always re-computed)."""
        from pot_cli.training.assignment import select_spot_checks, spot_check_seed

        for h in sorted(self.blocks, reverse=True):
            body = _body(self.blocks[h])
            if body is None or not body.get("submissions"):
                continue
            miners = [str(s["miner"]) for s in body["submissions"]]
            out: dict[str, Any] = {
                "height": h,
                "submitters": len(miners),
                "rate": None,
                "sample": None,
                "probation": [],
            }
            probation = [m for m in miners if (a := self.accounts.get(m)) and a.on_probation]
            out["probation"] = [self.miner_name(m) for m in probation]
            bps = (self.genesis or {}).get("spot_check_bps")
            if isinstance(bps, int):
                seed = spot_check_seed(
                    bytes.fromhex(body["round_seed"]), bytes.fromhex(body["beacon"])
                )
                out["rate"] = bps / 10_000
                out["sample"] = [
                    self.miner_name(m) for m in select_spot_checks(seed, miners, bps / 10_000)
                ]
            forged = [v for v in self.blocks[h].verdicts if v.kind == "slashed"]
            out["caught"] = [f"{self.miner_name(v.miner)} ({v.code})" for v in forged]
            return out
        return None

    def evidence(self, n: int = 8) -> list[str]:
        """The evidence of the recent slashes (from the blocks' verdicts)."""
        out: list[str] = []
        for h in sorted(self.blocks, reverse=True):
            body = _body(self.blocks[h])
            if body is None:
                continue
            for s in body.get("submissions", []):
                v = s.get("verdict") or {}
                if v.get("kind") == "slashed":
                    ev = v.get("evidence") or {}
                    detail = ", ".join(f"{k}={val}" for k, val in sorted(ev.items()))
                    out.append(
                        f"block {h}: {self.miner_name(s['miner'])} {v.get('code')}"
                        f"{': ' + detail if detail else ''}"
                    )
            if len(out) >= n:
                break
        return out[:n]

    def metric_series(self) -> tuple[list[int], list[float], list[int], list[float]]:
        hs = sorted(self.metrics)
        pot = [(h, self.metrics[h].metric) for h in hs if self.metrics[h].metric is not None]
        base = [(h, self.metrics[h].baseline) for h in hs if self.metrics[h].baseline is not None]
        return (
            [h for h, _ in pot],
            [float(v) for _, v in pot if v is not None],
            [h for h, _ in base],
            [float(v) for _, v in base if v is not None],
        )

    def samples_per_s(self) -> float | None:
        vals = [s.samples_per_s for s in self.summaries.values() if s.samples_per_s]
        return sum(vals) if vals else None

    def network_samples_per_s(self) -> float | None:
        """Samples in accepted submissions per second over the recent blocks."""
        hs = sorted(self.blocks)[-17:]
        ts = [self.blocks[h].committed_ms for h in hs]
        if len(hs) < 2 or ts[0] is None or ts[-1] is None or ts[-1] <= ts[0]:
            return None
        samples = sum(
            v.samples for h in hs[1:] for v in self.blocks[h].verdicts if v.kind == "accepted"
        )
        return samples / ((ts[-1] - ts[0]) / 1000.0)


def _body(b: BlockOut) -> dict[str, Any] | None:
    p = b.proposal
    if isinstance(p, dict) and isinstance(p.get("block"), dict):
        body: dict[str, Any] = p["block"]
        return body
    return None


__all__ = ["CATEGORIES", "FILTERS", "DashboardState", "LogRow", "MetricPoint", "SourceState"]
