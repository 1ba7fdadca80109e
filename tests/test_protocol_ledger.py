"""Ledger: conservation under any sequence of operations, the exact and deterministic remainder
rule, slashing, ejection, snapshots, the purity of plan_round, all-or-nothing errors."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pot_cli.crypto import Identity, sha256
from pot_cli.protocol.genesis import Genesis, GenesisAccount, GenesisValidator
from pot_cli.protocol.ledger import (
    Account,
    Ledger,
    LedgerError,
    LedgerParams,
    Penalty,
    RoundOutcome,
    RoundPayout,
    split_pro_rata,
)

MINERS = [Identity.from_seed(sha256(f"test/miner/{i}".encode())).address for i in range(6)]
VALS = [Identity.from_seed(sha256(f"test/validator/{i}".encode())) for i in range(4)]
VAL_ADDRS = [v.address for v in VALS]
MIN_STAKE = 100


def _genesis(emission: int = 1000, miner_bps: int = 8000) -> Genesis:
    return Genesis(
        chain_id="pot-test",
        task="digits",
        model_seed=0,
        validators=tuple(
            GenesisValidator(f"v{i}", v.public_key, v.address) for i, v in enumerate(VALS)
        ),
        emission_per_round=emission,
        miner_share_bps=miner_bps,
        validator_share_bps=10_000 - miner_bps,
        min_miner_stake=MIN_STAKE,
        forgery_slash=MIN_STAKE,
        malformed_penalty=10,
        probation_rounds=0,
        accounts=tuple(
            sorted(
                (
                    GenesisAccount(a, 1000 * (i + 1), MIN_STAKE * (i % 3))
                    for i, a in enumerate(MINERS)
                ),
                key=lambda a: a.address,
            )
        ),
    )


def _ledger(emission: int = 1000, miner_bps: int = 8000) -> Ledger:
    return Ledger.from_genesis(_genesis(emission, miner_bps))


def _admitted(ledger: Ledger) -> list[str]:
    return [a for a in MINERS if ledger.admitted(a)]


# ------------------------------------------------------------------ remainder rule


def test_split_pro_rata_examples() -> None:
    a, b, c = sorted(MINERS[:3])
    assert split_pro_rata(10, [(c, 1), (a, 1), (b, 1)]) == ((a, 4), (b, 3), (c, 3))
    # largest remainder first: 10*2/3 = 6.67 (rem 2) beats 10*1/3 = 3.33 (rem 1)
    assert split_pro_rata(10, [(a, 1), (b, 2)]) == ((a, 3), (b, 7))
    assert split_pro_rata(10, [(a, 0), (b, 0)]) == ((a, 0), (b, 0))
    assert split_pro_rata(10, []) == ()
    assert split_pro_rata(0, [(a, 5)]) == ((a, 0),)


@given(
    st.integers(0, 10**12),
    st.lists(st.integers(0, 10**6), min_size=1, max_size=len(MINERS)),
)
@settings(max_examples=200, deadline=None)
def test_split_is_exact_fair_and_deterministic(pool: int, weights: list[int]) -> None:
    entries = list(zip(MINERS, weights, strict=False))
    out = split_pro_rata(pool, entries)
    total = sum(weights)
    assert [a for a, _ in out] == sorted(a for a, _ in entries)
    assert out == split_pro_rata(pool, list(reversed(entries)))  # order of input is irrelevant
    if total == 0:
        assert all(x == 0 for _, x in out)
        return
    assert sum(x for _, x in out) == pool
    w = dict(entries)
    for a, x in out:
        # within one base unit of the exact share, never above its ceiling
        assert pool * w[a] // total <= x <= -(-pool * w[a] // total)


# ----------------------------------------------------------------------- rounds


def test_round_pays_pools_exactly() -> None:
    led = _ledger(emission=1001, miner_bps=8000)  # miner pool 800, validator pool 201
    m = _admitted(led)
    payout = led.plan_round(RoundOutcome(1, ((m[0], 3), (m[1], 4)), tuple(VAL_ADDRS)))
    assert sum(x for _, x in payout.rewards) == 800
    assert sum(x for _, x in payout.validator_fees) == 201
    assert payout.minted == 1001
    fees = dict(payout.validator_fees)
    assert sorted(fees.values()) == [50, 50, 50, 51]
    assert fees[min(VAL_ADDRS)] == 51  # equal weights: the lowest address gets the extra unit
    before = led.total
    record = led.apply_payout(payout)
    assert led.total == before + 1001 and led.emitted == 1001 and led.height == 1
    assert record[m[0]].reward == dict(payout.rewards)[m[0]]
    assert record[VAL_ADDRS[0]].fee == fees[VAL_ADDRS[0]]
    led.check_invariants()


def test_no_accepted_submission_mints_no_miner_share() -> None:
    led = _ledger()
    payout = led.apply_round(RoundOutcome(1, (), tuple(VAL_ADDRS)))
    assert payout.rewards == () and payout.minted == 200 and led.emitted == 200
    payout = led.apply_round(RoundOutcome(2))
    assert payout.minted == 0 and led.emitted == 200 and led.height == 2
    m = _admitted(led)
    payout = led.apply_round(RoundOutcome(3, ((m[0], 0),)))  # zero total weight
    assert payout.rewards == ((m[0], 0),) and payout.minted == 0
    led.check_invariants()


def test_slash_caps_at_stake_and_burns() -> None:
    led = _ledger()
    a = _admitted(led)[0]
    stake, balance = led.accounts[a].stake, led.accounts[a].balance
    assert led.slash(a, 30, "test") == 30
    assert led.accounts[a].stake == stake - 30 and led.burned == 30
    assert led.slash(a, 10**9, "test") == stake - 30
    assert led.accounts[a] == Account(balance, 0)
    assert led.burned == stake and led.slash(a, 5, "test") == 0
    led.check_invariants()


def test_round_penalties_cap_burn_and_eject() -> None:
    led = _ledger()
    m = _admitted(led)
    forger, sloppy, honest = m[0], m[1], m[2]
    stake = led.accounts[forger].stake
    outcome = RoundOutcome(
        1,
        ((honest, 5),),
        tuple(VAL_ADDRS),
        (
            Penalty(forger, 10**12, "recompute-mismatch", eject=True),
            Penalty(sloppy, 10, "malformed"),
        ),
    )
    payout = led.apply_round(outcome)
    assert {p.address: p.amount for p in payout.penalties} == {forger: stake, sloppy: 10}
    assert led.burned == stake + 10 == payout.burned
    assert led.accounts[forger].ejected and led.accounts[forger].ejected_at == 1
    assert not led.admitted(forger)
    assert not led.accounts[sloppy].ejected
    record = payout.by_address()
    assert record[forger].slashed == stake and record[forger].ejected
    assert record[sloppy].slashed == 10 and not record[sloppy].ejected
    led.check_invariants()


def test_ejected_is_never_admitted_again() -> None:
    led = _ledger()
    a = _admitted(led)[0]
    led.eject(a, 5)
    assert not led.admitted(a)
    led.credit(a, 10**6)
    for op in (lambda: led.stake(a, 1), lambda: led.unstake(a, 1), lambda: led.eject(a, 6)):
        with pytest.raises(LedgerError, match="ejected"):
            op()
    assert not led.admitted(a)
    with pytest.raises(LedgerError, match="not admitted"):
        led.plan_round(RoundOutcome(1, ((a, 1),)))
    with pytest.raises(LedgerError, match="already ejected"):
        led.plan_round(RoundOutcome(1, (), (), (Penalty(a, 1, "copy", True),)))


def test_admission_follows_stake() -> None:
    led = _ledger()
    a = next(x for x in MINERS if led.accounts[x].stake == 0)
    assert not led.admitted(a)
    led.stake(a, MIN_STAKE - 1)
    assert not led.admitted(a)
    led.stake(a, 1)
    assert led.admitted(a)
    led.unstake(a, 1)
    assert not led.admitted(a)
    assert not led.admitted(VAL_ADDRS[0])  # unknown


@pytest.mark.parametrize(
    ("op", "match"),
    [
        (lambda led, a: led.stake(a, 10**9), "exceeds the balance"),
        (lambda led, a: led.stake(a, 0), r"must be in \[1"),
        (lambda led, a: led.stake(a, True), "expected an integer"),
        (lambda led, a: led.stake(a, 1.0), "expected an integer"),
        (lambda led, a: led.unstake(a, 10**9), "exceeds the stake"),
        (lambda led, a: led.slash(a, -1, "x"), r"must be in \[0"),
        (lambda led, a: led.slash(a, 1, ""), "reason"),
        (lambda led, a: led.slash(VAL_ADDRS[0], 1, "x"), "unknown account"),
        (lambda led, a: led.stake("pot1nope", 1), "not a valid pot1 address"),
        (lambda led, a: led.credit(a, 2**63), r"must be in \[0"),
        (lambda led, a: led.credit(a, 2**63 - 1), "balance of"),
        (lambda led, a: led.plan_round(RoundOutcome(2)), "does not follow"),
        (lambda led, a: led.plan_round(RoundOutcome(1, ((a, 1), (a, 2)))), "more than once"),
        (lambda led, a: led.plan_round(RoundOutcome(1, ((a, -1),))), r"must be in \[0"),
        (
            lambda led, a: led.plan_round(RoundOutcome(1, ((a, 1),), (), (Penalty(a, 1, "x"),))),
            "also rewarded",
        ),
        (lambda led, a: led.apply_payout(RoundPayout(1, 5, ((a, 4),), (), ())), "minted is not"),
        (
            lambda led, a: led.apply_payout(RoundPayout(1, 10**6, ((a, 10**6),), (), ())),
            "exceeds the emission",
        ),
        (
            lambda led, a: led.apply_payout(RoundPayout(1, 0, (), (), (Penalty(a, 10**9, "x"),))),
            "exceeds the stake",
        ),
    ],
)
def test_errors_leave_state_unchanged(op: Any, match: str) -> None:
    led = _ledger()
    a = _admitted(led)[0]
    before = led.snapshot()
    with pytest.raises(LedgerError, match=match):
        op(led, a)
    assert led.snapshot() == before


def test_overflowing_round_refused_whole() -> None:
    led = _ledger()
    m = _admitted(led)
    led.credit(VAL_ADDRS[0], 2**63 - 1 - 10)  # one fee would overflow this balance
    before = led.snapshot()
    with pytest.raises(LedgerError, match="balance of"):
        led.apply_round(RoundOutcome(1, ((m[0], 1),), tuple(VAL_ADDRS)))
    assert led.snapshot() == before


# -------------------------------------------------------------------- snapshots


def test_snapshot_restore_digest_round_trip() -> None:
    led = _ledger()
    m = _admitted(led)
    led.apply_round(
        RoundOutcome(1, ((m[0], 2), (m[1], 1)), tuple(VAL_ADDRS), (Penalty(m[2], 7, "malformed"),))
    )
    led.eject(m[0], 1)
    snap = led.snapshot()
    assert list(snap["accounts"]) == sorted(snap["accounts"])
    back = Ledger.restore(json.loads(json.dumps(snap)))
    assert back == led
    assert back.digest() == led.digest()
    assert len(led.digest()) == 64
    led.credit(m[1], 1)
    assert led.digest() != back.digest()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda s: s.update(extra=1), "snapshot: unknown fields"),
        (lambda s: s.pop("burned"), "missing fields"),
        (lambda s: s.update(emitted=1.0), "snapshot.emitted: expected an integer"),
        (lambda s: s.update(height=True), "snapshot.height: expected an integer"),
        (lambda s: s["params"].update(miner_share_bps=1), "shares must add up"),
        (lambda s: s["accounts"].update(bogus={}), "not a valid pot1 address"),
        (lambda s: next(iter(s["accounts"].values())).update(balance=-1), r"balance: must be in"),
        (
            lambda s: next(iter(s["accounts"].values())).update(ejected=1),
            "ejected: expected a boolean",
        ),
        (lambda s: next(iter(s["accounts"].values())).update(ejected_at=3), "exactly when ejected"),
        (
            lambda s: next(iter(s["accounts"].values())).update(balance=1),
            "invariant: accounts hold",
        ),
        (lambda s: s.update(accounts=[]), "snapshot.accounts: expected an object"),
    ],
)
def test_restore_is_strict(mutate: Any, match: str) -> None:
    snap = _ledger().snapshot()
    snap = copy.deepcopy(snap)
    mutate(snap)
    with pytest.raises(LedgerError, match=match):
        Ledger.restore(snap)


def test_check_invariants_names_the_break() -> None:
    led = _ledger()
    led.emitted += 1
    with pytest.raises(LedgerError, match="supply_genesis"):
        led.check_invariants()
    led = _ledger()
    a = MINERS[0]
    led.accounts[a] = Account(-1, led.accounts[a].stake + led.accounts[a].balance + 1)
    with pytest.raises(LedgerError, match="negative"):
        led.check_invariants()


# ---------------------------------------------------------------- property test


def _draw_outcome(data: st.DataObject, led: Ledger) -> RoundOutcome:
    height = data.draw(st.sampled_from([led.height + 1] * 9 + [led.height + 2]))
    admitted = _admitted(led)
    miners = data.draw(st.lists(st.sampled_from(admitted), unique=True)) if admitted else []
    weights = data.draw(st.lists(st.integers(0, 10**6), min_size=len(miners), max_size=len(miners)))
    validators = data.draw(st.lists(st.sampled_from(VAL_ADDRS + MINERS[:1]), unique=True))
    others = [a for a in MINERS if a not in miners and not led.accounts[a].ejected]
    targets = (
        data.draw(st.lists(st.sampled_from(others), unique=True, max_size=3)) if others else []
    )
    penalties = tuple(
        Penalty(a, data.draw(st.integers(0, 300)), "recompute-mismatch", data.draw(st.booleans()))
        for a in targets
    )
    return RoundOutcome(
        height, tuple(zip(miners, weights, strict=True)), tuple(validators), penalties
    )


@given(
    st.integers(1, 10**9),
    st.integers(0, 10_000),
    st.lists(
        st.sampled_from(["stake", "unstake", "slash", "eject", "credit", "round"]), max_size=25
    ),
    st.data(),
)
@settings(max_examples=60, deadline=None)
def test_any_sequence_conserves_supply(
    emission: int, miner_bps: int, ops: list[str], data: st.DataObject
) -> None:
    led = _ledger(emission, miner_bps)
    led.check_invariants()
    for op in ops:
        before = led.snapshot()
        addr = data.draw(st.sampled_from(MINERS))
        amount = data.draw(st.integers(0, 2000))
        try:
            if op == "stake":
                led.stake(addr, amount)
            elif op == "unstake":
                led.unstake(addr, amount)
            elif op == "slash":
                stake = led.accounts[addr].stake
                got = led.slash(addr, amount, "test")
                assert got == min(amount, stake)
                assert led.burned == before["burned"] + got
            elif op == "eject":
                led.eject(addr, led.height)
            elif op == "credit":
                led.credit(addr, amount)
            else:
                outcome = _draw_outcome(data, led)
                twin = Ledger.restore(before)
                payout = led.plan_round(outcome)
                assert led.snapshot() == before  # plan_round is pure
                assert payout == led.plan_round(outcome)  # and deterministic
                rewarded = sum(x for _, x in payout.rewards)
                fees = sum(x for _, x in payout.validator_fees)
                assert payout.minted == rewarded + fees
                positive = any(w > 0 for _, w in outcome.miners)
                assert rewarded == (led.params.miner_pool if positive else 0)
                assert fees == (led.params.validator_pool if outcome.validators else 0)
                led.apply_payout(payout)
                assert twin.apply_round(outcome) == payout  # apply does what plan said
                assert twin.digest() == led.digest()
                assert led.emitted == before["emitted"] + payout.minted
                assert led.burned == before["burned"] + payout.burned
        except LedgerError:
            assert led.snapshot() == before  # errors leave no partial state
        led.check_invariants()
        assert all(a.balance >= 0 and a.stake >= 0 for a in led.accounts.values())
        assert all(led.admitted(a) is False for a in MINERS if led.accounts[a].ejected)
    assert Ledger.restore(led.snapshot()).digest() == led.digest()


def test_params_from_genesis() -> None:
    p = LedgerParams.from_genesis(_genesis(1001, 3333))
    assert p.miner_pool == 1001 * 3333 // 10_000 and p.miner_pool + p.validator_pool == 1001
