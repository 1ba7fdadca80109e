"""``pot bench quality`` as a library function: centralized vs PoT-in-simulation vs the naive
system (plain mean, no verification) on one task, seed and sample budget, with every figure the
issue's targets name. The CLI only prints what :func:`quality_bench` returns."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Any

from pot_cli.training.aggregation import AggregationRule
from pot_cli.training.attacks import ATTACKS, MIXED
from pot_cli.training.baseline import CentralizedTrainer
from pot_cli.training.codec import COMPRESSIONS, Compression, encode_gradient
from pot_cli.training.errors import TrainingError
from pot_cli.training.gradients import compute_gradient
from pot_cli.training.simulation import PotSimulation, SimConfig, SimResult, miner_identities
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


def _attack_rows(result: SimResult) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "submitted": c.submitted,
            "caught": c.caught,
            "missed": c.missed,
            "missed_after_recompute": c.missed_after_recompute,
            "caught_by": dict(sorted(c.caught_by.items())),
        }
        for name, c in sorted(result.attacks.items())
    }


def _run_summary(
    task: Task, result: SimResult, central_metric: float, central_s: float
) -> dict[str, Any]:
    return {
        "metric": result.metric,
        "quality_ratio": task.quality_ratio(result.metric, central_metric),
        "seconds": result.seconds,
        "wall_ratio": result.seconds / central_s if central_s else None,
        "parallel_seconds": result.parallel_seconds,
        "parallel_wall_ratio": result.parallel_seconds / central_s if central_s else None,
        "miner_seconds": result.miner_seconds,
        "validator_seconds": result.validator_seconds,
        "recompute_seconds": result.recompute_seconds,
        "recomputed": result.recomputed,
        "samples": result.samples,
        "model_hash": result.model_hash,
        "honest_submitted": result.honest_submitted,
        "honest_rejected": result.honest_rejected,
        "honest_rejections": result.honest_rejections[:20],
        "mean_payload_bytes": result.mean_payload_bytes,
        "attacks": _attack_rows(result),
    }


def quality_bench(cfg: QualityBenchConfig) -> dict[str, Any]:
    """Run the three trainings and return the report (JSON-able)."""
    task = cfg.task
    t_all = time.perf_counter()
    task.dataset()  # load (and import sklearn) before anything is timed
    addresses = [i.address for i in miner_identities(cfg.seed, cfg.miners)]
    load_before = os.getloadavg()[0]
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
    central, pot, naive = central_run.result(), pot_run.result(), naive_run.result()
    pot_row = _run_summary(task, pot, central.metric, central.seconds)
    naive_row = _run_summary(task, naive, central.metric, central.seconds)
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
            "value": pot.honest_rejected,
            "met": pot.honest_rejected == 0,
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
            "value": sum(c.missed_after_recompute for c in pot.attacks.values()),
            "met": sum(c.missed_after_recompute for c in pot.attacks.values()) == 0,
        },
    ]
    if compressed:
        frac = pot.mean_payload_bytes / (4 * task.num_params)
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
            "seed": cfg.seed,
            "global_batch": cfg.miners * task.batch_size,
        },
        "metric_name": task.metric_name,
        "higher_is_better": task.higher_is_better,
        "centralized": {
            "metric": central.metric,
            "seconds": central.seconds,
            "samples": central.samples,
            "model_hash": central.model_hash,
        },
        "pot": pot_row,
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
