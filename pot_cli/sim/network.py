"""``pot sim network``: the whole protocol in one process, on a seeded virtual network.

Validators are :class:`~pot_cli.protocol.app.PotApp` inside :class:`ReplicaHost` (the loop a
``pot validate`` node runs), exchanging PBFT messages as JSON text; miners read the open round
from a validator, compute their assigned gradient (honest) or forge one
(:mod:`pot_cli.sim.attacks`), sign the commitment and send it to every validator, re-sending
twice while the round is open (as a rig's miner retries). Validators fetch missing payloads
and miners' keys from each other. Everything random comes from one ``random.Random`` seeded by
(seed, fault), so a run replays exactly with the printed command.

Faults, during the chaos phase ``[0, chaos_until)`` (the network heals afterwards):

* ``none``: delays only; ``drop``: 10-30 % of messages (PBFT and submissions) lost;
  ``partition``: random two-sided partitions of the validators, some longer than the
  view-change timeout;
* ``crash``: a validator crashes and restarts from its write-ahead log and payload store;
* ``silent-validator``: f validators, chosen at random (the first primary may be one), never
  send anything (they still receive);
* ``withholding-primary``: validator 0 (the first primary) leaves one honest miner's
  submission out of its round: honest backups that saw it in time refuse the block, a view
  change follows and the submission is in the block finally committed;
* ``colluding-primary``: validator 0 colludes with the forgers: it re-computes nothing and
  flags nothing, so its blocks accept every forgery; honest backups re-derive, refuse, and
  the next primary's block slashes the forgers.
* ``steering-primary``: validator 0 colludes with forgers that only a re-compute catches
  (``lazy``, every round) and steers what it can: it derives honestly but proposes only when
  the beacon leaves every colluding forger out of the sample, and stalls otherwise (a view
  change follows; a withheld reveal would only make the round a full check). Measured: how
  often a forgery escapes, against the sample rate (issue 12: at most ``1 - rate + 0.02``).
* ``band-aiming``: one Byzantine miner computes its honest gradient and the other submits a
  copy of it rotated to a chosen cosine around the copy threshold (from 3 bands below to 1
  above): within the re-compute margin (2 bands) it must always be re-computed and slashed,
  whatever the sample (a violation otherwise).

Invariants: agreement (no two honest validators commit different blocks at a height),
execution never fails (ledger conservation and no negative balance are checked by every
``execute``), no honest miner is ever slashed or rejected for anything but lateness, every
committed model hash is re-derived by a fresh application replaying the chain, and liveness:
after the heal every honest validator commits all rounds within a bound.
"""

from __future__ import annotations

import heapq
import json
import random
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import torch

from pot_cli.consensus.config import ReplicaConfig
from pot_cli.consensus.host import ReplicaHost
from pot_cli.consensus.messages import CommittedBlock, proposal_digest
from pot_cli.consensus.replica import Output, Replica
from pot_cli.consensus.wal import MemoryWal
from pot_cli.crypto import Identity, sha256
from pot_cli.errors import PotError, UsageError
from pot_cli.node.chainstore import ChainStore
from pot_cli.node.pothost import route_actions, settle, take_beacon
from pot_cli.protocol.app import PotApp, RoundInfo, parse_proposal
from pot_cli.protocol.beacon import BeaconMessage, onion_commit
from pot_cli.protocol.commitments import sign_commitment
from pot_cli.protocol.genesis import Genesis, parse_genesis
from pot_cli.protocol.round import (
    RelaySubmission,
    SubmissionRefused,
)
from pot_cli.sim.attacks import ATTACKS, ForgeContext, forge
from pot_cli.training.assignment import assign_batch
from pot_cli.training.codec import Compression, encode_gradient
from pot_cli.training.gradients import Numerics, compute_gradient
from pot_cli.training.tasks import Task, load_task
from pot_cli.training.verification import VerificationPolicy

FAULTS = (
    "none",
    "drop",
    "partition",
    "crash",
    "silent-validator",
    "withholding-primary",
    "colluding-primary",
    "steering-primary",
    "band-aiming",
)
# attacks a Byzantine miner plays in rotation (each is caught by a re-compute when sampled)
MINER_ATTACKS = tuple(a for a in ATTACKS if a not in ("copy", "copy-perturbed"))
CHAIN = "pot-simnet"
STAKE = 10_000


@dataclass(frozen=True)
class NetworkConfig:
    seed: int
    fault: str = "none"
    validators: int = 4
    miners: int = 6
    byzantine: int = 2
    rounds: int = 3
    task: str = "tiny"
    round_time: int = 300
    min_delay: int = 1
    max_delay: int = 10
    chaos_until: int = 1200
    timeout: int = 1000
    resend: int = 200
    spot_check_rate: float = 0.5
    # cut the last validator off from the others until then (it must catch up by state
    # transfer, the model's tensors fetched as blobs): 0 = never
    isolate_until: int = 0

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise UsageError(f"unknown fault {self.fault!r} (one of: {', '.join(FAULTS)})")
        if self.validators < 4 or self.miners < 1 or not 0 <= self.byzantine < self.miners:
            raise UsageError("need >= 4 validators, >= 1 miner and byzantine < miners")
        if self.rounds < 1:
            raise UsageError("rounds must be >= 1")

    @property
    def f(self) -> int:
        return (self.validators - 1) // 3

    @property
    def liveness_bound(self) -> int:
        """Virtual time after the heal for every round: rounds, view changes at a capped
        backoff, and the rounds themselves."""
        return self.rounds * (self.round_time + 2 * (self.f + 2) * self.timeout * 4)

    def replay_command(self) -> str:
        cmd = f"pot sim network --seed {self.seed} --fault {self.fault}"
        if self.rounds != NetworkConfig.rounds:
            cmd += f" --rounds {self.rounds}"
        if self.task != NetworkConfig.task:
            cmd += f" --task {self.task}"
        return cmd


@dataclass
class NetworkResult:
    config: NetworkConfig
    ok: bool
    violations: list[str]
    end_time: int
    events: int
    heights: dict[int, int]
    view_changes: int
    slashed: int
    honest_accepted: int
    honest_late: int
    model_hash: str
    cpu_s: float
    state_transfers: int = 0
    # Byzantine miners' submissions that reached verification in committed blocks, and those
    # of them accepted (escaped)
    forged: int = 0
    escaped: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "state_transfers": self.state_transfers,
            "seed": self.config.seed,
            "fault": self.config.fault,
            "ok": self.ok,
            "violations": self.violations,
            "end_time": self.end_time,
            "events": self.events,
            "heights": self.heights,
            "view_changes": self.view_changes,
            "slashed": self.slashed,
            "honest_accepted": self.honest_accepted,
            "honest_late": self.honest_late,
            "forged": self.forged,
            "escaped": self.escaped,
            "model_hash": self.model_hash,
            "cpu_s": round(self.cpu_s, 3),
            "replay": self.config.replay_command(),
        }


class Violation(Exception):
    pass


def _identity(kind: str, seed: int, i: int) -> Identity:
    return Identity.from_seed(sha256(f"pot/simnet/{kind}/{seed}/{i}".encode()))


@dataclass
class Validator:
    index: int
    identity: Identity
    honest: bool
    log: MemoryWal = field(default_factory=MemoryWal)  # durable: survives a crash
    payloads: dict[str, bytes] = field(default_factory=dict)  # durable payload store
    app: PotApp | None = None
    host: ReplicaHost | None = None
    timer_at: int | None = None
    deadline_at: int | None = None
    asked: set[tuple[str, str]] = field(default_factory=set)
    committed: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Submission:
    miner: Identity
    height: int
    model_hash: str
    payload_hash: str
    sig: bytes
    payload: bytes | None  # None: a commitment relayed by a validator (bytes fetched later)


class NetworkSimulation:
    """One seeded run; :meth:`run` returns a :class:`NetworkResult` and never raises on a
    violation."""

    def __init__(self, config: NetworkConfig) -> None:
        self.nc = config
        self.rng = random.Random(f"pot-simnet/{config.seed}/{config.fault}")
        self.task: Task = load_task(config.task)
        self.policy = VerificationPolicy(
            spot_check_rate=config.spot_check_rate, numerics=Numerics(threads=1)
        )
        ids = [_identity("validator", config.seed, i) for i in range(config.validators)]
        self.miners = [_identity("miner", config.seed, i) for i in range(config.miners)]
        self.miner_by_address = {m.address: m for m in self.miners}
        ranked = sorted(self.miners, key=lambda m: m.address)
        self.byzantine = {m.address: i for i, m in enumerate(ranked[: config.byzantine])}
        self.honest_miners = {m.address for m in self.miners} - set(self.byzantine)
        self.beacon_rounds = 4 * config.rounds + 64
        self.genesis = self._genesis(ids)
        self.cfg = ReplicaConfig(
            chain_id=CHAIN,
            public_keys=tuple(i.public_key for i in ids),
            checkpoint_interval=2,
            watermark_window=4,
            view_change_timeout=config.timeout,
            resend_interval=config.resend,
            max_in_flight=1,
        )
        silent: set[int] = set()
        if config.fault == "silent-validator":  # any f of them, the first primary included
            silent = set(self.rng.sample(range(config.validators), config.f))
        byzantine_validators = set(silent)
        if config.fault in ("withholding-primary", "colluding-primary", "steering-primary"):
            byzantine_validators.add(0)
        # band-aiming: (height, miner) -> where the copy was aimed, in bands past the threshold
        self.aims: dict[tuple[int, str], float] = {}
        self.nodes = [
            Validator(i, ids[i], i not in byzantine_validators) for i in range(config.validators)
        ]
        self.silent = silent
        self.victim = sorted(self.honest_miners)[0] if self.honest_miners else ""
        self.queue: list[tuple[int, int, str, Any]] = []
        self._counter = 0
        self.now = 0
        self.events = 0
        self.p_drop = 0.0
        self.partition: list[set[int]] | None = None
        self.decided: dict[int, str] = {}
        self.blocks: dict[int, Any] = {}  # height -> committed proposal
        self.certified: dict[int, CommittedBlock] = {}  # with their commit certificates
        self.miner_rounds: set[int] = set()
        self.violations: list[str] = []

    def _genesis(self, ids: list[Identity]) -> Genesis:
        return parse_genesis(
            {
                "chain_id": CHAIN,
                "task": self.nc.task,
                "model_seed": 0,
                "validators": [
                    {
                        "name": f"v{i}",
                        "public_key": v.public_key.hex(),
                        "beacon_commit": onion_commit(v, CHAIN, self.beacon_rounds),
                    }
                    for i, v in enumerate(ids)
                ],
                "beacon_rounds": self.beacon_rounds,
                "emission_per_round": 10_000,
                "spot_check_bps": round(self.nc.spot_check_rate * 10_000),
                "miner_share_bps": 8000,
                "validator_share_bps": 2000,
                "min_miner_stake": STAKE,
                "forgery_slash": STAKE,
                "malformed_penalty": STAKE // 10,
                "probation_rounds": 0,
                "accounts": [
                    {"address": m.address, "balance": 0, "stake": STAKE} for m in self.miners
                ],
            },
            "simnet genesis",
        )

    # ------------------------------------------------------------------ events

    def _push(self, t: int, kind: str, payload: Any) -> None:
        self._counter += 1
        heapq.heappush(self.queue, (t, self._counter, kind, payload))

    @property
    def healed(self) -> bool:
        return self.now >= self.nc.chaos_until

    def _setup(self) -> None:
        nc, rng = self.nc, self.rng
        if nc.fault == "drop":
            self.p_drop = rng.uniform(0.1, 0.3)
        elif nc.fault == "partition":
            t = rng.randint(20, 150)
            while t < nc.chaos_until - 100:
                self._push(t, "partition", None)
                t += rng.randint(100, 300)
        elif nc.fault == "crash":
            victim = rng.randrange(nc.validators)
            t = rng.randint(50, nc.chaos_until - 200)
            self._push(t, "crash", victim)
            self._push(t + rng.randint(100, 300), "restart", victim)
        if nc.isolate_until:
            last = nc.validators - 1
            self.partition = [set(range(last)), {last}]
            self._push(nc.isolate_until, "unpartition", None)
        self._push(nc.chaos_until, "heal", None)
        for node in self.nodes:
            self._boot(node)
        self._push(1, "miners", 1)

    def run(self) -> NetworkResult:
        started = time.process_time()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the derivation's numerics: one thread, as the policy says
        try:
            self._setup()
            deadline = self.nc.chaos_until + self.nc.liveness_bound
            while self.queue and not self._all_done():
                t, _, kind, payload = heapq.heappop(self.queue)
                if t > deadline:
                    break
                self.now = max(self.now, t)
                self.events += 1
                self._dispatch(kind, payload)
            if not self._all_done():
                heights = {n.index: n.app.height for n in self.nodes if n.app and n.honest}
                raise Violation(
                    f"liveness: honest validators did not all commit {self.nc.rounds} blocks "
                    f"within {self.nc.liveness_bound} after the heal at {self.nc.chaos_until} "
                    f"(heights: {heights})"
                )
            self._check_replay()
        except Violation as exc:
            self.violations.append(str(exc))
        finally:
            torch.set_num_threads(threads)
        return self._result(time.process_time() - started)

    def _all_done(self) -> bool:
        return all(
            n.app is not None and n.app.height >= self.nc.rounds for n in self.nodes if n.honest
        )

    def _dispatch(self, kind: str, payload: Any) -> None:
        if kind == "deliver":
            dst, text = payload
            self._call(self.nodes[dst], lambda h: h.deliver(text, self.now))
        elif kind == "submit":
            dst, sub = payload
            self._submit(self.nodes[dst], sub)
        elif kind == "beacon":
            dst, message = payload
            self._beacon(self.nodes[dst], message)
        elif kind == "fetch":
            dst, src, miner, payload_hash = payload
            self._serve_fetch(self.nodes[dst], src, miner, payload_hash)
        elif kind == "provide":
            dst, miner, key, data = payload
            node = self.nodes[dst]
            if node.app is not None and node.app.provide(miner, key, data, self.now):
                self._after(node)
        elif kind == "tick":
            node = self.nodes[payload]
            if node.host is not None and node.timer_at == self.now:
                node.timer_at = None
                self._call(node, lambda h: h.tick(self.now))
        elif kind == "deadline":
            node = self.nodes[payload]
            if node.app is not None and node.deadline_at == self.now:
                node.deadline_at = None
                self._actions(node, node.app.tick(self.now))
                self._call(node, lambda h: h.tick(self.now))
        elif kind == "re-ask":
            idx, miner, payload_hash, tries = payload
            node = self.nodes[idx]
            node.asked.discard((miner, payload_hash))
            if node.app is not None and node.app.payload(payload_hash) is None and tries < 5:
                self._ask(node, miner, payload_hash, tries + 1)
        elif kind == "miners":
            self._miners_work(payload)
        elif kind == "crash":
            node = self.nodes[payload]
            node.app = node.host = None
            node.timer_at = node.deadline_at = None
        elif kind == "restart":
            node = self.nodes[payload]
            if node.host is None:
                self._boot(node)
        elif kind == "partition":
            ids = list(range(self.nc.validators))
            self.rng.shuffle(ids)
            cut = self.rng.randint(1, len(ids) - 1)
            self.partition = [set(ids[:cut]), set(ids[cut:])]
            # up to beyond the view-change timeout: a primary cut off long enough is replaced
            self._push(self.now + self.rng.randint(50, 2 * self.nc.timeout), "unpartition", None)
        elif kind == "unpartition":
            self.partition = None
        elif kind == "heal":
            self.partition = None
            self.p_drop = 0.0

    # ------------------------------------------------------------------ validators

    def _boot(self, node: Validator) -> None:
        policy = self.policy
        if self.nc.fault == "colluding-primary" and node.index == 0:
            # checks nothing: no sample, no flag, any error within tolerance
            policy = VerificationPolicy(
                spot_check_rate=0.0,
                tolerance=1e9,
                norm_factor=1e9,
                min_cosine=-2.0,
                copy_cosine=2.0,
                numerics=Numerics(threads=1),
            )
        steering = self.nc.fault == "steering-primary" and node.index == 0
        app = (_SteeringApp if steering else PotApp)(
            self.genesis,
            identity=node.identity,
            round_time=self.nc.round_time,
            censor_grace=self.nc.round_time // 4,
            fetch_grace=self.nc.round_time // 3,
            task=self.task,
            policy=policy,
            payload_store=node.payloads,
        )
        if isinstance(app, _SteeringApp):
            app.forgers = frozenset(self.byzantine)
        node.app = app
        node.timer_at = node.deadline_at = None
        node.asked = set()

        def send(to: int | None, msg: Any) -> None:
            if node.index in self.silent:
                return
            text = json.dumps(msg.to_dict())
            for dst in range(self.nc.validators) if to is None else [to]:
                if dst != node.index:
                    self._route(node.index, dst, "deliver", (dst, text))

        def on_output(replica: Replica, out: Output) -> None:
            for block in out.committed:
                if node.honest:
                    self.certified.setdefault(block.seq, block)
                self._committed(node, block.seq, block.proposal)

        try:
            node.host = ReplicaHost(
                self.cfg, node.index, node.identity, app, node.log, send, self.now,
                on_output=on_output,
            )  # fmt: skip
        except PotError as exc:
            raise Violation(f"restart: validator {node.index} cannot restart: {exc}") from None
        self._after(node)

    def _call(self, node: Validator, action: Callable[[ReplicaHost], Any]) -> None:
        if node.host is None:
            return
        try:
            action(node.host)
        except PotError as exc:  # execute refused a committed block: never acceptable
            raise Violation(f"execute: validator {node.index}: {exc}") from None
        self._after(node)

    def _after(self, node: Validator) -> None:
        """Timers, the round's actions, fetches and resumes after any input to a validator."""
        app, host = node.app, node.host
        if app is None or host is None:
            return
        try:  # the node's host contract (node.pothost), on this virtual network
            settle(app, host, self.now, _SimPeers(self, node))
        except PotError as exc:
            raise Violation(f"execute: validator {node.index}: {exc}") from None
        if host.next_timer is not None and host.next_timer != node.timer_at:
            node.timer_at = host.next_timer
            self._push(max(host.next_timer, self.now), "tick", node.index)
        d = app.next_deadline()
        if d is not None and d != node.deadline_at:
            node.deadline_at = d
            self._push(max(d, self.now), "deadline", node.index)

    def _actions(self, node: Validator, actions: list[Any]) -> None:
        route_actions(actions, _SimPeers(self, node))

    def _relay(self, node: Validator, a: RelaySubmission) -> None:
        sub = Submission(
            self.miner_by_address[a.miner], a.height, a.model_hash, a.payload_hash,
            a.commitment_sig, None,
        )  # fmt: skip
        for dst in range(self.nc.validators):
            if dst != node.index:
                self._route(node.index, dst, "submit", (dst, sub))

    def _broadcast_beacon(self, node: Validator, message: Any) -> None:
        for dst in range(self.nc.validators):
            if dst != node.index:
                self._route(node.index, dst, "beacon", (dst, message))

    def _beacon(self, node: Validator, message: Any) -> None:
        """A validator's beacon message reaches ``node``; the current primary is the one its
        replica's view names (the host's knowledge, as on a real node)."""
        if node.app is None or node.host is None:
            return
        try:
            take_beacon(node.app, node.host, self.cfg, message, self.now, lambda: self._after(node))
        except PotError as exc:
            raise Violation(f"execute: validator {node.index}: {exc}") from None

    def _ask(self, node: Validator, miner: str, payload_hash: str, tries: int = 0) -> None:
        if (miner, payload_hash) in node.asked:
            return
        node.asked.add((miner, payload_hash))
        for dst in range(self.nc.validators):
            if dst != node.index:
                self._route(node.index, dst, "fetch", (dst, node.index, miner, payload_hash))
        # asked again later if still missing (the request or the answer may be lost)
        self._push(self.now + self.nc.resend, "re-ask", (node.index, miner, payload_hash, tries))

    def _serve_fetch(self, node: Validator, src: int, miner: str, payload_hash: str) -> None:
        if node.app is None or node.index in self.silent:
            return
        data = node.app.payload(payload_hash)
        key = node.app.miner_key(miner)
        if data is not None or key is not None:
            payload = (src, miner, key or b"", data)
            self._route(node.index, src, "provide", payload)

    def _submit(self, node: Validator, sub: Submission) -> None:
        app = node.app
        if app is None:
            return
        withholds = self.nc.fault == "withholding-primary" and node.index == 0
        if withholds and sub.miner.address == self.victim and sub.height == 1:
            return  # the Byzantine primary leaves this honest submission out of its round
        actions = app.submit(
            sub.miner.address,
            sub.miner.public_key,
            sub.payload_hash,
            sub.sig,
            sub.payload,
            self.now,
            height=sub.height,
            model_hash=sub.model_hash,
        )
        benign = ("late", "wrong-height", "wrong-model", "duplicate")
        for a in actions:
            if not isinstance(a, SubmissionRefused) or a.miner not in self.honest_miners:
                continue
            if a.code not in benign:
                raise Violation(
                    f"intake: validator {node.index} refused honest miner {a.miner[:12]} "
                    f"({a.code}: {a.reason})"
                )
        self._after(node)

    def _committed(self, node: Validator, seq: int, proposal: Any) -> None:
        digest = proposal_digest(proposal)
        if node.honest:
            prev = self.decided.setdefault(seq, digest)
            if prev != digest:
                raise Violation(
                    f"agreement: validator {node.index} committed {digest[:12]} at {seq}, "
                    f"another honest validator {prev[:12]}"
                )
            self.blocks.setdefault(seq, proposal)
            self._check_block(seq, proposal)
        if seq < self.nc.rounds and seq + 1 not in self.miner_rounds:
            self._push(self.now + 1, "miners", seq + 1)

    def _check_block(self, seq: int, proposal: Any) -> None:
        if proposal is None:
            return
        block = parse_proposal(proposal).block
        verdicts = {s.miner: s.verdict for s in block.submissions}
        accomplice = next((a for a, i in self.byzantine.items() if i == 0), "")
        partner_in = accomplice in verdicts and verdicts[accomplice].kind == "accepted"
        for s in block.submissions:
            d = self.aims.get((seq, s.miner))
            if d is not None and d > -1.99 and partner_in and s.verdict.kind == "accepted":
                raise Violation(
                    f"band: a copy aimed {d:+.2f} bands past the copy threshold was accepted "
                    f"in block {seq} (within the re-compute margin it must be re-computed)"
                )
        for s in block.submissions:
            if s.miner not in self.honest_miners:
                continue
            v = s.verdict
            if v.kind == "slashed" or (v.kind == "rejected" and v.code != "late"):
                raise Violation(
                    f"honest miner {s.miner[:12]} got {v.kind} ({v.code}) in block {seq}"
                )

    # ------------------------------------------------------------------ miners

    def _miners_work(self, height: int) -> None:
        source = next(
            (
                n
                for n in self.nodes
                if n.honest and n.app is not None and n.app.height == height - 1
            ),
            None,
        )
        if source is None or source.app is None:
            self._push(self.now + 20, "miners", height)  # nobody is at that round yet
            return
        self.miner_rounds.add(height)
        info = source.app.round_info(self.now)
        subs = [self._work(m, info) for m in self.miners]
        honest_by_addr = {s.miner.address: s for s in subs if s.miner.address in self.honest_miners}
        for attempt in range(3):  # a rig's miner re-sends while the round is open
            for sub in subs:
                for dst in range(self.nc.validators):
                    delay = attempt * self.nc.round_time // 4
                    self._route_later(delay, dst, "submit", (dst, sub))
        # a Byzantine miner also replays an honest miner's exact signed submission: it must
        # not hurt the honest miner
        if self.byzantine and honest_by_addr:
            victim = honest_by_addr[sorted(honest_by_addr)[-1]]
            for dst in range(self.nc.validators):
                self._route_later(self.nc.round_time // 3, dst, "submit", (dst, victim))

    def _work(self, miner: Identity, info: RoundInfo) -> Submission:
        task = self.task
        indices = assign_batch(info.round_seed, miner.address, task.train_size, task.batch_size)
        b = self.byzantine.get(miner.address)
        if b is None:
            grad = compute_gradient(task, dict(info.params), indices, Numerics(threads=1))
            payload = encode_gradient(
                task, grad, model_hash=info.model_hash, height=info.height, numerics="fp32"
            )
        elif self.nc.fault == "band-aiming":
            payload = self._band_aim(miner, b, info)
        else:
            attack = MINER_ATTACKS[(b + info.height) % len(MINER_ATTACKS)]
            if self.nc.fault == "steering-primary":
                attack = "lazy"  # caught by a re-compute only: the sample decides
            ctx = ForgeContext(
                task=task,
                height=info.height,
                model_hash=info.model_hash,
                params=dict(info.params),
                history=[dict(info.params)],
                compression=Compression(),
                indices=indices,
                other_indices=assign_batch(
                    sha256(info.round_seed + b"/other"),
                    miner.address,
                    task.train_size,
                    task.batch_size,
                ),
                others={},
                others_grads={},
                seed=self.nc.seed * 1000 + info.height,
            )
            payload = forge(attack, ctx)
        digest, sig = sign_commitment(miner, CHAIN, info.height, info.model_hash, payload)
        return Submission(miner, info.height, info.model_hash, digest, sig, payload)

    def _band_aim(self, miner: Identity, b: int, info: RoundInfo) -> bytes:
        """Byzantine miner 0 submits its honest gradient; the others submit that gradient
        rotated to a cosine of ``copy_cosine + d * flag_band`` with it, ``d`` drawn in
        [-3, 1] (no work of their own: the re-compute fails)."""
        task = self.task
        accomplice = next(a for a, i in self.byzantine.items() if i == 0)
        idx = assign_batch(info.round_seed, accomplice, task.train_size, task.batch_size)
        grad = compute_gradient(task, dict(info.params), idx, Numerics(threads=1))
        if b != 0:
            flat = torch.cat([grad[n].reshape(-1) for n in task.param_shapes]).double()
            gen = torch.Generator().manual_seed(self.nc.seed * 1000 + info.height * 10 + b)
            noise = torch.randn(flat.shape, generator=gen, dtype=torch.float64)
            unit = flat / flat.norm()
            noise -= (noise @ unit) * unit
            # drawn from the run, height and miner (not the event stream), so that a round's
            # work computed twice is the same submission
            d = random.Random(f"{self.nc.seed}/{info.height}/{b}").uniform(-3.0, 1.0)
            c = self.policy.copy_cosine + d * self.policy.flag_band
            rotated = flat.norm() * (c * unit + (1.0 - c * c) ** 0.5 * noise / noise.norm())
            self.aims[(info.height, miner.address)] = d
            grad, at = {}, 0
            for name, shape in task.param_shapes.items():
                size = int(torch.Size(shape).numel())
                grad[name] = rotated[at : at + size].reshape(shape).float().contiguous()
                at += size
        return encode_gradient(
            task, grad, model_hash=info.model_hash, height=info.height, numerics="fp32"
        )

    # ------------------------------------------------------------------ the network

    def _route(self, src: int, dst: int, kind: str, payload: Any) -> None:
        if not self.healed:
            if self.partition is not None and not any(
                src in g and dst in g for g in self.partition
            ):
                return
            if self.p_drop and self.rng.random() < self.p_drop:
                return
        self._push(self.now + self.rng.randint(self.nc.min_delay, self.nc.max_delay), kind, payload)

    def _route_later(self, delay: int, dst: int, kind: str, payload: Any) -> None:
        """A miner's message (miners are outside the validators' partitions)."""
        if not self.healed and self.p_drop and self.rng.random() < self.p_drop:
            return
        t = self.now + delay + self.rng.randint(self.nc.min_delay, self.nc.max_delay)
        self._push(t, kind, payload)

    # ------------------------------------------------------------------ final checks

    def _check_replay(self) -> None:
        """Every committed model hash is re-derivable: a fresh application executes the chain
        from genesis (payloads from the validators' stores) and ends in the same state."""
        fresh = PotApp(self.genesis, round_time=self.nc.round_time, task=self.task)
        store: MutableMapping[str, bytes] = {}
        for n in self.nodes:
            store.update(n.payloads)
        fresh.payload_store = store
        top = max(self.blocks)
        for seq in range(1, top + 1):
            try:
                fresh.execute(seq, self.blocks[seq])
            except (PotError, KeyError) as exc:
                raise Violation(f"replay: block {seq} does not re-execute: {exc}") from None
        # the validators at the top height (others may be a block behind when the run ends)
        digests = {
            n.app.state_digest()
            for n in self.nodes
            if n.honest and n.app is not None and n.app.height == top
        }
        if digests != {fresh.state_digest()}:
            raise Violation(
                f"replay: a fresh replay of blocks 1..{top} ends in another state than the "
                "honest validators at that height"
            )
        fresh.ledger.check_invariants()

    def save_chain(self, store: ChainStore) -> None:
        """Write the run's chain as a validator keeps it: the genesis, every committed block
        with its commit certificate, the payloads (``pot chain verify`` re-derives it)."""
        store.put_genesis(self.genesis)
        for seq in sorted(self.certified):
            store.put_block(self.certified[seq])
        table = store.payloads
        for node in self.nodes:
            for digest, payload in sorted(node.payloads.items()):
                table[digest] = payload

    def _result(self, cpu: float) -> NetworkResult:
        slashed = accepted = late = forged = escaped = 0
        for proposal in self.blocks.values():
            if proposal is None:
                continue
            for s in parse_proposal(proposal).block.submissions:
                if s.miner in self.byzantine and s.verdict.kind in ("accepted", "slashed"):
                    forged += 1
                    escaped += s.verdict.kind == "accepted"
                if s.verdict.kind == "slashed":
                    slashed += 1
                elif s.miner in self.honest_miners:
                    accepted += s.verdict.kind == "accepted"
                    late += s.verdict.kind == "rejected"
        honest_nodes = [n for n in self.nodes if n.honest and n.host is not None]
        vcs = max((n.host.replica.stats["view_changes"] for n in honest_nodes if n.host), default=0)
        model = next((n.app.model_hash for n in honest_nodes if n.app is not None), "")
        transfers = sum(n.host.replica.stats["state_transfers"] for n in honest_nodes if n.host)
        return NetworkResult(
            config=self.nc,
            ok=not self.violations,
            violations=self.violations,
            end_time=self.now,
            events=self.events,
            heights={n.index: n.app.height for n in self.nodes if n.app is not None},
            view_changes=vcs,
            slashed=slashed,
            honest_accepted=accepted,
            honest_late=late,
            model_hash=model,
            cpu_s=cpu,
            state_transfers=transfers,
            forged=forged,
            escaped=escaped,
        )


def plan_network_seed(seed: int, faults: tuple[str, ...]) -> str:
    return faults[seed % len(faults)]


def run_network_seed(seed: int, fault: str, **overrides: Any) -> NetworkResult:
    return NetworkSimulation(NetworkConfig(seed=seed, fault=fault, **overrides)).run()


class _SimPeers:
    """The node's :class:`~pot_cli.node.pothost.Peers` of one validator, on the virtual
    network."""

    def __init__(self, sim: NetworkSimulation, node: Validator) -> None:
        self.sim, self.node = sim, node

    def fetch(self, miner: str, payload_hash: str) -> None:
        self.sim._ask(self.node, miner, payload_hash)

    def relay(self, relay: RelaySubmission) -> None:
        self.sim._relay(self.node, relay)

    def broadcast_beacon(self, message: BeaconMessage) -> None:
        self.sim._broadcast_beacon(self.node, message.to_dict())


class _SteeringApp(PotApp):
    """Validator 0 of ``steering-primary``: derives honestly, but proposes a block only when it
    accepts every colluding forger in it (the beacon left them out of the sample and no flag
    caught them); otherwise it stalls, hoping a view change draws another sample."""

    forgers: frozenset[str] = frozenset()

    def propose(self, seq: int, now: int) -> Any:
        proposal = super().propose(seq, now)
        if proposal is None:
            return None
        block = parse_proposal(proposal).block
        if any(s.miner in self.forgers and s.verdict.kind == "slashed" for s in block.submissions):
            return None
        return proposal
