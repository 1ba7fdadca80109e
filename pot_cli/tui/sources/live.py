"""Live sources: pollers that read a miner's status API and the validators' public API through
the typed clients (:mod:`pot_cli.node.miner_client`, :mod:`pot_cli.node.client`) and put what
they learn into a :class:`~pot_cli.tui.sources.observation.Sink`.

Each poller's :meth:`run` is a blocking loop for a worker thread; it returns soon after its
``stop`` event is set (every wait is on that event, every request has a short timeout). A
source that does not answer is retried with exponential backoff (1, 2, 4, 8, 15 s) and says so
with a ``down`` observation that carries the delay, which the header turns into "disconnected,
retrying in N s"; its next answer clears it.

* :class:`MinerPoller`: ``/summary`` every second.
* :class:`StatusPoller`: one validator's ``/v1/status`` every second (every validator has one:
  the consensus tab shows each one's height, view and whether it answers).
* :class:`ChainPoller`: through one validator at a time (failover to the next): the event
  long-poll, each committed block (the last :data:`BACKFILL` at start), the validator list and
  the accounts of the miners being watched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from pot_cli.errors import PotError
from pot_cli.node.api_models import AccountOut, BlockOut
from pot_cli.node.client import ApiError, Backoff, FailoverClient, ValidatorClient
from pot_cli.node.miner_client import MinerClient
from pot_cli.tui.sources.observation import MINER, VALIDATOR, Observation, Sink

BACKFILL = 64  # blocks read at start (the plots' history)
EVENT_WAIT_S = 1.0  # long-poll wait: also the longest a stop waits for the event poller
ACCOUNTS_EVERY_S = 3.0
VALIDATORS_EVERY_S = 15.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Poller:
    """A loop of :meth:`step` calls, each returning how long to wait before the next."""

    role = ""

    def __init__(self, url: str, sink: Sink, *, interval: float = 1.0) -> None:
        self.url = url.rstrip("/")
        self.sink = sink
        self.interval = interval
        self.backoff = Backoff()
        self.steps_done = 0

    def put(self, kind: str, data: Any) -> None:
        self.sink.put(Observation(now_ms(), self.role, self.url, kind, data))

    def down(self, exc: Exception) -> float:
        delay = self.backoff.next()
        self.put("down", {"error": _short(exc), "retry_in_s": delay})
        return delay

    def step(self) -> float:
        raise NotImplementedError

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                wait = self.step()
            except PotError as exc:
                wait = self.down(exc)
            self.steps_done += 1
            stop.wait(wait)
        self.close()

    def close(self) -> None:
        return None


def _short(exc: Exception) -> str:
    """One short line for the header and the log (requests' messages run to paragraphs)."""
    text = str(exc)
    if "Connection refused" in text or "NewConnectionError" in text:
        return "connection refused"
    if "timed out" in text or "Timeout" in text:
        return "timed out"
    if "RemoteDisconnected" in text or "Connection aborted" in text:
        return "connection closed"
    for marker in ("Max retries exceeded", "(Caused by"):
        if marker in text:
            text = text.split(marker)[0].rstrip(" :")
    return text[:160]


class MinerPoller(Poller):
    role = MINER

    def __init__(self, url: str, sink: Sink, *, interval: float = 1.0) -> None:
        super().__init__(url, sink, interval=interval)
        self.client = MinerClient(self.url, timeout=3.0)

    def step(self) -> float:
        self.put("summary", self.client.summary_json())
        self.backoff.reset()
        return self.interval

    def close(self) -> None:
        self.client.close()


class StatusPoller(Poller):
    role = VALIDATOR

    def __init__(self, url: str, sink: Sink, *, interval: float = 1.0) -> None:
        super().__init__(url, sink, interval=interval)
        self.client = ValidatorClient(self.url, timeout=3.0)

    def step(self) -> float:
        self.put("status", self.client.status().model_dump())
        self.backoff.reset()
        return self.interval

    def close(self) -> None:
        self.client.close()


class ChainPoller:
    """Events, blocks, validators and accounts through one validator at a time.

    ``addresses`` returns the miner addresses whose accounts to read (the app learns them from
    the miners' summaries). Blocks are announced by ``block`` events and by heights going up in
    a status; each is read once. Event ids belong to one validator: after a failover the cursor
    restarts at that validator's oldest event, and events no newer than the last one passed on
    are skipped.
    """

    role = VALIDATOR

    def __init__(
        self,
        urls: Sequence[str],
        sink: Sink,
        *,
        addresses: Callable[[], Sequence[str]] = lambda: (),
        backfill: int = BACKFILL,
    ) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.sink = sink
        self.addresses = addresses
        self.backfill = backfill
        self.client = FailoverClient(self.urls, timeout=3.0)
        self.backoff = Backoff()
        self.cursor = 0
        self.cursor_url = ""
        self.height = 0  # highest block read
        self.last_at_ms = 0  # the newest event passed on
        self.skip_until_ms: int | None = None  # after a failover: what was seen already
        self._accounts_at = 0.0
        self._validators_at = 0.0
        self._started = False

    def put(self, url: str, kind: str, data: Any) -> None:
        self.sink.put(Observation(now_ms(), VALIDATOR, url, kind, data))

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step()
                self.backoff.reset()
            except PotError as exc:
                delay = self.backoff.next()
                # the chain view is down only when every validator failed
                for url in self.urls:
                    self.put(
                        url, "down", {"error": _short(exc), "retry_in_s": delay, "chain": True}
                    )
                stop.wait(delay)
        self.client.close()

    def step(self) -> None:
        self._refresh(force=not self._started)
        self._started = True
        url = self.client.url
        if url != self.cursor_url:  # a new validator: its own event ids
            if self.cursor_url:
                self.skip_until_ms = self.last_at_ms
            self.cursor, self.cursor_url = 0, url
        events = self.client.call(lambda c: c.events_since(self.cursor, wait=EVENT_WAIT_S))
        url = self.client.url
        heights: list[int] = []
        for e in events:
            self.cursor = max(self.cursor, e.id)
            if self.skip_until_ms is not None and e.at_ms <= self.skip_until_ms:
                continue  # the previous validator told us this one already
            self.skip_until_ms = None
            self.last_at_ms = max(self.last_at_ms, e.at_ms)
            self.put(url, "event", e.model_dump())
            if e.kind == "block" and isinstance(e.data.get("height"), int):
                heights.append(e.data["height"])
        if heights:
            self._blocks(max(heights))

    def _refresh(self, *, force: bool) -> None:
        t = time.monotonic()
        if force or t - self._validators_at >= VALIDATORS_EVERY_S:
            vals = self.client.call(lambda c: c.validators())
            self.put(self.client.url, "validators", [v.model_dump() for v in vals])
            self._validators_at = t
            # blocks whose events this poller never saw (the event log is bounded)
            self._blocks(self.client.call(lambda c: c.status()).height)
        if force or t - self._accounts_at >= ACCOUNTS_EVERY_S:
            self._accounts_at = t
            for address in list(self.addresses()):
                try:
                    acc = self.client.call(partial(_account, address=address))
                except ApiError:  # not on this chain (yet): nothing to show
                    continue
                self.put(self.client.url, "account", acc.model_dump())

    def _blocks(self, top: int) -> None:
        start = max(self.height + 1, top - self.backfill + 1, 1)
        for h in range(start, top + 1):
            try:
                block = self.client.call(partial(_block, height=h))
            except ApiError as exc:
                if exc.status == 404:
                    return  # not committed here yet: the next event brings it
                raise
            self.put(self.client.url, "block", block.model_dump())
            self.height = h


def _account(c: ValidatorClient, address: str) -> AccountOut:
    return c.account(address)


def _block(c: ValidatorClient, height: int) -> BlockOut:
    return c.block(height)


def live_pollers(
    miners: Sequence[str],
    validators: Sequence[str],
    sink: Sink,
    addresses: Callable[[], Sequence[str]],
) -> list[Poller | ChainPoller]:
    """Every poller of a live dashboard (one per miner, one per validator, one for the chain)."""
    out: list[Poller | ChainPoller] = [MinerPoller(u, sink) for u in miners]
    out += [StatusPoller(u, sink) for u in validators]
    if validators:
        out.append(ChainPoller(validators, sink, addresses=addresses))
    return out


__all__ = [
    "BACKFILL",
    "Backoff",
    "ChainPoller",
    "MinerPoller",
    "StatusPoller",
    "live_pollers",
    "now_ms",
]
