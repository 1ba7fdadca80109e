"""A bounded, thread-safe log of a node's events, read by the API's event stream.

The validator's core thread appends (round opened, submission kept, block committed, view
change, state transfer); any number of readers ask for the events after an id they already
have (server-sent events send that id, so a reconnecting dashboard resumes where it stopped).
Only the last ``capacity`` events are kept: a reader that fell further behind starts from the
oldest one still here.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any


class EventLog:
    def __init__(self, capacity: int = 2048) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._next = 1
        self._cond = threading.Condition()

    def append(self, kind: str, data: dict[str, Any], at_ms: int | None = None) -> int:
        with self._cond:
            eid = self._next
            self._next += 1
            at = at_ms if at_ms is not None else time.time_ns() // 1_000_000
            self._events.append({"id": eid, "kind": kind, "at_ms": at, "data": data})
            self._cond.notify_all()
            return eid

    @property
    def last_id(self) -> int:
        with self._cond:
            return self._next - 1

    def since(self, after: int, limit: int = 256) -> list[dict[str, Any]]:
        """Events with an id above ``after``, oldest first, at most ``limit``."""
        with self._cond:
            return [e for e in self._events if e["id"] > after][:limit]

    def wait(self, after: int, timeout: float) -> bool:
        """Block until an event above ``after`` exists or ``timeout`` passes (threads only)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._next - 1 > after, timeout)
