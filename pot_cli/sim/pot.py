"""Proof of Training in simulation: N miners (each with its own Ed25519 identity) and a
validator in one process, round after round, on one task.

Per round: every miner gets its batch from (round seed, address), computes the gradient with
:func:`compute_gradient` (Byzantine ones forge with :mod:`attacks` instead), encodes it and
signs a commitment over (model hash, payload hash). The validator checks signatures, runs
:func:`verify_round`, aggregates the accepted gradients with the rule and applies the optimizer:
exactly what every PBFT validator computes (deterministically, so one validator's work stands
for all of them; they run in parallel in a real network).

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

from pot_cli.crypto import Identity, hash_object, sha256_hex, verify_signed
from pot_cli.sim.attacks import ForgeContext, attack_for, forge
from pot_cli.training.aggregation import AggregationRule, aggregate
from pot_cli.training.assignment import assign_batch, cut_off_body, round_seed
from pot_cli.training.codec import Compression, encode_gradient
from pot_cli.training.errors import CodecError, TrainingError
from pot_cli.training.gradients import Gradient, Numerics, Params, compute_gradient
from pot_cli.training.optim import apply_update, init_optimizer_state
from pot_cli.training.state import flatten, model_hash
from pot_cli.training.tasks import Task
from pot_cli.training.verification import (
    RoundContext,
    Submission,
    VerificationPolicy,
    verify_round,
)

SIGN_DOMAIN = "pot/gradient"
CUT_OFF_DOMAIN = "pot/cut-off"
CHAIN_ID = "pot-sim"


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


def _naive_decode(cfg: SimConfig, payload: bytes) -> Gradient | None:
    """The naive system's decoding: whatever safetensors parses into the right names and shapes,
    no size, finiteness or header checks. ``None`` when it cannot even be used."""
    from pot_cli.training.codec import decode_gradient

    try:
        from safetensors.torch import load

        raw = load(payload)
    except Exception:
        return None
    try:
        return decode_gradient(cfg.task, payload).gradient
    except CodecError as exc:
        if exc.reason not in ("non-finite", "oversize"):
            return None
    shapes = cfg.task.param_shapes
    if all(n in raw and tuple(raw[n].shape) == s for n, s in shapes.items()):
        return {n: raw[n].to(torch.float32) for n in shapes}
    return None


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

    def _sign(self, a: str, h: int, mh: str, payload: bytes) -> bytes:
        t0 = time.perf_counter()
        body = {"model_hash": mh, "payload_hash": sha256_hex(payload)}
        sig = self.by_addr[a].sign_message(SIGN_DOMAIN, CHAIN_ID, h, body)
        self.miner_crypto += time.perf_counter() - t0
        return sig

    def run_round(self) -> None:
        t_round = time.perf_counter()
        cfg, task, h = self.cfg, self.cfg.task, self.height
        params = self.params
        seed_h = round_seed(cfg.seed, h)
        mh = model_hash(params)
        subs: list[Submission] = []
        played = {a: attack_for(cfg.attack, self.byz_index[a], h) for a in self.byz}
        published: dict[str, bytes] = {}
        published_grads: dict[str, Gradient] = {}
        timings: dict[str, float] = {}
        signed: dict[str, tuple[bytes, bytes]] = {}

        def honest(a: str) -> tuple[str, bytes, Gradient, bytes, float]:
            t0 = time.perf_counter()
            payload, grad = self._honest(a, h, params, mh, seed_h)
            sig = self._sign(a, h, mh, payload)
            return a, payload, grad, sig, time.perf_counter() - t0

        def byzantine(a: str) -> tuple[str, bytes, bytes, float]:
            t0 = time.perf_counter()
            payload = self._forged(a, h, params, mh, seed_h, published, published_grads)
            sig = self._sign(a, h, mh, payload)
            return a, payload, sig, time.perf_counter() - t0

        # Honest miners first (in address order), then Byzantine ones, who may copy them.
        honest_addresses = [a for a in self.addresses if a not in self.byz_index]
        for a, payload, grad, sig, dt in map(honest, honest_addresses):
            published[a] = payload
            published_grads[a] = grad
            self.payload_bytes.append(len(payload))
            signed[a], timings[a] = (payload, sig), dt
        for a, payload, sig, dt in map(byzantine, self.byz):
            signed[a], timings[a] = (payload, sig), dt
        received = [(a, *signed[a]) for a in self.addresses]
        self.miner_total += sum(timings.values())
        slowest = max(timings.values())

        t0 = time.perf_counter()
        # The validator hashes every payload once and checks the signed commitment.
        for a, payload, sig in received:
            digest = sha256_hex(payload)
            body = {"model_hash": mh, "payload_hash": digest}
            if not verify_signed(self.by_addr[a].public_key, sig, SIGN_DOMAIN, CHAIN_ID, h, body):
                raise TrainingError("simulation bug: a miner's signature does not verify")
            subs.append(Submission(a, payload, digest))
        self.validator_crypto += time.perf_counter() - t0
        accepted: dict[str, Gradient]
        if cfg.verify:
            # The cut-off: the validator (as primary) signs the frozen submission set; its
            # signature is the beacon that salts the spot-check sample.
            t1 = time.perf_counter()
            frozen = cut_off_body([(sub.address, sub.payload_hash or "") for sub in subs])
            beacon = self.validator.sign_message(CUT_OFF_DOMAIN, CHAIN_ID, h, frozen)
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
            result = verify_round(ctx, subs, cfg.policy)
            accepted = result.accepted
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
            self.previous = [flatten(g, task.param_shapes) for g in accepted.values()]
        else:
            accepted = {}
            for s in subs:
                g = _naive_decode(cfg, s.payload)
                if g is not None:
                    accepted[s.address] = g
            for a in played:
                c = self.attacks.setdefault(played[a], AttackCount())
                c.submitted += 1
                if a in accepted:
                    c.missed += 1
                else:
                    c.caught += 1
                    c.caught_by["unusable"] += 1
            self.honest_submitted += len(subs) - len(played)
        if accepted:
            agg = aggregate(cfg.rule, accepted, task.param_shapes)
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
