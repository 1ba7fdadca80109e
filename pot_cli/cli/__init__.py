"""The command line (the only package that imports typer or rich): the root app in
:mod:`pot_cli.cli.main`, one module per command group, output helpers and views."""

from pot_cli.cli.main import app, main

__all__ = ["app", "main"]
