"""What a miner signs for a round, and the beacon the primary signs at the cut-off.

A **commitment** binds one payload to one round: the miner signs, under the domain
:data:`SIGN_DOMAIN`, the body ``{"model_hash", "payload_hash"}`` (:func:`commitment_body`)
bound by :mod:`pot_cli.crypto` to the chain id and the height. Signing hashes the payload once
(:func:`sign_commitment` returns that hash with the signature, so nobody hashes it twice); a
validator checks a commitment against the *claimed* payload hash (:func:`verify_commitment`,
no payload needed) and the payload bytes against that hash separately, so a commitment can be
checked before its bytes arrive.

The **cut-off beacon** (:func:`sign_cut_off`) is, today, the primary's Ed25519 signature over
the frozen submission set (``training.assignment.cut_off_body``: every (address, payload hash),
sorted) under :data:`CUT_OFF_DOMAIN`. It salts the spot-check sample, so no miner knows the
sample when it submits. Its limit (a Byzantine primary can sign several candidate sets in
private and freeze the one that spares a forger; see ``training/assignment.py``) is the
soundness issue's to fix, with a beacon no single validator controls: it is produced here and
only here, so that change replaces this one function and :func:`verify_cut_off`.

Pure functions: no clock, no randomness (Ed25519 signatures are deterministic).
"""

from __future__ import annotations

from collections.abc import Iterable

from pot_cli.crypto import Identity, sha256_hex, verify_signed
from pot_cli.training.assignment import cut_off_body

SIGN_DOMAIN = "pot/gradient"
CUT_OFF_DOMAIN = "pot/cut-off"


def commitment_body(model_hash: str, payload_hash: str) -> dict[str, str]:
    """The body a miner signs (chain id and height are bound by the signing envelope)."""
    return {"model_hash": model_hash, "payload_hash": payload_hash}


def sign_commitment(
    identity: Identity, chain_id: str, height: int, model_hash: str, payload: bytes
) -> tuple[str, bytes]:
    """Hash ``payload`` and sign the commitment: returns ``(payload_hash, signature)``."""
    payload_hash = sha256_hex(payload)
    body = commitment_body(model_hash, payload_hash)
    return payload_hash, identity.sign_message(SIGN_DOMAIN, chain_id, height, body)


def verify_commitment(
    public_key: bytes,
    sig: bytes,
    chain_id: str,
    height: int,
    model_hash: str,
    payload_hash: str,
) -> bool:
    """True when ``sig`` is ``public_key``'s commitment to ``payload_hash`` in this round.
    Never raises: malformed keys, signatures or fields simply do not verify."""
    body = commitment_body(model_hash, payload_hash)
    return verify_signed(public_key, sig, SIGN_DOMAIN, chain_id, height, body)


def sign_cut_off(
    identity: Identity, chain_id: str, height: int, frozen: Iterable[tuple[str, str]]
) -> bytes:
    """The round's beacon: ``identity`` (the primary) signs the frozen set of
    (address, payload hash) pairs (sorted here, so their order does not matter)."""
    return identity.sign_message(CUT_OFF_DOMAIN, chain_id, height, cut_off_body(list(frozen)))


def verify_cut_off(
    public_key: bytes,
    beacon: bytes,
    chain_id: str,
    height: int,
    frozen: Iterable[tuple[str, str]],
) -> bool:
    """True when ``beacon`` is the primary's (``public_key``) signature over ``frozen``."""
    body = cut_off_body(list(frozen))
    return verify_signed(public_key, beacon, CUT_OFF_DOMAIN, chain_id, height, body)
