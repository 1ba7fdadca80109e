"""Filling the gaps a state transfer leaves in a validator's chain store.

PBFT state transfer moves the *state* (ledger, model, optimizer) certified by a stable
checkpoint, not the blocks in between; a validator that caught up that way would otherwise
serve a chain with holes. This task asks peers for every missing height (``GET
/v1/blocks/{h}``), keeps a block only when its commit certificate verifies (2f+1 genesis
validators' signed commits, checked offline) and its proposal parses, then fetches the payloads
of its accepted submissions by hash (``/v1/peer/payload``) so that ``pot chain verify`` can
re-derive the whole chain on every validator. Bounded: a few heights per pass, one pass every
couple of seconds, and nothing is trusted that does not verify.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import httpx

from pot_cli.consensus.certificates import verify_block
from pot_cli.consensus.messages import MessageError, parse_committed_block
from pot_cli.crypto import sha256_hex
from pot_cli.errors import PotError
from pot_cli.node.chainstore import ChainStore
from pot_cli.protocol.app import parse_proposal
from pot_cli.protocol.genesis import Genesis

log = logging.getLogger("pot.backfill")

PASS_EVERY_S = 2.0
HEIGHTS_PER_PASS = 32
MAX_BLOCK_BYTES = 16 * 1024 * 1024


class Backfill:
    def __init__(
        self,
        store: ChainStore,
        genesis: Genesis,
        peers: Sequence[str],
        *,
        height: object,
        timeout: float = 10.0,
        max_payload_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.store = store
        self.genesis = genesis
        self.keys = tuple(v.public_key for v in genesis.validators)
        self.peers = [p.rstrip("/") for p in peers]
        self.height = height  # a callable returning the committed height
        self.timeout = timeout
        self.max_payload_bytes = max_payload_bytes
        self.filled = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def missing(self) -> list[int]:
        top = int(self.height())  # type: ignore[operator]
        have = set(self.store.heights())
        return [h for h in range(1, top + 1) if h not in have][:HEIGHTS_PER_PASS]

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            while True:
                await asyncio.sleep(PASS_EVERY_S)
                try:
                    for h in await asyncio.to_thread(self.missing):
                        await self._fill(client, h)
                except PotError as exc:
                    log.warning("backfill: %s", exc)

    async def _fill(self, client: httpx.AsyncClient, height: int) -> None:
        for peer in self.peers:
            try:
                r = await client.get(f"{peer}/v1/blocks/{height}")
            except httpx.HTTPError:
                continue
            if r.status_code != 200 or len(r.content) > MAX_BLOCK_BYTES:
                continue
            try:
                body = r.json()
                wire = {
                    "seq": body["height"],
                    "view": body["certificate"]["view"],
                    "digest": body["certificate"]["digest"],
                    "proposal": body["proposal"],
                    "commits": body["certificate"]["commits"],
                }
                block = parse_committed_block(wire)
            except (ValueError, KeyError, TypeError, MessageError):
                continue
            if block.seq != height or not verify_block(block, self.genesis.chain_id, self.keys):
                continue
            await self._payloads(client, block.proposal)
            await asyncio.to_thread(self.store.put_block, block)
            self.filled += 1
            return

    async def _payloads(self, client: httpx.AsyncClient, proposal: object) -> None:
        if proposal is None:
            return
        try:
            b = parse_proposal(proposal).block
        except PotError:
            return
        table = self.store.payloads
        for s in b.submissions:
            if s.verdict.kind != "accepted" or s.payload_hash in table:
                continue
            for peer in self.peers:
                try:
                    r = await client.get(f"{peer}/v1/peer/payload/{s.payload_hash}")
                except httpx.HTTPError:
                    continue
                data = r.content
                ok = r.status_code == 200 and len(data) <= self.max_payload_bytes
                if ok and sha256_hex(data) == s.payload_hash:
                    table[s.payload_hash] = data
                    break
