"""The deterministic simulator: a CI seed sweep over n = 4, 7, 10 and every fault kind, the
regression seeds, state transfer past several checkpoints, replay determinism, the checker's
ability to fail, and the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pot_cli.cli import app
from pot_cli.consensus import config as consensus_config
from pot_cli.consensus.simulator import (
    DEFAULT_NS,
    FAULT_KINDS,
    SimConfig,
    Simulation,
    plan_seed,
    run_seed,
)

SWEEP_SEEDS = 510  # >= 500 seeds; round-robin covers every (n, fault) pair >= 10 times
REGRESSION = Path(__file__).parent / "data" / "consensus_regression_seeds.json"


def test_ci_seed_sweep_all_kinds_all_sizes() -> None:
    started = time.process_time()
    failures = []
    covered = set()
    for seed in range(SWEEP_SEEDS):
        n, fault = plan_seed(seed, DEFAULT_NS, FAULT_KINDS)
        covered.add((n, fault))
        result = run_seed(seed, n, fault)
        if not result.ok:
            failures.append(f"{result.violations[0]} -- replay: {result.replay}")
    assert not failures, "\n".join(failures)
    assert covered == {(n, f) for n in DEFAULT_NS for f in FAULT_KINDS}
    print(f"{SWEEP_SEEDS} seeds in {time.process_time() - started:.1f} s CPU")


def test_regression_seeds() -> None:
    data = json.loads(REGRESSION.read_text())
    assert len(data["seeds"]) >= 5
    for entry in data["seeds"]:
        result = run_seed(entry["seed"], entry["n"], entry["fault"])
        assert result.ok, (entry, result.violations)


def test_runs_are_deterministic() -> None:
    a = run_seed(11, 7, "drop").summary()
    b = run_seed(11, 7, "drop").summary()
    assert a == b
    assert a["replay"] == "pot sim consensus --seed 11 --n 7 --fault drop"


def test_faults_actually_happen() -> None:
    """The fault kinds are not no-ops: they cause view changes, evidence, state transfers."""
    totals: dict[str, dict[str, int]] = {}
    for fault in ("silent-primary", "double-vote", "twins", "crash", "partition", "garbage"):
        t = totals.setdefault(fault, {"vc": 0, "ev": 0, "st": 0, "rej": 0})
        for seed in range(4):
            r = run_seed(seed, 4, fault)
            assert r.ok
            t["vc"] += r.view_changes
            t["ev"] += r.evidence
            t["st"] += r.state_transfers
            t["rej"] += r.rejected
    assert totals["silent-primary"]["vc"] > 0
    assert totals["double-vote"]["ev"] > 0 and totals["twins"]["ev"] > 0
    assert totals["crash"]["st"] + totals["partition"]["st"] > 0
    assert totals["garbage"]["rej"] > 50


def test_state_transfer_of_replica_partitioned_past_several_checkpoints() -> None:
    sc = SimConfig(seed=2, n=4, blocks=12, chaos_until=1000, checkpoint_interval=2)
    sim = Simulation(sc)
    sim._push(1, "isolate", 3)
    sim._push(950, "unisolate", None)
    result = sim.run()
    assert result.ok, result.violations
    lagger = sim.nodes[3].replica
    assert lagger is not None and lagger.stats["state_transfers"] >= 1
    assert lagger.last_exec == 12
    others = {n.app.head for n in sim.nodes if n.app is not None}  # type: ignore[union-attr]
    assert len(others) == 1


def test_checker_catches_a_broken_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the commit quorum weakened to f + 1, an equivocating primary splits the honest
    replicas: the simulator must report an agreement violation with its replay command."""
    monkeypatch.setattr(consensus_config.ReplicaConfig, "quorum", property(lambda self: self.f + 1))
    from pot_cli.consensus import replica as replica_mod

    monkeypatch.setattr(
        replica_mod.Replica, "_prepared", lambda self, e, view: e.pre_prepare is not None
    )
    results = [run_seed(s, 4, "equivocating-primary") for s in (33, 35, 36)]
    bad = [r for r in results if not r.ok]
    assert bad and "agreement" in bad[0].violations[0]
    assert bad[0].replay.startswith("pot sim consensus --seed ")


def test_cli_single_seed_and_sweep(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["--home", str(tmp_path), "sim", "consensus", "--seed", "4", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["ok"] and data["committed"] == 6
    res = runner.invoke(
        app,
        ["--home", str(tmp_path), "sim", "consensus", "--seeds", "6", "--n", "4", "--json"],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["seeds"] == 6 and data["failed"] == 0
    res = runner.invoke(app, ["--home", str(tmp_path), "sim", "consensus", "--fault", "nope"])
    assert res.exit_code == 2 and "unknown" in res.output


def test_cli_failure_prints_replay_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consensus_config.ReplicaConfig, "quorum", property(lambda self: self.f + 1))
    from pot_cli.consensus import replica as replica_mod

    monkeypatch.setattr(
        replica_mod.Replica, "_prepared", lambda self, e, view: e.pre_prepare is not None
    )
    res = CliRunner().invoke(
        app,
        [
            "--home",
            str(tmp_path),
            "sim",
            "consensus",
            "--seed",
            "35",
            "--n",
            "4",
            "--fault",
            "equivocating-primary",
        ],
    )
    assert res.exit_code == 1
    assert "pot sim consensus --seed 35 --n 4 --fault equivocating-primary" in res.output


def test_cli_bench_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    res = CliRunner().invoke(
        app,
        [
            "--home",
            str(tmp_path),
            "bench",
            "consensus",
            "--blocks",
            "20",
            "--n",
            "4",
            "--vc-runs",
            "2",
            "--json",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    (row,) = data["throughput"]
    assert row["n"] == 4 and row["blocks"] == 20 and row["blocks_per_cpu_s"] > 0
    assert data["view_change"]["runs"] == 2 and data["view_change"]["failures"] == 0
    res = CliRunner().invoke(
        app,
        [
            "--home",
            str(tmp_path),
            "bench",
            "consensus",
            "--blocks",
            "10",
            "--n",
            "4",
            "--vc-runs",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "bench" / "consensus.json").exists()


def test_wire_mode_every_fault_kind() -> None:
    """Every message travels as JSON text and is parsed by the receiving replica from an
    untrusted dict, exactly as a networked validator would hand it over."""
    for i, fault in enumerate(FAULT_KINDS):
        result = run_seed(100 + i, 4, fault, wire=True)
        assert result.ok, (fault, result.violations, result.replay)
    for fault in ("bad-new-view", "twins", "crash-lose-tail"):
        assert run_seed(7, 7, fault, wire=True).ok


def test_durability_checker_catches_unlogged_signatures(monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica that forgets to log its own commits before sending them is caught."""
    from pot_cli.consensus import replica as replica_mod

    original = replica_mod.Replica._record

    def forgetful(self, kind, body):  # type: ignore[no-untyped-def]
        if kind == "msg" and body["message"]["type"] == "commit":
            return
        original(self, kind, body)

    monkeypatch.setattr(replica_mod.Replica, "_record", forgetful)
    result = run_seed(0, 4, "none")
    assert not result.ok and "durability" in result.violations[0]
