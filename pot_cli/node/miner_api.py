"""The miner's local, read-only status API (``[miner] api_listen``, default 127.0.0.1:4067, the
port mining software uses): ``GET /summary`` (JSON) and ``GET /metrics`` (Prometheus).

:class:`MinerStatus` is the one place the round loop writes what it knows (round, verdict
counts, earnings, balance, last error); the rig answers for devices and electricity. The API
only reads it, under a lock, so a scrape never sees half an update. Metrics come from a
per-process ``CollectorRegistry`` whose collector reads the same snapshot at scrape time (never
the global registry: tests and devnets run several miners in one process).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from pot_cli import __version__
from pot_cli.errors import PotError

SCHEMA = "pot.miner.summary/1"
DECIMALS = 6  # base units per POT: 10**6 (the genesis default; the API does not say yet)
UNIT = "POT"
COUNTS = ("submitted", "skipped", "refused", "accepted", "rejected", "slashed", "missing")


def to_units(base: int) -> float:
    return base / 10**DECIMALS


class MinerStatus:
    """What the miner knows about itself; written by the round loop, read by the API."""

    def __init__(
        self,
        *,
        address: str,
        name: str,
        chain_id: str,
        task: str,
        validators: Sequence[str],
        devices: Callable[[], list[dict[str, Any]]],
        electricity: Callable[[], dict[str, Any]],
    ) -> None:
        self.address = address
        self.name = name
        self.chain_id = chain_id
        self.task = task
        self.validators = list(validators)
        self._devices = devices
        self._electricity = electricity
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self.round: dict[str, Any] | None = None
        self.counts = dict.fromkeys(COUNTS, 0)
        self.reward = 0
        self.penalty = 0
        self.balance: dict[str, Any] | None = None
        self.samples_per_s: float | None = None
        self.last_error: dict[str, Any] | None = None

    # ------------------------------------------------------------------ writers

    def set_round(self, **fields: Any) -> None:
        with self._lock:
            self.round = {**(self.round or {}), **fields}

    def count(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.counts[kind] += n

    def add_verdict(self, kind: str, reward: int, penalty: int) -> None:
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.reward += reward
            self.penalty += penalty

    def set_balance(self, balance: int, stake: int, ejected: bool) -> None:
        with self._lock:
            self.balance = {
                "balance": balance,
                "stake": stake,
                "balance_pot": to_units(balance),
                "stake_pot": to_units(stake),
                "ejected": ejected,
            }

    def set_samples_per_s(self, value: float) -> None:
        with self._lock:
            self.samples_per_s = round(value, 1)

    def set_error(self, message: str) -> None:
        with self._lock:
            self.last_error = {"message": message, "at_ms": int(time.time() * 1000)}

    # ------------------------------------------------------------------ reader

    def summary(self) -> dict[str, Any]:
        """The ``/summary`` document (amounts in base units, with ``*_pot`` conveniences)."""
        devices = self._devices()
        electricity = self._electricity()
        with self._lock:
            net = self.reward - self.penalty
            return {
                "schema": SCHEMA,
                "version": __version__,
                "miner": {
                    "address": self.address,
                    "name": self.name,
                    "chain_id": self.chain_id,
                    "task": self.task,
                },
                "validators": list(self.validators),
                "uptime_s": round(time.monotonic() - self._started, 3),
                "devices": devices,
                "samples_per_s": self.samples_per_s,
                "round": dict(self.round) if self.round is not None else None,
                "counts": dict(self.counts),
                "earnings": {
                    "reward": self.reward,
                    "penalty": self.penalty,
                    "net": net,
                    "net_pot": to_units(net),
                    "unit": UNIT,
                    "decimals": DECIMALS,
                },
                "balance": dict(self.balance) if self.balance is not None else None,
                "electricity": electricity,
                "last_error": dict(self.last_error) if self.last_error is not None else None,
            }


# ---------------------------------------------------------------------------- /metrics


class MinerCollector(Collector):
    """Prometheus families built from one :meth:`MinerStatus.summary` per scrape."""

    def __init__(self, status: MinerStatus) -> None:
        self.status = status

    def collect(self) -> Iterable[Metric]:
        s = self.status.summary()
        yield GaugeMetricFamily("pot_miner_uptime_seconds", "Seconds since start", s["uptime_s"])
        rounds = CounterMetricFamily(
            "pot_miner_rounds",
            "Rounds by outcome (submitted, skipped, verdicts)",
            labels=["outcome"],
        )
        for outcome, n in s["counts"].items():
            rounds.add_metric([outcome], n)
        yield rounds
        if s["round"] is not None and s["round"].get("height") is not None:
            yield GaugeMetricFamily(
                "pot_miner_round_height", "Height of the round seen last", s["round"]["height"]
            )
        if s["samples_per_s"] is not None:
            yield GaugeMetricFamily(
                "pot_miner_samples_per_second", "Samples/s of the last gradient", s["samples_per_s"]
            )
        earn = s["earnings"]
        yield CounterMetricFamily("pot_miner_reward_base_units", "Rewards earned", earn["reward"])
        yield CounterMetricFamily("pot_miner_penalty_base_units", "Penalties paid", earn["penalty"])
        if s["balance"] is not None:
            yield GaugeMetricFamily(
                "pot_miner_balance_base_units", "Account balance", s["balance"]["balance"]
            )
        elec = s["electricity"]
        yield CounterMetricFamily(
            "pot_miner_energy_kwh", "Energy the mining cards drew", elec["energy_kwh"]
        )
        if elec["cost"] is not None:
            yield CounterMetricFamily(
                "pot_miner_electricity_cost", "Electricity cost", elec["cost"]
            )
        yield from _device_metrics(s["devices"])


_READINGS = (
    ("temperature_c", "pot_gpu_temperature_celsius", "GPU temperature"),
    ("power_draw_w", "pot_gpu_power_watts", "GPU power draw"),
    ("fan_pct", "pot_gpu_fan_percent", "GPU fan speed"),
    ("utilization_gpu_pct", "pot_gpu_utilization_percent", "GPU utilisation"),
    ("memory_used_mb", "pot_gpu_memory_used_mib", "GPU memory used"),
    ("clock_sm_mhz", "pot_gpu_sm_clock_mhz", "GPU SM clock"),
)


def _device_metrics(devices: list[dict[str, Any]]) -> Iterable[Metric]:
    paused = GaugeMetricFamily("pot_miner_worker_paused", "1 while paused", labels=["device"])
    up = GaugeMetricFamily("pot_miner_worker_up", "1 while taking work", labels=["device"])
    restarts = CounterMetricFamily(
        "pot_miner_worker_restarts", "Crashed-worker restarts", labels=["device"]
    )
    samples = CounterMetricFamily("pot_miner_worker_samples", "Samples computed", labels=["device"])
    for d in devices:
        paused.add_metric([d["name"]], 1.0 if d["state"] == "paused" else 0.0)
        up.add_metric([d["name"]], 1.0 if d["state"] in ("idle", "busy") else 0.0)
        restarts.add_metric([d["name"]], d["restarts"])
        samples.add_metric([d["name"]], d["samples"])
    yield from (paused, up, restarts, samples)
    for key, name, doc in _READINGS:
        family = GaugeMetricFamily(name, doc, labels=["device"])
        for d in devices:
            reading = d["reading"]
            if reading is not None and reading.get(key) is not None:
                family.add_metric([d["name"]], float(reading[key]))
        if family.samples:  # a reading no card gives is left out, not exported empty
            yield family


def build_registry(status: MinerStatus) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MinerCollector(status))
    return registry


# ------------------------------------------------------------------------------- server


def build_app(status: MinerStatus, registry: CollectorRegistry) -> FastAPI:
    """Two GET routes and nothing that changes state."""
    app = FastAPI(title="pot miner status", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/summary")
    def summary() -> JSONResponse:
        return JSONResponse(status.summary())

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (port 0: any free port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise PotError(f"expected host:port for the status API, got {text!r}")
    return host.strip("[]"), int(port)


class StatusServer:
    """Serves :func:`build_app` with uvicorn on a background thread."""

    def __init__(self, status: MinerStatus) -> None:
        self.app = build_app(status, build_registry(status))
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self, listen: str) -> str:
        """Bind ``listen`` (a clear error when taken) and serve; returns the base URL."""
        host, port = parse_listen(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise PotError(
                f"cannot listen on {listen} for the status API: {exc.strerror or exc} "
                "(is another miner running? set --api-listen or [miner] api_listen)"
            ) from None
        sock.listen(64)
        bound = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_config=None, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="pot-miner-api", daemon=True
        )
        self._thread.start()
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        self.url = f"http://{shown}:{bound}"
        return self.url

    def stop(self, timeout: float = 2.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
