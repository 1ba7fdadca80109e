"""A validator's chain on disk (SQLite): the genesis, every committed block with its 2f+1
commit certificate, and the payloads the blocks' verdicts rest on, by hash.

Writes are transactions with ``synchronous=FULL`` (fsync before they return). Everything read
back is parsed strictly: a damaged store is reported, never trusted. :func:`verify_chain`
re-derives the chain from genesis (``pot chain verify``).

Each thread gets its own SQLite connection (WAL mode: the validator's core thread writes while
its API thread reads). The ``rounds`` table keeps when each round opened and committed at this
validator (the devnet's on-time figures, the API's ``committed_ms``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pot_cli.consensus.certificates import verify_block
from pot_cli.consensus.messages import CommittedBlock, MessageError, parse_committed_block
from pot_cli.crypto import canonical_bytes, sha256_hex
from pot_cli.errors import PotError
from pot_cli.protocol.app import PotApp
from pot_cli.protocol.genesis import Genesis, parse_genesis

FORMAT = "pot-chain/1"
FILE_NAME = "chain.sqlite"


class ChainStoreError(PotError):
    """The chain store cannot be opened or read (the text names the file and what is wrong)."""


class ChainStore:
    """One SQLite file: ``meta`` (format, genesis), ``blocks`` (height -> committed block
    JSON), ``payloads`` (hash -> bytes)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            db = self._db
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS blocks (height INTEGER PRIMARY KEY, body TEXT NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS payloads (hash TEXT PRIMARY KEY, bytes BLOB NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS rounds (height INTEGER PRIMARY KEY, "
                "opened_ms INTEGER, deadline_ms INTEGER, committed_ms INTEGER, "
                "proposed_ms INTEGER)"
            )
            fmt = self._meta("format")
            if fmt is None:
                db.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
            elif fmt != FORMAT:
                raise ChainStoreError(f"{self.path}: not a pot chain store (format {fmt!r})")
        except sqlite3.DatabaseError as exc:
            raise ChainStoreError(f"{self.path}: not a readable chain store ({exc})") from None

    @property
    def _db(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA busy_timeout=5000")
            except sqlite3.DatabaseError as exc:
                raise ChainStoreError(f"{self.path}: not a readable chain store ({exc})") from None
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()

    # ------------------------------------------------------------------ genesis

    def put_genesis(self, genesis: Genesis) -> None:
        body = canonical_bytes(genesis.to_dict()).decode()
        old = self._meta("genesis")
        if old is not None and old != body:
            raise ChainStoreError(f"{self.path}: holds another chain's genesis")
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('genesis', ?)", (body,))

    def genesis(self) -> Genesis:
        body = self._meta("genesis")
        if body is None:
            raise ChainStoreError(f"{self.path}: no genesis recorded")
        try:
            return parse_genesis(json.loads(body), f"{self.path} (genesis)")
        except ValueError as exc:
            raise ChainStoreError(f"{self.path}: genesis is not JSON ({exc})") from None

    # ------------------------------------------------------------------ blocks and payloads

    def put_block(self, block: CommittedBlock) -> None:
        body = canonical_bytes(block.to_dict()).decode()
        self._db.execute("INSERT OR REPLACE INTO blocks VALUES (?, ?)", (block.seq, body))

    def blocks(self) -> Iterator[CommittedBlock]:
        for height, body in self._db.execute("SELECT height, body FROM blocks ORDER BY height"):
            try:
                block = parse_committed_block(json.loads(body))
            except (ValueError, MessageError) as exc:
                raise ChainStoreError(f"{self.path}: block {height} is damaged ({exc})") from None
            if block.seq != height:
                raise ChainStoreError(f"{self.path}: block {height} is stored as {block.seq}")
            yield block

    def block(self, height: int) -> CommittedBlock | None:
        row = self._db.execute("SELECT body FROM blocks WHERE height = ?", (height,)).fetchone()
        if row is None:
            return None
        try:
            block = parse_committed_block(json.loads(row[0]))
        except (ValueError, MessageError) as exc:
            raise ChainStoreError(f"{self.path}: block {height} is damaged ({exc})") from None
        return block

    def top(self) -> int:
        """The highest stored block (0: none)."""
        row = self._db.execute("SELECT MAX(height) FROM blocks").fetchone()
        return int(row[0] or 0)

    def heights(self) -> list[int]:
        return [int(r[0]) for r in self._db.execute("SELECT height FROM blocks ORDER BY height")]

    # ------------------------------------------------------------------ round timing

    def round_opened(self, height: int, opened_ms: int, deadline_ms: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO rounds (height, opened_ms, deadline_ms) VALUES (?, ?, ?)",
            (height, opened_ms, deadline_ms),
        )

    def round_committed(self, height: int, committed_ms: int) -> None:
        self._db.execute(
            "INSERT INTO rounds (height, committed_ms) VALUES (?, ?) ON CONFLICT(height) "
            "DO UPDATE SET committed_ms = COALESCE(committed_ms, excluded.committed_ms)",
            (height, committed_ms),
        )

    def round_proposed(self, height: int, proposed_ms: int) -> None:
        """This validator, as primary, sent its pre-prepare for ``height`` (first time only)."""
        self._db.execute(
            "INSERT INTO rounds (height, proposed_ms) VALUES (?, ?) ON CONFLICT(height) "
            "DO UPDATE SET proposed_ms = COALESCE(proposed_ms, excluded.proposed_ms)",
            (height, proposed_ms),
        )

    def proposals(self) -> dict[int, tuple[int | None, int | None]]:
        """height -> (proposed_ms, committed_ms) for the rounds this validator proposed: the
        PBFT commit latency as the primary sees it (pre-prepare sent to block committed)."""
        rows = self._db.execute(
            "SELECT height, proposed_ms, committed_ms FROM rounds "
            "WHERE proposed_ms IS NOT NULL ORDER BY height"
        )
        return {int(h): (p, c) for h, p, c in rows}

    def round_times(self, height: int) -> tuple[int | None, int | None, int | None]:
        row = self._db.execute(
            "SELECT opened_ms, deadline_ms, committed_ms FROM rounds WHERE height = ?", (height,)
        ).fetchone()
        return (None, None, None) if row is None else (row[0], row[1], row[2])

    def rounds(self) -> dict[int, tuple[int | None, int | None, int | None]]:
        """height -> (opened_ms, deadline_ms, committed_ms) as this validator saw them."""
        rows = self._db.execute(
            "SELECT height, opened_ms, deadline_ms, committed_ms FROM rounds ORDER BY height"
        )
        return {int(h): (o, d, c) for h, o, d, c in rows}

    @property
    def payloads(self) -> PayloadTable:
        return PayloadTable(self)


class PayloadTable(MutableMapping[str, bytes]):
    """The ``payloads`` table as a mapping (what :class:`PotApp` takes as its payload store):
    a payload is stored only under its own SHA-256 and checked when read back."""

    def __init__(self, store: ChainStore) -> None:
        self._store = store

    @property
    def _db(self) -> sqlite3.Connection:
        return self._store._db

    def __getitem__(self, key: str) -> bytes:
        row = self._db.execute("SELECT bytes FROM payloads WHERE hash = ?", (key,)).fetchone()
        if row is None or sha256_hex(bytes(row[0])) != key:
            raise KeyError(key)
        return bytes(row[0])

    def __setitem__(self, key: str, value: bytes) -> None:
        if sha256_hex(value) != key:
            raise ChainStoreError("a payload is stored only under its own hash")
        self._db.execute("INSERT OR REPLACE INTO payloads VALUES (?, ?)", (key, value))

    def __delitem__(self, key: str) -> None:
        self._db.execute("DELETE FROM payloads WHERE hash = ?", (key,))

    def __iter__(self) -> Iterator[str]:
        return (str(r[0]) for r in self._db.execute("SELECT hash FROM payloads ORDER BY hash"))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM payloads").fetchone()[0])


@dataclass(frozen=True)
class ChainReport:
    height: int
    head: str
    model_hash: str
    ledger_digest: str
    first_mismatch: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "head": self.head,
            "model_hash": self.model_hash,
            "ledger_digest": self.ledger_digest,
            "ok": self.first_mismatch is None,
            "first_mismatch": self.first_mismatch,
        }


def replay_chain(store: ChainStore, round_time: int = 1) -> tuple[PotApp, str | None]:
    """Re-derive the stored chain from its genesis: every block's commit certificate (2f+1
    validators' signed commits, offline), then its execution on a fresh application (payout,
    aggregation and optimizer step from the recorded verdicts and the stored payloads; the
    model after and the amounts must come out as recorded; ledger invariants after each).
    Stops at the first mismatch; returns the application and that mismatch (None: all good)."""
    genesis = store.genesis()
    keys = tuple(v.public_key for v in genesis.validators)
    app = PotApp(genesis, round_time=round_time, payload_store=store.payloads)
    mismatch = None
    for block in store.blocks():
        if block.seq != app.height + 1:
            mismatch = f"block {block.seq}: expected block {app.height + 1} (a gap in the chain)"
            break
        if not verify_block(block, genesis.chain_id, keys):
            mismatch = f"block {block.seq}: the commit certificate does not verify"
            break
        try:
            app.execute(block.seq, block.proposal)
        except PotError as exc:
            mismatch = f"block {block.seq}: {exc}"
            break
    return app, mismatch


def verify_chain(store: ChainStore, round_time: int = 1) -> ChainReport:
    """:func:`replay_chain`, as a report (``pot chain verify``)."""
    app, mismatch = replay_chain(store, round_time)
    return ChainReport(app.height, app.state.head, app.model_hash, app.ledger.digest(), mismatch)
