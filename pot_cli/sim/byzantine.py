"""Byzantine replicas for the simulator: an honest replica whose outgoing messages are rewritten.

Each behaviour signs with the faulty replica's own key (a Byzantine replica cannot forge
others' signatures): what it sends is either validly signed and must be rejected on its merits,
or (the flooder's junk) claims another sender or carries an all-zero signature and must be
rejected as forged. A behaviour may also send raw wire dicts, which the receiving replica
parses as untrusted input. All choices come from the simulator's seeded RNG.
"""

from __future__ import annotations

import random
from typing import Any

from pot_cli.consensus.config import ReplicaConfig
from pot_cli.consensus.messages import (
    Checkpoint,
    Commit,
    Message,
    NewView,
    Prepare,
    PrePrepare,
    ViewChange,
    proposal_digest,
    sign,
)
from pot_cli.crypto import Identity, sha256_hex

Send = tuple[int | None, Message]
# what a behaviour hands to the network: a message, or a raw (untrusted) wire dict
Outgoing = tuple[int | None, Message | dict[str, Any]]
ZERO_SIG = bytes(64)


class Behaviour:
    """Honest by default: sends what the replica produced."""

    name = "honest"

    def __init__(self, rid: int, identity: Identity, cfg: ReplicaConfig, rng: random.Random):
        self.rid = rid
        self.identity = identity
        self.cfg = cfg
        self.rng = rng

    def outgoing(self, sends: list[Send], low: int, view: int) -> list[Outgoing]:
        """What to send instead of ``sends`` (``low``, ``view``: the sender's current state)."""
        return list(sends)

    def _sign(self, msg: Any) -> Any:
        return sign(self.identity, self.cfg.chain_id, msg)

    def _others(self) -> list[int]:
        return [r for r in range(self.cfg.n) if r != self.rid]


class Silent(Behaviour):
    """Receives everything, sends nothing (a silent primary when it leads a view)."""

    name = "silent"

    def outgoing(self, sends: list[Send], low: int, view: int) -> list[Outgoing]:
        return []


class SilentInViews(Behaviour):
    """Honest, except that it sends nothing while its current view is in a random set of views
    (each of the first ``SILENT_VIEW_SPAN`` views with probability 1/2): a replica that drops out
    and comes back, as primary or as backup."""

    name = "silent-in-views"
    SILENT_VIEW_SPAN = 64

    def __init__(self, rid: int, identity: Identity, cfg: ReplicaConfig, rng: random.Random):
        super().__init__(rid, identity, cfg, rng)
        self.silent_views = frozenset(v for v in range(self.SILENT_VIEW_SPAN) if rng.random() < 0.5)

    def outgoing(self, sends: list[Send], low: int, view: int) -> list[Outgoing]:
        return [] if view in self.silent_views else list(sends)


class EquivocatingPrimary(Behaviour):
    """As primary, sends one valid proposal to some backups and another valid proposal to the
    others (and both to one backup, which therefore holds evidence)."""

    name = "equivocating-primary"

    def outgoing(self, sends: list[Send], low: int, view: int) -> list[Outgoing]:
        out: list[Outgoing] = []
        for to, msg in sends:
            if not (to is None and isinstance(msg, PrePrepare) and msg.proposal is not None):
                out.append((to, msg))
                continue
            alt_proposal = {
                "seq": msg.seq,
                "data": f"equivocation-{msg.seq}-{self.rng.randrange(9)}",
            }
            alt = self._sign(
                PrePrepare(msg.view, msg.seq, proposal_digest(alt_proposal), alt_proposal, self.rid)
            )
            others = self._others()
            self.rng.shuffle(others)
            half = len(others) // 2
            for i, r in enumerate(others):
                out.append((r, msg if i < half else alt))
            out.append((others[0], alt if half > 0 else msg))
        return out


class DoubleVoter(Behaviour):
    """Sends every prepare, commit and checkpoint twice: the real one and a conflicting one."""

    name = "double-vote"

    def outgoing(self, sends: list[Send], low: int, view: int) -> list[Outgoing]:
        out: list[Outgoing] = []
        for to, msg in sends:
            out.append((to, msg))
            fake = sha256_hex(f"fake/{self.rng.random()}".encode())
            if isinstance(msg, Prepare):
                out.append((to, self._sign(Prepare(msg.view, msg.seq, fake, self.rid))))
            elif isinstance(msg, Commit):
                out.append((to, self._sign(Commit(msg.view, msg.seq, fake, self.rid))))
            elif isinstance(msg, Checkpoint):
                out.append((to, self._sign(Checkpoint(msg.seq, fake, self.rid))))
        return out


class BadNewView(Behaviour):
    """As new primary, sends a NEW-VIEW whose O does not match its V (a replaced proposal or an
    extra entry), and now and then a forged NEW-VIEW for a future view with a bogus V."""

    name = "bad-new-view"

    def outgoing(self, sends: list[Send], low: int, view: int) -> list[Outgoing]:
        out: list[Outgoing] = []
        for to, msg in sends:
            if isinstance(msg, NewView):
                out.append((to, self._corrupt(msg)))
            else:
                out.append((to, msg))
        if sends and self.rng.random() < 0.05:
            out.append((None, self._forged(view)))
        return out

    def _corrupt(self, nv: NewView) -> NewView:
        pps = list(nv.pre_prepares)
        if pps and self.rng.random() < 0.5:
            first = pps[0]
            prop = {"seq": first.seq, "data": "forged-o"}
            pps[0] = self._sign(
                PrePrepare(nv.view, first.seq, proposal_digest(prop), prop, self.rid)
            )
        else:
            seq = (pps[-1].seq if pps else low_of(nv)) + 1
            prop = {"seq": seq, "data": "forged-extra"}
            pps.append(self._sign(PrePrepare(nv.view, seq, proposal_digest(prop), prop, self.rid)))
        return self._sign(NewView(nv.view, nv.view_changes, tuple(pps), self.rid))

    def _forged(self, view: int) -> NewView:
        target = view + 1
        while self.cfg.primary(target) != self.rid:
            target += 1
        vc = self._sign(ViewChange(target, 0, (), (), self.rid))
        return self._sign(NewView(target, (vc,) * self.cfg.quorum, (), self.rid))


def low_of(nv: NewView) -> int:
    return max((vc.stable_seq for vc in nv.view_changes), default=0)


class OutOfWindow(Behaviour):
    """Adds validly signed messages with sequence numbers below the low or above the high
    watermark, and a checkpoint far in the future."""

    name = "out-of-window"

    def outgoing(self, sends: list[Send], low: int, view: int) -> list[Outgoing]:
        out: list[Outgoing] = list(sends)
        if not sends or self.rng.random() < 0.7:
            return out  # piggyback on real traffic only: faulty replicas must not echo each other
        high = low + self.cfg.watermark_window
        seq = self.rng.choice([max(1, low), high + 1, high + self.rng.randrange(1, 1000)])
        prop = {"seq": seq, "data": f"oow-{seq}"}
        d = proposal_digest(prop)
        kind = self.rng.randrange(4)
        if kind == 0 and self.cfg.primary(view) == self.rid:
            out.append((None, self._sign(PrePrepare(view, seq, d, prop, self.rid))))
        elif kind == 1:
            out.append((None, self._sign(Prepare(view, seq, d, self.rid))))
        elif kind == 2:
            out.append((None, self._sign(Commit(view, seq, d, self.rid))))
        else:
            k = self.cfg.checkpoint_interval
            far = (high // k + self.rng.randrange(1, 50)) * k
            out.append((None, self._sign(Checkpoint(far, sha256_hex(b"oow"), self.rid))))
        return out


class Flooder(Behaviour):
    """Honest traffic plus, piggybacked on some of its real sends (so faulty replicas never
    echo each other into a storm), a burst of hostile messages:

    * a validly signed VIEW-CHANGE for a far-future view, strictly higher each time (view + 20
      or more), so no "already seen a higher one" shortcut can skip its checks;
    * unsigned (all-zero signature) PREPAREs and COMMITs for view + 1 / view + 2 with random
      sequence numbers and digests, claiming random senders (honest ones included);
    * FETCH-STATE requests under another replica's name, as raw wire dicts with a bogus
      signature (a reflection attack: the answer would go to the named replica);
    * VIEW-CHANGEs under another replica's name with an all-zero signature.
    """

    name = "flood"
    P_BURST = 0.3  # chance that a real send carries a burst
    BURST = (20, 40)  # junk items per burst (each unicast to one other replica)
    FAR_PER_BURST = (1, 3)  # far-future view-changes per burst (broadcast)
    FAR_AHEAD = 20

    def __init__(self, rid: int, identity: Identity, cfg: ReplicaConfig, rng: random.Random):
        super().__init__(rid, identity, cfg, rng)
        self.far_view = 0

    def outgoing(self, sends: list[Send], low: int, view: int) -> list[Outgoing]:
        out: list[Outgoing] = list(sends)
        if not sends or self.rng.random() >= self.P_BURST:
            return out
        for _ in range(self.rng.randint(*self.FAR_PER_BURST)):
            self.far_view = max(self.far_view + 1, view + self.FAR_AHEAD)
            out.append((None, self._sign(ViewChange(self.far_view, 0, (), (), self.rid))))
        others = self._others()
        for _ in range(self.rng.randint(*self.BURST)):
            out.append((self.rng.choice(others), self._junk(low, view)))
        return out

    def _junk(self, low: int, view: int) -> Message | dict[str, Any]:
        kind = self.rng.randrange(10)
        other = self.rng.choice(self._others())
        if kind < 7:
            cls = Prepare if kind % 2 else Commit
            seq = low + self.rng.randint(1, self.cfg.watermark_window + 2)
            digest = sha256_hex(f"junk/{self.rng.random()}".encode())
            sender = self.rng.randrange(self.cfg.n)
            return cls(view + self.rng.randint(1, 2), seq, digest, sender, ZERO_SIG)
        if kind < 9:
            # rejected either way: unsigned FetchState has no "sig" field, signed fails to verify
            return {"type": "fetch-state", "from_seq": 1, "replica": other, "sig": "00" * 64}
        vc = ViewChange(view + self.rng.randint(1, 2), 0, (), (), other, ZERO_SIG)
        return vc.to_dict() if self.rng.random() < 0.5 else vc


BEHAVIOURS: dict[str, type[Behaviour]] = {
    "silent-primary": Silent,
    "equivocating-primary": EquivocatingPrimary,
    "double-vote": DoubleVoter,
    "bad-new-view": BadNewView,
    "out-of-window": OutOfWindow,
    "silent-loss": SilentInViews,
    "flood": Flooder,
}
