"""``pot init``, ``pot id`` and ``pot config …`` (filled in below)."""

from __future__ import annotations

import typer


def register(app: typer.Typer, config_app: typer.Typer, *, panel: str) -> None:
    """Add the node set-up commands."""
