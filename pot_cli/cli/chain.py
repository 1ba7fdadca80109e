"""``pot chain verify``: re-derive a node's stored chain from genesis (thin: the logic is in
pot_cli.node.chainstore)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pot_cli.errors import UsageError

chain_app = typer.Typer(help="Inspect and verify the chain a node stores.", no_args_is_help=True)


@chain_app.command("verify")
def chain_verify(
    ctx: typer.Context,
    chain: Annotated[
        Path | None,
        typer.Option("--chain", help="The chain store. Default: `<home>/chain/chain.sqlite`."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Check every stored block's 2f+1 commit certificate and re-execute the chain from its
    genesis (rewards, slashes, the model step from the recorded verdicts and the stored
    payloads); name the first block that does not re-derive. Exit 1 on a mismatch."""
    from pot_cli.cli.context import get_state
    from pot_cli.cli.output import emit_json, error, print_kv
    from pot_cli.node.chainstore import FILE_NAME, ChainStore, verify_chain

    path = chain if chain is not None else get_state(ctx).home / "chain" / FILE_NAME
    if not path.is_file():
        raise UsageError(f"{path}: no chain store here (run a validator, or pass --chain)")
    store = ChainStore(path)
    try:
        report = verify_chain(store)
    finally:
        store.close()
    if as_json:
        emit_json(report.to_dict())
    else:
        print_kv(f"chain {path}", list(report.to_dict().items()))
    if report.first_mismatch is not None:
        error(f"{path}: {report.first_mismatch}")
        raise typer.Exit(1)


def register(app: typer.Typer, panel: str) -> None:
    app.add_typer(chain_app, name="chain", rich_help_panel=panel)
