"""The chain store and ``pot chain verify``: a chain written by a simulated network re-derives
from its genesis; a forged certificate, a gap, a missing payload or a damaged row is named."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pot_cli.cli import app
from pot_cli.node.chainstore import ChainStore, ChainStoreError, verify_chain
from pot_cli.sim.network import NetworkConfig, NetworkSimulation


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    sim = NetworkSimulation(NetworkConfig(seed=3, fault="drop"))
    result = sim.run()
    assert result.ok, result.violations
    path = tmp_path_factory.mktemp("chain") / "chain.sqlite"
    store = ChainStore(path)
    sim.save_chain(store)
    store.close()
    return path, result.model_hash


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "chain.sqlite"
    dst.write_bytes(src.read_bytes())
    return dst


def test_a_stored_chain_re_derives(saved: tuple[Path, str]) -> None:
    store = ChainStore(saved[0])
    report = verify_chain(store)
    store.close()
    assert report.first_mismatch is None and report.height >= 3
    assert report.model_hash == saved[1] or report.height > 3


def test_a_forged_block_is_named(saved: tuple[Path, str], tmp_path: Path) -> None:
    path = _copy(saved[0], tmp_path)
    db = sqlite3.connect(path)
    body = json.loads(db.execute("SELECT body FROM blocks WHERE height = 2").fetchone()[0])
    body["proposal"]["block"]["rewards"][0]["amount"] += 1  # pay one miner one unit more
    db.execute("UPDATE blocks SET body = ? WHERE height = 2", (json.dumps(body),))
    db.commit()
    db.close()
    store = ChainStore(path)
    report = verify_chain(store)
    assert report.height == 1 and report.first_mismatch is not None
    assert report.first_mismatch.startswith("block 2:")


def test_a_gap_and_a_missing_payload_are_named(saved: tuple[Path, str], tmp_path: Path) -> None:
    path = _copy(saved[0], tmp_path)
    db = sqlite3.connect(path)
    db.execute("DELETE FROM blocks WHERE height = 2")
    db.commit()
    db.close()
    report = verify_chain(ChainStore(path))
    assert report.height == 1 and "gap" in (report.first_mismatch or "")
    path = _copy(saved[0], tmp_path / "..")
    db = sqlite3.connect(path)
    db.execute("DELETE FROM payloads")
    db.commit()
    db.close()
    report = verify_chain(ChainStore(path))
    assert report.height == 0 and "lacks" in (report.first_mismatch or "")


def test_not_a_chain_store_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.sqlite"
    bad.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ChainStoreError):
        ChainStore(bad)


def test_cli_verify(saved: tuple[Path, str], tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        app, ["--home", str(tmp_path), "chain", "verify", "--chain", str(saved[0]), "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["ok"] is True
    res = runner.invoke(app, ["--home", str(tmp_path), "chain", "verify"])
    assert res.exit_code == 2 and "no chain store" in res.output
    out = tmp_path / "saved.sqlite"
    res = runner.invoke(
        app, ["--home", str(tmp_path), "sim", "network", "--seed", "1", "--save-chain", str(out)]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["--home", str(tmp_path), "chain", "verify", "--chain", str(out)])
    assert res.exit_code == 0, res.output
