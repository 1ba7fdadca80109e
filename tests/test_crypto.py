"""Crypto module: canonical bytes, signatures bound to domain/chain/height, addresses, key files."""

from __future__ import annotations

import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pot_cli import crypto
from pot_cli.errors import EncodingError, KeyFileError

IDENTITY = crypto.Identity.from_seed(b"test-seed-0")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def test_canonical_bytes_known_vector() -> None:
    obj = {"b": [1, 2.5, None, True], "a": b"\x00\xff", "é": "ü"}
    assert crypto.canonical_bytes(obj) == '{"a":"00ff","b":[1,2.5,null,true],"é":"ü"}'.encode()


def test_canonical_bytes_key_order_irrelevant() -> None:
    assert crypto.canonical_bytes({"x": 1, "y": 2}) == crypto.canonical_bytes({"y": 2, "x": 1})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_canonical_bytes_refuses_non_finite(bad: float) -> None:
    with pytest.raises(EncodingError, match="non-finite"):
        crypto.canonical_bytes({"v": [bad]})


def test_canonical_bytes_refuses_non_string_keys_and_objects() -> None:
    with pytest.raises(EncodingError, match="non-string key"):
        crypto.canonical_bytes({1: "x"})
    with pytest.raises(EncodingError, match="type object"):
        crypto.canonical_bytes({"v": object()})


@settings(deadline=None, max_examples=150)
@given(json_values)
def test_canonical_bytes_is_deterministic(obj: object) -> None:
    assert crypto.canonical_bytes(obj) == crypto.canonical_bytes(obj)


def test_canonical_bytes_same_in_another_process() -> None:
    obj = {"height": 7, "w": [0.1, 1e-30, 3.0], "k": b"\x01\x02", "s": "pot"}
    code = (
        "import sys; from pot_cli.crypto import canonical_bytes; "
        "sys.stdout.buffer.write(canonical_bytes({'height': 7, 'w': [0.1, 1e-30, 3.0], "
        "'k': b'\\x01\\x02', 's': 'pot'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True).stdout
    assert out == crypto.canonical_bytes(obj)


def test_sign_and_verify_round_trip() -> None:
    body = {"payload_hash": crypto.sha256_hex(b"g"), "n": 3}
    sig = IDENTITY.sign_message("miner/submit", "pot-test", 5, body)
    assert crypto.verify_signed(IDENTITY.public_key, sig, "miner/submit", "pot-test", 5, body)


@pytest.mark.parametrize(
    ("domain", "chain", "height", "body"),
    [
        ("miner/other", "pot-test", 5, {"n": 3}),
        ("miner/submit", "pot-main", 5, {"n": 3}),
        ("miner/submit", "pot-test", 6, {"n": 3}),
        ("miner/submit", "pot-test", 5, {"n": 4}),
    ],
)
def test_signature_bound_to_domain_chain_height_body(
    domain: str, chain: str, height: int, body: dict[str, int]
) -> None:
    sig = IDENTITY.sign_message("miner/submit", "pot-test", 5, {"n": 3})
    assert not crypto.verify_signed(IDENTITY.public_key, sig, domain, chain, height, body)


def test_signature_by_other_key_fails() -> None:
    other = crypto.Identity.from_seed(b"other")
    sig = other.sign(b"message")
    assert not crypto.verify(IDENTITY.public_key, b"message", sig)


@settings(deadline=None, max_examples=200)
@given(st.binary(min_size=1, max_size=200), st.data())
def test_any_flipped_byte_fails_verification(message: bytes, data: st.DataObject) -> None:
    sig = IDENTITY.sign(message)
    target = data.draw(st.sampled_from(["message", "signature", "public_key"]))
    blob = {"message": message, "signature": sig, "public_key": IDENTITY.public_key}[target]
    index = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    tampered = bytearray(blob)
    tampered[index] ^= flip
    args = {"message": message, "signature": sig, "public_key": IDENTITY.public_key}
    args[target] = bytes(tampered)
    assert not crypto.verify(args["public_key"], args["message"], args["signature"])


@pytest.mark.parametrize(
    ("pub", "sig"),
    [(b"", b""), (b"\x00" * 32, b"\x00" * 64), (b"\x01" * 31, b"\x00" * 64), (b"\x00" * 32, b"x")],
)
def test_verify_never_raises_on_garbage(pub: bytes, sig: bytes) -> None:
    assert crypto.verify(pub, b"m", sig) is False


def test_address_format_and_checksum() -> None:
    addr = IDENTITY.address
    assert addr.startswith("pot1") and len(addr) == crypto.ADDRESS_LENGTH
    assert crypto.is_valid_address(addr)
    assert crypto.address_from_public_key(IDENTITY.public_key) == addr
    typo = addr[:10] + ("0" if addr[10] != "0" else "1") + addr[11:]
    assert not crypto.is_valid_address(typo)
    assert not crypto.is_valid_address(addr.upper())
    assert not crypto.is_valid_address(123)


def test_identity_repr_hides_private_key() -> None:
    text = repr(IDENTITY) + str(IDENTITY)
    assert "PRIVATE" not in text and IDENTITY.address in text


def test_key_file_is_0600_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "k" / "node_key.pem"
    crypto.write_key_file(path, IDENTITY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert crypto.load_key_file(path).address == IDENTITY.address


def test_key_file_refuses_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "node_key.pem"
    crypto.write_key_file(path, IDENTITY)
    other = crypto.Identity.from_seed(b"other")
    with pytest.raises(KeyFileError, match="--force"):
        crypto.write_key_file(path, other)
    assert crypto.load_key_file(path).address == IDENTITY.address
    crypto.write_key_file(path, other, force=True)
    assert crypto.load_key_file(path).address == other.address


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o666])
def test_key_file_with_open_permissions_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node_key.pem"
    crypto.write_key_file(path, IDENTITY)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match=r"too open.*chmod 600"):
        crypto.load_key_file(path)
    assert crypto.load_key_file(path, allow_insecure=True).address == IDENTITY.address


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"\xff" * 70000,
    ],
)
def test_corrupt_key_file_gives_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "node_key.pem"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match="corrupt"):
        crypto.load_key_file(path)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="pot init"):
        crypto.load_key_file(tmp_path / "none.pem")
