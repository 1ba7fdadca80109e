"""A real local HTTP server that answers like a miner's status API or a validator's public API
with the responses of a recorded dashboard session (``tests/data/dashboard/session.jsonl``).

``RecordedMiner`` serves ``/summary``; ``RecordedValidator`` serves ``/v1/status``,
``/v1/validators``, ``/v1/blocks/{h}``, ``/v1/accounts/{a}`` and the event long-poll (at most
256 events per answer, as the real one), renumbering the recorded events 1..N. Both can be
stopped and started again on the same port (a source going away and coming back), and
:meth:`RecordedValidator.flood` appends copies of recorded events under new ids.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pot_cli.tui.sources.observation import Observation, load_recording

SESSION = Path(__file__).parent / "data" / "dashboard" / "session.jsonl"
EVENT_LIMIT = 256


class _Server:
    def __init__(self) -> None:
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        raise NotImplementedError

    def start(self) -> _Server:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                server.requests += 1
                status, body = server.answer(parts.path, parse_qs(parts.query))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)


def _not_found(what: str) -> tuple[int, Any]:
    return 404, {"error": "not-found", "detail": what}


class RecordedMiner(_Server):
    def __init__(self, summaries: list[dict[str, Any]]) -> None:
        super().__init__()
        self.summaries = summaries
        self.position = len(summaries) - 1

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        if path == "/summary":
            return 200, self.summaries[self.position]
        return _not_found(path)


class RecordedValidator(_Server):
    def __init__(self, observations: list[Observation], url: str) -> None:
        super().__init__()
        self.statuses = [o.data for o in observations if o.kind == "status" and o.url == url]
        self.validators = next(o.data for o in reversed(observations) if o.kind == "validators")
        self.blocks = {o.data["height"]: o.data for o in observations if o.kind == "block"}
        self.accounts = {o.data["address"]: o.data for o in observations if o.kind == "account"}
        self.events: list[dict[str, Any]] = []
        for o in observations:
            if o.kind == "event":
                self.events.append({**o.data, "id": len(self.events) + 1})
        self._lock = threading.Lock()

    def flood(self, n: int) -> None:
        """``n`` more events: the recorded ones again, under new ids."""
        with self._lock:
            base = list(self.events)
            for i in range(n):
                e = base[i % len(base)]
                self.events.append({**e, "id": len(self.events) + 1})

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        if path == "/v1/status":
            return 200, self.statuses[-1]
        if path == "/v1/validators":
            return 200, self.validators
        if path.startswith("/v1/blocks/"):
            h = int(path.rsplit("/", 1)[1])
            return (200, self.blocks[h]) if h in self.blocks else _not_found(f"no block {h}")
        if path.startswith("/v1/accounts/"):
            a = path.rsplit("/", 1)[1]
            return (200, self.accounts[a]) if a in self.accounts else _not_found("no account")
        if path == "/v1/events/poll":
            after = int(query.get("after", ["0"])[0])
            wait = min(float(query.get("wait", ["0"])[0]), 1.0)
            deadline = time.monotonic() + wait
            while True:
                with self._lock:
                    got = [e for e in self.events[after:] if e["id"] > after][:EVENT_LIMIT]
                if got or time.monotonic() >= deadline:
                    return 200, got
                time.sleep(0.05)
        return _not_found(path)


def recorded_servers(
    session: Path = SESSION,
) -> tuple[RecordedMiner, RecordedValidator, Callable[[], None]]:
    """A miner server (the session's first miner) and a validator server (its second
    validator, the one that was never stopped), started; and a function that stops both."""
    header, observations = load_recording(session)
    miner_url = header.miners[0]
    summaries = [o.data for o in observations if o.kind == "summary" and o.url == miner_url]
    miner = RecordedMiner(summaries)
    validator = RecordedValidator(observations, header.validators[1])
    miner.start()
    validator.start()

    def stop() -> None:
        miner.stop()
        validator.stop()

    return miner, validator, stop
