"""``pot bench quality``, ``pot bench honest`` and ``pot bench calibrate`` (thin: the logic lives
in the pot_cli.training library; torch is imported inside the commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pot_cli.cli.context import get_state
from pot_cli.cli.output import (
    err_console,
    note,
    parse_kinds,
    parse_seeds,
    print_kv,
    print_table,
    save_result,
)
from pot_cli.paths import bench_result_path


def _targets(report: dict[str, Any]) -> None:
    rows = [
        [t["name"], t["value"], "met" if t["met"] else "MISSED"] for t in report.get("targets", [])
    ]
    if rows:
        print_table("Targets", ["target", "measured", "status"], rows)


def _economics_tables(report: dict[str, Any]) -> None:
    conf, rows = report["config"], report["rows"]
    print_table(
        f"Economics: {conf['task']}, {conf['miners']} miners ({conf['byzantine_slots']} "
        f"playing the attack), {conf['rounds']} rounds, seeds {','.join(conf['seeds'])}; "
        f"stake {conf['stake'] / 10 ** conf['decimals']:g} POT, slash "
        f"{conf['slash'] / 10 ** conf['decimals']:g} POT, probation "
        f"{conf['probation_rounds']}, spot-check {conf['spot_check_rate']:g}",
        ["kind", "ids", "sent", "accepted", "rejected", "slashed", "quality"],
        [
            [
                r["kind"],
                r["identities"],
                r["submissions"],
                r["accepted"],
                r["rejected"],
                r["slashed"],
                r["quality_ratio"],
            ]
            for r in rows
        ],
        caption="ids: identities used (an ejected or under-staked attacker re-enters under a "
        "new one). quality: the run's final metric / centralized (honest: the all-honest run).",
    )
    unit = 10 ** conf["decimals"]
    print_table(
        "Earnings (POT)",
        ["kind", "rewards", "lost", "net", "net/round"],
        [
            [
                r["kind"],
                r["rewards"] / unit,
                (r["slashed_amount"] + r["penalty_amount"]) / unit,
                r["net"] / unit,
                r["net_per_round"] / unit,
            ]
            for r in rows
        ],
        caption=f"1 POT = {unit:,} base units (the JSON's). lost: slashes and malformed "
        "penalties. net/round: net per slot per round. An honest miner of the all-honest run "
        f"earns {report['honest_reference_net_per_round'] / unit:.3f} POT per round. "
        "Deterrence floor of the genesis (least slash: S >= r (1 - p) / p, r the whole "
        f"miners' pool, p = {conf['spot_check_rate']:g}): "
        f"{conf['deterrence_floor'] / unit:,.3f} POT.",
    )
    paying = report["paying_attacks"]
    note(
        f"attacks whose forged submissions earn more than they lose: "
        f"{', '.join(paying) if paying else 'none'}. "
        f"rounds whose beacon fell back to a full check: {report['full_check_rounds']}. "
        f"total {report['total_seconds']:.1f} s."
    )
    _targets(
        {
            "targets": [
                {**t, "name": t["name"] + (f" (worst: {t['worst']})" if "worst" in t else "")}
                for t in report["targets"].values()
            ]
        }
    )


def register(bench_app: typer.Typer) -> None:
    """Add the useful-work commands to ``pot bench``."""

    @bench_app.command("quality")
    def quality(
        ctx: typer.Context,
        task: Annotated[str, typer.Option(help="Task name (see configs/tasks/).")] = "digits",
        miners: Annotated[
            int | None, typer.Option(min=1, max=256, help="Miners (default: the task's).")
        ] = None,
        rounds: Annotated[
            int | None, typer.Option(min=1, help="Rounds (default: the task's).")
        ] = None,
        byzantine: Annotated[
            float, typer.Option(min=0.0, max=0.9, help="Fraction of Byzantine miners.")
        ] = 0.25,
        attack: Annotated[
            str, typer.Option(help="Attack the Byzantine miners play, or 'mixed' (all, rotating).")
        ] = "mixed",
        compression: Annotated[
            str, typer.Option(help="none | int8 | topk | topk:FRACTION (default fraction 0.2).")
        ] = "none",
        rule: Annotated[
            str,
            typer.Option(
                help="clipped_mean (robust default) | mean | trimmed_mean | median | multi_krum."
            ),
        ] = "clipped_mean",
        spot_check_rate: Annotated[
            float, typer.Option(min=0.0, max=1.0, help="Fraction of submissions re-computed.")
        ] = 0.1,
        tolerance: Annotated[
            float | None,
            typer.Option(help="Spot-check tolerance (default: the task's calibrated one)."),
        ] = None,
        seed: Annotated[
            str,
            typer.Option(
                help="Seed of the run (data order, identities); several, comma-separated "
                "(0,1,2), run once each and pool: metrics averaged over seeds, then the ratio."
            ),
        ] = "0",
        threads: Annotated[
            int,
            typer.Option(
                min=1,
                help="torch intra-op threads of every run (1: immune to OpenMP slow-downs on a "
                "busy machine; the same for all runs, so the ratios stay fair).",
            ),
        ] = 1,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print JSON instead of tables.")
        ] = False,
        out: Annotated[Path | None, typer.Option(help="Write the JSON result here.")] = None,
    ) -> None:
        """Centralized vs PoT-in-simulation vs plain mean without verification: quality, wall
        time, bytes per submission, attacks caught and missed, honest rejections."""
        from pot_cli.sim.quality import QualityBenchConfig, quality_bench
        from pot_cli.training.aggregation import AggregationRule
        from pot_cli.training.codec import Compression
        from pot_cli.training.gradients import torch_threads
        from pot_cli.training.tasks import load_task
        from pot_cli.training.verification import VerificationPolicy

        seeds = parse_seeds(seed, "--seed")
        t = load_task(task)
        cfg = QualityBenchConfig(
            task=t,
            miners=miners or t.bench_miners,
            rounds=rounds or t.bench_rounds,
            byzantine_fraction=byzantine,
            attack=attack,
            compression=Compression.parse(compression),
            rule=AggregationRule(rule),
            policy=VerificationPolicy(
                spot_check_rate=spot_check_rate,
                tolerance=tolerance,
            ),
            seed=seeds[0],
        )
        with torch_threads(threads):
            report = quality_bench(cfg, list(seeds))
        report["config"]["torch_threads"] = threads
        if not as_json:
            c, p, n = report["centralized"], report["pot"], report["plain_mean_no_verification"]
            conf = report["config"]
            print_table(
                f"Quality: {t.name} ({report['metric_name']}), {conf['miners']} miners "
                f"({conf['byzantine_miners']} Byzantine, {conf['attack']}), "
                f"{conf['rounds']} rounds, {conf['compression']}, {conf['rule']['name']}, "
                f"spot-check {conf['spot_check_rate']}",
                ["run", report["metric_name"], "quality", "wall s", "wall ×", "rigs s", "rigs ×"],
                [
                    ["centralized", c["metric"], 1.0, c["seconds"], 1.0, c["seconds"], 1.0],
                    *(
                        [
                            label,
                            r["metric"],
                            r["quality_ratio"],
                            r["seconds"],
                            r["wall_ratio"],
                            r["parallel_seconds"],
                            r["parallel_wall_ratio"],
                        ]
                        for label, r in (("PoT", p), ("plain mean", n))
                    ),
                ],
                caption="PoT: verified submissions, robust aggregation; plain mean: the same "
                "miners, no verification. quality, wall × and rigs ×: ratio to centralized. "
                "wall: everything in this one process, one miner after another (the network's "
                "total work); rigs: per round the slowest miner plus the validator (every "
                "miner on its own rig, as deployed).",
            )
            if len(report["per_seed"]) > 1:
                print_table(
                    "Per seed",
                    ["seed", "centralized", "PoT", "ratio", "plain mean", "ratio "],
                    [
                        [
                            r["seed"],
                            r["centralized_metric"],
                            r["pot_metric"],
                            r["pot_quality_ratio"],
                            r["plain_mean_metric"],
                            r["plain_mean_quality_ratio"],
                        ]
                        for r in report["per_seed"]
                    ],
                )
            attacks = p["attacks"]
            naive_attacks = n["attacks"]
            rows = [
                [
                    "honest",
                    p["honest_submitted"],
                    p["honest_rejected"],
                    p["honest_submitted"] - p["honest_rejected"],
                    "-",
                    "-",
                    "-",
                ]
            ]
            for name, a in attacks.items():
                by = ", ".join(f"{k} {v}" for k, v in a["caught_by"].items())
                na = naive_attacks.get(name, {})
                rows.append(
                    [
                        name,
                        a["submitted"],
                        a["caught"],
                        a["missed"],
                        a["missed_after_recompute"],
                        by or "-",
                        na.get("missed", 0),
                    ]
                )
            print_table(
                "Submissions (PoT run): caught = rejected, missed = accepted",
                ["kind", "sent", "caught", "missed", "missed rc", "caught by", "naive"],
                rows,
                caption="honest: caught = wrongly rejected. missed rc: forgeries accepted "
                "although the validator re-computed them (the tolerance's promise: 0); other "
                "misses were not in the round's spot-check sample. naive: accepted by the "
                "plain-mean run without verification.",
            )
            print_table(
                "Bytes per submission",
                ["compression", "bytes", "fraction of raw fp32"],
                [
                    [k, v["bytes"], v["fraction_of_raw"]]
                    for k, v in report["bytes_per_submission"].items()
                ],
            )
            print_kv(
                "PoT one-process wall time by part, / centralized wall time",
                [(k, v) for k, v in p["wall_breakdown_vs_centralized"].items()],
            )
            print_kv(
                None,
                [
                    (
                        "floor (the first three rows: training, sampled recomputes, crypto)",
                        p["wall_floor_ratio"],
                    ),
                    ("spot checks (recomputed)", p["recomputed"]),
                    ("total bench seconds", report["total_seconds"]),
                ],
            )
            _targets(report)
        path = bench_result_path(get_state(ctx).home, f"quality-{t.name}", out)
        save_result(path, report, as_json=as_json)

    @bench_app.command("economics")
    def economics(
        ctx: typer.Context,
        task: Annotated[str, typer.Option(help="Task name (see configs/tasks/).")] = "digits",
        miners: Annotated[int, typer.Option(min=2, max=256, help="Miner slots per run.")] = 8,
        rounds: Annotated[
            int | None, typer.Option(min=1, help="Rounds per run (default: the task's).")
        ] = None,
        byzantine: Annotated[
            float, typer.Option(min=0.0, max=0.9, help="Fraction of slots playing the attack.")
        ] = 0.25,
        attack: Annotated[
            str, typer.Option(help="Attacks, comma-separated, or 'all' (one run each).")
        ] = "all",
        seeds: Annotated[
            str, typer.Option(help="Seeds, comma-separated (every run once per seed, pooled).")
        ] = "0",
        stake: Annotated[
            int | None,
            typer.Option(
                min=1,
                help="Minimum (and every identity's) stake [default: 10 POT, or the genesis' "
                "deterrence floor at the spot-check rate when higher].",
            ),
        ] = None,
        slash: Annotated[
            int | None, typer.Option(min=0, help="Forgery slash [default: the stake].")
        ] = None,
        probation_rounds: Annotated[
            int | None, typer.Option(min=0, help="Accepted rounds a new identity is on probation.")
        ] = None,
        spot_check_rate: Annotated[
            float | None,
            typer.Option(min=0.0001, max=1.0, help="Fraction of submissions re-computed."),
        ] = None,
        threads: Annotated[
            int, typer.Option(min=1, help="torch intra-op threads (1: steady on a busy machine).")
        ] = 1,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print JSON instead of tables.")
        ] = False,
        out: Annotated[Path | None, typer.Option(help="Write the JSON result here.")] = None,
    ) -> None:
        """Many rounds of the real protocol per attack: quality, rewards, slashes and net
        earnings per round of every kind of miner, with sybil re-entry of ejected attackers."""
        from pot_cli.sim import economics as econ
        from pot_cli.training.gradients import torch_threads
        from pot_cli.training.tasks import load_task

        t = load_task(task)
        seed_list = parse_seeds(seeds, "--seeds")
        cfg = econ.EconomicsConfig(
            task=t,
            rounds=rounds or t.bench_rounds,
            miners=miners,
            byzantine_fraction=byzantine,
            attacks=parse_kinds(attack, econ.ECONOMICS_ATTACKS, "--attack"),
            seeds=seed_list,
            stake=stake,
            slash=slash,
            probation_rounds=econ.DEFAULT_PROBATION_ROUNDS
            if probation_rounds is None
            else probation_rounds,
            spot_check_rate=econ.DEFAULT_SPOT_CHECK_RATE
            if spot_check_rate is None
            else spot_check_rate,
        )
        with torch_threads(threads):
            report = econ.economics_bench(cfg, progress=lambda m: err_console.print(m))
        report["config"]["torch_threads"] = threads
        if not as_json:
            _economics_tables(report)
        path = bench_result_path(get_state(ctx).home, f"economics-{t.name}", out)
        save_result(path, report, as_json=as_json)

    @bench_app.command("honest")
    def honest(
        ctx: typer.Context,
        task: Annotated[str, typer.Option(help="Task name.")] = "digits",
        submissions: Annotated[
            int, typer.Option(min=1, help="Honest submissions to verify.")
        ] = 10_000,
        miners: Annotated[int, typer.Option(min=1, max=256, help="Miners per round.")] = 20,
        compression: Annotated[str, typer.Option(help="none | int8 | topk[:FRACTION].")] = "none",
        seed: Annotated[str, typer.Option(help="Seed.")] = "honest",
        threads: Annotated[
            int,
            typer.Option(
                min=1,
                help="Default torch threads (the mix also uses explicit 1- and 2-thread numerics).",
            ),
        ] = 1,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print JSON instead of tables.")
        ] = False,
        out: Annotated[Path | None, typer.Option(help="Write the JSON result here.")] = None,
    ) -> None:
        """Honest submissions with mixed numerics (fp32/bf16/fp16, 1-2 threads, shuffled batch
        order), every one re-computed by the validator: how many are wrongly rejected."""
        from pot_cli.sim.calibration import honest_rejections
        from pot_cli.training.codec import Compression
        from pot_cli.training.gradients import torch_threads
        from pot_cli.training.tasks import load_task

        t = load_task(task)
        step = max(1, submissions // 20)
        mark = [0]

        def progress(done: int, total: int, rejected: int) -> None:
            if done - mark[0] >= step or done == total:
                mark[0] = done
                err_console.print(f"{done}/{total} submissions verified, {rejected} rejected")

        with torch_threads(threads):
            result = honest_rejections(
                t,
                submissions=submissions,
                miners=miners,
                seed=seed,
                compression=Compression.parse(compression),
                progress=progress,
            )
        report = {
            "bench": "honest",
            "compression": compression,
            "torch_threads": threads,
            **result.to_dict(),
        }
        report["targets"] = [
            {
                "name": "honest submissions rejected == 0",
                "value": result.rejected,
                "met": result.rejected == 0,
            }
        ]
        if not as_json:
            print_table(
                f"Honest submissions: {t.name}, {compression}",
                ["numerics", "submissions"],
                [[k, v] for k, v in sorted(result.by_numerics.items())],
            )
            print_kv(
                None,
                [
                    ("submissions", result.submissions),
                    ("rejected", result.rejected),
                    ("flagged, cleared by recompute", result.flagged),
                    ("largest relative error", result.max_rel_error),
                    ("tolerance", result.tolerance),
                    ("seconds", result.seconds),
                ],
            )
            _targets(report)
        path = bench_result_path(get_state(ctx).home, f"honest-{t.name}", out)
        save_result(path, report, as_json=as_json)

    @bench_app.command("calibrate")
    def calibrate_cmd(
        ctx: typer.Context,
        task: Annotated[str, typer.Option(help="Task name.")] = "digits",
        rounds: Annotated[int, typer.Option(min=2, help="Honest training rounds.")] = 60,
        checkpoints: Annotated[int, typer.Option(min=1, help="Checkpoints measured.")] = 4,
        miners: Annotated[int, typer.Option(min=2, help="Miners measured per checkpoint.")] = 3,
        compression: Annotated[str, typer.Option(help="none | int8 | topk[:FRACTION].")] = "none",
        as_json: Annotated[
            bool, typer.Option("--json", help="Print JSON instead of tables.")
        ] = False,
        out: Annotated[Path | None, typer.Option(help="Write the JSON result here.")] = None,
    ) -> None:
        """Spot-check tolerance calibration: largest honest error per numerics vs smallest
        forged error per forgery."""
        from pot_cli.sim.calibration import calibrate
        from pot_cli.training.codec import Compression
        from pot_cli.training.tasks import load_task

        t = load_task(task)
        rep = calibrate(
            t,
            rounds=rounds,
            miners=miners,
            checkpoints=checkpoints,
            compression=Compression.parse(compression),
        )
        report = {"bench": "calibrate", **rep.to_dict()}
        if not as_json:
            rows: list[list[Any]] = [["honest " + k, v] for k, v in rep.honest_max.items()]
            rows += [["forged " + k, v] for k, v in rep.forged_min.items()]
            rows.append(["one round stale (information)", rep.stale_one_round_min])
            rows.append(["lazy, 1/8 of the batch skipped (information)", rep.lazy_eighth_min])
            print_table(
                f"Spot-check calibration: {t.name}, {rep.compression} "
                f"(tolerance {rep.tolerance:g})",
                ["gradient", "relative error (honest: max, forged: min)"],
                rows,
            )
            print_kv(
                None,
                [
                    ("honest margin (tolerance / worst honest)", report["honest_margin"]),
                    ("forged margin (closest forged / tolerance)", report["forged_margin"]),
                ],
            )
        path = bench_result_path(get_state(ctx).home, f"calibrate-{t.name}", out)
        save_result(path, report, as_json=as_json)
