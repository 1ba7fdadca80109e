"""CLI: pot --version/--help, init, id, config show|validate|path, error lines and exit codes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from typer.testing import CliRunner

from pot_cli import __version__
from pot_cli.cli import app

runner = CliRunner()


def run(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--home", str(home), *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_version_and_help() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"pot {__version__}"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for panel in ("Node set-up", "Rig owners", "Developers and reviewers"):
        assert panel in result.stdout
    for command in ("init", "config", "hw", "bench", "sim"):
        assert command in result.stdout


def test_init_creates_key_0600_and_valid_config(tmp_path: Path) -> None:
    home = tmp_path / "node"
    code, out, _ = run(home, "init", "--role", "validator", "--name", "val-1", "--json")
    assert code == 0, out
    info = json.loads(out)
    key = home / "node_key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert info["role"] == "validator" and info["name"] == "val-1"
    assert key.read_text() not in out  # the private key is never printed
    code, out, _ = run(home, "config", "validate")
    assert code == 0 and "valid" in out
    code, out, _ = run(home, "id", "--json")
    assert code == 0 and json.loads(out)["address"] == info["address"]
    assert "PRIVATE" not in out


def test_init_refuses_overwrite_and_keeps_identity(tmp_path: Path) -> None:
    code, out, _ = run(tmp_path, "init", "--json")
    assert code == 0
    first = json.loads(out)["address"]
    code, _, err = run(tmp_path, "init")
    assert code == 1 and "--force" in err and "Traceback" not in err
    code, out, _ = run(tmp_path, "id", "--json")
    assert json.loads(out)["address"] == first
    code, out, _ = run(tmp_path, "init", "--force", "--json")
    assert code == 0 and json.loads(out)["address"] != first


def test_init_rejects_bad_role_and_bad_chain_id(tmp_path: Path) -> None:
    code, _, err = run(tmp_path, "init", "--role", "king")
    assert code == 2 and "miner or validator" in err
    code, _, err = run(tmp_path, "init", "--chain-id", "no spaces please")
    assert code == 2 and "chain_id" in err
    assert not (tmp_path / "node_key.pem").exists()


def test_id_without_init(tmp_path: Path) -> None:
    code, _, err = run(tmp_path, "id")
    assert code == 1 and "pot init" in err and len(err.strip().splitlines()) == 1


def test_id_refuses_open_key_permissions(tmp_path: Path) -> None:
    run(tmp_path, "init")
    os.chmod(tmp_path / "node_key.pem", 0o644)
    code, _, err = run(tmp_path, "id")
    assert code == 1 and "too open" in err and "Traceback" not in err


def test_id_corrupt_key(tmp_path: Path) -> None:
    run(tmp_path, "init")
    (tmp_path / "node_key.pem").write_text("not a key")
    code, _, err = run(tmp_path, "id")
    assert code == 1 and "corrupt" in err


def test_config_errors_are_one_line_per_problem_exit_2(tmp_path: Path) -> None:
    run(tmp_path, "init")
    cfg = tmp_path / "config.toml"
    cfg.write_text(cfg.read_text().replace("gpus =", "gpu ="))
    code, _, err = run(tmp_path, "config", "validate")
    assert code == 2
    assert "unknown key 'gpu' (did you mean 'gpus'?)" in err
    assert str(cfg) in err and "Traceback" not in err
    cfg.write_text("[node\n")
    code, _, err = run(tmp_path, "config", "show")
    assert code == 2 and "malformed TOML" in err
    code, out, _ = run(tmp_path, "config", "validate", "--json")
    assert code == 2 and json.loads(out)["valid"] is False


def test_config_show_applies_env_override(tmp_path: Path) -> None:
    run(tmp_path, "init")
    code, out, _ = run(tmp_path, "config", "show", "--json", env={"POT_MINER_GPUS": "1,3"})
    assert code == 0 and json.loads(out)["miner"]["gpus"] == "1,3"
    code, out, _ = run(tmp_path, "config", "show")
    assert code == 0 and "[miner]" in out


def test_config_path_and_global_config_option(tmp_path: Path) -> None:
    _, out, _ = run(tmp_path, "config", "path", "--json")
    info = json.loads(out)
    assert info["config"] == str(tmp_path / "config.toml") and info["config_exists"] is False
    other = tmp_path / "elsewhere.toml"
    result = runner.invoke(app, ["--home", str(tmp_path), "--config", str(other), "config", "path"])
    assert result.stdout.strip() == str(other)
    result = runner.invoke(app, ["config", "path"], env={"POT_HOME": str(tmp_path / "h")})
    assert result.stdout.strip() == str(tmp_path / "h" / "config.toml")


def test_id_validator_entry_is_a_genesis_entry(tmp_path: Path) -> None:
    from pot_cli.crypto import load_key_file
    from pot_cli.protocol.beacon import onion_commit

    code, _, _ = run(tmp_path, "init", "--role", "validator", "--name", "val-9")
    assert code == 0
    args = ("id", "--validator-entry", "--chain-id", "pot-x", "--beacon-rounds", "50")
    code, out, _ = run(tmp_path, *args, "--json")
    assert code == 0
    entry = json.loads(out)
    ident = load_key_file(tmp_path / "node_key.pem")
    assert entry["public_key"] == ident.public_key.hex() and entry["name"] == "val-9"
    assert entry["beacon_commit"] == onion_commit(ident, "pot-x", 50)
    code, out, _ = run(tmp_path, *args)
    assert code == 0 and "[[validators]]" in out and entry["beacon_commit"] in out
    assert "PRIVATE" not in out
