"""Certificates and the view-change computation: pure functions, checked against hand-built cases.

* checkpoint proof (C): 2f+1 signed checkpoints from distinct replicas for one (seq, digest);
* prepared certificate (P): a pre-prepare from the primary of its view plus 2f matching prepares
  from distinct backups;
* commit certificate: 2f+1 signed commits from distinct replicas for one (view, seq, digest) —
  carried by every committed block so anyone holding the public keys can check finality offline;
* view-change validity and the new-view computation of O (Castro & Liskov, section 4.4): for
  every sequence number between the highest stable checkpoint in V (min-s) and the highest
  prepared sequence number in V (max-s), re-issue the proposal of the prepared certificate with
  the highest view, or a null proposal when none prepared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pot_cli.consensus.config import ReplicaConfig
from pot_cli.consensus.messages import (
    Checkpoint,
    CommittedBlock,
    NewView,
    PreparedCert,
    ViewChange,
    proposal_digest,
)
from pot_cli.consensus.signatures import Verifier


def valid_checkpoint_proof(
    seq: int, digest: str, proof: Sequence[Checkpoint], cfg: ReplicaConfig, ver: Verifier
) -> bool:
    """2f+1 valid checkpoints from distinct replicas, all for (seq, digest), none extra."""
    if seq == 0:
        return len(proof) == 0
    if not cfg.quorum <= len(proof) <= cfg.n:
        return False
    senders = set()
    for cp in proof:
        if cp.seq != seq or cp.digest != digest or cp.replica in senders:
            return False
        if not ver.check(cp):
            return False
        senders.add(cp.replica)
    return True


def valid_prepared_cert(
    cert: PreparedCert, new_view: int, low: int, cfg: ReplicaConfig, ver: Verifier
) -> bool:
    """A pre-prepare signed by the primary of its view (< new_view), in (low, low + L], with a
    matching digest, and 2f matching prepares from distinct backups."""
    pp = cert.pre_prepare
    if pp.view >= new_view or not low < pp.seq <= low + cfg.watermark_window:
        return False
    if pp.replica != cfg.primary(pp.view) or pp.digest != proposal_digest(pp.proposal):
        return False
    if len(cert.prepares) != 2 * cfg.f:
        return False
    senders = set()
    for p in cert.prepares:
        if (p.view, p.seq, p.digest) != (pp.view, pp.seq, pp.digest):
            return False
        if p.replica == pp.replica or p.replica in senders or not 0 <= p.replica < cfg.n:
            return False
        senders.add(p.replica)
    return ver.check(pp) and all(ver.check(p) for p in cert.prepares)


def checkpoint_digest_of(vc: ViewChange) -> str | None:
    """The state digest a view-change's checkpoint proof certifies (None for genesis)."""
    return vc.checkpoint_proof[0].digest if vc.checkpoint_proof else None


def valid_view_change(vc: ViewChange, cfg: ReplicaConfig, ver: Verifier) -> bool:
    """Signature, checkpoint proof C and prepared certificates P (one per sequence number)."""
    if not 0 <= vc.replica < cfg.n or vc.new_view < 1:
        return False
    if len(vc.prepared) > cfg.watermark_window:
        return False
    if not ver.check(vc):  # first: a forgery costs one verification, not its certificates'
        return False
    digest = checkpoint_digest_of(vc)
    if vc.stable_seq > 0 and digest is None:
        return False
    if not valid_checkpoint_proof(vc.stable_seq, digest or "", vc.checkpoint_proof, cfg, ver):
        return False
    seqs = [c.pre_prepare.seq for c in vc.prepared]
    if len(set(seqs)) != len(seqs):
        return False
    return all(valid_prepared_cert(c, vc.new_view, vc.stable_seq, cfg, ver) for c in vc.prepared)


@dataclass(frozen=True)
class NewViewPlan:
    """What a new view starts from: the stable checkpoint in V and the pre-prepares O."""

    min_s: int
    checkpoint_digest: str | None
    checkpoint_proof: tuple[Checkpoint, ...]
    max_s: int
    entries: tuple[tuple[int, str, Any], ...]  # (seq, digest, proposal); proposal None = null


def compute_new_view(view_changes: Sequence[ViewChange]) -> NewViewPlan:
    """O from a set V of (already validated) view-changes.

    min-s is the highest stable checkpoint in V; max-s the highest prepared sequence number.
    For each n in (min-s, max-s]: the prepared certificate for n with the highest view decides
    the proposal; with none, a null proposal fills the gap. Deterministic: depends only on V.
    """
    best_cp = max(view_changes, key=lambda v: (v.stable_seq, v.replica))
    min_s = best_cp.stable_seq
    chosen: dict[int, tuple[int, str, Any]] = {}
    for vc in view_changes:
        for cert in vc.prepared:
            pp = cert.pre_prepare
            if pp.seq <= min_s:
                continue
            cur = chosen.get(pp.seq)
            if cur is None or pp.view > cur[0]:
                chosen[pp.seq] = (pp.view, pp.digest, pp.proposal)
    max_s = max(chosen, default=min_s)
    entries = []
    for seq in range(min_s + 1, max_s + 1):
        if seq in chosen:
            _, digest, proposal = chosen[seq]
            entries.append((seq, digest, proposal))
        else:
            entries.append((seq, proposal_digest(None), None))
    return NewViewPlan(
        min_s=min_s,
        checkpoint_digest=checkpoint_digest_of(best_cp),
        checkpoint_proof=best_cp.checkpoint_proof,
        max_s=max_s,
        entries=tuple(entries),
    )


def select_view_changes(by_replica: dict[int, ViewChange], cfg: ReplicaConfig) -> list[ViewChange]:
    """The deterministic V a new primary sends: the first 2f+1 by replica id."""
    return [by_replica[r] for r in sorted(by_replica)][: cfg.quorum]


def check_new_view(nv: NewView, cfg: ReplicaConfig, ver: Verifier) -> NewViewPlan | str:
    """Validate a NEW-VIEW from scratch: signature, V (2f+1 valid view-changes for its view from
    distinct replicas) and O, which must equal what we compute from V. Returns the plan or the
    reason for rejecting it."""
    if nv.replica != cfg.primary(nv.view):
        return "new-view not from the primary of its view"
    if not ver.check(nv):
        return "new-view signature invalid"
    vcs = nv.view_changes
    if len(vcs) != cfg.quorum:
        return f"new-view carries {len(vcs)} view-changes, expected {cfg.quorum}"
    if len({v.replica for v in vcs}) != len(vcs):
        return "new-view carries two view-changes from one replica"
    for vc in vcs:
        if vc.new_view != nv.view:
            return "new-view carries a view-change for another view"
        if not valid_view_change(vc, cfg, ver):
            return f"new-view carries an invalid view-change from replica {vc.replica}"
    plan = compute_new_view(vcs)
    if len(nv.pre_prepares) != len(plan.entries):
        return "new-view O does not match the O recomputed from V"
    for pp, (seq, digest, proposal) in zip(nv.pre_prepares, plan.entries, strict=True):
        if (pp.view, pp.seq, pp.digest, pp.replica) != (nv.view, seq, digest, nv.replica):
            return "new-view O does not match the O recomputed from V"
        if pp.proposal != proposal or proposal_digest(pp.proposal) != pp.digest:
            return "new-view O does not match the O recomputed from V"
        if not ver.check(pp):
            return "new-view O carries a pre-prepare with an invalid signature"
    return plan


def valid_commit_certificate(block: CommittedBlock, cfg: ReplicaConfig, ver: Verifier) -> bool:
    """2f+1 valid commits from distinct replicas for the block's (view, seq, digest), and the
    digest is the proposal's."""
    if block.digest != proposal_digest(block.proposal):
        return False
    if not cfg.quorum <= len(block.commits) <= cfg.n:
        return False
    senders = set()
    for c in block.commits:
        if (c.view, c.seq, c.digest) != (block.view, block.seq, block.digest):
            return False
        if c.replica in senders or not 0 <= c.replica < cfg.n:
            return False
        senders.add(c.replica)
    return all(ver.check(c) for c in block.commits)


def verify_block(block: CommittedBlock, chain_id: str, public_keys: Sequence[bytes]) -> bool:
    """Offline finality check of a committed block, given only the chain id and the validators'
    public keys (in replica order)."""
    cfg = ReplicaConfig(chain_id=chain_id, public_keys=tuple(public_keys))
    return valid_commit_certificate(block, cfg, Verifier(chain_id, cfg.public_keys))
