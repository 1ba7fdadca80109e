"""The genesis of a PoT chain: its identity, validators, economics and initial accounts.

A genesis is read from TOML or JSON (by suffix), validated strictly and reported like the node
config: every problem as ``<source>: <key path>: what is wrong``, one per line, all at once,
in a single :class:`~pot_cli.errors.ConfigError`. Unknown keys are errors; integers must be
real integers (not booleans, not floats) within ``[0, 2**63 - 1]``.

Normal form: validators keep the order of the file (it is the replica order of PBFT);
accounts are sorted by address (their order means nothing). A validator's ``address`` is always
derived from its public key, never read from the file. :func:`genesis_hash` hashes the
canonical JSON of :meth:`Genesis.to_dict`, so two files that say the same thing (TOML or JSON,
any account order, any comments) have the same hash.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from pot_cli.crypto import (
    PUBLIC_KEY_SIZE,
    address_from_public_key,
    hash_object_hex,
    is_valid_address,
)
from pot_cli.errors import ConfigError

MAX_GENESIS_BYTES = 1024 * 1024
MAX_INT = 2**63 - 1
BPS = 10_000
MIN_VALIDATORS = 4

CHAIN_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
UNIT_RE = re.compile(r"[A-Za-z0-9]{1,16}")
HEX64_RE = re.compile(r"[0-9a-f]{64}")
MAX_TASK_CHARS = 128
MAX_DECIMALS = 18
# Heights one set of beacon commits serves (protocol/beacon.py: an onion of that many layers;
# a node builds its own once at start, about a second per million).
MAX_BEACON_ROUNDS = 1 << 24
DEFAULT_SPOT_CHECK_BPS = 1_000  # 10 %


def deterrence_floor(miner_pool: int, spot_check_bps: int) -> int:
    """The least slash that makes every forgery the flags miss a loss in expectation: a
    forgery earns at most the whole miners' pool ``r`` when it escapes (probability ``1 - p``)
    and loses the slash ``S`` when sampled (``p``), so ``S >= r (1 - p) / p`` (rounded up)."""
    return -(-miner_pool * (BPS - spot_check_bps) // spot_check_bps)


@dataclass(frozen=True)
class GenesisValidator:
    """A validator (PBFT replica); its index in :attr:`Genesis.validators` is its replica id."""

    name: str
    public_key: bytes
    address: str
    # the outermost layer of its spot-check beacon onion (protocol/beacon.py)
    beacon_commit: bytes = b""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "public_key": self.public_key.hex(),
            "beacon_commit": self.beacon_commit.hex(),
        }


@dataclass(frozen=True)
class GenesisAccount:
    """An initial account: free ``balance`` and bonded ``stake``, in base units."""

    address: str
    balance: int
    stake: int

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "balance": self.balance, "stake": self.stake}


@dataclass(frozen=True)
class Genesis:
    """A validated genesis. Amounts are integers in base units (``10**-decimals`` of a unit)."""

    chain_id: str
    task: str
    model_seed: int
    validators: tuple[GenesisValidator, ...]
    emission_per_round: int
    miner_share_bps: int
    validator_share_bps: int
    min_miner_stake: int
    forgery_slash: int
    malformed_penalty: int
    probation_rounds: int
    accounts: tuple[GenesisAccount, ...]
    beacon_rounds: int = 1
    # the chain's spot-check rate (basis points): the chance a forgery the flags miss is
    # re-computed; with the slash it decides whether cheating pays (deterrence_floor)
    spot_check_bps: int = DEFAULT_SPOT_CHECK_BPS
    decimals: int = 6
    unit: str = "POT"
    # the wire compression every miner's payload must use (a codec label: none, int8,
    # topk:<fraction>): a chain constant, since verification decodes with it
    compression: str = "none"

    @property
    def total_supply(self) -> int:
        """Sum of every initial balance and stake."""
        return sum(a.balance + a.stake for a in self.accounts)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-able data; :func:`parse_genesis` reads it back to an equal value."""
        return {
            "chain_id": self.chain_id,
            "task": self.task,
            "model_seed": self.model_seed,
            "validators": [v.to_dict() for v in self.validators],
            "emission_per_round": self.emission_per_round,
            "miner_share_bps": self.miner_share_bps,
            "validator_share_bps": self.validator_share_bps,
            "min_miner_stake": self.min_miner_stake,
            "forgery_slash": self.forgery_slash,
            "malformed_penalty": self.malformed_penalty,
            "probation_rounds": self.probation_rounds,
            "beacon_rounds": self.beacon_rounds,
            "spot_check_bps": self.spot_check_bps,
            "accounts": [a.to_dict() for a in self.accounts],
            "decimals": self.decimals,
            "unit": self.unit,
            # written only when set, so that genesis files from before the key hash the same
            **({"compression": self.compression} if self.compression != "none" else {}),
        }


def genesis_hash(genesis: Genesis) -> str:
    """Hex SHA-256 of the canonical JSON of ``genesis.to_dict()``."""
    return hash_object_hex(genesis.to_dict())


# ------------------------------------------------------------------------------- parsing


def _describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list"}.get(
        type(value), "table" if isinstance(value, dict) else type(value).__name__
    )
    text = repr(value)
    return f"{kind} {text[:37] + '...' if len(text) > 40 else text}"


class _Problems:
    """Collects ``<source>: <path>: message`` lines."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, path: str, message: str) -> None:
        where = f"{self.source}: {path}" if path else self.source
        self.lines.append(f"{where}: {message}")

    def int_(self, value: Any, path: str, lo: int = 0, hi: int = MAX_INT) -> int | None:
        if not isinstance(value, int) or isinstance(value, bool):
            self.add(path, f"expected an integer, got {_describe(value)}")
            return None
        if not lo <= value <= hi:
            self.add(path, f"must be in [{lo}, {hi}], got {value}")
            return None
        return value

    def str_(self, value: Any, path: str, check: Callable[[str], str | None]) -> str | None:
        if not isinstance(value, str):
            self.add(path, f"expected a string, got {_describe(value)}")
            return None
        err = check(value)
        if err:
            self.add(path, err)
            return None
        return value

    def table(
        self, value: Any, path: str, required: frozenset[str], optional: frozenset[str]
    ) -> dict[str, Any] | None:
        """Check a table's key set; returns it (or None when it is not a table)."""
        if not isinstance(value, dict):
            self.add(path, f"expected a table, got {_describe(value)}")
            return None
        allowed = sorted(required | optional)
        prefix = f"{path}." if path else ""
        for key in value:
            if key not in required and key not in optional:
                hint = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                more = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.add(f"{prefix}{key}", f"unknown key{more}")
        for key in sorted(required - set(value)):
            self.add(f"{prefix}{key}", "missing required key")
        return value


def _check_chain_id(text: str) -> str | None:
    if CHAIN_ID_RE.fullmatch(text):
        return None
    return f"expected 1-128 characters of letters, digits, '.', '_' or '-', got {text[:40]!r}"


def _check_task(text: str) -> str | None:
    if not text or len(text) > MAX_TASK_CHARS or not text.isprintable():
        return f"expected 1-{MAX_TASK_CHARS} printable characters, got {text[:40]!r}"
    return None


def _check_name(text: str) -> str | None:
    if NAME_RE.fullmatch(text):
        return None
    return (
        "expected 1-64 characters of letters, digits, '.', '_' or '-' "
        f"(starting with a letter or digit), got {text[:40]!r}"
    )


def _check_unit(text: str) -> str | None:
    return None if UNIT_RE.fullmatch(text) else f"expected 1-16 letters or digits, got {text!r}"


def _check_hex64(text: str) -> str | None:
    return None if HEX64_RE.fullmatch(text) else "expected 64 lowercase hex characters"


def _check_address(text: str) -> str | None:
    if is_valid_address(text):
        return None
    return f"not a valid pot1 address (48 characters with a checksum), got {text[:60]!r}"


_TOP_REQUIRED = frozenset(
    {
        "chain_id",
        "task",
        "model_seed",
        "validators",
        "emission_per_round",
        "miner_share_bps",
        "validator_share_bps",
        "min_miner_stake",
        "forgery_slash",
        "malformed_penalty",
        "probation_rounds",
        "beacon_rounds",
        "accounts",
    }
)
_TOP_OPTIONAL = frozenset({"decimals", "unit", "spot_check_bps", "compression"})


def _parse_validators(p: _Problems, value: Any) -> list[GenesisValidator]:
    if not isinstance(value, list):
        p.add("validators", f"expected a list of tables, got {_describe(value)}")
        return []
    if len(value) < MIN_VALIDATORS:
        p.add("validators", f"expected at least {MIN_VALIDATORS} validators, got {len(value)}")
    out: list[GenesisValidator] = []
    keys: dict[str, int] = {}
    names: dict[str, int] = {}
    required = frozenset({"name", "public_key", "beacon_commit"})
    for i, item in enumerate(value):
        path = f"validators[{i}]"
        d = p.table(item, path, required, frozenset())
        if d is None:
            continue
        name = p.str_(d.get("name"), f"{path}.name", _check_name) if "name" in d else None
        key = (
            p.str_(d.get("public_key"), f"{path}.public_key", _check_hex64)
            if "public_key" in d
            else None
        )
        commit = (
            p.str_(d.get("beacon_commit"), f"{path}.beacon_commit", _check_hex64)
            if "beacon_commit" in d
            else None
        )
        if name is not None:
            if name in names:
                p.add(f"{path}.name", f"duplicate of validators[{names[name]}].name")
            names.setdefault(name, i)
        if key is not None:
            if key in keys:
                p.add(f"{path}.public_key", f"duplicate of validators[{keys[key]}].public_key")
            keys.setdefault(key, i)
        if name is not None and key is not None and commit is not None:
            raw = bytes.fromhex(key)
            assert len(raw) == PUBLIC_KEY_SIZE
            out.append(
                GenesisValidator(name, raw, address_from_public_key(raw), bytes.fromhex(commit))
            )
    return out


def _parse_accounts(p: _Problems, value: Any) -> list[GenesisAccount]:
    if not isinstance(value, list):
        p.add("accounts", f"expected a list of tables, got {_describe(value)}")
        return []
    out: list[GenesisAccount] = []
    seen: dict[str, int] = {}
    required = frozenset({"address", "balance", "stake"})
    for i, item in enumerate(value):
        path = f"accounts[{i}]"
        d = p.table(item, path, required, frozenset())
        if d is None:
            continue
        addr = p.str_(d["address"], f"{path}.address", _check_address) if "address" in d else None
        balance = p.int_(d["balance"], f"{path}.balance") if "balance" in d else None
        stake = p.int_(d["stake"], f"{path}.stake") if "stake" in d else None
        if addr is not None:
            if addr in seen:
                p.add(f"{path}.address", f"duplicate of accounts[{seen[addr]}].address")
            seen.setdefault(addr, i)
        if addr is not None and balance is not None and stake is not None:
            out.append(GenesisAccount(addr, balance, stake))
    return out


def parse_genesis(obj: Any, source: str = "<genesis>") -> Genesis:
    """Validate plain data (as read from TOML or JSON) into a :class:`Genesis`.

    Raises :class:`ConfigError` listing every problem, one ``<source>: <path>: ...`` per line.
    """
    p = _Problems(source)
    d = p.table(obj, "", _TOP_REQUIRED, _TOP_OPTIONAL)
    if d is None:
        raise ConfigError("\n".join(p.lines))
    ints: dict[str, int | None] = {}
    ranges = {
        "model_seed": (0, MAX_INT),
        "emission_per_round": (1, MAX_INT),
        "miner_share_bps": (0, BPS),
        "validator_share_bps": (0, BPS),
        "min_miner_stake": (0, MAX_INT),
        "forgery_slash": (0, MAX_INT),
        "malformed_penalty": (0, MAX_INT),
        "probation_rounds": (0, MAX_INT),
        "beacon_rounds": (1, MAX_BEACON_ROUNDS),
        "spot_check_bps": (1, BPS),
        "decimals": (0, MAX_DECIMALS),
    }
    for key, (lo, hi) in ranges.items():
        if key in d:
            ints[key] = p.int_(d[key], key, lo, hi)
    ints.setdefault("decimals", 6)
    ints.setdefault("spot_check_bps", DEFAULT_SPOT_CHECK_BPS)
    chain_id = p.str_(d["chain_id"], "chain_id", _check_chain_id) if "chain_id" in d else None
    task = p.str_(d["task"], "task", _check_task) if "task" in d else None
    unit = p.str_(d["unit"], "unit", _check_unit) if "unit" in d else "POT"
    compression = (
        p.str_(d["compression"], "compression", _check_compression)
        if "compression" in d
        else "none"
    )
    validators = _parse_validators(p, d["validators"]) if "validators" in d else []
    accounts = _parse_accounts(p, d["accounts"]) if "accounts" in d else []

    mb, vb = ints.get("miner_share_bps"), ints.get("validator_share_bps")
    if mb is not None and vb is not None and mb + vb != BPS:
        p.add(
            "validator_share_bps",
            f"miner_share_bps + validator_share_bps must be exactly {BPS}, got {mb} + {vb}",
        )
    fs, mp = ints.get("forgery_slash"), ints.get("malformed_penalty")
    if fs is not None and mp is not None and mp > fs:
        p.add("malformed_penalty", f"must not exceed forgery_slash ({fs}), got {mp}")
    em, ms, rate = (
        ints.get("emission_per_round"),
        ints.get("min_miner_stake"),
        ints.get("spot_check_bps"),
    )
    if None not in (em, mb, fs, ms, rate):
        assert em is not None and mb is not None and fs is not None and ms is not None
        assert rate is not None
        floor = deterrence_floor(em * mb // BPS, rate)
        if min(fs, ms) < floor:
            p.add(
                "forgery_slash",
                f"a forgery must cost more than it can earn: min(forgery_slash, "
                f"min_miner_stake) must be >= {floor} (the miners' pool x (1 - rate) / rate "
                f"at spot_check_bps {rate}), got {min(fs, ms)}",
            )
    total = sum(a.balance + a.stake for a in accounts)
    if total > MAX_INT:
        p.add("accounts", f"total supply {total} exceeds {MAX_INT}")

    if p.lines:
        raise ConfigError("\n".join(p.lines))

    def need(key: str) -> int:
        value = ints[key]
        assert value is not None
        return value

    assert chain_id is not None and task is not None and unit is not None
    assert compression is not None
    return Genesis(
        chain_id=chain_id,
        task=task,
        model_seed=need("model_seed"),
        validators=tuple(validators),
        emission_per_round=need("emission_per_round"),
        miner_share_bps=need("miner_share_bps"),
        validator_share_bps=need("validator_share_bps"),
        min_miner_stake=need("min_miner_stake"),
        forgery_slash=need("forgery_slash"),
        malformed_penalty=need("malformed_penalty"),
        probation_rounds=need("probation_rounds"),
        beacon_rounds=need("beacon_rounds"),
        spot_check_bps=need("spot_check_bps"),
        accounts=tuple(sorted(accounts, key=lambda a: a.address)),
        decimals=need("decimals"),
        unit=unit,
        compression=compression,
    )


def _check_compression(text: str) -> str | None:
    from pot_cli.training.codec import Compression
    from pot_cli.training.errors import TrainingError

    try:
        label = Compression.parse(text).label()
    except TrainingError as exc:
        return str(exc)
    if label != text:
        return f"write it as {label!r}"
    return None


# ---------------------------------------------------------------------------------- files


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def load_genesis(path: Path | str) -> Genesis:
    """Read a genesis file (``.toml`` or ``.json``, UTF-8, at most 1 MiB) and validate it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(f"{path}: a genesis file must end in .toml or .json")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ConfigError(f"{path}: genesis file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read genesis: {exc.strerror}") from None
    if size > MAX_GENESIS_BYTES:
        raise ConfigError(f"{path}: genesis is {size} bytes; the limit is {MAX_GENESIS_BYTES}")
    try:
        data = path.read_bytes()[: MAX_GENESIS_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read genesis: {exc.strerror}") from None
    if len(data) > MAX_GENESIS_BYTES:
        raise ConfigError(f"{path}: genesis is over the limit of {MAX_GENESIS_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: genesis is not valid UTF-8 text") from None
    obj: Any
    if suffix == ".toml":
        try:
            obj = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: malformed TOML: {exc}") from None
    else:
        try:
            obj = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            raise ConfigError(f"{path}: malformed JSON: {exc}") from None
    return parse_genesis(obj, str(path))


def write_genesis(genesis: Genesis, path: Path | str) -> None:
    """Write ``genesis`` as TOML (or JSON when ``path`` ends in ``.json``)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps(genesis.to_dict(), indent=2, ensure_ascii=False) + "\n"
    else:
        text = tomli_w.dumps(genesis.to_dict())
    path.write_text(text, encoding="utf-8")
