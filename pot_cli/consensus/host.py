"""The host loop around a sans-IO replica: persist, then send; run timers when asked.

A networked validator (``pot validate``) wraps a :class:`Replica` like this; the simulator does
the same with a virtual network. :class:`ReplicaHost` is that loop without any transport: the
caller supplies ``send(to, wire_dict)`` (``to`` None = every other replica) and calls
``deliver`` for each received wire dict and ``tick`` when ``next_timer`` is due.

The ordering is the write-ahead rule: a step's records are durable (``wal.write`` returns only
after fsync) before any of its messages leaves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pot_cli.consensus.app import Application
from pot_cli.consensus.config import ReplicaConfig
from pot_cli.consensus.messages import CommittedBlock
from pot_cli.consensus.replica import Output
from pot_cli.consensus.signatures import Verifier
from pot_cli.consensus.wal import MemoryWal, SqliteWal, open_replica
from pot_cli.crypto import Identity

SendFn = Callable[[int | None, dict[str, Any]], None]


class ReplicaHost:
    """Owns a replica and its log; every input goes through :meth:`_apply`."""

    def __init__(
        self,
        config: ReplicaConfig,
        replica_id: int,
        identity: Identity,
        app: Application,
        wal: SqliteWal | MemoryWal,
        send: SendFn,
        now: int,
        verifier: Verifier | None = None,
    ) -> None:
        self.wal = wal
        self.send = send
        self.replica = open_replica(wal, config, replica_id, identity, app, verifier)
        self.next_timer: int | None = None
        self.committed: list[CommittedBlock] = []
        self._apply(self.replica.start(now))

    def deliver(self, wire: Any, now: int) -> list[str]:
        """Handle one received message (an untrusted wire dict); returns rejection reasons."""
        out = self.replica.step(wire, now)
        self._apply(out)
        return out.rejected

    def tick(self, now: int) -> None:
        self._apply(self.replica.tick(now))

    def _apply(self, out: Output) -> None:
        self.wal.write(out)  # durable first (fsync) ...
        for to, msg in out.sends:  # ... then send
            self.send(to, msg.to_dict())
        self.committed.extend(out.committed)
        self.next_timer = out.timer
