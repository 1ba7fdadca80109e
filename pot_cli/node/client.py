"""THE typed client of a validator's public API (``requests``): the miner, the devnet launcher,
the dashboard and the tests all talk to validators through it.

Every answer is parsed into its :mod:`~pot_cli.node.api_models` model; a 4xx/5xx answer raises
:class:`ApiError` (status, machine code, reason), a validator that cannot be reached raises
:class:`Unreachable`. :class:`FailoverClient` spreads calls over several validators: it sticks
to one that answers and moves to the next on a connection failure or a 5xx.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import requests

from pot_cli.errors import PotError
from pot_cli.node.api_models import (
    HEADER_CHAIN,
    HEADER_HEIGHT,
    HEADER_MODEL_HASH,
    HEADER_PAYLOAD_HASH,
    HEADER_PUBLIC_KEY,
    HEADER_SIGNATURE,
    AccountOut,
    BlockOut,
    EventOut,
    ModelOut,
    RoundOut,
    StatusOut,
    SubmitOut,
    ValidatorOut,
)

T = TypeVar("T")
MAX_MODEL_BYTES = 512 * 1024 * 1024


class Unreachable(PotError):
    """The validator did not answer (refused, reset, timed out)."""


class ApiError(PotError):
    """The validator answered with an error: ``status`` (HTTP), ``code`` and ``detail``."""

    def __init__(self, status: int, code: str, detail: str, url: str = "") -> None:
        super().__init__(f"{url}: {status} {code}: {detail}" if url else f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class ValidatorClient:
    """One validator's API at ``base_url`` (e.g. ``http://127.0.0.1:7701``)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------ plumbing

    def _request(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        **kwargs: object,
    ) -> requests.Response:
        url = f"{self.base_url}{path}"
        try:
            r = self.session.request(method, url, timeout=timeout or self.timeout, **kwargs)  # type: ignore[arg-type]
        except requests.RequestException as exc:
            raise Unreachable(f"{self.base_url}: {type(exc).__name__}: {exc}") from None
        if r.status_code >= 400:
            try:
                body = r.json()
                code, detail = str(body.get("error", "")), str(body.get("detail", ""))
            except (ValueError, AttributeError):
                code, detail = "http-error", r.text[:200]
            raise ApiError(r.status_code, code or "http-error", detail, self.base_url)
        return r

    def _json(self, path: str, **params: object) -> object:
        r = self._request("GET", path, params=params or None)
        try:
            return r.json()
        except ValueError:
            raise ApiError(
                r.status_code, "bad-json", "the answer is not JSON", self.base_url
            ) from None

    # ------------------------------------------------------------------ endpoints

    def status(self) -> StatusOut:
        return StatusOut.model_validate(self._json("/v1/status"))

    def round(self) -> RoundOut:
        return RoundOut.model_validate(self._json("/v1/round"))

    def genesis(self) -> dict[str, object]:
        """The network's genesis as plain data (``protocol.genesis.parse_genesis`` checks it)."""
        body = self._json("/v1/genesis")
        if not isinstance(body, dict):
            raise ApiError(200, "bad-json", "expected the genesis object", self.base_url)
        return body

    def current_model(self) -> ModelOut:
        """The current model's hash, height and held-out metric."""
        return ModelOut.model_validate(self._json("/v1/model"))

    def model(self, model_hash: str, *, timeout: float | None = None) -> bytes:
        """The model's safetensors bytes (the caller checks them against ``model_hash``)."""
        r = self._request("GET", f"/v1/models/{model_hash}", timeout=timeout, stream=True)
        data = r.raw.read(MAX_MODEL_BYTES + 1, decode_content=True)
        if len(data) > MAX_MODEL_BYTES:
            raise ApiError(200, "oversize", "the model is larger than the limit", self.base_url)
        return bytes(data)

    def submit(
        self,
        *,
        chain_id: str,
        public_key: bytes,
        height: int,
        model_hash: str,
        payload_hash: str,
        signature: bytes,
        payload: bytes,
        timeout: float | None = None,
    ) -> SubmitOut:
        headers = {
            HEADER_CHAIN: chain_id,
            HEADER_PUBLIC_KEY: public_key.hex(),
            HEADER_HEIGHT: str(height),
            HEADER_MODEL_HASH: model_hash,
            HEADER_PAYLOAD_HASH: payload_hash,
            HEADER_SIGNATURE: signature.hex(),
            "Content-Type": "application/octet-stream",
        }
        r = self._request("POST", "/v1/submit", data=payload, headers=headers, timeout=timeout)
        return SubmitOut.model_validate(r.json())

    def block(self, height: int) -> BlockOut:
        return BlockOut.model_validate(self._json(f"/v1/blocks/{height}"))

    def account(self, address: str) -> AccountOut:
        return AccountOut.model_validate(self._json(f"/v1/accounts/{address}"))

    def validators(self) -> list[ValidatorOut]:
        body = self._json("/v1/validators")
        if not isinstance(body, list):
            raise ApiError(200, "bad-json", "expected a list of validators", self.base_url)
        return [ValidatorOut.model_validate(v) for v in body]

    def events_since(self, after: int = 0, *, wait: float = 0.0) -> list[EventOut]:
        """Events with an id above ``after`` (long-poll: waits up to ``wait`` seconds for one)."""
        r = self._request(
            "GET",
            "/v1/events/poll",
            params={"after": after, "wait": wait},
            timeout=self.timeout + wait,
        )
        return [EventOut.model_validate(e) for e in r.json()]

    def stream_events(self, after: int = 0) -> Iterator[EventOut]:
        """The server-sent event stream, from the event after ``after`` (blocks; the caller
        stops iterating to end it)."""
        r = self._request(
            "GET",
            "/v1/events",
            headers={"Last-Event-ID": str(after)},
            stream=True,
            timeout=None,
        )
        try:
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    yield EventOut.model_validate(json.loads(line[5:]))
        finally:
            r.close()

    def metrics(self) -> str:
        return self._request("GET", "/metrics").text


class Backoff:
    """Exponential waits between retries: ``first``, doubling up to ``cap`` seconds (the
    miner's retries and the dashboard's reconnects)."""

    def __init__(self, first: float = 1.0, cap: float = 15.0) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    def next(self) -> float:
        d = self.delay
        self.delay = min(self.cap, self.delay * 2)
        return d

    def reset(self) -> None:
        self.delay = self.first


class FailoverClient:
    """Calls go to one validator until it fails to answer (or answers 5xx), then to the next."""

    def __init__(self, urls: Sequence[str], *, timeout: float = 10.0) -> None:
        if not urls:
            raise PotError("no validator endpoints configured ([network] validators)")
        self.clients = [ValidatorClient(u, timeout=timeout) for u in urls]
        self.current = 0

    def close(self) -> None:
        for c in self.clients:
            c.close()

    @property
    def url(self) -> str:
        return self.clients[self.current].base_url

    def call(self, fn: Callable[[ValidatorClient], T]) -> T:
        """``fn`` on the current validator, failing over across all of them once each."""
        last: PotError | None = None
        for step in range(len(self.clients)):
            i = (self.current + step) % len(self.clients)
            try:
                out = fn(self.clients[i])
            except Unreachable as exc:
                last = exc
                continue
            except ApiError as exc:
                if exc.status < 500:
                    raise
                last = exc
                continue
            self.current = i
            return out
        assert last is not None
        raise last

    def each(self, fn: Callable[[ValidatorClient], T]) -> list[T | PotError]:
        """``fn`` on every validator; each result or the error it raised."""
        out: list[T | PotError] = []
        for c in self.clients:
            try:
                out.append(fn(c))
            except PotError as exc:
                out.append(exc)
        return out
