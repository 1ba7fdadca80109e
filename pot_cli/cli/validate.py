"""``pot validate``: run a validator (thin: the node is pot_cli.node.validator)."""

from __future__ import annotations

from typing import Annotated

import typer


def validate(
    ctx: typer.Context,
    listen: Annotated[
        str | None,
        typer.Option("--listen", help="host:port of the API (default: [network] listen)."),
    ] = None,
) -> None:
    """Run a validator: verify miners' gradients, agree on each round's block by PBFT with the
    other validators, serve the public API (`/v1`, `/metrics`, `/docs`). Its home needs the key
    (`pot init --role validator`), `config.toml` and the network's genesis file. Ctrl-C stops it
    cleanly; a restart resumes from its write-ahead log."""
    from pot_cli.cli.context import get_state
    from pot_cli.cli.logs import setup_logging
    from pot_cli.config import load_config
    from pot_cli.crypto import load_key_file
    from pot_cli.errors import UsageError
    from pot_cli.node.validator import plan_validator, serve_validator

    state = get_state(ctx)
    cfg = load_config(state.config_path)
    if cfg.node.role != "validator":
        raise UsageError(
            f"{state.config_path}: [node] role is {cfg.node.role!r}; pot validate needs a "
            "validator home (pot init --role validator)"
        )
    if listen is not None:
        cfg.network.listen = listen
    identity = load_key_file(state.key_path)
    plan = plan_validator(state.home, state.config_path, cfg, identity)
    setup_logging(cfg.node.log_level)
    typer.echo(
        f"pot validate: validator {plan.index} ({plan.name}) of {plan.genesis.chain_id}, "
        f"API on http://{plan.host}:{plan.port}/v1, data in {plan.home / 'chain'}",
        err=True,
    )
    serve_validator(plan)


def register(app: typer.Typer, *, panel: str) -> None:
    app.command("validate", rich_help_panel=panel)(validate)
