"""Recording and replaying dashboard sessions.

* :class:`ReplayPlayer` plays a recording into a sink, keeping the recorded gaps between
  observations (divided by ``speed``; ``speed=0`` puts everything at once: what tests and
  screenshots use, so that they are deterministic).
* :func:`record_session` records a live session without the app (``pot devnet`` uses it): the
  same pollers as the dashboard, in daemon threads, until the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pot_cli.tui.sources.evaluate import ModelEvaluator
from pot_cli.tui.sources.live import live_pollers, now_ms
from pot_cli.tui.sources.observation import (
    DASHBOARD,
    Observation,
    Recorder,
    RecordingHeader,
    Sink,
)


class ReplayPlayer:
    def __init__(self, observations: Sequence[Observation], *, speed: float = 1.0) -> None:
        self.observations = list(observations)
        self.speed = speed
        self.done = threading.Event()
        self.played = 0

    def run(self, sink: Sink, stop: threading.Event) -> None:
        prev: int | None = None
        for obs in self.observations:
            if stop.is_set():
                return
            gap = (obs.t_ms - prev) / 1000.0 / self.speed if self.speed > 0 and prev else 0.0
            if gap > 0 and stop.wait(gap):
                return
            prev = obs.t_ms
            sink.put(obs)
            self.played += 1
        self.done.set()


class MinerAddresses:
    """The miner addresses seen in summaries (what the chain poller reads accounts for)."""

    def __init__(self) -> None:
        self._seen: dict[str, None] = {}

    def observe(self, obs: Observation) -> None:
        if obs.kind == "summary" and isinstance(obs.data, dict):
            miner = obs.data.get("miner")
            if isinstance(miner, dict) and isinstance(miner.get("address"), str):
                self._seen[miner["address"]] = None

    def __call__(self) -> list[str]:
        return list(self._seen)


@contextlib.contextmanager
def record_session(
    path: Path,
    *,
    miners: Sequence[str],
    validators: Sequence[str],
    genesis: dict[str, Any] | None = None,
    note: str = "",
    evaluate: bool = False,
) -> Iterator[Recorder]:
    """Record what the dashboard would show to ``path`` while the block runs (no UI).

    ``genesis`` (the network's genesis as a dict) is recorded first, so that a replay knows the
    unit, decimals and spot-check rate. With ``evaluate`` the model evaluator runs too (torch,
    one thread): the replay then has the metric per round and the centralized baseline."""
    recorder = Recorder(path, RecordingHeader(list(miners), list(validators), now_ms(), note))
    sink = Sink(recorder, keep=False)
    if genesis is not None:
        sink.put(Observation(now_ms(), DASHBOARD, "", "genesis", genesis))
    addresses = MinerAddresses()
    sink.subscribe(["summary"], addresses.observe)
    stop = threading.Event()
    workers: list[Any] = list(live_pollers(miners, validators, sink, addresses))
    if evaluate and validators:
        evaluator = ModelEvaluator(validators, sink, genesis=genesis)
        sink.subscribe(["block", "summary"], evaluator.observe)
        workers.append(evaluator)
    threads = [
        threading.Thread(target=w.run, args=(stop,), name="pot-record", daemon=True)
        for w in workers
    ]
    for t in threads:
        t.start()
    try:
        yield recorder
    finally:
        stop.set()
        for t in threads:
            t.join(5.0)
        recorder.close()


__all__ = ["MinerAddresses", "ReplayPlayer", "record_session"]
