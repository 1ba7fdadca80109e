"""What the miner tests share: a real network to mine on, and the one stand-in they keep.

Miners are tested against REAL validators: :func:`miner_network` starts a devnet's 4
``pot validate`` processes on loopback (``tests/net_harness.py``) with no miners of its own, and
hands out its staked miner identities one per test (:class:`MinerNetwork`), so the tests of a
module can share one network (about 5 s to start) without one test's miner being another's.

:class:`ByzantineValidator` is the exception, and the only one: it plays a validator that serves
a model whose bytes do not hash to its name, which no real ``pot validate`` can be made to do.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from net_harness import logs, running_network

from pot_cli import paths
from pot_cli.crypto import Identity, load_key_file
from pot_cli.node.api_models import BlockOut, VerdictOut
from pot_cli.node.client import ApiError, Unreachable, ValidatorClient
from pot_cli.node.devnet import POT, Devnet, DevnetSpec, Node

# every devnet miner starts with 90 POT liquid and 10 POT staked (pot_cli/node/devnet.py)
GENESIS_BALANCE = 90 * POT
GENESIS_STAKE = 10 * POT
# tiny task, short rounds; a new identity's first 3 accepted submissions are all re-computed
# (so a forger's first one is caught for sure); room for 8 test miners
MINER_NET_SPEC = DevnetSpec(
    validators=4,
    miners=8,
    task="tiny",
    round_seconds=1.5,
    compression="int8",
    probation_rounds=3,
    spot_check_bps=1000,
    rounds=40,
)


# ------------------------------------------------------------------------- the real network


class MinerNetwork:
    """A running real network and the staked miner identities not yet handed out."""

    def __init__(self, net: Devnet) -> None:
        self.net = net
        self.chain_id = net.layout.genesis.chain_id
        self.urls = tuple(v.url for v in net.layout.validators)
        self.clients = [ValidatorClient(u, timeout=5.0) for u in self.urls]
        self._free = list(net.layout.miners)

    @property
    def client(self) -> ValidatorClient:
        return self.clients[0]

    def take_miner(self) -> tuple[Node, Identity]:
        """A staked miner identity no other test has used (its home holds key and config)."""
        if not self._free:
            raise AssertionError("the miner network has no unused miner identity left")
        node = self._free.pop(0)
        return node, load_key_file(paths.key_path(node.home))

    def logs(self) -> str:
        return logs(self.net.layout)

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        """Poll ``predicate`` (bounded); on timeout fail with the validators' log tails."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Unreachable, ApiError):
                if predicate():
                    return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}")

    def block(
        self, height: int, *, client: ValidatorClient | None = None, timeout: float = 20.0
    ) -> BlockOut:
        """Block ``height`` from ``client`` (validator 0), waiting (bounded) for it to commit."""
        c = client or self.client
        got: list[BlockOut] = []

        def committed() -> bool:
            got.append(c.block(height))
            return True

        self.wait(f"block {height} on {c.base_url}", committed, timeout)
        return got[0]

    def wait_fresh_round(self, left_ms: int = 1000, timeout: float = 15.0) -> int:
        """Until the open round has at least ``left_ms`` to go (a miner started now can still
        make it); its height."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Unreachable, ApiError):
                r = self.client.round()
                if r.phase == "open" and r.deadline_in_ms >= left_ms:
                    return r.height
            time.sleep(0.02)
        raise AssertionError(
            f"no round with {left_ms} ms to go within {timeout:.0f} s\n{self.logs()}"
        )

    def verdict(self, block: BlockOut, miner: str) -> VerdictOut | None:
        return next((v for v in block.verdicts if v.miner == miner), None)

    def submissions(self) -> list[dict[str, float]]:
        """Every validator's ``pot_validator_submissions_total`` by outcome (its /metrics)."""
        return [submissions_by_outcome(c.metrics()) for c in self.clients]

    def close(self) -> None:
        for c in self.clients:
            c.close()


_SUBMISSIONS = re.compile(r'^pot_validator_submissions_total\{outcome="([^"]+)"\} (\S+)$', re.M)


def submissions_by_outcome(metrics: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in _SUBMISSIONS.finditer(metrics)}


@contextlib.contextmanager
def miner_network(root: Path, spec: DevnetSpec = MINER_NET_SPEC) -> Iterator[MinerNetwork]:
    """Real validators (no miners) on loopback, every process stopped on exit, pass or fail;
    yields once the first round is open (so a test's miner finds one)."""
    with running_network(root, spec, miners=False) as net:
        mn = MinerNetwork(net)
        try:
            mn.wait("the first round to open", lambda: mn.client.round().height >= 1, 60)
            yield mn
        finally:
            mn.close()


# ----------------------------------------------------------------- the Byzantine stand-in


class ByzantineValidator:
    """A Byzantine validator in front of an honest one: everything is the real validator's
    (``upstream``) answer, forwarded unchanged, except ``GET /v1/models/<hash>``, which serves
    the real model with its last 4 bytes zeroed: bytes that still decode but do not hash to the
    name they are served under.

    A stand-in, not a real ``pot validate``, because a real validator cannot be made to serve a
    poisoned model; it plays only that part. Honest validator behaviour is tested against the
    real ones (:func:`miner_network`). ``model_requests`` lists the model hashes asked for.
    """

    def __init__(self, upstream: str, *, timeout: float = 10.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.timeout = timeout
        self.model_requests: list[str] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def model_downloads(self) -> int:
        with self.lock:
            return len(self.model_requests)

    def __enter__(self) -> ByzantineValidator:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def forward(
        self, method: str, path: str, headers: Any, body: bytes | None
    ) -> requests.Response:
        keep = {k: v for k, v in headers.items() if k.lower().startswith("x-pot-")}
        if "Content-Type" in headers:
            keep["Content-Type"] = headers["Content-Type"]
        return requests.request(
            method, self.upstream + path, headers=keep, data=body, timeout=self.timeout
        )

    def poisoned(self, data: bytes) -> bytes:
        return data[:-4] + bytes(4)


def _handler_for(v: ByzantineValidator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _relay(self, method: str, body: bytes | None) -> None:
            try:
                r = v.forward(method, self.path, self.headers, body)
            except requests.RequestException:
                self.send_error(502)
                return
            data = r.content
            if method == "GET" and self.path.startswith("/v1/models/") and r.status_code == 200:
                with v.lock:
                    v.model_requests.append(self.path.rsplit("/", 1)[1])
                data = v.poisoned(data)
            self.send_response(r.status_code)
            self.send_header("Content-Type", r.headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._relay("GET", None)

        def do_POST(self) -> None:
            self._relay("POST", self.rfile.read(int(self.headers.get("Content-Length", "0"))))

    return Handler
