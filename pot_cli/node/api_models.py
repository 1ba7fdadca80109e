"""The validator's public API (``/v1``): the typed bodies it answers with.

One definition for the server (:mod:`pot_cli.node.api`, FastAPI renders them into
``/openapi.json``) and every client (:mod:`pot_cli.node.client`: miner, devnet, dashboard,
tests). Amounts are integers in base units; hashes are lowercase hex; times are milliseconds
since the Unix epoch (``*_ms``) or relative milliseconds (``*_in_ms``).

A submission is ``POST /v1/submit`` with the safetensors payload as the raw body and the
commitment in headers (:data:`SUBMIT_HEADERS`): the miner's Ed25519 public key (its address is
derived from it), the chain id, the height, the model hash, the payload's SHA-256 and the
signature (:func:`pot_cli.protocol.commitments.sign_commitment`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

API_VERSION = "v1"

# the commitment travels in these headers beside the raw payload bytes
HEADER_CHAIN = "X-Pot-Chain"
HEADER_PUBLIC_KEY = "X-Pot-Public-Key"
HEADER_HEIGHT = "X-Pot-Height"
HEADER_MODEL_HASH = "X-Pot-Model-Hash"
HEADER_PAYLOAD_HASH = "X-Pot-Payload-Hash"
HEADER_SIGNATURE = "X-Pot-Signature"
SUBMIT_HEADERS = (
    HEADER_CHAIN,
    HEADER_PUBLIC_KEY,
    HEADER_HEIGHT,
    HEADER_MODEL_HASH,
    HEADER_PAYLOAD_HASH,
    HEADER_SIGNATURE,
)
# a peer's answer to a payload fetch names the miner's key in this header (hex)
HEADER_MINER_KEY = "X-Pot-Miner-Key"


class ErrorOut(BaseModel):
    """Every 4xx/5xx answer: a stable machine code and a sentence for people."""

    error: str
    detail: str


class PeerOut(BaseModel):
    index: int
    name: str
    url: str
    up: bool
    last_seen_ms: int | None = None


class StatusOut(BaseModel):
    chain_id: str
    decimals: int = Field(6, description="amounts are integers in 10**-decimals of a unit")
    unit: str = "POT"
    node: str
    validator_index: int
    height: int = Field(description="committed blocks")
    head: str
    model_hash: str
    view: int
    primary: int
    is_primary: bool
    phase: str = Field(description="round phase: open, frozen, verifying or idle")
    round_height: int
    deadline_ms: int | None
    deadline_in_ms: int | None
    view_changes: int
    state_transfers: int
    peers_up: int
    peers: list[PeerOut]
    uptime_s: float
    now_ms: int


class RoundOut(BaseModel):
    chain_id: str
    height: int = Field(description="the open round (committed height + 1)")
    phase: str
    model_hash: str
    round_seed: str
    task: str
    train_size: int
    batch_size: int
    compression: str = Field(description="wire compression the network takes (codec label)")
    deadline_ms: int
    deadline_in_ms: int
    round_ms: int
    now_ms: int


class ModelOut(BaseModel):
    """The current model and its quality on the task's held-out set (what dashboards plot)."""

    height: int
    model_hash: str
    task: str
    metric: str = Field(description="accuracy, or bits_per_byte, ... (the task's metric)")
    value: float
    higher_is_better: bool


class SubmitOut(BaseModel):
    """A kept submission (202). Refusals are :class:`ErrorOut` with the refusal code."""

    status: str = Field(description="'kept' for the open round, 'queued' for the next one")
    miner: str
    height: int
    payload_hash: str


class VerdictOut(BaseModel):
    miner: str
    kind: str
    code: str | None
    samples: int
    reward: int = 0
    penalty: int = 0


class BlockOut(BaseModel):
    height: int
    hash: str
    proposal: Any = Field(description="the committed proposal: block and beacon reveals")
    certificate: Any = Field(description="the commit certificate: 2f+1 signed commits")
    verdicts: list[VerdictOut]
    committed_ms: int | None = None


class AccountEventOut(BaseModel):
    height: int
    kind: str
    code: str | None
    amount: int


class AccountOut(BaseModel):
    address: str
    balance: int
    stake: int
    ejected: bool
    verified: int
    on_probation: bool
    recent: list[AccountEventOut]


class ValidatorOut(BaseModel):
    index: int
    name: str
    public_key: str
    address: str
    url: str | None
    up: bool | None


class EventOut(BaseModel):
    id: int
    kind: str
    at_ms: int
    data: dict[str, Any]
