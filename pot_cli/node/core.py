"""The validator's core: one thread that owns the replica and the PoT application.

Everything that changes consensus or round state happens here, one input at a time, in the
order the inbox delivers it: a peer's PBFT message, a miner's submission, a validator's beacon
message or relayed commitment, bytes fetched from a peer, a finished derivation, and the
timers (the replica's, and the round's deadlines). The host contract is the one ``pot sim
network`` follows: feed ``app.submit``; route ``BroadcastBeacon``, ``RelaySubmission`` and
``FetchPayload`` to peers; give ``beacon_message`` the primary of the replica's current view;
tick the replica at ``app.next_deadline()``; resume it when ``app.take_resume()`` says so; fetch
what ``app.missing()`` lists; run derivations in a worker (``sync_derivation=False``).

The write-ahead rule holds through :class:`~pot_cli.consensus.host.ReplicaHost`: a step's WAL
records are fsynced before its messages leave. Committed blocks (with their certificates) go
to the chain store in the same step, before anything is sent.

Other threads never touch the replica or the application: they put events in the bounded
:attr:`ValidatorCore.inbox` and read :attr:`ValidatorCore.view`, an immutable summary the core
publishes after every step (the API's status, round, accounts and model bytes).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from pot_cli.consensus.config import ReplicaConfig
from pot_cli.consensus.host import ReplicaHost
from pot_cli.consensus.messages import PrePrepare
from pot_cli.consensus.replica import Output, Replica
from pot_cli.consensus.signatures import Verifier
from pot_cli.crypto import Identity
from pot_cli.errors import PotError
from pot_cli.node.chainstore import ChainStore
from pot_cli.node.events import EventLog
from pot_cli.node.metrics import ValidatorMetrics
from pot_cli.node.pothost import route_actions, settle, take_beacon
from pot_cli.protocol.app import DerivationJob, DerivationOutcome, PotApp, parse_proposal
from pot_cli.protocol.beacon import BeaconMessage
from pot_cli.protocol.round import RelaySubmission, SubmissionRefused
from pot_cli.training.codec import encode_model

log = logging.getLogger("pot.validator")

INBOX_SIZE = 4096
REASK_MS = 1000  # a payload still missing is asked for again after this long
MAX_MODELS = 3  # model versions whose bytes are kept to serve miners
IDLE_TICK_MS = 250  # the replica is ticked at least this often
INLINE_SUBMISSIONS = 0  # blocks with at most this many submissions are derived in the core


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Transport(Protocol):
    """How the core reaches its peers (non-blocking, callable from the core thread)."""

    def send(self, to: int | None, text: str) -> None:
        """A PBFT message (``to`` None: every other validator)."""

    def broadcast_beacon(self, message: dict[str, Any]) -> None: ...

    def relay(self, relay: dict[str, Any]) -> None: ...

    def fetch(self, miner: str, payload_hash: str) -> None:
        """Ask peers for a payload (or snapshot blob) and the miner's key; the answer comes
        back as a :class:`Provide` in the inbox."""


# ----------------------------------------------------------------------------- inbox events


@dataclass(frozen=True)
class Deliver:
    message: Any  # a parsed consensus message (or wire text: the replica parses it)


@dataclass(frozen=True)
class Submit:
    miner: str
    public_key: bytes
    payload_hash: str
    signature: bytes
    payload: bytes | None
    height: int
    model_hash: str
    reply: Future[tuple[str, str]] | None = None  # (status or refusal code, reason)


@dataclass(frozen=True)
class Beacon:
    message: Any


@dataclass(frozen=True)
class Provide:
    miner: str
    public_key: bytes
    data: bytes | None


@dataclass(frozen=True)
class Derived:
    outcome: DerivationOutcome
    seconds: float


@dataclass(frozen=True)
class Stop:
    pass


Event = Deliver | Submit | Beacon | Provide | Derived | Stop


# ----------------------------------------------------------------------------- the view


@dataclass(frozen=True)
class AccountView:
    balance: int
    stake: int
    ejected: bool
    verified: int
    on_probation: bool


@dataclass(frozen=True)
class NodeView:
    """What other threads may read: replaced (never mutated) after every step."""

    height: int = 0
    head: str = ""
    model_hash: str = ""
    view: int = 0
    primary: int = 0
    round_height: int = 1
    phase: str = "idle"
    opened_ms: int | None = None
    deadline_ms: int | None = None
    round_seed: str = ""
    view_changes: int = 0
    state_transfers: int = 0
    accounts: Mapping[str, AccountView] = field(default_factory=dict)
    models: Mapping[str, bytes] = field(default_factory=dict)


class ValidatorCore:
    """The host loop of one validator (see the module docstring). :meth:`start` runs it in a
    thread; :meth:`stop` ends it (and the derivation worker) within a second or so."""

    def __init__(
        self,
        *,
        config: ReplicaConfig,
        index: int,
        identity: Identity,
        app: PotApp,
        wal: Callable[[], Any],
        store: ChainStore,
        transport: Transport,
        events: EventLog,
        metrics: ValidatorMetrics,
        clock: Callable[[], int] = now_ms,
        verifier: Verifier | None = None,
    ) -> None:
        self.cfg = config
        self.verifier = verifier
        self.index = index
        self.identity = identity
        self.app = app
        self.wal_factory = wal  # opened in the core thread (SQLite connections stay in theirs)
        self.store = store
        self.transport = transport
        self.events = events
        self.metrics = metrics
        self.clock = clock
        self.inbox: queue.Queue[Event] = queue.Queue(maxsize=INBOX_SIZE)
        self.view = NodeView()
        self.host: ReplicaHost | None = None
        self._asked: dict[tuple[str, str], int] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="derive")
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._round_seen: int | None = None
        self._models: dict[str, bytes] = {}
        self._view_changes = 0
        self.failure: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    def _open(self) -> None:
        """Open the replica from its write-ahead log (replaying it) and publish the view."""
        self.host = ReplicaHost(
            self.cfg,
            self.index,
            self.identity,
            self.app,
            self.wal_factory(),
            self._send,
            self.clock(),
            self.verifier,
            on_output=self._on_output,
        )
        self._after(self.clock())

    def start(self, timeout: float = 600.0) -> None:
        """Start the core thread; returns once the log is replayed (raises its error, e.g. a
        damaged log, so that the node does not start)."""
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="pot-core", daemon=True
        )
        self._thread.start()
        ready.wait(timeout)
        if self.failure is not None:
            raise self.failure

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        with contextlib.suppress(queue.Full):
            self.inbox.put_nowait(Stop())
        if self._thread is not None:
            self._thread.join(timeout)
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def put(self, event: Event) -> bool:
        """Queue an event from another thread; False when the inbox is full (the caller
        answers "busy": a flood never grows memory)."""
        try:
            self.inbox.put_nowait(event)
            return True
        except queue.Full:
            self.metrics.dropped.labels("inbox").inc()
            return False

    # ------------------------------------------------------------------ the loop

    def _wake_at(self) -> int | None:
        host = self.host
        times = [t for t in (host.next_timer if host else None, self.app.next_deadline()) if t]
        return min(times) if times else None

    def _run(self, ready: threading.Event) -> None:
        try:
            self._open()
        except BaseException as exc:
            self.failure = exc
            ready.set()
            return
        ready.set()
        try:
            last_tick = self.clock()
            while not self._stopping:
                wake = self._wake_at()
                now = self.clock()
                idle = (last_tick + IDLE_TICK_MS - now) / 1000
                timeout = max(0.0, min(idle, 0.5 if wake is None else (wake - now) / 1000))
                try:
                    event: Event | None = self.inbox.get(timeout=timeout)
                except queue.Empty:
                    event = None
                if isinstance(event, Stop):
                    break
                now = self.clock()
                try:
                    phase = self.app.round_status()
                    if event is not None:
                        self._handle(event, now)
                    wake = self._wake_at()
                    # the replica is ticked when a timer is due, when the round's phase moved
                    # (an input froze the set or completed its payloads: the primary may
                    # propose, backups arm their view-change timer), and at least every
                    # IDLE_TICK_MS (a deadline that an input made moot must not leave the
                    # replica unasked)
                    moved = self.app.round_status() != phase
                    if (
                        moved
                        or now - last_tick >= IDLE_TICK_MS
                        or (wake is not None and wake <= now)
                    ):
                        self._timers(now)
                        last_tick = now
                    self._after(now)
                except PotError as exc:  # a committed block that cannot execute yet, etc.
                    log.warning("validator %d: %s", self.index, exc)
        except BaseException as exc:  # never silently: the API reports the core as down
            self.failure = exc
            log.exception("validator %d: the core stopped", self.index)
            raise

    def _handle(self, event: Event, now: int) -> None:
        host = self.host
        assert host is not None
        if isinstance(event, Deliver):
            host.deliver(event.message, now)
        elif isinstance(event, Submit):
            self._submit(event, now)
        elif isinstance(event, Beacon):
            take_beacon(self.app, host, self.cfg, event.message, now, lambda: self._after(now))
        elif isinstance(event, Provide):
            self.app.provide(event.miner, event.public_key, event.data, now)
        elif isinstance(event, Derived):
            self.metrics.derive_seconds.observe(event.seconds)
            self.app.derivation_done(event.outcome)

    def _timers(self, now: int) -> None:
        assert self.host is not None
        route_actions(self.app.tick(now), self)
        self.host.tick(now)

    def _submit(self, ev: Submit, now: int) -> None:
        held = self.app.holds(ev.miner, ev.payload_hash)
        actions = self.app.submit(
            ev.miner,
            ev.public_key,
            ev.payload_hash,
            ev.signature,
            ev.payload,
            now,
            height=ev.height,
            model_hash=ev.model_hash,
        )
        refused = next(
            (a for a in actions if isinstance(a, SubmissionRefused) and a.miner == ev.miner), None
        )
        route_actions(actions, self)
        round_height = self.app.height + 1
        if refused is not None:
            result = (refused.code, refused.reason)
        elif held:  # an identical replay: nothing new is kept or relayed
            result = ("already-kept", "this exact submission is already kept for the round")
        elif ev.height == round_height + 1:
            result = ("queued", f"kept for round {ev.height}, which opens next")
        else:
            result = ("kept", f"kept for round {ev.height}")
        if ev.payload is not None:  # a miner's own submission (relays carry no bytes)
            self.metrics.submissions.labels(result[0]).inc()
            if result[0] in ("kept", "queued"):
                self.metrics.received_bytes.inc(len(ev.payload))
                self.events.append(
                    "submission",
                    {"miner": ev.miner, "height": ev.height, "status": result[0]},
                    now,
                )
        if ev.reply is not None and not ev.reply.done():
            ev.reply.set_result(result)

    def _after(self, now: int) -> None:
        """The round's actions, fetches, derivations and resumes after any input."""
        app, host = self.app, self.host
        assert host is not None
        route_actions(app.tick(now), self)  # opens the next round as soon as the chain moved on
        settle(app, host, now, self, self._derive)
        self._publish(now)

    def _derive(self, job: DerivationJob) -> None:
        if len(job.inputs.submissions) <= INLINE_SUBMISSIONS:
            # nothing to re-compute worth a thread hop: derive here, in this step (an empty
            # round's block takes about a millisecond)
            t0 = time.perf_counter()
            outcome = job.run()
            self.metrics.derive_seconds.observe(time.perf_counter() - t0)
            self.app.derivation_done(outcome)
            return

        def run() -> None:
            t0 = time.perf_counter()
            outcome = job.run()
            self.put(Derived(outcome, time.perf_counter() - t0))

        self._executor.submit(run)

    # ------------------------------------------------------------------ Peers (pothost)

    def fetch(self, miner: str, payload_hash: str) -> None:
        self._ask(miner, payload_hash, self.clock())

    def relay(self, relay: RelaySubmission) -> None:
        self.transport.relay(
            {
                "miner": relay.miner,
                "public_key": relay.public_key.hex(),
                "payload_hash": relay.payload_hash,
                "signature": relay.commitment_sig.hex(),
                "height": relay.height,
                "model_hash": relay.model_hash,
            }
        )

    def broadcast_beacon(self, message: BeaconMessage) -> None:
        self.transport.broadcast_beacon(message.to_dict())

    def _ask(self, miner: str, payload_hash: str, now: int) -> None:
        key = (miner, payload_hash)
        last = self._asked.get(key)
        if last is not None and now - last < REASK_MS:
            return
        if len(self._asked) > 4096:
            self._asked = {k: t for k, t in self._asked.items() if now - t < REASK_MS}
        self._asked[key] = now
        self.transport.fetch(miner, payload_hash)

    def _send(self, to: int | None, message: Any) -> None:
        import json

        self.transport.send(to, json.dumps(message.to_dict()))

    # ------------------------------------------------------------------ commits

    def _on_output(self, replica: Replica, out: Output) -> None:
        now = self.clock()
        for _, msg in out.sends:
            if isinstance(msg, PrePrepare) and msg.replica == self.index:
                self.store.round_proposed(msg.seq, now)
        for block in out.committed:
            self.store.put_block(block)
            self.store.round_committed(block.seq, now)
            self.metrics.blocks.inc()
            counts = {"accepted": 0, "rejected": 0, "slashed": 0}
            if block.proposal is not None:
                try:
                    for s in parse_proposal(block.proposal).block.submissions:
                        counts[s.verdict.kind] += 1
                        self.metrics.verdicts.labels(s.verdict.kind).inc()
                except PotError:
                    pass
            opened = self.view.opened_ms if self.view.round_height == block.seq else None
            if opened is not None:
                self.metrics.round_seconds.observe(max(0, now - opened) / 1000)
            self.events.append(
                "block",
                {"height": block.seq, "view": block.view, "digest": block.digest, **counts},
                now,
            )
        vcs = replica.stats["view_changes"]
        if vcs != self._view_changes:
            self._view_changes = vcs
            self.events.append("view-change", {"view": replica.view}, now)

    # ------------------------------------------------------------------ the view

    def _publish(self, now: int) -> None:
        app, host = self.app, self.host
        assert host is not None
        replica = host.replica
        status = app.round_status()
        height = app.height
        view = self.view
        if view.height != height or not view.accounts:
            ledger = app.ledger
            accounts: Mapping[str, AccountView] = {
                a: AccountView(
                    acc.balance, acc.stake, acc.ejected, acc.verified, ledger.on_probation(a)
                )
                for a, acc in ledger.accounts.items()
            }
            if app.model_hash not in self._models:
                self._models[app.model_hash] = encode_model(app.task, app.state.params)
                while len(self._models) > MAX_MODELS:
                    del self._models[next(iter(self._models))]
            models: Mapping[str, bytes] = dict(self._models)
        else:
            accounts, models = view.accounts, view.models
        opened = deadline = None
        phase, round_height = "idle", height + 1
        if status is not None:
            round_height, phase, opened, deadline = status
            if self._round_seen != round_height:
                self._round_seen = round_height
                self.store.round_opened(round_height, opened, deadline)
                self.events.append(
                    "round",
                    {
                        "height": round_height,
                        "deadline_ms": deadline,
                        "model_hash": app.model_hash,
                    },
                    now,
                )
        self.view = NodeView(
            height=height,
            head=app.state.head,
            model_hash=app.model_hash,
            view=replica.view,
            primary=self.cfg.primary(replica.view),
            round_height=round_height,
            phase=phase,
            opened_ms=opened,
            deadline_ms=deadline,
            round_seed=app.round_seed().hex(),
            view_changes=replica.stats["view_changes"],
            state_transfers=replica.stats["state_transfers"],
            accounts=accounts,
            models=models,
        )
        m = self.metrics
        m.height.set(height)
        m.view.set(replica.view)
        m.is_primary.set(1 if replica.is_primary else 0)
        m.view_changes.set(replica.stats["view_changes"])
        m.state_transfers.set(replica.stats["state_transfers"])
