"""``pot dashboard``: the live Textual dashboard (thin: the app is pot_cli.tui)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from pot_cli.cli.context import CliState


def _url(text: str) -> str:
    text = text.strip().rstrip("/")
    return text if "://" in text else f"http://{text}"


def defaults_from_config(state: CliState) -> tuple[list[str], list[str], Path | None]:
    """This node's miner status API (a miner home), its validators, and its genesis file (a
    validator home), from its config (the defaults when there is no config file)."""
    from pot_cli.config import load_config

    cfg = load_config(state.config_path, missing_ok=True)
    miners = [_url(cfg.miner.api_listen)] if cfg.node.role == "miner" else []
    validators = [_url(u) for u in cfg.network.validators]
    genesis = None
    if cfg.node.role == "validator":
        g = Path(cfg.validator.genesis)
        genesis = g if g.is_absolute() else state.home / g
    return miners, validators, genesis


def load_genesis_dict(path: Path) -> dict[str, Any]:
    from pot_cli.protocol.genesis import load_genesis

    return load_genesis(path).to_dict()


def dashboard(
    ctx: typer.Context,
    miner: Annotated[
        list[str] | None,
        typer.Option(
            "--miner",
            help="A miner's status API URL (repeatable; default: this "
            "node's [miner] api_listen when it is a miner).",
        ),
    ] = None,
    validator: Annotated[
        list[str] | None,
        typer.Option(
            "--validator",
            help="A validator's API URL (repeatable; default: this node's [network] validators).",
        ),
    ] = None,
    genesis: Annotated[
        Path | None,
        typer.Option(
            "--genesis",
            help="The network's genesis file: the spot-check rate and "
            "the centralized baseline (default: a validator home's own).",
        ),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option("--replay", help="Play a recorded session instead (no network)."),
    ] = None,
    speed: Annotated[
        float,
        typer.Option("--speed", min=0, help="Replay speed (2 = twice as fast; 0 = all at once)."),
    ] = 1.0,
    record: Annotated[
        Path | None,
        typer.Option("--record", help="Record the session to this file (JSON lines)."),
    ] = None,
    evaluate: Annotated[
        bool,
        typer.Option(
            "--eval/--no-eval",
            help="Evaluate each round's model here (torch, one thread) for the metric plot.",
        ),
    ] = True,
    pot_price: Annotated[
        float | None,
        typer.Option(
            "--pot-price",
            min=0,
            help="Price of one POT in your electricity currency, for net earnings.",
        ),
    ] = None,
    screenshots: Annotated[
        Path | None,
        typer.Option(
            "--screenshots",
            hidden=True,
            help="With --replay: save each tab as SVG into this directory and exit.",
        ),
    ] = None,
    size: Annotated[
        str, typer.Option("--size", hidden=True, help="Screenshot size, COLSxROWS.")
    ] = "120x36",
) -> None:
    """Watch a miner and the validators live in the terminal: the rig's GPUs, the model
    learning, consensus, earnings and events (read-only). Keys: tab / 1-5 switch tabs, / filters
    events, ? help, q quits."""
    from pot_cli.cli.context import get_state
    from pot_cli.errors import UsageError

    if replay is not None:
        if miner or validator or record is not None:
            raise UsageError("--replay plays a recording: no --miner, --validator or --record")
        if screenshots is not None:
            from pot_cli.tui.screenshots import save_screenshots

            cols, _, rows = size.partition("x")
            if not (cols.isdigit() and rows.isdigit()):
                raise UsageError(f"--size: expected COLSxROWS, e.g. 120x36, got {size!r}")
            for path in save_screenshots(replay, screenshots, (int(cols), int(rows))):
                typer.echo(path)
            return
        from pot_cli.tui.app import run_replay

        run_replay(replay, speed=speed, pot_price=pot_price)
        return
    state = get_state(ctx)
    miners, validators, home_genesis = defaults_from_config(state)
    if miner:
        miners = [_url(u) for u in miner]
    if validator:
        validators = [_url(u) for u in validator]
    if not miners and not validators:
        raise UsageError("nothing to watch: give --miner URL and/or --validator URL")
    genesis_path = genesis or (home_genesis if home_genesis and home_genesis.exists() else None)
    genesis_dict = load_genesis_dict(genesis_path) if genesis_path is not None else None
    from pot_cli.tui.app import run_dashboard

    run_dashboard(
        miners,
        validators,
        genesis=genesis_dict,
        record=record,
        evaluate=evaluate,
        pot_price=pot_price,
    )


def register(app: typer.Typer, *, panel: str) -> None:
    app.command("dashboard", rich_help_panel=panel)(dashboard)
