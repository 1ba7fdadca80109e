"""``pot init``, ``pot id`` and ``pot config show|validate|path``: node identity and config."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from pot_cli import crypto
from pot_cli.cli import output
from pot_cli.cli.context import get_state
from pot_cli.config import (
    config_from_dict,
    config_to_dict,
    default_config,
    load_config,
    render_config,
    write_config,
)
from pot_cli.errors import ConfigError, KeyFileError

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def init(
    ctx: typer.Context,
    role: Annotated[
        str, typer.Option("--role", help="miner or validator.", show_default=True)
    ] = "miner",
    name: Annotated[
        str | None, typer.Option("--name", help="Node name (default: `pot-<addr>`).")
    ] = None,
    chain_id: Annotated[
        str, typer.Option("--chain-id", help="Network to join.", show_default=True)
    ] = "pot-devnet-1",
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing key and config.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a node identity (Ed25519 key, mode 0600) and a commented config."""
    state = get_state(ctx)
    if role not in ("miner", "validator"):
        raise typer.BadParameter(f"expected miner or validator, got {role!r}", param_hint="--role")
    key_path, config_path = state.key_path, state.config_path
    if not force:
        for path in (key_path, config_path):
            if path.exists():
                raise KeyFileError(
                    f"{path}: already exists; refusing to overwrite (use --force to replace it)"
                )
    state.home.mkdir(parents=True, exist_ok=True)
    os.chmod(state.home, 0o700)
    identity = crypto.Identity.generate()
    cfg = default_config(
        "miner" if role == "miner" else "validator", name or f"pot-{identity.address[4:12]}"
    )
    cfg.node.chain_id = chain_id
    # Validate before writing anything, so a bad --chain-id or --name leaves no half-made node.
    config_from_dict(config_to_dict(cfg), where="pot init")
    crypto.write_key_file(key_path, identity, force=force)
    write_config(config_path, cfg, force=force)
    info = {
        "address": identity.address,
        "public_key": identity.public_key.hex(),
        "role": cfg.node.role,
        "name": cfg.node.name,
        "chain_id": cfg.node.chain_id,
        "key_file": str(key_path),
        "config_file": str(config_path),
    }
    if as_json:
        output.emit_json(info)
        return
    output.print_kv("pot node created", list(info.items()))
    output.console.print("Next: [bold]pot config validate[/] and [bold]pot hw detect[/].")


def show_id(
    ctx: typer.Context,
    validator_entry: Annotated[
        bool,
        typer.Option(
            "--validator-entry",
            help="Print this validator's [[validators]] entry for a genesis file (its public "
            "key and beacon commit for --chain-id and --beacon-rounds).",
        ),
    ] = False,
    chain_id: Annotated[
        str | None, typer.Option("--chain-id", help="Chain of the entry (default: config's).")
    ] = None,
    beacon_rounds: Annotated[
        int, typer.Option("--beacon-rounds", help="Heights the beacon commit serves.", min=1)
    ] = 1_000_000,
    as_json: JsonOpt = False,
) -> None:
    """Print this node's address and public key (never the private key)."""
    state = get_state(ctx)
    identity = crypto.load_key_file(state.key_path)
    info = {
        "address": identity.address,
        "public_key": identity.public_key.hex(),
        "key_file": str(state.key_path),
    }
    if validator_entry:
        import tomli_w

        from pot_cli.protocol.beacon import onion_commit

        chain = chain_id or load_config(state.config_path, missing_ok=True).node.chain_id
        name = load_config(state.config_path, missing_ok=True).node.name
        entry = {
            "name": name,
            "public_key": identity.public_key.hex(),
            "beacon_commit": onion_commit(identity, chain, beacon_rounds),
        }
        if as_json:
            output.emit_json({**entry, "chain_id": chain, "beacon_rounds": beacon_rounds})
        else:
            typer.echo(f"# validator {identity.address} for chain {chain!r}, beacon_rounds = "
                       f"{beacon_rounds} (the genesis must say the same)")  # fmt: skip
            typer.echo(tomli_w.dumps({"validators": [entry]}).rstrip())
        return
    if as_json:
        output.emit_json(info)
    else:
        output.print_kv("node identity", list(info.items()))


def config_show(
    ctx: typer.Context,
    as_json: JsonOpt = False,
) -> None:
    """Print the effective configuration (file plus POT_<SECTION>_<KEY> overrides)."""
    state = get_state(ctx)
    cfg = load_config(state.config_path)
    if as_json:
        output.emit_json(config_to_dict(cfg))
    else:
        typer.echo(f"# {state.config_path}")
        typer.echo(render_config(cfg))


def config_validate(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Check the configuration; list every problem (file, key, what is wrong)."""
    state = get_state(ctx)
    try:
        load_config(state.config_path)
    except ConfigError as exc:
        if as_json:
            output.emit_json(
                {"path": str(state.config_path), "valid": False, "problems": str(exc).splitlines()}
            )
            raise typer.Exit(exc.exit_code) from None
        raise
    if as_json:
        output.emit_json({"path": str(state.config_path), "valid": True, "problems": []})
    else:
        typer.echo(f"{state.config_path}: valid")


def config_path(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Print where the config, key and data of this node live."""
    state = get_state(ctx)
    info = {
        "home": str(state.home),
        "config": str(state.config_path),
        "config_exists": state.config_path.exists(),
        "key": str(state.key_path),
        "key_exists": state.key_path.exists(),
    }
    if as_json:
        output.emit_json(info)
    else:
        typer.echo(str(state.config_path))


def register(app: typer.Typer, config_app: typer.Typer, *, panel: str) -> None:
    """Add the node set-up commands."""
    app.command("init", rich_help_panel=panel)(init)
    app.command("id", rich_help_panel=panel)(show_id)
    config_app.command("show")(config_show)
    config_app.command("validate")(config_validate)
    config_app.command("path")(config_path)
