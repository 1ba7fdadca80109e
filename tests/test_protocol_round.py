"""The round state machine: every refusal code, replays never hurt the replayed miner, a second
different submission is the signer's own ``duplicate``, late and oversize intake, missing
payloads fetched and checked, a deterministic freeze whatever the arrival order (property) and
no event sequence that makes it raise (property); the commitments it checks; and
``verify_round``'s de-duplication of byte-identical repeats."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pot_cli.protocol.round as round_mod
from pot_cli.crypto import Identity, sha256, sha256_hex
from pot_cli.protocol.block import REJECT_CODES
from pot_cli.protocol.commitments import (
    SIGN_DOMAIN,
    commitment_body,
    sign_commitment,
    verify_commitment,
)
from pot_cli.protocol.round import (
    PHASES,
    REFUSAL_CODES,
    ROUND_FULL,
    Action,
    BlockCommitted,
    Committed,
    Event,
    FetchPayload,
    FreezeSet,
    PayloadFetched,
    PayloadRefused,
    RoundError,
    RoundMachine,
    RoundParams,
    RoundVerified,
    StartVerification,
    SubmissionReceived,
    SubmissionRefused,
    Tick,
    VerificationFinished,
)
from pot_cli.training.verification import RoundVerification, Submission

CHAIN = "pot-test"
HEIGHT = 7
MH = "ab" * 32
DEADLINE = 100
FETCH_DEADLINE = 150
LIMIT = 64

IDS = sorted(
    (Identity.from_seed(sha256(f"round/miner/{i}".encode())) for i in range(8)),
    key=lambda i: i.address,
)
ADDR = [i.address for i in IDS]
HONEST = ADDR[:5]  # admitted
EJECTED, UNSTAKED, UNKNOWN = ADDR[5], ADDR[6], ADDR[7]
KEYS = {i.address: i.public_key for i in IDS[:7]}  # UNKNOWN has no account
BY_ADDR = {i.address: i for i in IDS}


def _params(**kw: Any) -> RoundParams:
    base: dict[str, Any] = {
        "chain_id": CHAIN,
        "height": HEIGHT,
        "model_hash": MH,
        "round_seed": b"seed",
        "deadline": DEADLINE,
        "max_payload_bytes": LIMIT,
        "miner_keys": KEYS,
        "admitted": frozenset(HONEST),
        "ejected": frozenset({EJECTED}),
        "fetch_deadline": FETCH_DEADLINE,
    }
    base.update(kw)
    return RoundParams(**base)


def _payload(address: str, variant: int = 0) -> bytes:
    return f"gradient {address[:16]} v{variant}".encode()


def _signed(address: str, payload: bytes, **kw: Any) -> tuple[str, bytes]:
    chain, height, mh = kw.get("chain", CHAIN), kw.get("height", HEIGHT), kw.get("mh", MH)
    return sign_commitment(BY_ADDR[address], chain, height, mh, payload)


def _submit(
    address: str, variant: int = 0, now: int = 0, with_bytes: bool = True
) -> SubmissionReceived:
    payload = _payload(address, variant)
    digest, sig = _signed(address, payload)
    return SubmissionReceived(address, digest, sig, payload if with_bytes else None, now)


def _refusals(actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.miner, a.code) for a in actions if isinstance(a, SubmissionRefused)]


def _only(actions: list[Action], kind: type) -> Any:
    found = [a for a in actions if isinstance(a, kind)]
    assert len(found) == 1, actions
    return found[0]


EMPTY = RoundVerification(verdicts={}, accepted={}, spot_seed=b"")


# ------------------------------------------------------------------------------ the happy path


def test_a_round_from_open_to_committed() -> None:
    m = RoundMachine(_params())
    assert m.phase == "open"
    for a in reversed(HONEST):
        assert m.step(_submit(a)) == []
    out = m.step(Tick(DEADLINE - 1))
    assert out == [] and m.phase == "open"
    out = m.step(Tick(DEADLINE))
    freeze, start = out
    assert isinstance(freeze, FreezeSet) and isinstance(start, StartVerification)
    assert freeze.frozen == tuple((a, sha256_hex(_payload(a))) for a in sorted(HONEST))
    assert [s.address for s in start.submissions] == sorted(HONEST)
    assert all(s.payload == _payload(s.address) for s in start.submissions)
    assert m.phase == "verifying"
    assert [c.miner for c in m.commitments] == sorted(HONEST)
    assert m.step(VerificationFinished("another job", EMPTY)) == []
    assert m.step(VerificationFinished(start.job_id, EMPTY)) == [RoundVerified(start.job_id, EMPTY)]
    assert m.phase == "verified" and m.verification is EMPTY
    assert m.step(BlockCommitted(HEIGHT + 1, "x")) == []
    assert m.step(BlockCommitted(HEIGHT, "beef")) == [Committed(HEIGHT, "beef")]
    assert m.phase == "committed" and m.block_hash == "beef"
    assert m.step(BlockCommitted(HEIGHT, "beef")) == []


def test_an_empty_round_still_freezes_and_verifies_nothing() -> None:
    m = RoundMachine(_params())
    out = m.step(Tick(DEADLINE + 5))
    assert out == [FreezeSet(()), StartVerification(m.job_id, ())]


def test_params_are_checked() -> None:
    with pytest.raises(RoundError):
        _params(fetch_deadline=DEADLINE - 1)
    with pytest.raises(RoundError):
        _params(max_submissions=0)
    assert _params(fetch_deadline=None).payload_deadline == DEADLINE


# ---------------------------------------------------------------------------------- refusals


def _case(code: str) -> tuple[RoundParams, list[SubmissionReceived], SubmissionReceived]:
    """(params, events before, the event refused with ``code``)."""
    a = HONEST[0]
    p = _params()
    payload = _payload(a)
    digest, sig = _signed(a, payload)
    ev = SubmissionReceived(a, digest, sig, payload, 0)
    if code == "late":
        return p, [], replace(ev, now=DEADLINE)
    if code == "wrong-chain":
        return p, [], replace(ev, chain_id="other-chain")
    if code == "wrong-height":
        return p, [], replace(ev, height=HEIGHT + 1)
    if code == "wrong-model":
        return p, [], replace(ev, model_hash="cd" * 32)
    if code == "unknown-miner":
        return p, [], _submit(UNKNOWN)
    if code == "ejected":
        return p, [], _submit(EJECTED)
    if code == "not-staked":
        return p, [], _submit(UNSTAKED)
    if code == "malformed":
        return p, [], replace(ev, payload_hash=digest.upper())
    if code == "oversize":
        return p, [], replace(ev, payload=b"x" * (LIMIT + 1))
    if code == "bad-signature":
        return p, [], replace(ev, commitment_sig=_signed(HONEST[1], payload)[1])
    if code == "duplicate":
        return p, [ev], _submit(a, variant=1)
    if code == ROUND_FULL:
        return _params(max_submissions=1), [_submit(HONEST[1])], ev
    raise AssertionError(code)


@pytest.mark.parametrize("code", REFUSAL_CODES)
def test_every_refusal_code(code: str) -> None:
    assert set(REFUSAL_CODES) <= set(REJECT_CODES) | {ROUND_FULL}
    params, before, ev = _case(code)
    m = RoundMachine(params)
    for e in before:
        assert _refusals(m.step(e)) == []
    kept = m.commitments
    out = m.step(ev)
    assert _refusals(out) == [(ev.miner, code)]
    refusal = _only(out, SubmissionRefused)
    assert refusal.reason
    assert m.commitments == kept  # a refused message changes nothing that is kept


def test_a_signature_of_another_round_or_chain_does_not_verify() -> None:
    a = HONEST[0]
    payload = _payload(a)
    for kw in ({"chain": "other"}, {"height": HEIGHT + 1}, {"mh": "cd" * 32}):
        digest, sig = _signed(a, payload, **kw)
        out = RoundMachine(_params()).step(SubmissionReceived(a, digest, sig, payload, 0))
        assert _refusals(out) == [(a, "bad-signature")], kw


def test_oversize_is_refused_before_hashing_and_before_the_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def spy(name: str, result: object) -> Any:
        def call(*args: object) -> object:
            calls.append(name)
            return result

        return call

    monkeypatch.setattr(round_mod, "sha256_hex", spy("hash", ""))
    monkeypatch.setattr(round_mod, "verify_commitment", spy("sig", True))
    a = HONEST[0]
    ev = replace(_submit(a), payload=b"\0" * (10 * LIMIT))
    assert _refusals(RoundMachine(_params()).step(ev)) == [(a, "oversize")]
    assert calls == []


def test_bytes_that_do_not_match_the_signed_hash_are_refused() -> None:
    a = HONEST[0]
    ev = replace(_submit(a), payload=b"not the signed bytes")
    m = RoundMachine(_params())
    assert _refusals(m.step(ev)) == [(a, "bad-signature")]
    assert m.commitments == ()


# ------------------------------------------------------------- replays and duplicates


def test_a_replayed_honest_submission_is_ignored_and_never_hurts_the_miner() -> None:
    a, b = HONEST[0], HONEST[1]
    m = RoundMachine(_params())
    honest = _submit(a)
    # an attacker relays the honest commitment first, with junk bytes: refused, nothing kept
    assert _refusals(m.step(replace(honest, payload=b"junk"))) == [(a, "bad-signature")]
    assert m.step(honest) == []
    assert m.step(_submit(b)) == []
    # byte-identical replays, before and after the deadline, and one with other bytes attached
    assert m.step(honest) == []
    assert m.step(replace(honest, payload=b"junk")) == []
    out = m.step(replace(honest, now=DEADLINE + 1))
    assert _refusals(out) == []
    start = _only(out, StartVerification)
    assert [s.address for s in start.submissions] == [a, b]
    assert m.step(replace(honest, now=DEADLINE + 2)) == []


def test_a_commitment_relayed_without_bytes_is_completed_by_the_miner_s_own_copy() -> None:
    a = HONEST[0]
    m = RoundMachine(_params())
    assert m.step(_submit(a, with_bytes=False)) == []
    assert m.missing == (a,)
    assert m.step(_submit(a)) == []  # the same commitment, now with its bytes
    assert m.missing == ()
    start = _only(m.step(Tick(DEADLINE)), StartVerification)
    assert start.submissions == (Submission(a, _payload(a), sha256_hex(_payload(a))),)


def test_a_second_different_submission_is_the_signer_s_duplicate() -> None:
    a = HONEST[0]
    m = RoundMachine(_params())
    first = _submit(a)
    assert m.step(first) == []
    assert _refusals(m.step(_submit(a, variant=1))) == [(a, "duplicate")]
    assert _refusals(m.step(_submit(a, variant=1, with_bytes=False))) == [(a, "duplicate")]
    freeze = _only(m.step(Tick(DEADLINE)), FreezeSet)
    assert freeze.frozen == ((a, first.payload_hash),)


def test_round_full_keeps_replays_and_the_kept_miners() -> None:
    m = RoundMachine(_params(max_submissions=2))
    assert m.step(_submit(HONEST[0])) == [] and m.step(_submit(HONEST[1])) == []
    assert _refusals(m.step(_submit(HONEST[2]))) == [(HONEST[2], ROUND_FULL)]
    assert m.step(_submit(HONEST[0])) == []


# ------------------------------------------------------------------------- time and payloads


def test_a_late_submission_freezes_the_set_first() -> None:
    m = RoundMachine(_params())
    m.step(_submit(HONEST[0]))
    out = m.step(_submit(HONEST[1], now=DEADLINE))
    assert isinstance(out[0], FreezeSet) and isinstance(out[1], StartVerification)
    assert out[2:] == [_only(out, SubmissionRefused)]
    assert _refusals(out) == [(HONEST[1], "late")]
    # the clock never goes back: an earlier ``now`` afterwards is still late
    assert _refusals(m.step(_submit(HONEST[2], now=0))) == [(HONEST[2], "late")]


def test_missing_payloads_are_fetched_at_the_freeze_and_checked() -> None:
    a, b, c = HONEST[:3]
    m = RoundMachine(_params())
    for ev in (_submit(c, with_bytes=False), _submit(a, with_bytes=False), _submit(b)):
        assert m.step(ev) == []
    out = m.step(Tick(DEADLINE))
    ha, hc = sha256_hex(_payload(a)), sha256_hex(_payload(c))
    assert out == [
        FreezeSet(tuple(sorted([(a, ha), (b, sha256_hex(_payload(b))), (c, hc)]))),
        FetchPayload(ha, a),
        FetchPayload(hc, c),
    ]
    assert m.phase == "frozen"
    out = m.step(PayloadFetched(ha, b"wrong bytes", DEADLINE + 1))
    wrong = _only(out, PayloadRefused)
    assert out == [wrong] and (wrong.payload_hash, wrong.code) == (ha, "bad-signature")
    big = _only(m.step(PayloadFetched(ha, b"x" * (LIMIT + 1), DEADLINE + 1)), PayloadRefused)
    assert (big.payload_hash, big.code) == (ha, "oversize")
    assert m.step(PayloadFetched("00" * 32, b"nobody asked", DEADLINE + 1)) == []
    assert m.step(PayloadFetched(ha, _payload(a), DEADLINE + 2)) == []  # c still missing
    assert m.missing == (c,)
    start = _only(m.step(PayloadFetched(hc, _payload(c), DEADLINE + 3)), StartVerification)
    assert [s.address for s in start.submissions] == [a, b, c]
    assert m.refused == {}


def test_a_payload_missing_at_the_fetch_deadline_is_late() -> None:
    a, b = HONEST[:2]
    m = RoundMachine(_params())
    m.step(_submit(a, with_bytes=False))
    m.step(_submit(b))
    m.step(Tick(DEADLINE))
    assert m.step(Tick(FETCH_DEADLINE - 1)) == []
    out = m.step(Tick(FETCH_DEADLINE))
    assert _refusals(out) == [(a, "late")]
    assert [s.address for s in _only(out, StartVerification).submissions] == [b]
    assert m.refused == {a: "late"} and m.frozen is not None and len(m.frozen) == 2
    assert m.step(PayloadFetched(sha256_hex(_payload(a)), _payload(a), FETCH_DEADLINE)) == []
    assert m.step(_submit(a)) == []  # a replay after it all: still ignored


def test_no_fetch_grace_by_default() -> None:
    a = HONEST[0]
    m = RoundMachine(_params(fetch_deadline=None))
    m.step(_submit(a, with_bytes=False))
    out = m.step(Tick(DEADLINE))
    assert [type(x) for x in out] == [FreezeSet, FetchPayload, SubmissionRefused, StartVerification]


# ------------------------------------------------------------------------------- properties

# Messages whose fate does not depend on arrival order: one honest submission per miner (with
# or without its bytes), replays, and messages refused whatever came before.
ORDER_FREE = [
    *(_submit(a) for a in HONEST[:4]),
    _submit(HONEST[4], with_bytes=False),
    _submit(HONEST[0]),  # a replay
    replace(_submit(HONEST[1]), payload=b"tampered"),
    _submit(UNKNOWN),
    _submit(EJECTED),
    _submit(UNSTAKED),
    replace(_submit(HONEST[2]), commitment_sig=b"\0" * 64),
]


def _run(events: list[Event]) -> list[Action]:
    m = RoundMachine(_params())
    out: list[Action] = []
    for e in events:
        out += m.step(e)
    return out


REFERENCE = _run([*ORDER_FREE, Tick(DEADLINE)])


@settings(max_examples=60, deadline=None)
@given(st.permutations(ORDER_FREE))
def test_the_freeze_does_not_depend_on_arrival_order(events: list[SubmissionReceived]) -> None:
    out = _run([*events, Tick(DEADLINE)])

    def outcome(actions: list[Action]) -> list[Action]:
        return [a for a in actions if isinstance(a, FreezeSet | StartVerification | FetchPayload)]

    assert outcome(out) == outcome(REFERENCE)
    # the answers too, but for the tampered copy: refused before the miner's own submission
    # arrives, ignored (not even hashed) as a replay after it
    tampered = (HONEST[1], "bad-signature")
    assert sorted(r for r in _refusals(out) if r != tampered) == sorted(
        r for r in _refusals(REFERENCE) if r != tampered
    )


_A = HONEST[0]
_POOL_PAYLOADS = [_payload(_A), _payload(_A, 1), b"", b"x" * (LIMIT + 1), b"junk"]
_POOL_HASHES = [sha256_hex(p) for p in _POOL_PAYLOADS[:2]] + ["zz", "00" * 32]


@st.composite
def _events(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from(["submit", "submit", "submit", "tick", "fetch", "done", "commit"]))
    now = draw(st.integers(-5, FETCH_DEADLINE + 20))
    if kind == "submit":
        miner = draw(st.sampled_from([*ADDR, "", "pot1bogus"]))
        payload = draw(st.sampled_from(_POOL_PAYLOADS))
        signer = draw(st.sampled_from(IDS))
        digest, sig = sign_commitment(signer, CHAIN, HEIGHT, MH, payload)
        digest = draw(st.sampled_from([digest, *_POOL_HASHES]))
        sig = draw(st.sampled_from([sig, b"", b"\1" * 64]))
        return SubmissionReceived(
            miner,
            digest,
            sig,
            draw(st.sampled_from([payload, None, *_POOL_PAYLOADS])),
            now,
            draw(st.sampled_from([None, CHAIN, "x"])),
            draw(st.sampled_from([None, HEIGHT, 0])),
            draw(st.sampled_from([None, MH])),
        )
    if kind == "tick":
        return Tick(now)
    if kind == "fetch":
        return PayloadFetched(
            draw(st.sampled_from(_POOL_HASHES)), draw(st.sampled_from(_POOL_PAYLOADS)), now
        )
    if kind == "done":
        return VerificationFinished(draw(st.sampled_from([f"{CHAIN}/{HEIGHT}/verify", "x"])), EMPTY)
    return BlockCommitted(draw(st.sampled_from([HEIGHT, HEIGHT + 1])), "ff")


@settings(max_examples=120, deadline=None)
@given(st.lists(_events(), max_size=25), st.integers(1, 3))
def test_no_event_sequence_makes_it_raise(events: list[Event], max_submissions: int) -> None:
    m = RoundMachine(_params(max_submissions=max_submissions))
    freezes = starts = 0
    for e in events:
        for a in m.step(e):
            if isinstance(a, SubmissionRefused | PayloadRefused):
                assert a.code in REFUSAL_CODES and a.reason
            freezes += isinstance(a, FreezeSet)
            starts += isinstance(a, StartVerification)
            if isinstance(a, StartVerification):
                for s in a.submissions:
                    assert sha256_hex(s.payload) == s.payload_hash
                    assert len(s.payload) <= LIMIT
        assert m.phase in PHASES
        assert len(m.commitments) <= max_submissions
        assert len({c.miner for c in m.commitments}) == len(m.commitments)
        assert all(c.miner in HONEST for c in m.commitments)
    assert freezes <= 1 and starts <= 1


# ------------------------------------------------------------------------------ commitments


def test_commitments_sign_what_the_simulation_always_signed() -> None:
    ident = IDS[0]
    payload = b"bytes"
    digest, sig = sign_commitment(ident, CHAIN, HEIGHT, MH, payload)
    assert digest == sha256_hex(payload)
    assert commitment_body(MH, digest) == {"model_hash": MH, "payload_hash": digest}
    assert sig == ident.sign_message(SIGN_DOMAIN, CHAIN, HEIGHT, commitment_body(MH, digest))
    assert verify_commitment(ident.public_key, sig, CHAIN, HEIGHT, MH, digest)
    assert not verify_commitment(ident.public_key, sig, CHAIN, HEIGHT + 1, MH, digest)
    assert not verify_commitment(IDS[1].public_key, sig, CHAIN, HEIGHT, MH, digest)
    assert not verify_commitment(ident.public_key, b"short", CHAIN, HEIGHT, MH, digest)


# ------------------------------------------------------------------- verify_round dedupe


def test_verify_round_counts_a_byte_identical_repeat_once() -> None:
    """A replayed honest submission reaching ``verify_round`` (e.g. from a relaying peer) is
    verified once: accepted, and the spot-check seed is the one without the repeat."""
    from pot_cli.training.assignment import assign_batch
    from pot_cli.training.codec import encode_gradient
    from pot_cli.training.gradients import compute_gradient, torch_threads
    from pot_cli.training.state import model_hash
    from pot_cli.training.tasks import load_task
    from pot_cli.training.verification import RoundContext, VerificationPolicy, verify_round

    task = load_task("digits")
    params = task.initial_params()
    mh = model_hash(params)
    with torch_threads(1):
        subs = [
            Submission(
                a,
                encode_gradient(
                    task,
                    compute_gradient(
                        task, params, assign_batch(b"s", a, task.train_size, task.batch_size)
                    ),
                    model_hash=mh,
                    height=1,
                ),
            )
            for a in HONEST[:3]
        ]
        ctx = RoundContext(task, 1, b"s", params, mh)
        policy = VerificationPolicy(spot_check_rate=1.0)
        once = verify_round(ctx, subs, policy)
        twice = verify_round(ctx, [subs[0], *subs, subs[0]], policy)
    assert all(v.accepted for v in twice.verdicts.values()), twice.verdicts
    assert twice.spot_seed == once.spot_seed and twice.recomputed == once.recomputed == 3
    assert sorted(twice.accepted) == sorted(once.accepted) == sorted(HONEST[:3])
    for a in once.accepted:
        assert once.accepted[a].dim() == 1 and once.accepted[a].numel() == task.num_params
