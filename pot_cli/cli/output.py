"""Printing results: rich tables for people, JSON for programs. Commands stay thin by using it."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pot_cli.errors import UsageError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_json(data: Any) -> str:
    """Stable, pretty JSON (non-finite floats become null, bytes hex, paths strings)."""
    return json.dumps(_jsonable(data), indent=2, sort_keys=False, allow_nan=False)


def emit_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout (plain print: no rich markup or wrapping)."""
    sys.stdout.write(to_json(data) + "\n")
    sys.stdout.flush()


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as JSON to ``path`` atomically, creating parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_json(data) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def save_result(path: Path, data: Any, *, as_json: bool) -> Path:
    """Write a command's JSON result to ``path``; with ``--json`` also print it on stdout.

    Says where the file went: on stderr with ``--json`` (stdout stays pure JSON), else on stdout
    after the tables the command printed.
    """
    write_json(path, data)
    if as_json:
        emit_json(data)
        err_console.print(f"wrote {path}")
    else:
        console.print(f"wrote {path}", soft_wrap=True)
    return path


def fmt(value: Any, digits: int = 3) -> str:
    """Human formatting of a table cell."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 10 ** (-digits)):
            return f"{value:.{digits}g}"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    caption: str | None = None,
) -> None:
    """Print a rich table that reads at 80 columns and uses more where the terminal has it:
    numbers right-aligned and never broken, names in the first column kept whole (up to 28
    characters), other long words folded rather than cut; headers wrap. The caption is
    printed below as a paragraph wrapped to the terminal."""
    table = Table(title=title, show_lines=False)
    cells = [[fmt(v) for v in row] for row in rows]
    natural = sum(
        max([len(name), *(len(row[i]) for row in cells)]) + 3 for i, name in enumerate(columns)
    )
    narrow = natural + 1 > console.width  # only then do number headers wrap
    for i, name in enumerate(columns):
        numeric = bool(rows) and all(isinstance(r[i], int | float) or r[i] is None for r in rows)
        longest = max((len(row[i]) for row in cells), default=0)
        header_word = max((len(word) for word in name.split()), default=1)
        table.add_column(
            name,
            justify="right" if numeric else "left",
            # names in the first column stay whole; a number column is as wide as its widest
            # number or header word (its header wraps between words); other long words fold
            # instead of being cut to an ellipsis
            min_width=min(longest, 28) if i == 0 else None,
            max_width=max(longest, header_word) if numeric and narrow else None,
            overflow="fold",
        )
    for row in cells:
        table.add_row(*row)
    console.print(table)
    if caption:
        note(caption)


def note(text: str) -> None:
    """A paragraph of explanation under a table, wrapped to the terminal's width."""
    console.print(text, style="dim", markup=False)


def print_kv(title: str | None, items: Sequence[tuple[str, Any]]) -> None:
    """Print key/value pairs as a two-column table."""
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in items:
        table.add_row(key, fmt(value))
    console.print(table)


def error(message: str) -> None:
    """One clear line on stderr."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[bold yellow]warning:[/] {escape(message)}", markup=True, soft_wrap=True)


def parse_kinds(text: str, kinds: Sequence[str], option: str) -> tuple[str, ...]:
    """A comma-separated selection among ``kinds`` (or ``all``) for a command option; a
    :class:`UsageError` names the unknown ones and lists the choices."""
    if text == "all":
        return tuple(kinds)
    chosen = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [k for k in chosen if k not in kinds]
    if not chosen or bad:
        raise UsageError(f"{option}: unknown {bad or text!r}; one of: all, {', '.join(kinds)}")
    return chosen


def parse_seeds(text: str, option: str) -> tuple[str, ...]:
    """Distinct comma-separated seeds for a command option (a :class:`UsageError` otherwise)."""
    seeds = tuple(x.strip() for x in text.split(","))
    if not all(seeds) or len(set(seeds)) != len(seeds):
        raise UsageError(f"{option}: expected distinct comma-separated seeds, got {text!r}")
    return seeds
