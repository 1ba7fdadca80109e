"""The replica's write-ahead log: SQLite with fsync, hash-chained records, strict replay.

The replica produces records (``Output.records``) or a full replacement of the log
(``Output.compact``, at every stable checkpoint, which bounds the log). :meth:`SqliteWal.write`
makes them durable in one transaction (``PRAGMA synchronous=FULL``: SQLite fsyncs before the
commit returns) and only then may the host send the step's messages.

Integrity: each row stores ``check = sha256(previous check + body)``, so a flipped byte, a
missing row in the middle, reordered rows or a foreign log (other chain or replica) are
detected on load, as is a log whose tail was cut off (the ``head`` meta row, written in the
same transaction as the records, names the last record and its check). The replica then
refuses to start with a :class:`WalCorruptError` naming the file and the record — never a
silent divergence. A crash before a transaction commits leaves the previous, valid log: nothing
of the lost transaction was ever sent.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from pot_cli.consensus.replica import Output, WalCorruptError
from pot_cli.crypto import canonical_bytes, sha256_hex

FORMAT = "pot-pbft-wal/1"
GENESIS_CHECK = "0" * 64


def encode_record(record: dict[str, Any]) -> str:
    return canonical_bytes(record).decode("utf-8")


def chain_check(previous: str, body: str) -> str:
    return sha256_hex(previous.encode("ascii") + b"\x00" + body.encode("utf-8"))


class MemoryWal:
    """An in-memory log with the same semantics (for the simulator and tests)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.writes = 0

    def write(self, out: Output) -> None:
        if out.compact is not None:
            self.records = list(out.compact)
            self.writes += 1
        for rec in out.records:
            self.records.append(rec)
            self.writes += 1

    def load(self) -> list[dict[str, Any]]:
        return list(self.records)


class SqliteWal:
    """A durable log in one SQLite file, bound to one chain id and one replica key."""

    def __init__(self, path: Path, chain_id: str, replica_id: int, public_key: bytes) -> None:
        self.path = Path(path)
        self.identity = {
            "format": FORMAT,
            "chain_id": chain_id,
            "replica": str(replica_id),
            "public_key": public_key.hex(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS records "
                "(id INTEGER PRIMARY KEY, body TEXT NOT NULL, chk TEXT NOT NULL)"
            )
            self._check_meta()
            self._last_id, self._last_check = self._tail()
        except sqlite3.DatabaseError as exc:
            raise WalCorruptError(
                f"{self.path}: consensus log is not a readable SQLite database ({exc}); "
                "refusing to start (move it aside to resynchronise by state transfer)"
            ) from None

    def _check_meta(self) -> None:
        rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not rows:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)", sorted(self.identity.items())
            )
            self._db.execute("COMMIT")
            return
        for key, want in sorted(self.identity.items()):
            if rows.get(key) != want:
                raise WalCorruptError(
                    f"{self.path}: consensus log belongs to {key}={rows.get(key)!r}, "
                    f"not {want!r}; refusing to start"
                )

    def _tail(self) -> tuple[int, str]:
        row = self._db.execute("SELECT id, chk FROM records ORDER BY id DESC LIMIT 1").fetchone()
        return (0, GENESIS_CHECK) if row is None else (int(row[0]), str(row[1]))

    def write(self, out: Output) -> None:
        """Append the step's records (or replace the log) durably, in one transaction."""
        if out.compact is None and not out.records:
            return
        rows: list[tuple[int, str, str]] = []
        last_id, last_check = self._last_id, self._last_check
        if out.compact is not None:
            last_check = GENESIS_CHECK
        for rec in [*(out.compact or []), *out.records]:
            body = encode_record(rec)
            last_id += 1
            last_check = chain_check(last_check, body)
            rows.append((last_id, body, last_check))
        try:
            self._db.execute("BEGIN IMMEDIATE")
            if out.compact is not None:
                self._db.execute("DELETE FROM records")
                self._db.execute("DELETE FROM meta WHERE key = 'first_id'")
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('first_id', ?)",
                    (str(rows[0][0]) if rows else str(last_id + 1),),
                )
            self._db.executemany("INSERT INTO records (id, body, chk) VALUES (?, ?, ?)", rows)
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('head', ?)",
                (f"{last_id}:{last_check}",),
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise WalCorruptError(f"{self.path}: cannot write the consensus log: {exc}") from None
        self._last_id, self._last_check = last_id, last_check

    def load(self) -> list[dict[str, Any]]:
        """All records, verified: contiguous ids, intact hash chain, parseable JSON objects."""
        try:
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            rows = self._db.execute("SELECT id, body, chk FROM records ORDER BY id").fetchall()
        except sqlite3.DatabaseError as exc:
            raise WalCorruptError(
                f"{self.path}: consensus log is corrupt ({exc}); refusing to start"
            ) from None
        first = meta.get("first_id")
        expect_id = int(first) if first is not None and first.isdigit() else 1
        check = GENESIS_CHECK
        out: list[dict[str, Any]] = []
        for row_id, body, chk in rows:
            where = f"{self.path}: consensus log record {row_id}"
            if row_id != expect_id:
                raise WalCorruptError(
                    f"{where}: expected record {expect_id} (a record is missing); refusing to start"
                )
            if not isinstance(body, str) or chain_check(check, body) != chk:
                raise WalCorruptError(f"{where}: checksum mismatch (corrupt); refusing to start")
            try:
                rec = json.loads(body)
            except ValueError:
                raise WalCorruptError(f"{where}: not JSON; refusing to start") from None
            if not isinstance(rec, dict):
                raise WalCorruptError(f"{where}: not a record object; refusing to start")
            out.append(rec)
            check = chk
            expect_id += 1
        head = meta.get("head")
        if head is not None and head != f"{expect_id - 1}:{check}":
            raise WalCorruptError(
                f"{self.path}: consensus log is truncated (it ends at record {expect_id - 1}, "
                f"its last commit wrote {head.split(':')[0]}); refusing to start"
            )
        return out

    def close(self) -> None:
        self._db.close()
