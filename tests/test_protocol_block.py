"""Blocks: round trip, strict parsing of untrusted dicts, hash sensitivity, 10,000 submissions."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pot_cli.crypto import address_from_public_key, sha256, sha256_hex
from pot_cli.protocol.block import (
    FORGERY_CODES,
    GENESIS_PREV,
    MALFORMED_CODES,
    MAX_SUBMISSIONS,
    REJECT_CODES,
    Block,
    BlockError,
    SubmissionRecord,
    Verdict,
    block_hash,
    check_block,
    parse_block,
)


def _addr(i: int) -> str:
    return address_from_public_key(sha256(f"block-test/{i}".encode()))


def _h(tag: str) -> str:
    return sha256_hex(tag.encode())


def _sub(miner: str, verdict: Verdict, samples: int = 32) -> SubmissionRecord:
    return SubmissionRecord(
        miner, _h("p" + miner), _h("s1" + miner) + _h("s2" + miner), samples, verdict
    )


def _block(height: int = 2) -> Block:
    m = sorted(_addr(i) for i in range(5))
    v = sorted(_addr(100 + i) for i in range(4))
    subs = (
        _sub(m[0], Verdict.accepted()),
        _sub(m[1], Verdict.rejected("late")),
        _sub(m[2], Verdict.slashed("recompute-mismatch", {"rel_error_ppm": 412_000, "seed": "ab"})),
        _sub(m[3], Verdict.rejected("non-finite")),
        _sub(m[4], Verdict.accepted(), samples=64),
    )
    return Block(
        chain_id="pot-devnet-1",
        height=height,
        prev_hash=GENESIS_PREV if height == 1 else _h("prev"),
        round_seed=_h("seed"),
        beacon=_h("beacon"),
        task="digits",
        model_before=_h("m0"),
        model_after=_h("m1"),
        rule="clipped_mean",
        submissions=subs,
        rewards=((m[0], 266_667), (m[4], 533_333)),
        penalties=((m[2], 10_000_000, "recompute-mismatch"), (m[3], 100_000, "non-finite")),
        validator_fees=tuple((a, 50_000) for a in v),
    )


def _wire() -> dict[str, Any]:
    return _block().to_dict()


def _err(d: Any) -> str:
    with pytest.raises(BlockError) as info:
        parse_block(d)
    return str(info.value)


def test_round_trip_through_json() -> None:
    for height in (1, 2):
        b = _block(height)
        d = json.loads(json.dumps(b.to_dict()))
        back = parse_block(d)
        assert back == b
        assert back.to_dict() == d
        assert block_hash(back) == block_hash(b)
    check_block(_block())


def test_reject_codes_documented() -> None:
    assert set(FORGERY_CODES | MALFORMED_CODES).issubset(REJECT_CODES)
    assert not FORGERY_CODES & MALFORMED_CODES
    assert all(isinstance(t, str) and t for t in REJECT_CODES.values())


def test_extra_and_missing_keys() -> None:
    d = _wire()
    d["extra"] = 1
    assert "block: unknown fields ['extra']" in _err(d)
    d = _wire()
    del d["beacon"]
    assert "missing fields ['beacon']" in _err(d)
    d = _wire()
    d["submissions"][1]["note"] = "x"
    assert _err(d).startswith("block.submissions[1]: unknown fields ['note']")
    d = _wire()
    del d["submissions"][0]["verdict"]["evidence"]
    assert _err(d).startswith("block.submissions[0].verdict: unknown fields [], missing")
    d = _wire()
    d["penalties"][0]["eject"] = True
    assert _err(d).startswith("block.penalties[0]: unknown fields ['eject']")
    assert _err([]) == "block: expected an object, got list"


@pytest.mark.parametrize(
    "field", ["prev_hash", "round_seed", "beacon", "model_before", "model_after"]
)
@pytest.mark.parametrize("bad", ["ab" * 31, "AB" * 32, "zz" * 32, 5, None, "ab" * 33])
def test_bad_hex(field: str, bad: Any) -> None:
    d = _wire()
    d[field] = bad
    assert _err(d) == f"block.{field}: expected 64 lowercase hex characters"


def test_bad_submission_fields() -> None:
    d = _wire()
    d["submissions"][2]["commitment_sig"] = "ab" * 32
    assert _err(d) == "block.submissions[2].commitment_sig: expected 128 lowercase hex characters"
    d = _wire()
    d["submissions"][2]["payload_hash"] = "x"
    assert _err(d) == "block.submissions[2].payload_hash: expected 64 lowercase hex characters"
    d = _wire()
    d["submissions"][0]["miner"] = d["submissions"][0]["miner"][:-1] + "x"
    assert _err(d).startswith("block.submissions[0].miner: expected a pot1 address")
    d = _wire()
    d["submissions"][0]["samples"] = -1
    assert _err(d).startswith("block.submissions[0].samples: expected an integer in [0, ")
    d = _wire()
    d["submissions"][0]["samples"] = 0
    assert _err(d).startswith("block.submissions[0].samples: accepted work has samples")


def test_unsorted_or_duplicate_lists() -> None:
    d = _wire()
    d["submissions"][0], d["submissions"][1] = d["submissions"][1], d["submissions"][0]
    assert _err(d) == "block.submissions[1]: out of order (must be sorted by address, unique)"
    d = _wire()
    d["submissions"][1] = copy.deepcopy(d["submissions"][0])
    assert _err(d) == "block.submissions[1]: duplicate (must be sorted by address, unique)"
    for key in ("rewards", "penalties", "validator_fees"):
        d = _wire()
        d[key].reverse()
        assert _err(d) == f"block.{key}[1]: out of order (must be sorted by address, unique)"
        d = _wire()
        d[key][1] = copy.deepcopy(d[key][0])
        assert _err(d).startswith(f"block.{key}[1]: duplicate")


def _set(d: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    for p in path[:-1]:
        d = d[p]
    d[path[-1]] = value


INT_PATHS: list[tuple[Any, ...]] = [
    ("height",),
    ("submissions", 0, "samples"),
    ("rewards", 0, "amount"),
    ("penalties", 1, "amount"),
    ("validator_fees", 3, "amount"),
    ("submissions", 2, "verdict", "evidence", "rel_error_ppm"),
]


@pytest.mark.parametrize("path", INT_PATHS)
@pytest.mark.parametrize("bad", [1.0, 0.5, True, False, "1", 2**63, None])
def test_floats_bools_and_out_of_range_refused(path: tuple[Any, ...], bad: Any) -> None:
    if path[-1] == "rel_error_ppm" and isinstance(bad, str):
        return  # evidence values may be integers or strings
    d = _wire()
    _set(d, path, bad)
    where = "block." + ".".join(f"[{p}]" if isinstance(p, int) else p for p in path)
    where = where.replace(".[", "[")
    msg = _err(d)
    assert msg.startswith(where), msg


def test_verdict_rules() -> None:
    def with_verdict(i: int, v: dict[str, Any]) -> str:
        d = _wire()
        d["submissions"][i]["verdict"] = v
        return _err(d)

    assert "not a rejection code" in with_verdict(
        1, {"kind": "rejected", "code": "nope", "evidence": None}
    )
    assert "not a rejection code" in with_verdict(
        1, {"kind": "rejected", "code": "copy", "evidence": None}
    )
    assert "not a rejection code" in with_verdict(
        1, {"kind": "rejected", "code": None, "evidence": None}
    )
    assert "only a slashed verdict" in with_verdict(
        1, {"kind": "rejected", "code": "late", "evidence": {"a": 1}}
    )
    assert "no code and no evidence" in with_verdict(
        0, {"kind": "accepted", "code": "late", "evidence": None}
    )
    assert "expected one of" in with_verdict(
        2, {"kind": "slashed", "code": "late", "evidence": {"a": 1}}
    )
    assert "expected an object of 1-16" in with_verdict(
        2, {"kind": "slashed", "code": "copy", "evidence": None}
    )
    assert "bad key" in with_verdict(2, {"kind": "slashed", "code": "copy", "evidence": {"A": 1}})
    assert ".kind: expected one of" in with_verdict(
        0, {"kind": "ok", "code": None, "evidence": None}
    )
    assert "evidence.x: expected an integer" in with_verdict(
        2, {"kind": "slashed", "code": "copy", "evidence": {"x": [1]}}
    )


def test_amounts_consistent_with_verdicts() -> None:
    d = _wire()
    d["rewards"].pop()
    assert _err(d) == "block.rewards: must name exactly the accepted miners"
    d = _wire()
    d["penalties"].pop()
    assert _err(d).startswith("block.penalties: must name exactly")
    d = _wire()
    d["penalties"][0]["code"] = "copy"
    assert _err(d) == "block.penalties[0].code: the verdict's code is 'recompute-mismatch'"
    d = _wire()
    d["penalties"][0]["code"] = "late"
    assert _err(d).startswith("block.penalties[0].code: not a penalised code")
    d = _block(1).to_dict()
    d["prev_hash"] = _h("x")
    assert _err(d) == "block.prev_hash: block 1 must follow GENESIS_PREV"
    d = _wire()
    d["height"] = 0
    assert _err(d).startswith("block.height: expected an integer in [1, ")


def test_strings() -> None:
    for key, bad in [("chain_id", "bad id"), ("task", ""), ("rule", "Mean"), ("rule", 3)]:
        d = _wire()
        d[key] = bad
        assert _err(d).startswith(f"block.{key}: expected")


def test_never_raises_anything_else() -> None:
    garbage: Any
    for garbage in [None, 1, "x", [], {"submissions": 1}, {k: None for k in _wire()}]:
        with pytest.raises(BlockError):
            parse_block(garbage)
    d = _wire()
    d["submissions"] = [None]
    assert _err(d) == "block.submissions[0]: expected an object, got NoneType"
    d = _wire()
    d["submissions"] = [{}] * (MAX_SUBMISSIONS + 1)
    assert _err(d) == f"block.submissions: expected a list of at most {MAX_SUBMISSIONS} items"


def _variants() -> list[Block]:
    b = _block()
    subs = list(b.submissions)
    out = [
        dataclasses.replace(b, chain_id="pot-devnet-2"),
        dataclasses.replace(b, height=3),
        dataclasses.replace(b, prev_hash=_h("x")),
        dataclasses.replace(b, round_seed=_h("x")),
        dataclasses.replace(b, beacon=_h("x")),
        dataclasses.replace(b, task="other"),
        dataclasses.replace(b, model_before=_h("x")),
        dataclasses.replace(b, model_after=_h("x")),
        dataclasses.replace(b, rule="median"),
        dataclasses.replace(b, submissions=tuple(subs[:-1])),
        dataclasses.replace(b, submissions=(dataclasses.replace(subs[0], samples=33), *subs[1:])),
        dataclasses.replace(
            b, submissions=(dataclasses.replace(subs[0], payload_hash=_h("x")), *subs[1:])
        ),
        dataclasses.replace(
            b,
            submissions=(
                subs[0],
                dataclasses.replace(subs[1], verdict=Verdict.rejected("duplicate")),
                *subs[2:],
            ),
        ),
        dataclasses.replace(b, rewards=((b.rewards[0][0], 1), b.rewards[1])),
        dataclasses.replace(
            b, penalties=((b.penalties[0][0], 1, b.penalties[0][2]), b.penalties[1])
        ),
        dataclasses.replace(b, validator_fees=b.validator_fees[:-1]),
    ]
    return out


def test_hash_changes_with_any_field() -> None:
    hashes = {block_hash(_block())} | {block_hash(v) for v in _variants()}
    assert len(hashes) == 1 + len(_variants())


@given(st.integers(1, 2**63 - 1), st.text(min_size=1, max_size=20).filter(str.isprintable))
@settings(max_examples=50, deadline=None)
def test_round_trip_property(height: int, task: str) -> None:
    b = dataclasses.replace(_block(), height=height, task=task)
    if height == 1:
        b = dataclasses.replace(b, prev_hash=GENESIS_PREV)
    assert parse_block(json.loads(json.dumps(b.to_dict(), ensure_ascii=False))) == b


def test_ten_thousand_submissions_parse_quickly() -> None:
    miners = sorted(_addr(i) for i in range(MAX_SUBMISSIONS))
    subs = tuple(
        _sub(m, Verdict.accepted() if i % 10 else Verdict.rejected("late"))
        for i, m in enumerate(miners)
    )
    rewards = tuple((s.miner, 80) for s in subs if s.verdict.kind == "accepted")
    b = Block(
        "pot-devnet-1",
        7,
        _h("prev"),
        _h("seed"),
        _h("beacon"),
        "digits",
        _h("a"),
        _h("b"),
        "mean",
        subs,
        rewards,
        (),
        ((_addr(-1), 1),),
    )
    d = json.loads(json.dumps(b.to_dict()))
    start = time.perf_counter()
    back = parse_block(d)
    elapsed = time.perf_counter() - start
    assert back == b
    assert elapsed < 2.0, elapsed
    assert len(block_hash(back)) == 64
