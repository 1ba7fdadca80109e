"""Hostile HTTP against a REAL validator API: four validator processes on loopback, one network
for the whole module (``running_network``), attacked over plain HTTP and raw sockets.

Every hostile request gets a 4xx with ``{"error": code, "detail": reason}`` (the HTTP layer's
own refusals of unparseable HTTP are plain 4xx), nothing is credited to the attackers, every
validator keeps serving and the network keeps committing. Every response of the module is
recorded; the last test asserts that none was a 5xx.

Submissions that must reach the round machine need the round open: :func:`open_round` waits for
one with time left. Miner 0 is the honest miner (its submission is replayed by a third party
and must still be accepted); miners 1 and 2 sign the hostile payloads and relays and must end
with their genesis balance; a fresh identity plays the unknown miner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import resource
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import torch
from net_harness import logs, running_network
from starlette.requests import Request

from pot_cli import paths
from pot_cli.crypto import Identity, load_key_file
from pot_cli.node.api import Problem, read_body
from pot_cli.node.api_models import (
    HEADER_CHAIN,
    HEADER_HEIGHT,
    HEADER_MODEL_HASH,
    HEADER_PAYLOAD_HASH,
    HEADER_PUBLIC_KEY,
    HEADER_SIGNATURE,
    RoundOut,
)
from pot_cli.node.client import ApiError, ValidatorClient
from pot_cli.node.devnet import POT, Devnet, DevnetSpec, tail
from pot_cli.protocol.app import INTAKE_LIMIT_FACTOR
from pot_cli.protocol.commitments import sign_commitment
from pot_cli.training.assignment import assign_batch
from pot_cli.training.codec import (
    Compression,
    GradientHeader,
    decode_model,
    encode_gradient,
    max_payload_bytes,
    write_safetensors,
)
from pot_cli.training.gradients import Numerics, compute_gradient
from pot_cli.training.tasks import Task, load_task

SPEC = DevnetSpec(miners=3, round_seconds=15.0, rounds=8)
GENESIS_BALANCE = 90 * POT  # devnet genesis: every miner 90 POT liquid, 10 POT staked
GENESIS_STAKE = 10 * POT
JSON_BOMB_DEPTH = 100_000
OTHER_CHAIN = "pot-some-other-chain"
BOGUS_MODEL = "ab" * 32


@dataclass
class Hostile:
    net: Devnet
    task: Task
    chain_id: str
    urls: list[str]
    miners: list[Identity]
    stranger: Identity
    http: requests.Session
    seen: list[tuple[str, str, int]] = field(default_factory=list)  # method, url, status
    params: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    honest: tuple[str, int] | None = None  # (address, height) of the honest, replayed one
    clients: dict[int, ValidatorClient] = field(default_factory=dict)

    def client(self, i: int = 0) -> ValidatorClient:
        """The typed client of validator ``i`` (its answers are recorded too)."""
        if i not in self.clients:
            c = ValidatorClient(self.urls[i], timeout=10.0)
            c.session.hooks["response"].append(self._record)
            self.clients[i] = c
        return self.clients[i]

    def _record(self, r: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.seen.append((r.request.method or "?", r.url, r.status_code))

    def url(self, path: str, i: int = 0) -> str:
        return self.urls[i] + path

    def get(self, path: str, i: int = 0, **kw: Any) -> requests.Response:
        return self.http.get(self.url(path, i), timeout=15, **kw)

    def post(self, path: str, data: Any = b"", i: int = 0, **kw: Any) -> requests.Response:
        return self.http.post(self.url(path, i), data=data, timeout=20, **kw)


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    with running_network(tmp_path_factory.mktemp("hostile"), SPEC, miners=False) as net:
        http = requests.Session()
        layout = net.layout
        state = Hostile(
            net=net,
            task=load_task(SPEC.task),
            chain_id=layout.genesis.chain_id,
            urls=[v.url for v in layout.validators],
            miners=[load_key_file(paths.key_path(m.home)) for m in layout.miners],
            stranger=Identity.generate(),
            http=http,
        )
        http.hooks["response"].append(state._record)
        try:
            yield state
        finally:
            http.close()
            for c in state.clients.values():
                c.close()


# ----------------------------------------------------------------------------- helpers


def expect(r: requests.Response, status: int, code: str, detail: str = "") -> dict[str, Any]:
    """``r`` is ``status`` with the JSON error ``code`` and a detail containing ``detail``."""
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"], body
    assert detail.lower() in body["detail"].lower(), body
    return dict(body)


def open_round(h: Hostile, min_left_ms: int = 5000, timeout: float = 60.0) -> RoundOut:
    """The open round of validator 0, once it has at least ``min_left_ms`` left."""
    c = h.client(0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = c.status()
        if s.phase == "open" and s.deadline_in_ms is not None and s.deadline_in_ms >= min_left_ms:
            r = c.round()
            if r.phase == "open" and r.deadline_in_ms >= min_left_ms - 500:
                return r
        time.sleep(0.2)
    raise AssertionError(f"no open round with {min_left_ms} ms left\n{logs(h.net.layout)}")


def model_params(h: Hostile, r: RoundOut) -> dict[str, torch.Tensor]:
    if r.model_hash not in h.params:
        h.params[r.model_hash] = decode_model(h.task, h.client(0).model(r.model_hash))
    return h.params[r.model_hash]


def gradient(h: Hostile, r: RoundOut, ident: Identity) -> dict[str, torch.Tensor]:
    idx = assign_batch(bytes.fromhex(r.round_seed), ident.address, r.train_size, r.batch_size)
    return dict(compute_gradient(h.task, model_params(h, r), idx, Numerics(threads=1)))


def payload_for(
    h: Hostile,
    r: RoundOut,
    ident: Identity,
    *,
    height: int | None = None,
    model_hash: str | None = None,
    compression: Compression | None = None,
    scale: float = 1.0,
) -> bytes:
    g = gradient(h, r, ident)
    if scale != 1.0:
        g = {k: v * scale for k, v in g.items()}
    return encode_gradient(
        h.task,
        g,
        model_hash=model_hash or r.model_hash,
        height=r.height if height is None else height,
        compression=compression or Compression.parse(r.compression),
    )


def signed_headers(
    ident: Identity,
    chain_id: str,
    height: int,
    model_hash: str,
    payload: bytes,
    *,
    sign_chain: str | None = None,
) -> dict[str, str]:
    """The submission headers of ``payload``, signed by ``ident`` (for ``sign_chain`` when
    given: a commitment of another chain sent with this chain's header)."""
    ph, sig = sign_commitment(ident, sign_chain or chain_id, height, model_hash, payload)
    return {
        HEADER_CHAIN: chain_id,
        HEADER_PUBLIC_KEY: ident.public_key.hex(),
        HEADER_HEIGHT: str(height),
        HEADER_MODEL_HASH: model_hash,
        HEADER_PAYLOAD_HASH: ph,
        HEADER_SIGNATURE: sig.hex(),
        "Content-Type": "application/octet-stream",
    }


def submit(h: Hostile, headers: dict[str, str], body: bytes, i: int = 0) -> requests.Response:
    return h.post("/v1/submit", body, i, headers=headers)


def still_serving(h: Hostile, i: int = 0) -> None:
    r = h.get("/v1/status", i)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["chain_id"] == h.chain_id


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_http(
    h: Hostile,
    head: str,
    body: bytes = b"",
    *,
    chunks: Iterator[bytes] | None = None,
    shut_write: bool = False,
    i: int = 0,
    timeout: float = 15.0,
    allow_close: bool = False,
) -> RawResponse:
    """Send ``head`` (request line and headers, without the blank line) and ``body`` (or
    ``chunks``, chunked) over a raw socket; the peer's answer, read until it closes (status 0:
    it closed without one, where ``allow_close``)."""
    u = urlsplit(h.urls[i])
    assert u.hostname is not None and u.port is not None
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        try:
            s.sendall(head.encode("latin-1") + b"\r\n\r\n" + body)
            for c in chunks or ():
                s.sendall(f"{len(c):x}\r\n".encode() + c + b"\r\n")
            if chunks is not None:
                s.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered and closed while we were still sending
            pass
        if shut_write:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_WR)
        data = b""
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            while True:
                got = s.recv(65536)
                if not got:
                    break
                data += got
                if _complete(data):
                    break
    if not data and allow_close:
        return RawResponse(0, {}, b"")
    assert data, "the server closed the connection without an answer"
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    h.seen.append(("RAW", head.split("\r\n", 1)[0], status))
    return RawResponse(status, headers, rest)


def _complete(data: bytes) -> bool:
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.decode("latin-1").split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            return len(rest) >= int(v.strip())
    return False


def submit_head(h: Hostile, headers: dict[str, str], extra: str) -> str:
    u = urlsplit(h.urls[0])
    lines = ["POST /v1/submit HTTP/1.1", f"Host: {u.netloc}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return "\r\n".join([*lines, extra] if extra else lines)


def expect_raw(r: RawResponse, status: int, code: str, detail: str = "") -> None:
    assert r.status == status, (r.status, r.body[:300])
    body = r.json()
    assert body["error"] == code, body
    assert detail.lower() in body["detail"].lower(), body


def valid_headers(h: Hostile, r: RoundOut, ident: Identity, payload: bytes) -> dict[str, str]:
    return signed_headers(ident, h.chain_id, r.height, r.model_hash, payload)


# ----------------------------------------------------------------------------- discovery


def test_openapi_lists_v1_and_metrics_is_prometheus(h: Hostile) -> None:
    r = h.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    paths_ = set(spec["paths"])
    for p in (
        "/v1/status",
        "/v1/round",
        "/v1/submit",
        "/v1/blocks/{height}",
        "/v1/accounts/{address}",
        "/v1/models/{model_hash}",
        "/v1/validators",
        "/v1/events",
        "/v1/peer/consensus",
        "/v1/peer/beacon",
        "/v1/peer/relay",
        "/v1/peer/payload/{payload_hash}",
    ):
        assert p in paths_, p
    assert all(p.startswith("/v1/") or p == "/metrics" for p in paths_), paths_
    submit_params = {p["name"] for p in spec["paths"]["/v1/submit"]["post"]["parameters"]}
    assert {HEADER_CHAIN, HEADER_PUBLIC_KEY, HEADER_SIGNATURE} <= submit_params
    m = h.get("/metrics")
    assert m.status_code == 200
    assert m.headers["content-type"].startswith("text/plain")
    assert "pot_validator_height" in m.text
    assert "# TYPE" in m.text


def test_unknown_paths_and_bad_parameters_are_json_4xx(h: Hostile) -> None:
    expect(h.get("/nope"), 404, "not-found")
    expect(h.get("/v1/nope"), 404, "not-found")
    expect(h.get("/v2/status"), 404, "not-found")
    expect(h.post("/v1/status", b"{}"), 405, "method-not-allowed")
    expect(h.get("/v1/blocks/0"), 400, "bad-request", "heights start at 1")
    expect(h.get("/v1/blocks/-3"), 400, "bad-request")
    expect(h.get("/v1/blocks/abc"), 400, "bad-request", "height")
    expect(h.get("/v1/blocks/1.5"), 400, "bad-request", "height")
    expect(h.get("/v1/blocks/999999"), 404, "not-found", "no block 999999")
    expect(h.get("/v1/accounts/nope"), 400, "bad-request", "pot1")
    good = h.miners[1].address
    bad_checksum = good[:-1] + ("0" if good[-1] != "0" else "1")
    expect(h.get(f"/v1/accounts/{bad_checksum}"), 400, "bad-request", "checksum")
    expect(h.get(f"/v1/accounts/{good.upper()}"), 400, "bad-request")
    expect(h.get(f"/v1/accounts/{h.stranger.address}"), 404, "not-found")
    expect(h.get("/v1/models/" + "0" * 64), 404, "not-found")
    expect(h.get("/v1/models/xyz"), 400, "bad-request", "model hash")
    expect(h.get("/v1/models/" + "A" * 64), 400, "bad-request", "lowercase hex")
    expect(h.get("/v1/peer/payload/xyz"), 400, "bad-request", "payload hash")
    expect(h.get("/v1/peer/payload/" + "0" * 64), 404, "not-found")
    expect(h.get("/v1/peer/payload/" + "0" * 64, params={"miner": "x"}), 400, "bad-request")
    expect(h.get("/v1/events/poll", params={"after": "x"}), 400, "bad-request", "after")
    expect(h.get("/v1/events/poll", params={"wait": "soon"}), 400, "bad-request", "wait")
    assert h.get("/v1/events/poll", params={"wait": "nan"}).status_code == 200
    assert h.get("/v1/events/poll", params={"after": str(10**30)}).status_code == 200
    still_serving(h)


def test_block_height_beyond_int64_is_a_4xx(h: Hostile) -> None:
    r = h.get("/v1/blocks/" + "9" * 30)
    assert r.status_code in (400, 404), (r.status_code, r.text[:200])


# ----------------------------------------------------------------------------- headers, bodies


def test_submit_headers_missing_or_malformed(h: Hostile) -> None:
    ident = h.miners[1]
    body = b"\0" * 64
    base = signed_headers(ident, h.chain_id, 1, BOGUS_MODEL, body)
    for name in (
        HEADER_CHAIN,
        HEADER_PUBLIC_KEY,
        HEADER_HEIGHT,
        HEADER_MODEL_HASH,
        HEADER_PAYLOAD_HASH,
        HEADER_SIGNATURE,
    ):
        hdrs = {k: v for k, v in base.items() if k != name}
        expect(submit(h, hdrs, body), 400, "bad-request", f"missing header {name}")
    bad: list[tuple[str, str, str]] = [
        (HEADER_PUBLIC_KEY, "zz" * 32, HEADER_PUBLIC_KEY),
        (HEADER_PUBLIC_KEY, base[HEADER_PUBLIC_KEY].upper(), HEADER_PUBLIC_KEY),
        (HEADER_PUBLIC_KEY, base[HEADER_PUBLIC_KEY][:-2], HEADER_PUBLIC_KEY),
        (HEADER_SIGNATURE, "00" * 63, HEADER_SIGNATURE),
        (HEADER_SIGNATURE, "not hex", HEADER_SIGNATURE),
        (HEADER_HEIGHT, "-1", HEADER_HEIGHT),
        (HEADER_HEIGHT, "1e3", HEADER_HEIGHT),
        (HEADER_HEIGHT, "1.0", HEADER_HEIGHT),
        (HEADER_HEIGHT, "9" * 40, HEADER_HEIGHT),
        (HEADER_HEIGHT, "", HEADER_HEIGHT),
        (HEADER_HEIGHT, "0x10", HEADER_HEIGHT),
        (HEADER_HEIGHT, "١٢", HEADER_HEIGHT),  # non-ASCII digits: not a height
        (HEADER_MODEL_HASH, "g" * 64, HEADER_MODEL_HASH),
        (HEADER_PAYLOAD_HASH, "0" * 63, HEADER_PAYLOAD_HASH),
    ]
    for name, value, what in bad:
        hdrs = {**base, name: value}
        raw = h.http.post(
            h.url("/v1/submit"),
            data=body,
            headers={k: v.encode("utf-8").decode("latin-1") for k, v in hdrs.items()},
            timeout=10,
        )
        expect(raw, 400, "bad-request", what)
    still_serving(h)


def test_oversize_body_refused_before_reading(h: Hostile) -> None:
    ident = h.miners[1]
    limit = INTAKE_LIMIT_FACTOR * max_payload_bytes(h.task, Compression("none"))
    hdrs = signed_headers(ident, h.chain_id, 1, BOGUS_MODEL, b"x")
    # a declared 1 GB body: refused from the headers, not one body byte sent
    t0 = time.monotonic()
    r = raw_http(h, submit_head(h, hdrs, f"Content-Length: {10**9}"))
    assert time.monotonic() - t0 < 5
    expect_raw(r, 413, "oversize", "limit")
    # chunked (no Content-Length) that streams past the limit: cut off while reading
    chunk = b"\0" * 65536
    count = limit // len(chunk) + 4
    r = raw_http(
        h,
        submit_head(h, hdrs, "Transfer-Encoding: chunked"),
        chunks=iter([chunk] * count),
    )
    expect_raw(r, 413, "oversize", "limit")
    # a Content-Length that understates the body: the declared bytes are the body (they do
    # not hash to the header: 422) and the rest is a broken next request (the HTTP layer's
    # 400, or a reset); never more than the declared bytes are read into the body
    r = raw_http(h, submit_head(h, hdrs, "Content-Length: 1"), b"x" * (2 * limit), allow_close=True)
    assert r.status in (0, 400, 422), (r.status, r.body[:200])
    if r.status == 422:
        expect_raw(r, 422, "malformed", HEADER_PAYLOAD_HASH)
    # a header line far beyond the HTTP layer's limit: its 400/431, or a reset
    r = raw_http(h, submit_head(h, {**hdrs, "X-Padding": "a" * (256 * 1024)}, ""), allow_close=True)
    assert r.status in (0, 400, 431), (r.status, r.body[:200])
    still_serving(h)
    # the same through requests (a generator body is sent chunked)
    with contextlib.suppress(requests.ConnectionError):
        rr = h.post("/v1/submit", iter([chunk] * count), headers=hdrs)
        expect(rr, 413, "oversize")
    # peer JSON endpoints have their own, smaller limit
    r = raw_http(
        h,
        "\r\n".join(
            [
                "POST /v1/peer/beacon HTTP/1.1",
                f"Host: {urlsplit(h.urls[0]).netloc}",
                "Connection: close",
                "Content-Type: application/json",
                f"Content-Length: {10 * 1024 * 1024}",
            ]
        ),
    )
    expect_raw(r, 413, "oversize")
    still_serving(h)


def test_truncated_and_lying_bodies(h: Hostile) -> None:
    ident = h.miners[1]
    body = b"\1" * 100
    hdrs = signed_headers(ident, h.chain_id, 1, BOGUS_MODEL, body)
    # declares 1000 bytes, sends 100, closes its write side: the server finds the body
    # truncated (400 truncated: test_read_body_truncated_oversize_and_bad_length) but uvicorn
    # closes a half-closed connection at once, so the answer may not arrive: a 400 or a close
    r = raw_http(
        h,
        submit_head(h, hdrs, "Content-Length: 1000"),
        body,
        shut_write=True,
        timeout=10,
        allow_close=True,
    )
    if r.status:
        expect_raw(r, 400, "truncated")
    still_serving(h)
    # the same against a peer endpoint
    r = raw_http(
        h,
        "\r\n".join(
            [
                "POST /v1/peer/relay HTTP/1.1",
                f"Host: {urlsplit(h.urls[0]).netloc}",
                "Content-Type: application/json",
                "Content-Length: 500",
            ]
        ),
        b'{"miner": "',
        shut_write=True,
        allow_close=True,
    )
    if r.status:
        expect_raw(r, 400, "truncated")
    still_serving(h)
    # a Content-Length that is not a number is refused by the HTTP layer itself (plain 400)
    r = raw_http(h, submit_head(h, hdrs, "Content-Length: abc"), body)
    assert r.status == 400, r
    r = raw_http(h, submit_head(h, hdrs, "Content-Length: -5"), body)
    assert r.status == 400, r
    # Content-Length and chunked at once (the request-smuggling shape): the HTTP layer reads
    # it as chunked (RFC 9112) or refuses it; either way a 4xx (here: not a gradient)
    r = raw_http(
        h,
        submit_head(h, hdrs, "Content-Length: 7\r\nTransfer-Encoding: chunked"),
        chunks=iter([body]),
    )
    assert 400 <= r.status < 500, r
    still_serving(h)


def _fake_request(content_length: str | None, messages: list[dict[str, Any]]) -> Request:
    """A Starlette request whose body arrives as ``messages`` (then the client is gone)."""
    pending = iter(messages)

    async def receive() -> dict[str, Any]:
        return next(pending, {"type": "http.disconnect"})

    headers = [] if content_length is None else [(b"content-length", content_length.encode())]
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    return Request(scope, receive)


def _read(content_length: str | None, messages: list[dict[str, Any]], limit: int) -> Problem:
    with pytest.raises(Problem) as err:
        asyncio.run(read_body(_fake_request(content_length, messages), limit))
    return err.value


def test_read_body_truncated_oversize_and_bad_length() -> None:
    """``read_body`` in process (a truncated body's 400 cannot reach a client that half-closed
    its connection: uvicorn drops the connection at EOF, see test_truncated_and_lying_bodies)."""
    part = {"type": "http.request", "body": b"x" * 100, "more_body": True}
    last = {"type": "http.request", "body": b"x" * 100, "more_body": False}
    p = _read("1000", [part], 10_000)  # then the client went away
    assert (p.code, p.status) == ("truncated", 400)
    p = _read("1000", [last], 10_000)  # the server's stream ended short of the declared length
    assert (p.code, p.status) == ("truncated", 400)
    assert "received 100 of the 1000" in p.detail
    p = _read("1000", [part, part], 10_000)
    assert p.code == "truncated"
    p = _read(str(10**12), [], 10_000)  # refused from the header, nothing read
    assert (p.code, p.status) == ("oversize", 413)
    p = _read(None, [part] * 200, 10_000)  # no Content-Length, more than the limit streamed
    assert (p.code, p.status) == ("oversize", 413)
    p = _read("50", [part, last], 10_000)  # more than declared
    assert p.status in (400, 413)
    for bad in ("abc", "-5", "1e3", " 5", ""):
        p = _read(bad, [last], 10_000)
        assert (p.code, p.status) == ("bad-request", 400), bad
    body = asyncio.run(read_body(_fake_request("100", [last]), 10_000))
    assert body == b"x" * 100


# ----------------------------------------------------------------------------- signatures


def test_bad_signature_and_payload_hash(h: Hostile) -> None:
    r = open_round(h)
    ident = h.miners[1]
    payload = payload_for(h, r, ident)
    hdrs = valid_headers(h, r, ident, payload)
    # a signature that is not the miner's
    forged = {**hdrs, HEADER_SIGNATURE: "11" * 64}
    expect(submit(h, forged, payload), 403, "bad-signature", "does not verify")
    # signed by someone else, presented with the miner's key
    other = signed_headers(h.miners[2], h.chain_id, r.height, r.model_hash, payload)
    stolen = {**hdrs, HEADER_SIGNATURE: other[HEADER_SIGNATURE]}
    expect(submit(h, stolen, payload), 403, "bad-signature")
    # a body that does not hash to the signed header
    expect(submit(h, hdrs, payload[:-1] + b"\7"), 422, "malformed", HEADER_PAYLOAD_HASH)
    expect(submit(h, hdrs, b""), 422, "malformed", HEADER_PAYLOAD_HASH)
    # the signed header fields tampered with after signing
    expect(submit(h, {**hdrs, HEADER_HEIGHT: str(r.height + 1)}, payload), 403, "bad-signature")
    expect(submit(h, {**hdrs, HEADER_MODEL_HASH: BOGUS_MODEL}, payload), 403, "bad-signature")
    still_serving(h)


def test_another_chains_commitment(h: Hostile) -> None:
    r = open_round(h)
    ident = h.miners[1]
    payload = payload_for(h, r, ident)
    theirs = signed_headers(ident, OTHER_CHAIN, r.height, r.model_hash, payload)
    expect(submit(h, theirs, payload), 409, "wrong-chain", h.chain_id)
    # signed for another chain, sent with our chain's header: the signature does not verify
    replayed = signed_headers(
        ident, h.chain_id, r.height, r.model_hash, payload, sign_chain=OTHER_CHAIN
    )
    expect(submit(h, replayed, payload), 403, "bad-signature")
    still_serving(h)


def test_wrong_height_and_wrong_model(h: Hostile) -> None:
    r = open_round(h)
    ident = h.miners[1]
    # a commitment for a round five ahead: refused by the round machine
    far = r.height + 5
    payload = payload_for(h, r, ident, height=far)
    hdrs = signed_headers(ident, h.chain_id, far, r.model_hash, payload)
    expect(submit(h, hdrs, payload), 409, "wrong-height", f"names height {far}")
    # a past round
    if r.height > 1:
        past = r.height - 1
        payload = payload_for(h, r, ident, height=past)
        hdrs = signed_headers(ident, h.chain_id, past, r.model_hash, payload)
        expect(submit(h, hdrs, payload), 409, "wrong-height")
    # a payload whose embedded height is not the signed one: the codec refuses it
    payload = payload_for(h, r, ident, height=r.height + 7)
    hdrs = valid_headers(h, r, ident, payload)
    expect(submit(h, hdrs, payload), 422, "malformed", "height")
    # the next round is legitimately queued (202); it names a model that will not be the next
    # round's, so when that round opens it is refused there and leaves nothing behind
    nxt = r.height + 1
    payload = payload_for(h, r, ident, height=nxt, model_hash=BOGUS_MODEL)
    hdrs = signed_headers(ident, h.chain_id, nxt, BOGUS_MODEL, payload)
    res = submit(h, hdrs, payload)
    assert res.status_code == 202, res.text
    assert res.json() == {
        "status": "queued",
        "miner": ident.address,
        "height": nxt,
        "payload_hash": hdrs[HEADER_PAYLOAD_HASH],
    }
    # another model, consistently signed and embedded: the round machine's wrong-model
    payload = payload_for(h, r, ident, model_hash=BOGUS_MODEL)
    hdrs = signed_headers(ident, h.chain_id, r.height, BOGUS_MODEL, payload)
    expect(submit(h, hdrs, payload), 409, "wrong-model", "another model")
    # the round's model signed, another model embedded in the payload: the codec's malformed
    payload = payload_for(h, r, ident, model_hash=BOGUS_MODEL)
    hdrs = valid_headers(h, r, ident, payload)
    expect(submit(h, hdrs, payload), 422, "malformed", "model hash")
    still_serving(h)


# ----------------------------------------------------------------------------- payloads


def _int8_tensors(payload: bytes) -> tuple[int, bytes]:
    (hlen,) = struct.unpack("<Q", payload[:8])
    return hlen, payload[8 + hlen :]


def test_malformed_safetensors_correctly_signed(h: Hostile) -> None:
    r = open_round(h)
    ident = h.miners[1]
    assert r.compression == "int8"
    good = payload_for(h, r, ident)
    header = GradientHeader(h.task.name, r.model_hash, r.height, Compression("int8"))
    n = h.task.num_params
    chunks = math.ceil(n / 256)

    def attempt(payload: bytes, status: int, code: str, detail: str = "") -> None:
        expect(submit(h, valid_headers(h, r, ident, payload), payload), status, code, detail)

    attempt(b"garbage, not safetensors at all", 422, "malformed")
    attempt(b"\0" * 3, 422, "malformed", "too short")
    attempt(struct.pack("<Q", 2**63) + b"{}", 422, "malformed", "header")
    attempt(struct.pack("<Q", 64) + b"{}", 422, "malformed", "past the end")
    attempt(struct.pack("<Q", 8) + b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8", 422, "malformed", "JSON")
    bomb = b"[" * 8000 + b"]" * 8000  # a JSON bomb inside the 16 KiB header allowance
    attempt(struct.pack("<Q", len(bomb)) + bomb, 422, "malformed", "JSON")
    attempt(struct.pack("<Q", 2) + b"[]", 422, "malformed", "object")
    # the right metadata, the wrong shapes
    wrong_shape = write_safetensors(
        {
            "int8.q": torch.zeros(n - 1, dtype=torch.int8),
            "int8.scale": torch.ones(chunks, dtype=torch.float32),
        },
        header.metadata(),
    )
    attempt(wrong_shape, 422, "malformed")
    # the wrong dtype
    wrong_dtype = write_safetensors(
        {
            "int8.q": torch.zeros(n, dtype=torch.uint8),
            "int8.scale": torch.ones(chunks, dtype=torch.float32),
        },
        header.metadata(),
    )
    attempt(wrong_dtype, 422, "malformed")
    # an extra tensor
    extra = write_safetensors(
        {
            "int8.q": torch.zeros(n, dtype=torch.int8),
            "int8.scale": torch.ones(chunks, dtype=torch.float32),
            "zz": torch.zeros(1),
        },
        header.metadata(),
    )
    attempt(extra, 422, "malformed")
    # NaN and Inf in the (last) scale: non-finite
    hlen, _ = _int8_tensors(good)
    assert len(good) == 8 + hlen + n + 4 * chunks
    attempt(good[:-4] + struct.pack("<f", float("nan")), 422, "non-finite", "NaN or Inf")
    attempt(good[:-4] + struct.pack("<f", float("inf")), 422, "non-finite")
    # huge finite scales that overflow when multiplied out
    huge = write_safetensors(
        {
            "int8.q": torch.full((n,), 127, dtype=torch.int8),
            "int8.scale": torch.full((chunks,), 3.0e38, dtype=torch.float32),
        },
        header.metadata(),
    )
    attempt(huge, 422, "non-finite", "overflow")
    # trailing junk after the last tensor
    attempt(good + b"\0" * 8, 422, "malformed")
    # another compression than the network's: topk is malformed; dense "none" is simply
    # larger than an int8 payload may be (413 oversize)
    attempt(payload_for(h, r, ident, compression=Compression("topk")), 422, "malformed", "topk")
    attempt(payload_for(h, r, ident, compression=Compression("none")), 413, "oversize")
    # another task's metadata
    other_task = GradientHeader("cifar10", r.model_hash, r.height, Compression("int8"))
    meta = write_safetensors(
        {
            "int8.q": torch.zeros(n, dtype=torch.int8),
            "int8.scale": torch.ones(chunks, dtype=torch.float32),
        },
        other_task.metadata(),
    )
    attempt(meta, 422, "malformed", "task")
    still_serving(h)


def test_unknown_miner(h: Hostile) -> None:
    r = open_round(h)
    ident = h.stranger  # a valid key, signature and payload; no account in the genesis
    payload = payload_for(h, r, ident)
    expect(
        submit(h, valid_headers(h, r, ident, payload), payload),
        403,
        "unknown-miner",
        "no account",
    )
    still_serving(h)


# ----------------------------------------------------------------------------- replays


def test_replays_of_an_honest_submission(h: Hostile) -> None:
    r = open_round(h, min_left_ms=6000)
    honest = h.miners[0]
    payload = payload_for(h, r, honest)
    hdrs = valid_headers(h, r, honest, payload)
    first = submit(h, hdrs, payload, 0)
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "kept"
    # a byte-identical replay changes nothing (the round machine ignores it): 409 already-kept
    again = submit(h, hdrs, payload, 0)
    expect(again, 409, "already-kept", "already kept")
    # a third party (no key) replays the same bytes and headers to the other validators:
    # harmless for the miner (its one commitment, signed by it); a validator that already
    # holds it (relayed by validator 0) says so
    for i in (1, 2, 3):
        rep = requests.post(h.url("/v1/submit", i), data=payload, headers=hdrs, timeout=20)
        h.seen.append(("POST", rep.url, rep.status_code))
        assert rep.status_code in (202, 409), rep.text
        status = rep.json().get("status") or rep.json().get("error")
        assert status in ("kept", "already-kept"), rep.text
    # a second, different commitment signed by the same miner: duplicate (the first is kept)
    other = payload_for(h, r, honest, scale=2.0)
    assert other != payload
    dup = submit(h, valid_headers(h, r, honest, other), other, 0)
    expect(dup, 409, "duplicate", "the first is kept")
    h.honest = (honest.address, r.height)
    still_serving(h)


# ----------------------------------------------------------------------------- peers


def _bomb(depth: int = JSON_BOMB_DEPTH) -> bytes:
    return b"[" * depth + b"]" * depth


def test_peer_consensus_junk_is_queued_or_refused(h: Hostile) -> None:
    before = h.client(0).status().height
    # the endpoint parses the message and checks its sender's signature (in a worker thread)
    # before anything is queued: junk is a 400, a forgery a 403, and neither takes an inbox
    # slot. 25 MiB is over the consensus parser's 24 MiB: 413 before reading
    cases: list[tuple[bytes, set[int]]] = [
        (b"", {400}),
        (b"{}", {400}),
        (b'{"type": "prepare"}', {400}),
        (b'{"type": "commit", "view": -1, "seq": 1e999}', {400}),
        (b"not json at all", {400}),
        (b"\xff\xfe\x00garbage", {400}),
        (_bomb(), {400}),
        (b'{"a": ' + _bomb(900) + b"}", {400}),
        (b'"' + b"A" * (5 * 1024 * 1024) + b'"', {400}),
        (b'{"type": "' + b"x" * (25 * 1024 * 1024) + b'"}', {413}),
        (b"[" + b"1," * 500_000 + b"1]", {400}),
        (b'{"type": "prepare", "view": ' + b"9" * 5000 + b"}", {400}),
    ]
    for body, allowed in cases:
        res = h.post("/v1/peer/consensus", body, headers={"Content-Type": "application/json"})
        assert res.status_code in allowed, (body[:40], res.status_code, res.text[:200])
        if res.status_code >= 400:
            assert {"error", "detail"} <= set(res.json())
        else:
            assert res.json() == {"status": "queued"}
    expect(
        h.post("/v1/peer/consensus", b"\xff\xfe\x00garbage"),
        400,
        "bad-request",
        "not a consensus message",
    )
    # a well-formed prepare signed by somebody who is not the validator it names: 403
    from pot_cli.consensus.messages import Prepare, sign

    forged = sign(h.stranger, h.chain_id, Prepare(0, 1, "0" * 64, 1))
    body = json.dumps(forged.to_dict()).encode()
    expect(h.post("/v1/peer/consensus", body), 403, "bad-signature", "genesis validator")
    for i in range(4):
        still_serving(h, i)
    # the network (whose core parsed all of that) still commits
    deadline = time.monotonic() + 60
    while h.client(0).status().height <= before:
        assert time.monotonic() < deadline, logs(h.net.layout)
        h.net.check_all_alive()
        time.sleep(0.25)


def test_peer_beacon_and_relay_bombs_and_wrong_types(h: Hostile) -> None:
    for path in ("/v1/peer/beacon", "/v1/peer/relay"):
        expect(h.post(path, _bomb()), 400, "bad-request", "not valid JSON")
        expect(h.post(path, b"{" * 50_000), 400, "bad-request", "not valid JSON")
        expect(h.post(path, b"[]"), 400, "bad-request", "JSON object")
        expect(h.post(path, b'"text"'), 400, "bad-request", "JSON object")
        expect(h.post(path, b"null"), 400, "bad-request", "JSON object")
        expect(h.post(path, b"\xff\xfe"), 400, "bad-request", "not valid JSON")
        expect(h.post(path, b""), 400, "bad-request", "not valid JSON")
        expect(h.post(path, b'{"x": ' + b"9" * 5000 + b"}"), 400, "bad-request")
        expect(h.post(path, b'"' + b"A" * (300 * 1024) + b'"'), 413, "oversize")
    # beacon: any object is queued; the core parses it strictly and drops junk
    for body in (
        b"{}",
        b'{"validator": "x", "height": [], "digest": {}}',
        b'{"a": ' + _bomb(900) + b"}",
        json.dumps(
            {
                "validator": 0,
                "height": 1,
                "digest": "00" * 32,
                "reveal": "zz",
                "signature": "00" * 64,
                "frozen": [["a", "b"]] * 15_000,  # ~180 kB: far more pairs than allowed
                "late": [],
            }
        ).encode(),
    ):
        res = h.post("/v1/peer/beacon", body)
        assert res.status_code == 202, res.text[:200]
        assert res.json() == {"status": "queued"}
    # relay: the fields are checked strictly at the door
    miner = h.miners[2]
    good: dict[str, Any] = {
        "miner": miner.address,
        "public_key": miner.public_key.hex(),
        "payload_hash": "cd" * 32,
        "signature": "ef" * 64,
        "height": 1,
        "model_hash": BOGUS_MODEL,
    }
    wrong: list[tuple[str, Any, str]] = [
        ("miner", "pot1nope", "miner"),
        ("miner", 7, "miner"),
        ("miner", None, "miner"),
        ("public_key", "ZZ" * 32, "public_key"),
        ("public_key", miner.public_key.hex().upper(), "public_key"),
        ("public_key", ["00"] * 32, "public_key"),
        ("payload_hash", "cd" * 31, "payload_hash"),
        ("signature", "ef" * 63, "signature"),
        ("signature", 12, "signature"),
        ("height", -1, "height"),
        ("height", "1e3", "height"),
        ("height", 1.5, "height"),
        ("height", True, "height"),
        ("height", 10**19, "height"),
        ("height", None, "height"),
        ("model_hash", "x", "model_hash"),
        ("model_hash", {"a": 1}, "model_hash"),
    ]
    for key, value, what in wrong:
        body = json.dumps({**good, key: value}).encode()
        expect(h.post("/v1/peer/relay", body), 400, "bad-request", what)
    missing = {k: v for k, v in good.items() if k != "signature"}
    expect(h.post("/v1/peer/relay", json.dumps(missing).encode()), 400, "bad-request")
    still_serving(h)


def test_forged_relay_is_queued_but_never_credited(h: Hostile) -> None:
    r = open_round(h, min_left_ms=3000)
    miner = h.miners[2]
    payload = payload_for(h, r, miner)
    ph = sign_commitment(miner, h.chain_id, r.height, r.model_hash, payload)[0]
    forged = {
        "miner": miner.address,
        "public_key": miner.public_key.hex(),
        "payload_hash": ph,
        "signature": "ab" * 64,  # not the miner's signature
        "height": r.height,
        "model_hash": r.model_hash,
    }
    for i in range(4):
        res = h.post("/v1/peer/relay", json.dumps(forged).encode(), i)
        assert res.status_code == 202 and res.json() == {"status": "queued"}, res.text
    # a relay naming the miner with somebody else's key, and the unknown stranger
    swapped = {**forged, "public_key": h.miners[1].public_key.hex()}
    stranger = {
        **forged,
        "miner": h.stranger.address,
        "public_key": h.stranger.public_key.hex(),
        "signature": sign_commitment(h.stranger, h.chain_id, r.height, r.model_hash, payload)[
            1
        ].hex(),
    }
    for body in (swapped, stranger):
        res = h.post("/v1/peer/relay", json.dumps(body).encode())
        assert res.status_code == 202, res.text
    # the payload endpoint never serves what was only claimed
    expect(h.get(f"/v1/peer/payload/{ph}"), 404, "not-found")
    still_serving(h)


# ----------------------------------------------------------------------------- the outcome


def test_replayed_honest_miner_is_accepted(h: Hostile) -> None:
    if h.honest is None:
        pytest.skip("needs test_replays_of_an_honest_submission")
    address, height = h.honest
    c = h.client(0)
    deadline = time.monotonic() + 90
    while c.status().height < height:
        assert time.monotonic() < deadline, logs(h.net.layout)
        h.net.check_all_alive()
        time.sleep(0.25)
    verdicts = {v.miner: v for v in c.block(height).verdicts}
    assert address in verdicts, verdicts
    v = verdicts[address]
    assert (v.kind, v.code) == ("accepted", None), v
    assert v.reward > 0 and v.penalty == 0, v
    assert set(verdicts) == {address}, verdicts  # no hostile submission made it into the block


IDLE_FLOOD = 200


def test_idle_connections_are_closed_and_do_not_lock_anyone_out(h: Hostile) -> None:
    """Connections that never send a request are closed after FIRST_REQUEST_S (uvicorn alone
    would keep them forever and a few hundred would fill its concurrency limit)."""
    from pot_cli.node.http_guard import FIRST_REQUEST_S

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * IDLE_FLOOD:
        pytest.skip(f"needs {4 * IDLE_FLOOD} file descriptors (RLIMIT_NOFILE is {soft})")
    victim = 3  # not the view-0 primary
    u = urlsplit(h.urls[victim])
    assert u.hostname is not None and u.port is not None
    probe = h.url("/v1/status?after-idle-flood=1", victim)
    socks: list[socket.socket] = []
    try:
        for k in range(IDLE_FLOOD):  # connect and say nothing (no request line, no headers)
            socks.append(socket.create_connection((u.hostname, u.port), timeout=5))
            if k % 20 == 0:
                time.sleep(0.02)
        r = h.http.get(probe, timeout=10)
        assert r.status_code == 200, (r.status_code, r.text[:100])
        time.sleep(FIRST_REQUEST_S + 1.5)
        closed = 0
        for sock in socks:
            sock.settimeout(2)
            try:
                closed += sock.recv(1) == b""
            except (ConnectionResetError, TimeoutError):
                closed += 0
        assert closed == IDLE_FLOOD, f"only {closed} of {IDLE_FLOOD} idle connections closed"
    finally:
        for sock in socks:
            sock.close()


def test_nothing_credited_network_alive_and_no_5xx(h: Hostile) -> None:
    h.net.check_all_alive()
    clients = [h.client(i) for i in range(4)]
    start = clients[0].status().height
    deadline = time.monotonic() + 60
    while min(c.status().height for c in clients) <= start:
        assert time.monotonic() < deadline, logs(h.net.layout)
        h.net.check_all_alive()
        time.sleep(0.25)
    top = min(c.status().height for c in clients)
    heads = {c.block(top).hash for c in clients}
    assert len(heads) == 1, heads
    c = clients[0]
    honest = h.honest[0] if h.honest else None
    for ident in h.miners:
        acc = c.account(ident.address)
        assert acc.stake == GENESIS_STAKE and not acc.ejected, acc
        if ident.address == honest:
            assert acc.balance > GENESIS_BALANCE, acc  # paid for its accepted gradient
        else:
            assert acc.balance == GENESIS_BALANCE, acc
            assert acc.recent == [], acc
    with pytest.raises(ApiError) as err:
        c.account(h.stranger.address)
    assert err.value.status == 404
    for height in range(1, top + 1):
        for v in c.block(height).verdicts:
            assert v.miner == honest and v.kind == "accepted", (height, v)
    h.net.check_all_alive()
    server_errors = [s for s in h.seen if s[2] >= 500]
    assert not server_errors, server_errors
    # no validator logged an unhandled exception
    for node in h.net.layout.validators:
        text = node.log_path.read_text(errors="replace")
        assert "Traceback (most recent call last)" not in text, tail(node.log_path, 60)
