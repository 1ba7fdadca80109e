"""``pot devnet``: the whole network on this machine, every node its own OS process.

:func:`write_network` lays out a network under one directory: fresh Ed25519 keys for every
validator and miner (files 0600), a genesis naming the validators (with their beacon commits)
and staking the miners, and each node's home with its ``config.toml`` (free loopback ports).
:class:`Devnet` starts the nodes (``python -m pot_cli --home <home> validate|mine``), watches
them through the validators' API, and stops every one of them whatever happens: each child
is in its own session, is asked to stop (SIGTERM) and then killed, and on Linux the kernel
kills it if the launcher itself dies (``PR_SET_PDEATHSIG``). :func:`devnet_report` reads the
outcome back from the validators and their chain stores, and trains the centralized baseline on
exactly the samples the chain accepted.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pot_cli import crypto, paths
from pot_cli.config import default_config, write_config
from pot_cli.errors import PotError, UsageError
from pot_cli.node.chainstore import ChainStore
from pot_cli.node.client import ApiError, Unreachable, ValidatorClient
from pot_cli.protocol.beacon import onion_commit
from pot_cli.protocol.genesis import Genesis, parse_genesis

CHAIN_ID = "pot-devnet-local"
POT = 1_000_000  # base units per POT (genesis decimals = 6)
STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class DevnetSpec:
    validators: int = 4
    miners: int = 4
    byzantine: int = 0
    attack: str = "lazy"
    rounds: int = 20
    task: str = "digits"
    round_seconds: float = 3.0
    compression: str = "int8"
    # a new identity's first accepted submissions that are all re-computed (genesis)
    probation_rounds: int = 10
    # chance (basis points) that any other submission is re-computed (genesis)
    spot_check_bps: int = 1000

    def __post_init__(self) -> None:
        if self.validators < 4:
            raise UsageError("--validators: PBFT needs at least 4 validators (n = 3f + 1)")
        if self.miners < 1 or not 0 <= self.byzantine <= self.miners:
            raise UsageError("--miners must be >= 1 and --byzantine within [0, miners]")
        if self.rounds < 1:
            raise UsageError("--rounds must be >= 1")
        if self.compression not in ("none", "int8") and not self.compression.startswith("topk:"):
            raise UsageError("--compression: none, int8 or topk:<fraction>, e.g. topk:0.2")
        if not 0.5 <= self.round_seconds <= 600:
            raise UsageError("--round-seconds must be in [0.5, 600]")

    @property
    def round_ms(self) -> int:
        return round(self.round_seconds * 1000)

    @property
    def view_change_seconds(self) -> float:
        # the primary proposes after the fetch (round/3) and reveal (round/4) graces and its
        # own derivation: a backup waits well beyond that before it asks for a view change
        return max(4.0, 2.0 * self.round_seconds)

    def on_time_ms(self) -> int:
        """A round is on time when its block commits within this long after its deadline:
        the fetch and reveal graces plus 2 s."""
        return self.round_ms // 3 + self.round_ms // 4 + 2000


@dataclass
class Node:
    name: str
    role: str  # "validator" or "miner"
    home: Path
    address: str
    url: str  # a validator's API, or a miner's status API
    byzantine: bool = False
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    expected_down: bool = False

    @property
    def log_path(self) -> Path:
        return self.home / "node.log"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Layout:
    root: Path
    spec: DevnetSpec
    genesis: Genesis
    validators: list[Node] = field(default_factory=list)
    miners: list[Node] = field(default_factory=list)

    @property
    def nodes(self) -> list[Node]:
        return [*self.validators, *self.miners]


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port that is free now, below Linux's ephemeral range (32768-60999) so that
    no outgoing connection takes it before the node binds it; never the same one twice in a
    process."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded machine
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_network(root: Path, spec: DevnetSpec) -> Layout:
    """Keys, genesis and configs of a fresh network under ``root`` (which must be empty)."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise UsageError(f"{root}: not empty; pick a new --home for a new devnet")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    beacon_rounds = 4 * spec.rounds + 256
    vids = [crypto.Identity.generate() for _ in range(spec.validators)]
    mids = [crypto.Identity.generate() for _ in range(spec.miners)]
    genesis = parse_genesis(
        {
            "chain_id": CHAIN_ID,
            "task": spec.task,
            "model_seed": 1,
            "validators": [
                {
                    "name": f"val-{i}",
                    "public_key": v.public_key.hex(),
                    "beacon_commit": onion_commit(v, CHAIN_ID, beacon_rounds),
                }
                for i, v in enumerate(vids)
            ],
            "beacon_rounds": beacon_rounds,
            "emission_per_round": 1 * POT,
            "miner_share_bps": 8000,
            "validator_share_bps": 2000,
            "min_miner_stake": 10 * POT,
            "forgery_slash": 10 * POT,
            "malformed_penalty": POT // 10,
            "spot_check_bps": spec.spot_check_bps,
            "probation_rounds": spec.probation_rounds,
            "compression": spec.compression,
            "accounts": [
                {"address": m.address, "balance": 90 * POT, "stake": 10 * POT} for m in mids
            ],
        },
        "devnet genesis",
    )
    genesis_text = genesis_toml(genesis)
    (root / "genesis.toml").write_text(genesis_text)
    ports = [free_port() for _ in vids]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    layout = Layout(root, spec, genesis)
    byzantine = set(range(spec.miners - spec.byzantine, spec.miners))
    for i, ident in enumerate(vids):
        home = root / f"val-{i}"
        cfg = default_config("validator", f"val-{i}")
        cfg.node.chain_id = CHAIN_ID
        cfg.network.validators = list(urls)
        cfg.network.listen = f"127.0.0.1:{ports[i]}"
        cfg.validator.round_seconds = spec.round_seconds
        cfg.validator.view_change_timeout_seconds = spec.view_change_seconds
        cfg.validator.checkpoint_interval = 4
        _write_home(home, ident, cfg)
        (home / "genesis.toml").write_text(genesis_text)
        layout.validators.append(Node(f"val-{i}", "validator", home, ident.address, urls[i]))
    for i, ident in enumerate(mids):
        home = root / f"miner-{i}"
        port = free_port()
        cfg = default_config("miner", f"miner-{i}")
        cfg.node.chain_id = CHAIN_ID
        cfg.network.validators = list(urls)
        cfg.network.request_timeout_seconds = 5.0
        cfg.miner.api_listen = f"127.0.0.1:{port}"
        cfg.miner.task = spec.task
        cfg.miner.gpus = "all"
        _write_home(home, ident, cfg)
        layout.miners.append(
            Node(
                f"miner-{i}",
                "miner",
                home,
                ident.address,
                f"http://127.0.0.1:{port}",
                byzantine=i in byzantine,
            )
        )
    return layout


def _write_home(home: Path, identity: crypto.Identity, cfg: Any) -> None:
    home.mkdir(parents=True)
    os.chmod(home, 0o700)
    crypto.write_key_file(paths.key_path(home), identity)
    write_config(home / "config.toml", cfg)


def genesis_toml(genesis: Genesis) -> str:
    import tomli_w

    return "# pot devnet genesis (written by pot devnet)\n" + tomli_w.dumps(genesis.to_dict())


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    """The kernel sends SIGTERM to the child when the launcher dies (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Devnet:
    """The running network's processes; a context manager that always stops them all."""

    def __init__(self, layout: Layout, *, python: str = sys.executable) -> None:
        self.layout = layout
        self.python = python
        self.clients = {v.name: ValidatorClient(v.url, timeout=3.0) for v in layout.validators}
        self.first_round = 1  # the first round every miner was up for (wait_miners)

    def __enter__(self) -> Devnet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def node(self, name: str) -> Node:
        for n in self.layout.nodes:
            if n.name == name:
                return n
        raise UsageError(f"no node {name!r} in this devnet")

    def command(self, node: Node) -> list[str]:
        cmd = [self.python, "-m", "pot_cli", "--home", str(node.home)]
        if node.role == "validator":
            return [*cmd, "validate"]
        cmd += ["mine"]
        if node.byzantine:
            cmd += ["--attack", self.layout.spec.attack]
        return cmd

    def start(self, node: Node) -> None:
        if node.alive:
            return
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        env.pop("POT_CONFIG", None)
        env.pop("POT_HOME", None)
        log = open(node.log_path, "ab")  # noqa: SIM115 - the child owns it
        try:
            node.proc = subprocess.Popen(
                self.command(node),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_child_setup if sys.platform.startswith("linux") else None,
            )
        finally:
            log.close()
        node.expected_down = False

    def start_validators(self) -> None:
        for v in self.layout.validators:
            self.start(v)

    def start_miners(self) -> None:
        for m in self.layout.miners:
            self.start(m)

    def wait_ready(self, timeout: float) -> None:
        """Until every validator answers its status (or one died: its log's tail says why)."""
        deadline = time.monotonic() + timeout
        pending = {v.name for v in self.layout.validators}
        while pending:
            for name in sorted(pending):
                node = self.node(name)
                self.check_alive(node)
                try:
                    self.clients[name].status()
                    pending.discard(name)
                except (Unreachable, ApiError):
                    pass
            if pending and time.monotonic() > deadline:
                raise PotError(f"validators {sorted(pending)} did not start within {timeout:.0f} s")
            if pending:
                time.sleep(0.25)

    def wait_miners(self, timeout: float) -> int:
        """Until every miner's status API answers; returns the first round they can all work
        on (the next one to open), remembered as :attr:`first_round`."""
        import requests

        deadline = time.monotonic() + timeout
        pending = {m.name for m in self.layout.miners}
        while pending:
            for name in sorted(pending):
                node = self.node(name)
                self.check_alive(node)
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"{node.url}/summary", timeout=2).status_code == 200:
                        pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise PotError(f"miners {sorted(pending)} did not start within {timeout:.0f} s")
            if pending:
                time.sleep(0.25)
        tops = [s["height"] for s in self.statuses().values() if s is not None]
        self.first_round = (max(tops) if tops else 0) + 2
        return self.first_round

    def check_alive(self, node: Node) -> None:
        if node.proc is not None and node.proc.poll() is not None and not node.expected_down:
            raise PotError(
                f"{node.name} exited with code {node.proc.returncode}; its log "
                f"{node.log_path} ends with:\n{tail(node.log_path)}"
            )

    def check_all_alive(self) -> None:
        for n in self.layout.nodes:
            self.check_alive(n)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        node = self.node(name)
        node.expected_down = True
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(sig)
            node.proc.wait(timeout=30)

    def restart(self, name: str) -> None:
        node = self.node(name)
        node.restarts += 1
        self.start(node)

    def statuses(self) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        for v in self.layout.validators:
            try:
                out[v.name] = self.clients[v.name].status().model_dump()
            except (Unreachable, ApiError):
                out[v.name] = None
        return out

    def stop_all(self) -> None:
        """SIGTERM to every child (miners first), SIGKILL to what is left after a grace."""
        procs = [n.proc for n in [*self.layout.miners, *self.layout.validators] if n.proc]
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        for c in self.clients.values():
            c.close()


def tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:])


@contextlib.contextmanager
def launched(layout: Layout) -> Iterator[Devnet]:
    """Start the validators, wait for them, start the miners; stop everything on exit."""
    net = Devnet(layout)
    try:
        net.start_validators()
        net.wait_ready(timeout=120)
        net.start_miners()
        yield net
    finally:
        net.stop_all()


# ------------------------------------------------------------------------------ the report


def chain_store(node: Node) -> ChainStore:
    return ChainStore(node.home / "chain" / "chain.sqlite")


def devnet_report(
    layout: Layout,
    statuses: dict[str, dict[str, Any] | None],
    wall_s: float,
    first_round: int = 1,
) -> dict[str, Any]:
    """The outcome, from the validators' last statuses and validator 0's chain store (read
    after the nodes stopped): rounds, view changes, per-miner results, the model's quality
    against centralized training on the samples the chain accepted."""
    from pot_cli.node.api import block_out
    from pot_cli.node.quality import chain_quality

    spec = layout.spec
    up = {k: s for k, s in statuses.items() if s is not None}
    heights = {k: int(s["height"]) for k, s in up.items()}
    # every validator's store, read after the nodes stopped: the same digest at every height
    # they all hold is agreement; the longest chain gives the blocks
    chains: dict[str, dict[int, str]] = {}
    for v in layout.validators:
        store = chain_store(v)
        try:
            chains[v.name] = {b.seq: b.digest for b in store.blocks()}
        finally:
            store.close()
    common = min((max(c, default=0) for c in chains.values()), default=0)
    agree = all(len({c.get(h) for c in chains.values()}) == 1 for h in range(1, common + 1))
    best = max(layout.validators, key=lambda v: len(chains[v.name]))
    store = chain_store(best)
    try:
        blocks = {b.seq: b for b in store.blocks()}
        rounds = store.rounds()
        quality = chain_quality(store)
    finally:
        store.close()
    last = min(heights.values()) if heights else 0
    counted = range(first_round, last + 1)
    committed = len(counted)
    on_time = 0
    for h in counted:
        _, deadline, done = rounds.get(h, (None, None, None))
        if deadline is not None and done is not None and done - deadline <= spec.on_time_ms():
            on_time += 1
    heads = {s["model_hash"] for s in up.values() if int(s["height"]) == last}
    # the network's training throughput: samples in accepted submissions over the counted
    # rounds' wall time (from the first counted round opening to the last one committing)
    opened = rounds.get(first_round, (None, None, None))[0]
    closed = rounds.get(last, (None, None, None))[2]
    accepted_samples = 0
    for h in counted:
        if h in blocks:
            accepted_samples += sum(v.samples for v in block_out(blocks[h], None).verdicts
                                    if v.kind == "accepted")  # fmt: skip
    span_s = (closed - opened) / 1000 if opened and closed and closed > opened else None
    quality["pot_samples_per_s"] = accepted_samples / span_s if span_s else None
    miners = _miner_rows(layout, blocks)
    honest = [m for m in miners if not m["byzantine"]]
    byz = [m for m in miners if m["byzantine"]]
    cheating_pays = bool(byz and honest) and max(m["earnings"] for m in byz) >= min(
        m["earnings"] for m in honest
    )
    ok = committed >= spec.rounds and agree and not cheating_pays
    return {
        "ok": ok,
        "chain_id": layout.genesis.chain_id,
        "rounds_target": spec.rounds,
        "first_round": first_round,
        "rounds_committed": committed,
        "rounds_on_time": on_time,
        "on_time_rule_ms": spec.on_time_ms(),
        "view_changes": max((int(s["view_changes"]) for s in up.values()), default=0),
        "validators_agree": agree,
        "heights": heights,
        "model_hash": next(iter(heads)) if len(heads) == 1 else None,
        "quality_ratio": quality["quality_ratio"],
        "quality": quality,
        "cheating_pays": cheating_pays,
        "wall_s": round(wall_s, 1),
        "miners": miners,
        "validators": [
            {"name": v.name, "address": v.address, "url": v.url, "log": str(v.log_path)}
            for v in layout.validators
        ],
        "home": str(layout.root),
        "chain": str(best.home / "chain" / "chain.sqlite"),
        "logs": [str(n.log_path) for n in layout.nodes],
    }


def _miner_rows(layout: Layout, blocks: dict[int, Any]) -> list[dict[str, Any]]:
    from pot_cli.node.api import block_out

    rows: dict[str, dict[str, Any]] = {
        m.address: {
            "name": m.name,
            "address": m.address,
            "byzantine": m.byzantine,
            "attack": layout.spec.attack if m.byzantine else None,
            "accepted": 0,
            "rejected": 0,
            "slashed": 0,
            "rewards": 0,
            "penalties": 0,
            "log": str(m.log_path),
        }
        for m in layout.miners
    }
    for h in sorted(blocks):
        for v in block_out(blocks[h], None).verdicts:
            row = rows.get(v.miner)
            if row is None:
                continue
            row[v.kind] += 1
            row["rewards"] += v.reward
            row["penalties"] += v.penalty
    out = []
    for r in rows.values():
        r["earnings"] = r["rewards"] - r["penalties"]
        r["earnings_pot"] = r["earnings"] / POT
        out.append(r)
    return out
