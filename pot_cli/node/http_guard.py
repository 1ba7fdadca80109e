"""uvicorn's HTTP/1.1 protocol with one more bound: a connection must send its first request
within :data:`FIRST_REQUEST_S`, or it is closed.

uvicorn starts its keep-alive timer only after a first response, so a client that opens
connections and never sends anything would hold them for good; a few hundred of them fill the
server's concurrency limit and lock out miners and peers (found by the hostile-input tests). A
body that trickles in is bounded separately (``api.read_body``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

FIRST_REQUEST_S = 5.0


class GuardedH11Protocol(H11Protocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._first_request_timer: asyncio.TimerHandle | None = self.loop.call_later(
            FIRST_REQUEST_S, self._close_if_idle
        )

    def _close_if_idle(self) -> None:
        self._first_request_timer = None
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._first_request_timer is not None:
            self._first_request_timer.cancel()
            self._first_request_timer = None
        super().connection_lost(exc)
