"""Real networks for tests: validators and miners as OS processes on 127.0.0.1.

``running_network(tmp_path, spec)`` lays out a fresh network (``node.devnet.write_network``),
starts its validators (and, with ``miners=True``, its miners) and always stops every process on
exit, whether the test passed or not. Waits are bounded and raise with the nodes' log tails.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pot_cli.node.client import ApiError, Unreachable, ValidatorClient
from pot_cli.node.devnet import Devnet, DevnetSpec, Layout, tail, write_network


@contextlib.contextmanager
def running_network(
    root: Path, spec: DevnetSpec, *, miners: bool = True, ready_timeout: float = 90
) -> Iterator[Devnet]:
    layout = write_network(root, spec)
    net = Devnet(layout)
    try:
        net.start_validators()
        net.wait_ready(ready_timeout)
        if miners:
            net.start_miners()
        yield net
    finally:
        net.stop_all()


def client(net: Devnet, i: int = 0) -> ValidatorClient:
    return ValidatorClient(net.layout.validators[i].url, timeout=5.0)


def logs(layout: Layout) -> str:
    return "\n".join(f"--- {n.name}\n{tail(n.log_path, 25)}" for n in layout.nodes)


def wait_until(
    net: Devnet, what: str, predicate: Callable[[], bool], timeout: float, every: float = 0.25
) -> None:
    """Poll ``predicate`` until true; on timeout fail with ``what`` and every node's log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Unreachable, ApiError):
            if predicate():
                return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs(net.layout)}")


def heights(net: Devnet, names: list[str] | None = None) -> dict[str, int]:
    out = {}
    for v in net.layout.validators:
        if names is not None and v.name not in names:
            continue
        with contextlib.suppress(Unreachable, ApiError):
            out[v.name] = net.clients[v.name].status().height
    return out


def all_at_least(net: Devnet, height: int, names: list[str] | None = None) -> bool:
    hs = heights(net, names)
    expected = len(names) if names is not None else len(net.layout.validators)
    return len(hs) == expected and min(hs.values()) >= height
