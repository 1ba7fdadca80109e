"""Equivocation evidence: two validly signed, conflicting messages from one replica.

Two messages conflict when they share a *conflict key* — (phase, view, seq) for pre-prepare,
prepare and commit; (checkpoint, seq) for a checkpoint; (view-change, new view) and
(new-view, view) — and differ in value (the digest, or for view-changes and new-views the whole
message). Evidence is self-contained: :func:`verify_evidence` checks it offline with only the
chain id and the replicas' public keys, so it can be handed to anyone (for pot: to slash).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pot_cli.consensus.messages import (
    Checkpoint,
    Commit,
    FetchState,
    MessageError,
    Prepare,
    PrePrepare,
    SignedMessage,
    StateReply,
    ViewChange,
    parse_message,
)
from pot_cli.consensus.signatures import Verifier


def conflict_key(msg: SignedMessage) -> tuple[str, int, int]:
    if isinstance(msg, PrePrepare | Prepare | Commit):
        return (msg.TYPE, msg.view, msg.seq)
    if isinstance(msg, Checkpoint):
        return (msg.TYPE, 0, msg.seq)
    if isinstance(msg, ViewChange):
        return (msg.TYPE, msg.new_view, 0)
    return (msg.TYPE, msg.view, 0)


def conflict_value(msg: SignedMessage) -> str:
    if isinstance(msg, PrePrepare | Prepare | Commit | Checkpoint):
        return msg.digest
    return msg.message_id


@dataclass(frozen=True)
class Evidence:
    """Two validly signed, conflicting messages from one replica for one (phase, view, seq)."""

    replica: int
    phase: str
    view: int
    seq: int
    first: SignedMessage
    second: SignedMessage

    def to_dict(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "phase": self.phase,
            "view": self.view,
            "seq": self.seq,
            "first": self.first.to_dict(),
            "second": self.second.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Any) -> Evidence:
        """Parse untrusted evidence (raises :class:`MessageError`)."""
        if not isinstance(d, dict) or set(d) != {
            "replica",
            "phase",
            "view",
            "seq",
            "first",
            "second",
        }:
            raise MessageError("evidence: expected replica, phase, view, seq, first, second")
        first, second = parse_message(d["first"]), parse_message(d["second"])
        if isinstance(first, FetchState | StateReply) or isinstance(
            second, FetchState | StateReply
        ):
            raise MessageError("evidence: unsigned messages cannot be evidence")
        key = (d["replica"], d["phase"], d["view"], d["seq"])
        if not all(
            isinstance(x, int) and not isinstance(x, bool) for x in (key[0], key[2], key[3])
        ):
            raise MessageError("evidence: replica, view and seq must be integers")
        if not isinstance(key[1], str):
            raise MessageError("evidence: phase must be a string")
        return cls(key[0], key[1], key[2], key[3], first, second)


def verify_evidence(ev: Evidence, chain_id: str, public_keys: tuple[bytes, ...]) -> bool:
    """True when ``ev`` proves that replica ``ev.replica`` signed two conflicting messages."""
    a, b = ev.first, ev.second
    if a.sender != ev.replica or b.sender != ev.replica:
        return False
    key = (ev.phase, ev.view, ev.seq)
    if conflict_key(a) != key or conflict_key(b) != key:
        return False
    if conflict_value(a) == conflict_value(b):
        return False
    ver = Verifier(chain_id, public_keys)
    return ver.check(a) and ver.check(b)
