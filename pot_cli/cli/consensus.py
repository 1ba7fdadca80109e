"""``pot sim consensus`` and ``pot bench consensus`` (thin: logic in pot_cli.consensus)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from pot_cli.errors import UsageError


def _parse_ns(text: str) -> tuple[int, ...]:
    try:
        ns = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--n: expected comma-separated integers, got {text!r}") from None
    if not ns or any(n < 4 or n > 100 for n in ns):
        raise UsageError("--n: each replica count must be in [4, 100]")
    return ns


def _parse_faults(text: str) -> tuple[str, ...]:
    from pot_cli.cli.output import parse_kinds
    from pot_cli.sim.consensus import FAULT_KINDS

    return parse_kinds(text, FAULT_KINDS, "--fault")


def sim_consensus(
    seed: Annotated[
        int | None, typer.Option("--seed", help="Run this one seed (replays a failure).")
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Number of seeds to sweep.", min=1)] = 100,
    start: Annotated[int, typer.Option("--start", help="First seed of the sweep.", min=0)] = 0,
    n: Annotated[
        str, typer.Option("--n", help="Replica counts, comma-separated (sweep round-robin).")
    ] = "4,7,10",
    fault: Annotated[
        str, typer.Option("--fault", help="Fault kinds, comma-separated, or 'all'.")
    ] = "all",
    blocks: Annotated[
        int, typer.Option("--blocks", help="Blocks each run must commit.", min=1)
    ] = 6,
    wire: Annotated[
        bool, typer.Option("--wire", help="Send every message as JSON text (slower).")
    ] = False,
    derive_time: Annotated[
        int,
        typer.Option(
            "--derive-time",
            help="Virtual ms the application takes to re-derive a proposal (validate answers "
            "PENDING meanwhile), as pot's block validation does.",
            min=0,
        ),
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Deterministic PBFT simulation: seeded network faults, crashes and Byzantine replicas,
    with agreement, validity, evidence, durability and bounded memory checked as it runs and
    liveness at the end."""
    from pot_cli.cli.output import emit_json, error, print_kv, print_table
    from pot_cli.sim.consensus import SimConfig, Simulation, plan_seed

    ns = _parse_ns(n)
    faults = _parse_faults(fault)
    if seed is not None:
        plan_n, plan_fault = plan_seed(seed, ns, faults)
        run_n = ns[0] if len(ns) == 1 else plan_n
        run_fault = faults[0] if len(faults) == 1 else plan_fault
        config = SimConfig(
            seed=seed, n=run_n, fault=run_fault, blocks=blocks, wire=wire, derive_time=derive_time
        )
        result = Simulation(config).run()
        if as_json:
            emit_json(result.summary())
        else:
            print_kv(
                f"consensus simulation seed {seed}",
                [(k, v) for k, v in result.summary().items() if k != "violations"],
            )
        if not result.ok:
            for v in result.violations:
                error(v)
            error(f"seed {seed} failed; replay with: {result.replay}")
            raise typer.Exit(1)
        return
    started = time.process_time()
    stats: dict[tuple[int, str], dict[str, Any]] = {}
    failures: list[dict[str, Any]] = []
    for i, s in enumerate(range(start, start + seeds)):
        run_n, run_fault = plan_seed(s, ns, faults)
        config = SimConfig(
            seed=s, n=run_n, fault=run_fault, blocks=blocks, wire=wire, derive_time=derive_time
        )
        result = Simulation(config).run()
        row = stats.setdefault(
            (run_n, run_fault),
            {"runs": 0, "failed": 0, "events": 0, "view_changes": 0, "evidence": 0, "transfers": 0},
        )
        row["runs"] += 1
        row["failed"] += 0 if result.ok else 1
        row["events"] += result.events
        row["view_changes"] += result.view_changes
        row["evidence"] += result.evidence
        row["transfers"] += result.state_transfers
        if not result.ok:
            failures.append(result.summary())
            print(f"FAILED seed {s}: {result.violations[0]}", file=sys.stderr)
            print(f"  replay: {result.replay}", file=sys.stderr)
        if (i + 1) % 500 == 0 and not as_json:
            print(f"... {i + 1}/{seeds} seeds, {len(failures)} failed", file=sys.stderr)
    cpu = time.process_time() - started
    summary = {
        "seeds": seeds,
        "start": start,
        "ns": list(ns),
        "faults": list(faults),
        "blocks": blocks,
        "failed": len(failures),
        "cpu_s": round(cpu, 2),
        "by_kind": [{"n": k[0], "fault": k[1], **v} for k, v in sorted(stats.items())],
        "failures": failures,
    }
    if as_json:
        emit_json(summary)
    else:
        rows = [
            [
                k[1],
                k[0],
                v["runs"],
                v["failed"],
                v["events"] // max(1, v["runs"]),
                v["view_changes"],
                v["evidence"],
                v["transfers"],
            ]
            for k, v in sorted(stats.items(), key=lambda kv: (kv[0][1], kv[0][0]))
        ]
        print_table(
            f"consensus simulation: {seeds} seeds from {start}, {len(failures)} failed, "
            f"{cpu:.1f} s CPU",
            [
                "fault",
                "n",
                "runs",
                "failed",
                "events per run",
                "view changes",
                "evid.",
                "state xfers",
            ],
            rows,
            caption="view changes, evid. (equivocation proofs) and state xfers (state "
            "transfers): totals over the honest replicas of all runs of the row.",
        )
    if failures:
        for fl in failures:
            error(f"seed {fl['seed']} failed; replay with: {fl['replay']}")
        raise typer.Exit(1)


def bench_consensus(
    ctx: typer.Context,
    blocks: Annotated[
        int, typer.Option("--blocks", help="Blocks per throughput run.", min=10)
    ] = 200,
    n: Annotated[str, typer.Option("--n", help="Replica counts, comma-separated.")] = "4,7,10",
    vc_runs: Annotated[
        int, typer.Option("--vc-runs", help="Primary-crash runs for view-change latency.", min=1)
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the JSON result.")
    ] = None,
) -> None:
    """Committed blocks per CPU second and commit latency (n = 4, 7, 10, real Ed25519
    signatures), and view-change latency after a primary crash."""
    from pot_cli.cli.context import get_state
    from pot_cli.cli.output import print_table, save_result
    from pot_cli.paths import bench_result_path
    from pot_cli.sim.consensus_bench import run_bench

    result = run_bench(list(_parse_ns(n)), blocks, vc_runs)
    target = bench_result_path(get_state(ctx).home, "consensus", out)
    if as_json:
        save_result(target, result, as_json=True)
        return
    print_table(
        "PBFT throughput (real Ed25519, one verifier per replica) and commit latency",
        ["n", "blocks", "blk/cpu-s", "per replica", "verifies", "lat ms", "p50", "p99"],
        [
            [
                r["n"],
                r["blocks"],
                r["blocks_per_cpu_s"],
                r["blocks_per_cpu_s_per_replica"],
                r["signature_verifications"],
                r["commit_latency_ms_mean"],
                r["commit_latency_ms_p50"],
                r["commit_latency_ms_p99"],
            ]
            for r in result["throughput"]
        ],
        caption="blk/cpu-s: blocks per CPU second with all n replicas on one core; latency in "
        f"virtual ms. Goal >= {result['goals']['blocks_per_cpu_s_n4']:.0f} at n = 4: "
        f"{'met' if result['goals']['met_blocks_per_cpu_s_n4'] else 'NOT met'}",
    )
    vc = result["view_change"]
    print_table(
        "View change: primary crash -> first commit in the new view (virtual ms)",
        ["n", "runs", "mean", "min", "max", "target", "within"],
        [
            [
                vc["n"],
                vc["runs"],
                vc["latency_ms_mean"],
                vc["latency_ms_min"],
                vc["latency_ms_max"],
                vc["target_ms"],
                vc["within_target"],
            ]
        ],
        caption=f"target = timeout {vc['view_change_timeout_ms']} + 3 x max delay "
        f"{vc['max_message_delay_ms']}; within = runs at or under it",
    )
    save_result(target, result, as_json=False)


def register(bench_app: typer.Typer, sim_app: typer.Typer) -> None:
    """Add the consensus commands to ``pot bench`` and ``pot sim``."""
    sim_app.command("consensus")(sim_consensus)
    bench_app.command("consensus")(bench_consensus)
