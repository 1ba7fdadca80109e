"""Write-ahead log: durability contract, corruption and truncation detection, and a crash
after every single write point followed by restart and agreement."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from consensus_harness import Keys

from pot_cli.consensus.app import ChainApp
from pot_cli.consensus.host import open_replica
from pot_cli.consensus.replica import Replica, WalCorruptError
from pot_cli.consensus.wal import MemoryWal, SqliteWal
from pot_cli.errors import PotError
from pot_cli.sim.consensus import SimConfig, Simulation


def _baseline_writes(node: int) -> int:
    sim = Simulation(SimConfig(seed=0, n=4))
    result = sim.run()
    assert result.ok, result.violations
    return sim.nodes[node].writes


@pytest.mark.parametrize("node", [0, 1])
@pytest.mark.parametrize("lose_tail", [False, True])
def test_crash_after_every_write_point_then_restart_agrees(node: int, lose_tail: bool) -> None:
    """Replica ``node`` (0: the primary, 1: a backup) crashes right after its k-th log write,
    for every k; it restarts from what is on disk and the run must keep every invariant."""
    total = _baseline_writes(node)
    assert total > 40
    for k in range(1, total + 1):
        cfg = SimConfig(seed=0, n=4, crash_at_write=(node, k), crash_lose_tail=lose_tail)
        sim = Simulation(cfg)
        result = sim.run()
        assert result.ok, (k, result.violations)
        assert sim.nodes[node].crashes == 1, k
        assert sim.nodes[node].replica is not None and sim.nodes[node].replica.last_exec == 6


def _wal(tmp_path: Path, k: Keys, rid: int = 1) -> SqliteWal:
    return SqliteWal(tmp_path / f"r{rid}.sqlite", k.cfg.chain_id, rid, k.cfg.public_keys[rid])


def test_sqlite_wal_in_a_full_run_restores(tmp_path: Path) -> None:
    """Mirror a simulated replica's log into SQLite write by write; after each write a restart
    from the file succeeds and never holds a block the cluster did not decide."""
    k = Keys(checkpoint_interval=2, watermark_window=4)
    wal = _wal(tmp_path, k)
    sim = Simulation(SimConfig(seed=3, n=4), wal_factory=lambda i: wal if i == 1 else None)
    result = sim.run()
    assert result.ok
    reader = SqliteWal(wal.path, k.cfg.chain_id, 1, k.cfg.public_keys[1])
    restored = open_replica(reader, sim.cfg, 1, k.ids[1], ChainApp(target=6))
    assert restored.last_exec == 6
    assert restored.app.state_digest() == sim.nodes[0].app.state_digest()  # type: ignore[union-attr]


def test_sqlite_wal_prefixes_of_a_run(tmp_path: Path) -> None:
    """Every prefix of the log (a crash before each later transaction) restores cleanly."""
    k = Keys(checkpoint_interval=2, watermark_window=4)
    outputs = []

    class Recorder(MemoryWal):
        def write(self, out):  # type: ignore[no-untyped-def]
            outputs.append(out)
            super().write(out)

    sim = Simulation(SimConfig(seed=5, n=4), wal_factory=lambda i: Recorder() if i == 2 else None)
    assert sim.run().ok
    wal = _wal(tmp_path, k, 2)
    decided = dict(sim.decided)
    for i, out in enumerate(outputs):
        wal.write(out)
        if not (out.records or out.compact):
            continue
        fresh = SqliteWal(wal.path, k.cfg.chain_id, 2, k.cfg.public_keys[2])
        r = open_replica(fresh, sim.cfg, 2, k.ids[2], ChainApp(target=6))
        fresh.close()
        for seq in range(r.low + 1, r.last_exec + 1):
            block = r.committed_block(seq)
            assert block is not None and block.digest == decided[seq], (i, seq)


def _filled_wal(tmp_path: Path) -> tuple[Keys, Path]:
    k = Keys()
    wal = _wal(tmp_path, k)
    r = Replica(k.cfg, 1, k.ids[1], ChainApp(target=10))
    for seq in (1, 2, 3):
        pp = k.pp(0, seq)
        wal.write(r.step(pp, 0))
        wal.write(r.step(k.prepare(0, seq, pp.digest, 2), 0))
        wal.write(r.step(k.commit(0, seq, pp.digest, 0), 0))
        wal.write(r.step(k.commit(0, seq, pp.digest, 3), 0))
    assert r.last_exec == 3
    wal.close()
    return k, wal.path


def test_restart_replays_the_log(tmp_path: Path) -> None:
    k, path = _filled_wal(tmp_path)
    wal = SqliteWal(path, k.cfg.chain_id, 1, k.cfg.public_keys[1])
    r = open_replica(wal, k.cfg, 1, k.ids[1], ChainApp(target=10))
    assert r.last_exec == 3 and r.app.height == 3  # type: ignore[attr-defined]
    assert r.committed_block(2) is not None


def _corrupt(path: Path, sql: str) -> None:
    db = sqlite3.connect(path)
    db.execute(sql)
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("UPDATE records SET body = replace(body, 'prepare', 'prepaxe') WHERE id = 3", "checksum"),
        ("DELETE FROM records WHERE id = 4", "missing"),
        ("DELETE FROM records WHERE id = (SELECT max(id) FROM records)", "truncated"),
        ("UPDATE meta SET value = '2' WHERE key = 'replica'", "belongs to replica"),
    ],
)
def test_corrupt_log_refuses_to_start(tmp_path: Path, sql: str, words: str) -> None:
    k, path = _filled_wal(tmp_path)
    _corrupt(path, sql)
    with pytest.raises(WalCorruptError, match=words) as info:
        open_replica(
            SqliteWal(path, k.cfg.chain_id, 1, k.cfg.public_keys[1]),
            k.cfg,
            1,
            k.ids[1],
            ChainApp(),
        )
    assert isinstance(info.value, PotError) and "refusing to start" in str(info.value)


def test_garbage_and_cut_files_refuse_to_start(tmp_path: Path) -> None:
    k, path = _filled_wal(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WalCorruptError):
        open_replica(
            SqliteWal(path, k.cfg.chain_id, 1, k.cfg.public_keys[1]), k.cfg, 1, k.ids[1], ChainApp()
        )
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(WalCorruptError, match="not a readable SQLite"):
        SqliteWal(junk, k.cfg.chain_id, 1, k.cfg.public_keys[1])


def test_semantically_bad_record_refuses_to_start(tmp_path: Path) -> None:
    k = Keys()
    records = [{"kind": "view", "view": 0, "active": True, "backoff": 0}, {"kind": "bogus"}]
    with pytest.raises(WalCorruptError, match="record 2 of 2"):
        Replica.restore(k.cfg, 1, k.ids[1], ChainApp(), records)
    records = [{"kind": "msg", "message": {"type": "prepare"}}]
    with pytest.raises(WalCorruptError, match="record 1 of 1"):
        Replica.restore(k.cfg, 1, k.ids[1], ChainApp(), records)


def test_compaction_bounds_the_log(tmp_path: Path) -> None:
    k = Keys(checkpoint_interval=2, watermark_window=4)
    wal = _wal(tmp_path, k)
    sim = Simulation(
        SimConfig(seed=1, n=4, blocks=12), wal_factory=lambda i: wal if i == 1 else None
    )
    assert sim.run().ok
    count = len(wal.load())
    assert count < 80  # 12 blocks without compaction would be ~120 records
    db = sqlite3.connect(wal.path)
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_replica_host_over_json_with_sqlite_logs(tmp_path: Path) -> None:
    """Four hosts with SQLite logs exchange JSON text through a FIFO queue; one restarts from
    its file mid-way; all commit the same blocks."""
    import json as _json
    from collections import deque

    from pot_cli.consensus.host import ReplicaHost

    k = Keys(checkpoint_interval=2, watermark_window=4)
    queue: deque[tuple[int, str]] = deque()

    def sender(src: int):  # type: ignore[no-untyped-def]
        def send(to, msg):  # type: ignore[no-untyped-def]
            text = _json.dumps(msg.to_dict())  # the transport serializes
            for dst in range(4) if to is None else [to]:
                if dst != src:
                    queue.append((dst, text))

        return send

    def make(rid: int) -> ReplicaHost:
        wal = SqliteWal(tmp_path / f"{rid}.sqlite", k.cfg.chain_id, rid, k.cfg.public_keys[rid])
        return ReplicaHost(k.cfg, rid, k.ids[rid], ChainApp(target=6), wal, sender(rid), 0)

    hosts = [make(r) for r in range(4)]
    steps = 0
    while queue:
        dst, text = queue.popleft()
        hosts[dst].deliver(text, steps)  # JSON text, parsed by the replica (parse_wire)
        steps += 1
        if steps == 40:
            hosts[2].log.close()  # type: ignore[attr-defined]
            hosts[2] = make(2)
    heads = {h.replica.app.state_digest() for h in hosts}  # type: ignore[attr-defined]
    assert all(h.replica.last_exec == 6 for h in hosts) and len(heads) == 1
