"""The application the consensus core replicates: an interface, and a small reference chain.

The core never looks inside a proposal. The application decides, deterministically, whether a
proposal is acceptable (``validate``: an honest replica prepares only what it accepts), what the
primary proposes next, how a committed proposal changes its state, and what a checkpoint of that
state is (digest and JSON snapshot, for state transfer). For pot the proposal is a round's block
and the validator re-derives it bit for bit before accepting it.
"""

from __future__ import annotations

from typing import Any, Protocol

from pot_cli.consensus.messages import proposal_digest, snapshot_digest
from pot_cli.errors import PotError


class Application(Protocol):
    def validate(self, seq: int, proposal: Any) -> bool:
        """True when ``proposal`` is acceptable at ``seq`` (deterministic, never raises)."""
        ...

    def has_pending(self, seq: int) -> bool:
        """True when a block is expected at ``seq`` (arms the view-change timer)."""
        ...

    def propose(self, seq: int) -> Any:
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
    time ``(s - 1) * round_interval`` on, like pot's rounds (the host sets ``now``).
    """

    def __init__(self, tag: str = "", target: int | None = None, round_interval: int = 0) -> None:
        self.tag = tag
        self.target = target
        self.round_interval = round_interval
        self.now = 0
        self.height = 0
        self.head = "0" * 64

    def validate(self, seq: int, proposal: Any) -> bool:
        return ChainApp.valid_proposal(seq, proposal)

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

    def has_pending(self, seq: int) -> bool:
        if self.target is not None and seq > self.target:
            return False
        return self.now >= (seq - 1) * self.round_interval

    def propose(self, seq: int) -> Any:
        if not self.has_pending(seq):
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
