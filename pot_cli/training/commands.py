"""``pot bench quality`` (thin: the logic lives in the pot_cli.training library)."""

from __future__ import annotations

import typer


def register(bench_app: typer.Typer) -> None:
    """Add the useful-work commands to ``pot bench``."""
