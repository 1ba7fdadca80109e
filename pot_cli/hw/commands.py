"""``pot hw …`` commands (thin: the logic lives in the pot_cli.hw library)."""

from __future__ import annotations

import typer


def register(hw_app: typer.Typer) -> None:
    """Add the hardware commands to ``pot hw``."""
