"""Validator-to-validator transport: httpx on the API's event loop, one bounded queue per peer.

The core thread hands messages over with :meth:`PeerTransport.send` and friends (thread-safe,
never blocking: ``call_soon_threadsafe``); one task per peer POSTs them in order. A full queue
drops its oldest message (PBFT retransmits what matters: view changes, state requests, and the
core asks again for payloads it still lacks), so a slow or dead peer costs bounded memory and
never stalls the others. Payload fetches ask the peers one after another (a random order per
fetch) and hand the first answer that is there to the core, which checks it against its hash.

Nothing here is trusted by the receiver: PBFT and beacon messages are signed by validators,
relayed commitments by miners, and payloads are named by their hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from pot_cli.node.api_models import HEADER_MINER_KEY
from pot_cli.node.metrics import ValidatorMetrics

log = logging.getLogger("pot.transport")

PEER_QUEUE = 1024
DOWN_BACKOFF_S = 0.25
IN_FLIGHT = 4  # requests open at once to one peer


@dataclass
class PeerState:
    index: int
    url: str
    up: bool = False
    last_seen_ms: int | None = None


class PeerTransport:
    def __init__(
        self,
        peers: Mapping[int, str],
        *,
        on_provide: Callable[[str, bytes, bytes | None], None],
        metrics: ValidatorMetrics,
        clock: Callable[[], int],
        timeout: float = 10.0,
        max_fetch_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.peers = {i: PeerState(i, u.rstrip("/")) for i, u in peers.items()}
        self.on_provide = on_provide
        self.metrics = metrics
        self.clock = clock
        self.timeout = timeout
        self.max_fetch_bytes = max_fetch_bytes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._queues: dict[int, asyncio.Queue[tuple[str, bytes]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._fetching: set[str] = set()
        self._sending: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle (loop)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout, connect=min(2.0, self.timeout)),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )
        for i in self.peers:
            q: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=PEER_QUEUE)
            self._queues[i] = q
            self._tasks.append(asyncio.create_task(self._pump(i, q)))

    async def close(self) -> None:
        for t in [*self._tasks, *self._sending]:
            t.cancel()
        for t in [*self._tasks, *self._sending]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ------------------------------------------------------------------ from the core thread

    def _post(self, to: int | None, path: str, body: bytes) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        targets = list(self.peers) if to is None else [to]
        for i in targets:
            if i in self.peers:
                loop.call_soon_threadsafe(self._enqueue, i, path, body)

    def send(self, to: int | None, text: str) -> None:
        self._post(to, "/v1/peer/consensus", text.encode())

    def broadcast_beacon(self, message: dict[str, Any]) -> None:
        self._post(None, "/v1/peer/beacon", json.dumps(message).encode())

    def relay(self, relay: dict[str, Any]) -> None:
        self._post(None, "/v1/peer/relay", json.dumps(relay).encode())

    def fetch(self, miner: str, payload_hash: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._start_fetch, miner, payload_hash)

    # ------------------------------------------------------------------ on the loop

    def _enqueue(self, i: int, path: str, body: bytes) -> None:
        q = self._queues.get(i)
        if q is None:
            return
        if q.full():
            q.get_nowait()  # the oldest goes: PBFT retransmits what matters
            self.metrics.dropped.labels(f"peer-{i}").inc()
        q.put_nowait((path, body))

    def _mark(self, peer: PeerState, up: bool) -> None:
        peer.up = up
        if up:
            peer.last_seen_ms = self.clock()
        self.metrics.peers_up.set(sum(1 for p in self.peers.values() if p.up))

    async def _pump(self, i: int, q: asyncio.Queue[tuple[str, bytes]]) -> None:
        """Take the peer's messages in order and keep up to :data:`IN_FLIGHT` requests open
        at once (a message does not wait for the answer to the one before: PBFT orders by
        view and sequence number, not by arrival)."""
        peer = self.peers[i]
        slots = asyncio.Semaphore(IN_FLIGHT)
        while True:
            path, body = await q.get()
            await slots.acquire()
            if not peer.up and peer.last_seen_ms is not None:
                await asyncio.sleep(DOWN_BACKOFF_S)  # a peer that stopped answering
            task = asyncio.create_task(self._send_one(peer, path, body))
            self._sending.add(task)

            def done(t: asyncio.Task[None], slots: asyncio.Semaphore = slots) -> None:
                slots.release()
                self._sending.discard(t)

            task.add_done_callback(done)

    async def _send_one(self, peer: PeerState, path: str, body: bytes) -> None:
        assert self._client is not None
        try:
            r = await self._client.post(
                peer.url + path, content=body, headers={"Content-Type": "application/json"}
            )
            self._mark(peer, True)
            if r.status_code >= 400:
                self.metrics.peer_failed.inc()
            else:
                self.metrics.peer_sent.inc()
        except httpx.HTTPError:
            self._mark(peer, False)
            self.metrics.peer_failed.inc()

    def _start_fetch(self, miner: str, payload_hash: str) -> None:
        if payload_hash in self._fetching:
            return
        self._fetching.add(payload_hash)
        task = asyncio.create_task(self._fetch(miner, payload_hash))
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _fetch(self, miner: str, payload_hash: str) -> None:
        try:
            order = list(self.peers.values())
            random.shuffle(order)
            for peer in order:
                got = await self._fetch_from(peer, miner, payload_hash)
                if got is not None:
                    key, data = got
                    self.on_provide(miner, key, data)
                    if data is not None:
                        return
        finally:
            self._fetching.discard(payload_hash)

    async def _fetch_from(
        self, peer: PeerState, miner: str, payload_hash: str
    ) -> tuple[bytes, bytes | None] | None:
        assert self._client is not None
        url = f"{peer.url}/v1/peer/payload/{payload_hash}"
        try:
            async with self._client.stream("GET", url, params={"miner": miner}) as r:
                self._mark(peer, True)
                if r.status_code not in (200, 204):
                    return None
                try:
                    key = bytes.fromhex(r.headers.get(HEADER_MINER_KEY, ""))
                except ValueError:
                    key = b""
                if r.status_code == 204:
                    return (key, None) if key else None
                chunks, size = [], 0
                async for chunk in r.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_fetch_bytes:
                        return None
                    chunks.append(chunk)
                return key, b"".join(chunks)
        except httpx.HTTPError:
            self._mark(peer, False)
            return None
