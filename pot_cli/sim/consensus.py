"""Deterministic PBFT simulator: n replicas in one process, a virtual clock, a seeded network.

Everything random comes from one ``random.Random`` seeded by (seed, n, fault), so a run is a
pure function of its :class:`SimConfig` and any failure replays exactly with the command printed
in :attr:`SimResult.replay`.

A run has a *chaos* phase (virtual time ``[0, chaos_until)``) in which the network drops,
duplicates, delays, reorders and partitions messages, replicas crash and restart from their
write-ahead log (keeping or losing the tail of the step they crashed in) and the Byzantine
replicas of the fault kind misbehave; then the network heals (every message is delivered
within ``[min_delay, max_delay]``) and every crashed replica is back. Byzantine replicas keep
misbehaving after the heal (they are at most f), and so do replicas crashed for good.

Fault kinds (:data:`FAULT_KINDS`): network (none, drop, duplicate, reorder, delay, partition),
crash (crash, crash-lose-tail: restart from the log), adversary (replay, garbage: injected
old or malformed messages), Byzantine (equivocating-primary, double-vote, bad-new-view,
out-of-window, silent-primary, twins) and lossy (:data:`LOSSY_FAULTS`: exactly f replicas
crashed for good, or f silent in a random set of views, or 1..f flooding junk — far-future
view-changes, forged votes, spoofed fetch-states and view-changes — each with 10-30% drops
and partitions until the heal). A test can add its own deterministic losses with
``drop_filter``.

Invariants, checked after every event:

* agreement — no two honest replicas commit different blocks at one sequence number, and every
  committed block carries a valid 2f+1 commit certificate;
* validity — only proposals the application callback accepts (or null proposals from a new
  view) commit;
* evidence — when an honest replica has been delivered two validly signed, conflicting
  pre-prepares, prepares, commits or checkpoints from one replica for one (view, seq), both while
  it was processing that view and within its watermarks, it holds evidence of it (or already
  holds the most evidence it keeps against that replica, ``MAX_EVIDENCE_PER_REPLICA``);
* durability — every consensus message an honest replica signs is in its write-ahead log
  before it is sent;
* memory — every ``MEMORY_CHECK_EVERY`` events (10 under flooding) and at the end, no honest
  replica retains more messages than its ``footprint_bound()``;
* liveness — after the heal, every honest replica commits all ``blocks`` blocks within
  ``liveness_bound`` virtual time units (checked at the end of the run).

Honest replicas are those that are neither Byzantine nor twins (twins: two honest processes
sharing one key, which together count as one faulty replica).
"""

from __future__ import annotations

import contextlib
import heapq
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pot_cli.consensus.app import ChainApp
from pot_cli.consensus.certificates import valid_commit_certificate
from pot_cli.consensus.config import ReplicaConfig
from pot_cli.consensus.host import ReplicaHost, ReplicaLog
from pot_cli.consensus.messages import (
    Checkpoint,
    Commit,
    Message,
    MessageError,
    NewView,
    Prepare,
    PrePrepare,
    Signed,
    ViewChange,
    parse_message,
    parse_wire,
)
from pot_cli.consensus.replica import MAX_EVIDENCE_PER_REPLICA as EVIDENCE_CAP
from pot_cli.consensus.replica import Output, Replica
from pot_cli.consensus.signatures import Verifier
from pot_cli.consensus.wal import MemoryWal
from pot_cli.crypto import Identity, sha256
from pot_cli.errors import UsageError
from pot_cli.sim.byzantine import BEHAVIOURS, Behaviour

NETWORK_FAULTS = ("none", "drop", "duplicate", "reorder", "delay", "partition")
CRASH_FAULTS = ("crash", "crash-lose-tail")
ADVERSARY_FAULTS = ("replay", "garbage")
BYZANTINE_FAULTS = (
    "equivocating-primary",
    "double-vote",
    "bad-new-view",
    "out-of-window",
    "silent-primary",
    "twins",
)
# f faulty replicas (crashed for good, silent in some views, or flooding) on a lossy,
# partitioned network until the heal
LOSSY_FAULTS = ("crash-loss", "silent-loss", "flood")
FAULT_KINDS = NETWORK_FAULTS + CRASH_FAULTS + ADVERSARY_FAULTS + BYZANTINE_FAULTS + LOSSY_FAULTS
DEFAULT_NS = (4, 7, 10)
LOGGED_TYPES = (PrePrepare, Prepare, Commit, Checkpoint, ViewChange, NewView)  # write-ahead rule
MEMORY_CHECK_EVERY = 50  # events between two memory checks (every 10 under flooding)
# what the network carries: a message, or a raw wire dict (untrusted junk a Byzantine replica
# made up); the receiving replica parses a dict itself
Payload = Message | dict[str, Any]
DropFilter = Callable[[int, int, int, Payload], bool]


@dataclass(frozen=True)
class SimConfig:
    seed: int
    n: int = 4
    fault: str = "none"
    blocks: int = 6
    checkpoint_interval: int = 2
    watermark_window: int = 4
    max_in_flight: int = 2
    timeout: int = 100
    resend: int = 50
    max_backoff_exp: int = 4
    min_delay: int = 1
    max_delay: int = 10
    chaos_until: int = 800
    round_interval: int = 100
    shared_verifier: bool = True
    crash_at_write: tuple[int, int] | None = None  # (replica, k): crash after its k-th record
    crash_lose_tail: bool = False  # with crash_at_write: lose the crashing step's records
    crash_downtime: int = 150
    keep_history: bool = False
    crash_primary_at: int | None = None  # crash replica 0 for good at this time (bench)
    measure_cpu: bool = False
    wire: bool = False  # send every message as JSON text and parse it back (the network path)
    derive_time: int = 0  # virtual time the application takes to re-derive a proposal

    def __post_init__(self) -> None:
        if self.fault not in FAULT_KINDS:
            raise UsageError(
                f"unknown fault kind {self.fault!r} (one of: {', '.join(FAULT_KINDS)})"
            )
        if self.n < 4:
            raise UsageError("the simulator needs n >= 4 replicas")
        if self.blocks < 1:
            raise UsageError("blocks must be at least 1")

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    @property
    def liveness_bound(self) -> int:
        """Virtual time after the heal within which all blocks must commit: enough for the
        backoff to reach its cap and f + 2 view changes at the capped timeout."""
        capped = self.timeout * 2**self.max_backoff_exp
        return (self.f + 3) * 2 * capped + 40 * self.max_delay * self.blocks

    def replay_command(self) -> str:
        cmd = f"pot sim consensus --seed {self.seed} --n {self.n} --fault {self.fault}"
        if self.blocks != SimConfig.blocks:
            cmd += f" --blocks {self.blocks}"
        if self.wire:
            cmd += " --wire"
        if self.derive_time:
            cmd += f" --derive-time {self.derive_time}"
        return cmd


@dataclass
class SimResult:
    config: SimConfig
    ok: bool
    violations: list[str]
    end_time: int
    events: int
    committed: int
    view_changes: int
    evidence: int
    rejected: int
    state_transfers: int
    first_commit_time: dict[int, int] = field(default_factory=dict)
    commit_latencies: list[int] = field(default_factory=list)
    replica_cpu: float = 0.0
    verifications: int = 0

    @property
    def replay(self) -> str:
        return self.config.replay_command()

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.config.seed,
            "n": self.config.n,
            "fault": self.config.fault,
            "ok": self.ok,
            "violations": self.violations,
            "end_time": self.end_time,
            "events": self.events,
            "committed": self.committed,
            "view_changes": self.view_changes,
            "evidence": self.evidence,
            "rejected": self.rejected,
            "state_transfers": self.state_transfers,
            "replay": self.replay,
        }


class InvariantViolation(Exception):
    pass


@dataclass(frozen=True)
class WireText:
    """A message as it travels in wire mode: JSON text."""

    text: str


def sim_identity(i: int) -> Identity:
    return Identity.from_seed(sha256(f"pot/sim/replica/{i}".encode()))


class Crashed(Exception):
    """The simulated process died while writing its log (raised by :class:`SimLog`)."""


@dataclass
class Node:
    index: int
    rid: int
    identity: Identity
    app_tag: str
    honest: bool
    behaviour: Behaviour
    wal: Any = field(default_factory=MemoryWal)  # the durable log (survives crashes)
    host: ReplicaHost | None = None  # None while crashed or killed
    app: ChainApp | None = None
    timer_at: int | None = None
    crash_armed: bool = False
    lose_tail: bool = False
    writes: int = 0
    crashes: int = 0
    delivered: dict[tuple[int, str, int, int], set[str]] = field(default_factory=dict)
    logged: set[str] = field(default_factory=set)  # signatures of own messages in the log

    @property
    def replica(self) -> Replica | None:
        return self.host.replica if self.host is not None else None


class SimLog:
    """The log a simulated node's :class:`ReplicaHost` writes to: the node's durable log, with
    crash injection (the process dies part-way through a step's records, keeping or losing
    the un-fsynced tail) and the bookkeeping of which own messages are logged."""

    def __init__(self, sim: Simulation, node: Node) -> None:
        self.sim = sim
        self.node = node

    def load(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = self.node.wal.load()
        return records

    def write(self, out: Output) -> None:
        node = self.node
        if node.crash_armed and (out.records or out.compact is not None):
            self.sim._write_with_crash(node, out)  # raises Crashed when the process dies
        else:
            self.sim._wal_write(node, out)
            node.writes += len(out.records) + (1 if out.compact is not None else 0)


class Simulation:
    """One seeded run. ``run()`` returns a :class:`SimResult`; it never raises on a violation.

    ``wal_factory(node_index)`` may supply a durable log (e.g. :class:`SqliteWal`) for a node;
    by default every node gets a :class:`MemoryWal`. ``drop_filter(now, src, dst, payload)``
    (also settable as the attribute of that name) drops a message to one destination when it
    returns True; it is consulted before the heal only, ahead of the seeded network faults.
    """

    def __init__(
        self,
        config: SimConfig,
        wal_factory: Callable[[int], ReplicaLog | None] | None = None,
        drop_filter: DropFilter | None = None,
    ) -> None:
        self.sc = config
        self.wal_factory = wal_factory
        self.drop_filter = drop_filter
        self.rng = random.Random(f"pot-sim/{config.seed}/{config.n}/{config.fault}")
        n = config.n
        self.identities = [sim_identity(i) for i in range(n)]
        self.cfg = ReplicaConfig(
            chain_id="pot-sim",
            public_keys=tuple(i.public_key for i in self.identities),
            checkpoint_interval=config.checkpoint_interval,
            watermark_window=config.watermark_window,
            view_change_timeout=config.timeout,
            max_backoff_exp=config.max_backoff_exp,
            resend_interval=config.resend,
            max_in_flight=config.max_in_flight,
        )
        self.shared = Verifier(self.cfg.chain_id, self.cfg.public_keys)
        self.now = 0
        self.queue: list[tuple[int, int, str, Any]] = []
        self._counter = 0
        self.events = 0
        self.decided: dict[int, str] = {}
        self.violations: list[str] = []
        self.history: list[tuple[int, Message]] = []
        self.first_commit_time: dict[int, int] = {}
        self.pp_time: dict[tuple[int, int], int] = {}
        self.commit_latencies: list[int] = []
        # (time, seq, view) of every commit by an honest replica, in order (benches read it)
        self.commit_log: list[tuple[int, int, int]] = []
        self.partition: list[set[int]] | None = None
        self.p_drop = self.p_dup = 0.0
        self.jitter = config.max_delay
        self.extra_delay = 0
        self.nodes: list[Node] = []
        self.replica_cpu = 0.0
        self._setup_faults()

    # ------------------------------------------------------------------ set-up

    def _setup_faults(self) -> None:
        sc, rng, n, f = self.sc, self.rng, self.sc.n, self.sc.f
        byz: dict[int, str] = {}
        twins = False
        kind = sc.fault
        if kind in ("equivocating-primary", "silent-primary", "bad-new-view"):
            count = rng.randint(1, f)
            first = 1 if kind == "bad-new-view" else 0
            for r in range(first, first + count):
                byz[r] = kind
        elif kind in ("double-vote", "out-of-window", "flood"):
            for r in rng.sample(range(n), rng.randint(1, f)):
                byz[r] = kind
        elif kind == "silent-loss":
            for r in rng.sample(range(n), f):
                byz[r] = kind
        elif kind == "twins":
            twins = True
        for r in range(n):
            b_kind = byz.get(r)
            beh_cls = BEHAVIOURS[b_kind] if b_kind else Behaviour
            beh = beh_cls(r, self.identities[r], self.cfg, rng)
            self.nodes.append(
                Node(
                    len(self.nodes),
                    r,
                    self.identities[r],
                    "",
                    b_kind is None and not (twins and r == 0),
                    beh,
                )
            )
        if twins:
            self.nodes.append(
                Node(
                    len(self.nodes),
                    0,
                    self.identities[0],
                    "twin-",
                    False,
                    Behaviour(0, self.identities[0], self.cfg, rng),
                )
            )
        # network chaos
        if kind == "drop":
            self.p_drop = rng.uniform(0.05, 0.3)
        elif kind == "duplicate":
            self.p_dup = rng.uniform(0.1, 0.5)
        elif kind == "reorder":
            self.jitter = rng.randint(20, 80)
        elif kind == "delay":
            self.extra_delay = rng.randint(sc.timeout // 2, 3 * sc.timeout)
        elif kind in ("partition", *LOSSY_FAULTS):
            if kind in LOSSY_FAULTS:
                self.p_drop = rng.uniform(0.1, 0.3)
            t = rng.randint(50, 200)
            while t < sc.chaos_until - 100:
                self._push(t, "partition", None)
                t += rng.randint(100, 300)
        elif kind in CRASH_FAULTS:
            victims = rng.sample(range(n), rng.randint(1, n))
            for r in victims:
                t = rng.randint(30, max(31, sc.chaos_until - sc.crash_downtime * 2 - 50))
                self._push(t, "crash", (r, kind == "crash-lose-tail"))
        elif kind in ADVERSARY_FAULTS or kind in BYZANTINE_FAULTS:
            self.p_drop = 0.02
        if kind == "crash-loss":
            # exactly f replicas crash for good (the worst case: 2f+1 honest replicas left)
            for r in sorted(rng.sample(range(n), f)):
                self.nodes[r].honest = False
                self._push(rng.randint(0, sc.chaos_until // 2), "kill", r)
        if kind == "bad-new-view":
            # force a view change into the Byzantine primary's view: isolate replica 0
            start = rng.randint(50, 150)
            self._push(start, "isolate", 0)
            self._push(start + 2 * sc.timeout + 50, "unisolate", None)
        if kind in ADVERSARY_FAULTS:
            t = 5
            while t < sc.chaos_until:
                self._push(t, kind, None)
                t += rng.randint(3, 25)
        if self.wal_factory is not None:
            for node in self.nodes:
                store = self.wal_factory(node.index)
                if store is not None:
                    node.wal = store
        if sc.crash_primary_at is not None:
            self.nodes[0].honest = False  # crashed for good: counts as one of the f faulty
            self._push(sc.crash_primary_at, "kill", 0)
        if sc.crash_at_write is not None:
            r, _k = sc.crash_at_write
            self.nodes[r].crash_armed = True
            self.nodes[r].lose_tail = sc.crash_lose_tail
        self._push(sc.chaos_until, "heal", None)
        for s in range(2, sc.blocks + 1):
            self._push((s - 1) * sc.round_interval, "round", None)

    # ------------------------------------------------------------------ event queue

    def _push(self, t: int, kind: str, payload: Any) -> None:
        self._counter += 1
        heapq.heappush(self.queue, (t, self._counter, kind, payload))

    @property
    def healed(self) -> bool:
        return self.now >= self.sc.chaos_until

    # ------------------------------------------------------------------ running

    def run(self, until: Callable[[Simulation], bool] | None = None) -> SimResult:
        """Run to the end (every honest replica committed every block after the heal, or the
        liveness bound passed), or until ``until(self)`` is true after an event (a bench's
        stop condition; the liveness check is then skipped)."""
        for node in self.nodes:
            self._boot(node, restore=False)
        deadline = self.sc.chaos_until + self.sc.liveness_bound
        every = 10 if self.sc.fault == "flood" else MEMORY_CHECK_EVERY
        try:
            while self.queue:
                t, _, kind, payload = heapq.heappop(self.queue)
                if t > deadline:
                    break
                self.now = t
                self.events += 1
                self._dispatch(kind, payload)
                if self.events % every == 0:
                    self._check_memory()
                if until is not None and until(self):
                    break
                if self.healed and self._all_done():
                    break
            self._check_memory()
            if until is None and not self._all_done():
                lag = {
                    n.index: (n.replica.last_exec if n.replica else None)
                    for n in self.nodes
                    if n.honest
                }
                raise InvariantViolation(
                    f"liveness: honest replicas did not all commit {self.sc.blocks} blocks "
                    f"within {self.sc.liveness_bound} after the heal at {self.sc.chaos_until} "
                    f"(executed: {lag})"
                )
            if until is None:
                self._check_final_state()
        except InvariantViolation as exc:
            self.violations.append(str(exc))
        honest = [n for n in self.nodes if n.honest and n.replica is not None]
        return SimResult(
            config=self.sc,
            ok=not self.violations,
            violations=self.violations,
            end_time=self.now,
            events=self.events,
            committed=len(self.decided),
            view_changes=max(
                (n.replica.stats["view_changes"] for n in honest if n.replica), default=0
            ),
            evidence=sum(len(n.replica.evidence) for n in honest if n.replica),
            rejected=sum(n.replica.stats["rejected"] for n in honest if n.replica),
            state_transfers=sum(n.replica.stats["state_transfers"] for n in honest if n.replica),
            first_commit_time=dict(self.first_commit_time),
            commit_latencies=list(self.commit_latencies),
            replica_cpu=self.replica_cpu,
            verifications=self._verifications(),
        )

    def _verifications(self) -> int:
        if self.sc.shared_verifier:
            return self.shared.verified
        return sum(n.replica.ver.verified for n in self.nodes if n.replica is not None)

    def _all_done(self) -> bool:
        for n in self.nodes:
            if n.honest and (n.replica is None or n.replica.last_exec < self.sc.blocks):
                return False
        return True

    def _dispatch(self, kind: str, payload: Any) -> None:
        if kind == "deliver":
            idx, msg = payload
            self._deliver(self.nodes[idx], msg)
        elif kind == "tick":
            node = self.nodes[payload]
            if node.host is not None and node.timer_at == self.now:
                node.timer_at = None
                self._call(node, lambda h: h.tick(self.now))
        elif kind == "resume":
            node = self.nodes[payload]
            if node.host is not None:
                self._call(node, lambda h: h.resume(self.now))
        elif kind == "crash":
            rid, lose = payload
            for node in self.nodes:
                if node.rid == rid and node.replica is not None:
                    node.crash_armed = True
                    node.lose_tail = lose
                    self._push(self.now + 20, "crash-now", node.index)
        elif kind == "crash-now":
            node = self.nodes[payload]
            if node.crash_armed and node.replica is not None:
                self._crash(node)
        elif kind == "kill":
            node = self.nodes[payload]
            node.host = node.app = None
            node.timer_at = None
        elif kind == "restart":
            node = self.nodes[payload]
            if node.host is None:
                self._boot(node, restore=True)
        elif kind == "partition":
            ids = list(range(self.sc.n))
            self.rng.shuffle(ids)
            cut = self.rng.randint(1, self.sc.n - 1)
            self.partition = [set(ids[:cut]), set(ids[cut:])]
            self._push(self.now + self.rng.randint(50, 250), "unpartition", None)
        elif kind == "isolate":
            self.partition = [{payload}, set(range(self.sc.n)) - {payload}]
        elif kind in ("unpartition", "unisolate"):
            self.partition = None
        elif kind == "heal":
            self.partition = None
            self.p_drop = self.p_dup = 0.0
            self.jitter = self.sc.max_delay
            self.extra_delay = 0
        elif kind == "round":
            for node in self.nodes:
                if node.host is not None:
                    self._call(node, lambda h: h.tick(self.now))
        elif kind == "replay":
            self._inject_replay()
        elif kind == "garbage":
            self._inject_garbage()

    def _boot(self, node: Node, restore: bool) -> None:
        """Start (or restart from its log) the node's process: a :class:`ReplicaHost`, the same
        persist-then-send loop a networked validator runs, with the simulator's checks and
        Byzantine rewriting as its hooks and the seeded network as its transport."""
        app = ChainApp(
            tag=node.app_tag,
            target=self.sc.blocks,
            round_interval=self.sc.round_interval,
            derive_time=self.sc.derive_time,
        )
        ver = self.shared if self.sc.shared_verifier else None
        if restore:
            node.delivered.clear()
            node.logged = {
                r["message"]["sig"]
                for r in node.wal.load()
                if r["kind"] == "msg" and r["message"]["replica"] == node.rid
            }
        node.app = app
        node.timer_at = None

        def send(to: int | None, payload: Any) -> None:
            if isinstance(payload, PrePrepare) and node.honest:
                self.pp_time.setdefault((payload.view, payload.seq), self.now)
            self._route(node, to, payload)

        def rewrite(replica: Replica, sends: list[tuple[int | None, Message]]) -> list[Any]:
            return node.behaviour.outgoing(sends, replica.low, replica.view)

        try:
            node.host = ReplicaHost(
                self.cfg,
                node.rid,
                node.identity,
                app,
                SimLog(self, node),
                send,
                self.now,
                verifier=ver,
                on_output=lambda replica, out: self._after_write(node, replica, out),
                rewrite=rewrite,
            )
        except Crashed:
            self._crash(node)
            return
        self._after_call(node)

    def _call(self, node: Node, action: Callable[[ReplicaHost], Any]) -> None:
        """One input to a node's host; a crash while it writes its log ends the process."""
        host = node.host
        assert host is not None
        before = host.replica_seconds
        try:
            action(host)
        except Crashed:
            self.replica_cpu += host.replica_seconds - before
            self._crash(node)
            return
        self.replica_cpu += host.replica_seconds - before
        self._after_call(node)

    def _after_call(self, node: Node) -> None:
        """Arm the node's timer and the application's derivation wake-ups."""
        host = node.host
        if host is None:
            return
        if host.next_timer is not None and host.next_timer != node.timer_at:
            node.timer_at = host.next_timer
            self._push(max(host.next_timer, self.now), "tick", node.index)
        if node.app is not None:
            for t in node.app.take_wakeups():
                self._push(max(t, self.now), "resume", node.index)

    def _crash(self, node: Node) -> None:
        node.host = None
        node.app = None
        node.crash_armed = False
        node.timer_at = None
        node.crashes += 1
        self._push(self.now + self.sc.crash_downtime, "restart", node.index)

    # ------------------------------------------------------------------ delivering

    def _deliver(self, node: Node, msg: Any) -> None:
        replica = node.replica
        if replica is None:
            return
        seen_as: Any = msg
        if isinstance(msg, WireText):  # wire mode: the replica parses the JSON text itself
            with contextlib.suppress(MessageError):
                seen_as = parse_wire(msg.text)
            msg = msg.text
        elif isinstance(msg, dict):  # what the replica will make of it, for the evidence check
            with contextlib.suppress(MessageError):
                seen_as = parse_message(msg)
        watch = self._evidence_watch(node, replica, seen_as) if node.honest else None
        self._call(node, lambda h: h.deliver(msg, self.now))
        if watch is not None:
            key, digest = watch
            seen = node.delivered.setdefault(key, set())
            seen.add(digest)
            held = {(ev.replica, ev.phase, ev.view, ev.seq) for ev in replica.evidence}
            convicted = sum(1 for k in held if k[0] == key[0])
            if len(seen) > 1 and key not in held and convicted < EVIDENCE_CAP:
                raise InvariantViolation(
                    f"evidence: replica {node.rid} was delivered conflicting {key[1]} messages "
                    f"from replica {key[0]} for view {key[2]} seq {key[3]} but holds no evidence"
                )

    def _evidence_watch(
        self, node: Node, r: Replica, msg: Any
    ) -> tuple[tuple[int, str, int, int], str] | None:
        """The conflict key of a delivered message the replica is in a position to check."""
        if isinstance(msg, Checkpoint):
            eligible = r.low < msg.seq <= r.high and msg.seq % self.cfg.checkpoint_interval == 0
            if eligible and msg.replica != node.rid and self.shared.check(msg):
                return (msg.replica, msg.TYPE, 0, msg.seq), msg.digest
            return None
        if not isinstance(msg, PrePrepare | Prepare | Commit):
            return None
        if msg.replica == node.rid or not 0 <= msg.replica < self.sc.n:
            return None
        if msg.view != r.view or not r.active or not r.low < msg.seq <= r.high:
            return None
        primary = self.cfg.primary(msg.view)
        if isinstance(msg, PrePrepare) and msg.replica != primary:
            return None
        if isinstance(msg, Prepare) and msg.replica == primary:
            return None
        if not self.shared.check(msg):
            return None
        return (msg.replica, msg.TYPE, msg.view, msg.seq), msg.digest

    def _after_write(self, node: Node, replica: Replica, out: Output) -> None:
        """The host's hook between the durable write and the sends: invariant checks and the
        commit-latency bookkeeping."""
        if node.honest:
            self._check_commits(node, out)
            self._check_durable(node, replica, out)
        for block in out.committed:
            self.first_commit_time.setdefault(block.seq, self.now)
            if node.honest:
                self.commit_log.append((self.now, block.seq, block.view))
                t0 = self.pp_time.get((block.view, block.seq))
                if t0 is not None:
                    self.commit_latencies.append(self.now - t0)

    def _wal_write(self, node: Node, out: Output) -> None:
        node.wal.write(out)
        if out.compact is not None:
            node.logged = set()
        for rec in [*(out.compact or []), *out.records]:
            if rec["kind"] == "msg" and rec["message"]["replica"] == node.rid:
                node.logged.add(rec["message"]["sig"])

    def _check_durable(self, node: Node, replica: Replica, out: Output) -> None:
        """Write-ahead rule: every message the replica signed is in its log before it is sent.

        Exception: a message for a sequence number at or below the stable checkpoint reached in
        the same step, which the log compaction dropped; the replica can never sign anything at
        those sequence numbers again (they are below its low watermark), so nothing needs it."""
        for _, msg in out.sends:
            if not isinstance(msg, LOGGED_TYPES) or msg.sender != node.rid:
                continue  # e.g. a (signed) fetch-state request: nothing to log
            if msg.signature.hex() in node.logged:
                continue
            if (
                isinstance(msg, PrePrepare | Prepare | Commit | Checkpoint)
                and msg.seq <= replica.low
            ):
                continue
            raise InvariantViolation(
                f"durability: replica {node.rid} is sending a signed {msg.TYPE} that is not in "
                "its write-ahead log"
            )

    def _write_with_crash(self, node: Node, out: Output) -> None:
        """Write records one by one; crash (raise :class:`Crashed`) at the armed write point."""
        units: list[Output] = []
        if out.compact is not None:
            units.append(Output(compact=out.compact))
        units.extend(Output(records=[rec]) for rec in out.records)
        target = self.sc.crash_at_write
        memory = isinstance(node.wal, MemoryWal)
        before = list(node.wal.records) if memory else []
        for unit in units:
            if target is not None and target[0] == node.index:
                crash_now = node.writes >= target[1]
            else:
                crash_now = self.rng.random() < 1.0 / (len(units) + 1)
            if crash_now:
                if node.lose_tail and memory:
                    # what this step wrote was never fsynced: the disk keeps the old log
                    node.wal.records = before
                raise Crashed
            self._wal_write(node, unit)
            node.writes += 1
        if target is not None and target[0] == node.index and node.writes >= target[1]:
            raise Crashed

    def _route(self, src: Node, to: int | None, msg: Payload) -> None:
        """Send ``msg`` (a message, or a raw wire dict carried opaquely) to ``to`` (None: all
        other replicas) through the seeded network."""
        keep = self.sc.keep_history or self.sc.fault == "replay"
        if keep and isinstance(msg, Signed) and len(self.history) < 5000:
            self.history.append((self.now, msg))
        dests = (
            [n for n in self.nodes if n.rid != src.rid]
            if to is None
            else [n for n in self.nodes if n.rid == to and n.index != src.index]
        )
        for dst in dests:
            if not self.healed:
                if self.drop_filter is not None and self.drop_filter(
                    self.now, src.rid, dst.rid, msg
                ):
                    continue
                if self.partition is not None and not any(
                    src.rid in g and dst.rid in g for g in self.partition
                ):
                    continue
                if self.p_drop and self.rng.random() < self.p_drop:
                    continue
                copies = 2 if self.p_dup and self.rng.random() < self.p_dup else 1
            else:
                copies = 1
            for _ in range(copies):
                delay = self.rng.randint(self.sc.min_delay, max(self.sc.min_delay, self.jitter))
                if self.extra_delay and not self.healed:
                    delay += self.rng.randint(0, self.extra_delay)
                payload: Any = msg
                if self.sc.wire:
                    payload = WireText(json.dumps(msg if isinstance(msg, dict) else msg.to_dict()))
                self._push(self.now + delay, "deliver", (dst.index, payload))

    # ------------------------------------------------------------------ adversary

    def _honest_target(self) -> Node | None:
        live = [n for n in self.nodes if n.honest and n.replica is not None]
        return self.rng.choice(live) if live else None

    def _inject_replay(self) -> None:
        target = self._honest_target()
        if target is None or not self.history:
            return
        _, msg = self.rng.choice(self.history)
        self._deliver(target, msg)

    def _inject_garbage(self) -> None:
        target = self._honest_target()
        if target is None:
            return
        self._deliver(target, garbage_message(self.rng, self.sc.n))

    # ------------------------------------------------------------------ invariants

    def _check_commits(self, node: Node, out: Output) -> None:
        for block in out.committed:
            prev = self.decided.get(block.seq)
            if prev is None:
                self.decided[block.seq] = block.digest
            elif prev != block.digest:
                raise InvariantViolation(
                    f"agreement: replica {node.rid} committed {block.digest[:12]} at seq "
                    f"{block.seq}, another honest replica committed {prev[:12]}"
                )
            if block.proposal is not None and not ChainApp.valid_proposal(
                block.seq, block.proposal
            ):
                raise InvariantViolation(
                    f"validity: replica {node.rid} committed a proposal the application "
                    f"rejects at seq {block.seq}"
                )
            if not valid_commit_certificate(block, self.cfg, self.shared):
                raise InvariantViolation(
                    f"certificate: block {block.seq} committed by replica {node.rid} does not "
                    "carry a valid 2f+1 commit certificate"
                )

    def _check_memory(self) -> None:
        """Bounded memory: no honest replica retains more messages than its config allows,
        whatever the Byzantine replicas send."""
        for node in self.nodes:
            r = node.replica
            if not node.honest or r is None:
                continue
            size, bound = r.footprint(), r.footprint_bound()
            if size > bound:
                parts = ", ".join(f"{k}={v}" for k, v in r.footprint_by_container().items() if v)
                raise InvariantViolation(
                    f"memory: replica {node.rid} retains {size} messages at t={self.now}, over "
                    f"its bound of {bound} ({parts})"
                )

    def _check_final_state(self) -> None:
        heads = {
            (n.app.height, n.app.head)
            for n in self.nodes
            if n.honest and n.app is not None and n.app.height == self.sc.blocks
        }
        if len(heads) > 1:
            raise InvariantViolation(f"agreement: honest replicas end in different states {heads}")


def garbage_message(rng: random.Random, n: int) -> Any:
    """A malformed or hostile wire message (what an attacker or a broken peer may send)."""
    base: dict[str, Any] = {
        "type": rng.choice(
            [
                "pre-prepare",
                "prepare",
                "commit",
                "checkpoint",
                "view-change",
                "new-view",
                "fetch-state",
                "state-reply",
                "bogus",
            ]
        ),
        "view": 0,
        "seq": 1,
        "digest": "ab" * 32,
        "replica": rng.randrange(n),
        "sig": "00" * 64,
    }
    choice = rng.randrange(12)
    if choice == 0:
        return rng.choice([None, 1, "x", [], [1, 2], 3.5, True])
    if choice == 1:
        base["extra"] = 1
    elif choice == 2:
        base.pop(rng.choice(sorted(base)))
    elif choice == 3:
        base["seq"] = rng.choice([-1, 2**70, "1", 1.5, None, True])
    elif choice == 4:
        base["digest"] = rng.choice(["zz" * 32, "AB" * 32, "ab", 5])
    elif choice == 5:
        base["sig"] = rng.choice(["zz" * 64, "00", None])
    elif choice == 6:
        base["proposal"] = {"a": float("nan")} if rng.random() < 0.5 else "x" * (2 << 20)
    elif choice == 7:
        nested: Any = 1
        for _ in range(200):
            nested = [nested]
        base["proposal"] = nested
    elif choice == 8:
        base = {
            "type": "view-change",
            "new_view": 1,
            "stable_seq": 0,
            "checkpoint_proof": "x",
            "prepared": [{}],
            "replica": 0,
            "sig": "00" * 64,
        }
    elif choice == 9:
        base = {
            "type": "new-view",
            "view": 1,
            "view_changes": [base],
            "pre_prepares": [],
            "replica": 1,
            "sig": "00" * 64,
        }
    elif choice == 10:
        base = {
            "type": "state-reply",
            "checkpoint": {
                "seq": 4,
                "digest": "ab" * 32,
                "proof": [],
                "snapshot": {"height": 4, "head": "x"},
            },
            "blocks": [],
            "replica": 1,
        }
    else:
        base["replica"] = rng.choice([n, 10**6, -1])
    return base


def plan_seed(seed: int, ns: tuple[int, ...], faults: tuple[str, ...]) -> tuple[int, str]:
    """The (n, fault) a sweep uses for ``seed``: round-robin, so every combination is covered."""
    n = ns[seed % len(ns)]
    fault = faults[(seed // len(ns)) % len(faults)]
    return n, fault


def run_seed(seed: int, n: int, fault: str, **overrides: Any) -> SimResult:
    return Simulation(SimConfig(seed=seed, n=n, fault=fault, **overrides)).run()
