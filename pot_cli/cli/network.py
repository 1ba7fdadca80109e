"""``pot sim network``: the whole protocol (validators, miners, PBFT, the PoT application) on
a seeded virtual network (thin: the logic is in pot_cli.sim.network)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from pot_cli.errors import UsageError


def _parse_faults(text: str) -> tuple[str, ...]:
    from pot_cli.cli.output import parse_kinds
    from pot_cli.sim.network import FAULTS

    return parse_kinds(text, FAULTS, "--fault")


def sim_network(
    seed: Annotated[
        int | None, typer.Option("--seed", help="Run this one seed (replays a failure).")
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Number of seeds to sweep.", min=1)] = 30,
    start: Annotated[int, typer.Option("--start", help="First seed of the sweep.", min=0)] = 0,
    fault: Annotated[
        str, typer.Option("--fault", help="Fault kinds, comma-separated, or 'all'.")
    ] = "all",
    rounds: Annotated[
        int, typer.Option("--rounds", help="Rounds each run must commit.", min=1)
    ] = 3,
    task: Annotated[str, typer.Option("--task", help="Training task (tiny: fast).")] = "tiny",
    save_chain: Annotated[
        Path | None,
        typer.Option(
            "--save-chain",
            help="With --seed: write the run's chain (genesis, certified blocks, payloads) to "
            "this SQLite file, for `pot chain verify --chain FILE`.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Validators (the PoT application under PBFT) and miners (honest and forging) on a seeded
    virtual network with loss, partitions, crashes, a silent validator or a withholding
    primary; agreement, ledger conservation, honest miners never punished, the chain
    re-derivable and liveness checked. Exit 1 on a violation, with the replay command."""
    from pot_cli.cli.output import emit_json, error, print_kv, print_table
    from pot_cli.sim.network import NetworkConfig, NetworkSimulation, plan_network_seed

    faults = _parse_faults(fault)
    if save_chain is not None and seed is None:
        raise UsageError("--save-chain: give one --seed")
    if seed is not None:
        kind = faults[0] if len(faults) == 1 else plan_network_seed(seed, faults)
        sim = NetworkSimulation(NetworkConfig(seed=seed, fault=kind, rounds=rounds, task=task))
        result = sim.run()
        if save_chain is not None:
            from pot_cli.node.chainstore import ChainStore

            store = ChainStore(save_chain)
            try:
                sim.save_chain(store)
            finally:
                store.close()
        summary = result.summary()
        if as_json:
            emit_json(summary)
        else:
            print_kv(
                f"network simulation seed {seed}",
                [(k, v) for k, v in summary.items() if k != "violations"],
            )
        if not result.ok:
            for v in result.violations:
                error(v)
            error(f"seed {seed} failed; replay with: {result.config.replay_command()}")
            raise typer.Exit(1)
        return
    started = time.process_time()
    stats: dict[str, dict[str, Any]] = {}
    failures: list[dict[str, Any]] = []
    for i, s in enumerate(range(start, start + seeds)):
        kind = plan_network_seed(s, faults)
        result = NetworkSimulation(
            NetworkConfig(seed=s, fault=kind, rounds=rounds, task=task)
        ).run()
        row = stats.setdefault(
            kind,
            {
                "runs": 0,
                "failed": 0,
                "view_changes": 0,
                "slashed": 0,
                "accepted": 0,
                "late": 0,
                "forged": 0,
                "escaped": 0,
            },
        )
        row["runs"] += 1
        row["failed"] += 0 if result.ok else 1
        row["view_changes"] += result.view_changes
        row["slashed"] += result.slashed
        row["accepted"] += result.honest_accepted
        row["late"] += result.honest_late
        row["forged"] += result.forged
        row["escaped"] += result.escaped
        if not result.ok:
            failures.append(result.summary())
            print(f"FAILED seed {s}: {result.violations[0]}", file=sys.stderr)
            print(f"  replay: {result.config.replay_command()}", file=sys.stderr)
        if (i + 1) % 500 == 0 and not as_json:
            print(f"... {i + 1}/{seeds} seeds, {len(failures)} failed", file=sys.stderr)
    cpu = time.process_time() - started
    summary = {
        "seeds": seeds,
        "start": start,
        "faults": list(faults),
        "rounds": rounds,
        "task": task,
        "failed": len(failures),
        "cpu_s": round(cpu, 2),
        "by_fault": [{"fault": k, **v} for k, v in sorted(stats.items())],
        "failures": failures,
    }
    if as_json:
        emit_json(summary)
    else:
        print_table(
            f"network simulation: {seeds} seeds from {start}, {len(failures)} failed, "
            f"{cpu:.1f} s CPU",
            [
                "fault",
                "runs",
                "failed",
                "view ch.",
                "slashed",
                "honest ok",
                "late",
                "escaped",
            ],
            [
                [
                    k,
                    v["runs"],
                    v["failed"],
                    v["view_changes"],
                    v["slashed"],
                    v["accepted"],
                    v["late"],
                    f"{v['escaped']}/{v['forged']}",
                ]
                for k, v in sorted(stats.items())
            ],
            caption=(
                "view ch.: view changes. honest ok / late: verdicts of honest miners' "
                "submissions in the committed blocks (late: the primary froze the round "
                "before they arrived; no penalty). slashed: proven forgeries, stake slashed "
                "and identity ejected. escaped: forged submissions accepted / forged "
                "submissions verified (a forgery that only a re-compute catches escapes when "
                "the sample misses it: rate 0.5)."
            ),
        )
    if failures:
        for fl in failures:
            error(f"seed {fl['seed']} failed; replay with: {fl['replay']}")
        raise typer.Exit(1)


def register(sim_app: typer.Typer) -> None:
    sim_app.command("network")(sim_network)
