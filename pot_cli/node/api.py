"""The validator's HTTP API (FastAPI): the public ``/v1`` endpoints, the peer endpoints and
``/metrics``. The OpenAPI document is at ``/openapi.json`` (interactive docs at ``/docs``).

Hostile input gets a 4xx and a reason, never a 5xx: bodies are size-checked before they are
read (``Content-Length``) and while they are read; headers, paths and JSON are parsed strictly;
a submission is checked (hash, signature, the payload's canonical safetensors form) before it
reaches the core, whose round machine then gives the protocol's own refusal codes. Every error
is ``{"error": code, "detail": reason}``. Work that takes CPU (decoding a payload) runs in a
worker thread, and the core runs in its own thread, so the API keeps answering while a round is
verified.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pot_cli.consensus.messages import MAX_MESSAGE_BYTES, MessageError, Signed, parse_wire
from pot_cli.crypto import address_from_public_key, is_valid_address, sha256_hex
from pot_cli.errors import EncodingError, PotError
from pot_cli.node.api_models import (
    HEADER_CHAIN,
    HEADER_HEIGHT,
    HEADER_MINER_KEY,
    HEADER_MODEL_HASH,
    HEADER_PAYLOAD_HASH,
    HEADER_PUBLIC_KEY,
    HEADER_SIGNATURE,
    SUBMIT_HEADERS,
    AccountEventOut,
    AccountOut,
    BlockOut,
    ErrorOut,
    EventOut,
    ModelOut,
    PeerOut,
    RoundOut,
    StatusOut,
    SubmitOut,
    ValidatorOut,
    VerdictOut,
)
from pot_cli.node.core import Beacon, Deliver, Submit
from pot_cli.protocol.app import parse_proposal
from pot_cli.protocol.block import block_hash
from pot_cli.protocol.commitments import verify_commitment
from pot_cli.training.codec import decode_gradient
from pot_cli.training.errors import CodecError

if TYPE_CHECKING:
    from pot_cli.node.validator import ValidatorNode

HEX64 = re.compile(r"[0-9a-f]{64}")
HEX128 = re.compile(r"[0-9a-f]{128}")
MAX_JSON_BYTES = 256 * 1024  # beacon and relay messages are a few hundred bytes
RECENT_BLOCKS = 32  # blocks an account's "recent" looks back over
SUBMIT_WAIT_S = 15.0
BODY_TIMEOUT_S = 30.0  # a body trickling in slower than this holds a connection: refused
INLINE_CHECK_BYTES = 64 * 1024  # consensus messages up to this size are checked on the loop
# the HTTP status of each refusal code of the round machine and the intake checks
REFUSAL_STATUS = {
    "bad-request": 400,
    "truncated": 400,
    "bad-signature": 403,
    "unknown-miner": 403,
    "not-staked": 403,
    "ejected": 403,
    "wrong-chain": 409,
    "wrong-height": 409,
    "wrong-model": 409,
    "duplicate": 409,
    "already-kept": 409,
    "late": 409,
    "round-full": 409,
    "oversize": 413,
    "malformed": 422,
    "non-finite": 422,
    "busy": 503,
}


class Problem(Exception):
    """An answer with an error code and a reason (4xx unless the node is overloaded)."""

    def __init__(self, code: str, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status or REFUSAL_STATUS.get(code, 400)


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": code, "detail": detail})


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorOut} for s in (400, 403, 404, 409, 413, 422, 503)
}


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused before reading when ``Content-Length`` exceeds ``limit`` and while
    reading when more arrives; a body shorter than its declared length is truncated."""
    declared = request.headers.get("content-length")
    expected: int | None = None
    if declared is not None:
        if not declared.isdigit():
            raise Problem("bad-request", "Content-Length is not a number")
        expected = int(declared)
        if expected > limit:
            raise Problem("oversize", f"the body is {expected} bytes; the limit is {limit}")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Problem("oversize", f"the body exceeds the {limit}-byte limit")
                chunks.append(chunk)
    except Problem:
        raise
    except TimeoutError:
        raise Problem("truncated", f"the body did not arrive within {BODY_TIMEOUT_S} s") from None
    except Exception:  # the client went away mid-body (h11 reports an incomplete body)
        raise Problem("truncated", "the body ended before its declared length") from None
    if expected is not None and size != expected:
        raise Problem("truncated", f"received {size} of the {expected} declared bytes")
    return b"".join(chunks)


def _json_body(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise Problem("bad-request", "the body is not valid JSON") from None


def _hex(value: object, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        size = 64 if pattern is HEX64 else 128
        raise Problem("bad-request", f"{what}: expected {size} lowercase hex characters")
    return value


def _height(value: object, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**18:
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 18:
        return int(value)
    raise Problem("bad-request", f"{what}: expected a non-negative integer")


def build_api(node: ValidatorNode) -> FastAPI:
    """The FastAPI application of ``node`` (its lifespan starts and stops the node)."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await node.start_async()
        try:
            yield
        finally:
            await node.stop_async()

    app = FastAPI(
        title="pot validator API",
        version="1",
        description="A pot validator: the round, submissions, blocks, accounts, events.",
        lifespan=lifespan,
    )
    genesis = node.genesis
    task = node.app.task
    compression = node.app.rules.compression

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return _error(exc.status, exc.code, exc.detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(400, "bad-request", f"{where}: {first.get('msg', 'invalid request')}")

    # ------------------------------------------------------------------ public

    def _enqueue(event: Any) -> None:
        """Into the core's bounded inbox, or 503 when it is full (a flood never grows memory)."""
        if not node.core.put(event):
            raise Problem("busy", "the validator's inbox is full; retry shortly", 503)

    def _core_up() -> None:
        if not node.core.alive:
            raise Problem("busy", "the validator's core is not running", 503)

    @app.get("/v1/status", response_model=StatusOut, tags=["public"])
    def status() -> StatusOut:
        v = node.core.view
        now = node.clock()
        peers = node.peer_states()
        return StatusOut(
            chain_id=genesis.chain_id,
            decimals=genesis.decimals,
            unit=genesis.unit,
            node=node.name,
            validator_index=node.index,
            height=v.height,
            head=v.head,
            model_hash=v.model_hash,
            view=v.view,
            primary=v.primary,
            is_primary=v.primary == node.index,
            phase=v.phase,
            round_height=v.round_height,
            deadline_ms=v.deadline_ms,
            deadline_in_ms=None if v.deadline_ms is None else v.deadline_ms - now,
            view_changes=v.view_changes,
            state_transfers=v.state_transfers,
            peers_up=sum(1 for p in peers if p.up),
            peers=peers,
            uptime_s=round(time.monotonic() - node.started, 3),
            now_ms=now,
        )

    @app.get("/v1/round", response_model=RoundOut, responses=ERRORS, tags=["public"])
    def current_round() -> RoundOut:
        _core_up()
        v = node.core.view
        if v.deadline_ms is None or not v.model_hash:
            raise Problem("busy", "the round is not open yet", 503)
        now = node.clock()
        return RoundOut(
            chain_id=genesis.chain_id,
            height=v.round_height,
            phase=v.phase,
            model_hash=v.model_hash,
            round_seed=v.round_seed,
            task=task.name,
            train_size=task.train_size,
            batch_size=task.batch_size,
            compression=compression.label(),
            deadline_ms=v.deadline_ms,
            deadline_in_ms=v.deadline_ms - now,
            round_ms=node.app.round_time,
            now_ms=now,
        )

    metric_cache: dict[str, float] = {}
    genesis_body = genesis.to_dict()

    @app.get("/v1/genesis", tags=["public"])
    def genesis_document() -> dict[str, Any]:
        """The network's genesis (as its file holds it): chain id, task, validators, economics,
        accounts. Dashboards take the spot-check rate and the initial model from it."""
        return genesis_body

    @app.get("/v1/model", response_model=ModelOut, responses=ERRORS, tags=["public"])
    async def current_model() -> ModelOut:
        _core_up()
        state = node.app.state  # immutable: replaced, never changed, on each block
        value = metric_cache.get(state.model_hash)
        if value is None:
            value = await asyncio.to_thread(task.evaluate, state.params)
            if len(metric_cache) > 64:
                metric_cache.clear()
            metric_cache[state.model_hash] = value
        return ModelOut(
            height=state.height,
            model_hash=state.model_hash,
            task=task.name,
            metric=task.metric_name,
            value=value,
            higher_is_better=task.higher_is_better,
        )

    @app.get(
        "/v1/models/{model_hash}",
        responses={200: {"content": {"application/octet-stream": {}}}, **ERRORS},
        tags=["public"],
    )
    def model(model_hash: str, request: Request) -> Response:
        _hex(model_hash, HEX64, "model hash")
        etag = f'"{model_hash}"'
        data = node.core.view.models.get(model_hash)
        if data is not None and request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        if data is None:
            raise Problem(
                "not-found", "this validator does not serve that model (old or unknown)", 404
            )
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"ETag": etag, "Cache-Control": "public, max-age=31536000, immutable"},
        )

    @app.post(
        "/v1/submit",
        response_model=SubmitOut,
        status_code=202,
        responses=ERRORS,
        tags=["public"],
        openapi_extra={
            "requestBody": {"content": {"application/octet-stream": {}}, "required": True},
            "parameters": [
                {"name": h, "in": "header", "required": True, "schema": {"type": "string"}}
                for h in SUBMIT_HEADERS
            ],
        },
    )
    async def submit(request: Request) -> SubmitOut:
        h = request.headers
        for name in SUBMIT_HEADERS:
            if name not in h:
                raise Problem("bad-request", f"missing header {name}")
        public_key = bytes.fromhex(_hex(h[HEADER_PUBLIC_KEY], HEX64, HEADER_PUBLIC_KEY))
        signature = bytes.fromhex(_hex(h[HEADER_SIGNATURE], HEX128, HEADER_SIGNATURE))
        height = _height(h[HEADER_HEIGHT], HEADER_HEIGHT)
        model_hash = _hex(h[HEADER_MODEL_HASH], HEX64, HEADER_MODEL_HASH)
        payload_hash = _hex(h[HEADER_PAYLOAD_HASH], HEX64, HEADER_PAYLOAD_HASH)
        if h[HEADER_CHAIN] != genesis.chain_id:
            raise Problem("wrong-chain", f"this is chain {genesis.chain_id!r}")
        payload = await read_body(request, node.app.max_payload)
        if sha256_hex(payload) != payload_hash:
            raise Problem("malformed", f"the body does not hash to {HEADER_PAYLOAD_HASH}")
        ok = verify_commitment(
            public_key, signature, genesis.chain_id, height, model_hash, payload_hash
        )
        if not ok:
            raise Problem("bad-signature", "the commitment's signature does not verify")
        miner = address_from_public_key(public_key)

        def decode() -> None:
            decode_gradient(
                task,
                payload,
                expected_model_hash=model_hash,
                expected_height=height,
                expected_compression=compression,
            )

        try:
            await asyncio.to_thread(decode)
        except CodecError as exc:
            code = exc.reason if exc.reason in ("oversize", "non-finite") else "malformed"
            raise Problem(code, f"payload: {exc.detail}") from None
        _core_up()
        reply: Future[tuple[str, str]] = Future()
        event = Submit(
            miner, public_key, payload_hash, signature, payload, height, model_hash, reply
        )
        _enqueue(event)
        try:
            code, reason = await asyncio.wait_for(asyncio.wrap_future(reply), SUBMIT_WAIT_S)
        except TimeoutError:
            raise Problem(
                "busy", "the validator did not take the submission in time", 503
            ) from None
        if code not in ("kept", "queued"):
            raise Problem(code, reason)
        return SubmitOut(status=code, miner=miner, height=height, payload_hash=payload_hash)

    @app.get("/v1/blocks/{height}", response_model=BlockOut, responses=ERRORS, tags=["public"])
    def block(height: int) -> BlockOut:
        if height < 1:
            raise Problem("bad-request", "heights start at 1")
        if height >= 10**18:
            raise Problem("bad-request", "heights are below 10^18")
        committed = node.store.block(height)
        if committed is None:
            raise Problem(
                "not-found", f"no block {height} here (head {node.core.view.height})", 404
            )
        return block_out(committed, node.store.round_times(height)[2])

    @app.get("/v1/accounts/{address}", response_model=AccountOut, responses=ERRORS, tags=["public"])
    def account(address: str) -> AccountOut:
        if not is_valid_address(address):
            raise Problem("bad-request", "not a pot1 address with a valid checksum")
        acc = node.core.view.accounts.get(address)
        if acc is None:
            raise Problem("not-found", "no account with that address", 404)
        return AccountOut(
            address=address,
            balance=acc.balance,
            stake=acc.stake,
            ejected=acc.ejected,
            verified=acc.verified,
            on_probation=acc.on_probation,
            recent=recent_events(node, address),
        )

    @app.get("/v1/validators", response_model=list[ValidatorOut], tags=["public"])
    def validators() -> list[ValidatorOut]:
        up = {p.index: p.up for p in node.peer_states()}
        return [
            ValidatorOut(
                index=i,
                name=v.name,
                public_key=v.public_key.hex(),
                address=address_from_public_key(v.public_key),
                url=node.urls[i] if i < len(node.urls) else None,
                up=True if i == node.index else up.get(i),
            )
            for i, v in enumerate(genesis.validators)
        ]

    @app.get("/v1/events/poll", response_model=list[EventOut], tags=["public"])
    async def events_poll(after: int = 0, wait: float = 0.0) -> list[EventOut]:
        deadline = time.monotonic() + max(0.0, min(wait, 30.0))
        while True:
            got = node.events.since(after)
            if got or time.monotonic() >= deadline:
                return [EventOut.model_validate(e) for e in got]
            await asyncio.sleep(0.1)

    @app.get(
        "/v1/events",
        responses={200: {"content": {"text/event-stream": {}}}},
        tags=["public"],
    )
    async def events(request: Request, after: int | None = None) -> StreamingResponse:
        last = request.headers.get("last-event-id", "")
        start = after if after is not None else int(last) if last.isdigit() else 0

        async def stream() -> AsyncIterator[str]:
            cursor, idle = start, 0.0
            yield "retry: 1000\n\n"
            while not node.stopping and not await request.is_disconnected():
                got = node.events.since(cursor)
                for e in got:
                    cursor = e["id"]
                    yield f"id: {e['id']}\nevent: {e['kind']}\ndata: {json.dumps(e)}\n\n"
                if got:
                    idle = 0.0
                    continue
                await asyncio.sleep(0.2)
                idle += 0.2
                if idle >= 15:
                    idle = 0.0
                    yield ": keep-alive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/metrics", tags=["public"])
    def metrics() -> Response:
        return Response(node.metrics.exposition(), media_type="text/plain; version=0.0.4")

    # ------------------------------------------------------------------ peers

    @app.post("/v1/peer/consensus", status_code=202, responses=ERRORS, tags=["peer"])
    async def peer_consensus(request: Request) -> dict[str, str]:
        data = await read_body(request, min(node.max_message_bytes, MAX_MESSAGE_BYTES))

        def check() -> Any:
            """Parse, and check the sender's signature, off the core thread: junk and forged
            messages never take an inbox slot (a flood cannot crowd out the validators)."""
            try:
                msg = parse_wire(data)
            except (MessageError, EncodingError, UnicodeDecodeError) as exc:
                raise Problem("bad-request", f"not a consensus message: {exc}") from None
            if isinstance(msg, Signed) and not node.verifier.check(msg):
                raise Problem("bad-signature", "not signed by the genesis validator it names", 403)
            return msg

        # a vote or a pre-prepare is checked in ~0.2 ms: here, on the loop (a thread hop costs
        # more, measured ~3 ms on a busy machine); a large one (a state reply, a new view with
        # its certificates) in a worker
        small = len(data) <= INLINE_CHECK_BYTES
        message = check() if small else await asyncio.to_thread(check)
        _enqueue(Deliver(message))
        return {"status": "queued"}

    @app.post("/v1/peer/beacon", status_code=202, responses=ERRORS, tags=["peer"])
    async def peer_beacon(request: Request) -> dict[str, str]:
        message = _json_body(await read_body(request, MAX_JSON_BYTES))
        if not isinstance(message, dict):
            raise Problem("bad-request", "a beacon message is a JSON object")
        _enqueue(Beacon(message))
        return {"status": "queued"}

    @app.post("/v1/peer/relay", status_code=202, responses=ERRORS, tags=["peer"])
    async def peer_relay(request: Request) -> dict[str, str]:
        body = _json_body(await read_body(request, MAX_JSON_BYTES))
        if not isinstance(body, dict):
            raise Problem("bad-request", "a relayed commitment is a JSON object")
        miner = body.get("miner")
        if not is_valid_address(miner):
            raise Problem("bad-request", "miner: expected a pot1 address")
        assert isinstance(miner, str)
        event = Submit(
            miner,
            bytes.fromhex(_hex(body.get("public_key"), HEX64, "public_key")),
            _hex(body.get("payload_hash"), HEX64, "payload_hash"),
            bytes.fromhex(_hex(body.get("signature"), HEX128, "signature")),
            None,
            _height(body.get("height"), "height"),
            _hex(body.get("model_hash"), HEX64, "model_hash"),
        )
        _enqueue(event)
        return {"status": "queued"}

    @app.get(
        "/v1/peer/payload/{payload_hash}",
        responses={200: {"content": {"application/octet-stream": {}}}, **ERRORS},
        tags=["peer"],
    )
    def peer_payload(payload_hash: str, miner: str = "") -> Response:
        _hex(payload_hash, HEX64, "payload hash")
        if miner and not is_valid_address(miner):
            raise Problem("bad-request", "miner: expected a pot1 address or nothing")
        data = node.app.payload(payload_hash)
        key = node.app.miner_key(miner) if miner else None
        headers = {HEADER_MINER_KEY: key.hex()} if key else {}
        if data is None:
            if key:
                return Response(status_code=204, headers=headers)
            raise Problem("not-found", "no such payload here", 404)
        return Response(data, media_type="application/octet-stream", headers=headers)

    return app


def block_out(committed: Any, committed_ms: int | None) -> BlockOut:
    """A stored committed block with its verdicts and amounts side by side."""
    verdicts: list[VerdictOut] = []
    digest = committed.digest
    if committed.proposal is not None:
        try:
            b = parse_proposal(committed.proposal).block
        except PotError:
            b = None
        if b is not None:
            digest = block_hash(b)
            rewards = dict(b.rewards)
            penalties = {a: x for a, x, _ in b.penalties}
            verdicts = [
                VerdictOut(
                    miner=s.miner,
                    kind=s.verdict.kind,
                    code=s.verdict.code,
                    samples=s.samples,
                    reward=rewards.get(s.miner, 0),
                    penalty=penalties.get(s.miner, 0),
                )
                for s in b.submissions
            ]
    body = committed.to_dict()
    return BlockOut(
        height=committed.seq,
        hash=digest,
        proposal=body["proposal"],
        certificate={"view": body["view"], "digest": body["digest"], "commits": body["commits"]},
        verdicts=verdicts,
        committed_ms=committed_ms,
    )


def recent_events(node: ValidatorNode, address: str) -> list[AccountEventOut]:
    """The address's rewards, fees and penalties in the last :data:`RECENT_BLOCKS` blocks."""
    out: list[AccountEventOut] = []
    top = node.store.top()
    for h in range(max(1, top - RECENT_BLOCKS + 1), top + 1):
        committed = node.store.block(h)
        if committed is None or committed.proposal is None:
            continue
        try:
            b = parse_proposal(committed.proposal).block
        except PotError:
            continue
        for s in b.submissions:
            if s.miner == address:
                amount = dict(b.rewards).get(address, 0)
                if s.verdict.kind != "accepted":
                    amount = -next((x for a, x, _ in b.penalties if a == address), 0)
                out.append(AccountEventOut(height=h, kind=s.verdict.kind, code=s.verdict.code,
                                           amount=amount))  # fmt: skip
        fee = dict(b.validator_fees).get(address)
        if fee:
            out.append(AccountEventOut(height=h, kind="fee", code=None, amount=fee))
    return out


__all__ = ["PeerOut", "Problem", "build_api", "read_body"]
