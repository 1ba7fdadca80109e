"""A PBFT replica as a pure, deterministic, sans-IO state machine (Castro & Liskov).

Inputs: ``step(message, now)`` for a message from the network (a parsed message or an untrusted
wire dict) and ``tick(now)`` when a timer the replica asked for is due. Output (:class:`Output`):
messages to send, write-ahead-log records, committed blocks and the next time ``tick`` is due.
No sockets, threads, clocks or randomness inside: ``now`` comes from the host, and every loop
over a collection whose order matters iterates sorted keys.

Host contract (what makes the log a *write-ahead* log): write ``records`` (or replace the whole
log by ``compact`` when it is set) and make them durable (fsync) **before** sending ``sends``.
Every message the replica signs and every message it accepted is in those records, so after a
crash :meth:`Replica.restore` rebuilds exactly the state from which it may have sent something,
and the last-signed guard (``_own``) refuses to sign anything conflicting with what it already
signed.

Protocol summary (see ARCHITECTURE.md for the full account):

* normal case: pre-prepare (primary = view mod n) / prepare / commit, quorum 2f+1, watermarks
  ``(h, h + L]``, execution strictly in sequence order, null proposals only from a new-view;
* checkpoints every K, stable at 2f+1 matching signed checkpoints, garbage collection below;
* view change: progress timer, exponential backoff (the timer of a view change starts only
  once 2f+1 view-changes for it are in, so an isolated replica does not run ahead), join on f+1
  view-changes for higher views, VIEW-CHANGE with C and P, NEW-VIEW with V and O, recomputed
  and checked by every backup;
* state transfer: a replica behind a stable checkpoint fetches the snapshot and the committed
  blocks after it, and verifies them against the 2f+1 checkpoint proof and the blocks' commit
  certificates before adopting them;
* evidence: two validly signed, conflicting messages from one replica for one
  (phase, view, seq) are kept and exposed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pot_cli.consensus.app import Application, Validity
from pot_cli.consensus.certificates import (
    check_new_view,
    compute_new_view,
    select_view_changes,
    valid_checkpoint_proof,
    valid_commit_certificate,
    valid_view_change,
)
from pot_cli.consensus.config import ReplicaConfig
from pot_cli.consensus.evidence import Evidence, conflict_key, conflict_value
from pot_cli.consensus.messages import (
    MAX_MESSAGE_BYTES,
    Checkpoint,
    Commit,
    CommittedBlock,
    FetchState,
    Message,
    MessageError,
    NewView,
    Prepare,
    PreparedCert,
    PrePrepare,
    SignedMessage,
    StableCheckpoint,
    StateReply,
    ViewChange,
    parse_committed_block,
    parse_message,
    parse_stable_checkpoint,
    parse_wire,
    proposal_digest,
    sign,
)
from pot_cli.consensus.signatures import Verifier
from pot_cli.crypto import Identity
from pot_cli.errors import EncodingError, PotError

BROADCAST = None
MESSAGE_TYPES = (
    PrePrepare,
    Prepare,
    Commit,
    Checkpoint,
    ViewChange,
    NewView,
    FetchState,
    StateReply,
)
MAX_LATE = 4096
VIEW_BUFFER_AHEAD = 2
VC_KEEP_AHEAD = 8
MAX_STATE_BLOCKS = 64
MAX_EVIDENCE_PER_REPLICA = 16


class WalCorruptError(PotError):
    """The write-ahead log cannot be replayed: the replica refuses to start."""


class SigningRefused(Exception):
    """Internal: the last-signed guard refused to sign a conflicting message."""


@dataclass
class Output:
    """What one ``step``/``tick`` asks the host to do, in this order: persist, then send."""

    sends: list[tuple[int | None, Message]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    compact: list[dict[str, Any]] | None = None
    committed: list[CommittedBlock] = field(default_factory=list)
    timer: int | None = None
    rejected: list[str] = field(default_factory=list)


@dataclass
class Entry:
    """The log of one (view, seq)."""

    pre_prepare: PrePrepare | None = None
    prepares: dict[int, Prepare] = field(default_factory=dict)
    commits: dict[int, Commit] = field(default_factory=dict)


class Replica:
    """One PBFT replica. Construct it fresh (:meth:`__init__`) or from its log (:meth:`restore`)."""

    def __init__(
        self,
        config: ReplicaConfig,
        replica_id: int,
        identity: Identity,
        app: Application,
        verifier: Verifier | None = None,
    ) -> None:
        if not 0 <= replica_id < config.n:
            raise PotError(f"consensus: replica id {replica_id} not in [0, {config.n})")
        if identity.public_key != config.public_keys[replica_id]:
            raise PotError(f"consensus: key does not match replica {replica_id}'s public key")
        self.cfg = config
        self.id = replica_id
        self.identity = identity
        self.app = app
        self.ver = verifier or Verifier(config.chain_id, config.public_keys)
        # protocol state
        self.view = 0
        self.active = True
        self.backoff = 0
        self.last_exec = 0
        self.stable = StableCheckpoint(0, app.state_digest(), (), app.snapshot())
        self.next_seq = 1
        self._entries: dict[tuple[int, int], Entry] = {}
        self._ready: dict[int, CommittedBlock] = {}
        self._blocks: dict[int, CommittedBlock] = {}
        self._snapshots: dict[int, tuple[str, Any]] = {}
        self._checkpoints: dict[int, dict[int, Checkpoint]] = {}
        self._far_checkpoints: dict[int, Checkpoint] = {}
        self._vcs: dict[int, dict[int, ViewChange]] = {}
        self._vc_hint: dict[int, int] = {}
        self._new_views: dict[int, NewView] = {}
        self._own: dict[tuple[str, int, int], SignedMessage] = {}
        self._seen: dict[tuple[int, str, int, int], SignedMessage] = {}
        self._late: dict[tuple[int, str, int, int], SignedMessage] = {}
        self._evidence: dict[tuple[int, str, int, int], Evidence] = {}
        # verified normal-case messages for views not yet entered, one per (sender, phase,
        # view, seq): bounded per sender by construction
        self._future: dict[tuple[int, str, int, int], PrePrepare | Prepare | Commit] = {}
        # the view-changes (>= 2f+1, one view) of the highest view this replica saw a quorum
        # for: relayed to a replica still stuck in a view change for that view or a lower one
        self._vc_proof: tuple[ViewChange, ...] = ()
        # when this replica last answered a view-change from a replica behind it (rate limit)
        self._answered: dict[int, int] = {}
        # pre-prepares the application is still deriving (validate answered PENDING)
        self._awaiting: dict[tuple[int, int], PrePrepare] = {}
        # the digest of the one proposal per (view, seq) handed to the application
        self._judged_slot: dict[tuple[int, int], str] = {}
        # timers (not persisted: a restarted replica arms them afresh)
        self._progress_deadline: int | None = None
        # when this replica last saw the current view's primary do new work (accepted a new
        # pre-prepare from it, or entered the view by its new-view); None: not in this view
        self._primary_heard: int | None = None
        self._vc_deadline: int | None = None
        self._resend_deadline: int | None = None
        self._fetch_after = -1
        self._served: dict[int, tuple[int, int]] = {}  # requester -> (when, from_seq)
        self._now = 0
        self._out = Output()
        self._compact = False
        self.diverged = False
        self.stats: dict[str, int] = {"rejected": 0, "view_changes": 0, "state_transfers": 0}

    # ------------------------------------------------------------------ public interface

    @property
    def low(self) -> int:
        """Low watermark h: the last stable checkpoint."""
        return self.stable.seq

    @property
    def high(self) -> int:
        return self.stable.seq + self.cfg.watermark_window

    @property
    def is_primary(self) -> bool:
        return self.cfg.primary(self.view) == self.id

    @property
    def evidence(self) -> list[Evidence]:
        return [self._evidence[k] for k in sorted(self._evidence)]

    def committed_block(self, seq: int) -> CommittedBlock | None:
        return self._blocks.get(seq)

    def footprint(self) -> int:
        """How many messages (and blocks, snapshots, hints) this replica retains: what the
        simulator checks against :meth:`footprint_bound` while Byzantine replicas flood it."""
        return sum(self.footprint_by_container().values())

    def footprint_by_container(self) -> dict[str, int]:
        """:meth:`footprint` per container (for diagnostics)."""
        return {
            "entries": sum(1 + len(e.prepares) + len(e.commits) for e in self._entries.values()),
            "ready": len(self._ready),
            "blocks": len(self._blocks),
            "snapshots": len(self._snapshots),
            "checkpoints": sum(len(slot) for slot in self._checkpoints.values()),
            "far_checkpoints": len(self._far_checkpoints),
            "view_changes": sum(len(slot) for slot in self._vcs.values()),
            "vc_hints": len(self._vc_hint),
            "new_views": len(self._new_views),
            "vc_proof": len(self._vc_proof),
            "own": len(self._own),
            "seen": len(self._seen),
            "late": len(self._late),
            "future": len(self._future),
            "evidence": len(self._evidence),
            "served": len(self._served),
            "answered": len(self._answered),
            "awaiting": len(self._awaiting),
            "judged": len(self._judged_slot),
        }

    def footprint_bound(self) -> int:
        """An upper bound on :meth:`footprint` that depends only on the configuration (n, the
        watermark window L, the checkpoint interval K), whatever the other replicas send:
        no sender can make a replica keep more than its share."""
        n, w, k = self.cfg.n, self.cfg.watermark_window, self.cfg.checkpoint_interval
        cps = w // k + 1
        # what a state transfer may execute beyond the window before a checkpoint is stable
        cps_far = (w + MAX_STATE_BLOCKS) // k + 1
        views = VC_KEEP_AHEAD + 1
        entries = 2 * w * (1 + 2 * n)  # current view + highest prepared older view, per seq
        blocks = 2 * (w + MAX_STATE_BLOCKS) + cps_far  # ready, executed above stable, snapshots
        checkpoints = cps * n + n
        view_change = views * n + n + views + n  # _vcs, hints, new-views, proof
        own = 2 * 3 * w + cps_far + views + 1
        seen = n * (3 * w + cps + views + 1)
        late = min(MAX_LATE, 2 * w * n)
        future = n * 3 * (VIEW_BUFFER_AHEAD + 1) * w
        evidence = n * MAX_EVIDENCE_PER_REPLICA
        return (
            (entries + blocks + checkpoints + view_change + own + seen + late + future + evidence)
            + 2 * n
            + 2 * w
        )

    def step(self, message: Message | Any, now: int) -> Output:
        """Handle one message from the network. Malformed or unacceptable input is rejected
        (listed in ``Output.rejected``), never raised."""
        self._begin(now)
        try:
            if isinstance(message, MESSAGE_TYPES):
                msg = message
            elif isinstance(message, bytes | str):
                msg = parse_wire(message)
            else:
                msg = parse_message(message)
            self._handle(msg)
        except (MessageError, EncodingError) as exc:
            self._reject(str(exc))
        except PotError as exc:  # e.g. the application refusing a certified snapshot
            self._reject(f"{type(exc).__name__}: {exc}")
        return self._finish()

    def tick(self, now: int) -> Output:
        """Fire the timers that are due at ``now``."""
        self._begin(now)
        if self._vc_deadline is not None and now >= self._vc_deadline:
            self._vc_deadline = None
            self.backoff += 1
            self._start_view_change(self.view + 1)
        if self._progress_deadline is not None and now >= self._progress_deadline:
            self._progress_deadline = None
            self._request_state(force=True)
            if self.active:
                self._start_view_change(self.view + 1)
        if self._resend_deadline is not None and now >= self._resend_deadline:
            self._resend_deadline = None
            self._retransmit()
        self._maybe_propose()
        return self._finish()

    def start(self, now: int) -> Output:
        """First call after construction or restore: re-send what is due and arm timers."""
        self._begin(now)
        self._retransmit()
        for view, seq in sorted(self._entries):
            if view == self.view:
                self._advance(view, seq)
        self._execute_ready()
        self._maybe_propose()
        return self._finish()

    # ------------------------------------------------------------------ output plumbing

    def _begin(self, now: int) -> None:
        self._now = now
        self._out = Output()
        self._compact = False

    def _finish(self) -> Output:
        self._update_timers()
        out = self._out
        if self._compact:
            out.compact = self.dump_records()
            out.records = []
        deadlines = [
            d
            for d in (self._progress_deadline, self._vc_deadline, self._resend_deadline)
            if d is not None
        ]
        out.timer = min(deadlines) if deadlines else None
        self._out = Output()
        return out

    def _send(self, msg: Message, to: int | None = BROADCAST) -> None:
        self._out.sends.append((to, msg))

    def _record(self, kind: str, body: dict[str, Any]) -> None:
        self._out.records.append({"kind": kind, **body})

    def _reject(self, reason: str) -> None:
        self.stats["rejected"] += 1
        self._out.rejected.append(reason)

    def _sign(self, msg: SignedMessage) -> SignedMessage:
        """Sign through the last-signed guard: re-signing the same thing returns the logged
        message; signing something conflicting is refused. Normal-case messages are never
        signed for a view below a view this replica already sent a view-change for."""
        key = conflict_key(msg)
        old = self._own.get(key)
        if old is not None:
            if isinstance(old, ViewChange | NewView) or conflict_value(old) == conflict_value(msg):
                return old
            raise SigningRefused(f"refusing to sign a conflicting {key}")
        if isinstance(msg, PrePrepare | Prepare | Commit) and msg.view < self._max_vc_view():
            raise SigningRefused(f"refusing to sign {key}: already left view {msg.view}")
        signed = sign(self.identity, self.cfg.chain_id, msg)
        self._own[key] = signed
        self._record("msg", {"message": signed.to_dict()})
        return signed

    def _max_vc_view(self) -> int:
        views = [k[1] for k in self._own if k[0] == ViewChange.TYPE]
        return max(views, default=0)

    # ------------------------------------------------------------------ dispatch

    def _handle(self, msg: Message) -> None:
        if not 0 <= msg.sender < self.cfg.n:
            self._reject(f"{msg.TYPE}: sender {msg.sender} is not a replica")
            return
        if msg.sender == self.id:
            # our own key: only replays, or another holder of our key (twins, a stolen key)
            if not isinstance(msg, FetchState | StateReply):
                self._observe_own_key_use(msg)
            return
        if isinstance(msg, PrePrepare):
            self._on_pre_prepare(msg)
        elif isinstance(msg, Prepare | Commit):
            self._on_vote(msg)
        elif isinstance(msg, Checkpoint):
            self._on_checkpoint(msg)
        elif isinstance(msg, ViewChange):
            self._on_view_change(msg)
        elif isinstance(msg, NewView):
            self._on_new_view(msg)
        elif isinstance(msg, FetchState):
            self._on_fetch_state(msg)
        else:
            self._on_state_reply(msg)

    def _observe_own_key_use(self, msg: SignedMessage) -> None:
        """A validly signed message under our key that conflicts with what we signed means
        another holder of our key exists: keep it as evidence (against our own key)."""
        mine = self._own.get(conflict_key(msg))
        if mine is None or conflict_value(mine) == conflict_value(msg):
            return
        if not self.ver.check(msg):
            return
        ck = conflict_key(msg)
        self._keep_evidence((msg.sender, *ck), Evidence(msg.sender, ck[0], ck[1], ck[2], mine, msg))

    def _observe(self, msg: SignedMessage) -> None:
        """Equivocation detection on validly signed messages (call after the signature check).

        A vote set aside unverified as not needed (``_late``) is verified now if this message
        conflicts with it, so skipping late votes never loses evidence."""
        ck = conflict_key(msg)
        key = (msg.sender, *ck)
        first = self._seen.get(key)
        if first is None:
            late = self._late.pop(key, None)
            if late is None or conflict_value(late) == conflict_value(msg):
                self._seen[key] = msg
                return
            if not self.ver.check(late):
                self._seen[key] = msg
                return
            first = late
            self._seen[key] = late
        if conflict_value(first) != conflict_value(msg):
            self._keep_evidence(key, Evidence(msg.sender, ck[0], ck[1], ck[2], first, msg))

    def _keep_evidence(self, key: tuple[int, str, int, int], ev: Evidence) -> None:
        """Keep (and log) evidence; at most :data:`MAX_EVIDENCE_PER_REPLICA` per offender: one
        proof convicts it, and a faulty replica equivocating everywhere must not grow our
        memory or log without bound."""
        if key in self._evidence:
            return
        if sum(1 for k in self._evidence if k[0] == key[0]) >= MAX_EVIDENCE_PER_REPLICA:
            return
        self._evidence[key] = ev
        self._record("evidence", {"evidence": ev.to_dict()})

    def _vote_not_needed(self, msg: Prepare | Commit) -> bool:
        """A vote that matches and arrives after its phase is complete here adds nothing: it is
        set aside without paying for its signature check (~30% of all verifications)."""
        e = self._entries.get((msg.view, msg.seq))
        if e is None or e.pre_prepare is None or msg.digest != e.pre_prepare.digest:
            return False
        if isinstance(msg, Commit):
            return msg.seq <= self.last_exec or msg.seq in self._ready
        return self.id in e.commits

    def _buffer_future(self, msg: PrePrepare | Prepare | Commit) -> None:
        """Keep a message for a view this replica has not entered yet (at most
        ``VIEW_BUFFER_AHEAD`` ahead), after its signature check: a forged message never takes
        a slot, and each sender holds at most one message per (phase, view, seq) inside the
        watermarks, so no replica can crowd out another's early messages."""
        if msg.view > self.view + VIEW_BUFFER_AHEAD:
            return
        key = (msg.sender, *conflict_key(msg))
        if key in self._future:
            return
        if isinstance(msg, PrePrepare) and msg.replica != self.cfg.primary(msg.view):
            self._reject("pre-prepare: not from the primary")
            return
        if not self.ver.check(msg):
            self._reject(f"{msg.TYPE}: invalid signature")
            return
        self._future[key] = msg

    def _normal_case_gate(self, msg: PrePrepare | Prepare | Commit) -> bool:
        """Watermarks and view: True when the message is for our current, active view."""
        if not self.low < msg.seq <= self.high:
            self._reject(f"{msg.TYPE}: seq {msg.seq} outside watermarks ({self.low}, {self.high}]")
            return False
        if msg.view < self.view:
            self._reject(f"{msg.TYPE}: old view {msg.view} < {self.view}")
            return False
        if msg.view > self.view or not self.active:
            self._buffer_future(msg)
            return False
        return True

    # ------------------------------------------------------------------ normal case

    def _entry(self, view: int, seq: int) -> Entry:
        e = self._entries.get((view, seq))
        if e is None:
            e = self._entries[(view, seq)] = Entry()
        return e

    def _on_pre_prepare(self, pp: PrePrepare) -> None:
        if not self._normal_case_gate(pp):
            return
        if pp.replica != self.cfg.primary(pp.view):
            self._reject("pre-prepare: not from the primary")
            return
        if not self.ver.check(pp):
            self._reject("pre-prepare: invalid signature")
            return
        self._observe(pp)
        if pp.digest != proposal_digest(pp.proposal):
            self._reject("pre-prepare: digest does not match the proposal")
            return
        e = self._entry(pp.view, pp.seq)
        if e.pre_prepare is not None:
            if e.pre_prepare.digest != pp.digest:
                self._reject("pre-prepare: conflicts with the accepted one")
            return
        if pp.proposal is None:
            self._reject("pre-prepare: null proposal outside a new-view")
            return
        judged = self._judged_slot.get((pp.view, pp.seq))
        if judged is not None and judged != pp.digest:
            # the primary equivocated (kept as evidence above): the application judges one
            # proposal per (view, seq), so a Byzantine primary cannot make every backup
            # re-derive as many blocks as it can sign
            self._reject("pre-prepare: conflicts with the proposal already being judged")
            return
        self._judge_pre_prepare(pp)

    def _judge_pre_prepare(self, pp: PrePrepare) -> None:
        """Ask the application; accept, reject, or keep the pre-prepare aside while it derives
        (one per (view, seq) inside the watermarks: bounded)."""
        key = (pp.view, pp.seq)
        self._judged_slot.setdefault(key, pp.digest)
        validity = self._app_validity(pp.seq, pp.proposal)
        if validity is Validity.PENDING:
            self._awaiting.setdefault(key, pp)
            return
        self._awaiting.pop(key, None)
        if validity is not Validity.VALID:
            self._reject(f"pre-prepare: application rejected the proposal at {pp.seq}")
            return
        e = self._entry(pp.view, pp.seq)
        if e.pre_prepare is not None:
            return
        e.pre_prepare = pp
        self._primary_heard = self._now
        self._record("msg", {"message": pp.to_dict()})
        self._advance(pp.view, pp.seq)

    def _app_validity(self, seq: int, proposal: Any) -> Validity:
        try:
            validity = self.app.validate(seq, proposal, self._now)
        except Exception:  # the callback must not be able to crash the replica
            return Validity.INVALID
        return validity if isinstance(validity, Validity) else Validity.INVALID

    def resume(self, now: int) -> Output:
        """The application finished a derivation it had answered PENDING for: judge again the
        pre-prepares kept aside (those of the current view; the others are dropped)."""
        self._begin(now)
        awaiting, self._awaiting = self._awaiting, {}
        for key in sorted(awaiting):
            pp = awaiting[key]
            if pp.view == self.view and self.active and self.low < pp.seq <= self.high:
                self._judge_pre_prepare(pp)
        self._execute_ready()
        return self._finish()

    def _on_vote(self, msg: Prepare | Commit) -> None:
        if not self._normal_case_gate(msg):
            return
        if isinstance(msg, Prepare) and msg.replica == self.cfg.primary(msg.view):
            self._reject("prepare: from the primary")
            return
        key = (msg.sender, *conflict_key(msg))
        if key not in self._seen and self._vote_not_needed(msg):
            if len(self._late) < MAX_LATE:
                self._late.setdefault(key, msg)
            return
        if not self.ver.check(msg):
            self._reject(f"{msg.TYPE}: invalid signature")
            return
        self._observe(msg)
        e = self._entry(msg.view, msg.seq)
        votes: dict[int, Any] = e.prepares if isinstance(msg, Prepare) else e.commits
        if msg.replica in votes:
            return  # duplicate, or a conflicting second vote (kept as evidence)
        votes[msg.replica] = msg
        self._record("msg", {"message": msg.to_dict()})
        self._advance(msg.view, msg.seq)

    def _prepared(self, e: Entry, view: int) -> bool:
        pp = e.pre_prepare
        if pp is None:
            return False
        primary = self.cfg.primary(view)
        n = sum(1 for r, p in e.prepares.items() if p.digest == pp.digest and r != primary)
        return n >= 2 * self.cfg.f

    def _advance(self, view: int, seq: int) -> None:
        """Do whatever (view, seq) now allows: prepare, commit, mark committed."""
        e = self._entries.get((view, seq))
        if e is None or e.pre_prepare is None or view != self.view or not self.active:
            return
        if seq <= self.low:
            return
        pp = e.pre_prepare
        try:
            if self.id != self.cfg.primary(view) and self.id not in e.prepares:
                p = self._sign(Prepare(view, seq, pp.digest, self.id))
                assert isinstance(p, Prepare)
                e.prepares[self.id] = p
                self._send(p)
            if self._prepared(e, view) and self.id not in e.commits:
                c = self._sign(Commit(view, seq, pp.digest, self.id))
                assert isinstance(c, Commit)
                e.commits[self.id] = c
                self._send(c)
        except SigningRefused as exc:
            self._reject(str(exc))
            return
        if seq > self.last_exec and seq not in self._ready and self._prepared(e, view):
            matching = [e.commits[r] for r in sorted(e.commits) if e.commits[r].digest == pp.digest]
            if len(matching) >= self.cfg.quorum:
                self._ready[seq] = CommittedBlock(
                    seq, view, pp.digest, pp.proposal, tuple(matching[: self.cfg.quorum])
                )
                self._execute_ready()

    def _execute_ready(self) -> None:
        while self.last_exec + 1 in self._ready:
            block = self._ready[self.last_exec + 1]
            if not self._execute(block):
                break  # the application cannot apply it yet: retried on the next input
            self._ready.pop(block.seq, None)
        self._maybe_propose()

    def _execute(self, block: CommittedBlock) -> bool:
        """Apply a committed block; False (and nothing changed) when the application cannot
        apply it yet (e.g. a pot validator still fetching its payloads): the block stays
        ready and is retried on the next input (the host resumes the replica when the
        application has what it needed)."""
        try:
            self.app.execute(block.seq, block.proposal)
        except PotError as exc:
            self._ready[block.seq] = block
            self._reject(f"application cannot execute block {block.seq} yet: {exc}")
            return False
        self.last_exec = block.seq
        self._blocks[block.seq] = block
        self._out.committed.append(block)
        self._record("exec", {"block": block.to_dict()})
        self.backoff = 0
        self._rearm_progress()
        self._resend_deadline = None
        if block.seq % self.cfg.checkpoint_interval == 0:
            self._take_checkpoint(block.seq)
        return True

    def _take_checkpoint(self, seq: int) -> None:
        digest = self.app.state_digest()
        self._snapshots[seq] = (digest, self.app.snapshot())
        try:
            cp = self._sign(Checkpoint(seq, digest, self.id))
        except SigningRefused as exc:
            self.diverged = True
            self._reject(str(exc))
            return
        assert isinstance(cp, Checkpoint)
        self._send(cp)
        self._store_checkpoint(cp)
        self._check_stable(seq, digest)

    def _maybe_propose(self) -> None:
        if not self.active or not self.is_primary:
            return
        self.next_seq = max(self.next_seq, self.low + 1)
        while (
            self.next_seq <= self.high
            and self.next_seq <= self.last_exec + self.cfg.max_in_flight
            and self.app.has_pending(self.next_seq, self._now)
        ):
            seq = self.next_seq
            try:
                proposal = self.app.propose(seq, self._now)
            except Exception as exc:  # an application bug must not take the replica down
                self._reject(f"application propose({seq}) failed: {type(exc).__name__}: {exc}")
                return
            if proposal is None:
                return
            e = self._entry(self.view, seq)
            if e.pre_prepare is None:
                try:
                    pp = self._sign(
                        PrePrepare(self.view, seq, proposal_digest(proposal), proposal, self.id)
                    )
                except SigningRefused as exc:
                    self._reject(str(exc))
                    return
                except (EncodingError, RecursionError, ValueError) as exc:
                    self._reject(f"application proposal at {seq} is not JSON: {exc}")
                    return
                assert isinstance(pp, PrePrepare)
                e.pre_prepare = pp
                self._send(pp)
            self.next_seq = seq + 1
            self._advance(self.view, seq)

    # ------------------------------------------------------------------ checkpoints

    def _store_checkpoint(self, cp: Checkpoint) -> bool:
        """Keep a checkpoint: in the window per seq, beyond it only each sender's latest."""
        if cp.seq <= self.high:
            slot = self._checkpoints.setdefault(cp.seq, {})
            if cp.replica in slot:
                return False
            slot[cp.replica] = cp
            return True
        old = self._far_checkpoints.get(cp.replica)
        if old is not None and old.seq >= cp.seq:
            return False
        self._far_checkpoints[cp.replica] = cp
        return True

    def _on_checkpoint(self, cp: Checkpoint) -> None:
        if cp.seq <= self.low:
            return  # old: garbage-collected already
        if cp.seq % self.cfg.checkpoint_interval:
            self._reject("checkpoint: seq is not a checkpoint sequence number")
            return
        if not self.ver.check(cp):
            self._reject("checkpoint: invalid signature")
            return
        if cp.seq <= self.high:
            self._observe(cp)
        if self._store_checkpoint(cp):
            self._record("msg", {"message": cp.to_dict()})
            self._check_stable(cp.seq, cp.digest)

    def _check_stable(self, seq: int, digest: str) -> None:
        if seq <= self.low:
            return
        slot = self._checkpoints.get(seq, {})
        matching = {r: c for r, c in slot.items() if c.digest == digest}
        for r, c in self._far_checkpoints.items():
            if c.seq == seq and c.digest == digest:
                matching.setdefault(r, c)
        if len(matching) < self.cfg.quorum:
            return
        proof = tuple(matching[r] for r in sorted(matching)[: self.cfg.quorum])
        snap = self._snapshots.get(seq)
        if snap is not None and snap[0] != digest:
            # 2f+1 replicas certify a state we did not reach: our execution diverged (a
            # non-deterministic application). Roll back: adopt the certified state by state
            # transfer and re-execute the later blocks on it.
            self.diverged = True
            self._reject(f"checkpoint {seq}: our state digest differs from the certified one")
            self._ready.update({s: b for s, b in self._blocks.items() if s > seq})
            self._snapshots.pop(seq, None)
            self.last_exec = 0
            snap = None
        self._install_stable(StableCheckpoint(seq, digest, proof, snap[1] if snap else None))

    def _install_stable(self, sc: StableCheckpoint) -> None:
        """Advance the low watermark and garbage-collect everything at or below it."""
        if sc.seq <= self.low:
            return
        self.stable = sc
        h = sc.seq
        self._entries = {k: e for k, e in self._entries.items() if k[1] > h}
        self._ready = {s: b for s, b in self._ready.items() if s > h}
        self._blocks = {s: b for s, b in self._blocks.items() if s > h}
        self._snapshots = {s: v for s, v in self._snapshots.items() if s >= h}
        self._checkpoints = {s: v for s, v in self._checkpoints.items() if s > h}
        self._far_checkpoints = {r: c for r, c in self._far_checkpoints.items() if c.seq > h}
        # move far checkpoints that are now in the window
        for r in sorted(self._far_checkpoints):
            c = self._far_checkpoints[r]
            if c.seq <= self.high:
                self._checkpoints.setdefault(c.seq, {}).setdefault(r, c)
        self._own = {
            k: m
            for k, m in self._own.items()
            if not (k[0] != ViewChange.TYPE and k[2] and k[2] <= h)
        }
        self._seen = {k: m for k, m in self._seen.items() if not (k[3] and k[3] <= h)}
        self._late = {k: m for k, m in self._late.items() if k[3] > h}
        self._future = {k: m for k, m in self._future.items() if k[3] > h}
        self._awaiting = {k: m for k, m in self._awaiting.items() if k[1] > h}
        self._judged_slot = {k: d for k, d in self._judged_slot.items() if k[1] > h}
        self._compact = True
        if self.last_exec < h:
            if sc.snapshot is not None:
                self._adopt_snapshot(sc)
            else:
                self._request_state(force=True)
        self._maybe_propose()

    def _adopt_snapshot(self, sc: StableCheckpoint) -> None:
        self.app.restore(sc.snapshot)
        self.last_exec = sc.seq
        self._snapshots[sc.seq] = (sc.digest, sc.snapshot)
        self._ready = {s: b for s, b in self._ready.items() if s > sc.seq}
        self.stats["state_transfers"] += 1
        self._compact = True
        self._execute_ready()

    # ------------------------------------------------------------------ state transfer

    def _request_state(self, force: bool = False) -> None:
        if not force and self._now < self._fetch_after:
            return
        self._fetch_after = self._now + self.cfg.resend_interval
        # signed (not logged: a request commits to nothing), so a reply goes only to a replica
        # that asked for it and the replier's rate limit counts the real requester
        self._send(sign(self.identity, self.cfg.chain_id, FetchState(self.last_exec + 1, self.id)))

    def _on_fetch_state(self, fs: FetchState) -> None:
        last = self._served.get(fs.replica)
        if (
            last is not None
            and fs.from_seq <= last[1]
            and self._now - last[0] < (self.cfg.resend_interval // 2)
        ):
            # rate limit: one answer per requester per half resend interval, unless it asks
            # from further on (a replayed older request cannot use up the real one's slot)
            return
        if not self.ver.check(fs):
            self._reject("fetch-state: invalid signature")
            return
        checkpoint = None
        start = fs.from_seq
        if fs.from_seq <= self.low:
            if self.stable.snapshot is None or self.low == 0 or self.last_exec < self.low:
                return
            checkpoint = self.stable
            start = self.low + 1
        # bounded reply: at most MAX_STATE_BLOCKS blocks and MAX_MESSAGE_BYTES in all (a
        # checkpoint with a large snapshot leaves room for fewer blocks; the requester asks
        # again from where the reply ends)
        budget = MAX_MESSAGE_BYTES - 1024 - (checkpoint.wire_size if checkpoint else 0)
        picked: list[CommittedBlock] = []
        for s in range(start, min(self.last_exec, start + MAX_STATE_BLOCKS - 1) + 1):
            block = self._blocks.get(s)
            if block is None:
                break
            budget -= block.wire_size + 16
            if budget < 0:
                break
            picked.append(block)
        blocks = tuple(picked)
        if checkpoint is None and not blocks:
            return
        self._served[fs.replica] = (self._now, fs.from_seq)
        self._send(StateReply(checkpoint, blocks, self.id), fs.replica)

    def _on_state_reply(self, sr: StateReply) -> None:
        sc = sr.checkpoint
        if sc is not None and sc.seq > self.last_exec:
            if sc.snapshot is None or not valid_checkpoint_proof(
                sc.seq, sc.digest, sc.proof, self.cfg, self.ver
            ):
                self._reject("state-reply: checkpoint proof invalid")
                return
            try:
                ok = self.app.snapshot_digest(sc.snapshot) == sc.digest
            except Exception:
                ok = False
            if not ok:
                self._reject("state-reply: snapshot does not match the certified digest")
                return
            if sc.seq > self.low:
                self._install_stable(sc)
            elif sc.seq == self.low:
                self.stable = sc
                self._adopt_snapshot(sc)
        for block in sorted(sr.blocks, key=lambda b: b.seq):
            if block.seq != self.last_exec + 1:
                continue
            if block.seq > self.high + MAX_STATE_BLOCKS:
                # past what a state transfer may run ahead of the stable checkpoint (bounded
                # memory: an unsolicited stream of old certified blocks cannot grow our
                # state); the next stable checkpoint moves the window on
                break
            if not valid_commit_certificate(block, self.cfg, self.ver):
                self._reject(f"state-reply: block {block.seq} has an invalid commit certificate")
                return
            if not self._execute(block):
                break
            self._ready.pop(block.seq, None)
            self._execute_ready()

    # ------------------------------------------------------------------ view change

    def _prepared_certs(self) -> tuple[PreparedCert, ...]:
        """P: for each seq above the stable checkpoint, the prepared certificate of the highest
        view in which it prepared here."""
        best: dict[int, tuple[int, Entry]] = {}
        for view, seq in sorted(self._entries):
            if seq <= self.low:
                continue
            e = self._entries[(view, seq)]
            if self._prepared(e, view):
                best[seq] = (view, e)
        certs = []
        for seq in sorted(best):
            view, e = best[seq]
            pp = e.pre_prepare
            assert pp is not None
            primary = self.cfg.primary(view)
            prepares = [
                e.prepares[r]
                for r in sorted(e.prepares)
                if r != primary and e.prepares[r].digest == pp.digest
            ][: 2 * self.cfg.f]
            certs.append(PreparedCert(pp, tuple(prepares)))
        return tuple(certs)

    def _start_view_change(self, new_view: int) -> None:
        if new_view <= self.view:
            return
        self.view = new_view
        self.active = False
        self.stats["view_changes"] += 1
        self._progress_deadline = None
        self._primary_heard = None
        self._vc_deadline = None
        self._record("view", self._view_record())
        try:
            vc = self._sign(
                ViewChange(
                    new_view,
                    self.stable.seq,
                    self.stable.proof,
                    self._prepared_certs(),
                    self.id,
                )
            )
        except SigningRefused as exc:  # pragma: no cover - VC re-use never conflicts
            self._reject(str(exc))
            return
        assert isinstance(vc, ViewChange)
        self._vcs.setdefault(new_view, {})[self.id] = vc
        self._send(vc)
        self._resend_deadline = self._now + self.cfg.resend_interval
        self._future = {k: m for k, m in self._future.items() if k[2] >= new_view}
        self._awaiting = {}
        self._judged_slot = {}
        self._prune_vcs()
        self._check_vc_quorum(new_view)

    def _view_record(self) -> dict[str, Any]:
        return {"view": self.view, "active": self.active, "backoff": self.backoff}

    def _prune_vcs(self) -> None:
        """Forget what belongs to views below the current one (bounded memory). Of the log
        entries of older views only, per sequence number, the one of the highest view in which
        it prepared here is kept (the P of a later view-change); our own normal-case messages
        of older views go with their entries (we never sign for a view we left again)."""
        best: dict[int, int] = {}
        for (view, seq), e in self._entries.items():
            if view < self.view and view > best.get(seq, -1) and self._prepared(e, view):
                best[seq] = view
        self._entries = {
            k: e for k, e in self._entries.items() if k[0] >= self.view or best.get(k[1]) == k[0]
        }
        self._own = {
            k: m
            for k, m in self._own.items()
            if k[0] not in (PrePrepare.TYPE, Prepare.TYPE, Commit.TYPE)
            or k[1] >= self.view
            or best.get(k[2]) == k[1]
        }
        self._seen = {
            k: m for k, m in self._seen.items() if k[1] == Checkpoint.TYPE or k[2] >= self.view
        }
        self._late = {k: m for k, m in self._late.items() if k[2] >= self.view}
        self._vcs = {v: d for v, d in self._vcs.items() if v >= self.view}
        self._new_views = {v: nv for v, nv in self._new_views.items() if v >= self.view}
        self._own = {
            k: m
            for k, m in self._own.items()
            if k[0] not in (ViewChange.TYPE, NewView.TYPE) or k[1] >= self.view
        }

    def _timeout(self) -> int:
        return self.cfg.view_change_timeout * 2 ** min(self.backoff, self.cfg.max_backoff_exp)

    def _on_view_change(self, vc: ViewChange) -> None:
        if vc.new_view < self.view or (vc.new_view == self.view and self.active):
            self._answer_lagging(vc)
            return
        if vc.new_view > self.view + VC_KEEP_AHEAD:
            # far ahead: only a hint for the join rule (which view that replica claims to be
            # in); its signature is enough for that, and nothing of it is kept but the hint
            if self._vc_hint.get(vc.replica, 0) >= vc.new_view:
                return
            if not self.ver.check(vc):
                self._reject(f"view-change from {vc.replica}: invalid signature")
                return
            self._vc_hint[vc.replica] = vc.new_view
        else:
            old = self._vcs.get(vc.new_view, {}).get(vc.replica)
            if old is not None and old.sig == vc.sig:
                return  # a retransmission of what we hold
            if not valid_view_change(vc, self.cfg, self.ver):
                self._reject(f"view-change from {vc.replica}: invalid")
                return
            self._observe(vc)
            if vc.new_view > self._vc_hint.get(vc.replica, 0):
                self._vc_hint[vc.replica] = vc.new_view
            if old is None:
                self._vcs.setdefault(vc.new_view, {})[vc.replica] = vc
                self._record("msg", {"message": vc.to_dict()})
        # join rule: f+1 replicas are in views above ours
        ahead = sorted((v for v in self._vc_hint.values() if v > self.view), reverse=True)
        if len(ahead) >= self.cfg.f + 1:
            self._start_view_change(ahead[self.cfg.f])
        self._check_vc_quorum(self.view)

    def _answer_lagging(self, vc: ViewChange) -> None:
        """A replica is still trying to reach a view we have already passed (or the view we are
        active in): help it up, because PBFT's liveness needs every view-change to reach every
        replica and its sender may never send the one the laggard misses again.

        Active with the new-view of our view: send that NEW-VIEW (signed by its primary, any
        replica may relay it); the laggard enters our view at once. Otherwise (we are in a view
        change ourselves): relay the 2f+1 signed VIEW-CHANGEs of the highest view we hold a
        quorum for, if that view is not below the laggard's; it then joins that view (f+1 rule)
        with a quorum, which arms its timer. The request is authenticated first and answered at
        most once per half resend interval per replica, so nobody can use us as an amplifier
        towards a third party, and one replica's requests cost us bounded traffic."""
        last = self._answered.get(vc.replica)
        if last is not None and self._now - last < self.cfg.resend_interval // 2:
            return
        if not self.ver.check(vc):
            self._reject(f"view-change from {vc.replica}: invalid signature")
            return
        nv = self._new_views.get(self.view) if self.active else None
        sends: list[Message]
        if nv is not None:
            sends = [nv]
        elif self._vc_proof and self._vc_proof[0].new_view >= vc.new_view:
            sends = [m for m in self._vc_proof if m.replica != vc.replica]
        else:
            return
        self._answered[vc.replica] = self._now
        for m in sends:
            self._send(m, vc.replica)

    def _keep_vc_proof(self, view_changes: tuple[ViewChange, ...]) -> None:
        """Remember a quorum of view-changes for one view if it is the highest seen so far."""
        view = view_changes[0].new_view
        if not self._vc_proof or view > self._vc_proof[0].new_view:
            self._vc_proof = view_changes

    def _check_vc_quorum(self, view: int) -> None:
        if view != self.view or self.active:
            return
        vcs = self._vcs.get(view, {})
        if len(vcs) < self.cfg.quorum:
            return
        self._keep_vc_proof(tuple(vcs[r] for r in sorted(vcs)))
        if self._vc_deadline is None:
            self._vc_deadline = self._now + self._timeout()
        if self.cfg.primary(view) == self.id and view not in self._new_views:
            self._send_new_view(view, vcs)

    def _send_new_view(self, view: int, vcs: dict[int, ViewChange]) -> None:
        chosen = select_view_changes(vcs, self.cfg)
        plan = compute_new_view(chosen)
        try:
            pps = []
            for seq, digest, proposal in plan.entries:
                pp = self._sign(PrePrepare(view, seq, digest, proposal, self.id))
                assert isinstance(pp, PrePrepare)
                pps.append(pp)
            nv = self._sign(NewView(view, tuple(chosen), tuple(pps), self.id))
        except SigningRefused as exc:
            self._reject(str(exc))
            return
        assert isinstance(nv, NewView)
        self._send(nv)
        self._enter_view(nv, plan.min_s, plan.checkpoint_digest, plan.checkpoint_proof, plan.max_s)

    def _on_new_view(self, nv: NewView) -> None:
        if nv.view < self.view or (nv.view == self.view and self.active):
            return
        result = check_new_view(nv, self.cfg, self.ver)
        if isinstance(result, str):
            self._reject(result)
            return
        self._observe(nv)
        self._record("msg", {"message": nv.to_dict()})
        self._enter_view(
            nv, result.min_s, result.checkpoint_digest, result.checkpoint_proof, result.max_s
        )

    def _enter_view(
        self,
        nv: NewView,
        min_s: int,
        cp_digest: str | None,
        cp_proof: tuple[Checkpoint, ...],
        max_s: int,
    ) -> None:
        self.view = nv.view
        self.active = True
        self._vc_deadline = None
        self._progress_deadline = None
        self._primary_heard = self._now
        self._new_views[nv.view] = nv
        self._keep_vc_proof(nv.view_changes)
        self._record("view", self._view_record())
        self._prune_vcs()
        self._compact = True  # the log would otherwise keep every view since the checkpoint
        if min_s > self.low and cp_digest is not None:
            snap = self._snapshots.get(min_s)
            snapshot = snap[1] if snap is not None and snap[0] == cp_digest else None
            self._install_stable(StableCheckpoint(min_s, cp_digest, cp_proof, snapshot))
        for pp in nv.pre_prepares:
            if pp.seq > self.low:
                self._entry(pp.view, pp.seq).pre_prepare = pp
        self.next_seq = max(max_s, self.low) + 1
        for pp in nv.pre_prepares:
            self._advance(pp.view, pp.seq)
        future, self._future = self._future, {}
        for key in sorted(future, key=lambda k: (k[2], k[3], k[1] != PrePrepare.TYPE, k[0])):
            if key[2] == self.view:
                self._handle(future[key])
            elif key[2] > self.view:
                self._future[key] = future[key]
        self._execute_ready()

    # ------------------------------------------------------------------ timers

    def _pending(self) -> bool:
        if self.app.has_pending(self.last_exec + 1, self._now):
            return True
        return any(
            v == self.view and s > self.last_exec and e.pre_prepare is not None
            for (v, s), e in self._entries.items()
        )

    def _rearm_progress(self) -> None:
        """A block executed: move the progress deadline forward, but only to ``timeout`` after
        the last time this replica saw the primary do new work (``_primary_heard``), not to a
        full ``timeout`` after this execution. Blocks already in flight when a primary crashes
        still execute up to a few message delays after the crash; restarting the full timeout
        there would delay the view change by that much. The new deadline is never later than
        the old rule's (now + timeout), so a primary that sends new pre-prepares but lets nothing
        execute is replaced no later than before, and not earlier than the deadline already
        armed unless that one is later than the old rule's (backoff resets on execution)."""
        if self._progress_deadline is None or self._primary_heard is None or self.is_primary:
            self._progress_deadline = None  # re-armed at now + timeout if work is pending
            return
        limit = self._now + self._timeout()
        heard = min(self._now, self._primary_heard) + self._timeout()
        self._progress_deadline = min(limit, max(self._progress_deadline, heard))

    def _update_timers(self) -> None:
        if self.active:
            if self._pending():
                if self._progress_deadline is None:
                    self._progress_deadline = self._now + self._timeout()
                if self._resend_deadline is None:
                    self._resend_deadline = self._now + self.cfg.resend_interval
            else:
                self._progress_deadline = None
                self._resend_deadline = None
        else:
            self._progress_deadline = None
            if self._resend_deadline is None:
                self._resend_deadline = self._now + self.cfg.resend_interval

    def _retransmit(self) -> None:
        """Re-send what peers may have lost: our view-change while in one, else our messages of
        the current view, the new-view we issued, our latest checkpoint; and ask for state when
        behind. While active this runs when work is pending and nothing executed for
        ``resend_interval``: lost normal-case messages are repaired without a view change when
        the primary is fine (the view-change timer keeps running meanwhile)."""
        if not self.active:
            vc = self._vcs.get(self.view, {}).get(self.id)
            if vc is not None:
                self._send(vc)
            self._resend_deadline = self._now + self.cfg.resend_interval
            if self.app.has_pending(self.last_exec + 1, self._now):
                self._request_state()  # others may have moved on without us
        else:
            nv = self._new_views.get(self.view)
            if nv is not None and nv.replica == self.id:
                self._send(nv)
            for view, seq in sorted(self._entries):
                if view != self.view:
                    continue
                e = self._entries[(view, seq)]
                for m in (e.pre_prepare, e.prepares.get(self.id), e.commits.get(self.id)):
                    if m is not None and m.sender == self.id:
                        self._send(m)
            if self._pending():
                self._request_state()  # rate-limited: catch up on blocks others committed
        own_cps = sorted(s for s, slot in self._checkpoints.items() if self.id in slot)
        if own_cps:
            self._send(self._checkpoints[own_cps[-1]][self.id])
        if self.last_exec < self.low:
            self._request_state(force=True)

    # ------------------------------------------------------------------ persistence

    def dump_records(self) -> list[dict[str, Any]]:
        """The minimal log that rebuilds the current state (written when the log compacts)."""
        recs: list[dict[str, Any]] = [{"kind": "view", **self._view_record()}]
        if self.stable.seq > 0:
            recs.append({"kind": "stable", "checkpoint": self.stable.to_dict()})
        msgs: list[SignedMessage] = []
        for key in sorted(self._entries):
            e = self._entries[key]
            if e.pre_prepare is not None:
                msgs.append(e.pre_prepare)
            msgs.extend(e.prepares[r] for r in sorted(e.prepares))
            msgs.extend(e.commits[r] for r in sorted(e.commits))
        for seq in sorted(self._checkpoints):
            slot = self._checkpoints[seq]
            msgs.extend(slot[r] for r in sorted(slot))
        msgs.extend(self._far_checkpoints[r] for r in sorted(self._far_checkpoints))
        for view in sorted(self._vcs):
            slot_vc = self._vcs[view]
            msgs.extend(slot_vc[r] for r in sorted(slot_vc))
        for view in sorted(self._new_views):
            msgs.append(self._new_views[view])
        msgs.extend(self._vc_proof)
        # every message this replica signed and may still need (the write-ahead contract: the
        # last-signed guard must know it after a restart), e.g. an own checkpoint above the
        # window that is no longer its latest
        msgs.extend(self._own[k] for k in sorted(self._own))
        unique: dict[bytes, SignedMessage] = {}
        for m in msgs:
            unique.setdefault(m.sig, m)
        recs.extend({"kind": "msg", "message": m.to_dict()} for m in unique.values())
        recs.extend(
            {"kind": "exec", "block": self._blocks[s].to_dict()}
            for s in sorted(self._blocks)
            if s > self.stable.seq
        )
        recs.extend({"kind": "evidence", "evidence": ev.to_dict()} for ev in self.evidence)
        return recs

    @classmethod
    def restore(
        cls,
        config: ReplicaConfig,
        replica_id: int,
        identity: Identity,
        app: Application,
        records: list[dict[str, Any]],
        verifier: Verifier | None = None,
    ) -> Replica:
        """Rebuild a replica from its write-ahead log (``app`` must be fresh, at genesis).

        Raises :class:`WalCorruptError` when a record cannot be understood or replay is
        inconsistent: the replica refuses to start rather than diverge silently.
        """
        r = cls(config, replica_id, identity, app, verifier)
        i = 0
        try:
            for i, rec in enumerate(records):  # noqa: B007
                r._replay(rec)
            i = len(records)
            r._finish_replay()
        except WalCorruptError:
            raise
        except (MessageError, PotError, KeyError, TypeError, ValueError, AssertionError) as exc:
            where = f"record {i + 1} of {len(records)}" if i < len(records) else "replay"
            raise WalCorruptError(
                f"consensus log {where} cannot be replayed ({exc}); refusing to start. "
                "Move the log aside to resynchronise from the other validators by state transfer."
            ) from None
        return r

    def _replay(self, rec: dict[str, Any]) -> None:
        kind = rec["kind"]
        if kind == "view":
            view, active, backoff = rec["view"], rec["active"], rec["backoff"]
            if (
                not isinstance(view, int)
                or not isinstance(active, bool)
                or not isinstance(backoff, int)
            ):
                raise ValueError("bad view record")
            self.view, self.active, self.backoff = view, active, backoff
        elif kind == "stable":
            sc = parse_stable_checkpoint(rec["checkpoint"])
            if sc.seq > self.low:
                self.stable = sc
                h = sc.seq
                self._entries = {k: e for k, e in self._entries.items() if k[1] > h}
                self._blocks = {s: b for s, b in self._blocks.items() if s > h}
                self._checkpoints = {s: v for s, v in self._checkpoints.items() if s > h}
        elif kind == "exec":
            block = parse_committed_block(rec["block"])
            if block.seq > self.low:
                self._blocks[block.seq] = block
        elif kind == "evidence":
            d = rec["evidence"]
            first, second = parse_message(d["first"]), parse_message(d["second"])
            assert not isinstance(first, FetchState | StateReply)
            assert not isinstance(second, FetchState | StateReply)
            key = (int(d["replica"]), str(d["phase"]), int(d["view"]), int(d["seq"]))
            self._evidence[key] = Evidence(*key, first, second)
        elif kind == "msg":
            msg = parse_message(rec["message"])
            assert not isinstance(msg, FetchState | StateReply)
            self._store(msg)
        else:
            raise ValueError(f"unknown record kind {kind!r}")

    def _store(self, msg: SignedMessage) -> None:
        """Install a logged message without re-checking it (it was checked before logging)."""
        if msg.sender == self.id:
            self._own[conflict_key(msg)] = msg
        if isinstance(msg, PrePrepare):
            if msg.seq > self.low:
                self._entry(msg.view, msg.seq).pre_prepare = msg
        elif isinstance(msg, Prepare):
            if msg.seq > self.low:
                self._entry(msg.view, msg.seq).prepares.setdefault(msg.replica, msg)
        elif isinstance(msg, Commit):
            if msg.seq > self.low:
                self._entry(msg.view, msg.seq).commits.setdefault(msg.replica, msg)
        elif isinstance(msg, Checkpoint):
            if msg.seq > self.low:
                self._store_checkpoint(msg)
        elif isinstance(msg, ViewChange):
            self._vcs.setdefault(msg.new_view, {}).setdefault(msg.replica, msg)
            self._vc_hint[msg.replica] = max(self._vc_hint.get(msg.replica, 0), msg.new_view)
        else:
            self._new_views[msg.view] = msg
            for pp in msg.pre_prepares:
                if pp.seq > self.low:
                    self._entry(pp.view, pp.seq).pre_prepare = pp
                    if pp.replica == self.id:
                        self._own[conflict_key(pp)] = pp

    def _finish_replay(self) -> None:
        """Rebuild the application state: the stable snapshot, then the logged blocks."""
        if self.stable.seq > 0:
            if self.stable.snapshot is not None:
                self.app.restore(self.stable.snapshot)
                self.last_exec = self.stable.seq
                self._snapshots[self.stable.seq] = (self.stable.digest, self.stable.snapshot)
            else:
                self.last_exec = 0  # behind the stable checkpoint: state transfer on start
        for seq in sorted(self._blocks):
            if seq != self.last_exec + 1:
                break
            block = self._blocks[seq]
            try:
                self.app.execute(seq, block.proposal)
            except PotError:
                break  # cannot apply it yet (e.g. payloads to fetch): kept ready below
            self.last_exec = seq
            if seq % self.cfg.checkpoint_interval == 0:
                digest = self.app.state_digest()
                self._snapshots[seq] = (digest, self.app.snapshot())
                own = self._own.get((Checkpoint.TYPE, 0, seq))
                if isinstance(own, Checkpoint) and own.digest != digest:
                    raise WalCorruptError(
                        f"consensus log replay reached state {digest[:12]} at {seq} but the log "
                        f"says {own.digest[:12]}; refusing to start"
                    )
        # logged blocks the application could not apply yet wait, ready, for the next input
        self._ready = {s: b for s, b in self._blocks.items() if s > self.last_exec}
        self._blocks = {s: b for s, b in self._blocks.items() if s <= self.last_exec}
        quorums = [tuple(slot[r] for r in sorted(slot)) for slot in self._vcs.values()]
        quorums.extend(nv.view_changes for nv in self._new_views.values())
        for view_changes in sorted(quorums, key=lambda q: q[0].new_view if q else -1):
            if len(view_changes) >= self.cfg.quorum:
                self._keep_vc_proof(view_changes)
        # a log not compacted since several view changes holds their entries: keep what the
        # live replica would (bounded memory after a restart too)
        self._prune_vcs()
        own_pp = [k[2] for k in self._own if k[0] == PrePrepare.TYPE and k[1] == self.view]
        self.next_seq = max([self.low + 1, self.last_exec + 1, *(s + 1 for s in own_pp)])
