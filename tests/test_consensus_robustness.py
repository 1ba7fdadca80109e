"""Robustness of a replica against one Byzantine replica or a network attacker, by hand.

Each test drives real :class:`Replica` objects with hand-built messages and checks one hole:
reflection through VIEW-CHANGE, spoofed FETCH-STATE, unbounded retained state, a future
buffer filled by unsigned junk, a signed checkpoint missing from the write-ahead log, and the
overall message-size bound of the parser.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from consensus_harness import CHAIN, Keys, drive_to_committed

from pot_cli.consensus import messages
from pot_cli.consensus.app import ChainApp, Validity
from pot_cli.consensus.messages import (
    Checkpoint,
    Commit,
    CommittedBlock,
    FetchState,
    MessageError,
    NewView,
    Prepare,
    StateReply,
    ViewChange,
    parse_message,
    parse_wire,
    proposal_digest,
    sign,
)
from pot_cli.consensus.replica import Output, Replica
from pot_cli.consensus.wal import MemoryWal
from pot_cli.errors import PotError

ZERO_SIG = b"\x00" * 64


def _max_message_bytes() -> int:
    return messages.MAX_MESSAGE_BYTES


def _sends_of(out: Output, cls: type, to: int | None = None) -> list[Any]:
    return [m for dest, m in out.sends if isinstance(m, cls) and (to is None or dest == to)]


def _new_view(k: Keys, view: int, vc_from: tuple[int, ...]) -> NewView:
    """A valid NEW-VIEW for ``view`` with nothing prepared (O is empty)."""
    who = k.cfg.primary(view)
    vcs = tuple(k.view_change(view, r) for r in vc_from)
    return sign(k.ids[who], CHAIN, NewView(view, vcs, (), who))


def _certified_block(k: Keys, seq: int) -> CommittedBlock:
    proposal = {"seq": seq, "data": f"block-{seq}"}
    digest = proposal_digest(proposal)
    commits = tuple(k.commit(0, seq, digest, r) for r in (0, 2, 3))
    return CommittedBlock(seq, 0, digest, proposal, commits)


# ------------------------------------------------------------------ 1. VIEW-CHANGE reflection


def test_view_change_reflection_needs_a_signature_and_is_rate_limited() -> None:
    k = Keys(4)
    r = k.replica(2)
    out = r.step(_new_view(k, 1, (0, 1, 3)), 0)
    assert r.view == 1 and r.active, out.rejected
    # a forged VIEW-CHANGE for our current view, "from" replica 3 / replica 0: no reply at all
    for claimed in (3, 0):
        forged = {**k.view_change(1, claimed).to_dict(), "sig": "00" * 64}
        sent = len(r.step(forged, 10).sends)
        sent += len(r.step(ViewChange(1, 0, (), (), claimed, ZERO_SIG), 10).sends)
        assert sent == 0, f"{sent} sends for forged VIEW-CHANGEs from {claimed}"
    # a validly signed one, replayed 50 times at once: at most one NEW-VIEW goes back
    vc = k.view_change(1, 3)
    replies = 0
    for _ in range(50):
        out = r.step(vc.to_dict(), 20)
        replies += len(_sends_of(out, NewView, to=3))
        assert all(dest == 3 for dest, _ in out.sends), [d for d, _ in out.sends]
    assert replies == 1, f"{replies} NEW-VIEW replies to 50 copies of one VIEW-CHANGE"
    # the laggard is helped again once the rate-limit window has passed
    later = r.step(vc.to_dict(), 20 + k.cfg.resend_interval // 2)
    assert len(_sends_of(later, NewView, to=3)) == 1


# ------------------------------------------------------------------ 2. spoofed FETCH-STATE


def test_fetch_state_must_be_signed_by_the_requester() -> None:
    k = Keys(4)
    r = k.replica(1)
    for seq in (1, 2, 3):
        drive_to_committed(k, r, seq)
    assert r.last_exec == 3
    unsigned = {"type": "fetch-state", "from_seq": 1, "replica": 2}
    zero_sig = {**unsigned, "sig": "00" * 64}
    for now, spoof in ((1000, unsigned), (2000, zero_sig)):
        answered = len(_sends_of(r.step(spoof, now), StateReply))
        assert answered == 0, f"STATE-REPLY sent for spoofed {spoof}"
    # a genuine (signed) request is answered, within the overall message bound
    genuine = sign(k.ids[2], CHAIN, FetchState(1, 2))
    out = r.step(genuine.to_dict(), 10_000)
    replies = _sends_of(out, StateReply, to=2)
    assert len(replies) == 1, out.rejected
    assert [b.seq for b in replies[0].blocks] == [1, 2, 3]
    assert len(json.dumps(replies[0].to_dict())) <= _max_message_bytes()


# ------------------------------------------------------------------ 3. bounded retained state


def test_far_future_view_changes_from_one_replica_do_not_grow_state() -> None:
    k = Keys(4)
    r = k.replica(1)
    before = r.footprint()
    for view in range(20, 3020):
        r.step(k.view_change(view, 3), 0)
    assert r.view == 0 and r.active  # one replica alone cannot move us
    after = r.footprint()
    assert after - before < 100, f"retained state grew from {before} to {after}"
    assert after <= r.footprint_bound()


# ------------------------------------------------------------------ 4. future buffer


def test_unsigned_junk_cannot_crowd_out_early_messages() -> None:
    k = Keys(4)
    r = k.replica(0)  # a backup in view 1 (primary 1)
    window = k.cfg.watermark_window
    rejected = 0
    for i in range(4200):
        view = 1 + i % 2
        seq = 1 + i % window
        sender = 2 + (i // 2) % 2
        junk = Prepare(view, seq, f"{i:064x}", sender, ZERO_SIG)
        out = r.step(junk, 0)
        assert not out.sends
        rejected += bool(out.rejected)
    # honest early messages for view 1, before its NEW-VIEW arrives
    pp = k.pp(1, 1)
    for early in (pp, k.prepare(1, 1, pp.digest, 2), k.prepare(1, 1, pp.digest, 3)):
        out = r.step(early, 1)
        assert not out.rejected and not out.sends, out.rejected
    assert r.view == 0
    out = r.step(_new_view(k, 1, (1, 2, 3)), 2)
    assert r.view == 1 and r.active, out.rejected
    commits = [(c.view, c.seq, c.digest) for c in _sends_of(out, Commit)]
    assert (1, 1, pp.digest) in commits, "the buffered early pre-prepare/prepares were dropped"
    # and the forged junk was refused when it arrived, not buffered
    assert rejected == 4200, f"only {rejected} of 4200 forged prepares rejected"


# ------------------------------------------------------------------ 5. checkpoints in the WAL


def test_every_signed_checkpoint_above_the_stable_one_stays_in_the_log() -> None:
    k = Keys(4, checkpoint_interval=2, watermark_window=4)
    rid = 1
    r = k.replica(rid)
    wal = MemoryWal()
    own: dict[int, Checkpoint] = {}

    def feed(out: Output) -> None:
        wal.write(out)
        for _, m in out.sends:
            if isinstance(m, Checkpoint) and m.replica == rid:
                own[m.seq] = m

    # a state transfer brings ten certified blocks at once: far above the high watermark (4)
    blocks = tuple(_certified_block(k, s) for s in range(1, 11))
    out = r.step(StateReply(None, blocks, 0), 0)
    feed(out)
    assert r.last_exec == 10, out.rejected
    assert sorted(own) == [2, 4, 6, 8, 10]
    # a lower checkpoint (4) becomes stable; the log compacts
    for who in (0, 2):
        feed(r.step(k.checkpoint(4, own[4].digest, who), 1))
    assert r.low == 4
    log = wal.load()
    logged = {
        (rec["message"]["seq"], rec["message"]["digest"])
        for rec in log
        if rec["kind"] == "msg"
        and rec["message"]["type"] == Checkpoint.TYPE
        and rec["message"]["replica"] == rid
    }
    missing = [s for s, cp in sorted(own.items()) if s > r.low and (s, cp.digest) not in logged]
    assert not missing, f"own signed checkpoints {missing} are in no log record"
    restored = Replica.restore(k.cfg, rid, k.ids[rid], ChainApp(), log)
    assert restored.last_exec == 10
    for s in sorted(own):
        if s > r.low:
            assert (Checkpoint.TYPE, 0, s) in restored._own, s


# ------------------------------------------------------------------ 6. overall size bound


def test_parser_refuses_a_message_over_the_total_size_bound() -> None:
    limit = _max_message_bytes()
    piece = min(900_000, messages.MAX_PROPOSAL_BYTES - 64)
    proposal = "x" * piece
    pp = {
        "type": "pre-prepare",
        "view": 0,
        "seq": 1,
        "digest": proposal_digest(proposal),
        "proposal": proposal,
        "replica": 0,
        "sig": "00" * 64,
    }
    cert = {"pre_prepare": pp, "prepares": []}
    count = limit // piece + 2
    if count > messages.MAX_LIST:
        pytest.skip("MAX_MESSAGE_BYTES is beyond what per-field limits allow in one message")
    vc = {
        "type": "view-change",
        "new_view": 1,
        "stable_seq": 0,
        "checkpoint_proof": [],
        "prepared": [cert] * count,  # one object, many references: small in memory
        "replica": 3,
        "sig": "00" * 64,
    }
    # each piece alone is acceptable
    small = parse_message({**vc, "prepared": [cert]})
    assert isinstance(small, ViewChange)
    with pytest.raises(MessageError):
        parse_message(vc)


def test_wire_text_over_the_bound_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limit = _max_message_bytes()
    k = Keys(4)
    good = json.dumps(k.prepare(0, 1, "ab" * 32, 2).to_dict())
    parsed = parse_wire(good)
    assert isinstance(parsed, Prepare)
    assert isinstance(parse_wire(good.encode()), Prepare)
    padded = good + " " * (limit + 1 - len(good))  # still valid JSON, one byte too long
    decoded: list[int] = []
    real_loads = json.loads

    def spy(s: Any, *args: Any, **kwargs: Any) -> Any:
        decoded.append(len(s))
        return real_loads(s, *args, **kwargs)

    monkeypatch.setattr(json, "loads", spy)
    for data in (padded, padded.encode()):
        with pytest.raises(MessageError):
            parse_wire(data)
    assert all(n <= limit for n in decoded), "oversized text was decoded before the check"


# ------------------------------------------------------------------ review findings


def test_an_equivocating_primary_gets_one_judgement_per_slot() -> None:
    """A Byzantine primary signing many different proposals for one (view, seq) makes the
    application judge only the first (re-deriving a pot block costs seconds)."""

    class Counting(ChainApp):
        def __init__(self) -> None:
            super().__init__(target=4)
            self.calls = 0

        def validate(self, seq: int, proposal: Any, now: int) -> Validity:
            self.calls += 1
            return Validity.PENDING

    k = Keys(4)
    app = Counting()
    r = k.replica(1, app)
    for i in range(50):
        r.step(k.pp(0, 1, {"seq": 1, "data": f"variant-{i}"}), i)
    assert app.calls == 1
    assert len(r.evidence) == 1  # the equivocation is proven once
    assert r.footprint() <= r.footprint_bound()


def test_a_block_the_application_cannot_execute_yet_waits_and_never_crashes() -> None:
    class Missing(ChainApp):
        ready = False

        def execute(self, seq: int, proposal: Any) -> None:
            if not self.ready:
                raise PotError("payload missing")
            super().execute(seq, proposal)

    k = Keys(4)
    app = Missing(target=4)
    r = k.replica(1, app)
    wal = MemoryWal()
    wal.write(r.start(0))
    out = drive_to_committed(k, r, 1)
    wal.write(out)
    assert r.last_exec == 0 and any("cannot execute" in x for x in out.rejected)
    # a restart from the log does not crash either
    restored = Replica.restore(k.cfg, 1, k.ids[1], Missing(target=4), wal.load())
    assert restored.last_exec == 0
    app.ready = True
    out = r.resume(5)  # the host resumes the replica once the application has what it needs
    assert r.last_exec == 1 and [b.seq for b in out.committed] == [1]


def test_unsolicited_state_replies_cannot_grow_the_state() -> None:
    k = Keys(4)
    r = k.replica(3)
    seq = 1
    while seq <= 1200:
        blocks = tuple(_certified_block(k, s) for s in range(seq, min(1200, seq + 63) + 1))
        r.step(StateReply(None, blocks, 1), seq)  # an old, honestly certified history
        seq += len(blocks)
    assert r.last_exec <= r.high + 64
    assert r.footprint() <= r.footprint_bound()


def test_a_restart_after_many_views_keeps_memory_bounded() -> None:
    k = Keys(4)
    r = k.replica(2)
    wal = MemoryWal()
    views = [v for v in range(1, 61) if k.cfg.primary(v) != 2]
    for t, view in enumerate(views):
        who = k.cfg.primary(view)
        wal.write(r.step(_new_view(k, view, (0, 1, 3)), t))
        for seq in range(1, k.cfg.watermark_window + 1):
            for sender in (0, 1, 3):
                if sender != who:
                    wal.write(r.step(k.prepare(view, seq, "ab" * 32, sender), t))
                wal.write(r.step(k.commit(view, seq, "ab" * 32, sender), t))
    restored = Replica.restore(k.cfg, 2, k.ids[2], ChainApp(), wal.load())
    assert restored.footprint() <= restored.footprint_bound()
    assert len(wal.records) < 500  # the log compacts on entering a view


def test_the_signature_cache_holds_digests_not_messages() -> None:
    k = Keys(4)
    r = k.replica(1)
    big = "x" * 900_000
    for i in range(20):
        forged = {**k.pp(0, 1, {"seq": 1, "data": "x"}).to_dict(), "proposal": big + str(i)}
        forged["digest"] = proposal_digest(forged["proposal"])
        r.step(forged, i)
    keys = list(r.ver._cache)
    assert all(len(key[2]) == 32 for key in keys)


def test_a_replayed_old_fetch_state_does_not_use_up_the_real_one() -> None:
    k = Keys(4, checkpoint_interval=2, watermark_window=4)
    r = k.replica(1)
    for s in (1, 2, 3):
        drive_to_committed(k, r, s)
    old = sign(k.ids[3], CHAIN, FetchState(1, 3))
    new = sign(k.ids[3], CHAIN, FetchState(3, 3))
    first = [m for _, m in r.step(old, 1000).sends if isinstance(m, StateReply)]
    second = [m for _, m in r.step(new, 1001).sends if isinstance(m, StateReply)]
    assert first and second and [b.seq for b in second[0].blocks] == [3]
