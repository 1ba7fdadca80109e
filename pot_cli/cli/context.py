"""The state every CLI command receives from the global options (``--home``, ``--config``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from pot_cli import paths


@dataclass(frozen=True)
class CliState:
    home: Path
    config_path: Path

    @property
    def key_path(self) -> Path:
        return paths.key_path(self.home)


def get_state(ctx: typer.Context) -> CliState:
    """The :class:`CliState` of the running command (works from any sub-command)."""
    root = ctx.find_root()
    obj = root.obj
    if isinstance(obj, CliState):
        return obj
    home = paths.resolve_home(None)
    state = CliState(home=home, config_path=paths.resolve_config(home, None))
    root.obj = state
    return state
