"""The miner's pieces: shard planning and combination, crashed workers, the thermal watchdog,
device planning on a recorded rig, compression and skip decisions, model verification; and the
whole round loop on a real network (4 ``pot validate`` processes on loopback, one for the
module): verdicts, payloads and balances are read back from the real chain. A stand-in
(``ByzantineValidator``) plays only what no real validator can be made to do: serve a model
whose bytes do not hash to its name."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
from miner_harness import (
    GENESIS_BALANCE,
    GENESIS_STAKE,
    ByzantineValidator,
    MinerNetwork,
    miner_network,
)

from pot_cli.cli.mine import build_forger
from pot_cli.crypto import Identity, sha256
from pot_cli.errors import PotError
from pot_cli.gpu_selection import GpuSelectionError
from pot_cli.hw.nvml_replay import ReplayBackend
from pot_cli.node.client import ApiError, FailoverClient, Unreachable, ValidatorClient
from pot_cli.node.miner import (
    Forger,
    MinerSettings,
    ModelCache,
    ModelUnavailable,
    RoundSkipped,
    describe_failure,
    load_last_submitted,
    resolve_compression,
    run_miner,
    save_last_submitted,
    skip_reason,
    verdict_line,
)
from pot_cli.node.miner_api import to_units
from pot_cli.node.rig import (
    LogRecord,
    Rig,
    RigError,
    RigMonitor,
    RigPlan,
    ThermalLimits,
    WorkerSpec,
    combine_shards,
    plan_rig,
    plan_shards,
)
from pot_cli.training.assignment import assign_batch
from pot_cli.training.codec import decode_gradient, decode_model
from pot_cli.training.gradients import Gradient, Numerics, Params, compute_gradient
from pot_cli.training.state import flatten, model_hash
from pot_cli.training.tasks import Task, load_task

RIG8 = Path(__file__).parent / "data" / "nvml" / "rig8.json"
NO_DRIVER: dict[str, Any] = {"init_error": "LIBRARY_NOT_FOUND", "devices": []}


class Logs:
    """Collects log records (the rig's threads log too)."""

    def __init__(self) -> None:
        self.records: list[LogRecord] = []
        self.lock = threading.Lock()

    def __call__(self, record: LogRecord) -> None:
        with self.lock:
            self.records.append(record)

    def events(self, event: str) -> list[LogRecord]:
        with self.lock:
            return [r for r in self.records if r.event == event]

    def text(self) -> str:
        with self.lock:
            return "\n".join(r.message for r in self.records)


def cpu_rig(n: int, logs: Logs, **kw: Any) -> Rig:
    specs = tuple(WorkerSpec(f"gpu{i}", "cpu", i) for i in range(n))
    return Rig(RigPlan(specs), log=logs, **kw)


def batch(task: Task, seed: bytes = b"\x01" * 32) -> list[int]:
    return assign_batch(seed, Identity.from_seed(b"m").address, task.train_size, task.batch_size)


def rel_err(a: Gradient, b: Gradient, task: Task) -> float:
    va, vb = flatten(a, task.param_shapes), flatten(b, task.param_shapes)
    return float((va - vb).norm() / vb.norm())


# ------------------------------------------------------------------------------ the rig


def test_plan_shards_are_contiguous_and_balanced() -> None:
    assert plan_shards(64, 5) == [(0, 13), (13, 26), (26, 39), (39, 52), (52, 64)]
    assert plan_shards(3, 8) == [(0, 1), (1, 2), (2, 3)]
    assert plan_shards(10, 1) == [(0, 10)]
    with pytest.raises(ValueError):
        plan_shards(0, 2)


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_combined_gradient_equals_the_single_worker_gradient(workers: int) -> None:
    task = load_task("digits")
    params, indices = task.initial_params(), batch(task)
    whole = compute_gradient(task, params, indices)
    parts = [
        (compute_gradient(task, params, indices[a:b]), b - a)
        for a, b in plan_shards(len(indices), workers)
    ]
    assert rel_err(combine_shards(parts), whole, task) < 1e-6
    logs = Logs()
    rig = cpu_rig(workers, logs)
    rig.start()
    try:
        got = rig.compute(task.name, params, indices)
    finally:
        rig.close()
    assert rel_err(got.grad, whole, task) < 1e-6
    assert got.workers == tuple(f"gpu{i}" for i in range(workers))
    assert got.samples == len(indices) and got.samples_per_s > 0


def test_a_crashed_worker_is_restarted_and_the_round_still_gets_its_gradient() -> None:
    task = load_task("tiny")
    params, indices = task.initial_params(), batch(task)
    calls = {"n": 0}
    lock = threading.Lock()

    def flaky(t: Task, p: Params, idx: Sequence[int], numerics: Numerics) -> Gradient:
        with lock:
            calls["n"] += 1
            first = calls["n"] == 1
        if first:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return compute_gradient(t, p, idx, numerics)

    logs = Logs()
    rig = cpu_rig(2, logs, compute=flaky)
    rig.start()
    try:
        got = rig.compute(task.name, params, indices)
        assert rel_err(got.grad, compute_gradient(task, params, indices), task) < 1e-6
        assert sum(w.restarts for w in rig.workers) == 1
        assert all(w.alive for w in rig.workers)
        assert logs.events("worker-crashed") and logs.events("worker-restarted")
        assert "illegal memory access" in logs.events("worker-crashed")[0].message
    finally:
        rig.close()


def test_a_shard_that_always_crashes_fails_the_round_clearly() -> None:
    def broken(t: Task, p: Params, idx: Sequence[int], numerics: Numerics) -> Gradient:
        raise RuntimeError("boom")

    task = load_task("tiny")
    rig = cpu_rig(1, Logs(), compute=broken)
    rig.start()
    try:
        with pytest.raises(RigError, match="failed 3 times"):
            rig.compute(task.name, task.initial_params(), batch(task))
    finally:
        rig.close()


def rig8_with_temperatures(gpu: int, temps: list[int]) -> ReplayBackend:
    data = json.loads(RIG8.read_text())
    data["devices"][gpu]["temperature_gpu"] = {"sequence": temps}
    return ReplayBackend(data)


def test_watchdog_pauses_above_the_limit_and_resumes_at_the_resume_temperature() -> None:
    # reading 0 is the planner's; then one per poll
    monitor = RigMonitor(rig8_with_temperatures(2, [60, 70, 90, 80, 76, 75, 70]))
    readings = monitor.open()
    assert readings is not None
    plan = plan_rig(readings, "1,2")
    logs = Logs()
    rig = Rig(plan, log=logs, monitor=monitor, readings=readings, limits=ThermalLimits(83, 75))
    states = []
    for _ in range(6):
        rig.poll()
        states.append(rig.workers[1].state)
    assert states == ["idle", "paused", "paused", "paused", "idle", "idle"]
    assert [w.state for w in rig.workers[:1]] == ["idle"]
    (paused,) = logs.events("worker-paused")
    assert paused.message.startswith("gpu2 paused: 90 °C is above the 83 °C limit")
    (resumed,) = logs.events("worker-resumed")
    assert resumed.message.startswith("gpu2 resumed: 75 °C")
    assert rig.devices()[1]["reading"]["temperature_c"] == 70
    monitor.close()


def test_a_round_waits_for_a_paused_worker_until_its_deadline() -> None:
    task = load_task("tiny")
    rig = cpu_rig(1, Logs())
    rig.workers[0].paused = True
    rig.start()
    try:
        with pytest.raises(RigError, match="every worker is paused"):
            rig.compute(task.name, task.initial_params(), batch(task), deadline=time.monotonic())
    finally:
        rig.close()


def test_plan_on_the_recorded_eight_gpu_rig() -> None:
    monitor = RigMonitor(ReplayBackend.from_file(RIG8))
    readings = monitor.open()
    assert readings is not None and len(readings) == 8
    chosen = plan_rig(readings, "0-3,6")
    assert [w.name for w in chosen.workers] == ["gpu0", "gpu1", "gpu2", "gpu3", "gpu6"]
    assert all(w.device == "cpu" for w in chosen.workers)  # no CUDA here
    assert chosen.workers[0].card == "NVIDIA GeForce RTX 3070"
    every = plan_rig(readings, "all")
    assert len(every.workers) == 7 and "gpu5" not in {w.name for w in every.workers}
    assert any("GPU 5 is lost and skipped" in n for n in every.warnings)
    with pytest.raises(RigError, match="every one is lost"):
        plan_rig(readings, "5")
    with pytest.raises(GpuSelectionError, match="no GPU 9"):
        plan_rig(readings, "9")
    cuda = plan_rig(readings, "0,1", cuda_map={1: 0})
    assert [w.device for w in cuda.workers] == ["cpu", "cuda:0"]
    monitor.close()


def test_plan_without_nvml_is_one_cpu_worker() -> None:
    monitor = RigMonitor(ReplayBackend(NO_DRIVER))
    assert monitor.open() is None and monitor.message is not None
    plan = plan_rig(None, "all", nvml_message=monitor.message)
    assert plan.workers == (WorkerSpec("cpu", "cpu"),)
    assert "using the CPU" in plan.notes[0]
    with pytest.raises(GpuSelectionError, match="use --gpus all"):
        plan_rig(None, "0", nvml_message=monitor.message)


# ----------------------------------------------------------------------- decisions


def test_compression_auto_follows_the_network_and_a_mismatch_is_refused() -> None:
    assert resolve_compression("auto", 0.2, "int8").label() == "int8"
    assert resolve_compression("auto", 0.5, "topk:0.2").label() == "topk:0.2"
    assert resolve_compression("topk", 0.2, "topk:0.2").label() == "topk:0.2"
    assert resolve_compression("none", 0.2, "none").label() == "none"
    with pytest.raises(RoundSkipped, match='compression is "none" but the network takes "int8"'):
        resolve_compression("none", 0.2, "int8")
    with pytest.raises(RoundSkipped, match=r'"topk:0\.1" but the network takes "topk:0\.2"'):
        resolve_compression("topk", 0.1, "topk:0.2")
    with pytest.raises(RoundSkipped, match="unknown compression"):
        resolve_compression("auto", 0.2, "zstd")


def test_skip_decision() -> None:
    assert skip_reason(5.0, None, 0.15) is None  # not measured yet: try
    assert skip_reason(5.0, 1.0, 0.15) is None
    reason = skip_reason(1.0, 2.5, 0.15)
    assert reason == "1.00 s left, the work takes ~2.50 s"
    assert skip_reason(0.1, None, 0.15) == "only 0.10 s left before the deadline"
    assert skip_reason(-3.0, 0.1, 0.15) == "only 0.00 s left before the deadline"


def test_a_failed_request_is_described_in_a_few_words() -> None:
    refused = Unreachable(
        "http://127.0.0.1:1: ConnectionError: HTTPConnectionPool(host='127.0.0.1', port=1): "
        'Max retries exceeded with url: /v1/status (Caused by NewConnectionError("HTTPConnection'
        "(host='127.0.0.1', port=1): Failed to establish a new connection: [Errno 111] "
        'Connection refused"))'
    )
    assert describe_failure(refused) == "http://127.0.0.1:1: connection refused"
    slow = Unreachable("http://h:1: ReadTimeout: HTTPConnectionPool(...): Read timed out.")
    assert describe_failure(slow) == "http://h:1: timed out"
    assert describe_failure(ApiError(409, "late", "too late", "http://h:1")) == (
        "http://h:1: 409 late: too late"
    )


def test_verdict_line() -> None:
    line = verdict_line(12, "accepted", None, 200_000, 5120.4, ("gpu0", "gpu1", "gpu2"))
    assert line == "round 12  accepted  +0.2000 POT  5,120 samples/s  (gpu0 gpu1 gpu2)"
    assert verdict_line(13, "slashed", "forgery", -5_000_000, None, ()) == (
        "round 13  slashed (forgery)  -5.0000 POT"
    )


def test_model_is_verified_by_hash_and_cached(net: MinerNetwork) -> None:
    task = load_task("tiny")
    good = net.urls[0]
    with ByzantineValidator(good) as bad:
        wanted = net.client.round().model_hash
        logs = Logs()
        client = FailoverClient([bad.url, good], timeout=5)
        cache = ModelCache()
        params = cache.get(client, task, wanted, logs, 5.0)
        served = decode_model(task, net.client.model(wanted))
        assert model_hash(params) == wanted
        assert all(torch.equal(params[n], served[n]) for n in served)
        (refused,) = logs.events("model-refused")
        assert bad.url in refused.message and "hashes to" in refused.message
        # cached: no validator is asked again (the Byzantine one would be asked first)
        assert cache.get(client, task, wanted, logs, 5.0) is params
        assert (bad.model_downloads, cache.downloads) == (1, 2)
        with pytest.raises(ModelUnavailable, match="no validator served model"):
            ModelCache().get(FailoverClient([bad.url]), task, wanted, logs, 5.0)
        client.close()


def test_state_file_round_trip_and_other_chains_ignored(tmp_path: Path) -> None:
    path = tmp_path / "miner-state.json"
    assert load_last_submitted(path, "c", "a") == 0
    save_last_submitted(path, "c", "a", 41)
    assert load_last_submitted(path, "c", "a") == 41
    assert load_last_submitted(path, "other", "a") == 0
    path.write_text("{not json")
    assert load_last_submitted(path, "c", "a") == 0


# ------------------------------------------------------------------- the round loop
# Everything below mines on a REAL network: 4 `pot validate` processes on loopback, started once
# for the module (see miner_harness.miner_network); each test takes its own staked identity.


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinerNetwork]:
    with miner_network(tmp_path_factory.mktemp("miner-net")) as n:
        yield n


def settings(home: Path, net: MinerNetwork, **kw: Any) -> MinerSettings:
    return MinerSettings(
        **{
            "chain_id": net.chain_id,
            "validators": net.urls,
            "task": "tiny",
            "home": home,
            "api_listen": "127.0.0.1:0",
            "request_timeout_s": 5.0,
            **kw,
        }
    )


class MinerThread:
    """``run_miner`` on a thread, as ``pot mine`` runs it (no NVML: one CPU worker)."""

    def __init__(
        self, s: MinerSettings, identity: Identity, logs: Logs, forger: Forger | None
    ) -> None:
        self.logs = logs
        self.stop_event = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(s, identity, forger), daemon=True)
        self.thread.start()

    def _run(self, s: MinerSettings, identity: Identity, forger: Forger | None) -> None:
        try:
            run_miner(
                s,
                identity,
                backend=ReplayBackend(NO_DRIVER),
                log=self.logs,
                stop=self.stop_event,
                forger=forger,
            )
        except BaseException as exc:  # surfaced by wait()
            self.errors.append(exc)

    def api_url(self, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while not self.logs.events("api"):
            assert time.monotonic() < deadline, f"no status API:\n{self.logs.text()}"
            assert self.thread.is_alive() or self.logs.events("api"), self.errors
            time.sleep(0.02)
        return str(self.logs.events("api")[0].fields["url"])

    def wait(self, timeout: float) -> None:
        """Until the miner returns by itself (its round limit), at most ``timeout`` s."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the miner did not stop:\n{self.logs.text()}"
        assert not self.errors, self.errors

    def wait_for(self, what: str, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert self.thread.is_alive(), f"the miner stopped: {self.errors}\n{self.logs.text()}"
            assert time.monotonic() < deadline, f"no {what} in {timeout:.0f} s:\n{self.logs.text()}"
            time.sleep(0.05)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), f"the miner did not stop:\n{self.logs.text()}"


@pytest.fixture
def start_miner(net: MinerNetwork) -> Iterator[Callable[..., MinerThread]]:
    """Starts in-process miners, each early in a round (so its first round is not skipped for
    want of time); every one is stopped at the end, whatever the test did."""
    started: list[MinerThread] = []

    def start(
        s: MinerSettings, identity: Identity, logs: Logs, forger: Forger | None = None
    ) -> MinerThread:
        net.wait_fresh_round()
        m = MinerThread(s, identity, logs, forger)
        started.append(m)
        return m

    try:
        yield start
    finally:
        for m in started:
            m.stop_event.set()
        for m in started:
            m.stop()


class ModelRecorder:
    """Reads every model the real network trains as it comes (a validator keeps only the last
    few), checked against its hash: the honest recompute of a past round needs its model."""

    def __init__(self, url: str, task: Task) -> None:
        self.client = ValidatorClient(url, timeout=5.0)
        self.task = task
        self.models: dict[str, Params] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(PotError):  # unreachable, between rounds, undecodable
                wanted = self.client.round().model_hash
                if wanted not in self.models:
                    params = decode_model(self.task, self.client.model(wanted))
                    if model_hash(params) == wanted:  # else the test misses it and says so
                        self.models[wanted] = params
            self.stop.wait(0.1)

    def __enter__(self) -> ModelRecorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.client.close()


def peer_payload(url: str, payload_hash: str) -> bytes:
    r = requests.get(f"{url}/v1/peer/payload/{payload_hash}", timeout=5)
    assert r.status_code == 200, (url, r.status_code, r.text)
    return r.content


def test_the_loop_submits_verifiable_gradients_and_reports_verdicts(
    tmp_path: Path, net: MinerNetwork, start_miner: Callable[..., MinerThread]
) -> None:
    _, identity = net.take_miner()
    task = load_task("tiny")
    logs = Logs()
    with ModelRecorder(net.urls[0], task) as recorder:
        miner = start_miner(settings(tmp_path, net, rounds=2), identity, logs)
        url = miner.api_url()
        miner.wait(60)
    rounds = logs.events("round")
    assert len(rounds) == 2, logs.text()
    heights = [r.fields["height"] for r in rounds]
    # every validator took every submission (and a verdict came for each one submitted)
    submitted = logs.events("round-submitted")
    assert [(e.fields["height"], e.fields["kept_by"]) for e in submitted] == [
        (h, len(net.urls)) for h in heights
    ]
    for r in rounds:
        h = r.fields["height"]
        block = net.block(h)
        # every validator committed the same block, and it accepts the miner's work
        assert {net.block(h, client=c).hash for c in net.clients} == {block.hash}
        verdict = net.verdict(block, identity.address)
        assert verdict is not None and verdict.kind == "accepted" and verdict.reward > 0
        assert r.fields["kind"] == "accepted" and r.fields["reward"] == verdict.reward
        assert r.message.startswith(f"round {h}  accepted  +{to_units(verdict.reward):.4f} POT")
        assert "samples/s  (cpu)" in r.message
        # every validator holds the same bytes, and they decode to the honest gradient
        body = block.proposal["block"]
        (sub,) = [s for s in body["submissions"] if s["miner"] == identity.address]
        payloads = {peer_payload(u, sub["payload_hash"]) for u in net.urls}
        assert len(payloads) == 1
        payload = payloads.pop()
        assert sha256(payload).hex() == sub["payload_hash"]
        decoded = decode_gradient(task, payload)
        assert decoded.header.height == h and decoded.header.compression.label() == "int8"
        assert decoded.header.model_hash == body["model_before"]
        indices = assign_batch(
            bytes.fromhex(body["round_seed"]), identity.address, task.train_size, task.batch_size
        )
        assert body["model_before"] in recorder.models, f"round {h}'s model was not recorded"
        honest = compute_gradient(task, recorder.models[body["model_before"]], indices)
        # int8 quantisation costs ~0.01-0.017 here; a lazy half batch is off by > 0.4
        assert rel_err(decoded.gradient, honest, task) < task.spot_check_tolerance  # 0.04
    state = json.loads((tmp_path / "miner-state.json").read_text())
    assert state["last_submitted_height"] == heights[-1]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/summary", timeout=2)  # the API stopped with the miner


def test_the_miner_refuses_a_byzantine_validators_model_and_mines_with_the_others(
    tmp_path: Path, net: MinerNetwork, start_miner: Callable[..., MinerThread]
) -> None:
    _, identity = net.take_miner()
    logs = Logs()
    # the Byzantine validator is asked first: it answers the round (forwarded), poisons models
    with ByzantineValidator(net.urls[0]) as bad:
        s = settings(tmp_path, net, rounds=2, validators=(bad.url, *net.urls[1:]))
        start_miner(s, identity, logs).wait(60)
    refused = logs.events("model-refused")
    assert refused, logs.text()
    assert all(bad.url in r.message and "hashes to" in r.message for r in refused)
    rounds = logs.events("round")
    assert [r.fields["kind"] for r in rounds] == ["accepted", "accepted"], logs.text()
    # each round's model was asked of it once (refused there, then taken verified from an
    # honest validator: the refusal costs no round)
    models = {net.block(r.fields["height"]).proposal["block"]["model_before"] for r in rounds}
    assert sorted(bad.model_requests) == sorted(models), (bad.model_requests, models)


def test_summary_and_metrics_while_mining(
    tmp_path: Path, net: MinerNetwork, start_miner: Callable[..., MinerThread]
) -> None:
    _, identity = net.take_miner()
    logs = Logs()
    miner = start_miner(settings(tmp_path, net, price_per_kwh=0.3), identity, logs)
    url = miner.api_url()
    summary: dict[str, Any] = {}

    def rewarded() -> bool:
        nonlocal summary
        summary = requests.get(f"{url}/summary", timeout=2).json()
        balance = summary["balance"]
        return summary["counts"]["accepted"] >= 1 and bool(
            balance and balance["balance"] > GENESIS_BALANCE
        )

    miner.wait_for("accepted round with its reward in the balance", rewarded, 30)
    (first, *_) = logs.events("round")
    verdict = net.verdict(net.block(first.fields["height"]), identity.address)
    assert verdict is not None and verdict.kind == "accepted"
    assert summary["miner"]["address"] == identity.address
    assert summary["miner"]["chain_id"] == net.chain_id
    assert summary["earnings"]["reward"] >= verdict.reward > 0
    assert summary["balance"]["balance"] >= GENESIS_BALANCE + verdict.reward
    assert summary["balance"]["stake"] == GENESIS_STAKE
    account = net.client.account(identity.address)  # the chain agrees (or is ahead)
    assert account.balance >= summary["balance"]["balance"]
    assert summary["devices"][0]["name"] == "cpu" and summary["devices"][0]["shards"] >= 1
    assert summary["samples_per_s"] > 0 and summary["round"]["height"] >= 1
    assert summary["electricity"]["price_per_kwh"] == 0.3
    assert summary["electricity"]["cost"] is None  # no power sensor on the CPU
    metrics = requests.get(f"{url}/metrics", timeout=2).text
    assert 'pot_miner_rounds_total{outcome="accepted"}' in metrics
    assert "pot_miner_samples_per_second" in metrics
    assert requests.post(f"{url}/summary", timeout=2).status_code == 405  # read-only
    miner.stop()


def test_a_restarted_miner_does_not_resubmit_a_round(
    tmp_path: Path, net: MinerNetwork, start_miner: Callable[..., MinerThread]
) -> None:
    _, identity = net.take_miner()
    logs = Logs()
    current = net.wait_fresh_round(1200)  # the round the miner will find open: submitted before
    save_last_submitted(tmp_path / "miner-state.json", net.chain_id, identity.address, current)
    start_miner(settings(tmp_path, net, rounds=1), identity, logs).wait(60)
    assert logs.events("resume")[0].message == f"resuming after round {current} (already submitted)"
    (submitted,) = logs.events("round-submitted")
    h = submitted.fields["height"]
    assert h > current, logs.text()
    # on the chain: nothing from this miner up to the round it had submitted, then its round
    for height in range(max(1, current - 1), h + 1):
        verdict = net.verdict(net.block(height), identity.address)
        assert (verdict is not None) == (height == h), (height, verdict)


def test_an_ejected_miner_says_so_once_per_round_and_stops_working(
    tmp_path: Path, net: MinerNetwork, start_miner: Callable[..., MinerThread]
) -> None:
    _, identity = net.take_miner()
    # a lazy forger (half its batch): on probation, so its submission is re-computed for sure,
    # slashed as a forgery, and the identity ejected
    forging = Logs()
    forger = start_miner(settings(tmp_path, net), identity, forging, build_forger("lazy"))
    forger.wait_for("verdict on the forgery", lambda: bool(forging.events("round")), 30)
    forger.stop()
    slashed = forging.events("round")[0]
    h = slashed.fields["height"]
    assert (slashed.fields["kind"], slashed.fields["code"]) == ("slashed", "recompute-mismatch")
    penalty = net.net.layout.genesis.forgery_slash
    assert slashed.fields["penalty"] == penalty
    assert slashed.message.startswith(
        f"round {h}  slashed (recompute-mismatch)  {to_units(-penalty):+.4f} POT"
    )
    assert slashed.message.endswith("samples/s  (forged)")
    net.wait(
        "every validator to know the ejection",
        lambda: all(c.account(identity.address).ejected for c in net.clients),
        20,
    )
    # the same identity, honest now: its first submission is refused, then it stops working
    before = net.submissions()
    logs = Logs()
    start_miner(settings(tmp_path, net, rounds=2), identity, logs).wait(60)
    (refused,) = logs.events("round-refused")
    assert refused.message.endswith(
        "not taken: ejected from 4 (the miner was ejected for a proven forgery)"
    ), logs.text()
    (skipped,) = logs.events("round-skipped")
    assert "was ejected for a proven forgery and can no longer mine" in skipped.message
    assert skipped.fields["height"] > refused.fields["height"]
    # nothing computed or sent for the second round: each validator refused exactly one
    for old, new in zip(before, net.submissions(), strict=True):
        assert new.get("ejected", 0) - old.get("ejected", 0) == 1, (old, new)
        assert sum(new.values()) - sum(old.values()) == 1, (old, new)


def test_a_compression_the_network_does_not_take_is_refused_before_any_work(
    tmp_path: Path, net: MinerNetwork, start_miner: Callable[..., MinerThread]
) -> None:
    _, identity = net.take_miner()
    before = net.submissions()
    logs = Logs()
    miner = start_miner(settings(tmp_path, net, compression="none"), identity, logs)
    url = miner.api_url()
    summary: dict[str, Any] = {}

    def skipped_twice() -> bool:
        nonlocal summary
        summary = requests.get(f"{url}/summary", timeout=2).json()
        return int(summary["counts"]["skipped"]) >= 2

    miner.wait_for("two skipped rounds", skipped_twice, 20)
    miner.stop()
    skipped = logs.events("round-skipped")
    assert len(skipped) >= 2
    for s in skipped:
        assert 'compression is "none" but the network takes "int8"' in s.message
    # no gradient computed, nothing sent: no validator saw a submission
    assert summary["counts"]["submitted"] == 0 and summary["devices"][0]["shards"] == 0
    assert not logs.events("round-submitted") and not logs.events("model-refused")
    assert net.submissions() == before
