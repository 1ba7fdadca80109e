"""PBFT wire messages: typed, immutable, signed, and strictly parsed from untrusted dicts.

Every message is a frozen dataclass. ``to_dict()`` gives a JSON-able dict (the wire form) and
:func:`parse_message` turns such a dict back into a message or raises :class:`MessageError`
(bad types, out-of-range integers, wrong sizes, unknown or missing fields). Parsing checks only
the *shape*; whether a message is acceptable (signature, view, watermarks, quorum) is the
replica's decision.

Signatures
----------
A signed message is signed with ``Identity.sign_message(domain, chain_id, height, body)`` where
``domain`` is ``"pbft/<type>"`` (one domain per message type, so a prepare can never pass for a
commit), ``height`` is the message's sequence number (``seq``; ``stable_seq`` for a view-change,
``from_seq`` for a fetch-state, ``0`` for a new-view, whose body names its view) and ``body``
is the wire dict without ``sig``. Only STATE-REPLY is unsigned: it is a container of things
proven by their own 2f+1 signatures. The bytes covered are computed once per message object and
cached, as is the digest used by the verification cache.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, TypeVar

from pot_cli.crypto import (
    SIGNATURE_SIZE,
    Identity,
    canonical_bytes,
    hash_object_hex,
    sha256,
    sha256_hex,
    signing_bytes,
)
from pot_cli.errors import EncodingError, PotError

MAX_INT = 2**53
MAX_LIST = 4096
MAX_PROPOSAL_BYTES = 1 << 20
MAX_SNAPSHOT_BYTES = 16 << 20
MAX_JSON_DEPTH = 32
DIGEST_HEX = 64
# Overall bound on one message as JSON text (a state reply with the largest snapshot and a few
# blocks fits; nothing else comes near it). ``parse_wire`` refuses longer text before decoding,
# ``parse_message`` refuses a dict whose JSON size would exceed it.
MAX_MESSAGE_BYTES = 24 << 20


class MessageError(PotError):
    """An untrusted message is malformed (the text says which field and why)."""


def proposal_digest(proposal: Any) -> str:
    """Digest of a proposal (``None`` is the null proposal that fills gaps in a new view)."""
    return hash_object_hex({"proposal": proposal})


NULL_DIGEST = proposal_digest(None)

# ------------------------------------------------------------------ field validation helpers


def _need_dict(obj: object, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise MessageError(f"{what}: expected an object, got {type(obj).__name__}")
    return obj


def _check_keys(d: dict[str, Any], keys: frozenset[str], what: str) -> None:
    got = set(d)
    if got != keys:
        extra = sorted(str(k) for k in got - keys)
        missing = sorted(keys - got)
        raise MessageError(f"{what}: unknown fields {extra}, missing fields {missing}")


def _int(d: dict[str, Any], key: str, what: str, lo: int = 0, hi: int = MAX_INT) -> int:
    v = d[key]
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise MessageError(f"{what}.{key}: expected an integer in [{lo}, {hi}], got {v!r:.40}")
    return v


def _digest(d: dict[str, Any], key: str, what: str) -> str:
    v = d[key]
    if not isinstance(v, str) or len(v) != DIGEST_HEX or v != v.lower():
        raise MessageError(f"{what}.{key}: expected 64 lowercase hex characters")
    try:
        bytes.fromhex(v)
    except ValueError:
        raise MessageError(f"{what}.{key}: expected 64 lowercase hex characters") from None
    return v


def _sig(d: dict[str, Any], what: str) -> bytes:
    v = d["sig"]
    if not isinstance(v, str) or len(v) != 2 * SIGNATURE_SIZE:
        raise MessageError(f"{what}.sig: expected {2 * SIGNATURE_SIZE} hex characters")
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise MessageError(f"{what}.sig: not hex") from None


def _json_value(v: Any, limit: int, what: str) -> Any:
    """Check an opaque JSON value: encodable, finite, not too deep, not too large."""
    if _depth(v, 0) > MAX_JSON_DEPTH:
        raise MessageError(f"{what}: nested deeper than {MAX_JSON_DEPTH}")
    try:
        size = len(canonical_bytes(v))
    except (EncodingError, RecursionError, ValueError) as exc:
        raise MessageError(f"{what}: not a canonical JSON value ({exc})") from None
    if size > limit:
        raise MessageError(f"{what}: {size} bytes is over the limit of {limit}")
    return v


def _depth(v: Any, level: int) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(v, dict):
        return max((_depth(x, level + 1) for x in v.values()), default=level + 1)
    if isinstance(v, list):
        return max((_depth(x, level + 1) for x in v), default=level + 1)
    if isinstance(v, float) and not math.isfinite(v):
        return level
    return level


T = TypeVar("T")


def _list(d: dict[str, Any], key: str, what: str, parse: Callable[[Any, str], T]) -> tuple[T, ...]:
    v = d[key]
    if not isinstance(v, list) or len(v) > MAX_LIST:
        raise MessageError(f"{what}.{key}: expected a list of at most {MAX_LIST} items")
    return tuple(parse(item, f"{what}.{key}[{i}]") for i, item in enumerate(v))


# ------------------------------------------------------------------------------ messages


@dataclass(frozen=True)
class Signed:
    """Base of the signed messages: signing bytes and digest are computed once and cached."""

    TYPE: ClassVar[str] = ""

    @property
    def sender(self) -> int:
        raise NotImplementedError

    @property
    def height(self) -> int:
        raise NotImplementedError

    @property
    def signature(self) -> bytes:
        raise NotImplementedError

    def body(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        out = self.body()
        out["sig"] = self.signature.hex()
        return out

    def signing_bytes(self, chain_id: str) -> bytes:
        cache: dict[str, bytes] = self.__dict__.setdefault("_sb", {})
        sb = cache.get(chain_id)
        if sb is None:
            sb = signing_bytes("pbft/" + self.TYPE, chain_id, self.height, self.body())
            cache[chain_id] = sb
        return sb

    def signing_digest(self, chain_id: str) -> bytes:
        """SHA-256 of :meth:`signing_bytes` (cached): what the verification cache is keyed
        by, so a cached entry costs 32 bytes whatever the message's size."""
        cache: dict[str, bytes] = self.__dict__.setdefault("_sd", {})
        digest = cache.get(chain_id)
        if digest is None:
            digest = cache[chain_id] = sha256(self.signing_bytes(chain_id))
        return digest

    @cached_property
    def message_id(self) -> str:
        """Digest of the whole signed message (body and signature): the cache/dedup key."""
        return sha256_hex(canonical_bytes(self.to_dict()))


@dataclass(frozen=True)
class PrePrepare(Signed):
    TYPE: ClassVar[str] = "pre-prepare"
    view: int
    seq: int
    digest: str
    proposal: Any
    replica: int
    sig: bytes = b""

    @property
    def sender(self) -> int:
        return self.replica

    @property
    def height(self) -> int:
        return self.seq

    @property
    def signature(self) -> bytes:
        return self.sig

    def body(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "view": self.view,
            "seq": self.seq,
            "digest": self.digest,
            "proposal": self.proposal,
            "replica": self.replica,
        }


@dataclass(frozen=True)
class _Vote(Signed):
    """PREPARE and COMMIT: one replica's signed vote for (view, seq, digest)."""

    view: int
    seq: int
    digest: str
    replica: int
    sig: bytes = b""

    @property
    def sender(self) -> int:
        return self.replica

    @property
    def height(self) -> int:
        return self.seq

    @property
    def signature(self) -> bytes:
        return self.sig

    def body(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "view": self.view,
            "seq": self.seq,
            "digest": self.digest,
            "replica": self.replica,
        }


@dataclass(frozen=True)
class Prepare(_Vote):
    TYPE: ClassVar[str] = "prepare"


@dataclass(frozen=True)
class Commit(_Vote):
    TYPE: ClassVar[str] = "commit"


@dataclass(frozen=True)
class Checkpoint(Signed):
    TYPE: ClassVar[str] = "checkpoint"
    seq: int
    digest: str
    replica: int
    sig: bytes = b""

    @property
    def sender(self) -> int:
        return self.replica

    @property
    def height(self) -> int:
        return self.seq

    @property
    def signature(self) -> bytes:
        return self.sig

    def body(self) -> dict[str, Any]:
        return {"type": self.TYPE, "seq": self.seq, "digest": self.digest, "replica": self.replica}


@dataclass(frozen=True)
class PreparedCert:
    """A pre-prepare plus 2f matching prepares from distinct backups (the P of a view change)."""

    pre_prepare: PrePrepare
    prepares: tuple[Prepare, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "pre_prepare": self.pre_prepare.to_dict(),
            "prepares": [p.to_dict() for p in self.prepares],
        }


@dataclass(frozen=True)
class ViewChange(Signed):
    TYPE: ClassVar[str] = "view-change"
    new_view: int
    stable_seq: int
    checkpoint_proof: tuple[Checkpoint, ...]
    prepared: tuple[PreparedCert, ...]
    replica: int
    sig: bytes = b""

    @property
    def sender(self) -> int:
        return self.replica

    @property
    def height(self) -> int:
        return self.stable_seq

    @property
    def signature(self) -> bytes:
        return self.sig

    def body(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "new_view": self.new_view,
            "stable_seq": self.stable_seq,
            "checkpoint_proof": [c.to_dict() for c in self.checkpoint_proof],
            "prepared": [p.to_dict() for p in self.prepared],
            "replica": self.replica,
        }


@dataclass(frozen=True)
class NewView(Signed):
    TYPE: ClassVar[str] = "new-view"
    view: int
    view_changes: tuple[ViewChange, ...]
    pre_prepares: tuple[PrePrepare, ...]
    replica: int
    sig: bytes = b""

    @property
    def sender(self) -> int:
        return self.replica

    @property
    def height(self) -> int:
        return 0

    @property
    def signature(self) -> bytes:
        return self.sig

    def body(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "view": self.view,
            "view_changes": [v.to_dict() for v in self.view_changes],
            "pre_prepares": [p.to_dict() for p in self.pre_prepares],
            "replica": self.replica,
        }


@dataclass(frozen=True)
class CommittedBlock:
    """A block final at ``seq``: its proposal and the 2f+1 signed commits that prove it."""

    seq: int
    view: int
    digest: str
    proposal: Any
    commits: tuple[Commit, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "view": self.view,
            "digest": self.digest,
            "proposal": self.proposal,
            "commits": [c.to_dict() for c in self.commits],
        }

    @cached_property
    def wire_size(self) -> int:
        """Bytes of the block as canonical JSON (what it adds to a state reply)."""
        return len(canonical_bytes(self.to_dict()))


@dataclass(frozen=True)
class StableCheckpoint:
    """A checkpoint with its 2f+1 proof, and the application snapshot when the holder has it."""

    seq: int
    digest: str
    proof: tuple[Checkpoint, ...]
    snapshot: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "digest": self.digest,
            "proof": [c.to_dict() for c in self.proof],
            "snapshot": self.snapshot,
        }

    @cached_property
    def wire_size(self) -> int:
        """Bytes of the checkpoint (snapshot included) as canonical JSON."""
        return len(canonical_bytes(self.to_dict()))


@dataclass(frozen=True)
class FetchState(Signed):
    """Signed request for the state after ``from_seq - 1``. Signed so that nobody can make a
    replica send a (large) state reply to a replica that did not ask for it, and so that the
    replier rate-limits the real requester."""

    TYPE: ClassVar[str] = "fetch-state"
    from_seq: int
    replica: int
    sig: bytes = b""

    @property
    def sender(self) -> int:
        return self.replica

    @property
    def height(self) -> int:
        return self.from_seq

    @property
    def signature(self) -> bytes:
        return self.sig

    def body(self) -> dict[str, Any]:
        return {"type": self.TYPE, "from_seq": self.from_seq, "replica": self.replica}


@dataclass(frozen=True)
class StateReply:
    """Unsigned container: a stable checkpoint (with snapshot) and/or committed blocks, each
    verified by the receiver against its own 2f+1 proof before it is adopted."""

    TYPE: ClassVar[str] = "state-reply"
    checkpoint: StableCheckpoint | None
    blocks: tuple[CommittedBlock, ...]
    replica: int

    @property
    def sender(self) -> int:
        return self.replica

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "checkpoint": None if self.checkpoint is None else self.checkpoint.to_dict(),
            "blocks": [b.to_dict() for b in self.blocks],
            "replica": self.replica,
        }


Message = (
    PrePrepare | Prepare | Commit | Checkpoint | ViewChange | NewView | FetchState | StateReply
)
SignedMessage = PrePrepare | Prepare | Commit | Checkpoint | ViewChange | NewView

# ------------------------------------------------------------------------------- parsing

_VOTE_KEYS = frozenset({"type", "view", "seq", "digest", "replica", "sig"})


def _parse_pre_prepare(obj: Any, what: str) -> PrePrepare:
    d = _need_dict(obj, what)
    _check_keys(d, frozenset({*_VOTE_KEYS, "proposal"}), what)
    if d["type"] != PrePrepare.TYPE:
        raise MessageError(f"{what}.type: expected {PrePrepare.TYPE!r}")
    return PrePrepare(
        view=_int(d, "view", what),
        seq=_int(d, "seq", what, 1),
        digest=_digest(d, "digest", what),
        proposal=_json_value(d["proposal"], MAX_PROPOSAL_BYTES, f"{what}.proposal"),
        replica=_int(d, "replica", what),
        sig=_sig(d, what),
    )


def _parse_vote(cls: type[Prepare] | type[Commit], obj: Any, what: str) -> Prepare | Commit:
    d = _need_dict(obj, what)
    _check_keys(d, _VOTE_KEYS, what)
    if d["type"] != cls.TYPE:
        raise MessageError(f"{what}.type: expected {cls.TYPE!r}")
    return cls(
        view=_int(d, "view", what),
        seq=_int(d, "seq", what, 1),
        digest=_digest(d, "digest", what),
        replica=_int(d, "replica", what),
        sig=_sig(d, what),
    )


def _parse_prepare(obj: Any, what: str) -> Prepare:
    msg = _parse_vote(Prepare, obj, what)
    assert isinstance(msg, Prepare)
    return msg


def _parse_commit(obj: Any, what: str) -> Commit:
    msg = _parse_vote(Commit, obj, what)
    assert isinstance(msg, Commit)
    return msg


def _parse_checkpoint(obj: Any, what: str) -> Checkpoint:
    d = _need_dict(obj, what)
    _check_keys(d, frozenset({"type", "seq", "digest", "replica", "sig"}), what)
    if d["type"] != Checkpoint.TYPE:
        raise MessageError(f"{what}.type: expected {Checkpoint.TYPE!r}")
    return Checkpoint(
        seq=_int(d, "seq", what, 1),
        digest=_digest(d, "digest", what),
        replica=_int(d, "replica", what),
        sig=_sig(d, what),
    )


def _parse_prepared_cert(obj: Any, what: str) -> PreparedCert:
    d = _need_dict(obj, what)
    _check_keys(d, frozenset({"pre_prepare", "prepares"}), what)
    return PreparedCert(
        pre_prepare=_parse_pre_prepare(d["pre_prepare"], f"{what}.pre_prepare"),
        prepares=_list(d, "prepares", what, _parse_prepare),
    )


def _parse_view_change(obj: Any, what: str) -> ViewChange:
    d = _need_dict(obj, what)
    keys = frozenset(
        {"type", "new_view", "stable_seq", "checkpoint_proof", "prepared", "replica", "sig"}
    )
    _check_keys(d, keys, what)
    if d["type"] != ViewChange.TYPE:
        raise MessageError(f"{what}.type: expected {ViewChange.TYPE!r}")
    return ViewChange(
        new_view=_int(d, "new_view", what, 1),
        stable_seq=_int(d, "stable_seq", what),
        checkpoint_proof=_list(d, "checkpoint_proof", what, _parse_checkpoint),
        prepared=_list(d, "prepared", what, _parse_prepared_cert),
        replica=_int(d, "replica", what),
        sig=_sig(d, what),
    )


def _parse_new_view(obj: Any, what: str) -> NewView:
    d = _need_dict(obj, what)
    _check_keys(
        d, frozenset({"type", "view", "view_changes", "pre_prepares", "replica", "sig"}), what
    )
    if d["type"] != NewView.TYPE:
        raise MessageError(f"{what}.type: expected {NewView.TYPE!r}")
    return NewView(
        view=_int(d, "view", what, 1),
        view_changes=_list(d, "view_changes", what, _parse_view_change),
        pre_prepares=_list(d, "pre_prepares", what, _parse_pre_prepare),
        replica=_int(d, "replica", what),
        sig=_sig(d, what),
    )


def parse_committed_block(obj: Any, what: str = "block") -> CommittedBlock:
    d = _need_dict(obj, what)
    _check_keys(d, frozenset({"seq", "view", "digest", "proposal", "commits"}), what)
    return CommittedBlock(
        seq=_int(d, "seq", what, 1),
        view=_int(d, "view", what),
        digest=_digest(d, "digest", what),
        proposal=_json_value(d["proposal"], MAX_PROPOSAL_BYTES, f"{what}.proposal"),
        commits=_list(d, "commits", what, _parse_commit),
    )


def parse_stable_checkpoint(obj: Any, what: str = "checkpoint") -> StableCheckpoint:
    d = _need_dict(obj, what)
    _check_keys(d, frozenset({"seq", "digest", "proof", "snapshot"}), what)
    return StableCheckpoint(
        seq=_int(d, "seq", what),
        digest=_digest(d, "digest", what),
        proof=_list(d, "proof", what, _parse_checkpoint),
        snapshot=_json_value(d["snapshot"], MAX_SNAPSHOT_BYTES, f"{what}.snapshot"),
    )


def _parse_fetch_state(obj: Any, what: str) -> FetchState:
    d = _need_dict(obj, what)
    _check_keys(d, frozenset({"type", "from_seq", "replica", "sig"}), what)
    return FetchState(
        from_seq=_int(d, "from_seq", what, 1),
        replica=_int(d, "replica", what),
        sig=_sig(d, what),
    )


def _parse_state_reply(obj: Any, what: str) -> StateReply:
    d = _need_dict(obj, what)
    _check_keys(d, frozenset({"type", "checkpoint", "blocks", "replica"}), what)
    cp = d["checkpoint"]
    return StateReply(
        checkpoint=None if cp is None else parse_stable_checkpoint(cp, f"{what}.checkpoint"),
        blocks=_list(d, "blocks", what, parse_committed_block),
        replica=_int(d, "replica", what),
    )


_PARSERS: dict[str, Callable[[Any, str], Message]] = {
    PrePrepare.TYPE: _parse_pre_prepare,
    Prepare.TYPE: _parse_prepare,
    Commit.TYPE: _parse_commit,
    Checkpoint.TYPE: _parse_checkpoint,
    ViewChange.TYPE: _parse_view_change,
    NewView.TYPE: _parse_new_view,
    FetchState.TYPE: _parse_fetch_state,
    StateReply.TYPE: _parse_state_reply,
}


def parse_message(obj: Any) -> Message:
    """Parse an untrusted wire dict into a message; raise :class:`MessageError` if malformed.

    Besides every per-field limit, the whole message must fit in :data:`MAX_MESSAGE_BYTES` as
    JSON text (measured before any field is parsed). Never raises anything else, whatever
    ``obj`` is.
    """
    try:
        d = _need_dict(obj, "message")
        kind = d.get("type")
        parser = _PARSERS.get(kind) if isinstance(kind, str) else None
        if parser is None:
            raise MessageError(f"message.type: unknown message type {str(kind)[:40]!r}")
        if json_size_over(d, MAX_MESSAGE_BYTES):
            raise MessageError(f"message: larger than {MAX_MESSAGE_BYTES} bytes as JSON")
        return parser(d, kind)  # type: ignore[arg-type]
    except MessageError:
        raise
    except (RecursionError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise MessageError(f"message: malformed ({type(exc).__name__})") from None


def parse_wire(data: bytes | str) -> Message:
    """Parse a message as it arrives from the network (JSON text): the size bound is checked
    before decoding, non-finite numbers and non-UTF-8 bytes are refused."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message: {len(data)} bytes is over the limit of {MAX_MESSAGE_BYTES}")
    try:
        obj = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise MessageError(f"message: not JSON ({type(exc).__name__})") from None
    return parse_message(obj)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def json_size_over(obj: Any, limit: int) -> bool:
    """True when ``obj`` as compact JSON text would take more than ``limit`` bytes (a lower
    estimate: strings count their characters plus quotes, so escapes never make it larger than
    the truth). Walks iteratively and stops as soon as the limit is passed."""
    total = 0
    stack = [obj]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v) + 2
        elif isinstance(v, dict):
            total += 1 + len(v)
            for key, item in v.items():
                total += (len(key) if isinstance(key, str) else 8) + 3
                stack.append(item)
        elif isinstance(v, list | tuple):
            total += 1 + len(v)
            stack.extend(v)
        else:
            total += 4
        if total > limit:
            return True
    return False


# ------------------------------------------------------------------------------- signing

S = TypeVar("S", bound=Signed)


def sign(identity: Identity, chain_id: str, msg: S) -> S:
    """Return ``msg`` with its signature filled in by ``identity``."""
    sig = identity.sign(msg.signing_bytes(chain_id))
    signed = type(msg)(**{**_fields(msg), "sig": sig})
    signed.__dict__["_sb"] = {chain_id: msg.signing_bytes(chain_id)}
    return signed


def _fields(msg: Signed) -> dict[str, Any]:
    return {k: v for k, v in msg.__dict__.items() if not k.startswith("_") and k != "message_id"}


def snapshot_digest(snapshot: Any) -> str:
    """Default digest of an application snapshot (canonical JSON)."""
    return hash_object_hex({"snapshot": snapshot})
