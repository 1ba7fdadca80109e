"""The ``pot`` command line: thin wrappers over the libraries, grouped by role.

Every command that prints data takes ``--json``. Expected failures (:class:`PotError`) print one
line on stderr and exit non-zero (2 for usage and configuration errors); never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from pot_cli import __version__, paths
from pot_cli.cli.context import CliState, get_state
from pot_cli.cli.output import error
from pot_cli.errors import PotError

PANEL_NODE = "Node set-up"
PANEL_RIG = "Rig owners"
PANEL_NETWORK = "Network"
PANEL_DEV = "Developers and reviewers"


class PotGroup(TyperGroup):
    """Root group: turns :class:`PotError` into one clear line and its exit code."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except PotError as exc:
            error(str(exc))
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    name="pot",
    cls=PotGroup,
    help="Proof of Training: verified, Byzantine-tolerant AI training on ex-mining rigs.",
    rich_markup_mode="markdown",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"pot {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar="POT_HOME",
            help="Node home directory (key, config, data). Default: $XDG_DATA_HOME/pot.",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="POT_CONFIG",
            help="Config file. Default: `<home>/config.toml`.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    resolved_home = paths.resolve_home(home)
    ctx.obj = CliState(home=resolved_home, config_path=paths.resolve_config(resolved_home, config))


# Sub-command groups. Each library package registers its own commands on them.
config_app = typer.Typer(
    help="Show, validate and locate the node configuration.", no_args_is_help=True
)
hw_app = typer.Typer(
    help="Detect GPUs, judge them for training and benchmark them.", no_args_is_help=True
)
bench_app = typer.Typer(
    help="The measured claims: quality, consensus, throughput.", no_args_is_help=True
)
sim_app = typer.Typer(help="Deterministic simulations (seeded, replayable).", no_args_is_help=True)

app.add_typer(config_app, name="config", rich_help_panel=PANEL_NODE)
app.add_typer(hw_app, name="hw", rich_help_panel=PANEL_RIG)
app.add_typer(bench_app, name="bench", rich_help_panel=PANEL_DEV)
app.add_typer(sim_app, name="sim", rich_help_panel=PANEL_DEV)


def _register_all() -> None:
    # One module per command group; they import heavy dependencies (torch, pynvml) lazily
    # inside the commands so that ``pot --help`` stays fast.
    from pot_cli.cli import bench_network as bench_network_commands
    from pot_cli.cli import chain as chain_commands
    from pot_cli.cli import consensus as consensus_commands
    from pot_cli.cli import dashboard as dashboard_commands
    from pot_cli.cli import devnet as devnet_commands
    from pot_cli.cli import hw as hw_commands
    from pot_cli.cli import mine as mine_commands
    from pot_cli.cli import network as network_commands
    from pot_cli.cli import node as node_commands
    from pot_cli.cli import training as training_commands
    from pot_cli.cli import validate as validate_commands

    node_commands.register(app, config_app, panel=PANEL_NODE)
    hw_commands.register(hw_app)
    training_commands.register(bench_app)
    consensus_commands.register(bench_app, sim_app)
    bench_network_commands.register(bench_app)
    network_commands.register(sim_app)
    chain_commands.register(app, panel=PANEL_NODE)
    mine_commands.register(app, panel=PANEL_RIG)
    validate_commands.register(app, panel=PANEL_NETWORK)
    devnet_commands.register(app, panel=PANEL_NETWORK)
    dashboard_commands.register(app, panel=PANEL_NETWORK)


_register_all()


def main() -> None:
    app()


__all__ = ["app", "get_state", "main"]
