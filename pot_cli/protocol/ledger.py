"""The PoT ledger: integer accounting of balances and stakes, deterministic and conserved.

Every amount is a Python ``int`` in base units within ``[0, 2**63 - 1]``; booleans and floats
are refused everywhere. Conservation is the invariant checked by :meth:`Ledger.check_invariants`::

    sum(balance + stake over all accounts) == supply_genesis + emitted - burned

Every operation validates first, computes the new accounts, and only then applies them, so a
:class:`LedgerError` never leaves partial state behind.

Money rules
-----------
* **Emission split.** Each round may mint ``emission_per_round``. The miners' pool is
  ``emission * miner_share_bps // 10000``; the validators' pool is the rest
  (``emission - miners' pool``), so the two pools always add up to the emission exactly.
* **Remainder rule (largest remainder).** A pool is split pro rata to integer weights
  (verified samples for miners, 1 each for validators): every entry first gets
  ``pool * w // W``; the ``R = pool - sum(those)`` units left over (``0 <= R < entries``) go
  one each to the first ``R`` entries ordered by (largest ``pool * w % W`` first, then address).
  The payouts therefore sum to the pool exactly, and the result depends only on the inputs.
  With equal weights the lowest addresses get the extra units (less than one unit per entry).
* **Nothing earned, nothing minted.** With no accepted submission (or a total weight of zero)
  the miners' pool is not minted; with no validator named, neither is the validators' pool.
  ``emitted`` counts only what was credited, so supply never grows without a recipient.
* **Penalties slash stake only**, capped at the current stake; what is slashed is burned.
  A round's penalty names the nominal amount; the plan records the amount actually slashed.
* **Proven forgery vs malformed.** A proven forgery (a re-compute outside the tolerance, or a
  copy) is penalised ``forgery_slash`` and ejects the identity: an ejected account is never
  admitted again, cannot stake or unstake, and what remains of its stake stays locked (still
  counted in the supply, never withdrawable). A malformed but signed submission (schema,
  non-finite values, oversize) costs the smaller ``malformed_penalty`` (genesis enforces
  ``malformed_penalty <= forgery_slash``) and does not eject: it may be a bug rather than an
  attack, and the miner can top its stake up with :meth:`Ledger.stake` to be admitted again.
  Which verdict codes map to which penalty is the round's business (see ``block.py``); the
  ledger applies the explicit list it is given.
* **Soundness.** With catch probability ``p`` per submission and reward ``r``, a cheat gains
  ``r`` with probability ``1 - p`` and loses ``S`` with probability ``p``, so
  ``S >= r * (1 - p) / p`` makes every cheat a loss in expectation: the genesis refuses a slash
  below that floor (``genesis.deterrence_floor``, with ``r`` the whole miners' pool). New
  identities are on probation (:meth:`Ledger.on_probation`): until ``probation_rounds`` of their
  submissions were accepted (the ``verified`` counter, which only accepted work raises) every
  submission of theirs is re-computed.

A round is planned with :meth:`Ledger.plan_round` (pure: no mutation) into a
:class:`RoundPayout` — the integer amounts a block carries — and applied with
:meth:`Ledger.apply_payout`; a backup re-derives the plan from the block's inputs, compares it
with the block's amounts, and applies it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pot_cli.crypto import hash_object_hex, is_valid_address
from pot_cli.errors import PotError
from pot_cli.protocol.genesis import BPS, MAX_INT, Genesis

MAX_AMOUNT = MAX_INT


class LedgerError(PotError):
    """A ledger operation was refused, or a snapshot is invalid (the text says why)."""


# ------------------------------------------------------------------------------ checks


def _amount(value: object, what: str, lo: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise LedgerError(f"{what}: expected an integer, got {type(value).__name__}")
    if not lo <= value <= MAX_AMOUNT:
        raise LedgerError(f"{what}: must be in [{lo}, {MAX_AMOUNT}], got {value}")
    return value


def _address(value: object, what: str) -> str:
    if not is_valid_address(value):
        raise LedgerError(f"{what}: not a valid pot1 address: {str(value)[:60]!r}")
    assert isinstance(value, str)
    return value


def _unique(addresses: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for a in addresses:
        if a in seen:
            raise LedgerError(f"{what}: {a} appears more than once")
        seen.add(a)


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Account:
    """One account: free ``balance`` and bonded ``stake`` (base units)."""

    balance: int = 0
    stake: int = 0
    ejected: bool = False
    ejected_at: int | None = None
    # submissions of this identity the chain accepted (each one re-computed while on
    # probation): the reputation that ends probation
    verified: int = 0


@dataclass(frozen=True)
class LedgerParams:
    """The genesis economics the ledger itself applies."""

    emission_per_round: int
    miner_share_bps: int
    validator_share_bps: int
    min_miner_stake: int
    probation_rounds: int = 0

    @classmethod
    def from_genesis(cls, g: Genesis) -> LedgerParams:
        return cls(
            g.emission_per_round,
            g.miner_share_bps,
            g.validator_share_bps,
            g.min_miner_stake,
            g.probation_rounds,
        )

    @property
    def miner_pool(self) -> int:
        return self.emission_per_round * self.miner_share_bps // BPS

    @property
    def validator_pool(self) -> int:
        return self.emission_per_round - self.miner_pool


@dataclass(frozen=True)
class Penalty:
    """A penalty on ``address``: slash ``amount`` from its stake (capped), optionally eject."""

    address: str
    amount: int
    code: str
    eject: bool = False


@dataclass(frozen=True)
class RoundOutcome:
    """What a round decided: accepted miners with their verified samples (weights), the
    validators that earn the fees, and the penalties."""

    height: int
    miners: tuple[tuple[str, int], ...] = ()
    validators: tuple[str, ...] = ()
    penalties: tuple[Penalty, ...] = ()


@dataclass(frozen=True)
class AddressOutcome:
    """What one round did to one address."""

    reward: int = 0
    fee: int = 0
    slashed: int = 0
    ejected: bool = False


@dataclass(frozen=True)
class RoundPayout:
    """The integer amounts of one round, sorted by address. Penalty amounts are the amounts
    actually slashed (capped at the stake). ``minted`` is what is credited in all."""

    height: int
    minted: int
    rewards: tuple[tuple[str, int], ...]
    validator_fees: tuple[tuple[str, int], ...]
    penalties: tuple[Penalty, ...]

    @property
    def burned(self) -> int:
        return sum(p.amount for p in self.penalties)

    def by_address(self) -> dict[str, AddressOutcome]:
        """Per-address record of the round, in address order."""
        out: dict[str, AddressOutcome] = {}
        for a, amount in self.rewards:
            out[a] = replace(out.get(a, AddressOutcome()), reward=amount)
        for a, amount in self.validator_fees:
            out[a] = replace(out.get(a, AddressOutcome()), fee=amount)
        for p in self.penalties:
            out[p.address] = replace(
                out.get(p.address, AddressOutcome()), slashed=p.amount, ejected=p.eject
            )
        return dict(sorted(out.items()))


def split_pro_rata(pool: int, weights: Sequence[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """Split ``pool`` over ``(address, weight)`` entries by the largest-remainder rule (see the
    module docstring); sorted by address. Sums to ``pool`` exactly when the total weight is
    positive; all zeros when it is zero."""
    total = sum(w for _, w in weights)
    if total == 0:
        return tuple(sorted((a, 0) for a, _ in weights))
    base = {a: pool * w // total for a, w in weights}
    left = pool - sum(base.values())
    order = sorted(weights, key=lambda aw: (-(pool * aw[1] % total), aw[0]))
    for a, _ in order[:left]:
        base[a] += 1
    return tuple(sorted(base.items()))


# ------------------------------------------------------------------------------ ledger


@dataclass
class Ledger:
    """Balances and stakes of every account, plus the supply counters and the last height."""

    params: LedgerParams
    accounts: dict[str, Account] = field(default_factory=dict)
    supply_genesis: int = 0
    emitted: int = 0
    burned: int = 0
    height: int = 0

    @classmethod
    def from_genesis(cls, g: Genesis) -> Ledger:
        accounts = {a.address: Account(a.balance, a.stake) for a in g.accounts}
        return cls(LedgerParams.from_genesis(g), dict(sorted(accounts.items())), g.total_supply)

    # ------------------------------------------------------------------ queries

    @property
    def total(self) -> int:
        """Sum of every balance and stake."""
        return sum(a.balance + a.stake for a in self.accounts.values())

    def account(self, address: str) -> Account:
        """The account at ``address`` (an empty one when unknown)."""
        return self.accounts.get(address, Account())

    def admitted(self, address: str) -> bool:
        """True when ``address`` may mine: known, not ejected, stake >= ``min_miner_stake``."""
        acc = self.accounts.get(address)
        return acc is not None and not acc.ejected and acc.stake >= self.params.min_miner_stake

    def on_probation(self, address: str) -> bool:
        """True while ``address`` has fewer than ``probation_rounds`` accepted submissions:
        every submission of such a new identity is re-computed."""
        return self.account(address).verified < self.params.probation_rounds

    def _known(self, address: object, what: str) -> Account:
        addr = _address(address, what)
        acc = self.accounts.get(addr)
        if acc is None:
            raise LedgerError(f"{what}: unknown account {addr}")
        return acc

    # --------------------------------------------------------------- operations

    def credit(self, address: str, amount: int) -> None:
        """Mint ``amount`` into the balance of ``address`` (created if unknown)."""
        _address(address, "credit")
        _amount(amount, "credit amount")
        acc = self.account(address)
        balance = _amount(acc.balance + amount, f"credit: balance of {address}")
        self.accounts[address] = replace(acc, balance=balance)
        self.emitted += amount

    def stake(self, address: str, amount: int) -> None:
        """Move ``amount`` (>= 1) from balance to stake."""
        acc = self._known(address, "stake")
        _amount(amount, "stake amount", 1)
        if acc.ejected:
            raise LedgerError(f"stake: {address} was ejected at height {acc.ejected_at}")
        if amount > acc.balance:
            raise LedgerError(f"stake: {amount} exceeds the balance {acc.balance} of {address}")
        stake = _amount(acc.stake + amount, f"stake: stake of {address}")
        self.accounts[address] = replace(acc, balance=acc.balance - amount, stake=stake)

    def unstake(self, address: str, amount: int) -> None:
        """Move ``amount`` (>= 1) from stake back to balance; refused for ejected accounts."""
        acc = self._known(address, "unstake")
        _amount(amount, "unstake amount", 1)
        if acc.ejected:
            raise LedgerError(
                f"unstake: {address} was ejected at height {acc.ejected_at}; its stake is locked"
            )
        if amount > acc.stake:
            raise LedgerError(f"unstake: {amount} exceeds the stake {acc.stake} of {address}")
        balance = _amount(acc.balance + amount, f"unstake: balance of {address}")
        self.accounts[address] = replace(acc, balance=balance, stake=acc.stake - amount)

    def slash(self, address: str, amount: int, reason: str) -> int:
        """Burn up to ``amount`` from the stake of ``address``; return what was slashed."""
        acc = self._known(address, "slash")
        _amount(amount, "slash amount")
        if not isinstance(reason, str) or not reason:
            raise LedgerError("slash: a reason is required")
        slashed = min(amount, acc.stake)
        self.accounts[address] = replace(acc, stake=acc.stake - slashed)
        self.burned += slashed
        return slashed

    def eject(self, address: str, height: int) -> None:
        """Eject ``address`` for good at ``height``."""
        acc = self._known(address, "eject")
        _amount(height, "eject height")
        if acc.ejected:
            raise LedgerError(f"eject: {address} was already ejected at height {acc.ejected_at}")
        self.accounts[address] = replace(acc, ejected=True, ejected_at=height)

    # ------------------------------------------------------------------- rounds

    def _check_height(self, height: object, what: str) -> int:
        h = _amount(height, f"{what} height", 1)
        if h != self.height + 1:
            raise LedgerError(f"{what}: height {h} does not follow the ledger's {self.height}")
        return h

    def plan_round(self, outcome: RoundOutcome) -> RoundPayout:
        """The payout of ``outcome`` against the current state, computed without mutating."""
        h = self._check_height(outcome.height, "round")
        miners: list[tuple[str, int]] = []
        for i, entry in enumerate(outcome.miners):
            if not isinstance(entry, tuple) or len(entry) != 2:
                raise LedgerError(f"round miners[{i}]: expected (address, samples)")
            a = _address(entry[0], f"round miners[{i}]")
            w = _amount(entry[1], f"round miners[{i}] samples")
            if not self.admitted(a):
                raise LedgerError(f"round miners[{i}]: {a} is not admitted")
            miners.append((a, w))
        _unique((a for a, _ in miners), "round miners")
        validators = [
            _address(v, f"round validators[{i}]") for i, v in enumerate(outcome.validators)
        ]
        _unique(validators, "round validators")
        penalties: list[Penalty] = []
        miner_set = {a for a, _ in miners}
        for i, p in enumerate(outcome.penalties):
            what = f"round penalties[{i}]"
            if not isinstance(p, Penalty):
                raise LedgerError(f"{what}: expected a Penalty")
            acc = self._known(p.address, what)
            _amount(p.amount, f"{what} amount")
            if not isinstance(p.code, str) or not p.code:
                raise LedgerError(f"{what}: a code is required")
            if not isinstance(p.eject, bool):
                raise LedgerError(f"{what}: eject must be a boolean")
            if acc.ejected:
                raise LedgerError(f"{what}: {p.address} was already ejected")
            if p.address in miner_set:
                raise LedgerError(f"{what}: {p.address} is also rewarded this round")
            penalties.append(replace(p, amount=min(p.amount, acc.stake)))
        _unique((p.address for p in penalties), "round penalties")

        rewards = split_pro_rata(self.params.miner_pool, miners)
        fees = split_pro_rata(self.params.validator_pool, [(v, 1) for v in validators])
        minted = sum(x for _, x in rewards) + sum(x for _, x in fees)
        payout = RoundPayout(
            h, minted, rewards, fees, tuple(sorted(penalties, key=lambda p: p.address))
        )
        self._changes(payout)  # refuse now what apply would refuse (overflow)
        return payout

    def _changes(self, payout: RoundPayout) -> dict[str, Account]:
        """The new accounts ``payout`` would produce; raises when it does not fit the state."""
        self._check_height(payout.height, "payout")
        _amount(payout.minted, "payout minted")
        if payout.minted != sum(x for _, x in payout.rewards) + sum(
            x for _, x in payout.validator_fees
        ):
            raise LedgerError("payout: minted is not the sum of rewards and fees")
        if payout.minted > self.params.emission_per_round:
            raise LedgerError(f"payout: minted {payout.minted} exceeds the emission per round")
        changes: dict[str, Account] = {}

        def get(a: str) -> Account:
            return changes.get(a) or self.account(a)

        for kind, entries in (
            ("rewards", payout.rewards),
            ("validator_fees", payout.validator_fees),
        ):
            _unique((a for a, _ in entries), f"payout {kind}")
            for a, amount in entries:
                _address(a, f"payout {kind}")
                _amount(amount, f"payout {kind} amount")
                if kind == "rewards" and not self.admitted(a):
                    raise LedgerError(f"payout rewards: {a} is not admitted")
                acc = get(a)
                balance = _amount(acc.balance + amount, f"payout: balance of {a}")
                verified = acc.verified + (1 if kind == "rewards" else 0)
                changes[a] = replace(acc, balance=balance, verified=min(verified, MAX_AMOUNT))
        _unique((p.address for p in payout.penalties), "payout penalties")
        for p in payout.penalties:
            if not isinstance(p, Penalty) or not isinstance(p.eject, bool) or not p.code:
                raise LedgerError("payout penalties: expected Penalty records with a code")
            acc = self._known(p.address, "payout penalties")
            _amount(p.amount, "payout penalty amount")
            if acc.ejected:
                raise LedgerError(f"payout penalties: {p.address} was already ejected")
            if p.amount > acc.stake:
                raise LedgerError(f"payout penalties: {p.amount} exceeds the stake of {p.address}")
            acc = get(p.address)
            changes[p.address] = replace(
                acc,
                stake=acc.stake - p.amount,
                ejected=p.eject,
                ejected_at=payout.height if p.eject else None,
            )
        return changes

    def apply_payout(self, payout: RoundPayout) -> dict[str, AddressOutcome]:
        """Apply a planned round (all or nothing); returns the per-address record.

        Only the payout's own consistency is checked here (height, sums, admission, stakes);
        a backup first compares the block's amounts with its own :meth:`plan_round`."""
        changes = self._changes(payout)
        self.accounts.update(changes)
        self.emitted += payout.minted
        self.burned += payout.burned
        self.height = payout.height
        return payout.by_address()

    def apply_round(self, outcome: RoundOutcome) -> RoundPayout:
        """Plan and apply ``outcome``; returns the payout that was applied."""
        payout = self.plan_round(outcome)
        self.apply_payout(payout)
        return payout

    # --------------------------------------------------------------- invariants

    def check_invariants(self) -> None:
        """Raise :class:`LedgerError` naming the first broken invariant."""
        for a, acc in self.accounts.items():
            if acc.balance < 0 or acc.stake < 0:
                raise LedgerError(f"invariant: {a} has a negative balance or stake")
            if acc.ejected != (acc.ejected_at is not None):
                raise LedgerError(f"invariant: {a} has inconsistent ejected/ejected_at")
        for name in ("supply_genesis", "emitted", "burned", "height"):
            if getattr(self, name) < 0:
                raise LedgerError(f"invariant: {name} is negative")
        expected = self.supply_genesis + self.emitted - self.burned
        if self.total != expected:
            raise LedgerError(
                f"invariant: accounts hold {self.total}, but supply_genesis + emitted - burned "
                f"= {expected}"
            )

    # ---------------------------------------------------------------- snapshots

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state in canonical order; :meth:`restore` reads it back."""
        p = self.params
        return {
            "params": {
                "emission_per_round": p.emission_per_round,
                "miner_share_bps": p.miner_share_bps,
                "validator_share_bps": p.validator_share_bps,
                "min_miner_stake": p.min_miner_stake,
                "probation_rounds": p.probation_rounds,
            },
            "height": self.height,
            "supply_genesis": self.supply_genesis,
            "emitted": self.emitted,
            "burned": self.burned,
            "accounts": {
                a: {
                    "balance": acc.balance,
                    "stake": acc.stake,
                    "ejected": acc.ejected,
                    "ejected_at": acc.ejected_at,
                    "verified": acc.verified,
                }
                for a, acc in sorted(self.accounts.items())
            },
        }

    def digest(self) -> str:
        """Hex SHA-256 of the canonical JSON of :meth:`snapshot`."""
        return hash_object_hex(self.snapshot())

    @classmethod
    def restore(cls, snap: Any) -> Ledger:
        """Strictly parse a :meth:`snapshot`; raise :class:`LedgerError` naming the field."""
        d = _table(
            snap,
            "snapshot",
            {"params", "height", "supply_genesis", "emitted", "burned", "accounts"},
        )
        pd = _table(
            d["params"],
            "snapshot.params",
            {
                "emission_per_round",
                "miner_share_bps",
                "validator_share_bps",
                "min_miner_stake",
                "probation_rounds",
            },
        )
        params = LedgerParams(
            emission_per_round=_amount(
                pd["emission_per_round"], "snapshot.params.emission_per_round", 1
            ),
            miner_share_bps=_amount(pd["miner_share_bps"], "snapshot.params.miner_share_bps"),
            validator_share_bps=_amount(
                pd["validator_share_bps"], "snapshot.params.validator_share_bps"
            ),
            min_miner_stake=_amount(pd["min_miner_stake"], "snapshot.params.min_miner_stake"),
            probation_rounds=_amount(pd["probation_rounds"], "snapshot.params.probation_rounds"),
        )
        if params.miner_share_bps + params.validator_share_bps != BPS:
            raise LedgerError(f"snapshot.params: the shares must add up to {BPS} bps")
        raw = d["accounts"]
        if not isinstance(raw, dict):
            raise LedgerError("snapshot.accounts: expected an object")
        accounts: dict[str, Account] = {}
        for a in raw:
            what = f"snapshot.accounts[{str(a)[:60]}]"
            _address(a, what)
            ad = _table(raw[a], what, {"balance", "stake", "ejected", "ejected_at", "verified"})
            ejected = ad["ejected"]
            if not isinstance(ejected, bool):
                raise LedgerError(f"{what}.ejected: expected a boolean")
            at = ad["ejected_at"]
            ejected_at = None if at is None else _amount(at, f"{what}.ejected_at")
            if ejected != (ejected_at is not None):
                raise LedgerError(f"{what}.ejected_at: must be set exactly when ejected")
            accounts[a] = Account(
                _amount(ad["balance"], f"{what}.balance"),
                _amount(ad["stake"], f"{what}.stake"),
                ejected,
                ejected_at,
                _amount(ad["verified"], f"{what}.verified"),
            )
        ledger = cls(
            params,
            dict(sorted(accounts.items())),
            _amount(d["supply_genesis"], "snapshot.supply_genesis"),
            _amount(d["emitted"], "snapshot.emitted"),
            _amount(d["burned"], "snapshot.burned"),
            _amount(d["height"], "snapshot.height"),
        )
        ledger.check_invariants()
        return ledger


def _table(obj: Any, what: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise LedgerError(f"{what}: expected an object, got {type(obj).__name__}")
    if set(obj) != keys:
        extra = sorted(str(k) for k in set(obj) - keys)
        missing = sorted(keys - set(obj))
        raise LedgerError(f"{what}: unknown fields {extra}, missing fields {missing}")
    return obj
