"""The host loop around a sans-IO replica: persist, then send; run timers when asked.

The one loop every driver of a :class:`Replica` uses: the networked validator (``pot
validate``) and the deterministic simulator alike. The caller supplies ``send(to, message)``
(``to`` None = every other replica; the transport serializes) and calls :meth:`deliver` for
each received message (an untrusted wire dict or JSON text), :meth:`tick` when
:attr:`next_timer` is due and :meth:`resume` when the application finished a derivation it
had answered ``PENDING`` for.

The ordering is the write-ahead rule: a step's records are durable (``log.write`` returns only
after fsync) before any of its messages leaves. A log that raises (a disk error; the
simulator's crash injection) stops the step before anything is sent.

Hooks, for a host that needs them (the simulator): ``on_output(replica, out)`` runs after the
write and before sending (invariant checks, bookkeeping); ``rewrite(replica, sends)`` may
change what is sent (the simulator's Byzantine behaviours).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pot_cli.consensus.app import Application
from pot_cli.consensus.config import ReplicaConfig
from pot_cli.consensus.messages import Message
from pot_cli.consensus.replica import Output, Replica
from pot_cli.consensus.signatures import Verifier
from pot_cli.crypto import Identity


class ReplicaLog(Protocol):
    """Where a replica's write-ahead records go (``SqliteWal``, ``MemoryWal``, wrappers)."""

    def write(self, out: Output) -> None:
        """Append ``out.records`` (or replace the log by ``out.compact``), durably."""
        ...

    def load(self) -> list[dict[str, Any]]:
        """Every record, in order (verified by the implementation)."""
        ...


Send = tuple[int | None, Any]
SendFn = Callable[[int | None, Any], None]
OutputHook = Callable[[Replica, Output], None]
RewriteFn = Callable[[Replica, list[tuple[int | None, Message]]], Sequence[Send]]


def open_replica(
    log: ReplicaLog,
    config: ReplicaConfig,
    replica_id: int,
    identity: Identity,
    app: Application,
    verifier: Verifier | None = None,
) -> Replica:
    """A replica from its log: fresh when the log is empty, else replayed (``app`` must be at
    genesis). Call ``start(now)`` on it, write its output, then send."""
    records = log.load()
    if not records:
        return Replica(config, replica_id, identity, app, verifier)
    return Replica.restore(config, replica_id, identity, app, records, verifier)


class ReplicaHost:
    """Owns a replica and its log; every input goes through :meth:`_apply`."""

    def __init__(
        self,
        config: ReplicaConfig,
        replica_id: int,
        identity: Identity,
        app: Application,
        log: ReplicaLog,
        send: SendFn,
        now: int,
        verifier: Verifier | None = None,
        *,
        on_output: OutputHook | None = None,
        rewrite: RewriteFn | None = None,
    ) -> None:
        self.log = log
        self.send = send
        self.on_output = on_output
        self.rewrite = rewrite
        self.next_timer: int | None = None
        # process CPU seconds spent inside the replica itself (not the log, hooks or sending)
        self.replica_seconds = 0.0
        t0 = time.process_time()
        self.replica = open_replica(log, config, replica_id, identity, app, verifier)
        out = self.replica.start(now)
        self.replica_seconds += time.process_time() - t0
        self._apply(out)

    def deliver(self, message: Any, now: int) -> list[str]:
        """Handle one received message (untrusted: a wire dict, JSON text or bytes, or a parsed
        message); returns the replica's rejection reasons."""
        t0 = time.process_time()
        out = self.replica.step(message, now)
        self.replica_seconds += time.process_time() - t0
        self._apply(out)
        return out.rejected

    def tick(self, now: int) -> None:
        t0 = time.process_time()
        out = self.replica.tick(now)
        self.replica_seconds += time.process_time() - t0
        self._apply(out)

    def resume(self, now: int) -> None:
        """The application finished deriving something it had answered PENDING for."""
        t0 = time.process_time()
        out = self.replica.resume(now)
        self.replica_seconds += time.process_time() - t0
        self._apply(out)

    def _apply(self, out: Output) -> None:
        self.log.write(out)  # durable first (fsync) ...
        if self.on_output is not None:
            self.on_output(self.replica, out)
        sends: Sequence[Send] = out.sends
        if self.rewrite is not None:
            sends = self.rewrite(self.replica, out.sends)
        for to, msg in sends:  # ... then send
            self.send(to, msg)
        self.next_timer = out.timer
