"""The spot-check beacon: hash onions, reveals bound to one frozen set, strict messages, and the
exchange between validators (who reveals, when, and for which set)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pot_cli.crypto import Identity, sha256
from pot_cli.protocol.beacon import (
    BeaconError,
    BeaconMessage,
    Onion,
    RevealCheck,
    beacon_value,
    check_reveal,
    frozen_digest,
    make_reveal,
    onion_commit,
    onion_seed,
    parse_beacon_message,
)

CHAIN = "pot-beacon-test"
ROUNDS = 3000  # crosses checkpoints (every 1024 layers)


def _identity(i: int) -> Identity:
    return Identity.from_seed(sha256(f"pot/beacon-test/{i}".encode()))


@pytest.fixture(scope="module")
def onion() -> Onion:
    return Onion(onion_seed(_identity(0), CHAIN), ROUNDS)


def test_an_onion_reveals_each_layer_once_and_every_layer_leads_to_the_commit(
    onion: Onion,
) -> None:
    assert onion.commit.hex() == onion_commit(_identity(0), CHAIN, ROUNDS)
    check = RevealCheck()
    previous = onion.commit
    for h in (1, 2, 3, 1024, 1025, 2047, 2048, ROUNDS):
        x = onion.reveal(h)
        assert RevealCheck().valid(onion.commit, ROUNDS, h, x)  # from the commit
        assert check.valid(onion.commit, ROUNDS, h, x)  # from the last layer checked
        if h == 1:
            assert sha256(x) == previous
    assert not check.valid(onion.commit, ROUNDS, 5, onion.reveal(6))
    assert not RevealCheck().valid(onion.commit, ROUNDS, 6, onion.reveal(5))
    assert not RevealCheck().valid(onion.commit, ROUNDS, ROUNDS + 1, onion.reveal(ROUNDS))
    with pytest.raises(BeaconError):
        onion.reveal(0)
    with pytest.raises(BeaconError):
        onion.reveal(ROUNDS + 1)


def test_another_chain_or_key_has_another_onion() -> None:
    a = onion_commit(_identity(0), CHAIN, 16)
    assert a != onion_commit(_identity(0), CHAIN + "-2", 16)
    assert a != onion_commit(_identity(1), CHAIN, 16)
    assert a != onion_commit(_identity(0), CHAIN, 17)


def test_a_reveal_is_bound_to_its_validator_height_and_set(onion: Onion) -> None:
    ident = _identity(0)
    pairs = [("pot1a", "00" * 32), ("pot1b", "11" * 32)]
    digest = frozen_digest(pairs)
    assert digest == frozen_digest(list(reversed(pairs)))
    r = make_reveal(ident, 0, onion, CHAIN, 7, digest)
    ok = check_reveal(ident.public_key, onion.commit, ROUNDS, CHAIN, r, RevealCheck())
    assert ok == ""
    other_set = type(r)(0, 7, frozen_digest(pairs[:1]), r.value, r.signature)
    assert "signature" in check_reveal(
        ident.public_key, onion.commit, ROUNDS, CHAIN, other_set, RevealCheck()
    )
    assert "signature" in check_reveal(
        _identity(1).public_key, onion.commit, ROUNDS, CHAIN, r, RevealCheck()
    )
    # a validator signing a value that is not its layer is caught by the onion
    forged = make_reveal(ident, 0, Onion(b"\x00" * 32, ROUNDS), CHAIN, 7, digest)
    assert "onion" in check_reveal(
        ident.public_key, onion.commit, ROUNDS, CHAIN, forged, RevealCheck()
    )


def test_beacon_messages_parse_strictly(onion: Onion) -> None:
    pairs = (("pot1a", "00" * 32), ("pot1b", "11" * 32))
    r = make_reveal(_identity(0), 0, onion, CHAIN, 7, frozen_digest(pairs))
    msg = BeaconMessage(r, pairs).to_dict()
    assert parse_beacon_message(msg, 4, 64) == BeaconMessage(r, pairs)
    plain = BeaconMessage(r).to_dict()
    assert parse_beacon_message(plain, 4, 64).frozen is None

    def broken(**edit: Any) -> dict[str, Any]:
        return {**msg, **edit}

    for bad in (
        None,
        [],
        {**msg, "extra": 1},
        broken(validator=4),
        broken(validator=True),
        broken(height=-1),
        broken(digest="x" * 64),
        broken(reveal="00"),
        broken(signature="zz" * 64),
        broken(frozen=[["pot1b", "11" * 32], ["pot1a", "00" * 32]]),  # unsorted
        broken(frozen=[["pot1a", "00" * 32]]),  # does not hash to the digest
        broken(frozen=[["pot1a", "00" * 32]] * 65),
        broken(frozen=[["pot1a"]]),
    ):
        with pytest.raises(BeaconError):
            parse_beacon_message(bad, 4, 64)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(min_size=32, max_size=32)), min_size=4, max_size=4))
def test_the_beacon_depends_on_every_reveal_and_on_which_are_missing(
    reveals: list[bytes | None],
) -> None:
    b = beacon_value(CHAIN, 3, reveals)
    assert len(b) == 32
    assert b == beacon_value(CHAIN, 3, list(reveals))
    assert b != beacon_value(CHAIN, 4, reveals)
    for i in range(4):
        changed = list(reveals)
        changed[i] = None if reveals[i] is not None else b"\x07" * 32
        assert beacon_value(CHAIN, 3, changed) != b
