"""Wire format: round trips, strict parsing of untrusted input, and a replica that never lets
an exception escape ``step`` whatever it is sent."""

from __future__ import annotations

import contextlib
import json
import random
from typing import Any

import pytest
from consensus_harness import Keys
from hypothesis import given, settings
from hypothesis import strategies as st

from pot_cli.consensus.app import ChainApp
from pot_cli.consensus.messages import (
    CommittedBlock,
    FetchState,
    MessageError,
    NewView,
    StableCheckpoint,
    StateReply,
    parse_message,
    sign,
)
from pot_cli.consensus.replica import Replica
from pot_cli.sim.consensus import garbage_message

K = Keys()


def _samples() -> list[Any]:
    pp = K.pp(0, 1)
    cert = K.prepared_cert(pp)
    vc = K.view_change(1, 2, (cert,), stable_seq=4, stable_digest="ab" * 32)
    nv = sign(K.ids[1], "pot-sim", NewView(1, (vc, vc, vc), (K.null_pp(1, 1),), 1))
    block = CommittedBlock(1, 0, pp.digest, pp.proposal, (K.commit(0, 1, pp.digest, 0),))
    sc = StableCheckpoint(4, "ab" * 32, (K.checkpoint(4, "ab" * 32, 0),), {"height": 4})
    return [
        pp,
        K.prepare(0, 1, pp.digest, 2),
        K.commit(0, 1, pp.digest, 3),
        K.checkpoint(4, "cd" * 32, 1),
        vc,
        nv,
        sign(K.ids[2], "pot-sim", FetchState(5, 2)),
        StateReply(sc, (block,), 3),
        StateReply(None, (), 3),
    ]


@pytest.mark.parametrize("msg", _samples(), ids=lambda m: type(m).__name__)
def test_round_trip_through_json(msg: Any) -> None:
    wire = json.loads(json.dumps(msg.to_dict()))
    back = parse_message(wire)
    assert back == msg
    assert back.to_dict() == msg.to_dict()
    if hasattr(msg, "signing_bytes"):
        assert back.signing_bytes("pot-sim") == msg.signing_bytes("pot-sim")


def test_signature_binds_type_chain_and_height() -> None:
    pp = K.pp(0, 1)
    p = K.prepare(0, 1, pp.digest, 2)
    c = K.commit(0, 1, pp.digest, 2)
    assert p.signing_bytes("pot-sim") != c.signing_bytes("pot-sim")  # domain per type
    assert p.signing_bytes("pot-sim") != p.signing_bytes("other")
    assert b"pbft/prepare" in p.signing_bytes("pot-sim")


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: d.update(extra=1), "unknown fields"),
        (lambda d: d.pop("digest"), "missing fields"),
        (lambda d: d.update(seq=True), "seq"),
        (lambda d: d.update(seq=0), "seq"),
        (lambda d: d.update(seq=2**60), "seq"),
        (lambda d: d.update(view="1"), "view"),
        (lambda d: d.update(digest="AB" * 32), "digest"),
        (lambda d: d.update(digest="zz" * 32), "digest"),
        (lambda d: d.update(sig="00"), "sig"),
        (lambda d: d.update(type="nope"), "unknown message type"),
        (lambda d: d.update(proposal={"x": float("nan")}), "proposal"),
        (lambda d: d.update(proposal="x" * (2 << 20)), "over the limit"),
    ],
)
def test_strict_parsing_rejects(mutate: Any, words: str) -> None:
    d = K.pp(0, 1).to_dict()
    mutate(d)
    with pytest.raises(MessageError, match=words):
        parse_message(d)


def test_deeply_nested_proposal_rejected() -> None:
    d = K.pp(0, 1).to_dict()
    nested: Any = 1
    for _ in range(5000):
        nested = [nested]
    d["proposal"] = nested
    with pytest.raises(MessageError):
        parse_message(d)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(deadline=None, max_examples=300)
@given(json_values)
def test_parse_message_only_raises_message_error(obj: Any) -> None:
    with contextlib.suppress(MessageError):
        parse_message(obj)


@settings(deadline=None, max_examples=200)
@given(
    st.sampled_from([m.to_dict() for m in _samples()]),
    st.sampled_from(["type", "view", "seq", "digest", "replica", "sig", "proposal", "new_view"]),
    json_values,
)
def test_replica_step_never_raises_on_mutated_messages(
    base: dict[str, Any], key: str, value: Any
) -> None:
    r = Replica(K.cfg, 1, K.ids[1], ChainApp(target=5))
    d = dict(base)
    d[key] = value
    out = r.step(d, 0)
    assert out is not None


def test_replica_survives_garbage_stream() -> None:
    rng = random.Random(7)
    r = Replica(K.cfg, 2, K.ids[2], ChainApp(target=5))
    rejected = 0
    for _ in range(400):
        out = r.step(garbage_message(rng, 4), 0)
        rejected += len(out.rejected)
        assert not out.committed
    assert rejected > 300 and r.last_exec == 0 and r.view == 0
