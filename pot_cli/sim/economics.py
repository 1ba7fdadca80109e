"""``pot bench economics``: what each kind of miner earns on the real protocol.

Each run is one chain: the four genesis validators' :class:`~pot_cli.protocol.app.PotApp`
(the application every PBFT validator runs) in process, validator 0 the primary of every round
(agreement is ``pot sim network``'s business; the verdicts, rewards and slashes are the
application's). Per round the miners read the round, honest ones compute their assigned
gradient, Byzantine ones play their attack (:mod:`.attacks`), all sign and submit to every
validator; at the deadline the validators exchange their beacon reveals, the primary proposes
and every validator executes the block. Every figure comes from the committed blocks (verdicts,
rewards, penalties) and is checked against the ledger at the end: nothing here re-implements a
rule.

One run per attack: ``round(byzantine_fraction * miners)`` miner slots play it, the others are
honest; plus an all-honest run (the earnings and quality reference) and, per seed, the
centralized baseline of ``pot bench quality`` (:class:`~.baseline.CentralizedTrainer`: the
same model, optimizer, global batch size and rounds without PoT), so quality ratio =
metric(run) / metric(centralized) in the task's sense.

**Sybil re-entry.** Every Byzantine slot has a reserve of identities pre-funded in the genesis
(each with the minimum stake); when its identity is no longer admitted by the ledger (ejected
for a forgery, or its stake below the minimum after a malformed penalty) the next one takes
over. Every identity's rewards and losses count against its kind.

**Money.** Per kind: rewards, slashes (forgery) and penalties (malformed), all in base units;
net = rewards - slashed - penalties; net per round = net / (slots of that kind x rounds), so it
compares with what one honest slot earns per round. The part of it earned and lost on forged
submissions alone (``forged_net``: not the honest rounds of an adaptive cheater on probation,
nor the honest work of a noisy copier's partner) says whether cheating itself pays.

Every call into the app goes through :class:`_Chain` (the protocol's API moves under the
soundness work; this is the one place to adapt).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from pot_cli.crypto import Identity, sha256
from pot_cli.errors import PotError, UsageError
from pot_cli.protocol.app import PotApp, RoundInfo, parse_proposal
from pot_cli.protocol.beacon import onion_commit
from pot_cli.protocol.block import FORGERY_CODES, Block
from pot_cli.protocol.commitments import sign_commitment
from pot_cli.protocol.genesis import BPS, deterrence_floor, parse_genesis
from pot_cli.protocol.ledger import Ledger
from pot_cli.protocol.round import BroadcastBeacon, SubmissionRefused
from pot_cli.sim.attacks import (
    ADAPTIVE,
    ECONOMIC_ATTACKS,
    AdaptiveCheater,
    ForgeContext,
    forge,
)
from pot_cli.sim.baseline import CentralizedTrainer
from pot_cli.training.assignment import assign_batch, round_seed
from pot_cli.training.codec import Compression, encode_gradient
from pot_cli.training.gradients import Gradient, Params, compute_gradient
from pot_cli.training.tasks import Task
from pot_cli.training.verification import VerificationPolicy

HONEST = "honest"
# The attacks the bench plays by default (``--attack all``): those that cost or earn money
# differently. nan / wrong-shape / oversize are refused like garbage (a malformed penalty).
ECONOMICS_ATTACKS = (
    "lazy",
    "stale",
    "wrong-data",
    "sign-flip",
    "noise",
    "scaled",
    "copy",
    "copy-perturbed",
    "zero",
    "garbage",
    *ECONOMIC_ATTACKS,
    ADAPTIVE,
)

# The genesis economics of the bench's chains, as configs/genesis.toml ships them (one place;
# the CLI's defaults read them). The stake and the slash default to at least the genesis'
# deterrence floor at the chosen spot-check rate (a genesis below it is refused).
DECIMALS = 6  # base units per POT: 10**DECIMALS
DEFAULT_EMISSION = 1_000_000  # base units minted per round (1 POT)
DEFAULT_MINER_SHARE_BPS = 8_000
DEFAULT_STAKE = 10_000_000  # min_miner_stake, and every identity's stake
DEFAULT_MALFORMED_PENALTY = 100_000  # capped at the slash
DEFAULT_PROBATION_ROUNDS = 10
DEFAULT_SPOT_CHECK_RATE = 0.1

QUALITY_TARGET = 0.97
HONEST_SUBMISSIONS_TARGET = 10_000
CHAIN_ID = "pot-economics"
ROUND_TIME = 100
HISTORY = 8  # models a Byzantine miner remembers (stale needs 5)


@dataclass(frozen=True)
class EconomicsConfig:
    task: Task
    rounds: int
    miners: int = 8
    byzantine_fraction: float = 0.25
    attacks: tuple[str, ...] = ECONOMICS_ATTACKS
    seeds: tuple[str, ...] = ("0",)
    stake: int | None = None  # None: default_stake(...)
    slash: int | None = None  # None: the stake
    probation_rounds: int = DEFAULT_PROBATION_ROUNDS
    spot_check_rate: float = DEFAULT_SPOT_CHECK_RATE
    emission_per_round: int = DEFAULT_EMISSION
    miner_share_bps: int = DEFAULT_MINER_SHARE_BPS
    reserve: int | None = None  # identities per Byzantine slot (default: rounds + 1)

    def __post_init__(self) -> None:
        if not 0.0 < self.spot_check_rate <= 1.0:
            raise UsageError("the spot-check rate must be in (0, 1]")
        if self.stake is None:
            stake = default_stake(
                self.spot_check_rate, self.emission_per_round, self.miner_share_bps
            )
            object.__setattr__(self, "stake", stake)
        if self.slash is None:
            object.__setattr__(self, "slash", self.stake)
        bad = [a for a in self.attacks if a not in ECONOMICS_ATTACKS]
        if bad or not self.attacks:
            raise UsageError(
                f"unknown attack(s) {bad or self.attacks!r}; one of: {', '.join(ECONOMICS_ATTACKS)}"
            )
        if self.rounds < 1 or self.miners < 2:
            raise UsageError("need rounds >= 1 and miners >= 2")
        if not 1 <= self.byzantine_slots < self.miners:
            raise UsageError(
                f"--byzantine {self.byzantine_fraction} of {self.miners} miners gives "
                f"{self.byzantine_slots} Byzantine slots; need 1 to {self.miners - 1}"
            )
        if self.stake_ < 1 or self.slash_ < 0 or self.probation_rounds < 0:
            raise UsageError("need stake >= 1, slash >= 0 and probation rounds >= 0")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or not all(self.seeds):
            raise UsageError(f"expected distinct non-empty seeds, got {self.seeds!r}")

    @property
    def byzantine_slots(self) -> int:
        return round(self.byzantine_fraction * self.miners)

    @property
    def identities_per_slot(self) -> int:
        # a slot loses at most one identity per round
        return self.reserve if self.reserve is not None else self.rounds + 1

    @property
    def stake_(self) -> int:
        assert self.stake is not None  # set in __post_init__
        return self.stake

    @property
    def slash_(self) -> int:
        assert self.slash is not None  # set in __post_init__
        return self.slash

    @property
    def malformed_penalty(self) -> int:
        return min(DEFAULT_MALFORMED_PENALTY, self.slash_)

    @property
    def spot_check_bps(self) -> int:
        return max(1, round(self.spot_check_rate * BPS))

    @property
    def policy(self) -> VerificationPolicy:
        """The verification thresholds as miners know them (public: the flag-aware attacks
        aim inside them); the validators run the genesis' rate."""
        return VerificationPolicy(spot_check_rate=self.spot_check_bps / BPS)


def default_stake(
    spot_check_rate: float,
    emission: int = DEFAULT_EMISSION,
    miner_share_bps: int = DEFAULT_MINER_SHARE_BPS,
) -> int:
    """The shipped stake, or the genesis' deterrence floor at this rate when that is higher."""
    bps = max(1, round(spot_check_rate * BPS))
    return max(DEFAULT_STAKE, deterrence_floor(emission * miner_share_bps // BPS, bps))


# ----------------------------------------------------------------------------- the chain


def _identity(kind: str, seed: str, *parts: int) -> Identity:
    tail = "/".join(str(p) for p in parts)
    return Identity.from_seed(sha256(f"pot/economics/{kind}/{seed}/{tail}".encode()))


VALIDATORS = 4  # the genesis minimum (3f + 1, f = 1)


@dataclass(frozen=True)
class ChainEconomics:
    """The genesis economics of a bench chain."""

    emission_per_round: int
    miner_share_bps: int
    stake: int
    slash: int
    malformed_penalty: int
    probation_rounds: int
    spot_check_bps: int


class _Chain:
    """The bench's only caller of :class:`PotApp`: the four genesis validators' applications
    in process, each running the genesis' spot-check rate. Every miner submits to all of them;
    validator 0 is the primary of every round: at the deadline it announces the frozen set,
    the backups reveal their beacon layers (their own censorship check decides), and it
    proposes; every app executes the block. No backup re-derives the block (agreement is
    ``pot sim network``'s business), so verification runs once per round, on the primary."""

    def __init__(
        self,
        validators: Sequence[Identity],
        task: Task,
        economics: ChainEconomics,
        miners: Sequence[str],
        rounds: int,
    ) -> None:
        e = economics
        beacon_rounds = rounds + 1
        genesis = parse_genesis(
            {
                "chain_id": CHAIN_ID,
                "task": task.name,
                "model_seed": task.init_seed,
                "validators": [
                    {
                        "name": f"v{i}",
                        "public_key": v.public_key.hex(),
                        "beacon_commit": onion_commit(v, CHAIN_ID, beacon_rounds),
                    }
                    for i, v in enumerate(validators)
                ],
                "beacon_rounds": beacon_rounds,
                "emission_per_round": e.emission_per_round,
                "miner_share_bps": e.miner_share_bps,
                "validator_share_bps": BPS - e.miner_share_bps,
                "min_miner_stake": e.stake,
                "forgery_slash": e.slash,
                "malformed_penalty": e.malformed_penalty,
                "probation_rounds": e.probation_rounds,
                "spot_check_bps": e.spot_check_bps,
                "decimals": DECIMALS,
                "accounts": [{"address": a, "balance": 0, "stake": e.stake} for a in miners],
            },
            "economics genesis",
        )
        self.apps = [
            PotApp(genesis, identity=v, round_time=ROUND_TIME, task=task) for v in validators
        ]
        self.primary = self.apps[0]
        self.now = 0
        self.full_check_rounds = 0  # rounds whose beacon fell back (a reveal missing)
        self._info: RoundInfo | None = None

    @property
    def ledger(self) -> Ledger:
        return self.primary.ledger

    @property
    def params(self) -> Params:
        return self.primary.state.params

    def open_round(self) -> RoundInfo:
        infos = [app.round_info(self.now) for app in self.apps]
        self._info = infos[0]
        return self._info

    def submit(self, miner: Identity, payload: bytes) -> str | None:
        """Sign and submit ``payload`` for the open round to every validator; the primary's
        refusal code, or None."""
        info = self._info
        assert info is not None, "open_round first"
        chain_id = self.primary.genesis.chain_id
        digest, sig = sign_commitment(miner, chain_id, info.height, info.model_hash, payload)
        code = None
        for app in self.apps:
            actions = app.submit(miner.address, miner.public_key, digest, sig, payload, self.now)
            for a in actions:
                if app is self.primary and isinstance(a, SubmissionRefused):
                    code = code or (a.code if a.miner == miner.address else None)
        return code

    def _deliver(self, now: int) -> bool:
        """Hand every queued beacon message to the other validators; True if any moved."""
        moved = False
        for i, app in enumerate(self.apps):
            for action in app.take_actions():
                if isinstance(action, BroadcastBeacon):
                    message = action.message.to_dict()
                    for j, other in enumerate(self.apps):
                        if j != i:
                            other.beacon_message(message, now, 0)
                    moved = True
        return moved

    def close_round(self) -> Block:
        """At the deadline: the primary announces, the backups reveal, the primary proposes;
        every app executes the block. Returns it."""
        info = self._info
        assert info is not None, "open_round first"
        h, now = info.height, info.deadline
        proposal = self.primary.propose(h, now)
        while proposal is None and self._deliver(now):
            proposal = self.primary.propose(h, now)
        if proposal is None:
            raise PotError(f"round {h} could not be proposed: {self.primary.last_invalid}")
        self._deliver(now)
        if any(r is None for r in proposal["reveals"]):
            self.full_check_rounds += 1
        for app in self.apps:
            app.execute(h, proposal)
        self.now = now + 1
        self._info = None
        return parse_proposal(proposal).block


# ----------------------------------------------------------------------------- the miners


@dataclass
class _Slot:
    """One miner seat: honest, or a Byzantine one with its reserve of identities."""

    index: int
    kind: str  # HONEST or the attack of the run
    identities: list[Identity]
    partner: int | None = None  # noisy-copy: the slot whose gradient it copies
    source: bool = False  # noisy-copy: the partner that does the work
    cheater: AdaptiveCheater | None = None
    active: int = 0

    @property
    def identity(self) -> Identity | None:
        return self.identities[self.active] if self.active < len(self.identities) else None

    def play(self) -> str | None:
        """What it plays this round: an attack, or None (honest work)."""
        if self.kind == HONEST or self.source:
            return None
        if self.cheater is not None:
            return self.cheater.choose()
        return self.kind


@dataclass
class Tally:
    """What the miners of one kind did and got (sums over identities, runs and seeds)."""

    slots: int = 0
    slot_rounds: int = 0
    identities: int = 0
    ejected: int = 0
    idle_slot_rounds: int = 0  # a slot whose reserve ran out
    submissions: int = 0
    accepted: int = 0
    rejected: int = 0
    slashed: int = 0
    rewards: int = 0
    slashed_amount: int = 0
    penalty_amount: int = 0
    forged: int = 0  # submissions that were forgeries
    forged_rewards: int = 0  # ... what they earned
    forged_lost: int = 0  # ... and what they cost
    codes: Counter[str] = field(default_factory=Counter)
    plays: Counter[str] = field(default_factory=Counter)

    def add(self, other: Tally) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, Counter):
                mine.update(theirs)
            else:
                setattr(self, f.name, mine + theirs)

    @property
    def net(self) -> int:
        return self.rewards - self.slashed_amount - self.penalty_amount

    @property
    def net_per_round(self) -> float:
        return self.net / self.slot_rounds if self.slot_rounds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "slots": self.slots,
            "slot_rounds": self.slot_rounds,
            "identities": self.identities,
            "ejected": self.ejected,
            "idle_slot_rounds": self.idle_slot_rounds,
            "submissions": self.submissions,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "slashed": self.slashed,
            "rewards": self.rewards,
            "slashed_amount": self.slashed_amount,
            "penalty_amount": self.penalty_amount,
            "net": self.net,
            "net_per_round": self.net_per_round,
            "forged": self.forged,
            "forged_net": self.forged_rewards - self.forged_lost,
            "codes": dict(sorted(self.codes.items())),
            "plays": dict(sorted(self.plays.items())),
        }


@dataclass
class RunResult:
    attack: str  # HONEST for the all-honest run
    seed: str
    metric: float
    seconds: float
    tallies: dict[str, Tally]  # by kind
    full_check_rounds: int  # rounds whose beacon fell back to re-computing everything


def _int_seed(*parts: object) -> int:
    return int.from_bytes(sha256("/".join(str(p) for p in parts).encode())[:4], "big")


class EconomicsRun:
    """One chain: ``attack`` played by the Byzantine slots (none for :data:`HONEST`)."""

    def __init__(self, cfg: EconomicsConfig, attack: str, seed: str) -> None:
        self.cfg, self.attack, self.seed = cfg, attack, seed
        task = cfg.task
        n_byz = 0 if attack == HONEST else cfg.byzantine_slots
        first_byz = cfg.miners - n_byz
        self.slots: list[_Slot] = []
        for i in range(cfg.miners):
            if i < first_byz:
                self.slots.append(_Slot(i, HONEST, [_identity("miner", seed, i, 0)]))
                continue
            ids = [_identity("miner", seed, i, k) for k in range(cfg.identities_per_slot)]
            slot = _Slot(i, attack, ids)
            if attack == ADAPTIVE:
                slot.cheater = AdaptiveCheater(cfg.probation_rounds)
            if attack == "noisy-copy":
                j = i - first_byz
                if j % 2 == 0 and i + 1 < cfg.miners:
                    slot.source = True
                elif j % 2 == 1:
                    slot.partner = i - 1
            self.slots.append(slot)
        self.by_address = {ident.address: s for s in self.slots for ident in s.identities}
        validators = [_identity("validator", seed, v) for v in range(VALIDATORS)]
        economics = ChainEconomics(
            cfg.emission_per_round,
            cfg.miner_share_bps,
            cfg.stake_,
            cfg.slash_,
            cfg.malformed_penalty,
            cfg.probation_rounds,
            cfg.spot_check_bps,
        )
        self.chain = _Chain(validators, task, economics, list(self.by_address), cfg.rounds)
        self.history: list[Params] = []
        self.group_seed = _int_seed("economics-group", seed, attack)
        self.tallies = {s.kind: Tally() for s in self.slots}
        for s in self.slots:
            self.tallies[s.kind].slots += 1
        self.used: set[str] = set()
        self.rewards: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()
        self.height = 0
        self.seconds = 0.0

    # ------------------------------------------------------------------------ one round

    def _honest(self, ident: Identity, info: RoundInfo) -> tuple[bytes, Gradient]:
        task = self.cfg.task
        indices = assign_batch(info.round_seed, ident.address, task.train_size, task.batch_size)
        grad = compute_gradient(task, info.params, indices)
        payload = encode_gradient(
            task, grad, model_hash=info.model_hash, height=info.height, compression=Compression()
        )
        return payload, grad

    def _forge(
        self,
        attack: str,
        slot: _Slot,
        ident: Identity,
        info: RoundInfo,
        published: Mapping[str, bytes],
        grads: Mapping[str, Gradient],
    ) -> bytes:
        task = self.cfg.task
        partner = None
        if slot.partner is not None:
            p = self.slots[slot.partner].identity
            partner = p.address if p is not None else None
        ctx = ForgeContext(
            task=task,
            height=info.height,
            model_hash=info.model_hash,
            params=info.params,
            history=self.history,
            compression=Compression(),
            indices=assign_batch(info.round_seed, ident.address, task.train_size, task.batch_size),
            # a batch nobody is assigned
            other_indices=assign_batch(
                round_seed(f"economics-other/{self.seed}", info.height),
                ident.address,
                task.train_size,
                task.batch_size,
            ),
            others=published,
            others_grads=grads,
            seed=_int_seed("economics-forge", self.seed, self.attack, info.height, ident.address),
            policy=self.cfg.policy,
            partner=partner,
            group_seed=self.group_seed,
        )
        return forge(attack, ctx)

    def run_round(self) -> None:
        t0 = time.perf_counter()
        ledger = self.chain.ledger
        for slot in self.slots:
            while slot.identity is not None and not ledger.admitted(slot.identity.address):
                slot.active += 1  # ejected or under-staked: the next identity takes over
                if slot.cheater is not None:
                    slot.cheater.new_identity()
        info = self.chain.open_round()
        self.history = [*self.history[-(HISTORY - 1) :], info.params]
        plays: dict[str, str | None] = {}
        payloads: dict[str, bytes] = {}
        published: dict[str, bytes] = {}
        grads: dict[str, Gradient] = {}
        active = []
        for slot in self.slots:
            ident = slot.identity
            if ident is None:  # its reserve ran out: a seat that earns nothing
                self.tallies[slot.kind].idle_slot_rounds += 1
                self.tallies[slot.kind].slot_rounds += 1
                continue
            active.append((slot, ident))
            plays[ident.address] = slot.play()
        # honest work first (in slot order): the forgers may look at it (copy, inside-flags)
        for _slot, ident in active:
            if plays[ident.address] is None:
                payloads[ident.address], grads[ident.address] = self._honest(ident, info)
                published[ident.address] = payloads[ident.address]
        for slot, ident in active:
            attack = plays[ident.address]
            if attack is not None:
                payloads[ident.address] = self._forge(attack, slot, ident, info, published, grads)
        refused: dict[str, str] = {}
        for _slot, ident in active:
            self.used.add(ident.address)
            code = self.chain.submit(ident, payloads[ident.address])
            if code is not None:
                refused[ident.address] = code
        block = self.chain.close_round()
        self._tally(block, active, plays, refused)
        self.height += 1
        self.seconds += time.perf_counter() - t0

    def _tally(
        self,
        block: Block,
        active: Sequence[tuple[_Slot, Identity]],
        plays: Mapping[str, str | None],
        refused: Mapping[str, str],
    ) -> None:
        rewards = dict(block.rewards)
        lost: dict[str, int] = {}
        for address, amount, code in block.penalties:
            lost[address] = amount
            t = self.tallies[self.by_address[address].kind]
            if code in FORGERY_CODES:
                t.slashed_amount += amount
            else:
                t.penalty_amount += amount
        records = {r.miner: r for r in block.submissions}
        for slot, ident in active:
            a = ident.address
            t = self.tallies[slot.kind]
            t.slot_rounds += 1
            t.submissions += 1
            t.plays[plays[a] or HONEST] += 1
            rec = records.get(a)
            if rec is None:
                t.rejected += 1
                t.codes[f"refused:{refused.get(a, 'not in the block')}"] += 1
                accepted = False
            else:
                kind = rec.verdict.kind
                accepted = kind == "accepted"
                t.accepted += accepted
                t.rejected += kind == "rejected"
                t.slashed += kind == "slashed"
                if not accepted:
                    # slashes name the check that led to the re-compute (flag or spot check)
                    check = dict(rec.verdict.evidence or ()).get("check")
                    tail = f"/{check}" if check else ""
                    t.codes[f"{kind}:{rec.verdict.code}{tail}"] += 1
            t.rewards += rewards.get(a, 0)
            if plays[a] is not None:
                t.forged += 1
                t.forged_rewards += rewards.get(a, 0)
                t.forged_lost += lost.get(a, 0)
            self.rewards[a] += rewards.get(a, 0)
            self.lost[a] += lost.get(a, 0)
            if slot.cheater is not None:
                slot.cheater.record(plays[a], accepted, rewards.get(a, 0) - lost.get(a, 0))

    # ------------------------------------------------------------------------- the end

    def result(self) -> RunResult:
        """Check the blocks' money against the ledger, count identities, evaluate."""
        ledger = self.chain.ledger
        ledger.check_invariants()
        for address in self.by_address:
            acc = ledger.account(address)
            got = (acc.balance, self.cfg.stake_ - acc.stake)
            if got != (self.rewards[address], self.lost[address]):
                raise PotError(
                    f"economics bench: the ledger disagrees with the blocks for {address}: "
                    f"balance, stake lost {got}, blocks {self.rewards[address]}, "
                    f"{self.lost[address]}"
                )
            if address in self.used:
                t = self.tallies[self.by_address[address].kind]
                t.identities += 1
                t.ejected += acc.ejected
        metric = self.cfg.task.evaluate(self.chain.params)
        return RunResult(
            self.attack, self.seed, metric, self.seconds, self.tallies, self.chain.full_check_rounds
        )


def run_chain(
    cfg: EconomicsConfig,
    attack: str,
    seed: str,
    progress: Callable[[str], None] | None = None,
) -> RunResult:
    run = EconomicsRun(cfg, attack, seed)
    step = max(25, cfg.rounds // 4)
    for h in range(cfg.rounds):
        run.run_round()
        if progress is not None and (h + 1) % step == 0 and h + 1 < cfg.rounds:
            progress(f"  {attack}, seed {seed}: {h + 1}/{cfg.rounds} rounds")
    return run.result()


def centralized_metric(cfg: EconomicsConfig, seed: str) -> tuple[float, float]:
    """The centralized baseline's final metric and seconds (``pot bench quality``'s)."""
    addresses = [_identity("miner", seed, i, 0).address for i in range(cfg.miners)]
    trainer = CentralizedTrainer(cfg.task, addresses=addresses, seed=seed)
    for _ in range(cfg.rounds):
        trainer.step()
    r = trainer.result()
    return r.metric, r.seconds


# ---------------------------------------------------------------------------- the bench


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def economics_bench(
    cfg: EconomicsConfig, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Every run of ``cfg`` (the all-honest one and one per attack, per seed); the report."""
    t_all = time.perf_counter()
    task = cfg.task
    task.dataset()
    say = progress or (lambda _msg: None)
    central: dict[str, float] = {}
    central_s = 0.0
    for s in cfg.seeds:
        central[s], dt = centralized_metric(cfg, s)
        central_s += dt
        say(f"centralized, seed {s}: {task.metric_name} {central[s]:.4f}")
    runs: list[RunResult] = []
    for attack in (HONEST, *cfg.attacks):
        for s in cfg.seeds:
            r = run_chain(cfg, attack, s, progress)
            runs.append(r)
            say(
                f"{attack}, seed {s}: {cfg.rounds} rounds in {r.seconds:.1f} s, "
                f"quality {task.quality_ratio(r.metric, central[s]):.3f}"
            )

    def ratio(r: RunResult) -> float:
        return task.quality_ratio(r.metric, central[r.seed])

    per_run = [
        {
            "attack": r.attack,
            "seed": r.seed,
            "metric": r.metric,
            "quality_ratio": ratio(r),
            "seconds": r.seconds,
            "full_check_rounds": r.full_check_rounds,
            "kinds": {k: t.to_dict() for k, t in r.tallies.items()},
        }
        for r in runs
    ]
    honest_runs = [r for r in runs if r.attack == HONEST]
    honest_ref = Tally()
    for r in honest_runs:
        honest_ref.add(r.tallies[HONEST])
    rows: list[dict[str, Any]] = []
    for kind in (HONEST, *cfg.attacks):
        total = Tally()
        for r in runs:
            if kind in r.tallies:
                total.add(r.tallies[kind])
        these = honest_runs if kind == HONEST else [r for r in runs if r.attack == kind]
        row = {"kind": kind, **total.to_dict(), "quality_ratio": _mean([ratio(r) for r in these])}
        if kind != HONEST:
            same = Tally()
            for r in these:
                same.add(r.tallies[HONEST])
            row["honest_net_per_round_in_run"] = same.net_per_round
        rows.append(row)
    honest_row, attack_rows = rows[0], rows[1:]
    worst_quality = min(rows, key=lambda x: x["quality_ratio"])
    best_attack = max(attack_rows, key=lambda x: x["net_per_round"])
    reference = honest_ref.net_per_round
    honest_n = honest_row["submissions"]
    targets = {
        "quality": {
            "name": f"PoT quality / centralized >= {QUALITY_TARGET} under every attack",
            "value": worst_quality["quality_ratio"],
            "worst": worst_quality["kind"],
            "met": worst_quality["quality_ratio"] >= QUALITY_TARGET,
        },
        "net_per_round": {
            "name": "every attack's net per round < an honest miner's in the all-honest run "
            f"({reference:,.0f} base units)",
            "value": round(best_attack["net_per_round"]),
            "worst": best_attack["kind"],
            "reference": round(reference),
            "met": all(x["net_per_round"] < reference for x in attack_rows),
        },
        "honest_rejected": {
            "name": "honest submissions rejected == 0",
            "value": honest_row["rejected"],
            "met": honest_row["rejected"] == 0,
        },
        "honest_slashed": {
            "name": "honest submissions slashed == 0",
            "value": honest_row["slashed"],
            "met": honest_row["slashed"] == 0,
        },
        "honest_submissions": {
            "name": f"honest submissions pooled >= {HONEST_SUBMISSIONS_TARGET:,}",
            "value": honest_n,
            "met": honest_n >= HONEST_SUBMISSIONS_TARGET,
        },
    }
    pool = cfg.emission_per_round * cfg.miner_share_bps // BPS
    return {
        "bench": "economics",
        "task": task.describe(),
        "metric_name": task.metric_name,
        "config": {
            "task": task.name,
            "miners": cfg.miners,
            "byzantine_fraction": cfg.byzantine_fraction,
            "byzantine_slots": cfg.byzantine_slots,
            "rounds": cfg.rounds,
            "seeds": list(cfg.seeds),
            "attacks": list(cfg.attacks),
            "identities_per_byzantine_slot": cfg.identities_per_slot,
            "stake": cfg.stake,
            "slash": cfg.slash,
            "malformed_penalty": cfg.malformed_penalty,
            "probation_rounds": cfg.probation_rounds,
            "spot_check_rate": cfg.spot_check_bps / BPS,
            "tolerance": cfg.policy.tolerance_for(task),
            "decimals": DECIMALS,
            "emission_per_round": cfg.emission_per_round,
            "miner_share_bps": cfg.miner_share_bps,
            "reward_per_miner_round": pool / cfg.miners,
            # the genesis' least slash: S >= r (1 - p) / p with r the whole miners' pool
            "deterrence_floor": deterrence_floor(pool, cfg.spot_check_bps),
        },
        "rows": rows,
        "honest_reference_net_per_round": reference,
        # attacks whose forged submissions earned more than they lost
        "paying_attacks": [x["kind"] for x in attack_rows if x["forged_net"] > 0],
        "full_check_rounds": sum(r.full_check_rounds for r in runs),
        "centralized": {
            "metric": _mean(list(central.values())),
            "per_seed": central,
            "seconds": central_s,
        },
        "runs": per_run,
        "targets": targets,
        "total_seconds": time.perf_counter() - t_all,
    }
