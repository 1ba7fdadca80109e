"""The gradient wire codec: round trips, compression ratios, every rejection, and fuzzing."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pot_cli.training.codec import (
    Compression,
    compress_dense,
    decode_gradient,
    encode_gradient,
    max_payload_bytes,
    write_safetensors,
)
from pot_cli.training.errors import CodecError, TrainingError
from pot_cli.training.gradients import compute_gradient, torch_threads
from pot_cli.training.state import flatten, model_hash
from pot_cli.training.tasks import load_task


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Single-threaded torch: on a shared machine OpenMP spin-waits make 2 threads far slower."""
    with torch_threads(1):
        yield


TASK = load_task("digits")
PARAMS = TASK.initial_params()
MH = model_hash(PARAMS)
GRAD = compute_gradient(TASK, PARAMS, list(range(TASK.batch_size)))
MODES = [Compression("none"), Compression("int8"), Compression("topk", 0.05)]
PAYLOADS = {
    c.mode: encode_gradient(TASK, GRAD, model_hash=MH, height=5, compression=c) for c in MODES
}


def _rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    x, y = flatten(a, TASK.param_shapes), flatten(b, TASK.param_shapes)
    return float((x - y).norm() / y.norm())


@pytest.mark.parametrize("comp", MODES, ids=lambda c: c.mode)
def test_round_trip(comp: Compression) -> None:
    payload = PAYLOADS[comp.mode]
    assert payload == encode_gradient(TASK, GRAD, model_hash=MH, height=5, compression=comp)
    d = decode_gradient(
        TASK, payload, expected_model_hash=MH, expected_height=5, expected_compression=comp
    )
    assert d.header.task == "digits" and d.header.height == 5 and d.header.compression == comp
    assert list(d.gradient) == list(TASK.param_shapes)
    # decoding equals the in-memory compression (what spot checks compare against)
    assert torch.equal(d.vector, flatten(compress_dense(TASK, GRAD, comp), TASK.param_shapes))
    err = _rel(d.gradient, GRAD)
    if comp.mode == "none":
        assert err == 0.0
    elif comp.mode == "int8":
        assert err < 0.02
    else:
        assert err < 0.8 and d.support is not None and d.support.numel() == 3588
    assert len(payload) <= max_payload_bytes(TASK, comp)


def test_bytes_are_standard_safetensors() -> None:
    from safetensors.torch import load

    names = {
        "none": set(TASK.param_shapes),
        "int8": {"int8.q", "int8.scale"},
        "topk": {"topk.mask", "topk.q", "topk.scale"},
    }
    for mode, payload in PAYLOADS.items():
        assert set(load(payload)) == names[mode]
    assert torch.equal(load(PAYLOADS["none"])["fc2.bias"], GRAD["fc2.bias"])


def test_compressed_sizes() -> None:
    raw = 4 * TASK.num_params
    assert len(PAYLOADS["int8"]) <= raw / 3.9
    assert len(PAYLOADS["topk"]) <= raw / 8


def _raw_payload(header: dict[str, object], data: bytes, *, raw_json: bytes | None = None) -> bytes:
    text = raw_json if raw_json is not None else json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def _compact(header: dict[str, object]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def _split(payload: bytes) -> tuple[dict[str, object], bytes]:
    hlen = struct.unpack("<Q", payload[:8])[0]
    return json.loads(payload[8 : 8 + hlen]), payload[8 + hlen :]


def test_only_the_canonical_encoding_is_accepted() -> None:
    """One gradient, one payload: its hash is what the miner signs and the spot-check seed
    mixes, so a second byte string for the same gradient (a "free" resubmission to grind the
    sample with) must not exist. Valid safetensors files that differ from our writer's bytes
    in any way are refused as [header]."""
    header, data = _split(PAYLOADS["none"])
    assert _raw_payload(header, data, raw_json=_compact(header)) == PAYLOADS["none"]
    decode_gradient(TASK, PAYLOADS["none"])

    def refused(payload: bytes) -> None:
        assert "canonical" in _expect(payload, "header").detail

    # the same tensors stored in another order (a valid safetensors file)
    names = list(TASK.param_shapes)[::-1]
    reordered: dict[str, object] = {"__metadata__": _meta()}
    blobs, offset = [], 0
    for n in names:
        blob = GRAD[n].contiguous().numpy().tobytes()
        span = [offset, offset + len(blob)]
        reordered[n] = {"dtype": "F32", "shape": list(GRAD[n].shape), "data_offsets": span}
        blobs.append(blob)
        offset += len(blob)
    refused(_raw_payload(reordered, b"".join(blobs)))
    # spaces in the JSON, an extra metadata key, an extra field in a tensor entry
    refused(_raw_payload(header, data))
    refused(_forge(dict(GRAD), _meta(nonce="1")))
    extra = json.loads(json.dumps(header))
    extra["fc2.bias"]["note"] = "x"
    refused(_raw_payload(extra, data, raw_json=_compact(extra)))
    # a float shape, a duplicate key whose last copy is the real one
    text = _compact(header).decode()
    floated = text.replace('"shape":[10]', '"shape":[10.0]', 1)
    assert floated != text
    refused(_raw_payload(header, data, raw_json=floated.encode()))
    duplicate = '{"fc2.bias":{"dtype":"F64"},' + text[1:]
    refused(_raw_payload(header, data, raw_json=duplicate.encode()))
    # heights and fractions that parse to the same number but are not the canonical text
    for height in ("05", "+5", "٥", "５"):
        with pytest.raises(CodecError) as exc:
            decode_gradient(TASK, _forge(dict(GRAD), _meta(height=height)))
        assert exc.value.reason == "header" and not exc.value.internal
    from safetensors.torch import load

    topk = dict(load(PAYLOADS["topk"]))
    refused(_forge(topk, _meta(compression="topk", topk_fraction="5e-2")))
    assert decode_gradient(TASK, _forge(topk, _meta(compression="topk", topk_fraction="0.05")))


def test_quantized_values_are_checked_after_dequantizing() -> None:
    """Finite int8 values times finite scales can overflow to Inf; -128 is not a value the
    quantizer produces. Both are refused, for int8 and for topk."""
    from safetensors.torch import load

    for mode, meta in (
        ("int8", _meta(compression="int8", chunk="256")),
        ("topk", _meta(compression="topk", topk_fraction="0.05")),
    ):
        good = dict(load(PAYLOADS[mode]))
        assert _forge(good, meta) == PAYLOADS[mode]
        huge = {**good, f"{mode}.scale": good[f"{mode}.scale"].clone()}
        huge[f"{mode}.scale"][0] = 3e38
        q = good[f"{mode}.q"].clone()
        q[0] = 127
        huge[f"{mode}.q"] = q
        assert "overflow" in _expect(_forge(huge, meta), "non-finite").detail
        low = {**good, f"{mode}.q": good[f"{mode}.q"].clone()}
        low[f"{mode}.q"][0] = -128
        assert "-128" in _expect(_forge(low, meta), "layout").detail


def test_declared_numerics_round_trip() -> None:
    from pot_cli.training.codec import NUMERICS
    from pot_cli.training.gradients import DTYPES

    assert set(NUMERICS) == set(DTYPES)  # one list of precisions
    assert decode_gradient(TASK, PAYLOADS["none"]).header.numerics == "fp32"
    for numerics in NUMERICS:
        payload = encode_gradient(TASK, GRAD, model_hash=MH, height=5, numerics=numerics)
        assert decode_gradient(TASK, payload).header.numerics == numerics
    with pytest.raises(TrainingError, match="numerics"):
        encode_gradient(TASK, GRAD, model_hash=MH, height=5, numerics="fp8")


def _forge(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bytes:
    return write_safetensors(tensors, meta)


def _meta(**changes: str) -> dict[str, str]:
    meta = {
        "format": "pot-gradient/1",
        "task": "digits",
        "model_hash": MH,
        "height": "5",
        "compression": "none",
        "numerics": "fp32",
    }
    meta.update(changes)
    return {k: v for k, v in meta.items() if v != "-"}


def _expect(payload: bytes, reason: str, **kw: object) -> CodecError:
    with pytest.raises(CodecError) as exc:
        decode_gradient(TASK, payload, **kw)  # type: ignore[arg-type]
    assert exc.value.reason == reason, exc.value
    return exc.value


def test_rejections_each_have_a_reason() -> None:
    good = dict(GRAD)
    _expect(b"", "malformed")
    _expect(b"\xff" * 8 + b"{}", "malformed")
    _expect(struct.pack("<Q", 2) + b"[]", "malformed")
    _expect(struct.pack("<Q", 4) + b"{}", "malformed")
    _expect(PAYLOADS["none"] + b"\x00" * 300_000, "oversize")
    _expect(_forge(good, _meta(format="other")), "header")
    _expect(_forge(good, _meta(task="pycorpus")), "header")
    _expect(_forge(good, _meta(height="x")), "header")
    _expect(_forge(good, _meta(compression="zip")), "header")
    _expect(_forge(good, _meta(model_hash="-")), "header")
    _expect(_forge(good, _meta(numerics="-")), "header")
    e = _expect(_forge(good, _meta(numerics="fp8")), "header")
    assert "numerics" in e.detail
    _expect(PAYLOADS["none"], "header", expected_model_hash="0" * 64)
    _expect(PAYLOADS["none"], "header", expected_height=6)
    _expect(PAYLOADS["int8"], "header", expected_compression=Compression("none"))
    # the size limit of the expected compression is checked before anything is parsed
    _expect(PAYLOADS["none"], "oversize", expected_compression=Compression("int8"))
    _expect(_forge({**good, "extra": torch.zeros(1)}, _meta()), "layout")
    missing = dict(good)
    missing.pop("fc2.bias")
    e = _expect(_forge(missing, _meta()), "layout")
    assert "fc2.bias" in e.detail
    _expect(_forge({**good, "fc2.bias": torch.zeros(11)}, _meta()), "layout")
    _expect(_forge({**good, "fc2.bias": torch.zeros(10, dtype=torch.float64)}, _meta()), "layout")
    bad = {**good, "fc2.bias": good["fc2.bias"].clone()}
    bad["fc2.bias"][3] = float("nan")
    _expect(_forge(bad, _meta()), "non-finite")
    bad["fc2.bias"][3] = float("-inf")
    _expect(_forge(bad, _meta()), "non-finite")


def test_topk_and_int8_structural_rejections() -> None:
    from safetensors.torch import load

    t = dict(load(PAYLOADS["topk"]))
    meta = _meta(compression="topk", topk_fraction="0.05")
    assert _forge(t, meta) == PAYLOADS["topk"]  # the forging helper itself is faithful
    extra_bit = {**t, "topk.mask": t["topk.mask"].clone()}
    zero_byte = int((extra_bit["topk.mask"] == 0).nonzero()[0])
    extra_bit["topk.mask"][zero_byte] = 1  # one coordinate too many
    assert "expected 3588" in _expect(_forge(extra_bit, meta), "layout").detail
    padding = {**t, "topk.mask": t["topk.mask"].clone()}
    padding["topk.mask"][-1] |= 0x80  # 71754 params: the last byte has padding bits
    _expect(_forge(padding, meta), "layout")
    negative = {**t, "topk.scale": -t["topk.scale"]}
    _expect(_forge(negative, meta), "layout")
    _expect(_forge(t, _meta(compression="topk", topk_fraction="2")), "header")
    _expect(_forge(t, _meta(compression="topk", topk_fraction="0.5")), "layout")
    q = dict(load(PAYLOADS["int8"]))
    q["int8.scale"] = -q["int8.scale"]
    _expect(_forge(q, _meta(compression="int8", chunk="256")), "layout")
    _expect(_forge(dict(load(PAYLOADS["int8"])), _meta(compression="int8", chunk="7")), "header")


def test_header_offsets_must_tile_the_data() -> None:
    payload = bytearray(PAYLOADS["none"])
    hlen = struct.unpack("<Q", payload[:8])[0]
    header = json.loads(payload[8 : 8 + hlen])
    name = sorted(k for k in header if k != "__metadata__")[0]
    header[name]["data_offsets"] = [4, header[name]["data_offsets"][1] + 4]
    blob = json.dumps(header).encode()
    forged = struct.pack("<Q", len(blob)) + blob + bytes(payload[8 + hlen :]) + b"\x00" * 4
    _expect(forged, "layout")


def test_compression_parse() -> None:
    assert Compression.parse("topk:0.1") == Compression("topk", 0.1)
    assert Compression.parse("int8").label() == "int8"
    for bad in ("zip", "int8:0.1", "topk:x", "topk:0"):
        with pytest.raises(TrainingError):
            Compression.parse(bad)


def _decode_only_codec_errors(data: bytes) -> None:
    """Decoding refuses with one of its own checks: not even its catch-all for unexpected
    exceptions (``internal``) may fire."""
    try:
        decode_gradient(TASK, data)
    except CodecError as exc:
        assert not exc.internal, exc


@settings(deadline=None, max_examples=150)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data: bytes) -> None:
    _decode_only_codec_errors(data)


@settings(deadline=None, max_examples=200)
@given(
    st.sampled_from(sorted(PAYLOADS)),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(min_value=0),
)
def test_fuzz_mutated_payloads(mode: str, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(PAYLOADS[mode])
    hlen = struct.unpack("<Q", data[:8])[0]
    for pos, value in edits:
        # half the edits hit the header (the interesting part), half anywhere
        limit = 8 + hlen if pos % 2 else len(data)
        data[pos % limit] = value
    if cut % 3 == 0:
        data = data[: cut % len(data)]
    _decode_only_codec_errors(bytes(data))


@settings(deadline=None, max_examples=60)
@given(
    st.dictionaries(
        st.text(max_size=12),
        st.fixed_dictionaries(
            {
                "dtype": st.sampled_from(["F32", "I8", "I32", "F64", "BOOL", "x"]),
                "shape": st.lists(st.integers(-2, 300), max_size=3),
                "data_offsets": st.lists(st.integers(-5, 3000), max_size=3),
            }
        ),
        max_size=4,
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "format",
                "task",
                "height",
                "compression",
                "numerics",
                "model_hash",
                "topk_fraction",
                "chunk",
            ]
        ),
        st.text(max_size=10),
    ),
    st.binary(max_size=3000),
)
def test_fuzz_structured_headers(
    tensors: dict[str, dict[str, object]], meta: dict[str, str], body: bytes
) -> None:
    header: dict[str, object] = dict(tensors)
    header["__metadata__"] = meta
    blob = json.dumps(header).encode()
    _decode_only_codec_errors(struct.pack("<Q", len(blob)) + blob + body)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(deadline=None, max_examples=200)
@given(
    st.sampled_from(sorted(PAYLOADS)),
    st.data(),
    _JSON_VALUES,
    st.sampled_from(["replace", "delete", "add"]),
)
def test_fuzz_one_field_of_a_valid_header(
    mode: str, data: st.DataObject, value: object, action: str
) -> None:
    """Start from a valid header and change one thing (a metadata value, a tensor entry's
    dtype/shape/offsets, or an added key): the decoder gets past the JSON and meets every later
    check, and refuses with its own reason, never its catch-all; an edit that changes nothing
    decodes to the original gradient."""
    header, body = _split(PAYLOADS[mode])
    tensor_names = sorted(k for k in header if k != "__metadata__")
    section = data.draw(st.sampled_from(["__metadata__", *tensor_names]))
    entry = header[section]
    assert isinstance(entry, dict)
    key = data.draw(st.sampled_from(sorted(entry))) if action != "add" else "x-extra"
    if action == "delete":
        del entry[key]
    else:
        entry[key] = value if section != "__metadata__" or isinstance(value, str) else str(value)
    try:
        text = _compact(header)
    except ValueError:  # NaN / Inf floats are not JSON
        return
    payload = _raw_payload(header, body, raw_json=text)
    try:
        decoded = decode_gradient(TASK, payload)
    except CodecError as exc:
        assert not exc.internal, exc
        return
    # accepted: the edit changed nothing, or set a metadata value to another valid one (a
    # different height or model hash: the caller's expected_* arguments check those)
    assert payload == PAYLOADS[mode] or (section == "__metadata__" and action == "replace")
    assert torch.equal(decoded.vector, decode_gradient(TASK, PAYLOADS[mode]).vector)
    assert re.fullmatch(r"[0-9a-f]{64}", decoded.header.model_hash)


def test_one_encoding_per_gradient_in_the_data_too() -> None:
    """The tensor bytes have no free variants either: -0.0 for 0.0, a -0.0 scale, values in a
    chunk whose scale is 0, or (q/2, 2 x scale) for (q, scale) all decode to the same gradient
    and are refused; the encoder only ever writes the canonical form."""
    from safetensors.torch import load

    # dense: -0.0 is refused, and the encoder writes +0.0 for it
    header, data = _split(PAYLOADS["none"])
    flat = torch.frombuffer(bytearray(data), dtype=torch.float32).clone()
    zero = int((flat == 0).nonzero()[0])
    flat[zero] = -0.0
    negzero = _raw_payload(header, flat.numpy().tobytes(), raw_json=_compact(header))
    assert "-0.0" in _expect(negzero, "layout").detail
    signed = {n: torch.where(t == 0, torch.full_like(t, -0.0), t) for n, t in GRAD.items()}
    assert encode_gradient(TASK, signed, model_hash=MH, height=5) == PAYLOADS["none"]
    # int8: the quantizer's invariants
    meta = _meta(compression="int8", chunk="256")
    good = dict(load(PAYLOADS["int8"]))
    scale, q = good["int8.scale"], good["int8.q"]
    z = int((scale == 0).nonzero()[0])  # a chunk of exact zeros (dead units at the start)
    neg = {**good, "int8.scale": scale.clone()}
    neg["int8.scale"][z] = -0.0
    assert "-0.0" in _expect(_forge(neg, meta), "layout").detail
    filled = {**good, "int8.q": q.clone()}
    filled["int8.q"][z * 256] = 5
    assert "scale is 0" in _expect(_forge(filled, meta), "layout").detail
    c = int((scale > 0).nonzero()[0])
    chunk = slice(c * 256, (c + 1) * 256)
    halved = {**good, "int8.q": q.clone(), "int8.scale": scale.clone()}
    even = (q[chunk].to(torch.int16) // 2 * 2).to(torch.int8)  # exact halves: (q/2) x (2 scale)
    halved["int8.q"][chunk] = even // 2
    halved["int8.scale"][c] = scale[c] * 2
    assert "127" in _expect(_forge(halved, meta), "layout").detail
    # chunks of subnormal size are flushed to zero by the encoder and decode
    from pot_cli.training.state import unflatten

    vec = flatten(GRAD, TASK.param_shapes).clone()
    vec[:256] = 1e-39  # the whole first chunk: its scale max/127 would be subnormal
    tiny = unflatten(vec, TASK.param_shapes)
    payload = encode_gradient(TASK, tiny, model_hash=MH, height=5, compression=Compression("int8"))
    d = decode_gradient(TASK, payload)
    assert float(dict(load(payload))["int8.scale"][0]) == 0.0 and not bool(d.vector[:256].any())
    assert torch.equal(d.vector[256:], decode_gradient(TASK, PAYLOADS["int8"]).vector[256:])


def test_encoder_writes_only_what_the_decoder_accepts() -> None:
    for frac in (1, 0.05, 1 / 3, 0.1 + 0.2):
        comp = Compression("topk", frac)
        payload = encode_gradient(TASK, GRAD, model_hash=MH, height=0, compression=comp)
        assert decode_gradient(TASK, payload).header.compression == comp
    big = encode_gradient(TASK, GRAD, model_hash=MH, height=10**18 - 1)
    assert decode_gradient(TASK, big).header.height == 10**18 - 1
    for bad in (
        {"model_hash": MH.upper()},
        {"model_hash": "ab"},
        {"height": -1},
        {"height": 10**18},
    ):
        kwargs: dict[str, object] = {"model_hash": MH, "height": 5, **bad}
        with pytest.raises(TrainingError):
            encode_gradient(TASK, GRAD, **kwargs)  # type: ignore[arg-type]


_SPECIAL = st.sampled_from(
    [0.0, -0.0, 1e-45, -1e-45, 1e-39, 1.2e-38, 1e-30, 1.0, -1.0, 3e38, -3e38]
)


@settings(deadline=None, max_examples=60)
@given(
    st.sampled_from(["none", "int8", "topk:0.05", "topk:0.2", "topk:1"]),
    st.integers(0, 2**31 - 1),
    st.lists(st.tuples(st.integers(0, TASK.num_params - 1), _SPECIAL), max_size=40),
    st.sampled_from([0.0, 1e-40, 1e-3, 1.0, 1e20]),
)
def test_fuzz_encoder_output_always_decodes(
    mode: str, seed: int, specials: list[tuple[int, float]], magnitude: float
) -> None:
    """Whatever finite gradient a miner encodes (zeros of either sign, subnormals, huge values,
    whole chunks of tiny ones), the decoder accepts the bytes and reads back what the
    in-memory compression gives: the canonical-form checks never refuse honest output."""
    from pot_cli.training.state import unflatten

    gen = torch.Generator().manual_seed(seed)
    vec = torch.randn(TASK.num_params, generator=gen) * magnitude
    for i, v in specials:
        vec[i] = v
    grad = unflatten(vec, TASK.param_shapes)
    comp = Compression.parse(mode)
    payload = encode_gradient(TASK, grad, model_hash=MH, height=7, compression=comp)
    d = decode_gradient(TASK, payload, expected_compression=comp)
    expected = flatten(compress_dense(TASK, grad, comp), TASK.param_shapes)
    assert torch.equal(d.vector, expected)
