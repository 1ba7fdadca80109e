"""What the dashboard learns, one :class:`Observation` at a time, and the recording format.

An observation is what one source said at one moment: a miner's ``/summary``, a validator's
``/v1/status``, a committed block, an event, a model evaluation, or that a source went down
(``kind="down"``, with the error and when it will be retried). Live pollers produce them in
worker threads and put them into a :class:`Sink`; the app drains the sink on its own schedule,
so a flood of events costs the UI thread one batch per refresh, not one message per event.

A recording is JSON lines: a header (``{"schema": "pot.dashboard.recording/1", "miners": [...],
"validators": [...], "started_ms": ...}``) and then one observation per line, in the order they
were made. ``pot dashboard --replay FILE`` plays it back through the same sink.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pot_cli.errors import PotError, UsageError

SCHEMA = "pot.dashboard.recording/1"

# the roles a source plays
MINER, VALIDATOR, EVAL, DASHBOARD = "miner", "validator", "eval", "dashboard"
# what a source can say (``down`` from any of them)
KINDS = (
    "summary",  # miner: its /summary document
    "status",  # validator: /v1/status
    "validators",  # validator: /v1/validators
    "block",  # validator: /v1/blocks/{h}
    "account",  # validator: /v1/accounts/{address}
    "event",  # validator: one event of /v1/events
    "genesis",  # dashboard: the network's genesis (file), or a validator's
    "task",  # eval: the task's metric name and VRAM need
    "metric",  # eval: the model's metric at a height (and the centralized baseline)
    "down",  # any: the source did not answer ({"error", "retry_in_s"})
)


@dataclass(frozen=True)
class Observation:
    t_ms: int  # wall clock of the dashboard when observed (ms since the epoch)
    role: str
    url: str
    kind: str
    data: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "t": self.t_ms,
            "role": self.role,
            "url": self.url,
            "kind": self.kind,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "observation") -> Observation:
        if not isinstance(d, dict):
            raise UsageError(f"{where}: expected a JSON object")
        try:
            t, role, url, kind = int(d["t"]), str(d["role"]), str(d["url"]), str(d["kind"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{where}: missing or bad field {exc}") from None
        if kind not in KINDS:
            raise UsageError(f"{where}: unknown kind {kind!r}")
        return cls(t, role, url, kind, d.get("data"))


class Sink:
    """Where sources put observations (any thread) and the app takes them (its own thread).

    Every observation is also written to the recorder when there is one; ``subscribe`` lets a
    worker (the model evaluator) see some kinds as they arrive."""

    def __init__(self, recorder: Recorder | None = None, *, keep: bool = True) -> None:
        self._items: deque[Observation] = deque()
        self.recorder = recorder
        self.keep = keep  # False: record and notify only (nobody drains)
        self._subs: list[tuple[frozenset[str], Callable[[Observation], None]]] = []
        self.count = 0

    def subscribe(self, kinds: Iterable[str], fn: Callable[[Observation], None]) -> None:
        self._subs.append((frozenset(kinds), fn))

    def put(self, obs: Observation) -> None:
        if self.keep:
            self._items.append(obs)  # deque.append is atomic: no lock needed
        self.count += 1
        if self.recorder is not None:
            self.recorder.write(obs)
        for kinds, fn in self._subs:
            if obs.kind in kinds:
                fn(obs)

    def drain(self, limit: int | None = None) -> list[Observation]:
        out: list[Observation] = []
        while self._items and (limit is None or len(out) < limit):
            out.append(self._items.popleft())
        return out

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class RecordingHeader:
    miners: list[str]
    validators: list[str]
    started_ms: int
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "miners": self.miners,
            "validators": self.validators,
            "started_ms": self.started_ms,
            "note": self.note,
            **self.extra,
        }


class Recorder:
    """Appends observations to a JSON-lines file (thread-safe; flushed at every line, so a
    recording cut short by Ctrl-C is still a valid one)."""

    def __init__(self, path: Path, header: RecordingHeader) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise PotError(f"cannot write the recording {path}: {exc.strerror or exc}") from None
        self._line(header.to_dict())

    def _line(self, obj: dict[str, Any]) -> None:
        assert self._f is not None
        self._f.write(json.dumps(obj, separators=(",", ":"), sort_keys=True) + "\n")
        self._f.flush()

    def write(self, obs: Observation) -> None:
        with self._lock:
            if self._f is not None:
                self._line(obs.to_dict())

    def close(self) -> None:
        with self._lock:
            if self._f is not None:
                self._f.close()
                self._f = None


def load_recording(path: Path) -> tuple[RecordingHeader, list[Observation]]:
    """A recording's header and observations (sorted by time); a clear error if it is not one."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read the recording {path}: {exc.strerror or exc}") from None
    if not lines:
        raise UsageError(f"{path}: empty; not a pot dashboard recording")
    try:
        head = json.loads(lines[0])
    except ValueError:
        raise UsageError(f"{path}: line 1 is not JSON; not a pot dashboard recording") from None
    if not isinstance(head, dict) or head.get("schema") != SCHEMA:
        raise UsageError(f"{path}: not a pot dashboard recording (schema {SCHEMA} expected)")
    known = {"schema", "miners", "validators", "started_ms", "note"}
    header = RecordingHeader(
        miners=[str(u) for u in head.get("miners", [])],
        validators=[str(u) for u in head.get("validators", [])],
        started_ms=int(head.get("started_ms", 0)),
        note=str(head.get("note", "")),
        extra={k: v for k, v in head.items() if k not in known},
    )
    out: list[Observation] = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except ValueError:
            raise UsageError(f"{path}: line {n} is not JSON") from None
        out.append(Observation.from_dict(raw, f"{path}: line {n}"))
    out.sort(key=lambda o: o.t_ms)  # stable: same-time lines keep their order
    return header, out


__all__ = [
    "DASHBOARD",
    "EVAL",
    "MINER",
    "SCHEMA",
    "VALIDATOR",
    "Observation",
    "Recorder",
    "RecordingHeader",
    "Sink",
    "load_recording",
]
