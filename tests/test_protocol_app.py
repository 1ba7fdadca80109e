"""The PoT application PBFT replicates: a block derived by one validator validates on another
and is refused when any field is tampered with or a submission was censored; four replicas
over a FIFO network agree round after round (forgers slashed, ejected and refused next round);
snapshots round-trip; executing the same blocks is deterministic."""

from __future__ import annotations

import copy
import json
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
import torch

from pot_cli.consensus.app import Validity
from pot_cli.consensus.config import ReplicaConfig
from pot_cli.consensus.host import ReplicaHost
from pot_cli.consensus.messages import proposal_digest
from pot_cli.consensus.replica import Output, Replica
from pot_cli.consensus.wal import MemoryWal
from pot_cli.crypto import Identity, sha256
from pot_cli.errors import PotError
from pot_cli.protocol.app import ChainError, PotApp, RoundInfo, parse_proposal
from pot_cli.protocol.beacon import BeaconMessage, Onion, make_reveal, onion_commit
from pot_cli.protocol.block import GENESIS_PREV, Block, Verdict, block_hash, parse_block
from pot_cli.protocol.commitments import sign_commitment
from pot_cli.protocol.derive import (
    DEFAULT_BAND,
    PPM,
    Judged,
    RoundRules,
    block_verdict,
    reconcile,
)
from pot_cli.protocol.genesis import Genesis, parse_genesis
from pot_cli.protocol.round import (
    Action,
    BroadcastBeacon,
    FetchPayload,
    RelaySubmission,
    SubmissionRefused,
)
from pot_cli.sim.attacks import ForgeContext, forge
from pot_cli.training.assignment import assign_batch
from pot_cli.training.codec import Compression, encode_gradient
from pot_cli.training.gradients import Numerics, compute_gradient
from pot_cli.training.tasks import load_task
from pot_cli.training.verification import (
    RoundContext,
    Statistics,
    Submission,
    VerificationPolicy,
    verify_round,
)
from pot_cli.training.verification import Verdict as CheckVerdict

# The smallest task there is: a gradient costs well under a millisecond.
TASK = "tiny"
CHAIN = "pot-app-test"
ROUND_TIME = 100
GRACE = 10
STAKE = 100
BEACON_ROUNDS = 64


def _identity(kind: str, i: int) -> Identity:
    return Identity.from_seed(sha256(f"pot/app-test/{kind}/{i}".encode()))


VALIDATORS = [_identity("validator", i) for i in range(4)]
MINERS = [_identity("miner", i) for i in range(6)]
SIGN_FLIP, LAZY = MINERS[4].address, MINERS[5].address
BYZANTINE = {SIGN_FLIP: "sign-flip", LAZY: "lazy"}
HONEST = [m.address for m in MINERS if m.address not in BYZANTINE]
# every submission re-computed, so that a forgery is always caught (the sample is tested
# elsewhere); one thread: the test's own numerics
POLICY = VerificationPolicy(spot_check_rate=1.0, numerics=Numerics(threads=1))

GENESIS: Genesis = parse_genesis(
    {
        "chain_id": CHAIN,
        "task": TASK,
        "model_seed": 0,
        "validators": [
            {
                "name": f"v{i}",
                "public_key": v.public_key.hex(),
                "beacon_commit": onion_commit(v, CHAIN, BEACON_ROUNDS),
            }
            for i, v in enumerate(VALIDATORS)
        ],
        "beacon_rounds": BEACON_ROUNDS,
        "spot_check_bps": 10_000,
        "emission_per_round": 1000,
        "miner_share_bps": 8000,
        "validator_share_bps": 2000,
        "min_miner_stake": STAKE,
        "forgery_slash": STAKE,
        "malformed_penalty": 10,
        "probation_rounds": 0,
        "accounts": [{"address": m.address, "balance": 500, "stake": STAKE} for m in MINERS],
    }
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_app(index: int | None, **kw: Any) -> PotApp:
    kw.setdefault("policy", POLICY)
    # the primary proposes at once with the reveals it has (its own: a full-check round); the
    # exchange of reveals has its own tests
    kw.setdefault("reveal_grace", 0)
    identity = None if index is None else VALIDATORS[index]
    app = PotApp(GENESIS, identity=identity, round_time=ROUND_TIME, censor_grace=GRACE, **kw)
    app.tick(0)  # round 1 opens at 0: its deadline is ROUND_TIME
    return app


@dataclass(frozen=True)
class Work:
    miner: Identity
    payload_hash: str
    sig: bytes
    payload: bytes


def make_work(info: RoundInfo, byzantine: dict[str, str]) -> list[Work]:
    """Every miner's signed submission for the round ``info`` describes."""
    task = load_task(TASK)
    out = []
    for m in MINERS:
        indices = assign_batch(info.round_seed, m.address, task.train_size, task.batch_size)
        attack = byzantine.get(m.address)
        if attack is None:
            grad = compute_gradient(task, info.params, indices)
            payload = encode_gradient(
                task, grad, model_hash=info.model_hash, height=info.height, numerics="fp32"
            )
        else:
            ctx = ForgeContext(
                task=task,
                height=info.height,
                model_hash=info.model_hash,
                params=info.params,
                history=[info.params],
                compression=Compression(),
                indices=indices,
                other_indices=indices,
                others={},
                others_grads={},
                seed=0,
            )
            payload = forge(attack, ctx)
        digest, sig = sign_commitment(m, CHAIN, info.height, info.model_hash, payload)
        out.append(Work(m, digest, sig, payload))
    return out


def submit(app: PotApp, w: Work, now: int, *, with_payload: bool = True) -> list[Action]:
    payload = w.payload if with_payload else None
    return app.submit(w.miner.address, w.miner.public_key, w.payload_hash, w.sig, payload, now)


def submit_all(
    app: PotApp, works: Sequence[Work], now: int, skip: Sequence[str] = ()
) -> list[Action]:
    out: list[Action] = []
    for w in works:
        if w.miner.address not in skip:
            out += submit(app, w, now)
    return out


def refusals(actions: Sequence[Action]) -> list[SubmissionRefused]:
    return [a for a in actions if isinstance(a, SubmissionRefused)]


@pytest.fixture(scope="module")
def round1() -> list[Work]:
    """Round 1's submissions (every app starts from the same genesis state)."""
    return make_work(make_app(None).round_info(0), BYZANTINE)


def propose(app: PotApp, works: Sequence[Work], skip: Sequence[str] = ()) -> dict[str, Any]:
    assert not refusals(submit_all(app, works, 1, skip))
    assert not app.has_pending(1, ROUND_TIME - 1)
    assert app.propose(1, ROUND_TIME - 1) is None  # the round is still open
    assert app.has_pending(1, ROUND_TIME)
    proposal = app.propose(1, ROUND_TIME)
    assert proposal is not None, app.last_invalid
    return proposal


def beacon_messages(app: PotApp) -> list[dict[str, Any]]:
    return [a.message.to_dict() for a in app.take_actions() if isinstance(a, BroadcastBeacon)]


def propose_revealed(app: PotApp, works: Sequence[Work]) -> dict[str, Any]:
    """The primary (validator 0) announces its frozen set, the three others reveal for it and
    the primary proposes with all four reveals: a round sampled by the beacon."""
    assert not refusals(submit_all(app, works, 1))
    app.reveal_grace = 10**6  # wait for every reveal
    assert app.propose(1, ROUND_TIME) is None
    (announcement,) = beacon_messages(app)
    assert announcement["frozen"] is not None
    for i in (1, 2, 3):
        other = backup(i, works)
        assert other.beacon_message(announcement, ROUND_TIME, primary=0)
        (reveal,) = beacon_messages(other)
        assert reveal["frozen"] is None and reveal["validator"] == i
        assert app.beacon_message(reveal, ROUND_TIME, primary=0)
    proposal = app.propose(1, ROUND_TIME)
    assert proposal is not None, app.last_invalid
    assert all(r is not None for r in proposal["reveals"])
    return proposal


def backup(index: int, works: Sequence[Work], skip: Sequence[str] = (), **kw: Any) -> PotApp:
    app = make_app(index, **kw)
    assert not refusals(submit_all(app, works, 1, skip))
    return app


@pytest.fixture(scope="module")
def proposal1(round1: list[Work]) -> dict[str, Any]:
    return propose(make_app(0), round1)


# --------------------------------------------------------------------- (a) one block, two apps


def test_a_block_derived_by_one_app_validates_on_a_fresh_one(
    round1: list[Work], proposal1: dict[str, Any]
) -> None:
    block = parse_block(proposal1["block"])
    verdicts = {s.miner: s.verdict for s in block.submissions}
    assert all(verdicts[a] == Verdict.accepted() for a in HONEST)
    assert verdicts[SIGN_FLIP].kind == verdicts[LAZY].kind == "slashed"
    assert verdicts[SIGN_FLIP].code == "recompute-mismatch"
    assert [p[0] for p in block.penalties] == sorted(BYZANTINE)
    assert all(amount == STAKE for _, amount, _ in block.penalties)
    assert block.model_after != block.model_before
    assert sum(x for _, x in block.rewards) == 800
    assert sum(x for _, x in block.validator_fees) == 200
    b = backup(1, round1)
    assert b.validate(1, proposal1, ROUND_TIME) is Validity.VALID, b.last_invalid
    assert b.validate(2, proposal1, ROUND_TIME) is Validity.PENDING  # not its turn yet
    b.execute(1, proposal1)
    a = make_app(None)
    submit_all(a, round1, 1)
    a.execute(1, proposal1)  # re-executed from the block's own verdicts, no cache
    assert a.state_digest() == b.state_digest()
    assert b.height == 1 and b.model_hash == block.model_after
    assert b.ledger.account(SIGN_FLIP).ejected and b.ledger.account(LAZY).stake == 0
    assert b.validate(1, proposal1, ROUND_TIME) is Validity.INVALID  # already executed


def _reward_plus_one(p: dict[str, Any]) -> None:
    p["block"]["rewards"][0]["amount"] += 1


def _model_after(p: dict[str, Any]) -> None:
    h = p["block"]["model_after"]
    p["block"]["model_after"] = h[:-1] + ("0" if h[-1] != "0" else "1")


def _honest_rejected(p: dict[str, Any]) -> None:
    b = p["block"]
    victim = HONEST[0]
    for s in b["submissions"]:
        if s["miner"] == victim:
            s["verdict"] = {"kind": "rejected", "code": "zero", "evidence": None}
            s["samples"] = 0
    b["rewards"] = [r for r in b["rewards"] if r["address"] != victim]


def _forger_accepted(p: dict[str, Any]) -> None:
    b = p["block"]
    for s in b["submissions"]:
        if s["miner"] == LAZY:
            s["verdict"] = {"kind": "accepted", "code": None, "evidence": None}
            s["samples"] = load_task(TASK).batch_size
    rewards = [*b["rewards"], {"address": LAZY, "amount": 1}]
    b["rewards"] = sorted(rewards, key=lambda r: r["address"])
    b["penalties"] = [x for x in b["penalties"] if x["address"] != LAZY]


def _evidence(p: dict[str, Any]) -> None:
    for s in p["block"]["submissions"]:
        if s["miner"] == SIGN_FLIP:
            s["verdict"]["evidence"]["rel_error_ppm"] //= 2


def _reveal_moved(p: dict[str, Any]) -> None:
    p["reveals"][0], p["reveals"][1] = p["reveals"][1], p["reveals"][0]


def _reveal_signature(p: dict[str, Any]) -> None:
    sig = p["reveals"][0]["signature"]
    p["reveals"][0]["signature"] = ("1" if sig[0] != "1" else "2") + sig[1:]


def _reveal_value(p: dict[str, Any]) -> None:
    value = p["reveals"][0]["reveal"]
    p["reveals"][0]["reveal"] = ("1" if value[0] != "1" else "2") + value[1:]


def _reveal_withheld(p: dict[str, Any]) -> None:
    p["reveals"][0] = None  # a different beacon than the block records


def _prev_hash(p: dict[str, Any]) -> None:
    p["block"]["prev_hash"] = "1" * 64


def _unparsable(p: dict[str, Any]) -> None:
    p["block"]["extra"] = 1


def _fee(p: dict[str, Any]) -> None:
    p["block"]["validator_fees"] = p["block"]["validator_fees"][1:]


TAMPERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "model_after": _model_after,
    "reward": _reward_plus_one,
    "honest-rejected": _honest_rejected,
    "forger-accepted": _forger_accepted,
    "evidence": _evidence,
    "reveal-moved": _reveal_moved,
    "reveal-signature": _reveal_signature,
    "reveal-value": _reveal_value,
    "reveal-withheld": _reveal_withheld,
    "prev_hash": _prev_hash,
    "unparsable": _unparsable,
    "fee-dropped": _fee,
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_a_tampered_block_is_invalid(
    name: str, round1: list[Work], proposal1: dict[str, Any]
) -> None:
    tampered = copy.deepcopy(proposal1)
    TAMPERS[name](tampered)
    assert tampered != proposal1
    b = backup(1, round1)
    assert b.validate(1, tampered, ROUND_TIME) is Validity.INVALID
    assert b.last_invalid
    assert b.validate(1, proposal1, ROUND_TIME) is Validity.VALID, b.last_invalid


def test_a_censored_submission_is_refused_by_who_saw_it_in_time(round1: list[Work]) -> None:
    victim = HONEST[0]
    proposal = propose(make_app(0), round1, skip=[victim])
    assert victim not in {s.miner for s in parse_block(proposal["block"]).submissions}
    early = backup(1, round1)  # kept the victim's submission at 1 <= deadline - grace
    assert early.validate(1, proposal, ROUND_TIME) is Validity.INVALID
    assert "censorship" in early.last_invalid
    late = backup(2, round1, skip=[victim])
    w = next(w for w in round1 if w.miner.address == victim)
    assert not refusals(submit(late, w, ROUND_TIME - GRACE + 1))  # after deadline - grace
    assert late.validate(1, proposal, ROUND_TIME) is Validity.VALID, late.last_invalid


def test_a_payload_marked_late_is_refused_by_who_held_it(round1: list[Work]) -> None:
    victim = HONEST[1]
    w = next(w for w in round1 if w.miner.address == victim)
    primary = make_app(0)  # the victim's commitment reaches it without the bytes
    submit_all(primary, round1, 1, skip=[victim])
    submit(primary, w, 1, with_payload=False)
    proposal = primary.propose(1, ROUND_TIME)  # fetch deadline = deadline: refused late
    assert proposal is not None, primary.last_invalid
    rec = next(s for s in parse_block(proposal["block"]).submissions if s.miner == victim)
    assert rec.verdict == Verdict.rejected("late")
    held = backup(1, round1)
    assert held.validate(1, proposal, ROUND_TIME) is Validity.INVALID
    assert "late" in held.last_invalid
    blind = backup(2, round1, skip=[victim])
    submit(blind, w, 1, with_payload=False)
    assert blind.validate(1, proposal, ROUND_TIME) is Validity.VALID, blind.last_invalid


def test_a_missing_payload_waits_and_is_provided(
    round1: list[Work], proposal1: dict[str, Any]
) -> None:
    absent = next(w for w in round1 if w.miner.address == HONEST[2])
    b = backup(1, round1, skip=[absent.miner.address])  # never heard of that miner at all
    assert b.validate(1, proposal1, ROUND_TIME) is Validity.PENDING
    assert b.missing() == ((absent.miner.address, absent.payload_hash),)
    assert not b.take_resume()
    assert b.provide(absent.miner.address, absent.miner.public_key, absent.payload)
    assert b.take_resume()
    assert b.validate(1, proposal1, ROUND_TIME + 5) is Validity.VALID, b.last_invalid
    assert b.missing() == ()


def test_the_primary_fetches_a_payload_that_came_without_its_commitment(
    round1: list[Work],
) -> None:
    w = next(w for w in round1 if w.miner.address == HONEST[3])
    primary = make_app(0, fetch_grace=20)
    submit_all(primary, round1, 1, skip=[w.miner.address])
    submit(primary, w, 1, with_payload=False)
    assert primary.has_pending(1, ROUND_TIME)
    assert FetchPayload(w.payload_hash, w.miner.address) in primary.take_actions()
    assert primary.propose(1, ROUND_TIME) is None  # waiting for the bytes
    assert primary.next_deadline() == ROUND_TIME + 20
    primary.provide(w.miner.address, w.miner.public_key, w.payload, ROUND_TIME + 5)
    proposal = primary.propose(1, ROUND_TIME + 5)
    assert proposal is not None, primary.last_invalid
    block = parse_block(proposal["block"])
    assert all(s.verdict == Verdict.accepted() for s in block.submissions if s.miner in HONEST)
    assert backup(1, round1).validate(1, proposal, ROUND_TIME + 5) is Validity.VALID


def test_a_submission_for_the_next_round_waits_for_it() -> None:
    """A miner that heard of block h before this validator executed it submits for h + 1:
    kept aside (one per miner, only when the miner signed it: a forged entry cannot squat
    the slot) and taken in when round h + 1 opens."""
    app = make_app(0)
    m = MINERS[0]
    info = app.round_info(0)
    payload = encode_gradient(
        load_task(TASK),
        compute_gradient(load_task(TASK), info.params, [0, 1, 2]),
        model_hash=info.model_hash,
        height=2,
    )
    digest, sig = sign_commitment(m, CHAIN, 2, info.model_hash, payload)
    # somebody squats the miner's early slot with a forged commitment: it is not kept
    forged = app.submit(
        m.address, m.public_key, "ab" * 32, b"\0" * 64, None, 4, height=2,
        model_hash=info.model_hash,
    )  # fmt: skip
    assert forged == []
    kept = app.submit(
        m.address, m.public_key, digest, sig, payload, 5, height=2, model_hash=info.model_hash
    )
    assert kept == []
    app.execute(1, None)  # a null block 1: the model stays, round 2 opens next
    app.tick(10)
    assert app.has_pending(2, 10 + ROUND_TIME)
    proposal = app.propose(2, 10 + ROUND_TIME)
    assert proposal is not None, app.last_invalid
    assert [s.miner for s in parse_block(proposal["block"]).submissions] == [m.address]


def test_a_key_that_is_not_the_miners_is_refused(round1: list[Work]) -> None:
    app = make_app(1)
    w = round1[0]
    out = app.submit(w.miner.address, MINERS[1].public_key, w.payload_hash, w.sig, w.payload, 1)
    assert [(r.code, r.miner) for r in refusals(out)] == [("malformed", w.miner.address)]
    stranger = _identity("stranger", 0)
    out = app.submit(stranger.address, stranger.public_key, w.payload_hash, w.sig, None, 1)
    assert [r.code for r in refusals(out)] == ["unknown-miner"]


def test_a_derivation_can_run_in_a_worker(round1: list[Work], proposal1: dict[str, Any]) -> None:
    b = backup(1, round1, sync_derivation=False)
    assert b.validate(1, proposal1, ROUND_TIME) is Validity.PENDING
    jobs = b.pending_derivations()
    assert len(jobs) == 1 and b.pending_derivations() == []
    outcome = jobs[0].run()  # a host runs this in a worker
    assert outcome.derived is not None, outcome.reason
    b.derivation_done(outcome)
    assert b.take_resume()
    assert b.validate(1, proposal1, ROUND_TIME) is Validity.VALID
    b.execute(1, proposal1)
    assert b.model_hash == proposal1["block"]["model_after"]


def test_a_verdict_inside_the_band_stands_outside_it_does_not(
    round1: list[Work], proposal1: dict[str, Any]
) -> None:
    """A backup whose tolerance puts the lazy forgery just on the other side accepts the
    proposer's verdict inside the band (and re-derives the model from the proposer's accepted
    set); a clear contradiction is refused."""
    rec = next(s for s in parse_block(proposal1["block"]).submissions if s.miner == LAZY)
    assert rec.verdict.evidence is not None
    error = int(dict(rec.verdict.evidence)["rel_error_ppm"]) / PPM
    lenient = replace(POLICY, tolerance=error * (1 + 1e-4))
    strict = replace(POLICY, tolerance=error * (1 - 1e-4))
    clear = replace(POLICY, tolerance=error * (1 - 5 * DEFAULT_BAND))
    proposal = propose(make_app(0, policy=lenient), round1, skip=[SIGN_FLIP])
    block = parse_block(proposal["block"])
    assert next(s for s in block.submissions if s.miner == LAZY).verdict == Verdict.accepted()
    inside = backup(1, round1, skip=[SIGN_FLIP], policy=strict)
    assert inside.validate(1, proposal, ROUND_TIME) is Validity.VALID, inside.last_invalid
    inside.execute(1, proposal)
    assert inside.model_hash == block.model_after
    outside = backup(2, round1, skip=[SIGN_FLIP], policy=clear)
    assert outside.validate(1, proposal, ROUND_TIME) is Validity.INVALID
    assert "verdict" in outside.last_invalid


# ------------------------------------------------------ (a) the band around the flags


COPIER, ORIGINAL = MINERS[4], MINERS[0]
# flags and the band's re-computes only: no random sample
FLAGS_ONLY = replace(POLICY, spot_check_rate=0.0)


@pytest.fixture(scope="module")
def copy_round() -> tuple[list[Work], float]:
    """Round 1 with a copier (MINERS[4]) submitting ORIGINAL's gradient plus noise (it did no
    work of its own, so its re-compute fails) and the copy cosine every validator measures."""
    info = make_app(None).round_info(0)
    task = load_task(TASK)
    works = [w for w in make_work(info, {}) if w.miner.address not in (SIGN_FLIP, LAZY)]
    indices = assign_batch(info.round_seed, ORIGINAL.address, task.train_size, task.batch_size)
    grad = compute_gradient(task, info.params, indices)
    gen = torch.Generator().manual_seed(7)
    noisy = {
        n: t + 0.08 * t.abs().mean() * torch.randn(t.shape, generator=gen) for n, t in grad.items()
    }
    payload = encode_gradient(
        task, noisy, model_hash=info.model_hash, height=info.height, numerics="fp32"
    )
    digest, sig = sign_commitment(COPIER, CHAIN, info.height, info.model_hash, payload)
    works.append(Work(COPIER, digest, sig, payload))
    works.sort(key=lambda w: w.miner.address)
    ctx = RoundContext(task, info.height, info.round_seed, info.params, info.model_hash)
    subs = [Submission(w.miner.address, w.payload) for w in works]
    stats = verify_round(ctx, subs, FLAGS_ONLY).verdicts[COPIER.address].statistics
    assert stats is not None and 0.9 < stats.copy_cosine < 0.999, stats
    return works, stats.copy_cosine


def _copy_policy(cosine: float, distance: float) -> VerificationPolicy:
    """A policy whose copy threshold puts ``cosine`` at ``distance`` past it (in bands): what
    a validator whose floats differ from another's sees, exaggerated to the band's scale."""
    return replace(FLAGS_ONLY, copy_cosine=cosine - distance * FLAGS_ONLY.flag_band)


def _copier_verdict(proposal: dict[str, Any]) -> Verdict:
    block = parse_block(proposal["block"])
    return next(s.verdict for s in block.submissions if s.miner == COPIER.address)


@pytest.mark.parametrize(
    ("proposer_at", "backup_at", "valid", "copier"),
    [
        # both past the threshold, or within the margin: both re-compute, both slash
        (0.5, -0.5, True, "slashed"),
        (-0.5, 0.5, True, "slashed"),
        # the proposer re-computes in its margin; the backup, just outside, re-computes the
        # slash on demand rather than taking it on the proposer's word
        (-1.5, -2.5, True, "slashed"),
        # the proposer just outside its margin accepts; the backup re-computed in the outer
        # half of its margin, which the proposer need not have reached: it defers
        (-2.5, -1.5, True, "accepted"),
        # inside the band a failed re-compute is never accepted on the proposer's word
        (-2.5, -0.5, False, "accepted"),
        (-2.5, 0.5, False, "accepted"),
    ],
)
def test_a_copy_flag_inside_the_band_leads_both_sides_to_the_same_verdict(
    copy_round: tuple[list[Work], float],
    proposer_at: float,
    backup_at: float,
    valid: bool,
    copier: str,
) -> None:
    works, cosine = copy_round
    proposal = propose_revealed(make_app(0, policy=_copy_policy(cosine, proposer_at)), works)
    assert _copier_verdict(proposal).kind == copier
    b = backup(1, works, policy=_copy_policy(cosine, backup_at))
    expected = Validity.VALID if valid else Validity.INVALID
    assert b.validate(1, proposal, ROUND_TIME) is expected, b.last_invalid
    if valid:
        b.execute(1, proposal)
        assert b.model_hash == proposal["block"]["model_after"]


@pytest.mark.parametrize("distance", [-1.9, -1.0, -0.01, 0.0, 0.01, 1.0, 3.0])
def test_a_copier_aiming_at_the_band_is_re_computed_and_slashed(
    copy_round: tuple[list[Work], float], distance: float
) -> None:
    """Wherever a forger puts its statistic around a threshold, down to twice the band below
    it, every validator re-computes it: the band is no door, with no sample at all."""
    works, cosine = copy_round
    policy = _copy_policy(cosine, distance)
    proposal = propose_revealed(make_app(0, policy=policy), works)
    verdict = _copier_verdict(proposal)
    assert verdict.kind == "slashed"
    original = next(
        s.verdict for s in parse_block(proposal["block"]).submissions if s.miner == ORIGINAL.address
    )
    assert original == Verdict.accepted()  # its own re-compute clears the original
    b = backup(1, works, policy=policy)
    assert b.validate(1, proposal, ROUND_TIME) is Validity.VALID, b.last_invalid


def test_reconcile_rules() -> None:
    rules = RoundRules(GENESIS, load_task(TASK), policy=POLICY)
    tol = rules.tolerance
    a = "pot1" + "0" * 44  # names only: reconcile does not check addresses
    clear = Statistics(1.0, 0.5, 0.5)  # every statistic far from its threshold

    def record(v: Verdict) -> Any:
        return type("R", (), {"miner": a, "verdict": v})()

    def slashed(err: float, check: str = "spot-check") -> Verdict:
        return block_verdict(CheckVerdict(a, False, check, "x", (), True, err), tol)

    def judged(
        v: Verdict, err: float | None = None, stats: Statistics = clear, sampled: bool = True
    ) -> Judged:
        return Judged(v, err is not None, err, sampled, stats)

    near, far = tol * (1 + DEFAULT_BAND / 2), tol * 3
    ok = Verdict.accepted()
    agree = reconcile(rules, {a: judged(slashed(near), near)}, [record(ok)])
    assert agree[a] == ok
    proposed = reconcile(rules, {a: judged(ok, tol)}, [record(slashed(near))])
    assert proposed[a].kind == "slashed"
    with pytest.raises(PotError):  # a sampled submission: the proposer re-computed it too
        reconcile(rules, {a: judged(slashed(far), far)}, [record(ok)])
    # outside the sample, with every statistic clear of the band: the proposer need not have
    # re-computed it (the outer half of the re-compute margin), so its accepted stands
    outer = Statistics(1.0, 0.5, POLICY.copy_cosine - 1.5 * POLICY.flag_band)
    assert reconcile(rules, {a: judged(slashed(far), far, outer, False)}, [record(ok)])[a] == ok
    inner = Statistics(1.0, 0.5, POLICY.copy_cosine - 0.5 * POLICY.flag_band)
    with pytest.raises(PotError):  # inside the band: never accepted on the proposer's word
        reconcile(rules, {a: judged(slashed(far), far, inner, False)}, [record(ok)])
    with pytest.raises(PotError):  # not re-computed here, and nothing to re-compute it with
        reconcile(rules, {a: judged(ok)}, [record(slashed(near))])
    drift = far * (1 + 1e-4)
    assert reconcile(rules, {a: judged(slashed(far), far)}, [record(slashed(drift))])
    with pytest.raises(PotError):
        reconcile(rules, {a: judged(slashed(far), far)}, [record(slashed(far * 1.1))])
    with pytest.raises(PotError):  # "copy" is not a check this validator could have raised
        reconcile(rules, {a: judged(slashed(far), far)}, [record(slashed(far, "copy"))])
    at_copy = Statistics(1.0, 0.5, POLICY.copy_cosine - POLICY.flag_band / 2)
    assert reconcile(rules, {a: judged(slashed(far), far, at_copy)}, [record(slashed(far, "copy"))])

    # topk: the support-energy floor is a float comparison with its own band
    floor = POLICY.topk_support_energy
    low = block_verdict(
        CheckVerdict(a, False, "spot-check", "x", (), True, tol / 10, support_energy=floor * 0.999),
        tol,
    )
    assert dict(low.evidence or ())["support_ppm"] == round(floor * 0.999 * PPM)
    just_above = Judged(ok, True, tol / 10, True, clear, floor * 1.001)
    assert reconcile(rules, {a: just_above}, [record(low)])[a].kind == "slashed"
    far_above = Judged(ok, True, tol / 10, True, clear, floor * 1.2)
    with pytest.raises(PotError):
        reconcile(rules, {a: far_above}, [record(low)])
    just_below = Judged(low, True, tol / 10, True, clear, floor * 0.999)
    assert reconcile(rules, {a: just_below}, [record(ok)])[a] == ok

    # a slash this validator did not re-compute is re-computed on demand, never taken on trust
    calls: list[str] = []

    def honest(miner: str, own: Judged) -> Judged:
        calls.append(miner)
        return Judged(ok, True, tol / 100, statistics=own.statistics)

    def forged(miner: str, own: Judged) -> Judged:
        calls.append(miner)
        return judged(slashed(far), far)

    with pytest.raises(PotError):
        reconcile(rules, {a: judged(ok)}, [record(slashed(far))], honest)
    assert reconcile(rules, {a: judged(ok)}, [record(slashed(far))], forged)[a].kind == "slashed"
    assert calls == [a, a]


def test_null_block_advances_only_the_height(round1: list[Work]) -> None:
    a = make_app(None)
    seed1, head = a.round_seed(), a.state.head
    digest = a.model_hash
    a.execute(1, None)
    assert a.height == 1 and a.ledger.height == 1 and a.state.head == head
    assert a.model_hash == digest and a.round_seed() != seed1
    # round 1's commitments were signed for height 1: they do not verify at height 2
    assert {r.code for r in refusals(submit_all(a, round1, 200))} == {"bad-signature"}


# --------------------------------------------------------------- (b) four replicas, 3 rounds


@dataclass
class Network:
    apps: list[PotApp]
    hosts: list[ReplicaHost]
    committed: list[list[tuple[int, Any]]]
    works: dict[int, list[Work]]
    answers: dict[int, list[list[Action]]]  # height -> per app, the round's intake answers


def run_network(rounds: int = 3) -> Network:
    cfg = ReplicaConfig(
        chain_id=CHAIN,
        public_keys=tuple(v.public_key for v in VALIDATORS),
        checkpoint_interval=2,
        watermark_window=4,
        view_change_timeout=100_000,
        resend_interval=100_000,
    )
    apps = [make_app(i) for i in range(4)]
    queue: deque[tuple[int, str]] = deque()
    committed: list[list[tuple[int, Any]]] = [[] for _ in range(4)]

    def sender(src: int) -> Callable[[int | None, Any], None]:
        def send(to: int | None, msg: Any) -> None:
            text = json.dumps(msg.to_dict())  # the transport serializes
            for dst in range(4) if to is None else [to]:
                if dst != src:
                    queue.append((dst, text))

        return send

    def hook(i: int) -> Callable[[Replica, Output], None]:
        def on_output(replica: Replica, out: Output) -> None:
            committed[i].extend((b.seq, b.proposal) for b in out.committed)

        return on_output

    hosts = [
        ReplicaHost(cfg, i, VALIDATORS[i], apps[i], MemoryWal(), sender(i), 0, on_output=hook(i))
        for i in range(4)
    ]

    def drain(now: int) -> None:
        while queue:
            dst, text = queue.popleft()
            hosts[dst].deliver(text, now)
            if apps[dst].take_resume():
                hosts[dst].resume(now)

    t = 0
    works: dict[int, list[Work]] = {}
    answers: dict[int, list[list[Action]]] = {}
    for h in range(1, rounds + 1):
        infos = [app.round_info(t + 1) for app in apps]
        assert len({(i.height, i.model_hash, i.round_seed, i.deadline) for i in infos}) == 1
        works[h] = make_work(infos[0], BYZANTINE)
        answers[h] = [submit_all(app, works[h], t + 1) for app in apps]
        t = infos[0].deadline
        for host in hosts:
            host.tick(t)  # the primary's round is due: it proposes
        drain(t)
        assert [host.replica.last_exec for host in hosts] == [h] * 4, [a.last_invalid for a in apps]
    return Network(apps, hosts, committed, works, answers)


@pytest.fixture(scope="module")
def network() -> Network:
    return run_network()


def test_b_four_replicas_agree_and_punish_forgers(network: Network) -> None:
    apps, committed = network.apps, network.committed
    digests = [[(seq, proposal_digest(p)) for seq, p in c] for c in committed]
    assert all(d == digests[0] for d in digests) and [s for s, _ in digests[0]] == [1, 2, 3]
    assert len({app.state_digest() for app in apps}) == 1
    assert len({app.model_hash for app in apps}) == 1
    assert len({app.ledger.digest() for app in apps}) == 1
    blocks: list[Block] = [parse_proposal(p).block for _, p in committed[0]]
    assert apps[0].model_hash == blocks[-1].model_after
    assert [b.prev_hash for b in blocks] == [GENESIS_PREV, *map(block_hash, blocks[:-1])]
    assert apps[0].state.head == block_hash(blocks[-1])
    ledger = apps[0].ledger
    ledger.check_invariants()
    assert ledger.total == ledger.supply_genesis + ledger.emitted - ledger.burned
    assert ledger.burned == 2 * STAKE and ledger.emitted == 3 * 1000
    for b in blocks:
        assert b.model_after != b.model_before
        verdicts = {s.miner: s.verdict for s in b.submissions}
        assert all(verdicts[a] == Verdict.accepted() for a in HONEST)  # never rejected
    first = {s.miner: s.verdict for s in blocks[0].submissions}
    assert first[SIGN_FLIP].kind == first[LAZY].kind == "slashed"
    for a in BYZANTINE:
        acc = ledger.account(a)
        assert acc.ejected and acc.ejected_at == 1 and acc.stake == 0
    for h in (2, 3):
        assert sorted(s.miner for s in blocks[h - 1].submissions) == sorted(HONEST)
        for per_app in network.answers[h]:
            assert sorted((r.miner, r.code) for r in refusals(per_app)) == sorted(
                (a, "ejected") for a in BYZANTINE
            )
    assert not any(refusals(x) for x in network.answers[1])
    honest_balance = {ledger.account(a).balance for a in HONEST}
    assert min(honest_balance) > 500


# ---------------------------------------------------------------- (c) snapshot and restore


def test_c_snapshot_restore_round_trip(network: Network) -> None:
    src = network.apps[2]
    snap = json.loads(json.dumps(src.snapshot()))  # as it crosses the wire
    fresh = make_app(None)
    before = fresh.state_digest()
    assert before != src.state_digest()
    # the snapshot names its tensors by hash: the first attempt lists the blobs to fetch and
    # changes nothing; fetched from a peer (and checked against their hashes), it restores
    with pytest.raises(PotError, match="blob"):
        fresh.restore(snap)
    assert fresh.state_digest() == before
    lacking = fresh.missing()
    assert lacking and all(miner == "" for miner, _ in lacking)
    assert len(json.dumps(snap)) < 20_000  # small: the model travels as blobs
    for _, digest in lacking:
        blob = src.payload(digest)
        assert blob is not None
        fresh.provide("", b"", blob)
    fresh.restore(snap)
    assert fresh.state_digest() == src.state_digest()
    assert fresh.snapshot_digest(snap) == src.state_digest()
    assert fresh.model_hash == src.model_hash and fresh.height == 3
    assert fresh.round_seed() == src.round_seed()


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.pop("head"),
        lambda s: s.__setitem__("height", 2),
        lambda s: s["params"].popitem(),
        lambda s: s["params"].__setitem__(next(iter(s["params"])), "00"),
        lambda s: s["optimizer"].__setitem__("step", -1),
        lambda s: s.__setitem__("genesis", "0" * 64),
        lambda s: s["ledger"].__setitem__("emitted", 1),
    ],
)
def test_c_malformed_snapshots_are_refused(network: Network, edit: Callable[..., Any]) -> None:
    snap = copy.deepcopy(network.apps[0].snapshot())
    edit(snap)
    fresh = make_app(None)
    before = fresh.state_digest()
    with pytest.raises(PotError):
        fresh.restore(snap)
    assert fresh.state_digest() == before


# --------------------------------------------------------------- (d) execution is deterministic


def test_d_executing_the_same_blocks_gives_the_same_state(network: Network) -> None:
    blocks = network.committed[0]
    replayers = [make_app(None), make_app(None, policy=VerificationPolicy())]
    for app in replayers:
        for seq, proposal in blocks:
            # the payloads only: nothing is validated, the committed verdicts are applied
            submit_all(app, network.works[seq], 10_000 * (seq - 1) + 1)
            app.execute(seq, proposal)
    assert {app.state_digest() for app in replayers} == {network.apps[0].state_digest()}


def test_d_a_committed_block_without_its_payloads_cannot_be_applied(network: Network) -> None:
    app = make_app(None)
    with pytest.raises(ChainError, match="lacks"):
        app.execute(1, network.committed[0][0][1])
    assert app.height == 0
    # what it lacks is listed for the host to fetch; with it, the block applies
    wanted = {h for _, h in app.missing()}
    assert wanted
    for w in network.works[1]:
        if w.payload_hash in wanted:
            app.provide(w.miner.address, w.miner.public_key, w.payload)
    app.execute(1, network.committed[0][0][1])
    assert app.height == 1


_OTHER_PROCESS = """
import json, sys
import torch
sys.path.insert(0, "tests")
import test_protocol_app as t
from pot_cli.training.gradients import Numerics
from pot_cli.training.verification import (
    RoundContext,
    Statistics,
    Submission,
    VerificationPolicy,
    verify_round,
)

torch.set_num_threads(3)
works = [
    t.Work(t.MINERS[i], w["hash"], bytes.fromhex(w["sig"]), bytes.fromhex(w["payload"]))
    for i, w in enumerate(json.load(sys.stdin))
]
policy = VerificationPolicy(spot_check_rate=1.0, numerics=Numerics(threads=3))
app = t.make_app(0, policy=policy)
proposal = t.propose(app, works)
app.execute(1, proposal)
print(json.dumps({"proposal": proposal, "digest": app.state_digest()}))
"""


def test_d_another_process_with_other_threads_derives_the_same_block(
    round1: list[Work], proposal1: dict[str, Any]
) -> None:
    """The primary's derivation in a fresh process with 3 threads: the same block (verdicts
    are far from every threshold here), the same model bit for bit, the same state."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    data = [
        {"hash": w.payload_hash, "sig": w.sig.hex(), "payload": w.payload.hex()} for w in round1
    ]
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        cwd=root,
        check=True,
        timeout=120,
    )
    other = json.loads(done.stdout)
    assert other["proposal"] == proposal1
    here = make_app(None)
    submit_all(here, round1, 1)
    here.execute(1, proposal1)
    assert other["digest"] == here.state_digest()


# ----------------------------------------------------------------- (e) the beacon exchange


def test_e_a_backup_reveals_once_for_the_primarys_set_and_the_block_carries_it(
    round1: list[Work],
) -> None:
    primary = make_app(0, reveal_grace=10**6)
    assert not refusals(submit_all(primary, round1, 1))
    assert primary.propose(1, ROUND_TIME) is None  # announced, waiting for reveals
    (announcement,) = beacon_messages(primary)
    b = backup(1, round1)
    assert not b.beacon_message(announcement, ROUND_TIME, primary=2)  # not from the primary
    assert beacon_messages(b) == []
    forged = dict(announcement, reveal="00" * 32)
    assert not b.beacon_message(forged, ROUND_TIME, primary=0)
    assert b.beacon_message(announcement, ROUND_TIME, primary=0)
    (reveal,) = beacon_messages(b)
    # a second primary (a view change) announcing another set gets no second reveal
    other = make_app(2, reveal_grace=10**6)
    assert not refusals(submit_all(other, round1[:-1], 1))
    assert other.propose(1, ROUND_TIME) is None
    (second,) = beacon_messages(other)
    assert second["digest"] != announcement["digest"]
    assert b.beacon_message(second, ROUND_TIME, primary=2)
    assert beacon_messages(b) == []
    # the first primary, with b's reveal and the two others, proposes a sampled round
    assert primary.beacon_message(reveal, ROUND_TIME, primary=0)
    assert not primary.beacon_message(reveal, ROUND_TIME, primary=0)  # a repeat
    assert primary.propose(1, ROUND_TIME) is None  # still two missing
    for i in (2, 3):
        c = backup(i, round1)
        assert c.beacon_message(announcement, ROUND_TIME, primary=0)
        (r,) = beacon_messages(c)
        assert primary.beacon_message(r, ROUND_TIME, primary=0)
    proposal = primary.propose(1, ROUND_TIME)
    assert proposal is not None and all(r is not None for r in proposal["reveals"])
    assert b.validate(1, proposal, ROUND_TIME) is Validity.VALID, b.last_invalid


def test_e_no_reveal_for_a_set_that_censors_and_the_round_falls_back_to_a_full_check(
    round1: list[Work],
) -> None:
    victim = HONEST[0]
    primary = make_app(0, reveal_grace=5)
    assert not refusals(submit_all(primary, round1, 1, skip=[victim]))
    assert primary.propose(1, ROUND_TIME) is None
    (announcement,) = beacon_messages(primary)
    held = backup(1, round1)  # kept the victim's submission in time
    assert held.beacon_message(announcement, ROUND_TIME, primary=0)
    assert beacon_messages(held) == []  # it will not reveal for a set that censors
    assert primary.propose(1, ROUND_TIME + 4) is None
    assert primary.next_deadline() == ROUND_TIME + 5
    proposal = primary.propose(1, ROUND_TIME + 5)  # the reveal grace is over
    assert proposal is not None
    assert [r is not None for r in proposal["reveals"]] == [True, False, False, False]
    # a full check: a backup that did not see the victim accepts it; the one that did refuses
    blind = backup(2, round1, skip=[victim])
    assert blind.validate(1, proposal, ROUND_TIME) is Validity.VALID, blind.last_invalid
    assert held.validate(1, proposal, ROUND_TIME) is Validity.INVALID
    assert "censorship" in held.last_invalid


def test_e_a_full_check_round_re_computes_every_submission(round1: list[Work]) -> None:
    """With a reveal missing the sample is everyone: a forger the beacon would have missed is
    caught (no sample at all, rate 0, flags only: the lazy forgery has no flag)."""
    quiet = replace(FLAGS_ONLY, min_cosine=-2.0, norm_factor=1e9, copy_cosine=2.0)
    primary = make_app(0, policy=quiet)  # reveal_grace 0: proposes with its own reveal only
    proposal = propose(primary, round1)
    verdicts = {s.miner: s.verdict for s in parse_block(proposal["block"]).submissions}
    assert verdicts[LAZY].kind == verdicts[SIGN_FLIP].kind == "slashed"
    revealed = propose_revealed(make_app(0, policy=quiet), round1)
    verdicts = {s.miner: s.verdict for s in parse_block(revealed["block"]).submissions}
    assert verdicts[LAZY] == verdicts[SIGN_FLIP] == Verdict.accepted()  # rate 0: unsampled


def test_e_the_set_and_its_late_marks_are_fixed_before_anyone_reveals(round1: list[Work]) -> None:
    """A forger that sends its commitment but holds its payload back cannot wait for the draw:
    the primary announces only once the payloads are in or the fetch deadline has passed,
    with the late marks inside the digest every reveal signs; a backup reveals only once it
    holds every payload the block will judge (it fetches what it lacks)."""
    w = next(w for w in round1 if w.miner.address == LAZY)
    primary = make_app(0, reveal_grace=10**6, fetch_grace=20)
    assert not refusals(submit_all(primary, round1, 1, skip=[LAZY]))
    submit(primary, w, 1, with_payload=False)
    assert primary.has_pending(1, ROUND_TIME)
    assert primary.propose(1, ROUND_TIME) is None
    assert beacon_messages(primary) == []  # no announcement while a payload may still come
    assert primary.propose(1, ROUND_TIME + 20) is None  # the fetch deadline: LAZY is late
    (announcement,) = beacon_messages(primary)
    assert announcement["late"] == [LAZY]
    # a backup holding everything reveals; the late mark is in what it signs
    b = backup(1, round1, skip=[LAZY])
    submit(b, w, 1, with_payload=False)
    assert b.beacon_message(announcement, ROUND_TIME + 20, primary=0)
    assert len(beacon_messages(b)) == 1
    # a backup missing an accepted-candidate payload fetches it before it reveals
    victim = next(x for x in round1 if x.miner.address == HONEST[0])
    c = backup(2, round1, skip=[LAZY, HONEST[0]])
    submit(c, w, 1, with_payload=False)
    submit(c, victim, ROUND_TIME - GRACE + 1, with_payload=False)
    assert c.beacon_message(announcement, ROUND_TIME + 20, primary=0)
    actions = c.take_actions()
    assert FetchPayload(victim.payload_hash, HONEST[0]) in actions
    assert not [a for a in actions if isinstance(a, BroadcastBeacon)]
    assert c.provide(HONEST[0], victim.miner.public_key, victim.payload, ROUND_TIME + 21)
    (reveal,) = beacon_messages(c)
    assert reveal["digest"] == announcement["digest"]


def test_e_a_validly_signed_wrong_layer_silences_its_sender_for_the_round(
    round1: list[Work],
) -> None:
    primary = make_app(0, reveal_grace=10**6)
    assert not refusals(submit_all(primary, round1, 1))
    assert primary.propose(1, ROUND_TIME) is None
    (announcement,) = beacon_messages(primary)
    b = backup(1, round1)
    assert b.beacon_message(announcement, ROUND_TIME, primary=0)
    (good,) = beacon_messages(b)
    # junk in validator 1's name (a bad signature) marks nobody
    junk = dict(good, signature="11" * 64)
    assert not primary.beacon_message(junk, ROUND_TIME, primary=0)
    # validator 1 signing a wrong layer costs a hash chain once, then it is ignored
    wrong = make_reveal(
        VALIDATORS[1], 1, Onion(b"\x00" * 32, BEACON_ROUNDS), CHAIN, 1, good["digest"]
    )
    assert not primary.beacon_message(BeaconMessage(wrong).to_dict(), ROUND_TIME, primary=0)
    assert not primary.beacon_message(good, ROUND_TIME, primary=0)


def test_e_past_the_onion_every_round_is_a_full_check(round1: list[Work]) -> None:
    """A chain whose beacon commits are used up keeps going, every round re-computed in full
    (until new commits: a later change of the genesis)."""
    short = parse_genesis(
        {
            **GENESIS.to_dict(),
            "beacon_rounds": 1,
            "validators": [
                {
                    "name": f"v{i}",
                    "public_key": v.public_key.hex(),
                    "beacon_commit": onion_commit(v, CHAIN, 1),
                }
                for i, v in enumerate(VALIDATORS)
            ],
        }
    )
    app = PotApp(
        short, identity=VALIDATORS[0], round_time=ROUND_TIME, policy=POLICY, reveal_grace=0
    )
    app.tick(0)
    app.execute(1, None)  # height 1 (a null block), the last one the onion serves
    app.tick(ROUND_TIME + 1)
    assert app.propose(2, 2 * ROUND_TIME + 1) is not None
    proposal = app.propose(2, 2 * ROUND_TIME + 1)
    assert proposal["reveals"] == [None, None, None, None]


def test_e_a_kept_submission_is_relayed_so_a_miner_cannot_split_the_validators(
    round1: list[Work],
) -> None:
    """A miner that sends only to a backup: the backup relays the commitment (once), the
    primary keeps it, fetches the payload at the freeze and the block holds it, so the backup's
    censorship rule has nothing to refuse."""
    victim = next(w for w in round1 if w.miner.address == HONEST[0])
    b = backup(1, round1)  # the only validator the victim reached
    relays = [a for a in b.submit(
        victim.miner.address, victim.miner.public_key, victim.payload_hash, victim.sig,
        victim.payload, 2,
    ) if isinstance(a, RelaySubmission)]  # fmt: skip
    assert relays == []  # already kept by backup(): a repeat is not relayed again
    fresh = make_app(2)
    (relay,) = [a for a in submit(fresh, victim, 1) if isinstance(a, RelaySubmission)]
    assert relay.payload_hash == victim.payload_hash and relay.public_key == victim.miner.public_key
    primary = make_app(0, fetch_grace=10)
    assert not refusals(submit_all(primary, round1, 1, skip=[HONEST[0]]))
    assert not refusals(
        primary.submit(
            relay.miner, relay.public_key, relay.payload_hash, relay.commitment_sig, None, 1,
            height=relay.height, model_hash=relay.model_hash,
        )
    )  # fmt: skip
    assert primary.has_pending(1, ROUND_TIME)
    assert FetchPayload(victim.payload_hash, HONEST[0]) in primary.take_actions()
    assert primary.provide(HONEST[0], victim.miner.public_key, victim.payload, ROUND_TIME + 1)
    proposal = primary.propose(1, ROUND_TIME + 1)
    assert proposal is not None, primary.last_invalid
    assert HONEST[0] in {s.miner for s in parse_block(proposal["block"]).submissions}
    assert b.validate(1, proposal, ROUND_TIME) is Validity.VALID, b.last_invalid
