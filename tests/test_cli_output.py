"""Tables read at 80 columns and use the width of a wide terminal."""

from __future__ import annotations

import pytest
from rich.console import Console

from pot_cli.cli import output

COLUMNS = ["fault", "n", "runs", "failed", "events per run", "view changes", "evid.", "state xfers"]
ROWS = [
    ["equivocating-primary", 10, 1234, 0, 10011, 4, 36, 3],
    ["crash-lose-tail", 4, 1, 0, 301, 1, 0, 3],
]


def _render(monkeypatch: pytest.MonkeyPatch, width: int) -> list[str]:
    console = Console(width=width, record=True, force_terminal=False)
    monkeypatch.setattr(output, "console", console)
    output.print_table("title", COLUMNS, ROWS, caption="a caption " * 20)
    return console.export_text().splitlines()


def test_table_fits_80_columns_with_whole_names_and_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = _render(monkeypatch, 80)
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    for word in ("equivocating-primary", "crash-lose-tail", "10,011", "1,234"):
        assert word in text  # never cut or folded
    assert "…" not in text


def test_wide_terminal_keeps_headers_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _render(monkeypatch, 160)
    assert any("events per run" in line and "state xfers" in line for line in lines)
    assert max(len(line) for line in lines) <= 160


def test_help_shows_home_placeholders() -> None:
    """The markdown help renderer used to eat ``<home>`` (shown as "/config.toml")."""
    from typer.testing import CliRunner

    from pot_cli.cli import app

    res = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "100"})
    assert res.exit_code == 0
    assert "<home>/config.toml" in res.output
    res = CliRunner().invoke(app, ["hw", "bench", "--help"], env={"COLUMNS": "100"})
    assert "<home>/hw/bench-<device>.json" in res.output
