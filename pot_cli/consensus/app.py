"""The application the consensus core replicates: an interface, and a small reference chain.

The core never looks inside a proposal. The application decides, deterministically, whether a
proposal is acceptable (``validate``: an honest replica prepares only what it accepts), what the
primary proposes next, how a committed proposal changes its state, and what a checkpoint of that
state is (digest and JSON snapshot, for state transfer). For pot the proposal is a round's block
and the validator re-derives it bit for bit before accepting it.

Re-deriving a block takes seconds (re-computes), so ``validate`` may answer ``PENDING``: the
replica keeps the pre-prepare aside (its view-change timer keeps running, so a primary that
proposes what nobody can derive is still replaced) and asks again when the host calls
``Replica.resume(now)``, which the host does when the application's derivation finished. The
host's time ``now`` is an argument of every call that depends on it; nothing is set on the
application from outside.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Protocol

from pot_cli.consensus.messages import proposal_digest, snapshot_digest
from pot_cli.errors import PotError


class Validity(Enum):
    """What ``Application.validate`` answers."""

    VALID = "valid"
    INVALID = "invalid"
    PENDING = "pending"  # still deriving: ask again after the host calls Replica.resume


class Application(Protocol):
    def validate(self, seq: int, proposal: Any, now: int) -> Validity:
        """Whether ``proposal`` is acceptable at ``seq`` (deterministic once it is not
        PENDING; never raises)."""
        ...

    def has_pending(self, seq: int, now: int) -> bool:
        """True when a block is expected at ``seq`` (arms the view-change timer)."""
        ...

    def propose(self, seq: int, now: int) -> Any:
        """The proposal for ``seq`` when this replica is primary, or None for nothing yet."""
        ...

    def execute(self, seq: int, proposal: Any) -> None:
        """Apply the committed proposal at ``seq`` (``None``: a null block, no change but the
        height)."""
        ...

    def state_digest(self) -> str:
        """Digest of the current state (equals ``snapshot_digest(snapshot())``)."""
        ...

    def snapshot(self) -> Any:
        """The current state as a JSON-able value."""
        ...

    def snapshot_digest(self, snapshot: Any) -> str:
        """Digest of a snapshot (pure; used to check a transferred state against its proof)."""
        ...

    def restore(self, snapshot: Any) -> None:
        """Replace the state by ``snapshot`` (raise PotError when it is malformed)."""
        ...


class ChainApp:
    """A reference application: a hash chain of committed proposals.

    Proposals are ``{"seq": seq, "data": str}``; ``data`` starting with ``"poison"`` is invalid
    (the simulator's Byzantine primaries use it to test validity). ``target`` bounds how many
    blocks are expected (None: unbounded); with ``round_interval`` block ``s`` is expected from
    time ``(s - 1) * round_interval`` on, like pot's rounds. With ``derive_time`` > 0 a
    proposal takes that long to "re-derive": ``validate`` answers PENDING until then, and
    :meth:`take_wakeups` tells the host when to call ``Replica.resume`` (pot's slow validation,
    in miniature).
    """

    def __init__(
        self,
        tag: str = "",
        target: int | None = None,
        round_interval: int = 0,
        derive_time: int = 0,
    ) -> None:
        self.tag = tag
        self.target = target
        self.round_interval = round_interval
        self.derive_time = derive_time
        self.height = 0
        self.head = "0" * 64
        self._deriving: dict[str, int] = {}  # proposal digest -> when its derivation ends
        self._wakeups: list[int] = []

    def validate(self, seq: int, proposal: Any, now: int) -> Validity:
        if self.derive_time > 0:
            key = proposal_digest([seq, proposal])
            done = self._deriving.get(key)
            if done is None:
                if len(self._deriving) > 1024:  # bounded: forget the oldest derivations
                    for old in sorted(self._deriving, key=self._deriving.__getitem__)[:512]:
                        del self._deriving[old]
                done = self._deriving[key] = now + self.derive_time
                self._wakeups.append(done)
            if now < done:
                return Validity.PENDING
        return Validity.VALID if ChainApp.valid_proposal(seq, proposal) else Validity.INVALID

    def take_wakeups(self) -> list[int]:
        """When derivations started since the last call end (the host resumes the replica)."""
        out, self._wakeups = self._wakeups, []
        return out

    @staticmethod
    def valid_proposal(seq: int, proposal: Any) -> bool:
        return (
            isinstance(proposal, dict)
            and set(proposal) == {"seq", "data"}
            and proposal["seq"] == seq
            and isinstance(proposal["data"], str)
            and len(proposal["data"]) <= 64
            and not proposal["data"].startswith("poison")
        )

    def has_pending(self, seq: int, now: int) -> bool:
        if self.target is not None and seq > self.target:
            return False
        return now >= (seq - 1) * self.round_interval

    def propose(self, seq: int, now: int) -> Any:
        if not self.has_pending(seq, now):
            return None
        return {"seq": seq, "data": f"{self.tag}block-{seq}"}

    def execute(self, seq: int, proposal: Any) -> None:
        self.head = proposal_digest([self.head, seq, proposal_digest(proposal)])
        self.height = seq

    def snapshot(self) -> Any:
        return {"height": self.height, "head": self.head}

    def state_digest(self) -> str:
        return snapshot_digest(self.snapshot())

    def snapshot_digest(self, snapshot: Any) -> str:
        return snapshot_digest(snapshot)

    def restore(self, snapshot: Any) -> None:
        if (
            not isinstance(snapshot, dict)
            or set(snapshot) != {"height", "head"}
            or not isinstance(snapshot["height"], int)
            or not isinstance(snapshot["head"], str)
        ):
            raise PotError("chain snapshot is malformed")
        self.height = snapshot["height"]
        self.head = snapshot["head"]
