"""View-change computation (C, P, O) against hand-built cases, and the replica's timers."""

from __future__ import annotations

from consensus_harness import CHAIN, Keys
from hypothesis import given, settings
from hypothesis import strategies as st

from pot_cli.consensus.app import ChainApp
from pot_cli.consensus.certificates import (
    check_new_view,
    compute_new_view,
    valid_checkpoint_proof,
    valid_prepared_cert,
    valid_view_change,
)
from pot_cli.consensus.messages import (
    NULL_DIGEST,
    NewView,
    Prepare,
    PreparedCert,
    PrePrepare,
    ViewChange,
    proposal_digest,
    sign,
)
from pot_cli.consensus.replica import Replica
from pot_cli.consensus.signatures import Verifier

STATE = "ab" * 32


def ver(k: Keys) -> Verifier:
    return Verifier(CHAIN, k.cfg.public_keys)


def test_compute_o_takes_highest_view_fills_gaps_with_null() -> None:
    k = Keys()
    old = k.prepared_cert(k.pp(0, 2, {"seq": 2, "data": "view0"}))
    new = k.prepared_cert(k.pp(1, 2, {"seq": 2, "data": "view1"}))
    far = k.prepared_cert(k.pp(1, 4, {"seq": 4, "data": "four"}))
    vcs = [
        k.view_change(2, 0, (old,)),
        k.view_change(2, 1, (new, far)),
        k.view_change(2, 3, ()),
    ]
    plan = compute_new_view(vcs)
    assert plan.min_s == 0 and plan.max_s == 4
    assert [(s, p) for s, _, p in plan.entries] == [
        (1, None),
        (2, {"seq": 2, "data": "view1"}),
        (3, None),
        (4, {"seq": 4, "data": "four"}),
    ]
    assert plan.entries[0][1] == NULL_DIGEST


def test_compute_o_starts_at_highest_stable_checkpoint() -> None:
    k = Keys(checkpoint_interval=2, watermark_window=4)
    below = k.prepared_cert(k.pp(0, 2))
    above = k.prepared_cert(k.pp(0, 3))
    vcs = [
        k.view_change(1, 0, (below, above)),
        k.view_change(1, 2, (), stable_seq=2, stable_digest=STATE),
        k.view_change(1, 3, ()),
    ]
    plan = compute_new_view(vcs)
    assert plan.min_s == 2 and plan.checkpoint_digest == STATE
    assert len(plan.checkpoint_proof) == 3
    assert [s for s, _, _ in plan.entries] == [3]


def test_compute_o_empty_when_nothing_prepared() -> None:
    k = Keys()
    plan = compute_new_view([k.view_change(1, r) for r in (0, 2, 3)])
    assert plan.entries == () and plan.min_s == plan.max_s == 0


def test_checkpoint_proof_rules() -> None:
    k = Keys(checkpoint_interval=2, watermark_window=4)
    v = ver(k)
    good = tuple(k.checkpoint(2, STATE, r) for r in (0, 1, 2))
    assert valid_checkpoint_proof(2, STATE, good, k.cfg, v)
    assert not valid_checkpoint_proof(2, STATE, good[:2], k.cfg, v)  # 2f only
    dup = (good[0], good[0], good[1])
    assert not valid_checkpoint_proof(2, STATE, dup, k.cfg, v)
    other = (*good[:2], k.checkpoint(2, "cd" * 32, 2))
    assert not valid_checkpoint_proof(2, STATE, other, k.cfg, v)
    assert valid_checkpoint_proof(0, "", (), k.cfg, v)


def test_prepared_cert_rules() -> None:
    k = Keys()
    v = ver(k)
    pp = k.pp(0, 1)
    cert = k.prepared_cert(pp)
    assert valid_prepared_cert(cert, 1, 0, k.cfg, v)
    assert not valid_prepared_cert(cert, 0, 0, k.cfg, v)  # not from an earlier view
    assert not valid_prepared_cert(cert, 1, 1, k.cfg, v)  # below the checkpoint
    short = PreparedCert(pp, cert.prepares[:1])
    assert not valid_prepared_cert(short, 1, 0, k.cfg, v)
    from_primary = PreparedCert(pp, (cert.prepares[0], k.prepare(0, 1, pp.digest, 0)))
    assert not valid_prepared_cert(from_primary, 1, 0, k.cfg, v)
    wrong = PreparedCert(pp, (cert.prepares[0], k.prepare(0, 1, NULL_DIGEST, 2)))
    assert not valid_prepared_cert(wrong, 1, 0, k.cfg, v)
    not_primary = k.prepared_cert(k.pp(0, 1, signer=2))
    assert not valid_prepared_cert(not_primary, 1, 0, k.cfg, v)


def test_view_change_validity() -> None:
    k = Keys(checkpoint_interval=2, watermark_window=4)
    v = ver(k)
    assert valid_view_change(k.view_change(1, 2), k.cfg, v)
    assert valid_view_change(k.view_change(1, 2, stable_seq=2, stable_digest=STATE), k.cfg, v)
    no_proof = sign(k.ids[2], CHAIN, ViewChange(1, 2, (), (), 2))
    assert not valid_view_change(no_proof, k.cfg, v)
    cert = k.prepared_cert(k.pp(0, 1))
    twice = sign(k.ids[2], CHAIN, ViewChange(1, 0, (), (cert, cert), 2))
    assert not valid_view_change(twice, k.cfg, v)
    good = k.view_change(1, 2)
    forged = ViewChange(1, 0, (), (), 2, k.view_change(1, 3).sig)
    assert valid_view_change(good, k.cfg, v) and not valid_view_change(forged, k.cfg, v)


def _new_view(k: Keys, view: int, vcs: list[ViewChange], pps: list[PrePrepare]) -> NewView:
    who = k.cfg.primary(view)
    return sign(k.ids[who], CHAIN, NewView(view, tuple(vcs), tuple(pps), who))


def test_check_new_view_accepts_matching_o_and_rejects_mismatches() -> None:
    k = Keys()
    v = ver(k)
    cert = k.prepared_cert(k.pp(0, 2))
    vcs = [k.view_change(1, 0, (cert,)), k.view_change(1, 2), k.view_change(1, 3)]
    o = [k.null_pp(1, 1), k.pp(1, 2, cert.pre_prepare.proposal)]
    assert not isinstance(check_new_view(_new_view(k, 1, vcs, o), k.cfg, v), str)
    bad_cases = {
        "replaced proposal": [o[0], k.pp(1, 2, {"seq": 2, "data": "forged"})],
        "missing entry": [o[1]],
        "extra entry": [*o, k.pp(1, 3)],
        "null instead of prepared": [o[0], k.null_pp(1, 2)],
    }
    for name, pps in bad_cases.items():
        result = check_new_view(_new_view(k, 1, vcs, pps), k.cfg, v)
        assert isinstance(result, str) and "does not match" in result, name
    # V problems
    assert "expected 3" in str(check_new_view(_new_view(k, 1, vcs[:2], o), k.cfg, v))
    dup = [vcs[0], vcs[0], vcs[1]]
    assert "two view-changes" in str(check_new_view(_new_view(k, 1, dup, o), k.cfg, v))
    wrong_view = [k.view_change(2, 0, (cert,)), vcs[1], vcs[2]]
    assert "another view" in str(check_new_view(_new_view(k, 1, wrong_view, o), k.cfg, v))
    forged_vc = ViewChange(1, 0, (), (), 3, vcs[0].sig)
    bad_v = [vcs[0], vcs[1], forged_vc]
    assert "invalid view-change" in str(check_new_view(_new_view(k, 1, bad_v, o), k.cfg, v))
    # not from the new primary
    not_primary = sign(k.ids[2], CHAIN, NewView(1, tuple(vcs), tuple(o), 2))
    assert "not from the primary" in str(check_new_view(not_primary, k.cfg, v))


def test_backup_rejects_inconsistent_new_view_and_accepts_good_one() -> None:
    k = Keys()
    r = Replica(k.cfg, 2, k.ids[2], ChainApp(target=10))
    cert = k.prepared_cert(k.pp(0, 1))
    vcs = [k.view_change(1, 0, (cert,)), k.view_change(1, 1), k.view_change(1, 3)]
    bad = _new_view(k, 1, vcs, [k.pp(1, 1, {"seq": 1, "data": "forged"})])
    out = r.step(bad, 0)
    assert r.view == 0 and "does not match" in out.rejected[0]
    good = _new_view(k, 1, vcs, [k.pp(1, 1, cert.pre_prepare.proposal)])
    out = r.step(good, 0)
    assert r.view == 1 and r.active
    prepares = [m for _, m in out.sends if isinstance(m, Prepare)]
    assert [(p.view, p.seq, p.digest) for p in prepares] == [(1, 1, cert.pre_prepare.digest)]


def test_timeout_view_change_carries_prepared_certificate_and_backoff() -> None:
    k = Keys()
    r = Replica(k.cfg, 3, k.ids[3], ChainApp(target=10))
    pp = k.pp(0, 1)
    r.step(pp, 0)
    out = r.step(k.prepare(0, 1, pp.digest, 2), 0)  # prepared
    assert out.timer == k.cfg.resend_interval  # retransmission first, view change later
    assert r._progress_deadline == k.cfg.view_change_timeout
    out = r.tick(k.cfg.view_change_timeout)
    (vc,) = [m for _, m in out.sends if isinstance(m, ViewChange)]
    assert vc.new_view == 1 and vc.stable_seq == 0
    (cert,) = vc.prepared
    assert cert.pre_prepare == pp and len(cert.prepares) == 2
    # the view-change timer starts only with 2f+1 view-changes for the new view
    assert r._vc_deadline is None
    r.step(k.view_change(1, 0), 150)
    assert r._vc_deadline is None
    out = r.step(k.view_change(1, 2), 160)
    t = k.cfg.view_change_timeout
    assert r._vc_deadline == 160 + t
    # no new-view from replica 1 in time: on to view 2, and the next timer is twice as long
    out = r.tick(160 + t)
    (vc2,) = [m for _, m in out.sends if isinstance(m, ViewChange)]
    assert vc2.new_view == 2 and r.backoff == 1
    r.step(k.view_change(2, 0), 400)
    r.step(k.view_change(2, 1), 400)
    assert r._vc_deadline == 400 + 2 * t


def test_join_rule_on_f_plus_one_view_changes() -> None:
    k = Keys()
    r = Replica(k.cfg, 0, k.ids[0], ChainApp(target=10))
    r.step(k.view_change(3, 2), 0)
    assert r.view == 0 and r.active  # one replica alone cannot drag us along
    out = r.step(k.view_change(2, 3), 0)
    (vc,) = [m for _, m in out.sends if isinstance(m, ViewChange)]
    assert vc.new_view == 2 and r.view == 2  # the smaller of the f+1 views


def test_new_primary_sends_new_view_and_backoff_doubles() -> None:
    k = Keys()
    app = ChainApp(target=10)
    r = Replica(k.cfg, 1, k.ids[1], app)  # primary of view 1
    r.step(k.view_change(1, 2), 0)
    out = r.step(k.view_change(1, 3), 0)
    # f+1 made it join; with its own view-change there are 2f+1: it issues the new-view
    assert r.view == 1 and r.active
    (nv,) = [m for _, m in out.sends if isinstance(m, NewView)]
    assert nv.view == 1 and len(nv.view_changes) == 3 and r.active
    # backoff: each failed view change doubles the timer, capped
    r2 = Replica(k.cfg, 2, k.ids[2], ChainApp(target=10))
    t = k.cfg.view_change_timeout
    r2.backoff = 3
    assert r2._timeout() == t * 8
    r2.backoff = 99
    assert r2._timeout() == t * 2**k.cfg.max_backoff_exp


def test_null_and_digest_helpers() -> None:
    assert proposal_digest(None) == NULL_DIGEST
    assert proposal_digest({"a": 1}) != NULL_DIGEST


_K7 = Keys(n=7, checkpoint_interval=2, watermark_window=8)
_CERTS = {
    (view, seq, tag): _K7.prepared_cert(_K7.pp(view, seq, {"seq": seq, "data": f"v{view}-{tag}"}))
    for view in (0, 1, 2)
    for seq in range(1, 9)
    for tag in ("a", "b")
}


@settings(deadline=None, max_examples=60)
@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from([0, 1, 2]), st.integers(1, 8), st.sampled_from("ab")),
            max_size=5,
            unique_by=lambda t: t[1],
        ),
        min_size=5,
        max_size=5,
    )
)
def test_compute_o_properties(picks: list[list[tuple[int, int, str]]]) -> None:
    """For any V: O covers (min-s, max-s] exactly, each entry is the highest-view certificate
    for its seq (null when none), and the NEW-VIEW built from it passes check_new_view."""
    vcs = [
        _K7.view_change(3, r, tuple(_CERTS[p] for p in sorted(ps, key=lambda t: t[1])))
        for r, ps in enumerate(picks)
    ]
    plan = compute_new_view(vcs)
    all_certs = [c for vc in vcs for c in vc.prepared]
    assert plan.max_s == max((c.pre_prepare.seq for c in all_certs), default=0)
    assert [s for s, _, _ in plan.entries] == list(range(plan.min_s + 1, plan.max_s + 1))
    for seq, digest, proposal in plan.entries:
        here = [c.pre_prepare for c in all_certs if c.pre_prepare.seq == seq]
        if not here:
            assert proposal is None and digest == NULL_DIGEST
        else:
            top = max(p.view for p in here)
            assert digest in {p.digest for p in here if p.view == top}
    pps = [sign(_K7.ids[3], CHAIN, PrePrepare(3, s, d, p, 3)) for s, d, p in plan.entries]
    nv = sign(_K7.ids[3], CHAIN, NewView(3, tuple(vcs), tuple(pps), 3))
    assert not isinstance(check_new_view(nv, _K7.cfg, Verifier(CHAIN, _K7.cfg.public_keys)), str)


def test_progress_deadline_counts_from_the_primarys_last_new_pre_prepare() -> None:
    """An execution moves the view-change deadline only to timeout after the last new
    pre-prepare from the primary, not to a full timeout after the execution: blocks in flight
    at a primary's crash must not postpone the view change."""
    k = Keys()
    t = k.cfg.view_change_timeout
    r = Replica(k.cfg, 3, k.ids[3], ChainApp(target=10))
    pp1, pp2 = k.pp(0, 1), k.pp(0, 2)
    r.step(pp1, 0)
    assert r._progress_deadline == t
    r.step(pp2, 5)  # the primary's last sign of life
    assert r._progress_deadline == t  # a pre-prepare never postpones the deadline
    for who in (1, 2):
        r.step(k.prepare(0, 1, pp1.digest, who), 10)
    out = r.step(k.commit(0, 1, pp1.digest, 1), 40)
    out = r.step(k.commit(0, 1, pp1.digest, 2), 40)
    assert [b.seq for b in out.committed] == [1]
    assert r._progress_deadline == 5 + t  # not 40 + t
    for who in (1, 2):
        r.step(k.prepare(0, 2, pp2.digest, who), 50)
    r.step(k.commit(0, 2, pp2.digest, 1), 60)
    out = r.step(k.commit(0, 2, pp2.digest, 2), 60)
    assert [b.seq for b in out.committed] == [2]
    assert r._progress_deadline == 5 + t  # nothing new from the primary since 5
    out = r.tick(5 + t)
    (vc,) = [m for _, m in out.sends if isinstance(m, ViewChange)]
    assert vc.new_view == 1
