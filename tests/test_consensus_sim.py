"""The deterministic simulator: a CI seed sweep over n = 4, 7, 10 and every fault kind, the
regression seeds, state transfer past several checkpoints, replay determinism, the checker's
ability to fail (agreement, durability, memory), the lost-view-change liveness stall, flooding
Byzantine replicas, and the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pot_cli.cli import app
from pot_cli.consensus import config as consensus_config
from pot_cli.consensus.messages import PrePrepare, ViewChange
from pot_cli.consensus.replica import Replica
from pot_cli.sim.byzantine import Flooder
from pot_cli.sim.consensus import (
    DEFAULT_NS,
    FAULT_KINDS,
    LOSSY_FAULTS,
    Payload,
    SimConfig,
    Simulation,
    plan_seed,
    run_seed,
)

# round-robin over (n, fault): 10 seeds per pair, and at least 500 seeds
SWEEP_SEEDS = max(500, 10 * len(DEFAULT_NS) * len(FAULT_KINDS))
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
    assert set(LOSSY_FAULTS) <= set(FAULT_KINDS)
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
    others = {n.app.head for n in sim.nodes if n.app is not None}
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


def test_stall_repro_crashed_replica_plus_lost_view_change() -> None:
    """Replica 3 is dead; from t = 150 every pre-prepare is lost, so 0, 1 and 2 all time out
    into view 1, but replica 2's VIEW-CHANGE(1) is lost until the heal. Replica 2 holds 2f+1
    view-changes for view 1 (its own included) and its view-change timer moves it on to view 2,
    3, ...; replicas 0 and 1 hold only 2f for view 1 and wait for a third that must come from
    replica 2 re-sending its VIEW-CHANGE(1) after the heal."""

    def drop(now: int, src: int, dst: int, msg: Payload) -> bool:
        if isinstance(msg, PrePrepare) and now > 150:
            return True
        return isinstance(msg, ViewChange) and src == 2 and msg.new_view == 1

    sim = Simulation(SimConfig(seed=0, n=4, fault="none", chaos_until=800), drop_filter=drop)
    sim._push(0, "kill", 3)
    sim.nodes[3].honest = False
    result = sim.run()
    assert result.ok, result.violations
    assert result.view_changes >= 1


def test_drop_filter_sees_every_send_before_the_heal_only() -> None:
    seen: list[tuple[int, int, int]] = []

    def record(now: int, src: int, dst: int, msg: Payload) -> bool:
        seen.append((now, src, dst))
        return False

    sc = SimConfig(seed=3, n=4, chaos_until=300)
    sim = Simulation(sc)
    sim.drop_filter = record
    assert sim.run().ok
    assert seen and all(t < sc.chaos_until and s != d for t, s, d in seen)
    # dropping everything from the primary before the heal forces a view change
    sim = Simulation(sc, drop_filter=lambda now, src, dst, msg: src == 0)
    result = sim.run()
    assert result.ok, result.violations
    assert result.view_changes >= 1


def test_lossy_faults_actually_happen() -> None:
    """crash-loss kills exactly f replicas and causes view changes; silent-loss makes f
    replicas silent in some views; flood makes the honest replicas reject many messages."""
    vc = {k: 0 for k in LOSSY_FAULTS}
    rejected = {k: 0 for k in LOSSY_FAULTS}
    for fault in LOSSY_FAULTS:
        for seed in range(4):
            sim = Simulation(SimConfig(seed=seed, n=4, fault=fault))
            result = sim.run()
            assert result.ok, (fault, seed, result.violations)
            faulty = [n for n in sim.nodes if not n.honest]
            assert len(faulty) == 1  # f = 1
            if fault == "crash-loss":
                assert all(n.replica is None for n in faulty)
            vc[fault] += result.view_changes
            rejected[fault] += result.rejected
    assert vc["crash-loss"] > 0 and vc["silent-loss"] > 0
    assert rejected["flood"] > 200
    assert rejected["flood"] > 3 * max(rejected["crash-loss"], rejected["silent-loss"])


def test_flood_runs_are_deterministic() -> None:
    a = run_seed(5, 7, "flood").summary()
    b = run_seed(5, 7, "flood").summary()
    assert a == b and a["rejected"] > 0
    assert a["replay"] == "pot sim consensus --seed 5 --n 7 --fault flood"
    assert run_seed(5, 7, "flood", wire=True).rejected > 0


def test_flood_keeps_honest_memory_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A heavy, long flood (every real send carries 50 junk messages and 5 far-future
    view-changes, 40 blocks): no honest replica retains more than its footprint bound."""
    monkeypatch.setattr(Flooder, "P_BURST", 1.0)
    monkeypatch.setattr(Flooder, "BURST", (50, 50))
    monkeypatch.setattr(Flooder, "FAR_PER_BURST", (5, 5))
    result = run_seed(0, 4, "flood", blocks=40)
    assert result.ok, result.violations
    assert result.rejected > 1000


def test_memory_checker_catches_unbounded_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the bound forced down to 5 messages, the checker reports a memory violation."""
    monkeypatch.setattr(Replica, "footprint_bound", lambda self: 5)
    result = run_seed(0, 4, "flood")
    assert not result.ok and result.violations[0].startswith("memory: replica ")
    assert "over its bound of 5" in result.violations[0]
