"""What a miner signs for a round.

A **commitment** binds one payload to one round: the miner signs, under the domain
:data:`SIGN_DOMAIN`, the body ``{"model_hash", "payload_hash"}`` (:func:`commitment_body`)
bound by :mod:`pot_cli.crypto` to the chain id and the height. Signing hashes the payload once
(:func:`sign_commitment` returns that hash with the signature, so nobody hashes it twice); a
validator checks a commitment against the *claimed* payload hash (:func:`verify_commitment`,
no payload needed) and the payload bytes against that hash separately, so a commitment can be
checked before its bytes arrive.

The round's spot-check beacon is in ``protocol/beacon.py``.

Pure functions: no clock, no randomness (Ed25519 signatures are deterministic).
"""

from __future__ import annotations

from pot_cli.crypto import Identity, sha256_hex, verify_signed

SIGN_DOMAIN = "pot/gradient"


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
