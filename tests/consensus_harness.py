"""Helpers to drive replicas by hand: deterministic keys, a config, signed messages.

Used by the tests and handy in a REPL; nothing here is used by the protocol itself.
"""

from __future__ import annotations

from typing import Any

from pot_cli.consensus.app import ChainApp
from pot_cli.consensus.config import ReplicaConfig
from pot_cli.consensus.messages import (
    Checkpoint,
    Commit,
    Prepare,
    PreparedCert,
    PrePrepare,
    ViewChange,
    proposal_digest,
    sign,
)
from pot_cli.consensus.replica import Output, Replica
from pot_cli.crypto import Identity
from pot_cli.sim.consensus import sim_identity

CHAIN = "pot-sim"


class Keys:
    """n deterministic identities and the matching config."""

    def __init__(self, n: int = 4, **cfg: Any) -> None:
        self.ids: list[Identity] = [sim_identity(i) for i in range(n)]
        self.cfg = ReplicaConfig(
            chain_id=CHAIN, public_keys=tuple(i.public_key for i in self.ids), **cfg
        )

    def replica(self, rid: int, app: ChainApp | None = None) -> Replica:
        return Replica(self.cfg, rid, self.ids[rid], app or ChainApp())

    def pp(
        self, view: int, seq: int, proposal: Any = None, signer: int | None = None
    ) -> PrePrepare:
        if proposal is None:
            proposal = {"seq": seq, "data": f"block-{seq}"}
        who = self.cfg.primary(view) if signer is None else signer
        msg = PrePrepare(view, seq, proposal_digest(proposal), proposal, who)
        return sign(self.ids[who], CHAIN, msg)

    def null_pp(self, view: int, seq: int) -> PrePrepare:
        who = self.cfg.primary(view)
        return sign(self.ids[who], CHAIN, PrePrepare(view, seq, proposal_digest(None), None, who))

    def prepare(self, view: int, seq: int, digest: str, who: int) -> Prepare:
        return sign(self.ids[who], CHAIN, Prepare(view, seq, digest, who))

    def commit(self, view: int, seq: int, digest: str, who: int) -> Commit:
        return sign(self.ids[who], CHAIN, Commit(view, seq, digest, who))

    def checkpoint(self, seq: int, digest: str, who: int) -> Checkpoint:
        return sign(self.ids[who], CHAIN, Checkpoint(seq, digest, who))

    def prepared_cert(self, pp: PrePrepare) -> PreparedCert:
        backups = [r for r in range(self.cfg.n) if r != pp.replica][: 2 * self.cfg.f]
        return PreparedCert(pp, tuple(self.prepare(pp.view, pp.seq, pp.digest, r) for r in backups))

    def view_change(
        self,
        new_view: int,
        who: int,
        prepared: tuple[PreparedCert, ...] = (),
        stable_seq: int = 0,
        stable_digest: str = "",
    ) -> ViewChange:
        proof: tuple[Checkpoint, ...] = ()
        if stable_seq:
            proof = tuple(
                self.checkpoint(stable_seq, stable_digest, r) for r in range(self.cfg.quorum)
            )
        return sign(self.ids[who], CHAIN, ViewChange(new_view, stable_seq, proof, prepared, who))


def drive_to_committed(k: Keys, r: Replica, seq: int) -> Output:
    """Feed backup ``r`` (view 0) the pre-prepare, one other prepare and two other commits of
    ``seq``: enough for it to commit."""
    pp = k.pp(0, seq)
    others = [x for x in (1, 2, 3) if x != r.id]
    r.step(pp, 0)
    r.step(k.prepare(0, seq, pp.digest, others[0]), 0)
    r.step(k.commit(0, seq, pp.digest, 0), 0)
    return r.step(k.commit(0, seq, pp.digest, others[1]), 0)
