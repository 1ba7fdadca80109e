"""The typed client of a miner's local status API (``[miner] api_listen``): ``GET /summary`` and
``GET /metrics`` (:mod:`pot_cli.node.miner_api` serves them).

It raises the same errors as the validators' client (:mod:`pot_cli.node.client`):
:class:`~pot_cli.node.client.Unreachable` when the miner does not answer and
:class:`~pot_cli.node.client.ApiError` for an error status or a body that is not a summary.
The models below accept fields they do not name (``extra="allow"``), so a newer miner that says
more still parses; every field a reader relies on is typed.
"""

from __future__ import annotations

from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, ValidationError

from pot_cli.node.client import ApiError, Unreachable

SUMMARY_SCHEMA = "pot.miner.summary/1"


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class MinerIdentity(_Open):
    address: str
    name: str
    chain_id: str
    task: str


class DeviceOut(_Open):
    """One worker: a GPU (``gpu3``, with its NVML ``reading``) or the CPU (``reading`` None)."""

    name: str
    gpu_index: int | None = None
    card: str | None = None
    device: str
    state: str = "idle"  # idle | busy | paused | crashed | lost
    restarts: int = 0
    shards: int = 0
    samples: int = 0
    samples_per_s: float | None = None
    last_error: str | None = None
    reading: dict[str, Any] | None = None


class EarningsOut(_Open):
    reward: int = 0
    penalty: int = 0
    net: int = 0
    unit: str = "POT"
    decimals: int = 6


class BalanceOut(_Open):
    balance: int
    stake: int
    ejected: bool = False


class ElectricityOut(_Open):
    price_per_kwh: float
    power_w: float | None = None
    energy_kwh: float = 0.0
    cost: float | None = None
    cost_per_hour: float | None = None


class MinerSummary(_Open):
    """The ``/summary`` document (amounts in base units)."""

    schema_: str = ""
    version: str = ""
    miner: MinerIdentity
    validators: list[str] = []
    uptime_s: float = 0.0
    devices: list[DeviceOut] = []
    samples_per_s: float | None = None
    round: dict[str, Any] | None = None
    counts: dict[str, int] = {}
    earnings: EarningsOut
    balance: BalanceOut | None = None
    electricity: ElectricityOut
    last_error: dict[str, Any] | None = None

    @classmethod
    def parse(cls, body: object) -> MinerSummary:
        if not isinstance(body, dict):
            raise ValueError("the summary is not a JSON object")
        return cls.model_validate({**body, "schema_": body.get("schema", "")})


class MinerClient:
    """One miner's status API at ``base_url`` (e.g. ``http://127.0.0.1:4067``); read-only."""

    def __init__(self, base_url: str, *, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def _get(self, path: str) -> requests.Response:
        try:
            r = self.session.get(f"{self.base_url}{path}", timeout=self.timeout)
        except requests.RequestException as exc:
            raise Unreachable(f"{self.base_url}: {type(exc).__name__}: {exc}") from None
        if r.status_code >= 400:
            raise ApiError(r.status_code, "http-error", r.text[:200], self.base_url)
        return r

    def summary_json(self) -> dict[str, Any]:
        """The raw ``/summary`` object (what a recording keeps), checked to parse."""
        r = self._get("/summary")
        try:
            body = r.json()
            MinerSummary.parse(body)
        except (ValueError, ValidationError) as exc:
            raise ApiError(
                200, "bad-summary", f"not a miner summary: {exc}", self.base_url
            ) from None
        assert isinstance(body, dict)
        return body

    def summary(self) -> MinerSummary:
        return MinerSummary.parse(self.summary_json())

    def metrics(self) -> str:
        return self._get("/metrics").text


__all__ = ["SUMMARY_SCHEMA", "DeviceOut", "MinerClient", "MinerSummary"]
