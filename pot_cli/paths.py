"""Where a node keeps its files.

A node's *home* holds everything it owns: ``config.toml``, ``node_key.pem`` (mode 0600) and its
data (``hw/`` benchmark results, ``chain/`` databases, ``bench/`` results). The home is, in order:
``--home``, ``$POT_HOME``, ``$XDG_DATA_HOME/pot``, ``~/.local/share/pot``. The config file is
``--config``, ``$POT_CONFIG`` or ``<home>/config.toml``.
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_FILE_NAME = "config.toml"
KEY_FILE_NAME = "node_key.pem"


def default_home() -> Path:
    env = os.environ.get("POT_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "pot"


def resolve_home(home: Path | None) -> Path:
    return (home.expanduser() if home is not None else default_home()).absolute()


def resolve_config(home: Path, config: Path | None) -> Path:
    if config is not None:
        return config.expanduser().absolute()
    env = os.environ.get("POT_CONFIG")
    if env:
        return Path(env).expanduser().absolute()
    return home / CONFIG_FILE_NAME


def key_path(home: Path) -> Path:
    return home / KEY_FILE_NAME


def data_dir(home: Path, name: str) -> Path:
    """A sub-directory of the home for one kind of data, created on demand."""
    path = home / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def bench_result_path(home: Path, name: str, out: Path | None = None) -> Path:
    """Where ``pot bench NAME`` writes its JSON: ``out``, else ``<home>/bench/NAME.json``."""
    return out if out is not None else data_dir(home, "bench") / f"{name}.json"
