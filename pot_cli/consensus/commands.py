"""``pot sim consensus`` and ``pot bench consensus`` (thin: logic in pot_cli.consensus)."""

from __future__ import annotations

import typer


def register(bench_app: typer.Typer, sim_app: typer.Typer) -> None:
    """Add the consensus commands to ``pot bench`` and ``pot sim``."""
