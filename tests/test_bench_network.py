"""``pot bench network``: its helpers, and its smallest real run (correctness only: the bench
measures speed, tests never assert it)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pot_cli.cli import app
from pot_cli.errors import UsageError
from pot_cli.sim import http_bench
from pot_cli.sim.http_bench import (
    NetworkBenchConfig,
    RawHttp,
    metric_value,
    process_cpu_seconds,
    summarize,
)

pytestmark = pytest.mark.timeout(240)


def test_summarize_nearest_rank() -> None:
    s = summarize(list(range(1, 101)))
    assert s["count"] == 100
    assert s["p50"] == 51.0  # nearest rank on 0..99 positions
    assert s["p99"] == 99.0
    assert (s["min"], s["max"], s["mean"]) == (1.0, 100.0, 50.5)
    assert summarize([])["p50"] is None


def test_metric_value_sums_matching_samples() -> None:
    text = (
        "# HELP pot_validator_submissions Submissions\n"
        "# TYPE pot_validator_submissions counter\n"
        'pot_validator_submissions_total{outcome="kept"} 7.0\n'
        'pot_validator_submissions_total{outcome="late"} 2.0\n'
        "# HELP pot_validator_derivation_seconds Derivations\n"
        "# TYPE pot_validator_derivation_seconds histogram\n"
        'pot_validator_derivation_seconds_bucket{le="+Inf"} 3.0\n'
        "pot_validator_derivation_seconds_count 3.0\n"
        "pot_validator_derivation_seconds_sum 0.25\n"
    )
    assert metric_value(text, "pot_validator_submissions_total", {"outcome": "kept"}) == 7.0
    assert metric_value(text, "pot_validator_submissions_total") == 9.0
    assert metric_value(text, "pot_validator_derivation_seconds_sum") == 0.25
    assert metric_value(text, "absent") == 0.0


def test_process_cpu_seconds() -> None:
    sum(i * i for i in range(200_000))  # some CPU of our own
    assert process_cpu_seconds(os.getpid()) > 0
    assert process_cpu_seconds(2**22 + 12345) == 0.0  # no such process


def test_config_checks_and_defaults() -> None:
    with pytest.raises(UsageError):
        NetworkBenchConfig(parts=("nope",))
    with pytest.raises(UsageError):
        NetworkBenchConfig(ns=(3,))
    cfg = NetworkBenchConfig()
    assert cfg.round_tasks() == ("tiny", "digits")
    assert cfg.scale_round_s(100) == http_bench.SCALE_MIN_ROUND_S
    assert cfg.scale_round_s(2000) > cfg.scale_round_s(500)
    assert NetworkBenchConfig(task="digits").round_tasks() == ("digits",)
    assert NetworkBenchConfig(scale_round_seconds=9.0).scale_round_s(2000) == 9.0


def test_raw_http_keeps_alive_and_survives_a_closed_connection() -> None:
    """The miners' client: status and body, keep-alive reuse, and a fresh connection when
    the server closed the idle one."""

    async def scenario() -> tuple[list[tuple[int, bytes]], int]:
        connections = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            served = 0
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break
                length = 0
                for line in head.decode().split("\r\n")[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":")[1])
                body = await reader.readexactly(length)
                reply = b'{"echo": %d}' % len(body)
                writer.write(
                    b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(reply), reply)
                )
                await writer.drain()
                served += 1
                if served == 2:  # as a server closing an idle keep-alive connection
                    break
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = RawHttp(f"http://127.0.0.1:{port}", 1)
        out = []
        try:
            for size in (3, 5, 7):
                out.append(await client.request("POST", "/v1/submit", b"x" * size, {"A": "b"}))
                await asyncio.sleep(0.05)
        finally:
            client.close()
            server.close()
            await server.wait_closed()
        return out, connections

    answers, connections = asyncio.run(scenario())
    assert answers == [(202, b'{"echo": 3}'), (202, b'{"echo": 5}'), (202, b'{"echo": 7}')]
    assert connections == 2  # two on the first connection, the third on a fresh one


def test_pbft_part_end_to_end(tmp_path: Path) -> None:
    """The smallest pbft run through the command: 4 real validators, 2 empty blocks."""
    out = tmp_path / "network.json"
    result = CliRunner().invoke(
        app,
        [
            "--home",
            str(tmp_path / "home"),
            "bench",
            "network",
            "--part",
            "pbft",
            "--n",
            "4",
            "--blocks",
            "2",
            "--json",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["benchmark"] == "network"
    assert set(report) >= {"date", "machine", "config", "pbft", "total_seconds"}
    (row,) = report["pbft"]["rows"]
    assert row["n"] == 4 and row["blocks"] == 2
    assert row["commit_latency_ms"]["count"] == 2 and row["commit_latency_ms"]["p50"] >= 0
    b = row["breakdown"]
    assert b["peer_messages_per_block"] > 0 and b["validator_cpu_ms_per_block"] > 0
    assert set(b["cpu_split_ms_per_block"]) == {
        "http_requests",
        "pbft_sans_io",
        "derivations",
        "rest",
    }
    assert report["pbft"]["met_goal_n4"] in (True, False)


def test_round_part_with_simulated_miners(tmp_path: Path) -> None:
    """One measured round of honest simulated miners: every submission kept and accepted,
    the latencies at every validator and the re-compute count present."""
    rnd = http_bench.bench_round("tiny", 1, tmp_path / "round", miners=3, round_s=0.5)
    assert rnd["rounds"] == 1 and rnd["accepted"] == 3 == rnd["submissions"]
    assert rnd["deadline_to_commit_ms"]["count"] == 4  # one round, 4 validators
    assert 0 <= rnd["recomputed"] <= 3
    assert set(rnd["outcomes"]) <= set(http_bench.TAKEN)
