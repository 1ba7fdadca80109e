"""install.sh: argument handling and its refusal paths (the full install runs in .ci/run)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "install.sh"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
        check=False,
    )


def test_script_is_valid_bash() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0


def test_help_and_unknown_option() -> None:
    assert run("--help").returncode == 0
    result = run("--frobnicate")
    assert result.returncode == 2 and "unknown option '--frobnicate'" in result.stderr


def test_refuses_python_older_than_311(tmp_path: Path) -> None:
    fake = tmp_path / "python-old"
    fake.write_text(
        "#!/bin/sh\nif [ \"$1\" = -V ]; then echo 'Python 3.9.18'; exit 0; fi\nexit 1\n"
    )
    fake.chmod(0o755)
    result = run(env={"POT_PYTHON": str(fake), "POT_VENV": str(tmp_path / "venv")})
    assert result.returncode == 1
    assert "pot needs Python >= 3.11" in result.stderr
    assert not (tmp_path / "venv").exists()
