"""``pot bench quality`` as a library function: centralized vs PoT-in-simulation vs the naive
system (plain mean, no verification) on one task, seed and sample budget, with every figure the
issue's targets name. The CLI only prints what :func:`quality_bench` returns."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pot_cli.sim.attacks import ATTACKS, MIXED
from pot_cli.sim.baseline import CentralizedResult, CentralizedTrainer
from pot_cli.sim.pot import (
    AttackCount,
    PotSimulation,
    SimConfig,
    SimResult,
    miner_identities,
)
from pot_cli.training.aggregation import AggregationRule
from pot_cli.training.codec import COMPRESSIONS, Compression, encode_gradient
from pot_cli.training.errors import TrainingError
from pot_cli.training.gradients import compute_gradient
from pot_cli.training.state import model_hash
from pot_cli.training.tasks import Task
from pot_cli.training.verification import VerificationPolicy

WALL_TARGET = 1 / 0.85


@dataclass(frozen=True)
class QualityBenchConfig:
    task: Task
    miners: int
    rounds: int
    byzantine_fraction: float = 0.25
    attack: str = MIXED
    compression: Compression = field(default_factory=Compression)
    rule: AggregationRule = field(default_factory=AggregationRule)
    policy: VerificationPolicy = field(default_factory=VerificationPolicy)
    seed: str = "0"

    def __post_init__(self) -> None:
        if self.attack not in (*ATTACKS, MIXED):
            raise TrainingError(
                f"unknown attack {self.attack!r} (use one of {', '.join((*ATTACKS, MIXED))})"
            )


def bytes_by_compression(task: Task) -> dict[str, dict[str, float]]:
    """Bytes of one honest submission (initial model, first batch) in every compression mode."""
    params = task.initial_params()
    grad = compute_gradient(task, params, list(range(task.batch_size)))
    mh = model_hash(params)
    out: dict[str, dict[str, float]] = {}
    raw = 4 * task.num_params
    for mode in COMPRESSIONS:
        n = len(encode_gradient(task, grad, model_hash=mh, height=0, compression=Compression(mode)))
        out[Compression(mode).label()] = {"bytes": n, "fraction_of_raw": n / raw}
    return out


def _attack_rows(results: Sequence[SimResult]) -> dict[str, dict[str, Any]]:
    total: dict[str, AttackCount] = {}
    for result in results:
        for name, c in result.attacks.items():
            t = total.setdefault(name, AttackCount())
            t.submitted += c.submitted
            t.caught += c.caught
            t.missed += c.missed
            t.missed_after_recompute += c.missed_after_recompute
            t.caught_by.update(c.caught_by)
    return {
        name: {
            "submitted": c.submitted,
            "caught": c.caught,
            "missed": c.missed,
            "missed_after_recompute": c.missed_after_recompute,
            "caught_by": dict(sorted(c.caught_by.items())),
        }
        for name, c in sorted(total.items())
    }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _run_summary(
    task: Task, results: Sequence[SimResult], central_metric: float, central_s: float
) -> dict[str, Any]:
    """One row of the report: the PoT (or naive) runs of every seed, pooled: metric averaged
    over seeds, times and counts summed (so ratios are ratios of totals)."""
    metric = _mean([r.metric for r in results])
    seconds = sum(r.seconds for r in results)
    parallel = sum(r.parallel_seconds for r in results)
    payloads = [n for r in results for n in r.payload_bytes]
    return {
        "metric": metric,
        "quality_ratio": task.quality_ratio(metric, central_metric),
        "seconds": seconds,
        "wall_ratio": seconds / central_s if central_s else None,
        "parallel_seconds": parallel,
        "parallel_wall_ratio": parallel / central_s if central_s else None,
        "miner_seconds": sum(r.miner_seconds for r in results),
        "honest_gradient_seconds": sum(r.honest_gradient_seconds for r in results),
        "validator_seconds": sum(r.validator_seconds for r in results),
        "recompute_seconds": sum(r.recompute_seconds for r in results),
        "sample_recompute_seconds": sum(r.sample_recompute_seconds for r in results),
        "miner_crypto_seconds": sum(r.miner_crypto_seconds for r in results),
        "validator_crypto_seconds": sum(r.validator_crypto_seconds for r in results),
        "recomputed": sum(r.recomputed for r in results),
        "samples": sum(r.samples for r in results),
        "model_hash": results[0].model_hash if len(results) == 1 else None,
        "honest_submitted": sum(r.honest_submitted for r in results),
        "honest_rejected": sum(r.honest_rejected for r in results),
        "honest_rejections": [x for r in results for x in r.honest_rejections][:20],
        "mean_payload_bytes": sum(payloads) / len(payloads) if payloads else 0.0,
        "attacks": _attack_rows(results),
    }


def _one_seed(
    cfg: QualityBenchConfig,
) -> tuple[CentralizedResult, SimResult, SimResult]:
    """Centralized, PoT and naive runs of one seed."""
    task = cfg.task
    addresses = [i.address for i in miner_identities(cfg.seed, cfg.miners)]
    sim = SimConfig(
        task=task,
        miners=cfg.miners,
        rounds=cfg.rounds,
        seed=cfg.seed,
        byzantine_fraction=cfg.byzantine_fraction,
        attack=cfg.attack,
        compression=cfg.compression,
        rule=cfg.rule,
        policy=cfg.policy,
    )
    # The naive system: the same miners and attacks, plain mean, no verification.
    naive_cfg = replace(sim, rule=AggregationRule("mean"), verify=False)
    # The three trainings advance in lock-step, one round each in turn, so that on a shared
    # machine they run under the same load: their wall-time ratios stay meaningful.
    central_run = CentralizedTrainer(task, addresses=addresses, seed=cfg.seed)
    pot_run = PotSimulation(sim)
    naive_run = PotSimulation(naive_cfg)
    for _ in range(cfg.rounds):
        central_run.step()
        pot_run.run_round()
        naive_run.run_round()
    return central_run.result(), pot_run.result(), naive_run.result()


def quality_bench(cfg: QualityBenchConfig, seeds: Sequence[str] = ()) -> dict[str, Any]:
    """Run the three trainings for ``seeds`` (default: ``cfg.seed`` alone) and return the
    report (JSON-able). With several seeds, metrics are averaged over seeds before the ratio
    is taken: one short training's final metric varies with the seed (pycorpus at 150 rounds:
    3.10 to 3.36 bits per byte across seeds 0-2 for the same centralized configuration), more
    than the effect being measured."""
    task = cfg.task
    t_all = time.perf_counter()
    task.dataset()  # load (and import sklearn) before anything is timed
    load_before = os.getloadavg()[0]
    seeds = list(seeds) or [cfg.seed]
    runs = [_one_seed(replace(cfg, seed=s)) for s in seeds]
    centrals = [c for c, _, _ in runs]
    central_metric = _mean([c.metric for c in centrals])
    central_s = sum(c.seconds for c in centrals)
    pots = [p for _, p, _ in runs]
    pot_row = _run_summary(task, pots, central_metric, central_s)
    naive_row = _run_summary(task, [n for _, _, n in runs], central_metric, central_s)
    per_seed = [
        {
            "seed": s,
            "centralized_metric": c.metric,
            "pot_metric": p.metric,
            "pot_quality_ratio": task.quality_ratio(p.metric, c.metric),
            "plain_mean_metric": n.metric,
            "plain_mean_quality_ratio": task.quality_ratio(n.metric, c.metric),
        }
        for s, (c, p, n) in zip(seeds, runs, strict=True)
    ]
    breakdown = {
        "honest miners' gradients": pot_row["honest_gradient_seconds"],
        "validator: recomputes of the random spot-check sample": pot_row[
            "sample_recompute_seconds"
        ],
        "payload SHA-256 and Ed25519 signatures (miners, validator)": pot_row[
            "miner_crypto_seconds"
        ]
        + pot_row["validator_crypto_seconds"],
        "validator: recomputes of flagged submissions outside the sample": pot_row[
            "recompute_seconds"
        ]
        - pot_row["sample_recompute_seconds"],
        "other miner work (assignment, encoding; forging)": pot_row["miner_seconds"]
        - pot_row["honest_gradient_seconds"]
        - pot_row["miner_crypto_seconds"],
        "validator: decoding, statistics, aggregation, optimizer": pot_row["validator_seconds"]
        - pot_row["recompute_seconds"]
        - pot_row["validator_crypto_seconds"],
    }
    pot_row["wall_breakdown_vs_centralized"] = {
        k: v / central_s if central_s else None for k, v in breakdown.items()
    }
    # The part of the one-process ratio that no implementation can remove at this spot-check
    # rate: the miners' training work itself, the random sample's recomputes, and hashing and
    # signing every payload (the protocol's security rules). (Recomputes of flagged submissions
    # are not in it: better statistics could flag fewer honest ones.) The one-process target
    # is reachable only when this floor leaves room for the rest.
    floor = (
        pot_row["honest_gradient_seconds"]
        + pot_row["sample_recompute_seconds"]
        + pot_row["miner_crypto_seconds"]
        + pot_row["validator_crypto_seconds"]
    )
    pot_row["wall_floor_ratio"] = floor / central_s if central_s else None
    missed_after_recompute = sum(c.missed_after_recompute for r in pots for c in r.attacks.values())
    sizes = bytes_by_compression(task)
    compressed = cfg.compression.mode != "none"
    quality_target = 0.97 if (cfg.byzantine_fraction > 0 or compressed) else 0.99
    targets: list[dict[str, Any]] = [
        {
            "name": f"PoT quality / centralized >= {quality_target}",
            "value": pot_row["quality_ratio"],
            "met": pot_row["quality_ratio"] >= quality_target,
        },
        {
            "name": "honest submissions wrongly rejected == 0",
            "value": pot_row["honest_rejected"],
            "met": pot_row["honest_rejected"] == 0,
        },
        {
            "name": "wall time PoT-sim (one process) / centralized <= 1/0.85",
            "value": pot_row["wall_ratio"],
            "met": pot_row["wall_ratio"] is not None and pot_row["wall_ratio"] <= WALL_TARGET,
        },
        {
            "name": "wall time PoT (miners on their own rigs) / centralized <= 1/0.85",
            "value": pot_row["parallel_wall_ratio"],
            "met": pot_row["parallel_wall_ratio"] is not None
            and pot_row["parallel_wall_ratio"] <= WALL_TARGET,
        },
        {
            "name": "forged submissions that passed a recompute == 0",
            "value": missed_after_recompute,
            "met": missed_after_recompute == 0,
        },
    ]
    if compressed:
        frac = pot_row["mean_payload_bytes"] / (4 * task.num_params)
        targets.append(
            {"name": "compressed bytes <= 1/8 of raw", "value": frac, "met": frac <= 1 / 8}
        )
    if cfg.byzantine_fraction > 0:
        targets.append(
            {
                "name": "plain mean without verification collapses (ratio < 0.9)",
                "value": naive_row["quality_ratio"],
                "met": not (naive_row["quality_ratio"] >= 0.9),
            }
        )
    return {
        "bench": "quality",
        "task": task.describe(),
        "config": {
            "miners": cfg.miners,
            "rounds": cfg.rounds,
            "byzantine_fraction": cfg.byzantine_fraction,
            "byzantine_miners": round(cfg.byzantine_fraction * cfg.miners),
            "attack": cfg.attack,
            "compression": cfg.compression.label(),
            "rule": cfg.rule.describe(),
            "spot_check_rate": cfg.policy.spot_check_rate,
            "tolerance": cfg.policy.tolerance_for(task),
            "seed": seeds[0] if len(seeds) == 1 else seeds,
            "global_batch": cfg.miners * task.batch_size,
        },
        "metric_name": task.metric_name,
        "higher_is_better": task.higher_is_better,
        "centralized": {
            "metric": central_metric,
            "seconds": central_s,
            "samples": sum(c.samples for c in centrals),
            "model_hash": centrals[0].model_hash if len(centrals) == 1 else None,
        },
        "pot": pot_row,
        "per_seed": per_seed,
        "plain_mean_no_verification": naive_row,
        "bytes_per_submission": sizes,
        "targets": targets,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0],
        },
        "total_seconds": time.perf_counter() - t_all,
    }
