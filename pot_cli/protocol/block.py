"""The PoT block: one round's record as canonical JSON, strictly parsed from untrusted dicts.

A block names its chain, height and predecessor, the round's seed and beacon, the model before
and after the update and the aggregation rule, every submission with its verdict, and the
integer amounts the ledger applies (miners' rewards, validators' fees, penalties). No float
appears anywhere: measurements in evidence are integers (e.g. parts per million) or strings.

Lists are sorted by address and unique. Besides the shape, :func:`check_block` enforces the
block's own consistency: the rewarded addresses are exactly the accepted miners; the penalised
ones are exactly the miners slashed for a forgery (:data:`FORGERY_CODES`) plus those rejected
for a malformed payload (:data:`MALFORMED_CODES`), each penalty carrying its submission's code;
block 1 follows :data:`GENESIS_PREV`. Whether the amounts are right is the ledger's call
(``plan_round`` re-derives them). :func:`block_hash` is the SHA-256 of the canonical bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pot_cli.crypto import canonical_bytes, is_valid_address, sha256_hex
from pot_cli.errors import PotError
from pot_cli.protocol.genesis import CHAIN_ID_RE, MAX_INT, MAX_TASK_CHARS

GENESIS_PREV = "0" * 64
MAX_SUBMISSIONS = 10_000
MAX_EVIDENCE_ITEMS = 16
MAX_EVIDENCE_STR = 256

VerdictKind = Literal["accepted", "rejected", "slashed"]
VERDICT_KINDS: tuple[str, ...] = ("accepted", "rejected", "slashed")

# Checks run in this order; a verdict names the first one that fails.
REJECT_CODES: Mapping[str, str] = {
    "bad-signature": "the commitment's signature does not verify under the miner's key",
    "wrong-chain": "the commitment names another chain id",
    "wrong-height": "the commitment names another height",
    "wrong-model": "the commitment names another model hash than the round's",
    "unknown-miner": "the miner has no account on this chain",
    "ejected": "the miner was ejected for a proven forgery",
    "not-staked": "the miner's stake is below min_miner_stake",
    "duplicate": "a second submission from the same miner in this round",
    "late": "the submission arrived after the round's cut-off",
    "oversize": "the payload is larger than the limit (penalised as malformed)",
    "malformed": "the payload does not decode, or has the wrong schema or shapes (penalised)",
    "non-finite": "the payload holds NaN or infinite values (penalised as malformed)",
    "zero": "the gradient is all zeros: a signed claim of work not done (penalised as malformed)",
    "recompute-mismatch": "a spot-check re-compute is outside the tolerance: a proven forgery",
    "copy": "the payload copies another miner's work instead of its own batch: a forgery",
}
FORGERY_CODES = frozenset({"recompute-mismatch", "copy"})
# rejected and penalised ``malformed_penalty`` (no ejection): signed submissions that cannot be
# used, an all-zero one included (a free rider would otherwise keep one identity at no cost)
MALFORMED_CODES = frozenset({"oversize", "malformed", "non-finite", "zero"})

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_RULE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_EVIDENCE_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")


class BlockError(PotError):
    """A block is malformed or inconsistent (the text names the field and why)."""


# ------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Verdict:
    """The fate of one submission. ``code`` is required unless accepted; ``evidence`` (sorted
    ``(key, int | str)`` pairs) is required exactly when slashed."""

    kind: VerdictKind
    code: str | None = None
    evidence: tuple[tuple[str, int | str], ...] | None = None

    @classmethod
    def accepted(cls) -> Verdict:
        return cls("accepted")

    @classmethod
    def rejected(cls, code: str) -> Verdict:
        return cls("rejected", code)

    @classmethod
    def slashed(cls, code: str, evidence: Mapping[str, int | str]) -> Verdict:
        return cls("slashed", code, tuple(sorted(evidence.items())))

    def to_dict(self) -> dict[str, Any]:
        ev = None if self.evidence is None else dict(self.evidence)
        return {"kind": self.kind, "code": self.code, "evidence": ev}


@dataclass(frozen=True)
class SubmissionRecord:
    """One miner's submission as the block records it."""

    miner: str
    payload_hash: str
    commitment_sig: str
    samples: int
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "miner": self.miner,
            "payload_hash": self.payload_hash,
            "commitment_sig": self.commitment_sig,
            "samples": self.samples,
            "verdict": self.verdict.to_dict(),
        }


@dataclass(frozen=True)
class Block:
    """One round, final once 2f+1 validators commit it."""

    chain_id: str
    height: int
    prev_hash: str
    round_seed: str
    beacon: str
    task: str
    model_before: str
    model_after: str
    rule: str
    submissions: tuple[SubmissionRecord, ...] = ()
    rewards: tuple[tuple[str, int], ...] = ()
    penalties: tuple[tuple[str, int, str], ...] = ()
    validator_fees: tuple[tuple[str, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "height": self.height,
            "prev_hash": self.prev_hash,
            "round_seed": self.round_seed,
            "beacon": self.beacon,
            "task": self.task,
            "model_before": self.model_before,
            "model_after": self.model_after,
            "rule": self.rule,
            "submissions": [s.to_dict() for s in self.submissions],
            "rewards": [{"address": a, "amount": x} for a, x in self.rewards],
            "penalties": [{"address": a, "amount": x, "code": c} for a, x, c in self.penalties],
            "validator_fees": [{"address": a, "amount": x} for a, x in self.validator_fees],
        }


def block_hash(block: Block) -> str:
    """Hex SHA-256 of the block's canonical bytes."""
    return sha256_hex(canonical_bytes(block.to_dict()))


# ------------------------------------------------------------------------------ parsing


def _dict(obj: object, what: str, keys: frozenset[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise BlockError(f"{what}: expected an object, got {type(obj).__name__}")
    if obj.keys() != keys:
        extra = sorted(str(k) for k in obj.keys() - keys)
        missing = sorted(keys - obj.keys())
        raise BlockError(f"{what}: unknown fields {extra}, missing fields {missing}")
    return obj


def _int(v: object, what: str, lo: int = 0, hi: int = MAX_INT) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise BlockError(f"{what}: expected an integer in [{lo}, {hi}], got {v!r:.40}")
    return v


def _hex(v: object, what: str, pattern: re.Pattern[str] = _HEX64) -> str:
    if not isinstance(v, str) or not pattern.fullmatch(v):
        size = 64 if pattern is _HEX64 else 128
        raise BlockError(f"{what}: expected {size} lowercase hex characters")
    return v


def _str(v: object, what: str, ok: Callable[[str], bool], expected: str) -> str:
    if not isinstance(v, str) or not ok(v):
        raise BlockError(f"{what}: expected {expected}, got {v!r:.40}")
    return v


def _address(v: object, what: str) -> str:
    if not is_valid_address(v):
        raise BlockError(f"{what}: expected a pot1 address with a valid checksum")
    assert isinstance(v, str)
    return v


T = TypeVar("T")


def _list(v: object, what: str, parse: Callable[[Any, str], T]) -> tuple[T, ...]:
    if not isinstance(v, list) or len(v) > MAX_SUBMISSIONS:
        raise BlockError(f"{what}: expected a list of at most {MAX_SUBMISSIONS} items")
    return tuple(parse(item, f"{what}[{i}]") for i, item in enumerate(v))


def _parse_evidence(v: object, what: str) -> tuple[tuple[str, int | str], ...]:
    if not isinstance(v, dict) or not 1 <= len(v) <= MAX_EVIDENCE_ITEMS:
        raise BlockError(f"{what}: expected an object of 1-{MAX_EVIDENCE_ITEMS} entries")
    out: list[tuple[str, int | str]] = []
    for key, value in v.items():
        if not isinstance(key, str) or not _EVIDENCE_KEY.fullmatch(key):
            raise BlockError(f"{what}: bad key {key!r:.40} (lowercase identifier)")
        if isinstance(value, str):
            if len(value) > MAX_EVIDENCE_STR:
                raise BlockError(f"{what}.{key}: longer than {MAX_EVIDENCE_STR} characters")
        else:
            _int(value, f"{what}.{key}", -MAX_INT, MAX_INT)
        out.append((key, value))
    return tuple(sorted(out))


_VERDICT_KEYS = frozenset({"kind", "code", "evidence"})


def _parse_verdict(obj: object, what: str) -> Verdict:
    d = _dict(obj, what, _VERDICT_KEYS)
    kind, code, evidence = d["kind"], d["code"], d["evidence"]
    if kind == "accepted":
        if code is not None or evidence is not None:
            raise BlockError(f"{what}: an accepted verdict has no code and no evidence")
        return Verdict("accepted")
    if kind == "rejected":
        if not isinstance(code, str) or code not in REJECT_CODES or code in FORGERY_CODES:
            raise BlockError(f"{what}.code: not a rejection code: {code!r:.40}")
        if evidence is not None:
            raise BlockError(f"{what}.evidence: only a slashed verdict carries evidence")
        return Verdict("rejected", code)
    if kind == "slashed":
        if not isinstance(code, str) or code not in FORGERY_CODES:
            raise BlockError(
                f"{what}.code: expected one of {sorted(FORGERY_CODES)}, got {code!r:.40}"
            )
        return Verdict("slashed", code, _parse_evidence(evidence, f"{what}.evidence"))
    raise BlockError(f"{what}.kind: expected one of {list(VERDICT_KINDS)}, got {kind!r:.40}")


_SUBMISSION_KEYS = frozenset({"miner", "payload_hash", "commitment_sig", "samples", "verdict"})


def _parse_submission(obj: object, what: str) -> SubmissionRecord:
    d = _dict(obj, what, _SUBMISSION_KEYS)
    return SubmissionRecord(
        miner=_address(d["miner"], f"{what}.miner"),
        payload_hash=_hex(d["payload_hash"], f"{what}.payload_hash"),
        commitment_sig=_hex(d["commitment_sig"], f"{what}.commitment_sig", _HEX128),
        samples=_int(d["samples"], f"{what}.samples"),
        verdict=_parse_verdict(d["verdict"], f"{what}.verdict"),
    )


_AMOUNT_KEYS = frozenset({"address", "amount"})
_PENALTY_KEYS = frozenset({"address", "amount", "code"})


def _parse_amount(obj: object, what: str) -> tuple[str, int]:
    d = _dict(obj, what, _AMOUNT_KEYS)
    return _address(d["address"], f"{what}.address"), _int(d["amount"], f"{what}.amount")


def _parse_penalty(obj: object, what: str) -> tuple[str, int, str]:
    d = _dict(obj, what, _PENALTY_KEYS)
    code = d["code"]
    if not isinstance(code, str) or code not in FORGERY_CODES | MALFORMED_CODES:
        raise BlockError(f"{what}.code: not a penalised code: {code!r:.40}")
    return _address(d["address"], f"{what}.address"), _int(d["amount"], f"{what}.amount"), code


_BLOCK_KEYS = frozenset(
    {
        "chain_id",
        "height",
        "prev_hash",
        "round_seed",
        "beacon",
        "task",
        "model_before",
        "model_after",
        "rule",
        "submissions",
        "rewards",
        "penalties",
        "validator_fees",
    }
)


def _task_ok(t: str) -> bool:
    return 0 < len(t) <= MAX_TASK_CHARS and t.isprintable()


def parse_block(obj: Any) -> Block:
    """Parse an untrusted dict into a :class:`Block` and :func:`check_block` it.

    Raises :class:`BlockError` (naming the field) and nothing else, whatever ``obj`` is.
    """
    try:
        d = _dict(obj, "block", _BLOCK_KEYS)
        block = Block(
            chain_id=_str(
                d["chain_id"],
                "block.chain_id",
                lambda s: bool(CHAIN_ID_RE.fullmatch(s)),
                "1-128 characters of letters, digits, '.', '_' or '-'",
            ),
            height=_int(d["height"], "block.height", 1),
            prev_hash=_hex(d["prev_hash"], "block.prev_hash"),
            round_seed=_hex(d["round_seed"], "block.round_seed"),
            beacon=_hex(d["beacon"], "block.beacon"),
            task=_str(d["task"], "block.task", _task_ok, "1-128 printable characters"),
            model_before=_hex(d["model_before"], "block.model_before"),
            model_after=_hex(d["model_after"], "block.model_after"),
            rule=_str(
                d["rule"],
                "block.rule",
                lambda s: bool(_RULE.fullmatch(s)),
                "a rule name (lowercase letters, digits, '_' or '-')",
            ),
            submissions=_list(d["submissions"], "block.submissions", _parse_submission),
            rewards=_list(d["rewards"], "block.rewards", _parse_amount),
            penalties=_list(d["penalties"], "block.penalties", _parse_penalty),
            validator_fees=_list(d["validator_fees"], "block.validator_fees", _parse_amount),
        )
        check_block(block)
        return block
    except BlockError:
        raise
    except (RecursionError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise BlockError(f"block: malformed ({type(exc).__name__})") from None


def _sorted_unique(addresses: list[str], what: str) -> None:
    for i in range(1, len(addresses)):
        if addresses[i] <= addresses[i - 1]:
            word = "duplicate" if addresses[i] == addresses[i - 1] else "out of order"
            raise BlockError(f"{what}[{i}]: {word} (must be sorted by address, unique)")


def check_block(block: Block) -> None:
    """The block's own consistency rules (see the module docstring); raises :class:`BlockError`."""
    if block.height == 1 and block.prev_hash != GENESIS_PREV:
        raise BlockError("block.prev_hash: block 1 must follow GENESIS_PREV")
    miners = [s.miner for s in block.submissions]
    _sorted_unique(miners, "block.submissions")
    _sorted_unique([a for a, _ in block.rewards], "block.rewards")
    _sorted_unique([p[0] for p in block.penalties], "block.penalties")
    _sorted_unique([a for a, _ in block.validator_fees], "block.validator_fees")
    accepted: list[str] = []
    penalised: dict[str, str] = {}
    for i, s in enumerate(block.submissions):
        v = s.verdict
        if v.kind == "accepted":
            if s.samples < 1:
                raise BlockError(f"block.submissions[{i}].samples: accepted work has samples")
            accepted.append(s.miner)
        elif v.kind == "slashed" or v.code in MALFORMED_CODES:
            assert v.code is not None
            penalised[s.miner] = v.code
    if [a for a, _ in block.rewards] != accepted:
        raise BlockError("block.rewards: must name exactly the accepted miners")
    if [p[0] for p in block.penalties] != sorted(penalised):
        raise BlockError(
            "block.penalties: must name exactly the slashed miners and those rejected as malformed"
        )
    for i, (address, _, code) in enumerate(block.penalties):
        if penalised[address] != code:
            raise BlockError(
                f"block.penalties[{i}].code: the verdict's code is {penalised[address]!r}"
            )
