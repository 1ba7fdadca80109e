"""Proof of Training in simulation: N miners (each with its own Ed25519 identity) and a
validator in one process, round after round, on one task.

Per round: every miner gets its batch from (round seed, address), computes the gradient with
:func:`compute_gradient` (Byzantine ones forge with :mod:`attacks` instead), encodes it and
signs a commitment over (model hash, payload hash) (``protocol.commitments``). The validator is
a driver of THE round, :class:`~pot_cli.protocol.round.RoundMachine`: it feeds the signed
submissions in (the machine hashes each payload once and checks its commitment), ticks past the
deadline (the set freezes), signs the cut-off beacon, runs :func:`verify_round` when the machine
asks for it and feeds the result back; then it aggregates the accepted flat gradients with the
rule and applies the optimizer: exactly what every PBFT validator computes (deterministically,
so one validator's work stands for all of them; they run in parallel in a real network).

Timing: ``seconds`` is the rounds in one process, one miner after another (the total work);
``parallel_seconds`` is the critical path of a deployed network, where miners work at the same
time on their own rigs: per round, the slowest miner plus the validator's work.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from pot_cli.crypto import Identity, hash_object
from pot_cli.protocol.beacon import Onion, beacon_value, frozen_digest, make_reveal, onion_seed
from pot_cli.protocol.commitments import sign_commitment
from pot_cli.protocol.round import (
    Action,
    FreezeSet,
    RoundMachine,
    RoundParams,
    RoundVerified,
    StartVerification,
    SubmissionReceived,
    SubmissionRefused,
    Tick,
    VerificationFinished,
)
from pot_cli.sim.attacks import ForgeContext, attack_for, forge
from pot_cli.training.aggregation import AggregationRule, aggregate_flat
from pot_cli.training.assignment import assign_batch, round_seed
from pot_cli.training.codec import Compression, encode_gradient, max_payload_bytes
from pot_cli.training.errors import CodecError, TrainingError
from pot_cli.training.gradients import Gradient, Numerics, Params, compute_gradient
from pot_cli.training.optim import apply_update, init_optimizer_state
from pot_cli.training.state import flatten, model_hash
from pot_cli.training.tasks import Task
from pot_cli.training.verification import (
    RoundContext,
    RoundVerification,
    Submission,
    Verdict,
    VerificationPolicy,
    verify_round,
)

CHAIN_ID = "pot-sim"
# The round machine's clock in the simulation: miners submit at 0, the deadline is 1.
DEADLINE = 1
# The intake bound on a payload (a node's transport bound): generous, so that a signed oversize
# payload reaches verification, where the codec's exact limit refuses it with a (penalised)
# verdict, as the attack bench counts it; the intake bound only stops absurd sizes unhashed.
INTAKE_LIMIT_FACTOR = 4


@dataclass(frozen=True)
class SimConfig:
    task: Task
    miners: int
    rounds: int
    seed: str = "0"
    byzantine_fraction: float = 0.0
    attack: str = "mixed"
    compression: Compression = field(default_factory=Compression)
    rule: AggregationRule = field(default_factory=AggregationRule)
    policy: VerificationPolicy = field(default_factory=VerificationPolicy)
    verify: bool = True  # False: the naive system (plain aggregation of whatever parses)
    honest_numerics: Sequence[Numerics] = (Numerics(),)

    def __post_init__(self) -> None:
        if self.miners < 1 or self.rounds < 1:
            raise TrainingError("miners and rounds must be >= 1")
        if not 0.0 <= self.byzantine_fraction < 1.0:
            raise TrainingError(
                f"byzantine fraction must be in [0, 1), got {self.byzantine_fraction}"
            )


@dataclass
class AttackCount:
    submitted: int = 0
    caught: int = 0
    missed: int = 0
    # missed although re-computed: a forgery inside the tolerance (the calibration's claim is
    # that this stays 0; the other misses were not in the round's spot-check sample)
    missed_after_recompute: int = 0
    caught_by: Counter[str] = field(default_factory=Counter)


@dataclass
class SimResult:
    metric: float
    seconds: float
    parallel_seconds: float
    miner_seconds: float
    honest_gradient_seconds: float
    validator_seconds: float
    recompute_seconds: float
    sample_recompute_seconds: float  # of which the random spot-check sample
    # SHA-256 of every payload and the Ed25519 signatures: by the miners (commitments) and by
    # the validator (checking them, signing the cut-off). Required by the protocol's security
    # rules, so no faster implementation of anything else removes it.
    miner_crypto_seconds: float
    validator_crypto_seconds: float
    recomputed: int
    samples: int
    model_hash: str
    honest_submitted: int
    honest_rejected: int
    honest_rejections: list[str]
    attacks: dict[str, AttackCount]
    payload_bytes: list[int]

    @property
    def mean_payload_bytes(self) -> float:
        return sum(self.payload_bytes) / len(self.payload_bytes) if self.payload_bytes else 0.0


def miner_identities(seed: str, miners: int) -> list[Identity]:
    return [Identity.from_seed(hash_object({"sim-miner": seed, "i": i})) for i in range(miners)]


def byzantine_set(addresses: Sequence[str], fraction: float, seed: str) -> list[str]:
    """Which miners are Byzantine: ``round(fraction * N)`` of them, chosen by hash."""
    k = round(fraction * len(addresses))
    ranked = sorted(addresses, key=lambda a: hash_object({"byz": seed, "a": a}))
    return sorted(ranked[:k])


def _naive_decode(cfg: SimConfig, payload: bytes) -> torch.Tensor | None:
    """The naive system's decoding: whatever safetensors parses into the right names and shapes,
    no size, finiteness or header checks, as one flat vector. ``None`` when it cannot even be
    used."""
    from pot_cli.training.codec import decode_gradient

    try:
        from safetensors.torch import load

        raw = load(payload)
    except Exception:
        return None
    try:
        return decode_gradient(cfg.task, payload).vector
    except CodecError as exc:
        if exc.reason not in ("non-finite", "oversize"):
            return None
    shapes = cfg.task.param_shapes
    if all(n in raw and tuple(raw[n].shape) == s for n, s in shapes.items()):
        return flatten(raw, shapes)
    return None


def _naive_verification(cfg: SimConfig, submissions: Sequence[Submission]) -> RoundVerification:
    """The naive system in place of ``verify_round``: every usable payload is accepted."""
    verdicts: dict[str, Verdict] = {}
    accepted: dict[str, torch.Tensor] = {}
    for s in submissions:
        vec = _naive_decode(cfg, s.payload)
        if vec is None:
            verdicts[s.address] = Verdict(s.address, False, "unusable", "does not parse")
        else:
            verdicts[s.address] = Verdict(s.address, True, "ok", "parses")
            accepted[s.address] = vec
    return RoundVerification(verdicts=verdicts, accepted=accepted, spot_seed=b"")


def _expect_no_refusal(actions: Sequence[Action]) -> None:
    refused = [x for x in actions if isinstance(x, SubmissionRefused)]
    if refused:
        raise TrainingError(f"simulation bug: a miner's submission was refused: {refused[0]}")


def _freeze(actions: Sequence[Action]) -> tuple[FreezeSet, StartVerification]:
    """The FreezeSet and StartVerification a tick past the deadline gives (every payload came
    with its commitment, so verification starts at once)."""
    freeze = [x for x in actions if isinstance(x, FreezeSet)]
    start = [x for x in actions if isinstance(x, StartVerification)]
    if len(freeze) != 1 or len(start) != 1:
        raise TrainingError(f"simulation bug: the round did not freeze and start: {actions}")
    return freeze[0], start[0]


class PotSimulation:
    """The simulation, one round at a time (:meth:`run_round`), so a benchmark can interleave
    it round by round with the centralized baseline: both then run under the same machine
    load, which matters on a shared machine. :func:`run_pot` runs it to the end."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        task = cfg.task
        task.dataset()
        self.by_addr = {i.address: i for i in miner_identities(cfg.seed, cfg.miners)}
        self.validator = Identity.from_seed(hash_object({"sim-validator": cfg.seed}))
        self.onion = Onion(onion_seed(self.validator, CHAIN_ID), cfg.rounds + 1)
        self.keys = {a: i.public_key for a, i in self.by_addr.items()}
        self.admitted = frozenset(self.by_addr)
        self.intake_limit = INTAKE_LIMIT_FACTOR * max_payload_bytes(task, Compression("none"))
        self.addresses = sorted(self.by_addr)
        self.byz = byzantine_set(self.addresses, cfg.byzantine_fraction, cfg.seed)
        self.byz_index = {a: j for j, a in enumerate(self.byz)}
        self.params = task.initial_params()
        self.opt_state = init_optimizer_state(task.optimizer, self.params)
        self.history: list[dict[str, torch.Tensor]] = [self.params]
        self.previous: list[torch.Tensor] = []
        self.attacks: dict[str, AttackCount] = {}
        self.honest_submitted = self.honest_rejected = 0
        self.honest_rejections: list[str] = []
        self.payload_bytes: list[int] = []
        self.miner_total = self.validator_total = self.recompute_total = 0.0
        self.sample_recompute_total = 0.0
        self.miner_crypto = self.validator_crypto = 0.0
        self.gradient_total = 0.0  # honest miners' compute_gradient time alone
        self.parallel = self.seconds = 0.0
        self.recomputed = self.samples = 0
        self.height = 0

    def _honest(
        self, a: str, h: int, params: Params, mh: str, seed_h: bytes
    ) -> tuple[bytes, Gradient]:
        cfg, task = self.cfg, self.cfg.task
        indices = assign_batch(seed_h, a, task.train_size, task.batch_size)
        k = (self.addresses.index(a) + h) % len(cfg.honest_numerics)
        numerics = cfg.honest_numerics[k]
        t0 = time.perf_counter()
        grad = compute_gradient(task, params, indices, numerics)
        self.gradient_total += time.perf_counter() - t0
        payload = encode_gradient(
            task,
            grad,
            model_hash=mh,
            height=h,
            compression=cfg.compression,
            numerics=numerics.dtype,
        )
        return payload, grad

    def _forged(
        self,
        a: str,
        h: int,
        params: Params,
        mh: str,
        seed_h: bytes,
        published: dict[str, bytes],
        published_grads: dict[str, Gradient],
    ) -> bytes:
        cfg, task = self.cfg, self.cfg.task
        fctx = ForgeContext(
            task=task,
            height=h,
            model_hash=mh,
            params=params,
            history=self.history,
            compression=cfg.compression,
            indices=assign_batch(seed_h, a, task.train_size, task.batch_size),
            # A batch nobody is assigned: the same address, a round far in the future.
            other_indices=assign_batch(
                round_seed(cfg.seed, h + 1_000_000), a, task.train_size, task.batch_size
            ),
            others=published,
            others_grads=published_grads,
            seed=int(hash_object({"forge": cfg.seed, "h": h, "a": a})[:4].hex(), 16),
        )
        return forge(attack_for(cfg.attack, self.byz_index[a], h), fctx)

    def _sign(self, a: str, h: int, mh: str, payload: bytes) -> tuple[str, bytes]:
        t0 = time.perf_counter()
        signed = sign_commitment(self.by_addr[a], CHAIN_ID, h, mh, payload)
        self.miner_crypto += time.perf_counter() - t0
        return signed

    def run_round(self) -> None:
        t_round = time.perf_counter()
        cfg, task, h = self.cfg, self.cfg.task, self.height
        params = self.params
        seed_h = round_seed(cfg.seed, h)
        mh = model_hash(params)
        played = {a: attack_for(cfg.attack, self.byz_index[a], h) for a in self.byz}
        published: dict[str, bytes] = {}
        published_grads: dict[str, Gradient] = {}
        timings: dict[str, float] = {}
        signed: dict[str, tuple[bytes, str, bytes]] = {}

        def honest(a: str) -> tuple[str, bytes, Gradient, tuple[str, bytes], float]:
            t0 = time.perf_counter()
            payload, grad = self._honest(a, h, params, mh, seed_h)
            commitment = self._sign(a, h, mh, payload)
            return a, payload, grad, commitment, time.perf_counter() - t0

        def byzantine(a: str) -> tuple[str, bytes, tuple[str, bytes], float]:
            t0 = time.perf_counter()
            payload = self._forged(a, h, params, mh, seed_h, published, published_grads)
            commitment = self._sign(a, h, mh, payload)
            return a, payload, commitment, time.perf_counter() - t0

        # Honest miners first (in address order), then Byzantine ones, who may copy them.
        honest_addresses = [a for a in self.addresses if a not in self.byz_index]
        for a, payload, grad, (digest, sig), dt in map(honest, honest_addresses):
            published[a] = payload
            published_grads[a] = grad
            self.payload_bytes.append(len(payload))
            signed[a], timings[a] = (payload, digest, sig), dt
        for a, payload, (digest, sig), dt in map(byzantine, self.byz):
            signed[a], timings[a] = (payload, digest, sig), dt
        self.miner_total += sum(timings.values())
        slowest = max(timings.values())

        # The validator: one RoundMachine drives the round. Taking a submission in hashes its
        # payload once and checks the signed commitment.
        t0 = time.perf_counter()
        machine = RoundMachine(
            RoundParams(
                chain_id=CHAIN_ID,
                height=h,
                model_hash=mh,
                round_seed=seed_h,
                deadline=DEADLINE,
                max_payload_bytes=self.intake_limit,
                miner_keys=self.keys,
                admitted=self.admitted,
            )
        )
        for a in self.addresses:
            payload, digest, sig = signed[a]
            _expect_no_refusal(machine.step(SubmissionReceived(a, digest, sig, payload, now=0)))
        self.validator_crypto += time.perf_counter() - t0
        # The deadline passes: the set freezes and, every payload being here, verification
        # starts.
        frozen, job = _freeze(machine.step(Tick(DEADLINE)))
        if cfg.verify:
            # The beacon: the validator reveals its onion layer for the height (one validator
            # stands for all; with several, every layer goes in) and it salts the sample.
            t1 = time.perf_counter()
            digest = frozen_digest(frozen.frozen)
            layer = h + 1  # heights count from 0 here, onion layers from 1
            reveal = make_reveal(self.validator, 0, self.onion, CHAIN_ID, layer, digest)
            beacon = beacon_value(CHAIN_ID, layer, [reveal.value])
            self.validator_crypto += time.perf_counter() - t1
            ctx = RoundContext(
                task=task,
                height=h,
                round_seed=seed_h,
                params=params,
                model_hash=mh,
                compression=cfg.compression,
                previous=self.previous,
                beacon=beacon,
            )
            verification = verify_round(ctx, job.submissions, cfg.policy, clock=time.perf_counter)
        else:
            verification = _naive_verification(cfg, job.submissions)
        done = machine.step(VerificationFinished(job.job_id, verification))
        if not any(isinstance(x, RoundVerified) for x in done):
            raise TrainingError(f"simulation bug: the round machine did not finish: {done}")
        result = verification
        accepted = result.accepted
        if cfg.verify:
            self.recomputed += result.recomputed
            self.recompute_total += result.recompute_seconds
            self.sample_recompute_total += result.sample_recompute_seconds
            for a, v in result.verdicts.items():
                if a in played:
                    c = self.attacks.setdefault(played[a], AttackCount())
                    c.submitted += 1
                    if v.accepted:
                        c.missed += 1
                        c.missed_after_recompute += int(v.spot_checked)
                    else:
                        c.caught += 1
                        c.caught_by[v.check] += 1
                else:
                    self.honest_submitted += 1
                    if not v.accepted:
                        self.honest_rejected += 1
                        self.honest_rejections.append(f"h{h} {a[:12]}: {v.check}: {v.reason}")
            self.previous = list(accepted.values())
        else:
            for a in played:
                c = self.attacks.setdefault(played[a], AttackCount())
                c.submitted += 1
                if a in accepted:
                    c.missed += 1
                else:
                    c.caught += 1
                    c.caught_by["unusable"] += 1
            self.honest_submitted += len(job.submissions) - len(played)
        if accepted:
            # flat vectors in, one unflatten for the optimizer
            agg = aggregate_flat(cfg.rule, accepted, task.param_shapes)
            self.params, self.opt_state = apply_update(task.optimizer, params, self.opt_state, agg)
            self.samples += task.batch_size * len(accepted)
        self.history = [*self.history[-(8 - 1) :], self.params]
        dt = time.perf_counter() - t0
        self.validator_total += dt
        self.parallel += slowest + dt
        self.height += 1
        self.seconds += time.perf_counter() - t_round

    def result(self) -> SimResult:
        task = self.cfg.task
        return SimResult(
            metric=task.evaluate(self.params),
            seconds=self.seconds,
            parallel_seconds=self.parallel,
            miner_seconds=self.miner_total,
            honest_gradient_seconds=self.gradient_total,
            validator_seconds=self.validator_total,
            recompute_seconds=self.recompute_total,
            sample_recompute_seconds=self.sample_recompute_total,
            miner_crypto_seconds=self.miner_crypto,
            validator_crypto_seconds=self.validator_crypto,
            recomputed=self.recomputed,
            samples=self.samples,
            model_hash=model_hash(self.params),
            honest_submitted=self.honest_submitted,
            honest_rejected=self.honest_rejected,
            honest_rejections=self.honest_rejections,
            attacks=self.attacks,
            payload_bytes=self.payload_bytes,
        )


def run_pot(cfg: SimConfig) -> SimResult:
    """Run the whole simulation; ``seconds`` excludes set-up and the final evaluation."""
    sim = PotSimulation(cfg)
    for _ in range(cfg.rounds):
        sim.run_round()
    return sim.result()
