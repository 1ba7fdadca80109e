"""The host contract of a PoT validator, in one place: what a host does with the application's
actions and when it resumes the replica.

Both hosts use these functions: the networked validator (:mod:`pot_cli.node.core`, real
peers over HTTP) and the simulator (``pot sim network``, peers on a seeded virtual network).
They differ only in how a :class:`Peers` reaches the others and when time moves; the order
of calls into :class:`~pot_cli.protocol.app.PotApp` and
:class:`~pot_cli.consensus.host.ReplicaHost` is this module's.

No IO here: the peers are the caller's, and so is the clock (``now``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from pot_cli.consensus.config import ReplicaConfig
from pot_cli.consensus.host import ReplicaHost
from pot_cli.protocol.app import DerivationJob, PotApp
from pot_cli.protocol.beacon import BeaconMessage
from pot_cli.protocol.round import Action, BroadcastBeacon, FetchPayload, RelaySubmission

MAX_PASSES = 8  # each pass consumes what the previous one produced


class Peers(Protocol):
    """How a host reaches the other validators (never blocking)."""

    def fetch(self, miner: str, payload_hash: str) -> None:
        """Ask for a payload (or snapshot blob) and the miner's key; the answer is handed to
        ``PotApp.provide`` later."""

    def relay(self, relay: RelaySubmission) -> None:
        """A kept commitment, to every other validator."""

    def broadcast_beacon(self, message: BeaconMessage) -> None:
        """A beacon announcement or reveal, to every other validator."""


def route_actions(actions: Iterable[Action], peers: Peers) -> None:
    """Send what the application asked for (refusals are the caller's to answer)."""
    for a in actions:
        if isinstance(a, FetchPayload):
            peers.fetch(a.miner, a.payload_hash)
        elif isinstance(a, RelaySubmission):
            peers.relay(a)
        elif isinstance(a, BroadcastBeacon):
            peers.broadcast_beacon(a.message)


def settle(
    app: PotApp,
    host: ReplicaHost,
    now: int,
    peers: Peers,
    derive: Callable[[DerivationJob], None] | None = None,
) -> None:
    """After any input: route the round's actions, fetch what a pending proposal lacks, hand
    out derivations (``sync_derivation=False``), and resume the replica while the application
    says a resume is due."""
    for _ in range(MAX_PASSES):
        route_actions(app.take_actions(), peers)
        for miner, payload_hash in app.missing():
            peers.fetch(miner, payload_hash)
        if derive is not None:
            for job in app.pending_derivations():
                derive(job)
        if not app.take_resume():
            break
        host.resume(now)


def take_beacon(
    app: PotApp,
    host: ReplicaHost,
    config: ReplicaConfig,
    message: Any,
    now: int,
    after: Callable[[], None],
) -> bool:
    """A validator's beacon message: the current primary is the one the replica's view names
    (this host's knowledge). When it is taken: ``after`` (the host's :func:`settle` and
    bookkeeping), a replica tick (a complete set of reveals may let the primary propose now),
    and ``after`` again."""
    primary = config.primary(host.replica.view)
    if not app.beacon_message(message, now, primary):
        return False
    after()
    host.tick(now)
    after()
    return True
