"""``pot bench network``: PBFT, round latency, scale and end-to-end training over real HTTP on
loopback (thin: the logic lives in :mod:`pot_cli.sim.http_bench`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pot_cli.errors import UsageError


def _ints(text: str, option: str, low: int) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not values or any(v < low for v in values) or len(set(values)) != len(values):
        raise UsageError(f"{option}: expected distinct integers >= {low}, got {text!r}")
    return values


def _whole(v: Any) -> int | None:
    """A measured value as a whole number for the tables (the JSON keeps it as measured)."""
    return None if v is None else round(float(v))


def _pbft_tables(res: dict[str, Any]) -> None:
    from pot_cli.cli.output import print_table

    rows = res["rows"]
    print_table(
        "PBFT commit latency over HTTP on loopback: empty blocks, pre-prepare → commit at the "
        "primary (ms)",
        ["n", "blocks", "p50", "p99", "mean", "max", "all commit p50", "blocks/s"],
        [
            [
                r["n"],
                r["blocks"],
                _whole(r["commit_latency_ms"]["p50"]),
                _whole(r["commit_latency_ms"]["p99"]),
                _whole(r["commit_latency_ms"]["mean"]),
                _whole(r["commit_latency_ms"]["max"]),
                _whole(r["slowest_replica_commit_ms"]["p50"]),
                r["blocks_per_s"],
            ]
            for r in rows
        ],
        caption=f"all commit: until the slowest validator committed. blocks/s with "
        f"{rows[0]['round_seconds']:g} s rounds (the shortest a devnet takes). Goal p50 <= "
        f"{res['goal_p50_ms_n4']:g} ms at n = 4: "
        + {True: "met", False: "NOT met", None: "not measured"}[res["met_goal_n4"]],
    )
    b0 = rows[0]["breakdown"]
    print_table(
        "Where an empty block's time goes: validator CPU per block (ms, all validators)",
        ["n", "total", "HTTP", "PBFT", "derive", "rest", "msgs/block", "core share"],
        [
            [
                r["n"],
                _whole(r["breakdown"]["validator_cpu_ms_per_block"]),
                _whole(r["breakdown"]["cpu_split_ms_per_block"]["http_requests"]),
                r["breakdown"]["cpu_split_ms_per_block"]["pbft_sans_io"],
                r["breakdown"]["cpu_split_ms_per_block"]["derivations"],
                _whole(r["breakdown"]["cpu_split_ms_per_block"]["rest"]),
                r["breakdown"]["peer_messages_per_block"],
                r["breakdown"]["validator_cpu_share"],
            ]
            for r in rows
        ],
        caption="total: user + system CPU of all validator processes per committed block; "
        "HTTP: msgs/block (peer POSTs: PBFT and beacon) x the CPU of one loopback request "
        f"(client {b0['http_get_status']['httpx_client_cpu_ms']:g} ms with httpx, as the "
        f"peer transport sends, + server {b0['http_get_status']['server_cpu_ms']:g} ms, "
        "measured on GET /v1/status); PBFT: the replica state machine with Ed25519, no IO "
        "(the pot bench consensus simulator, same run); derive: the backups' re-derivations; "
        "rest: the remainder (JSON and request bodies, thread hand-offs, stores, the round). "
        "core share: validator CPU over the wall time, in cores (2 here). Beside it: one "
        f"SQLite synchronous=FULL commit takes {b0['sqlite_full_commit_ms']['p50']:g} ms "
        "(p50) on this disk, a GET /v1/status "
        f"{b0['http_get_status']['latency_ms']['p50']:g} ms, and a raw asyncio HTTP/1.1 "
        f"client {b0['http_get_status']['raw_client_cpu_ms']:g} ms of CPU per request.",
    )


def _round_table(res: dict[str, Any]) -> None:
    from pot_cli.cli.output import print_table

    rows = res["rows"]
    print_table(
        "Round latency: deadline → block committed, as each validator saw it (ms)",
        ["task", "rounds", "recomp.", "p50", "p99", "worst", "→ prop.", "→ commit", "derive"],
        [
            [
                r["task"],
                r["rounds"],
                r["recomputed_fraction"],
                _whole(r["deadline_to_commit_ms"]["p50"]),
                _whole(r["deadline_to_commit_ms"]["p99"]),
                _whole(r["worst_validator_per_round_ms"]["p99"]),
                _whole(r["deadline_to_proposal_ms"]["p50"]),
                _whole(r["proposal_to_commit_ms"]["p50"]),
                _whole(r["backup_derivation_ms_mean"]),
            ]
            for r in rows
        ],
        caption=f"{rows[0]['miners']} honest simulated miners, 4 validators, "
        f"{rows[0]['round_seconds']:g} s rounds after an unmeasured warm-up round (the "
        f"probation round), spot-check rate {rows[0]['spot_check_rate']:g}. recomp.: "
        "fraction of the submissions the primary re-computed (the sample and the flags). "
        "worst: p99 of each round's slowest validator. → prop. / → commit: p50 of the "
        "primary's deadline → pre-prepare and pre-prepare → commit. derive: a backup's "
        "re-derivation of a block, mean.",
    )


def _scale_table(res: dict[str, Any]) -> None:
    from pot_cli.cli.output import print_table
    from pot_cli.sim import http_bench

    print_table(
        "Scale: simulated miners against 4 validators",
        ["miners", "round s", "ok", "p50", "max", "accepted", "refused", "B/sub", "CPU ms/sub"],
        [
            [
                r["miners"],
                r["round_seconds"],
                f"{r['rounds_ok']}/{r['rounds']}",
                _whole(r["commit_after_deadline_ms"]["p50"]),
                _whole(r["commit_after_deadline_ms"]["max"]),
                r["accepted"],
                sum(v for k, v in r["outcomes"].items() if k not in http_bench.TAKEN),
                r["validator_bytes_per_kept"],
                r["validator_cpu_ms_per_submission"],
            ]
            for r in res["rows"]
        ],
        caption=f"{res['rule']}. Largest passing: {res['largest_passing'] or 'none'}. ok: "
        "rounds that succeeded. p50 / max: block committed − the validator's own deadline "
        "(ms, every validator, every round). refused: POSTs (miners x validators) not kept. "
        "B/sub: payload bytes a validator kept per submission. CPU ms/sub: user + system "
        "CPU of all validator processes over the measured rounds / (submissions x "
        "validators), consensus and relays included.",
    )


def _training_table(res: dict[str, Any]) -> None:
    from pot_cli.cli.output import print_table

    print_table(
        f"End-to-end training: devnet vs centralized on the same samples ({res['task']}, "
        f"{res['miners']} {'pot mine processes' if res['miner_processes'] else 'miners'}, "
        f"{res['rounds']} rounds of {res['round_seconds']:g} s)",
        ["", res["metric"], "samples/s"],
        [
            ["devnet (PoT)", res["pot_metric"], _whole(res["pot_samples_per_s"])],
            ["centralized", res["centralized_metric"], _whole(res["centralized_samples_per_s"])],
            ["ratio", res["quality_ratio"], res["centralized_over_pot"]],
        ],
        caption="quality ratio: PoT relative to centralized (>= 1: PoT at least as good); "
        "samples/s ratio: centralized ÷ PoT. PoT samples/s: accepted samples / wall time "
        "from the first measured round's opening to its last block's commit at validator "
        "0; centralized: the same samples in the same order, one process, timed by "
        f"chain_quality. Chain replay: {res['replay_mismatch'] or 'every block re-derived'}.",
    )


def bench_network(
    ctx: typer.Context,
    part: Annotated[
        str, typer.Option("--part", help="pbft, round, scale, training (comma-separated) or all.")
    ] = "all",
    n: Annotated[str, typer.Option("--n", help="Validator counts for pbft.")] = "4,7",
    blocks: Annotated[
        int, typer.Option("--blocks", min=1, help="Empty blocks measured per n (pbft).")
    ] = 30,
    miners: Annotated[
        str,
        typer.Option("--miners", help="Miner counts for scale, tried in order until one fails."),
    ] = "100,500,1000,2000",
    rounds: Annotated[
        int | None,
        typer.Option(
            "--rounds", min=1, help="Rounds per run [default: round 8, scale 3, training 30]."
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="Task for every part [default: round tiny and digits, scale tiny, training "
            "digits].",
        ),
    ] = None,
    round_seconds: Annotated[
        float | None,
        typer.Option(
            "--round-seconds",
            min=0.5,
            max=600,
            help="Round length for scale [default: max(4, 0.025 s x miners)].",
        ),
    ] = None,
    real_miners: Annotated[
        bool,
        typer.Option(
            "--real-miners",
            help="Train with pot mine processes (one per miner) instead of simulated miners.",
        ),
    ] = False,
    keep: Annotated[
        Path | None,
        typer.Option("--keep", help="Lay the devnets out here and keep them (logs, stores)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write the JSON result here.")] = None,
) -> None:
    """The network over real HTTP on loopback: PBFT commit latency (n = 4, 7), round latency
    with verification, the largest number of miners a 4-validator devnet takes per round,
    and end-to-end training against centralized, side by side."""
    from pot_cli.cli.context import get_state
    from pot_cli.cli.output import err_console, error, parse_kinds, save_result
    from pot_cli.paths import bench_result_path
    from pot_cli.sim import http_bench

    if keep is not None and keep.exists() and any(keep.iterdir()):
        raise UsageError(f"--keep {keep}: not empty; pick a new directory")
    cfg = http_bench.NetworkBenchConfig(
        parts=parse_kinds(part, http_bench.PARTS, "--part"),
        ns=_ints(n, "--n", 4),
        blocks=blocks,
        scale_miners=_ints(miners, "--miners", 1),
        rounds=rounds,
        task=task,
        scale_round_seconds=round_seconds,
        real_miners=real_miners,
        workdir=keep,
    )
    if task is not None:
        from pot_cli.training.tasks import load_task

        load_task(task)  # an unknown task is a usage error before anything starts
    report = http_bench.network_bench(cfg, progress=lambda m: err_console.print(m))
    tables = {
        "pbft": _pbft_tables,
        "round": _round_table,
        "scale": _scale_table,
        "training": _training_table,
    }
    failed = [p for p in cfg.parts if "error" in report.get(p, {})]
    if not as_json:
        for p in cfg.parts:
            section = report.get(p, {})
            if section.get("rows") or (p == "training" and "error" not in section):
                tables[p](section)
    save_result(bench_result_path(get_state(ctx).home, "network", out), report, as_json=as_json)
    for p in failed:
        error(f"{p}: {report[p]['error']}")
    if failed:
        error(f"the devnets (logs, stores) are kept under {report['kept']}")
        raise typer.Exit(1)


def register(bench_app: typer.Typer) -> None:
    """Add ``pot bench network``."""
    bench_app.command("network")(bench_network)
