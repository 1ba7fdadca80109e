"""``pot bench network``: the network as it runs, measured over real HTTP on loopback.

Every part starts a fresh devnet (:mod:`pot_cli.node.devnet`: each validator a ``pot validate``
OS process with its own SQLite stores, talking HTTP to the others) and always stops it. What the
validators saw is read back from their chain stores after they stopped
(:meth:`~pot_cli.node.chainstore.ChainStore.rounds`: opened, deadline and committed time of
every round; :meth:`~pot_cli.node.chainstore.ChainStore.proposals`: when the primary sent its
pre-prepare), from their Prometheus metrics and from ``/proc/<pid>/stat``.

Parts:

* **pbft** — validators and no miners: every round is empty and the blocks follow each other.
  The commit latency is the primary's pre-prepare → its commit (``proposals()``), per block;
  beside it, what a block costs: the validators' CPU per block, peer HTTP messages per block,
  the CPU of one loopback HTTP request (client and server), the PBFT state machine alone
  (the ``pot bench consensus`` simulator, same run), a synchronous SQLite commit (fsync) on
  the same disk and the backups' derivation of the empty block, so that the latency can be
  explained.
* **round** — honest simulated miners (:class:`MinerPool`: one process, many identities)
  against 4 validators: deadline → committed as each validator saw it, per task, with the
  fraction of submissions re-computed (re-judged offline from the stored chain: the round
  seed and beacon fix the sample).
* **scale** — N staked identities in the genesis, each submitting an honest gradient to
  every validator each round; a round succeeds when its block commits within
  ``deadline + 2 s`` at every validator and accepts at least 99.9 % of the N submissions; N
  passes when at least 99.9 % of its rounds succeed. Stops at the first N that fails. Per N:
  bytes per submission (sent, and the validator's own count) and validator CPU per submission.
* **training** — a devnet trains the model with honest miners (simulated, or ``pot mine``
  processes); the chain's model is re-derived and compared with centralized training on
  exactly the samples the chain accepted (:func:`~pot_cli.node.quality.chain_quality`, which
  also times that training): quality ratio and samples per second of both, side by side in
  one run.

Measured rounds follow an unmeasured warm-up round (:func:`warm_network`): a validator's first
derivation and first re-compute pay seconds for torch's start-up. The genesis of the round and
scale parts puts every identity on probation for that one round only, so every validator has
re-computed before anything is measured; then only the random sample and the flags are.

The simulated miners compute the real thing: ``assign_batch`` on the round seed, the one
gradient function, the wire codec, the signed commitment; only the process model differs from
``pot mine`` (one process for all identities, so the machine's cores are shared with the
validators: the bench records its own CPU too).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from pot_cli import crypto, paths
from pot_cli.errors import PotError, UsageError
from pot_cli.node.api_models import (
    HEADER_CHAIN,
    HEADER_HEIGHT,
    HEADER_MODEL_HASH,
    HEADER_PAYLOAD_HASH,
    HEADER_PUBLIC_KEY,
    HEADER_SIGNATURE,
    RoundOut,
)
from pot_cli.node.chainstore import ChainStore
from pot_cli.node.devnet import Devnet, DevnetSpec, Layout, chain_store, write_network
from pot_cli.sim.consensus_bench import bench_throughput

PARTS = ("pbft", "round", "scale", "training")
DEFAULT_NS = (4, 7)
DEFAULT_SCALE_MINERS = (100, 500, 1000, 2000)
DEFAULT_ROUND_TASKS = ("tiny", "digits")
DEFAULT_SCALE_TASK = "tiny"
DEFAULT_TRAINING_TASK = "digits"

PBFT_ROUND_S = 0.5  # the shortest round a devnet takes: empty blocks back to back
PBFT_WARMUP_BLOCKS = 2  # the first blocks pay for start-up (connections, caches)
PBFT_GOAL_P50_MS = 10.0  # the goal at n = 4, empty block

WARMUP_TRIES = 3  # rounds the miners may take to get one fully kept before measuring
ROUND_MINERS = 8
ROUND_ROUNDS = 8
ROUND_S = 2.0

SCALE_ROUNDS = 3
SCALE_SLACK_MS = 2000  # the issue: commit within deadline + 2 s
SCALE_SUCCESS = 0.999  # of rounds on time, and of submissions accepted in a round
SCALE_MIN_ROUND_S = 4.0
# the default round grows with N: the miners' submissions to 4 validators took ~11 ms per
# miner on 2 cores (each validator spends ~10 ms of CPU on one: its own and three relays)
SCALE_ROUND_S_PER_MINER = 0.025

TRAINING_MINERS = 8
TRAINING_ROUNDS = 30
TRAINING_ROUND_S = 1.0

READY_TIMEOUT_S = 180.0
PORT_RETRIES = 2  # devnet starts retried when a picked port was taken meanwhile
SUBMIT_CONCURRENCY = 8  # in-flight submissions per validator (uvicorn takes 512 at most)
OPEN_MARGIN_MS = 150  # a round with less time left than this is skipped by the miners
POLL_S = 0.05
# answers to a submission that mean the validator holds it ("already-kept": it had the same
# commitment and bytes already, e.g. fetched from a peer after a relay)
TAKEN = ("kept", "queued", "already-kept")
REQUEST_TIMEOUT_S = 30.0  # one submission, from the miners' side
STALL_ROUNDS, STALL_S = 4, 30.0  # no new round for 4 round lengths + 30 s: a stall
FSYNC_PROBES = 200
HTTP_PROBES = 200
SANS_IO_BLOCKS = 200  # blocks of the in-process PBFT run beside the pbft part


class NetworkBenchError(PotError):
    """A devnet of the bench did not do what the bench waits for (the text says what)."""


# ------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class NetworkBenchConfig:
    """What ``pot bench network`` runs. ``None`` fields take each part's default (module
    constants); ``task`` replaces every part's task; ``workdir`` keeps the devnets (a
    temporary directory, removed afterwards, otherwise)."""

    parts: tuple[str, ...] = PARTS
    ns: tuple[int, ...] = DEFAULT_NS
    blocks: int = 30
    scale_miners: tuple[int, ...] = DEFAULT_SCALE_MINERS
    rounds: int | None = None
    task: str | None = None
    scale_round_seconds: float | None = None
    real_miners: bool = False  # training with ``pot mine`` processes
    workdir: Path | None = None

    def __post_init__(self) -> None:
        bad = [p for p in self.parts if p not in PARTS]
        if not self.parts or bad:
            raise UsageError(f"--part: unknown {bad}; one of: all, {', '.join(PARTS)}")
        if not self.ns or any(n < 4 for n in self.ns):
            raise UsageError("--n: PBFT needs at least 4 validators")
        if self.blocks < 1 or (self.rounds is not None and self.rounds < 1):
            raise UsageError("--blocks and --rounds must be >= 1")
        if not self.scale_miners or any(m < 1 for m in self.scale_miners):
            raise UsageError("--miners: expected positive miner counts")

    def round_tasks(self) -> tuple[str, ...]:
        return (self.task,) if self.task else DEFAULT_ROUND_TASKS

    def scale_round_s(self, miners: int) -> float:
        if self.scale_round_seconds is not None:
            return self.scale_round_seconds
        return max(SCALE_MIN_ROUND_S, round(miners * SCALE_ROUND_S_PER_MINER, 1))


# ------------------------------------------------------------------------------ helpers


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, mean, p50, p99, min and max of ``values`` (nearest rank; None when empty)."""
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p99": None, "min": None, "max": None}
    ordered = sorted(float(v) for v in values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

    return {
        "count": len(ordered),
        "mean": round(statistics.fmean(ordered), 2),
        "p50": rank(0.5),
        "p99": rank(0.99),
        "min": ordered[0],
        "max": ordered[-1],
    }


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (``/proc/<pid>/stat``); 0.0 when it is
    gone or the system has no ``/proc``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # the command name (field 2) may hold spaces: the fields after its ')' are fixed
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of the samples called ``name`` (with these labels) in a Prometheus exposition;
    0.0 when there is none."""
    from prometheus_client.parser import text_string_to_metric_families

    want = labels or {}
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in want.items()):
                total += float(s.value)
    return total


def machine_info() -> dict[str, Any]:
    """Platform, CPU count, Python and load average (the machine is shared: every result
    records how busy it was)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "platform": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in load],
    }


def sqlite_commit_ms(directory: Path, probes: int = FSYNC_PROBES) -> dict[str, float | int | None]:
    """Latency of one small SQLite transaction with ``synchronous=FULL`` in WAL mode (one
    fsync, as the validators' write-ahead log and chain store commit), in ``directory``."""
    path = directory / "fsync-probe.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT)")
        times = []
        for _ in range(probes):
            t0 = time.perf_counter()
            db.execute("INSERT INTO t (body) VALUES (?)", ("x" * 400,))
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        db.close()
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            Path(f"{path}{suffix}").unlink()
    return _rounded(summarize(times), 3)


def http_probe(url: str, pid: int | None, probes: int = HTTP_PROBES) -> dict[str, Any]:
    """What one request costs on loopback against a running validator (``GET /v1/status``,
    keep-alive): its latency with a plain httpx client; the client's CPU per request with an
    httpx ``AsyncClient`` (what the validators' peer transport uses) and with the bench's
    :class:`RawHttp`; the validator's CPU per request while the httpx client ran (its own
    rounds go on meanwhile: an upper bound)."""
    times = []
    with httpx.Client(timeout=5.0) as http:
        http.get(f"{url}/v1/status")
        for _ in range(probes):
            t0 = time.perf_counter()
            http.get(f"{url}/v1/status")
            times.append((time.perf_counter() - t0) * 1000)

    async def with_httpx() -> None:
        async with httpx.AsyncClient(timeout=5.0) as client:
            for _ in range(probes):
                await client.get(f"{url}/v1/status")

    async def with_raw() -> None:
        raw = RawHttp(url, 1)
        try:
            for _ in range(probes):
                await raw.request("GET", "/v1/status")
        finally:
            raw.close()

    server0 = process_cpu_seconds(pid) if pid is not None else 0.0
    c0 = time.process_time()
    asyncio.run(with_httpx())
    c1 = time.process_time()
    server1 = process_cpu_seconds(pid) if pid is not None else 0.0
    asyncio.run(with_raw())
    c2 = time.process_time()
    return {
        "latency_ms": _rounded(summarize(times), 2),
        "httpx_client_cpu_ms": round(1000 * (c1 - c0) / probes, 3),
        "raw_client_cpu_ms": round(1000 * (c2 - c1) / probes, 3),
        "server_cpu_ms": round(1000 * (server1 - server0) / probes, 3) if pid else None,
    }


def _rounded(d: dict[str, float | int | None], digits: int) -> dict[str, float | int | None]:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in d.items()}


@dataclass
class Probe:
    """CPU seconds of every validator process and their metrics, at one moment."""

    at: float
    cpu: dict[str, float]
    metrics: dict[str, str]

    @classmethod
    def take(cls, net: Devnet) -> Probe:
        cpu, text = {}, {}
        for v in net.layout.validators:
            cpu[v.name] = process_cpu_seconds(v.proc.pid) if v.proc is not None else 0.0
            try:
                text[v.name] = httpx.get(f"{v.url}/metrics", timeout=5.0).text
            except httpx.HTTPError:
                text[v.name] = ""
        return cls(time.monotonic(), cpu, text)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return sum(metric_value(t, name, labels) for t in self.metrics.values())


def _delta(a: Probe, b: Probe, name: str, labels: dict[str, str] | None = None) -> float:
    return b.metric(name, labels) - a.metric(name, labels)


def _cpu_delta(a: Probe, b: Probe) -> float:
    return sum(b.cpu.values()) - sum(a.cpu.values())


# ------------------------------------------------------------------------------ devnets


@contextlib.contextmanager
def running_devnet(root: Path, spec: DevnetSpec) -> Iterator[Devnet]:
    """A fresh devnet under ``root`` with its validators started and answering (no miners);
    every process is stopped on exit, whatever happened.

    A devnet's ports are picked when it is written and bound seconds later, once the
    validators have imported torch; on a machine where other devnets start too, a port may
    be taken meanwhile. Such a start is retried (:data:`PORT_RETRIES` times) in a fresh
    directory beside ``root``."""
    for attempt in range(PORT_RETRIES + 1):
        where = root if attempt == 0 else root.with_name(f"{root.name}-retry{attempt}")
        net = Devnet(write_network(where, spec))
        try:
            net.start_validators()
            net.wait_ready(READY_TIMEOUT_S)
        except PotError as exc:
            net.stop_all()
            if attempt < PORT_RETRIES and "address already in use" in str(exc):
                continue
            raise
        try:
            yield net
        finally:
            net.stop_all()
        return


def heights(net: Devnet) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in net.layout.validators:
        try:
            out[v.name] = int(httpx.get(f"{v.url}/v1/status", timeout=5.0).json()["height"])
        except (httpx.HTTPError, ValueError, KeyError):
            out[v.name] = -1
    return out


def describe(net: Devnet) -> str:
    """Each validator's height, view and round (phase, ms past its deadline): what a stall
    report needs."""
    parts = []
    for v in net.layout.validators:
        try:
            st = httpx.get(f"{v.url}/v1/status", timeout=5.0).json()
            late = -int(st["deadline_in_ms"]) if st.get("deadline_in_ms") is not None else None
            parts.append(
                f"{v.name} height {st['height']} view {st['view']} round "
                f"{st['round_height']} {st['phase']}"
                + (f" {late} ms past its deadline" if late is not None and late > 0 else "")
            )
        except (httpx.HTTPError, ValueError, KeyError):
            parts.append(f"{v.name} not answering")
    return "; ".join(parts)


def wait_height(net: Devnet, height: int, timeout: float, *, every: bool = True) -> None:
    """Until every validator (or, ``every=False``, validator 0) has committed ``height``."""
    deadline = time.monotonic() + timeout
    while True:
        net.check_all_alive()
        hs = heights(net)
        done = min(hs.values()) if every else hs[net.layout.validators[0].name]
        if done >= height:
            return
        if time.monotonic() > deadline:
            raise NetworkBenchError(
                f"the devnet did not reach height {height} within {timeout:.0f} s "
                f"({describe(net)}; logs under {net.layout.root})"
            )
        time.sleep(0.1)


@dataclass(frozen=True)
class StoreView:
    """What one validator's chain store holds after the run."""

    name: str
    rounds: dict[int, tuple[int | None, int | None, int | None]]
    proposals: dict[int, tuple[int | None, int | None]]


def read_stores(layout: Layout) -> list[StoreView]:
    out = []
    for v in layout.validators:
        store = chain_store(v)
        try:
            out.append(StoreView(v.name, store.rounds(), store.proposals()))
        finally:
            store.close()
    return out


def block_verdicts(store: ChainStore) -> dict[int, Counter[str]]:
    """height -> count of verdict kinds (and ``samples``: accepted samples) of every block."""
    from pot_cli.protocol.app import parse_proposal

    out: dict[int, Counter[str]] = {}
    for block in store.blocks():
        c: Counter[str] = Counter()
        if block.proposal is not None:
            for s in parse_proposal(block.proposal).block.submissions:
                c[s.verdict.kind] += 1
                if s.verdict.kind == "accepted":
                    c["samples"] += s.samples
        out[block.seq] = c
    return out


def rejudge(store: ChainStore, compression: str, heights: Sequence[int]) -> dict[str, int]:
    """Re-run the primary's judgement of the stored blocks at ``heights``
    (``derive.judge_round`` on the stored payloads and the block's own beacon, on the chain
    state before it; the chain is re-executed up to the last of them): how many submissions
    were re-computed, and how many of those were the random sample."""
    from pot_cli.protocol.app import PotApp, block_late, parse_proposal
    from pot_cli.protocol.derive import (
        FrozenSubmission,
        RoundInputs,
        beacon_inputs,
        judge_round,
    )
    from pot_cli.protocol.genesis import BPS
    from pot_cli.training.codec import Compression
    from pot_cli.training.gradients import Numerics
    from pot_cli.training.verification import VerificationPolicy

    genesis = store.genesis()
    app = PotApp(
        genesis,
        round_time=1,
        policy=VerificationPolicy(
            spot_check_rate=genesis.spot_check_bps / BPS, numerics=Numerics(threads=1)
        ),
        compression=Compression.parse(compression),
        payload_store=store.payloads,
    )
    out = {"submissions": 0, "recomputed": 0, "sampled": 0, "blocks_judged": 0}
    wanted = set(heights)
    for block in store.blocks():
        if block.seq != app.height + 1 or block.seq > max(wanted, default=0):
            break
        if block.proposal is not None and block.seq in wanted:
            prop = parse_proposal(block.proposal)
            b = prop.block
            late = block_late(b)
            subs = tuple(
                FrozenSubmission(s.miner, s.payload_hash, bytes.fromhex(s.commitment_sig))
                for s in b.submissions
            )
            try:
                payloads = {s.payload_hash: store.payloads[s.payload_hash] for s in subs}
            except KeyError:
                payloads = {}
            if subs and len(payloads) == len({s.payload_hash for s in subs}):
                _, full_check = beacon_inputs(app.rules, b.height, prop.reveals)
                inputs = RoundInputs(
                    b.height, bytes.fromhex(b.beacon), subs, payloads, late, full_check
                )
                judged, _ = judge_round(app.rules, app.state, inputs)
                out["submissions"] += len(judged)
                out["recomputed"] += sum(1 for j in judged.values() if j.spot_checked)
                out["sampled"] += sum(1 for j in judged.values() if j.sampled)
                out["blocks_judged"] += 1
        app.execute(block.seq, block.proposal)
    return out


# ------------------------------------------------------------------------------ miners


@dataclass(frozen=True)
class Prepared:
    """One identity's signed submission for one round."""

    identity: crypto.Identity
    payload: bytes
    payload_hash: str
    signature: bytes


@dataclass
class RoundRecord:
    """What the simulated miners did in one round (times on the bench's monotonic clock)."""

    height: int
    deadline_in_ms: int
    prepare_s: float
    submit_s: float
    payload_bytes: int
    sent: int
    outcomes: Counter[str] = field(default_factory=Counter)
    retries: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "deadline_in_ms": self.deadline_in_ms,
            "prepare_s": round(self.prepare_s, 3),
            "submit_s": round(self.submit_s, 3),
            "payload_bytes": self.payload_bytes,
            "sent": self.sent,
            "outcomes": dict(self.outcomes),
            "retries": self.retries,
        }


class MinerPool:
    """Many honest miner identities in this one process ("lightweight simulated miners").

    Each round: read the open round from validator 0, fetch the model when it changed (checked
    against its hash), compute every identity's gradient on its assigned batch with the one
    gradient function, encode and sign it, then ``POST /v1/submit`` it to every validator
    (asyncio + httpx, :data:`SUBMIT_CONCURRENCY` in flight per validator; a ``busy`` answer
    is retried until the deadline)."""

    def __init__(self, task_name: str, identities: Sequence[crypto.Identity], urls: Sequence[str]):
        from pot_cli.training.tasks import load_task

        self.task = load_task(task_name)
        self.identities = list(identities)
        self.urls = [u.rstrip("/") for u in urls]
        self._params: tuple[str, Any] | None = None
        self._last_height = 0  # the last round submitted in (never twice, across runs)
        self.cpu_s = 0.0  # this process's CPU while running rounds

    @classmethod
    def of_layout(cls, layout: Layout, task_name: str) -> MinerPool:
        ids = [crypto.load_key_file(paths.key_path(m.home)) for m in layout.miners]
        return cls(task_name, ids, [v.url for v in layout.validators])

    def warm_up(self) -> None:
        """One gradient, encoding and signature before the first round: the first call pays
        for torch's and the codec's start-up (over a second), which would miss a round."""
        from pot_cli.protocol.commitments import sign_commitment
        from pot_cli.training.codec import encode_gradient
        from pot_cli.training.gradients import Numerics, compute_gradient

        grad = compute_gradient(
            self.task,
            self.task.initial_params(),
            list(range(self.task.batch_size)),
            Numerics(threads=1),
        )
        payload = encode_gradient(self.task, grad, model_hash="0" * 64, height=1)
        sign_commitment(self.identities[0], "warm-up", 1, "0" * 64, payload)

    def run(
        self,
        rounds: int,
        timeout: float,
        *,
        only: int | None = None,
        alive: Callable[[], None] | None = None,
    ) -> list[RoundRecord]:
        """Submit in ``rounds`` consecutive fresh rounds (each one open with time left when
        the miners first see it; ``only``: the first so many identities); returns what
        happened in each. ``alive`` is called while waiting for a round (it raises when a
        validator died: ``Devnet.check_all_alive``)."""
        self.warm_up()
        cpu0 = time.process_time()
        try:
            return asyncio.run(self._run(rounds, timeout, self.identities[:only], alive))
        finally:
            self.cpu_s += time.process_time() - cpu0

    async def _run(
        self,
        rounds: int,
        timeout: float,
        identities: Sequence[crypto.Identity],
        alive: Callable[[], None] | None,
    ) -> list[RoundRecord]:
        limits = httpx.Limits(
            max_connections=SUBMIT_CONCURRENCY * len(self.urls) + 4,
            max_keepalive_connections=SUBMIT_CONCURRENCY * len(self.urls) + 4,
        )
        out: list[RoundRecord] = []
        until = time.monotonic() + timeout
        last_new = time.monotonic()
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=limits) as http:
            while len(out) < rounds:
                if time.monotonic() > until:
                    raise NetworkBenchError(
                        f"the miners submitted in {len(out)} of {rounds} rounds within "
                        f"{timeout:.0f} s"
                    )
                try:
                    r = RoundOut.model_validate((await http.get(f"{self.urls[0]}/v1/round")).json())
                except (httpx.HTTPError, ValueError):
                    await asyncio.sleep(POLL_S)
                    continue
                fresh = r.height > self._last_height and r.phase == "open"
                if not fresh or r.deadline_in_ms < OPEN_MARGIN_MS:
                    if alive is not None:
                        alive()
                    stalled = time.monotonic() - last_new
                    if stalled > STALL_ROUNDS * r.round_ms / 1000 + STALL_S:
                        raise NetworkBenchError(
                            f"no new round for {stalled:.0f} s: validator 0 shows round "
                            f"{r.height} in phase {r.phase}, {-r.deadline_in_ms} ms past its "
                            "deadline (the validators stalled)"
                        )
                    await asyncio.sleep(POLL_S)
                    continue
                last_new = time.monotonic()
                limit = r.deadline_in_ms / 1000 + 2 * REQUEST_TIMEOUT_S
                try:
                    out.append(await asyncio.wait_for(self._round(http, r, identities), limit))
                except TimeoutError:
                    raise NetworkBenchError(
                        f"round {r.height}: the miners' submissions were not answered within "
                        f"{limit:.0f} s"
                    ) from None
                self._last_height = r.height
                last_new = time.monotonic()
        return out

    async def _model(self, http: httpx.AsyncClient, model_hash: str) -> Any:
        from pot_cli.training.codec import decode_model
        from pot_cli.training.state import model_hash as hash_of

        if self._params is not None and self._params[0] == model_hash:
            return self._params[1]
        resp = await http.get(f"{self.urls[0]}/v1/models/{model_hash}")
        resp.raise_for_status()
        params = decode_model(self.task, resp.content)
        if hash_of(params) != model_hash:
            raise NetworkBenchError("validator 0 served a model that is not the round's")
        self._params = (model_hash, params)
        return params

    def prepare(
        self, r: RoundOut, params: Any, identities: Sequence[crypto.Identity]
    ) -> list[Prepared]:
        """Each identity's honest, encoded and signed gradient for round ``r``."""
        from pot_cli.protocol.commitments import sign_commitment
        from pot_cli.training.assignment import assign_batch
        from pot_cli.training.codec import Compression, encode_gradient
        from pot_cli.training.gradients import Numerics, compute_gradient

        seed = bytes.fromhex(r.round_seed)
        compression = Compression.parse(r.compression)
        numerics = Numerics(threads=1)
        out = []
        for ident in identities:
            idx = assign_batch(seed, ident.address, r.train_size, r.batch_size)
            grad = compute_gradient(self.task, params, idx, numerics)
            payload = encode_gradient(
                self.task, grad, model_hash=r.model_hash, height=r.height, compression=compression
            )
            ph, sig = sign_commitment(ident, r.chain_id, r.height, r.model_hash, payload)
            out.append(Prepared(ident, payload, ph, sig))
        return out

    async def _round(
        self, http: httpx.AsyncClient, r: RoundOut, identities: Sequence[crypto.Identity]
    ) -> RoundRecord:
        t0 = time.monotonic()
        deadline = t0 + r.deadline_in_ms / 1000
        params = await self._model(http, r.model_hash)
        prepared = self.prepare(r, params, identities)
        t1 = time.monotonic()
        rec = RoundRecord(
            r.height,
            r.deadline_in_ms,
            t1 - t0,
            0.0,
            sum(len(p.payload) for p in prepared),
            len(prepared) * len(self.urls),
        )
        conns = {u: RawHttp(u, SUBMIT_CONCURRENCY) for u in self.urls}

        async def one(p: Prepared, url: str) -> None:
            headers = {
                HEADER_CHAIN: r.chain_id,
                HEADER_PUBLIC_KEY: p.identity.public_key.hex(),
                HEADER_HEIGHT: str(r.height),
                HEADER_MODEL_HASH: r.model_hash,
                HEADER_PAYLOAD_HASH: p.payload_hash,
                HEADER_SIGNATURE: p.signature.hex(),
                "Content-Type": "application/octet-stream",
            }
            while True:
                code = await submit_outcome(conns[url], p.payload, headers)
                if code == "busy" and time.monotonic() < deadline:
                    rec.retries += 1
                    await asyncio.sleep(0.05)
                    continue
                rec.outcomes[code] += 1
                return

        try:
            await asyncio.gather(*(one(p, u) for p in prepared for u in self.urls))
        finally:
            for c in conns.values():
                c.close()
        rec.submit_s = time.monotonic() - t1
        return rec


class RawHttp:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, for the miners' many small
    POSTs: httpx costs ~0.9 ms of CPU per request on this machine, this ~0.05 ms, and the
    bench's CPU competes with the validators' on the same cores. At most ``connections``
    requests in flight; a request that fails on a reused connection (the server closed it
    while idle) is retried once on a fresh one."""

    def __init__(self, base_url: str, connections: int) -> None:
        u = urlsplit(base_url)
        if u.scheme != "http" or u.hostname is None or u.port is None:
            raise UsageError(f"{base_url}: expected http://host:port")
        self.host, self.port = u.hostname, u.port
        self._gate = asyncio.Semaphore(connections)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """(status, body) of one request; raises :class:`OSError` when the server cannot be
        reached or answers something that is not HTTP/1.1."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body or method != "GET":
            lines.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        async with self._gate:
            for attempt in (0, 1):
                reused = bool(self._idle) and attempt == 0
                conn = self._idle.pop() if reused else await self._connect()
                try:
                    status, data, keep = await asyncio.wait_for(
                        self._exchange(conn, request), REQUEST_TIMEOUT_S
                    )
                except (
                    OSError,
                    TimeoutError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                ) as exc:
                    conn[1].close()
                    if reused:
                        continue
                    raise OSError(f"{self.host}:{self.port}: {type(exc).__name__}") from None
                if keep:
                    self._idle.append(conn)
                else:
                    conn[1].close()
                return status, data
        raise OSError(f"{self.host}:{self.port}: no answer")  # pragma: no cover

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port)

    @staticmethod
    async def _exchange(
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes
    ) -> tuple[int, bytes, bool]:
        reader, writer = conn
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise OSError(f"not an HTTP/1.1 answer: {status_line[:60]!r}")
        fields = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        keep = fields.get("connection", "").lower() != "close"
        if "content-length" in fields:
            data = await reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            data = await _read_chunked(reader)
        else:
            data, keep = await reader.read(), False
        return int(parts[1]), data, keep

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)


async def submit_outcome(conn: RawHttp, payload: bytes, headers: dict[str, str]) -> str:
    """One ``POST /v1/submit``; its outcome: ``kept``/``queued`` or the refusal code."""
    import json

    try:
        status, data = await conn.request("POST", "/v1/submit", payload, headers)
    except OSError:
        return "unreachable"
    try:
        body = json.loads(data)
    except ValueError:
        return f"http-{status}"
    if not isinstance(body, dict):
        return f"http-{status}"
    if status < 400:
        return str(body.get("status", "kept"))
    return str(body.get("error") or f"http-{status}")


def warm_network(pool: MinerPool, net: Devnet, round_s: float) -> int:
    """Submit in rounds until one in which every submission was kept (at most
    :data:`WARMUP_TRIES`) and wait for its block; returns its height. Not measured: a
    validator's first derivation, and its first re-compute, pay for torch's start-up
    (seconds, even on the tiny task), and at start-up round 1 may close before the API shows
    it. With
    ``probation_rounds = 1`` in the genesis every validator re-computes every submission of
    the warm-up round, and none is on probation afterwards."""
    for _ in range(WARMUP_TRIES):
        rec = pool.run(1, timeout=round_s + 60, alive=net.check_all_alive)[0]
        if rec.outcomes and set(rec.outcomes) <= set(TAKEN):
            wait_height(net, rec.height, timeout=round_s + 120)
            return rec.height
    raise NetworkBenchError(
        f"no round kept every warm-up submission in {WARMUP_TRIES} tries "
        f"(last: {dict(rec.outcomes)}; logs under {net.layout.root})"
    )


# ------------------------------------------------------------------------------ pbft


def bench_pbft(n: int, blocks: int, root: Path) -> dict[str, Any]:
    """Empty blocks back to back at ``n`` validators: commit latency and what a block costs."""
    spec = DevnetSpec(
        validators=n,
        miners=1,  # staked in the genesis, never started: every round is empty
        rounds=blocks + PBFT_WARMUP_BLOCKS,
        task="tiny",
        round_seconds=PBFT_ROUND_S,
    )
    timeout = (blocks + PBFT_WARMUP_BLOCKS) * (PBFT_ROUND_S + 3) + 60
    with running_devnet(root, spec) as net:
        wait_height(net, PBFT_WARMUP_BLOCKS, timeout)
        before = Probe.take(net)
        wait_height(net, PBFT_WARMUP_BLOCKS + blocks, timeout)
        after = Probe.take(net)
        target = net.layout.validators[-1]
        http = http_probe(target.url, target.proc.pid if target.proc is not None else None)
        view_changes = _view_changes(net)
    fsync_ms = sqlite_commit_ms(root)
    stores = read_stores(net.layout)
    first, last = PBFT_WARMUP_BLOCKS + 1, PBFT_WARMUP_BLOCKS + blocks
    latency, slowest, commits = [], [], []
    for h in range(first, last + 1):
        proposed = next(
            (s.proposals[h] for s in stores if h in s.proposals and s.proposals[h][0]), None
        )
        if proposed is None or proposed[0] is None or proposed[1] is None:
            continue
        latency.append(proposed[1] - proposed[0])
        done = [s.rounds.get(h, (None, None, None))[2] for s in stores]
        if all(d is not None for d in done):
            slowest.append(max(d for d in done if d is not None) - proposed[0])
        commits.append(proposed[1])
    span_s = (max(commits) - min(commits)) / 1000 if len(commits) > 1 else 0.0
    cpu_ms = 1000 * _cpu_delta(before, after) / blocks
    messages = _delta(before, after, "pot_validator_peer_messages_sent_total") / blocks
    derived = _delta(before, after, "pot_validator_derivation_seconds_count")
    derive_s = _delta(before, after, "pot_validator_derivation_seconds_sum")
    derive_ms = 1000 * derive_s / derived if derived else 0.0
    # side by side: the PBFT state machine alone, real Ed25519, no IO (pot bench consensus)
    sans_io = bench_throughput(n, SANS_IO_BLOCKS)["blocks_per_cpu_s"]
    sans_io_ms = 1000 / sans_io if sans_io else 0.0
    per_request = http["httpx_client_cpu_ms"] + (http["server_cpu_ms"] or 0.0)
    http_ms = messages * per_request
    derive_block_ms = derive_ms * derived / blocks if derived else 0.0
    return {
        "n": n,
        "blocks": len(latency),
        "round_seconds": PBFT_ROUND_S,
        "commit_latency_ms": summarize(latency),
        "slowest_replica_commit_ms": summarize(slowest),
        "blocks_per_s": round((len(commits) - 1) / span_s, 3) if span_s else None,
        "view_changes": view_changes,
        "breakdown": {
            "validator_cpu_ms_per_block": round(cpu_ms, 2),
            "validator_cpu_share": round(
                cpu_ms * blocks / 1000 / max(1e-9, after.at - before.at), 3
            ),
            "peer_messages_per_block": round(messages, 1),
            "validator_cpu_ms_per_peer_message": round(cpu_ms / messages, 3) if messages else None,
            "backup_derivation_ms_mean": round(derive_ms, 3) if derived else None,
            "sqlite_full_commit_ms": fsync_ms,
            "http_get_status": http,
            # the block's validator CPU split (estimates): HTTP requests at the cost of a GET
            # /v1/status (client + server), the PBFT state machine with its signatures, the
            # derivations, and the rest (JSON, FastAPI bodies, threads, stores, the round)
            "cpu_split_ms_per_block": {
                "http_requests": round(http_ms, 1),
                "pbft_sans_io": round(sans_io_ms, 1),
                "derivations": round(derive_block_ms, 1),
                "rest": round(cpu_ms - http_ms - sans_io_ms - derive_block_ms, 1),
            },
        },
    }


def _view_changes(net: Devnet) -> int:
    vcs = 0
    for v in net.layout.validators:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            vcs = max(vcs, int(httpx.get(f"{v.url}/v1/status", timeout=5.0).json()["view_changes"]))
    return vcs


# ------------------------------------------------------------------------------ rounds


def _after_deadline(stores: Sequence[StoreView], hs: Sequence[int]) -> dict[int, list[int]]:
    """height -> committed − deadline (ms) at each validator that recorded both."""
    out: dict[int, list[int]] = {}
    for h in hs:
        for s in stores:
            _, deadline, committed = s.rounds.get(h, (None, None, None))
            if deadline is not None and committed is not None:
                out.setdefault(h, []).append(committed - deadline)
    return out


def _primary_split(stores: Sequence[StoreView], hs: Sequence[int]) -> dict[str, Any]:
    """deadline → pre-prepare and pre-prepare → commit at the primary of each height."""
    to_propose, to_commit = [], []
    for h in hs:
        for s in stores:
            if h not in s.proposals:
                continue
            proposed, committed = s.proposals[h]
            deadline = s.rounds.get(h, (None, None, None))[1]
            if proposed is not None and deadline is not None:
                to_propose.append(proposed - deadline)
            if proposed is not None and committed is not None:
                to_commit.append(committed - proposed)
            break
    return {
        "deadline_to_proposal_ms": summarize(to_propose),
        "proposal_to_commit_ms": summarize(to_commit),
    }


def bench_round(
    task: str,
    rounds: int,
    root: Path,
    *,
    miners: int = ROUND_MINERS,
    round_s: float = ROUND_S,
) -> dict[str, Any]:
    """Honest simulated miners against 4 validators: deadline → committed, per validator."""
    spec = DevnetSpec(
        validators=4,
        miners=miners,
        rounds=rounds,
        task=task,
        round_seconds=round_s,
        probation_rounds=1,  # the warm-up round only: then the sample and the flags
    )
    with running_devnet(root, spec) as net:
        pool = MinerPool.of_layout(net.layout, task)
        warm_network(pool, net, round_s)
        before = Probe.take(net)
        records = pool.run(rounds, timeout=rounds * (round_s + 10) + 60, alive=net.check_all_alive)
        hs = [r.height for r in records]
        wait_height(net, max(hs), timeout=60)
        after = Probe.take(net)
    stores = read_stores(net.layout)
    lag = _after_deadline(stores, hs)
    store = chain_store(net.layout.validators[0])
    try:
        verdicts = block_verdicts(store)
        judged = rejudge(store, spec.compression, hs)
    finally:
        store.close()
    accepted = sum(verdicts.get(h, Counter())["accepted"] for h in hs)
    derived = _delta(before, after, "pot_validator_derivation_seconds_count")
    derive_s = _delta(before, after, "pot_validator_derivation_seconds_sum")
    return {
        "task": task,
        "miners": miners,
        "rounds": len(hs),
        "round_seconds": round_s,
        "probation_rounds": spec.probation_rounds,
        "spot_check_rate": spec.spot_check_bps / 10_000,
        "deadline_to_commit_ms": summarize([x for v in lag.values() for x in v]),
        "worst_validator_per_round_ms": summarize([max(v) for v in lag.values()]),
        **_primary_split(stores, hs),
        "backup_derivation_ms_mean": round(1000 * derive_s / derived, 1) if derived else None,
        "submissions": miners * len(hs),
        "accepted": accepted,
        "recomputed": judged["recomputed"],
        "recomputed_fraction": round(judged["recomputed"] / judged["submissions"], 3)
        if judged["submissions"]
        else None,
        "sampled": judged["sampled"],
        "miners_prepare_s_mean": round(statistics.fmean(r.prepare_s for r in records), 3),
        "miners_submit_s_mean": round(statistics.fmean(r.submit_s for r in records), 3),
        "outcomes": dict(sum((r.outcomes for r in records), Counter())),
    }


# ------------------------------------------------------------------------------ scale


def bench_scale(miners: int, rounds: int, round_s: float, task: str, root: Path) -> dict[str, Any]:
    """N honest identities against 4 validators for ``rounds`` rounds (see the module doc)."""
    spec = DevnetSpec(
        validators=4,
        miners=miners,
        rounds=rounds,
        task=task,
        round_seconds=round_s,
        probation_rounds=1,  # the warm-up round only
    )
    with running_devnet(root, spec) as net:
        pool = MinerPool.of_layout(net.layout, task)
        warm_network(pool, net, round_s)
        before = Probe.take(net)
        records = pool.run(
            rounds, timeout=rounds * (2 * round_s + 30) + 60, alive=net.check_all_alive
        )
        hs = [r.height for r in records]
        wait_height(net, max(hs), timeout=4 * round_s + 120)
        after = Probe.take(net)
    stores = read_stores(net.layout)
    lag = _after_deadline(stores, hs)
    store = chain_store(net.layout.validators[0])
    try:
        verdicts = block_verdicts(store)
    finally:
        store.close()
    rows = []
    for r in records:
        v = verdicts.get(r.height, Counter())
        worst = max(lag.get(r.height, [])) if lag.get(r.height) else None
        complete = len(lag.get(r.height, [])) == len(stores)
        split = _primary_split(stores, [r.height])
        rows.append(
            {
                "height": r.height,
                "worst_commit_after_deadline_ms": worst,
                "primary_deadline_to_proposal_ms": split["deadline_to_proposal_ms"]["max"],
                "primary_proposal_to_commit_ms": split["proposal_to_commit_ms"]["max"],
                "on_time": complete and worst is not None and worst <= SCALE_SLACK_MS,
                "accepted": v["accepted"],
                "rejected": v["rejected"] + v["slashed"],
                "full": v["accepted"] >= SCALE_SUCCESS * miners,
                **r.to_dict(),
            }
        )
    ok_rounds = sum(1 for x in rows if x["on_time"] and x["full"])
    outcomes: Counter[str] = sum((r.outcomes for r in records), Counter())
    submissions = miners * len(records)
    kept = _delta(before, after, "pot_validator_submissions_total", {"outcome": "kept"})
    kept += _delta(before, after, "pot_validator_submissions_total", {"outcome": "queued"})
    received_bytes = _delta(before, after, "pot_validator_submission_bytes_total")
    cpu = _cpu_delta(before, after)
    derived = _delta(before, after, "pot_validator_derivation_seconds_count")
    derive_s = _delta(before, after, "pot_validator_derivation_seconds_sum")
    n_val = len(net.layout.validators)
    payload_bytes = sum(r.payload_bytes for r in records)
    return {
        "miners": miners,
        "task": task,
        "round_seconds": round_s,
        "rounds": len(rows),
        "rounds_ok": ok_rounds,
        "rounds_on_time": sum(1 for x in rows if x["on_time"]),
        "ok_fraction": round(ok_rounds / len(rows), 4) if rows else 0.0,
        "passed": bool(rows) and ok_rounds >= SCALE_SUCCESS * len(rows),
        "commit_after_deadline_ms": summarize([x for v in lag.values() for x in v]),
        "accepted": sum(x["accepted"] for x in rows),
        "rejected": sum(x["rejected"] for x in rows),
        "submissions": submissions,
        "posts": sum(r.sent for r in records),
        "outcomes": dict(outcomes),
        "busy_retries": sum(r.retries for r in records),
        "payload_bytes_per_submission": round(payload_bytes / submissions) if submissions else None,
        "validator_bytes_per_kept": round(received_bytes / kept) if kept else None,
        "validator_kept": int(kept),
        "validator_cpu_ms_per_submission": round(1000 * cpu / (n_val * submissions), 3)
        if submissions
        else None,
        "validator_cpu_s": round(cpu, 2),
        "validator_cpu_s_per_round": round(cpu / len(rows), 2) if rows else None,
        "backup_derivation_ms_mean": round(1000 * derive_s / derived, 1) if derived else None,
        "miners_prepare_s_mean": round(statistics.fmean(r.prepare_s for r in records), 3),
        "miners_submit_s_mean": round(statistics.fmean(r.submit_s for r in records), 3),
        "miners_cpu_s": round(pool.cpu_s, 2),
        "per_round": rows,
    }


# ------------------------------------------------------------------------------ training


def bench_training(
    task: str,
    rounds: int,
    root: Path,
    *,
    miners: int = TRAINING_MINERS,
    real_miners: bool = False,
) -> dict[str, Any]:
    """A devnet trains with honest miners (simulated in this process, or ``pot mine``
    processes with ``real_miners``); then the chain's quality and samples/s against
    centralized training on the same samples (same process, right after)."""
    from pot_cli.node.quality import chain_quality

    spec = DevnetSpec(
        validators=4, miners=miners, rounds=rounds, task=task, round_seconds=TRAINING_ROUND_S
    )
    pool: MinerPool | None = None
    records: list[RoundRecord] = []
    with running_devnet(root, spec) as net:
        if real_miners:
            hs = _real_miner_rounds(net, rounds, TRAINING_ROUND_S)
        else:
            pool = MinerPool.of_layout(net.layout, task)
            warm_network(pool, net, TRAINING_ROUND_S)  # its rounds train too, untimed
            records = pool.run(
                rounds,
                timeout=rounds * (TRAINING_ROUND_S + 10) + 60,
                alive=net.check_all_alive,
            )
            hs = [r.height for r in records]
            wait_height(net, max(hs), timeout=60)
    v0 = read_stores(net.layout)[0]
    store = chain_store(net.layout.validators[0])
    try:
        verdicts = block_verdicts(store)
        t0 = time.perf_counter()
        quality = chain_quality(store)
        quality_s = time.perf_counter() - t0
    finally:
        store.close()
    opened = v0.rounds.get(min(hs), (None, None, None))[0]
    committed = v0.rounds.get(max(hs), (None, None, None))[2]
    samples = sum(verdicts.get(h, Counter())["samples"] for h in hs)
    wall_s = (committed - opened) / 1000 if opened is not None and committed is not None else None
    pot_sps = samples / wall_s if wall_s else None
    computing_s = sum(r.prepare_s for r in records)
    central_sps = quality["centralized_samples_per_s"]
    return {
        "task": task,
        "miners": miners,
        "miner_processes": real_miners,
        "rounds": len(hs),
        "round_seconds": TRAINING_ROUND_S,
        "probation_rounds": spec.probation_rounds,
        "metric": quality["metric"],
        "pot_metric": quality["pot_metric"],
        "centralized_metric": quality["centralized_metric"],
        "quality_ratio": quality["quality_ratio"],
        "replay_mismatch": quality["replay_mismatch"],
        "samples": samples,
        "samples_offered": miners * len(hs) * _batch_size(task),
        "pot_wall_s": round(wall_s, 2) if wall_s else None,
        "pot_samples_per_s": round(pot_sps, 1) if pot_sps else None,
        "centralized_samples_per_s": round(central_sps, 1) if central_sps else None,
        "centralized_over_pot": round(central_sps / pot_sps, 1)
        if central_sps and pot_sps
        else None,
        # the simulated miners' preparation (model fetch, gradients batch by batch, encoding,
        # signing; one process): the round length, not this work, paces the chain
        "miners_samples_per_s": round(samples / computing_s, 1) if computing_s else None,
        "quality_and_replay_s": round(quality_s, 2),
        "miners_cpu_s": round(pool.cpu_s, 2) if pool is not None else None,
    }


def _batch_size(task: str) -> int:
    from pot_cli.training.tasks import load_task

    return load_task(task).batch_size


def _real_miner_rounds(net: Devnet, rounds: int, round_s: float) -> list[int]:
    """Start ``pot mine`` for every miner home; wait for the first block that accepts every
    miner (their start-up is not measured), then for ``rounds`` more blocks: the measured
    heights."""
    from pot_cli.node.client import ApiError, Unreachable, ValidatorClient

    miners = len(net.layout.miners)
    net.start_miners()
    client = ValidatorClient(net.layout.validators[0].url, timeout=5.0)
    until = time.monotonic() + READY_TIMEOUT_S + 10 * round_s
    height, first = 1, None
    try:
        while first is None:
            net.check_all_alive()
            if time.monotonic() > until:
                raise NetworkBenchError(
                    f"no block accepted all {miners} pot mine processes within "
                    f"{READY_TIMEOUT_S + 10 * round_s:.0f} s (logs under {net.layout.root})"
                )
            try:
                block = client.block(height)
            except (ApiError, Unreachable):
                time.sleep(0.2)
                continue
            if sum(1 for v in block.verdicts if v.kind == "accepted") == miners:
                first = height
            height += 1
    finally:
        client.close()
    wait_height(net, first + rounds, timeout=rounds * (round_s + 10) + 60)
    return list(range(first + 1, first + rounds + 1))


# ------------------------------------------------------------------------------ the bench


def network_bench(
    cfg: NetworkBenchConfig, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the parts ``cfg`` names; the result is one JSON-able dict."""
    say = progress or (lambda _m: None)
    started = time.perf_counter()
    out: dict[str, Any] = {
        "benchmark": "network",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {
            "parts": list(cfg.parts),
            "ns": list(cfg.ns),
            "blocks": cfg.blocks,
            "scale_miners": list(cfg.scale_miners),
            "rounds": cfg.rounds,
            "task": cfg.task,
            "scale_round_seconds": cfg.scale_round_seconds,
            "real_miners": cfg.real_miners,
        },
    }
    work = cfg.workdir or Path(tempfile.mkdtemp(prefix="pot-bench-network-"))
    work.mkdir(parents=True, exist_ok=True)
    failed = False
    try:
        for part in cfg.parts:
            section: dict[str, Any] = {}
            out[part] = section
            try:
                _run_part(part, cfg, work, section, say)
            except PotError as exc:  # recorded; the other parts still run
                failed = True
                section["error"] = str(exc)
                say(f"{part}: failed: {exc}")
    finally:
        if cfg.workdir is None and not failed:
            shutil.rmtree(work, ignore_errors=True)
    if failed:
        out["kept"] = str(work)  # the failed devnet's logs and stores
    out["machine"]["load_average_after"] = machine_info()["load_average"]
    out["total_seconds"] = round(time.perf_counter() - started, 1)
    return out


def _run_part(
    part: str, cfg: NetworkBenchConfig, work: Path, out: dict[str, Any], say: Callable[[str], None]
) -> None:
    """Run one part, filling ``out`` as it goes (so a failure keeps what was measured)."""
    if part == "pbft":
        out.update(goal_p50_ms_n4=PBFT_GOAL_P50_MS, met_goal_n4=None, rows=[])
        for n in cfg.ns:
            say(f"pbft: n = {n}, {cfg.blocks} empty blocks ...")
            row = bench_pbft(n, cfg.blocks, work / f"pbft-n{n}")
            out["rows"].append(row)
            p50 = row["commit_latency_ms"]["p50"]
            if n == 4 and p50 is not None:
                out["met_goal_n4"] = p50 <= PBFT_GOAL_P50_MS
    elif part == "round":
        out["rows"] = []
        rounds = cfg.rounds or ROUND_ROUNDS
        for task in cfg.round_tasks():
            say(f"round: {task}, {ROUND_MINERS} miners, {rounds} rounds ...")
            out["rows"].append(bench_round(task, rounds, work / f"round-{task}"))
    elif part == "scale":
        task = cfg.task or DEFAULT_SCALE_TASK
        rounds = cfg.rounds or SCALE_ROUNDS
        out.update(
            rule=f"a round succeeds when its block commits within deadline + "
            f"{SCALE_SLACK_MS / 1000:g} s at every validator and accepts >= "
            f"{SCALE_SUCCESS:.1%} of the submissions; N passes when >= {SCALE_SUCCESS:.1%} "
            "of its rounds succeed",
            largest_passing=None,
            rows=[],
        )
        for m in cfg.scale_miners:
            round_s = cfg.scale_round_s(m)
            say(f"scale: {m} miners, {rounds} rounds of {round_s:g} s ({task}) ...")
            row = bench_scale(m, rounds, round_s, task, work / f"scale-{m}")
            out["rows"].append(row)
            if not row["passed"]:
                break
            out["largest_passing"] = m
    elif part == "training":
        task = cfg.task or DEFAULT_TRAINING_TASK
        rounds = cfg.rounds or TRAINING_ROUNDS
        kind = "pot mine processes" if cfg.real_miners else "simulated miners"
        say(f"training: {task}, {TRAINING_MINERS} {kind}, {rounds} rounds ...")
        out.update(
            bench_training(task, rounds, work / f"training-{task}", real_miners=cfg.real_miners)
        )


__all__ = [
    "PARTS",
    "MinerPool",
    "NetworkBenchConfig",
    "bench_pbft",
    "bench_round",
    "bench_scale",
    "bench_training",
    "network_bench",
    "summarize",
]
