"""Normal-case acceptance rules, checkpoints, evidence and the signing guard, by hand."""

from __future__ import annotations

import json

import pytest
from consensus_harness import CHAIN, Keys, drive_to_committed

from pot_cli.consensus.app import ChainApp
from pot_cli.consensus.certificates import verify_block
from pot_cli.consensus.evidence import Evidence, verify_evidence
from pot_cli.consensus.messages import (
    Checkpoint,
    Commit,
    MessageError,
    Prepare,
    PrePrepare,
    ViewChange,
    proposal_digest,
)
from pot_cli.consensus.replica import Output, Replica


def sent(out: Output, cls: type) -> list:
    return [m for _, m in out.sends if isinstance(m, cls)]


def prepared_backup(k: Keys, seq: int = 1, rid: int = 1) -> tuple[Replica, PrePrepare]:
    """Replica ``rid`` with an accepted pre-prepare for (0, seq)."""
    r = k.replica(rid)
    pp = k.pp(0, seq)
    out = r.step(pp, 0)
    assert sent(out, Prepare), out.rejected
    return r, pp


def test_pre_prepare_from_primary_is_prepared_and_logged() -> None:
    k = Keys()
    r = k.replica(1)
    pp = k.pp(0, 1)
    out = r.step(pp, 0)
    (p,) = sent(out, Prepare)
    assert (p.view, p.seq, p.digest, p.replica) == (0, 1, pp.digest, 1)
    kinds = [rec["kind"] for rec in out.records]
    assert kinds == ["msg", "msg"]  # the accepted pre-prepare, then our signed prepare
    assert out.records[1]["message"]["type"] == "prepare"


def test_pre_prepare_rejections() -> None:
    k = Keys()
    r = k.replica(1)
    cases = {
        "not from the primary": k.pp(0, 1, signer=2),
        "outside watermarks": k.pp(0, k.cfg.watermark_window + 1),
        "application rejected": k.pp(0, 1, {"seq": 1, "data": "poison"}),
    }
    for reason, msg in cases.items():
        out = r.step(msg, 0)
        assert not out.sends and any(reason in x for x in out.rejected), (reason, out.rejected)
    # a forged signature: the primary's message signed by someone else
    good = k.pp(0, 2)
    forged = PrePrepare(
        good.view, good.seq, good.digest, good.proposal, 0, k.pp(0, 2, signer=3).sig
    )
    out = r.step(forged, 0)
    assert "invalid signature" in out.rejected[0] and not out.sends
    # digest that does not match the proposal
    bad = k.pp(0, 3)
    lying = PrePrepare(0, 3, proposal_digest({"seq": 3, "data": "x"}), bad.proposal, 0)
    from pot_cli.consensus.messages import sign

    out = r.step(sign(k.ids[0], CHAIN, lying), 0)
    assert "digest does not match" in out.rejected[0]
    # a null proposal is only legal inside a new-view
    out = r.step(k.null_pp(0, 4), 0)
    assert "null proposal" in out.rejected[0]
    assert r.stats["rejected"] == 6


def test_conflicting_pre_prepare_is_rejected_and_kept_as_evidence() -> None:
    k = Keys()
    r, pp = prepared_backup(k)
    other = k.pp(0, 1, {"seq": 1, "data": "other"})
    out = r.step(other, 1)
    assert not out.sends and "conflicts" in out.rejected[0]
    (ev,) = r.evidence
    assert (ev.replica, ev.phase, ev.view, ev.seq) == (0, "pre-prepare", 0, 1)
    assert {ev.first.digest, ev.second.digest} == {pp.digest, other.digest}
    assert out.records[-1]["kind"] == "evidence"


def test_old_view_rejected_future_view_buffered() -> None:
    k = Keys()
    r = k.replica(3)
    r.view = 2
    out = r.step(k.pp(1, 1), 0)
    assert "old view" in out.rejected[0]
    out = r.step(k.pp(4, 1), 0)
    assert not out.sends and not out.rejected  # buffered until view 4 starts
    assert len(r._future) == 1


def test_prepare_from_primary_rejected_and_quorum_leads_to_commit() -> None:
    k = Keys()
    r, pp = prepared_backup(k)
    out = r.step(k.prepare(0, 1, pp.digest, 0), 1)
    assert "from the primary" in out.rejected[0]
    # one more matching prepare (ours + replica 2's = 2f) prepares the request
    out = r.step(k.prepare(0, 1, pp.digest, 2), 1)
    (c,) = sent(out, Commit)
    assert (c.view, c.seq, c.digest) == (0, 1, pp.digest)


def test_mismatching_prepares_do_not_prepare() -> None:
    k = Keys()
    r, _ = prepared_backup(k)
    out = r.step(k.prepare(0, 1, proposal_digest("other"), 2), 1)
    assert not sent(out, Commit)


def test_commit_quorum_commits_with_offline_verifiable_certificate() -> None:
    k = Keys()
    r, pp = prepared_backup(k)
    r.step(k.prepare(0, 1, pp.digest, 2), 1)
    out = r.step(k.commit(0, 1, pp.digest, 0), 2)
    assert not out.committed
    out = r.step(k.commit(0, 1, pp.digest, 3), 3)
    (block,) = out.committed
    assert block.seq == 1 and block.proposal == pp.proposal and len(block.commits) == 3
    assert verify_block(block, CHAIN, k.cfg.public_keys)
    assert not verify_block(block, "other-chain", k.cfg.public_keys)
    tampered = type(block)(1, 0, block.digest, {"seq": 1, "data": "evil"}, block.commits)
    assert not verify_block(tampered, CHAIN, k.cfg.public_keys)
    short = type(block)(1, 0, block.digest, block.proposal, block.commits[:2])
    assert not verify_block(short, CHAIN, k.cfg.public_keys)
    assert r.last_exec == 1 and r.app.height == 1  # type: ignore[attr-defined]


def test_execution_strictly_in_sequence_order() -> None:
    k = Keys()
    r = k.replica(1)
    out2 = drive_to_committed(k, r, 2)
    assert not out2.committed and r.last_exec == 0
    out1 = drive_to_committed(k, r, 1)
    assert [b.seq for b in out1.committed] == [1, 2]


def test_checkpoint_becomes_stable_and_collects_garbage() -> None:
    k = Keys(checkpoint_interval=2, watermark_window=4)
    r = k.replica(1)
    drive_to_committed(k, r, 1)
    out = drive_to_committed(k, r, 2)
    (cp,) = sent(out, Checkpoint)
    assert cp.seq == 2 and cp.digest == r.app.state_digest()
    assert r.low == 0
    r.step(k.checkpoint(2, cp.digest, 0), 0)
    out = r.step(k.checkpoint(2, cp.digest, 3), 0)
    assert r.low == 2 and r.high == 6
    assert out.compact is not None and out.compact[1]["kind"] == "stable"
    assert all(seq > 2 for _, seq in r._entries)
    # messages at or below the low watermark are now rejected
    out = r.step(k.pp(0, 2), 0)
    assert "outside watermarks" in out.rejected[0]


def test_checkpoints_with_wrong_digest_do_not_stabilise() -> None:
    k = Keys(checkpoint_interval=2, watermark_window=4)
    r = k.replica(1)
    drive_to_committed(k, r, 1)
    drive_to_committed(k, r, 2)
    r.step(k.checkpoint(2, "11" * 32, 0), 0)
    r.step(k.checkpoint(2, "11" * 32, 3), 0)
    assert r.low == 0
    out = r.step(k.checkpoint(3, "11" * 32, 0), 0)
    assert "not a checkpoint sequence number" in out.rejected[0]


def test_double_vote_produces_evidence() -> None:
    k = Keys()
    r, pp = prepared_backup(k)
    r.step(k.commit(0, 1, pp.digest, 3), 0)
    r.step(k.commit(0, 1, proposal_digest("evil"), 3), 0)
    (ev,) = r.evidence
    assert (ev.replica, ev.phase) == (3, "commit")
    d = json.loads(json.dumps(ev.to_dict()))
    assert d["first"]["digest"] != d["second"]["digest"]
    # evidence is checkable offline by anyone with the public keys
    back = Evidence.from_dict(d)
    assert verify_evidence(back, CHAIN, k.cfg.public_keys)
    same = Evidence(3, "commit", 0, 1, ev.first, ev.first)
    assert not verify_evidence(same, CHAIN, k.cfg.public_keys)
    framed = Evidence(2, "commit", 0, 1, ev.first, ev.second)
    assert not verify_evidence(framed, CHAIN, k.cfg.public_keys)
    with pytest.raises(MessageError):
        Evidence.from_dict({"replica": 3})


def test_last_signed_guard_survives_restart() -> None:
    k = Keys()
    r, pp = prepared_backup(k)
    records = list(r.dump_records())
    again = Replica.restore(k.cfg, 1, k.ids[1], ChainApp(), records)
    # the same prepare is re-used, a conflicting one is refused
    e = again._entries[(0, 1)]
    assert e.prepares[1].digest == pp.digest
    e.pre_prepare = k.pp(0, 1, {"seq": 1, "data": "other"})
    del e.prepares[1]
    out = again.start(5)
    assert any("refusing to sign a conflicting" in x for x in out.rejected)
    assert not [m for m in sent(out, Prepare) if m.digest != pp.digest]


def test_no_normal_case_signing_after_view_change() -> None:
    k = Keys()
    r = Replica(k.cfg, 1, k.ids[1], ChainApp(target=0))
    out = r.tick(10_000)  # nothing pending: no timer
    assert out.timer is None
    r.app = ChainApp(target=5)
    out = r.tick(0)
    assert out.timer == k.cfg.resend_interval  # first the retransmission timer ...
    deadline = r._progress_deadline
    assert deadline == k.cfg.view_change_timeout  # ... then the view-change timer
    out = r.tick(deadline)
    (vc,) = sent(out, ViewChange)
    assert vc.new_view == 1 and not r.active
    # a pre-prepare of the old view is refused now
    out = r.step(k.pp(0, 1), deadline)
    assert "old view" in out.rejected[0]


def test_primary_proposes_within_in_flight_and_watermarks() -> None:
    k = Keys(max_in_flight=3)
    r = Replica(k.cfg, 0, k.ids[0], ChainApp(target=100))
    out = r.start(0)
    pps = sent(out, PrePrepare)
    assert [p.seq for p in pps] == [1, 2, 3]
    assert all(ChainApp.valid_proposal(p.seq, p.proposal) for p in pps)


class DivergingApp(ChainApp):
    """A non-deterministic application: its state goes wrong at block 2."""

    def execute(self, seq: int, proposal: object) -> None:
        super().execute(seq, {"corrupted": seq} if seq == 2 else proposal)


def test_divergent_replica_rolls_back_by_state_transfer() -> None:
    k = Keys(checkpoint_interval=2, watermark_window=4)
    honest = k.replica(2)
    bad = Replica(k.cfg, 1, k.ids[1], DivergingApp())
    for seq in (1, 2):
        for r in (honest, bad):
            drive_to_committed(k, r, seq)
    good_digest = honest.app.state_digest()
    assert bad.app.state_digest() != good_digest
    for who in (0, 2, 3):
        out = bad.step(k.checkpoint(2, good_digest, who), 0)
    assert bad.diverged and bad.low == 2 and bad.last_exec < 2
    (fetch,) = [m for _, m in out.sends if type(m).__name__ == "FetchState"]
    # replica 2 has the stable checkpoint too and answers with its snapshot
    for who in (0, 3):
        honest.step(k.checkpoint(2, good_digest, who), 0)
    (reply,) = [m for _, m in honest.step(fetch, 0).sends]
    bad.step(reply, 0)
    assert bad.last_exec == 2 and bad.app.state_digest() == good_digest


def test_late_votes_skip_verification_but_keep_evidence() -> None:
    k = Keys()
    r = k.replica(1)
    out = drive_to_committed(k, r, 1)
    assert [b.seq for b in out.committed] == [1]
    pp = r.committed_block(1)
    assert pp is not None
    before = r.ver.verified
    late = k.commit(0, 1, pp.digest, 2)  # matching, after the block committed here
    out = r.step(late, 1)
    assert r.ver.verified == before and not out.records  # set aside, not verified, not logged
    conflicting = k.commit(0, 1, proposal_digest("evil"), 2)
    r.step(conflicting, 2)
    (ev,) = r.evidence
    assert ev.first == late and ev.second == conflicting
    assert verify_evidence(ev, CHAIN, k.cfg.public_keys)
    # a forged late vote is not turned into evidence against its supposed sender
    drive_to_committed(k, r, 2)
    b2 = r.committed_block(2)
    assert b2 is not None
    forged = type(late)(0, 2, b2.digest, 2, k.commit(0, 2, b2.digest, 3).sig)
    r.step(forged, 3)
    r.step(k.commit(0, 2, proposal_digest("x"), 2), 3)
    assert len(r.evidence) == 1


class FailingProposer(ChainApp):
    def propose(self, seq: int, now: int) -> object:
        raise RuntimeError("disk full")


def test_application_propose_failure_is_contained() -> None:
    k = Keys()
    r = Replica(k.cfg, 0, k.ids[0], FailingProposer(target=3))
    out = r.start(0)
    assert not sent(out, PrePrepare) and "disk full" in out.rejected[-1]
