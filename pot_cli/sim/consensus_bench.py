"""``pot bench consensus``: throughput, commit latency and view-change latency, measured.

All runs use the simulator with real Ed25519 signatures and **one verifier per replica** (each
replica verifies every signature it relies on itself, with only its own cache), no faults, and
a network delay uniform in ``[min_delay, max_delay]`` virtual milliseconds.

* throughput: committed blocks per CPU second, where the CPU time is what the n replicas'
  ``step``/``tick`` calls consumed (process time, one core), i.e. the cost of running the whole
  replica set on one core; the per-replica figure (blocks per CPU second of one validator) is
  n times that;
* commit latency: virtual time from the primary sending a pre-prepare to each honest replica
  committing that block;
* view-change latency: the primary crashes for good at a time when blocks are in flight;
  measured from the crash to the first commit in the new view, against the target
  ``view-change timeout + 3 message delays`` (with the maximum delay: the worst case).
"""

from __future__ import annotations

import platform
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from pot_cli.sim.consensus import SimConfig, Simulation

THROUGHPUT_GOAL_N4 = 100.0


def _percentile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return float(ordered[idx])


def bench_throughput(n: int, blocks: int) -> dict[str, Any]:
    cfg = SimConfig(
        seed=0,
        n=n,
        fault="none",
        blocks=blocks,
        checkpoint_interval=8,
        watermark_window=32,
        max_in_flight=8,
        chaos_until=0,
        round_interval=0,
        shared_verifier=False,
        measure_cpu=True,
    )
    wall0 = time.perf_counter()
    result = Simulation(cfg).run()
    wall = time.perf_counter() - wall0
    cpu = result.replica_cpu
    lat = result.commit_latencies
    return {
        "n": n,
        "f": cfg.f,
        "blocks": result.committed,
        "ok": result.ok,
        "replica_cpu_s": round(cpu, 4),
        "blocks_per_cpu_s": round(result.committed / cpu, 1) if cpu > 0 else None,
        "blocks_per_cpu_s_per_replica": round(result.committed * n / cpu, 1) if cpu > 0 else None,
        "signature_verifications": result.verifications,
        "commit_latency_ms_mean": round(statistics.fmean(lat), 2) if lat else None,
        "commit_latency_ms_p50": _percentile(lat, 0.5),
        "commit_latency_ms_p99": _percentile(lat, 0.99),
        "virtual_time_ms": result.end_time,
        "wall_s": round(wall, 3),
    }


def bench_view_change(n: int = 4, runs: int = 20) -> dict[str, Any]:
    """Crash the primary for good at several moments; latency to the first new-view commit."""
    base = SimConfig(seed=0, n=n)
    samples: list[int] = []
    failures = 0
    for i in range(runs):
        crash_at = 200 + 7 * i
        cfg = SimConfig(
            seed=i,
            n=n,
            fault="none",
            blocks=10_000,
            checkpoint_interval=8,
            watermark_window=32,
            max_in_flight=4,
            chaos_until=0,
            round_interval=10,
            crash_primary_at=crash_at,
        )
        sim = Simulation(cfg)
        first_new = _first_commit_after_view_change(sim, crash_at)
        if first_new is None:
            failures += 1
        else:
            samples.append(first_new - crash_at)
    timeout, delay = base.timeout, base.max_delay
    return {
        "n": n,
        "runs": runs,
        "failures": failures,
        "view_change_timeout_ms": timeout,
        "max_message_delay_ms": delay,
        "target_ms": timeout + 3 * delay,
        "latency_ms_mean": round(statistics.fmean(samples), 2) if samples else None,
        "latency_ms_max": max(samples) if samples else None,
        "latency_ms_min": min(samples) if samples else None,
        "within_target": sum(1 for s in samples if s <= timeout + 3 * delay),
    }


def _first_commit_after_view_change(sim: Simulation, crash_at: int) -> int | None:
    """Run until some honest replica commits a block proposed in a view > 0."""
    limit = crash_at + 20 * sim.sc.timeout

    def done(s: Simulation) -> bool:
        return s.now > limit or any(view > 0 for _, _, view in s.commit_log)

    sim.run(until=done)
    return next((t for t, _, view in sim.commit_log if view > 0 and t <= limit), None)


def run_bench(ns: list[int], blocks: int, vc_runs: int) -> dict[str, Any]:
    throughput = [bench_throughput(n, blocks) for n in ns]
    view_change = bench_view_change(4, vc_runs)
    n4 = next((r for r in throughput if r["n"] == 4), None)
    return {
        "benchmark": "consensus",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "signatures": "Ed25519 (cryptography/OpenSSL), one verifier+cache per replica",
        "throughput": throughput,
        "view_change": view_change,
        "goals": {
            "blocks_per_cpu_s_n4": THROUGHPUT_GOAL_N4,
            "met_blocks_per_cpu_s_n4": bool(
                n4 and n4["blocks_per_cpu_s"] and n4["blocks_per_cpu_s"] >= THROUGHPUT_GOAL_N4
            ),
            "view_change_target_ms": view_change["target_ms"],
            "met_view_change": bool(
                view_change["latency_ms_max"] is not None
                and view_change["latency_ms_max"] <= view_change["target_ms"]
            ),
        },
    }
