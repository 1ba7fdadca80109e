"""``pot devnet``: the whole network on this machine (thin: the launcher is pot_cli.node.devnet)."""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer


def devnet(
    home: Annotated[
        Path | None,
        typer.Option("--home", help="Directory for the network (default: a new temporary one)."),
    ] = None,
    validators: Annotated[int, typer.Option("--validators", help="Validators (n >= 4).")] = 4,
    miners: Annotated[int, typer.Option("--miners", help="Miners.")] = 4,
    byzantine: Annotated[
        int, typer.Option("--byzantine", help="How many of the miners cheat (--attack).")
    ] = 0,
    attack: Annotated[
        str,
        typer.Option(
            "--attack", help="What the Byzantine miners do: lazy, noise, stale, mixed, ..."
        ),
    ] = "lazy",
    rounds: Annotated[
        int, typer.Option("--rounds", help="Rounds to commit once every miner is up.")
    ] = 20,
    task: Annotated[str, typer.Option("--task", help="Training task.")] = "digits",
    round_seconds: Annotated[
        float, typer.Option("--round-seconds", help="Submission window of each round.")
    ] = 3.0,
    compression: Annotated[
        str, typer.Option("--compression", help="Wire compression (genesis): none, int8, topk:0.2.")
    ] = "int8",
    dashboard: Annotated[
        bool,
        typer.Option("--dashboard", help="Watch it in `pot dashboard` (q ends the devnet)."),
    ] = False,
    record: Annotated[
        Path | None,
        typer.Option("--record", help="Record the session for `pot dashboard --replay FILE`."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run the whole network on this machine: a genesis, validators and miners, each its own
    process on loopback, until `--rounds` blocks are committed; then report rounds committed and
    on time, view changes, the model's quality against centralized training on the same
    samples, and each miner's accepted/rejected/slashed/earnings. Exits 1 when the network
    failed. Never leaves a process behind."""
    from pot_cli.cli.mine import solo_attacks
    from pot_cli.cli.output import console, emit_json, error
    from pot_cli.errors import PotError
    from pot_cli.node.devnet import Devnet, DevnetSpec, devnet_report, write_network
    from pot_cli.training.tasks import task_names

    if attack not in solo_attacks():
        choices = ", ".join(solo_attacks())
        raise typer.BadParameter(f"unknown attack {attack!r} (one of: {choices})")
    if task not in task_names():
        raise typer.BadParameter(f"unknown task {task!r} (one of: {', '.join(task_names())})")
    spec = DevnetSpec(
        validators, miners, byzantine, attack, rounds, task, round_seconds, compression
    )
    root = home if home is not None else Path(tempfile.mkdtemp(prefix="pot-devnet-"))
    layout = write_network(root, spec)

    def _terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    say = (lambda *a: None) if as_json else console.print
    say(
        f"pot devnet: {validators} validators, {miners} miners ({byzantine} Byzantine: "
        f"{attack}), task {task}, {rounds} rounds of {round_seconds:g} s, in {root}"
    )
    statuses: dict[str, Any] = {}
    failure = ""
    net = Devnet(layout)
    try:
        net.start_validators()
        net.wait_ready(timeout=180)
        say(f"validators up after {time.monotonic() - started:.1f} s; starting the miners")
        net.start_miners()
        first = net.wait_miners(timeout=180)
        say(
            f"miners up after {time.monotonic() - started:.1f} s; the rounds from block "
            f"{first} on count"
        )
        limit = 30 + rounds * (4 * round_seconds + 15)
        miner_urls = [m.url for m in layout.miners]
        validator_urls = [v.url for v in layout.validators]
        if dashboard:
            from pot_cli.tui.app import run_dashboard

            run_dashboard(
                miner_urls, validator_urls, genesis=layout.genesis.to_dict(), record=record
            )
            statuses = net.statuses()
            if min((s["height"] for s in statuses.values() if s), default=0) < first + rounds - 1:
                failure = "the dashboard was closed before the rounds were committed"
        elif record is not None:
            from pot_cli.tui.sources.recording import record_session

            with record_session(
                record,
                miners=miner_urls,
                validators=validator_urls,
                genesis=layout.genesis.to_dict(),
                evaluate=True,
            ):
                statuses = _follow(net, first + rounds - 1, limit, as_json)
        else:
            statuses = _follow(net, first + rounds - 1, limit, as_json)
    except KeyboardInterrupt:
        failure = "interrupted"
        statuses = net.statuses()
    except PotError as exc:
        failure = str(exc)
        statuses = net.statuses()
    finally:
        net.stop_all()
        signal.signal(signal.SIGTERM, previous)
    report = devnet_report(layout, statuses, time.monotonic() - started, net.first_round)
    if failure:
        report["ok"] = False
        report["failure"] = failure
    if as_json:
        emit_json(report)
    else:
        _print_report(report)
    if not report["ok"]:
        if not as_json:
            error(f"the devnet failed: {failure or _why(report)}")
        raise typer.Exit(1)


def _follow(net: Any, target: int, limit: float, quiet: bool) -> dict[str, Any]:
    """Show live progress until every validator committed block ``target``."""
    from rich.live import Live
    from rich.table import Table

    from pot_cli.cli.output import console
    from pot_cli.errors import PotError

    deadline = time.monotonic() + limit

    def table(statuses: dict[str, Any]) -> Table:
        t = Table(title=f"pot devnet: up to block {target}", expand=False)
        for col in ("validator", "height", "view", "primary", "phase", "peers up"):
            t.add_column(col)
        for name, s in statuses.items():
            if s is None:
                t.add_row(name, "-", "-", "-", "down", "-")
            else:
                t.add_row(name, str(s["height"]), str(s["view"]), str(s["primary"]),
                          s["phase"], str(s["peers_up"]))  # fmt: skip
        return t

    statuses = net.statuses()
    live = None if quiet else Live(table(statuses), console=console, refresh_per_second=2)
    if live is not None:
        live.start()
    try:
        while True:
            net.check_all_alive()
            statuses = net.statuses()
            if live is not None:
                live.update(table(statuses))
            heights = [s["height"] for s in statuses.values() if s is not None]
            if heights and len(heights) == len(statuses) and min(heights) >= target:
                return statuses
            if time.monotonic() > deadline:
                raise PotError(f"not every validator reached height {target} in {limit:.0f} s")
            time.sleep(0.5)
    finally:
        if live is not None:
            live.stop()


def _why(report: dict[str, Any]) -> str:
    if report["rounds_committed"] < report["rounds_target"]:
        return f"{report['rounds_committed']} of {report['rounds_target']} rounds committed"
    if not report["validators_agree"]:
        return "the validators do not agree on the head"
    if report["cheating_pays"]:
        return "a Byzantine miner earned as much as an honest one"
    return "see the report"


def _print_report(r: dict[str, Any]) -> None:
    from rich.table import Table

    from pot_cli.cli.output import console

    q = r["quality"]
    console.print(
        f"\n[bold]{'OK' if r['ok'] else 'FAILED'}[/]: {r['rounds_committed']}/{r['rounds_target']} "
        f"rounds committed, {r['rounds_on_time']} on time, {r['view_changes']} view changes, "
        f"validators agree: {r['validators_agree']} ({r['wall_s']} s)"
    )
    console.print(
        f"model quality: {q['metric']} {q['pot_metric']:.4f} vs centralized "
        f"{q['centralized_metric']:.4f} on the same {q['samples']} samples: "
        f"ratio [bold]{r['quality_ratio']:.4f}[/]"
    )
    pot_sps, central_sps = q.get("pot_samples_per_s"), q.get("centralized_samples_per_s")
    if pot_sps and central_sps:
        console.print(
            f"throughput: the network trained {pot_sps:,.0f} samples/s (rounds included); "
            f"centralized training on this machine {central_sps:,.0f} samples/s"
        )
    t = Table(title="miners")
    for col in ("miner", "byzantine", "accepted", "rejected", "slashed", "earnings (POT)"):
        t.add_column(col)
    for m in r["miners"]:
        t.add_row(m["name"], m["attack"] or "", str(m["accepted"]), str(m["rejected"]),
                  str(m["slashed"]), f"{m['earnings_pot']:+.4f}")  # fmt: skip
    console.print(t)
    console.print(f"chain: {r['chain']}\nlogs:  {r['home']}/*/node.log")


def register(app: typer.Typer, *, panel: str) -> None:
    app.command("devnet", rich_help_panel=panel)(devnet)
