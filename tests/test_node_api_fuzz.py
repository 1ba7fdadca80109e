"""Schemathesis against a REAL validator: every operation of its ``/openapi.json`` (GET, and
the POSTs with their declared headers), with data that fits the schema (positive) and data that
does not (negative), must never answer 5xx.

Four validator processes on loopback (``running_network``), one network for the module. The
whole fuzz is bounded (:data:`BUDGET_S`) and derandomized (the same cases every run). Skipped
when schemathesis is not installed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from net_harness import running_network

from pot_cli.node.devnet import Devnet, DevnetSpec

schemathesis = pytest.importorskip("schemathesis")

SPEC = DevnetSpec(miners=1, round_seconds=3.0)
BUDGET_S = 30.0  # all operations, both modes
EXAMPLES = 40  # per operation and mode (fewer when the budget runs out)
# GET operations and fixed parameters: the long poll must not wait; the event stream never ends
FIXED: dict[str, dict[str, Any]] = {"/v1/events/poll": {"query": {"wait": 0}}}
SKIP = {"/v1/events"}  # text/event-stream: an endless response
GET_PATHS = [
    "/metrics",
    "/v1/accounts/{address}",
    "/v1/blocks/{height}",
    "/v1/events/poll",
    "/v1/genesis",
    "/v1/model",
    "/v1/models/{model_hash}",
    "/v1/peer/payload/{payload_hash}",
    "/v1/round",
    "/v1/status",
    "/v1/validators",
]
# the POSTs: the submission's six commitment headers are declared (fuzzed); the peer endpoints
# declare no body (they get none here: test_node_api_hostile sends them the hostile bodies)
POST_PATHS = ["/v1/peer/beacon", "/v1/peer/consensus", "/v1/peer/relay", "/v1/submit"]
OPERATIONS = [("GET", p) for p in GET_PATHS] + [("POST", p) for p in POST_PATHS]


@dataclass
class Fuzz:
    net: Devnet
    url: str
    schema: Any
    session: requests.Session
    started: float = field(default_factory=time.monotonic)
    seen: list[tuple[str, int]] = field(default_factory=list)  # path, status


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    with running_network(tmp_path_factory.mktemp("fuzz"), SPEC, miners=False) as net:
        url = net.layout.validators[0].url
        spec = requests.get(url + "/openapi.json", timeout=10).json()
        session = requests.Session()
        try:
            yield Fuzz(net, url, schemathesis.openapi.from_dict(spec), session)
        finally:
            session.close()


def _operation(f: Fuzz, method: str, path: str) -> Any:
    for result in f.schema.get_all_operations():
        op = result.ok()
        if op.path == path and op.method.upper() == method:
            return op
    raise AssertionError(f"no {method} {path} in /openapi.json")


def test_the_fuzzed_operations_are_all_of_them(fuzz: Fuzz) -> None:
    ops = [r.ok() for r in fuzz.schema.get_all_operations()]
    listed = sorted((op.method.upper(), op.path) for op in ops)
    assert sorted([*OPERATIONS, *(("GET", p) for p in SKIP)]) == listed


def _fuzz(f: Fuzz, method: str, path: str, mode: Any, stop_at: float) -> list[str]:
    """Run ``mode`` cases of ``method path`` until ``stop_at``; its 5xx answers."""
    op = _operation(f, method, path)
    errors: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(mode, **FIXED.get(path, {})))
    def run(case: Any) -> None:
        if time.monotonic() > stop_at:
            return
        try:
            r = case.call(base_url=f.url, session=f.session, timeout=10)
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader):
            return  # not even sendable (negative data: a path or header requests refuses)
        f.seen.append((case.formatted_path, r.status_code))
        if r.status_code >= 500:
            errors.append(
                f"{mode.value} {method} {case.formatted_path} {case.query} {case.headers}: "
                f"{r.status_code} {r.text[:120]}"
            )

    try:
        run()
    except Unsatisfiable:
        # negative data is impossible where every parameter is a plain string (a path segment
        # is always a string): the positive cases already send arbitrary text there
        assert mode is schemathesis.GenerationMode.NEGATIVE, path
    return errors


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_5xx_for_any_input(fuzz: Fuzz, method: str, path: str) -> None:
    stop_at = min(time.monotonic() + BUDGET_S / len(OPERATIONS), fuzz.started + BUDGET_S + 5)
    modes = list(schemathesis.GenerationMode)
    errors = [e for mode in modes for e in _fuzz(fuzz, method, path, mode, stop_at)]
    assert not errors, "\n".join(errors[:20])
    fuzz.net.check_all_alive()
    assert requests.get(fuzz.url + "/v1/status", timeout=10).status_code == 200


def test_the_fuzz_sent_enough_and_the_network_still_commits(fuzz: Fuzz) -> None:
    assert len(fuzz.seen) >= 100, len(fuzz.seen)
    assert all(status < 500 for _, status in fuzz.seen)
    c = fuzz.net.clients[fuzz.net.layout.validators[0].name]
    start = c.status().height
    deadline = time.monotonic() + 30
    while c.status().height <= start:
        assert time.monotonic() < deadline
        fuzz.net.check_all_alive()
        time.sleep(0.25)
