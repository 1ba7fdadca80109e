"""``pot mine`` as a rig owner runs it: real processes on a recorded 8-GPU rig (planning, the
status API, the thermal watchdog, Ctrl-C), and the command in-process (CliRunner) mining on a
real network (4 ``pot validate`` processes on loopback, one for the module)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from miner_harness import MinerNetwork, miner_network
from typer.testing import CliRunner

from pot_cli.cli import app
from pot_cli.node.devnet import POT, free_port

RIG8 = Path(__file__).parent / "data" / "nvml" / "rig8.json"
runner = CliRunner()


def init_home(tmp_path: Path) -> Path:
    home = tmp_path / "miner"
    result = runner.invoke(app, ["--home", str(home), "init", "--role", "miner"])
    assert result.exit_code == 0, result.output
    return home


class MinerProcess:
    """``python -m pot_cli --home HOME mine ARGS``; its output is collected line by line."""

    def __init__(self, home: Path, args: list[str], env: dict[str, str]) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("POT_")}
        full_env.update(env, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pot_cli", "--home", str(home), "mine", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=full_env,
        )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    @property
    def output(self) -> str:
        with self.changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first output line matching ``pattern`` (waiting up to ``timeout`` s for it)."""
        regex = re.compile(pattern)
        end = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines:
                    m = regex.search(line)
                    if m:
                        return m
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    break
                self.changed.wait(min(left, 0.2))
        raise AssertionError(f"no line matching {pattern!r} in:\n{self.output}")

    def interrupt(self, timeout: float = 5.0) -> tuple[int, float]:
        """Ctrl-C; the exit code and how long it took to exit."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        rc = self.proc.wait(timeout)
        return rc, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.reader.join(5)


@pytest.fixture
def start_miner(tmp_path: Path) -> Iterator[Any]:
    """Starts miners; every one is killed at the end, whatever the test did."""
    started: list[MinerProcess] = []

    def start(args: list[str], recording: Path = RIG8) -> MinerProcess:
        home = tmp_path / "miner"
        if not home.exists():
            init_home(tmp_path)
        env = {
            "POT_NVML_REPLAY": str(recording),
            # nothing listens there: the miner only retries
            "POT_NETWORK_VALIDATORS": f"http://127.0.0.1:{free_port()}",
            "POT_MINER_TASK": "tiny",
        }
        p = MinerProcess(home, [*args, "--api-listen", "127.0.0.1:0"], env)
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            p.kill()


def summary_of(p: MinerProcess) -> dict[str, Any]:
    url = p.wait_for(r"status API on (http://\S+)").group(1)
    body: dict[str, Any] = requests.get(f"{url}/summary", timeout=5).json()
    return body


def test_mine_plans_one_worker_per_selected_card_and_serves_their_readings(
    start_miner: Any,
) -> None:
    p = start_miner(["--gpus", "0-3,6"])
    for i in (0, 1, 2, 3, 6):
        p.wait_for(rf"gpu{i}  NVIDIA GeForce RTX 30\S+( Ti)?  worker on cpu")
    p.wait_for(r"5 workers planned: gpu0 gpu1 gpu2 gpu3 gpu6")
    summary = summary_of(p)
    devices = summary["devices"]
    assert [d["gpu_index"] for d in devices] == [0, 1, 2, 3, 6]
    for d in devices:
        assert d["reading"]["temperature_c"] is not None
        assert d["reading"]["power_draw_w"] is not None
        assert d["reading"]["name"] == d["card"]
    assert summary["electricity"]["power_w"] > 0
    p.wait_for(r"warning: no validator answers .*retrying in")
    rc, took = p.interrupt()
    assert rc in (0, 130), p.output
    assert took < 5


def test_mine_all_skips_the_lost_card_and_plans_seven_workers(start_miner: Any) -> None:
    p = start_miner(["--gpus", "all"])
    p.wait_for(r"warning: GPU 5 is lost and skipped \(fell off the bus")
    p.wait_for(r"7 workers planned: gpu0 gpu1 gpu2 gpu3 gpu4 gpu6 gpu7")
    assert [d["name"] for d in summary_of(p)["devices"]] == [
        f"gpu{i}" for i in (0, 1, 2, 3, 4, 6, 7)
    ]
    rc, took = p.interrupt()
    assert rc in (0, 130), p.output
    assert took < 5


def device_states(url: str) -> dict[str, str]:
    devices = requests.get(f"{url}/summary", timeout=5).json()["devices"]
    return {d["name"]: d["state"] for d in devices}


def test_the_watchdog_pauses_a_hot_card_and_resumes_it(start_miner: Any, tmp_path: Path) -> None:
    data = json.loads(RIG8.read_text())
    # the planner reads once, then the watchdog once per poll: cool, hot for 20 polls, cool
    data["devices"][2]["temperature_gpu"] = {"sequence": [60, 60] + [95] * 20 + [70] * 400}
    recording = tmp_path / "hot.json"
    recording.write_text(json.dumps(data))
    p = start_miner(["--gpus", "1,2", "--watchdog-seconds", "0.1"], recording)
    url = p.wait_for(r"status API on (http://\S+)").group(1)
    p.wait_for(r"gpu2 paused: 95 °C is above the 83 °C limit")
    assert device_states(url) == {"gpu1": "idle", "gpu2": "paused"}
    p.wait_for(r"gpu2 resumed: 70 °C")
    assert device_states(url) == {"gpu1": "idle", "gpu2": "idle"}
    rc, _ = p.interrupt()
    assert rc in (0, 130), p.output


# ---------------------------------------------------------------------- in process


def invoke(home: Path, args: list[str], env: dict[str, str]) -> Any:
    return runner.invoke(app, ["--home", str(home), "mine", *args], env=env)


def test_mine_help_shows_the_options_and_hides_the_attack() -> None:
    result = runner.invoke(app, ["mine", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--gpus", "--rounds", "--api-listen", "--json-log"):
        assert option in result.output
    assert "--attack" not in result.output and "--watchdog-seconds" not in result.output


def test_mine_refuses_an_unknown_attack_and_a_bad_selection(tmp_path: Path) -> None:
    home = init_home(tmp_path)
    result = invoke(home, ["--attack", "bogus"], {})
    assert result.exit_code == 2
    assert "unknown attack 'bogus'" in result.output
    result = invoke(home, ["--gpus", "0-"], {})
    assert result.exit_code == 2 and "bad GPU range" in result.output


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinerNetwork]:
    with miner_network(tmp_path_factory.mktemp("cli-mine-net")) as n:
        yield n


def test_mine_refuses_another_chain_clearly(tmp_path: Path, net: MinerNetwork) -> None:
    home = init_home(tmp_path)  # [node] chain_id is the default, not the network's
    url = net.urls[0]
    env = {"POT_NETWORK_VALIDATORS": url, "POT_MINER_TASK": "tiny"}
    result = invoke(home, ["--api-listen", "127.0.0.1:0"], env)
    assert result.exit_code == 2, result.output
    assert f"error: validator {url} serves chain '{net.chain_id}'" in result.output
    assert "chain_id is 'pot-devnet-1'" in result.output


def test_mine_one_round_with_json_log(net: MinerNetwork) -> None:
    node, _ = net.take_miner()  # a staked identity; its config lists the validators
    net.wait_fresh_round()
    result = invoke(node.home, ["--rounds", "1", "--json-log", "--api-listen", "127.0.0.1:0"], {})
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    (verdict,) = [r for r in records if r["event"] == "round"]
    h = verdict["height"]
    (on_chain,) = [v for v in net.block(h).verdicts if v.miner == node.address]
    assert verdict["kind"] == on_chain.kind == "accepted"
    assert verdict["reward"] == on_chain.reward > 0
    assert verdict["message"].startswith(f"round {h}  accepted  +{on_chain.reward / POT:.4f} POT")
    assert records[-1]["message"] == "stopped after 1 round"


def test_a_byzantine_miner_submits_its_forgery(net: MinerNetwork) -> None:
    node, _ = net.take_miner()
    net.wait_fresh_round()
    args = ["--rounds", "1", "--attack", "zero", "--api-listen", "127.0.0.1:0"]
    result = invoke(node.home, args, {})
    assert result.exit_code == 0, result.output
    assert "Byzantine test miner: submitting 'zero' forgeries" in result.output
    m = re.search(r"round (\d+)  rejected \(zero\)  -(\d+\.\d{4}) POT", result.output)
    assert m, result.output
    (on_chain,) = [v for v in net.block(int(m.group(1))).verdicts if v.miner == node.address]
    assert (on_chain.kind, on_chain.code) == ("rejected", "zero")
    assert on_chain.penalty == net.net.layout.genesis.malformed_penalty > 0
    assert float(m.group(2)) == on_chain.penalty / POT
