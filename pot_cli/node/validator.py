"""``pot validate``: one validator as a process — storage, core thread, peer transport, API.

A validator's home holds its key (``node_key.pem``), its config, its genesis and
``chain/chain.sqlite`` (genesis, committed blocks with certificates, payloads and model blobs
by hash, round timings) and ``chain/wal.sqlite`` (the replica's write-ahead log). Both are
fsynced before anything a step produced is sent, so a restart (or a ``kill -9``) recovers by
replaying the log; a validator whose data is gone or far behind catches up by PBFT state
transfer (the snapshot's tensors fetched from peers as hash-checked blobs).

The process runs uvicorn on the API's asyncio loop (FastAPI, the peer transport's httpx
client) and the core in its own thread (:mod:`pot_cli.node.core`); re-derivations run in a
worker thread with one torch thread (the determinism the verification policy assumes).
SIGINT/SIGTERM stop it cleanly: the server stops taking requests, the core finishes its step.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pot_cli.config import PotConfig
from pot_cli.consensus.config import ReplicaConfig
from pot_cli.consensus.signatures import Verifier
from pot_cli.consensus.wal import SqliteWal
from pot_cli.crypto import Identity
from pot_cli.errors import ConfigError, PotError
from pot_cli.node.api_models import PeerOut
from pot_cli.node.backfill import Backfill
from pot_cli.node.chainstore import ChainStore
from pot_cli.node.core import Provide, ValidatorCore, now_ms
from pot_cli.node.events import EventLog
from pot_cli.node.metrics import ValidatorMetrics
from pot_cli.node.transport import PeerTransport
from pot_cli.protocol.app import PotApp
from pot_cli.protocol.genesis import BPS, Genesis, load_genesis
from pot_cli.training.gradients import Numerics
from pot_cli.training.verification import VerificationPolicy

log = logging.getLogger("pot.validator")

WATERMARK_CHECKPOINTS = 2  # the watermark window, in checkpoint intervals


@dataclass(frozen=True)
class ValidatorPlan:
    """Everything a validator needs, resolved and checked before anything starts."""

    name: str
    home: Path
    identity: Identity
    genesis: Genesis
    index: int
    urls: tuple[str, ...]
    host: str
    port: int
    round_ms: int
    view_change_ms: int
    checkpoint_interval: int
    max_message_bytes: int
    request_timeout: float


def plan_validator(
    home: Path, config_path: Path, cfg: PotConfig, identity: Identity
) -> ValidatorPlan:
    """Resolve the genesis, this validator's index and its peers; every problem is a
    :class:`ConfigError` naming the file and key."""
    where = str(config_path)
    gpath = Path(cfg.validator.genesis)
    if not gpath.is_absolute():
        gpath = home / gpath
    genesis = load_genesis(gpath)
    if genesis.chain_id != cfg.node.chain_id:
        raise ConfigError(
            f"{where}: [node] chain_id: {cfg.node.chain_id!r} is not the genesis' "
            f"{genesis.chain_id!r} ({gpath})"
        )
    keys = [v.public_key for v in genesis.validators]
    if identity.public_key not in keys:
        raise ConfigError(
            f"{gpath}: this node's key ({identity.address}) is not one of the genesis validators"
        )
    index = keys.index(identity.public_key)
    urls = tuple(u.rstrip("/") for u in cfg.network.validators)
    if len(urls) != len(keys):
        raise ConfigError(
            f"{where}: [network] validators: a validator needs every genesis validator's "
            f"endpoint in genesis order ({len(keys)}), got {len(urls)}"
        )
    host, _, port = cfg.network.listen.rpartition(":")
    return ValidatorPlan(
        name=cfg.node.name,
        home=home,
        identity=identity,
        genesis=genesis,
        index=index,
        urls=urls,
        host=host.strip("[]"),
        port=int(port),
        round_ms=max(50, round(cfg.validator.round_seconds * 1000)),
        view_change_ms=max(50, round(cfg.validator.view_change_timeout_seconds * 1000)),
        checkpoint_interval=cfg.validator.checkpoint_interval,
        max_message_bytes=cfg.network.max_message_bytes,
        request_timeout=cfg.network.request_timeout_seconds,
    )


class ValidatorNode:
    """One validator: opens its stores and builds the core; :mod:`pot_cli.node.api` serves it
    and its lifespan calls :meth:`start_async` / :meth:`stop_async`."""

    def __init__(self, plan: ValidatorPlan) -> None:
        self.plan = plan
        self.name = plan.name
        self.genesis = plan.genesis
        self.index = plan.index
        self.urls = plan.urls
        self.max_message_bytes = plan.max_message_bytes
        self.clock = now_ms
        self.started = time.monotonic()
        self.stopping = False
        data = plan.home / "chain"
        data.mkdir(parents=True, exist_ok=True)
        self.store = ChainStore(data / "chain.sqlite")
        self.store.put_genesis(plan.genesis)
        g = plan.genesis
        round_ms = plan.round_ms
        self.app = PotApp(
            g,
            identity=plan.identity,
            round_time=round_ms,
            censor_grace=round_ms // 4,
            fetch_grace=round_ms // 3,
            policy=VerificationPolicy(
                spot_check_rate=g.spot_check_bps / BPS, numerics=Numerics(threads=1)
            ),
            sync_derivation=False,
            payload_store=self.store.payloads,
        )
        k = plan.checkpoint_interval
        self.replica_config = ReplicaConfig(
            chain_id=g.chain_id,
            public_keys=tuple(v.public_key for v in g.validators),
            checkpoint_interval=k,
            watermark_window=WATERMARK_CHECKPOINTS * k,
            view_change_timeout=plan.view_change_ms,
            resend_interval=max(250, plan.view_change_ms // 4),
            max_in_flight=1,
        )
        # one signature cache for the API threads (which check peers' messages before they
        # are queued) and the replica (which checks them again: a cache hit)
        self.verifier = Verifier(g.chain_id, self.replica_config.public_keys)
        self.metrics = ValidatorMetrics()
        self.events = EventLog()
        peers = {i: u for i, u in enumerate(plan.urls) if i != plan.index}
        self.transport = PeerTransport(
            peers,
            on_provide=self._provide,
            metrics=self.metrics,
            clock=self.clock,
            timeout=plan.request_timeout,
            max_fetch_bytes=plan.max_message_bytes,
        )
        self.backfill: Backfill = Backfill(
            self.store,
            g,
            [u for i, u in enumerate(plan.urls) if i != plan.index],
            height=lambda: self.core.view.height,
            timeout=plan.request_timeout,
            max_payload_bytes=plan.max_message_bytes,
        )
        wal_path = data / "wal.sqlite"
        self.core: ValidatorCore = ValidatorCore(
            config=self.replica_config,
            index=plan.index,
            identity=plan.identity,
            app=self.app,
            wal=lambda: SqliteWal(wal_path, g.chain_id, plan.index, plan.identity.public_key),
            store=self.store,
            transport=self.transport,
            events=self.events,
            metrics=self.metrics,
            clock=self.clock,
            verifier=self.verifier,
        )

    def _provide(self, miner: str, key: bytes, data: bytes | None) -> None:
        self.core.put(Provide(miner, key, data))

    def peer_states(self) -> list[PeerOut]:
        return [
            PeerOut(
                index=p.index,
                name=self.genesis.validators[p.index].name,
                url=p.url,
                up=p.up,
                last_seen_ms=p.last_seen_ms,
            )
            for p in sorted(self.transport.peers.values(), key=lambda p: p.index)
        ]

    async def start_async(self) -> None:
        torch.set_num_threads(1)  # the verification numerics: one thread, as the policy says
        # the API loop and the core hand messages to each other: a short GIL switch interval
        # keeps a busy thread from holding the other's message for the default 5 ms
        sys.setswitchinterval(0.0005)
        await self.transport.start()
        try:
            self.core.start()
        except PotError:
            await self.transport.close()
            raise
        self.backfill.start()
        log.info(
            "validator %d (%s) of %s: height %d, listening on %s:%d",
            self.index,
            self.name,
            self.genesis.chain_id,
            self.core.view.height,
            self.plan.host,
            self.plan.port,
        )

    async def stop_async(self) -> None:
        self.stopping = True
        await self.backfill.stop()
        self.core.stop()
        await self.transport.close()
        self.store.close()


def serve_validator(plan: ValidatorPlan) -> None:
    """Run the validator until SIGINT/SIGTERM (blocks)."""
    import uvicorn

    from pot_cli.node.api import build_api
    from pot_cli.node.http_guard import GuardedH11Protocol

    node = ValidatorNode(plan)
    config = uvicorn.Config(
        build_api(node),
        host=plan.host,
        port=plan.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
        limit_concurrency=2048,
        http=GuardedH11Protocol,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise PotError(
            f"validator {plan.index}: could not start on {plan.host}:{plan.port} "
            "(port in use, or the node failed to open its data; see the lines above)"
        )
