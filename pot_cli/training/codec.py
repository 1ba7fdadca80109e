"""The gradient wire codec: safetensors bytes with a header naming task, model hash, height,
compression and the **numerics** the miner computed in (``fp32``, or ``bf16`` / ``fp16``
autocast). Never pickle: received bytes are parsed as safetensors only.

The declared numerics is part of what the miner signs (the commitment covers the payload hash):
a validator re-computes a spot-checked gradient in the same numerics, so the honest difference
it must tolerate is run-to-run noise of one precision (thread count, batch order: <= 1e-3
measured), not the gap between precisions (fp32 vs bf16: up to 0.3 on a trained digits model),
which is as large as the gap between a fresh gradient and a stale one.

Layouts (tensor names inside the safetensors file):

* ``none``: one float32 tensor per model parameter, under the parameter's name and shape.
* ``int8``: the gradient flattened in canonical order, cut into chunks of ``chunk`` values;
  ``int8.q`` (int8, one per value) and ``int8.scale`` (float32, one per chunk, ``max|x|/127``).
* ``topk``: the ``k = ceil(fraction * n)`` largest-magnitude coordinates of the flattened
  gradient. Indices as a bitmap, ``topk.mask`` (uint8, ``ceil(n/8)`` bytes, bit ``i % 8`` of
  byte ``i // 8`` set for each sent coordinate ``i``, exactly ``k`` bits set, padding bits
  zero); values in index order, int8 with per-chunk scales like ``int8``: ``topk.q`` and
  ``topk.scale``. At the default fraction 0.2 that is n/8 + 0.2 n + 0.2 n/64 bytes, ~8% of the
  raw float32 gradient (int32 indices + float32 values would need 8 bytes per coordinate and so
  ≤ 6% density for the same 1/8 budget, which costs ~5% digits accuracy: measured 0.908 at 6%
  and 0.950 at 20% against 0.955 uncompressed).

Encoding and decoding are a small, strict safetensors writer and reader of our own (the bytes
are standard safetensors: ``safetensors.torch.load`` reads them; tests check it). The format is
simple: an 8-byte little-endian header length, a JSON header, raw little-endian tensor data.
Decoding checks, in order, and refuses with :class:`CodecError` (``reason`` code in brackets):

1. payload size against the task's limit, before anything is parsed [oversize];
2. header length and JSON [malformed];
3. header metadata: format, task, model hash (64 lowercase hex digits), height (a plain
   decimal), compression, numerics [header];
4. exactly the expected tensor names, dtypes and shapes, with offsets that tile the data
   region exactly [layout];
5. the header is byte for byte the canonical one :func:`write_safetensors` produces for that
   metadata and layout [header]: one gradient has exactly one encoding, so its payload hash
   names it (no reordered keys or tensors, extra fields, duplicate keys, ``"05"`` heights or
   ``10.0`` shapes);
6. finite values [non-finite]; no -0.0 in a dense gradient; the topk bitmap has exactly k bits
   set and no padding bit; int8 values and scales exactly as the quantizer makes them (scales
   >= +0.0 and normal, every chunk's largest |q| 127, all q 0 where the scale is 0, never -128)
   [layout]: with 5, the data too has one encoding per gradient; the dequantized values finite
   [non-finite].

Tensors are built straight from their validated offsets. Nothing else escapes: any other
failure is reported as [malformed], flagged ``internal`` (a bug: fuzz tests fail on it).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pot_cli.crypto import canonical_bytes
from pot_cli.training.errors import CodecError, TrainingError
from pot_cli.training.state import flatten, unflatten
from pot_cli.training.tasks import Task

FORMAT = "pot-gradient/1"
COMPRESSIONS = ("none", "int8", "topk")
# The precisions a miner may declare; the same names as ``gradients.DTYPES`` (a test checks).
NUMERICS = ("fp32", "bf16", "fp16")
HEADER_LIMIT = 16 * 1024
INT8_CHUNK = 256
DEFAULT_TOPK_FRACTION = 0.2
_HEIGHT = re.compile(r"0|[1-9][0-9]{0,17}", re.ASCII)
_MODEL_HASH = re.compile(r"[0-9a-f]{64}", re.ASCII)  # state.model_hash: SHA-256, lowercase hex
_DTYPE_CODES = {
    torch.float32: "F32",
    torch.float64: "F64",
    torch.int8: "I8",
    torch.int32: "I32",
    torch.uint8: "U8",
}
_DTYPE_SIZES = {"F32": 4, "F64": 8, "I8": 1, "I32": 4, "U8": 1}
_TORCH_DTYPES = {"F32": torch.float32, "I8": torch.int8, "I32": torch.int32, "U8": torch.uint8}

Gradient = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Compression:
    """A compression mode; ``topk_fraction`` applies to ``topk`` only."""

    mode: str = "none"
    topk_fraction: float = DEFAULT_TOPK_FRACTION

    def __post_init__(self) -> None:
        if self.mode not in COMPRESSIONS:
            raise TrainingError(
                f"unknown compression {self.mode!r} (use one of {', '.join(COMPRESSIONS)})"
            )
        if not 0.0 < self.topk_fraction <= 1.0:
            raise TrainingError(f"topk fraction must be in (0, 1], got {self.topk_fraction}")
        # a plain float, so the header's repr() of it is the one the decoder rebuilds
        # (an int 1 would be written "1" and read back as "1.0")
        object.__setattr__(self, "topk_fraction", float(self.topk_fraction))

    @classmethod
    def parse(cls, text: str) -> Compression:
        """``none``, ``int8``, ``topk`` or ``topk:0.05``."""
        mode, _, frac = text.partition(":")
        if frac and mode != "topk":
            raise TrainingError(f"only topk takes a fraction, got {text!r}")
        try:
            return cls(mode, float(frac)) if frac else cls(mode)
        except ValueError:
            raise TrainingError(f"bad topk fraction in {text!r}") from None

    def label(self) -> str:
        return f"topk:{self.topk_fraction:g}" if self.mode == "topk" else self.mode


@dataclass(frozen=True)
class GradientHeader:
    task: str
    model_hash: str
    height: int
    compression: Compression
    numerics: str = "fp32"

    def metadata(self) -> dict[str, str]:
        meta = {
            "format": FORMAT,
            "task": self.task,
            "model_hash": self.model_hash,
            "height": str(self.height),
            "compression": self.compression.mode,
            "numerics": self.numerics,
        }
        if self.compression.mode == "topk":
            meta["topk_fraction"] = repr(self.compression.topk_fraction)
        if self.compression.mode == "int8":
            meta["chunk"] = str(INT8_CHUNK)
        return meta


@dataclass(frozen=True)
class DecodedGradient:
    header: GradientHeader
    vector: torch.Tensor  # dense, flat, canonical order, float32
    gradient: Gradient  # the same values as per-parameter views of ``vector``
    support: torch.Tensor | None = None  # topk: the flat indices sent (int64, increasing)


def topk_count(num_params: int, fraction: float) -> int:
    return max(1, min(num_params, math.ceil(fraction * num_params)))


def _layout(task: Task, compression: Compression) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Expected tensors: name -> (dtype code, shape)."""
    n = task.num_params
    if compression.mode == "none":
        return {name: ("F32", shape) for name, shape in task.param_shapes.items()}
    if compression.mode == "int8":
        return {"int8.q": ("I8", (n,)), "int8.scale": ("F32", (math.ceil(n / INT8_CHUNK),))}
    k = topk_count(n, compression.topk_fraction)
    return {
        "topk.mask": ("U8", (math.ceil(n / 8),)),
        "topk.q": ("I8", (k,)),
        "topk.scale": ("F32", (math.ceil(k / INT8_CHUNK),)),
    }


def max_payload_bytes(task: Task, compression: Compression) -> int:
    """The largest payload a well-formed submission can be (tensor bytes + header allowance)."""
    data = sum(_DTYPE_SIZES[d] * math.prod(s) for d, s in _layout(task, compression).values())
    return 8 + HEADER_LIMIT + data


# ------------------------------------------------------------------------ compression


_FLT_MIN = float(torch.finfo(torch.float32).tiny)  # smallest normal float32


def _int8_quantize(vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-chunk scale ``max|x| / 127`` and ``q = round(x / scale)``. The result is the only
    (q, scale) the decoder accepts for these values: every chunk's largest |q| is exactly 127,
    and a chunk whose scale would be subnormal (values below ~1.5e-36, where the division loses
    that guarantee) is flushed to zero: scale +0.0, q all 0."""
    n = vec.numel()
    chunks = math.ceil(n / INT8_CHUNK)
    padded = torch.zeros(chunks * INT8_CHUNK, dtype=torch.float32)
    padded[:n] = vec
    blocks = padded.view(chunks, INT8_CHUNK)
    scale = blocks.abs().amax(dim=1) / 127.0
    scale = torch.where(scale >= _FLT_MIN, scale, torch.zeros_like(scale))
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(blocks / safe.unsqueeze(1)).clamp(-127, 127)
    q = torch.where(scale.unsqueeze(1) > 0, q, torch.zeros_like(q)).to(torch.int8)
    return q.reshape(-1)[:n].contiguous(), scale.contiguous()


def _check_int8_canonical(prefix: str, q: torch.Tensor, scale: torch.Tensor) -> None:
    """Refuse (q, scale) pairs our quantizer never produces: each is a second encoding of some
    gradient (q x scale equal, bytes different), a free retry for whoever grinds the
    spot-check sample."""
    if bool(torch.signbit(scale).any()):
        raise _fail("layout", f"negative {prefix} scale (or -0.0)")
    if bool((q == -128).any()):
        raise _fail("layout", f"{prefix} value -128 is outside the quantizer's range ±127")
    chunks = scale.numel()
    padded = torch.zeros(chunks * INT8_CHUNK, dtype=torch.int16)
    padded[: q.numel()] = q.to(torch.int16).abs()
    peak = padded.view(chunks, INT8_CHUNK).amax(dim=1)
    if bool(((scale == 0) & (peak != 0)).any()):
        raise _fail("layout", f"{prefix} values in a chunk whose scale is 0")
    if bool(((scale > 0) & (scale < _FLT_MIN)).any()):
        raise _fail("layout", f"subnormal {prefix} scale (the quantizer flushes such chunks)")
    if bool(((scale > 0) & (peak != 127)).any()):
        raise _fail(
            "layout", f"a {prefix} chunk's largest |value| is not 127 (its scale is not max/127)"
        )


def _int8_dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    n = q.numel()
    return q.to(torch.float32) * scale.repeat_interleave(INT8_CHUNK)[:n]


def _topk_select(vec: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    k = topk_count(vec.numel(), fraction)
    idx = torch.topk(vec.abs(), k, sorted=False).indices
    idx = torch.sort(idx).values
    return idx.to(torch.int32).contiguous(), vec[idx].contiguous()


def _pack_mask(idx: torch.Tensor, n: int) -> torch.Tensor:
    bits = np.zeros(math.ceil(n / 8) * 8, dtype=np.uint8)
    bits[idx.to(torch.int64).numpy()] = 1
    return torch.from_numpy(np.packbits(bits, bitorder="little"))


def _unpack_mask(mask: torch.Tensor, n: int, k: int) -> torch.Tensor:
    bits = np.unpackbits(mask.numpy(), bitorder="little")
    if bits[n:].any():
        raise _fail("layout", "topk mask sets a bit past the last parameter")
    idx = np.flatnonzero(bits[:n])
    if idx.size != k:
        raise _fail("layout", f"topk mask selects {idx.size} coordinates, expected {k}")
    return torch.from_numpy(idx.astype(np.int64))


def int8_round_trip(values: torch.Tensor) -> torch.Tensor:
    """``values`` (flat float32) as a receiver decodes them after int8 quantization with
    per-chunk scales: what ``int8`` sends for the whole gradient and ``topk`` for its values."""
    return _int8_dequantize(*_int8_quantize(values))


def compress_vector(vec: torch.Tensor, compression: Compression) -> torch.Tensor:
    """What a receiver decodes (the flat vector) from the flat gradient ``vec`` sent with
    ``compression``, without the bytes. ``none`` returns ``vec`` itself."""
    if compression.mode == "int8":
        return int8_round_trip(vec)
    if compression.mode == "topk":
        idx, val = _topk_select(vec, compression.topk_fraction)
        out = torch.zeros_like(vec)
        out[idx.long()] = int8_round_trip(val)
        return out
    return vec


def compress_dense(
    task: Task, grad: Mapping[str, torch.Tensor], compression: Compression
) -> Gradient:
    """What a receiver decodes from ``grad`` sent with ``compression`` (without the bytes)."""
    vec = compress_vector(flatten(grad, task.param_shapes), compression)
    return unflatten(vec, task.param_shapes)


# --------------------------------------------------------------------------- encoding


def write_safetensors(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """Serialize to the safetensors format, deterministically: tensors laid out in sorted-name
    order, header JSON with sorted keys and no spaces, padded with spaces to 8 bytes (as the
    reference implementation does). (The ``safetensors`` library's own writer orders metadata
    keys differently from call to call, so equal gradients would not give equal bytes.)"""
    entries: list[tuple[str, str, Sequence[int], int]] = []
    blobs: list[bytes] = []
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        code = _DTYPE_CODES.get(t.dtype)
        if code is None:
            raise TrainingError(f"cannot encode tensor {name} of dtype {t.dtype}")
        blob = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        entries.append((name, code, list(t.shape), len(blob)))
        blobs.append(blob)
    text = _header_bytes(entries, metadata)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def _header_bytes(
    entries: Sequence[tuple[str, str, Sequence[int], int]], metadata: Mapping[str, str]
) -> bytes:
    """THE canonical safetensors header: ``entries`` (name, dtype code, shape, byte size) laid
    out in sorted-name order, metadata keys sorted, compact JSON (``crypto.canonical_bytes``),
    padded with spaces to a multiple of 8 bytes. The writer emits it; the reader demands it."""
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    for name, code, shape, size in sorted(entries, key=lambda e: e[0]):
        header[name] = {
            "dtype": code,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = canonical_bytes(header)  # sorted keys, compact: the same bytes on every node
    return text + b" " * (-len(text) % 8)


def encode_gradient(
    task: Task,
    grad: Mapping[str, torch.Tensor],
    *,
    model_hash: str,
    height: int,
    compression: Compression = Compression(),
    numerics: str = "fp32",
) -> bytes:
    """Serialize ``grad`` (dense, the task's parameter names) for the wire; ``numerics`` is the
    precision it was computed in (``Numerics.dtype``), declared in the header."""
    if set(grad) != set(task.param_shapes):
        raise TrainingError(f"{task.name}: gradient names do not match the model's parameters")
    if numerics not in NUMERICS:
        raise TrainingError(f"unknown numerics {numerics!r} (use one of {', '.join(NUMERICS)})")
    if not _MODEL_HASH.fullmatch(model_hash):
        raise TrainingError(f"model hash {model_hash!r} is not 64 lowercase hexadecimal digits")
    if not _HEIGHT.fullmatch(str(height)):
        raise TrainingError(f"height {height!r} must be an integer in [0, 10^18)")
    header = GradientHeader(task.name, model_hash, int(height), compression, numerics)
    tensors: dict[str, torch.Tensor]
    if compression.mode == "none":
        # + 0.0 turns -0.0 into +0.0 (IEEE), the one zero the decoder accepts
        tensors = {n: (grad[n].to(torch.float32) + 0.0).contiguous() for n in task.param_shapes}
    else:
        vec = flatten(grad, task.param_shapes)
        if compression.mode == "int8":
            q, scale = _int8_quantize(vec)
            tensors = {"int8.q": q, "int8.scale": scale}
        else:
            idx, val = _topk_select(vec, compression.topk_fraction)
            q, scale = _int8_quantize(val)
            tensors = {"topk.mask": _pack_mask(idx, vec.numel()), "topk.q": q, "topk.scale": scale}
    return write_safetensors(tensors, header.metadata())


# --------------------------------------------------------------------------- decoding


def _fail(reason: str, detail: str) -> CodecError:
    return CodecError(reason, detail)


def _parse_header(payload: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    if len(payload) < 8:
        raise _fail("malformed", f"{len(payload)} bytes is too short for safetensors")
    (hlen,) = struct.unpack("<Q", payload[:8])
    if hlen > HEADER_LIMIT:
        raise _fail("malformed", f"header of {hlen} bytes exceeds the {HEADER_LIMIT}-byte limit")
    if 8 + hlen > len(payload):
        raise _fail("malformed", "header length runs past the end of the payload")
    try:
        header = json.loads(payload[8 : 8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _fail("malformed", "header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _fail("malformed", "header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise _fail("header", "missing or invalid __metadata__")
    return header, meta


def _parse_meta(meta: Mapping[str, str]) -> GradientHeader:
    if meta.get("format") != FORMAT:
        raise _fail("header", f"format {meta.get('format')!r} is not {FORMAT!r}")
    for key in ("task", "model_hash", "height", "compression", "numerics"):
        if key not in meta:
            raise _fail("header", f"metadata lacks {key!r}")
    mode = meta["compression"]
    if mode not in COMPRESSIONS:
        raise _fail("header", f"unknown compression {mode!r}")
    if meta["numerics"] not in NUMERICS:
        raise _fail("header", f"unknown numerics {meta['numerics']!r}")
    if not _MODEL_HASH.fullmatch(meta["model_hash"]):
        raise _fail("header", "model hash is not 64 lowercase hexadecimal digits")
    height_text = meta["height"]
    if not _HEIGHT.fullmatch(height_text):
        raise _fail("header", f"height {height_text!r} is not a non-negative decimal integer")
    fraction = DEFAULT_TOPK_FRACTION
    if mode == "topk":
        try:
            fraction = float(meta.get("topk_fraction", ""))
        except ValueError:
            raise _fail("header", "topk_fraction is not a number") from None
        if not (math.isfinite(fraction) and 0.0 < fraction <= 1.0):
            raise _fail("header", f"topk_fraction {fraction} outside (0, 1]")
    if mode == "int8" and meta.get("chunk") != str(INT8_CHUNK):
        raise _fail("header", f"int8 chunk must be {INT8_CHUNK}")
    return GradientHeader(
        meta["task"],
        meta["model_hash"],
        int(height_text),
        Compression(mode, fraction),
        meta["numerics"],
    )


def _check_layout(
    header: Mapping[str, Any], expected: Mapping[str, tuple[str, tuple[int, ...]]], data_len: int
) -> None:
    names = set(header)
    if names != set(expected):
        extra = sorted(names - set(expected))
        missing = sorted(set(expected) - names)
        what = f"unexpected tensor {extra[0]!r}" if extra else f"missing tensor {missing[0]!r}"
        raise _fail("layout", what)
    spans = []
    for name, (dtype, shape) in expected.items():
        info = header[name]
        if not isinstance(info, dict):
            raise _fail("layout", f"{name}: entry is not an object")
        if info.get("dtype") != dtype:
            raise _fail("layout", f"{name}: dtype {info.get('dtype')!r}, expected {dtype}")
        got_shape = info.get("shape")
        if not isinstance(got_shape, list) or tuple(got_shape) != shape:
            raise _fail("layout", f"{name}: shape {got_shape!r}, expected {list(shape)}")
        offsets = info.get("data_offsets")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise _fail("layout", f"{name}: bad data_offsets")
        start, end = offsets
        if end - start != _DTYPE_SIZES[dtype] * math.prod(shape):
            raise _fail("layout", f"{name}: data_offsets do not match the shape")
        spans.append((start, end))
    spans.sort()
    pos = 0
    for start, end in spans:
        if start != pos:
            raise _fail("layout", "tensor data is not contiguous")
        pos = end
    if pos != data_len:
        raise _fail("layout", f"tensor data covers {pos} of {data_len} bytes")


def decode_gradient(
    task: Task,
    payload: bytes,
    *,
    expected_model_hash: str | None = None,
    expected_height: int | None = None,
    expected_compression: Compression | None = None,
) -> DecodedGradient:
    """Parse and validate a received payload for ``task``; raises only :class:`CodecError`."""
    try:
        return _decode(task, payload, expected_model_hash, expected_height, expected_compression)
    except CodecError:
        raise
    except Exception as exc:  # the codec's promise: nothing but CodecError escapes
        raise CodecError("malformed", f"{type(exc).__name__}: {exc}", internal=True) from None


def _decode(
    task: Task,
    payload: bytes,
    expected_model_hash: str | None,
    expected_height: int | None,
    expected_compression: Compression | None,
) -> DecodedGradient:
    if not isinstance(payload, bytes | bytearray):
        raise _fail("malformed", f"payload must be bytes, got {type(payload).__name__}")
    limit = max_payload_bytes(task, expected_compression or Compression("none"))
    if expected_compression is None:
        limit = max(max_payload_bytes(task, Compression(m)) for m in ("none", "int8"))
    if len(payload) > limit:
        raise _fail("oversize", f"{len(payload)} bytes exceeds the {limit}-byte limit")
    tensor_header, meta = _parse_header(bytes(payload))
    header = _parse_meta(meta)
    if header.task != task.name:
        raise _fail("header", f"task {header.task!r}, expected {task.name!r}")
    if expected_model_hash is not None and header.model_hash != expected_model_hash:
        raise _fail("header", f"model hash {header.model_hash[:12]}… is not the round's model")
    if expected_height is not None and header.height != expected_height:
        raise _fail("header", f"height {header.height}, expected {expected_height}")
    if expected_compression is not None and header.compression != expected_compression:
        raise _fail(
            "header",
            f"compression {header.compression.label()}, expected {expected_compression.label()}",
        )
    limit = max_payload_bytes(task, header.compression)
    if len(payload) > limit:
        raise _fail("oversize", f"{len(payload)} bytes exceeds the {limit}-byte limit")
    hlen = struct.unpack("<Q", payload[:8])[0]
    layout = _layout(task, header.compression)
    _check_layout(tensor_header, layout, len(payload) - 8 - hlen)
    entries = [(n, d, s, _DTYPE_SIZES[d] * math.prod(s)) for n, (d, s) in layout.items()]
    if _header_bytes(entries, header.metadata()) != payload[8 : 8 + hlen]:
        raise _fail(
            "header",
            "not the canonical encoding (sorted keys and tensors, no extra fields or keys, "
            "plain integers): one gradient has exactly one payload",
        )

    # The header is fully validated and canonical (tensors back to back in sorted-name order),
    # so the tensors are read straight from their offsets: one copy of the bytes, no
    # intermediate arrays. A dense gradient's data region *is* the flat gradient (the task's
    # parameters are in sorted-name order too).
    data = bytearray(memoryview(payload)[8 + hlen :])
    support: torch.Tensor | None = None
    n = task.num_params
    if header.compression.mode == "none":
        vec = torch.frombuffer(data, dtype=torch.float32)
        # max(|v|) is NaN or Inf exactly when some element is: one fast reduction.
        if not math.isfinite(float(vec.abs().max())):
            gradient = unflatten(vec, task.param_shapes)
            bad = next(k for k, v in gradient.items() if not bool(torch.isfinite(v).all()))
            raise _fail("non-finite", f"{bad} holds NaN or Inf")
        # -0.0 and +0.0 are the same gradient value: only +0.0 is canonical (the encoder writes it)
        if bool(((vec == 0) & torch.signbit(vec)).any()):
            raise _fail("layout", "-0.0 in the gradient (the canonical zero is +0.0)")
    else:
        tensors: dict[str, torch.Tensor] = {}
        for name, (dtype, shape) in layout.items():
            tensors[name] = torch.frombuffer(
                data,
                dtype=_TORCH_DTYPES[dtype],
                count=math.prod(shape),
                offset=tensor_header[name]["data_offsets"][0],
            ).reshape(shape)
        prefix = header.compression.mode  # "int8" or "topk"
        q, scale = tensors[f"{prefix}.q"], tensors[f"{prefix}.scale"]
        if not math.isfinite(float(scale.abs().max())):
            raise _fail("non-finite", f"{prefix}.scale holds NaN or Inf")
        _check_int8_canonical(prefix, q, scale)
        values = _int8_dequantize(q, scale)
        # finite scales can still overflow: 127 x 3e38 is +inf
        if not math.isfinite(float(values.abs().max())):
            raise _fail("non-finite", f"{prefix} values times their scales overflow float32")
        if prefix == "int8":
            vec = values
        else:
            idx = _unpack_mask(tensors["topk.mask"], n, q.numel())
            vec = torch.zeros(n, dtype=torch.float32)
            vec[idx] = values
            support = idx
    tensors = unflatten(vec, task.param_shapes)
    return DecodedGradient(header, vec, tensors, support)


# --------------------------------------------------------------------------- models

MODEL_FORMAT = "pot-model/1"


def encode_model(task: Task, params: Mapping[str, torch.Tensor]) -> bytes:
    """A model's parameters as canonical safetensors (what a validator serves by model hash):
    one F32 tensor per parameter, sorted, metadata ``{"format": "pot-model/1", "task": ...}``."""
    if set(params) != set(task.param_shapes):
        raise TrainingError(f"{task.name}: parameter names do not match the model's")
    tensors = {n: params[n].detach().to("cpu", torch.float32).contiguous() for n in params}
    return write_safetensors(tensors, {"format": MODEL_FORMAT, "task": task.name})


def decode_model(task: Task, data: bytes) -> dict[str, torch.Tensor]:
    """Parse a received model strictly (canonical header, the task's names, dtypes and shapes,
    finite values); raises only :class:`CodecError`. The caller checks the model hash."""
    try:
        if not isinstance(data, bytes | bytearray):
            raise _fail("malformed", "a model must be bytes")
        layout = {n: ("F32", tuple(s)) for n, s in task.param_shapes.items()}
        limit = 8 + HEADER_LIMIT + 4 * task.num_params
        if len(data) > limit:
            raise _fail("oversize", f"{len(data)} bytes exceeds the {limit}-byte model limit")
        tensor_header, meta = _parse_header(bytes(data))
        if meta != {"format": MODEL_FORMAT, "task": task.name}:
            raise _fail("header", f"not a {MODEL_FORMAT} model of task {task.name!r}")
        hlen = struct.unpack("<Q", data[:8])[0]
        _check_layout(tensor_header, layout, len(data) - 8 - hlen)
        entries = [(n, d, s, 4 * math.prod(s)) for n, (d, s) in layout.items()]
        if _header_bytes(entries, meta) != data[8 : 8 + hlen]:
            raise _fail("header", "not the canonical model encoding")
        vec = torch.frombuffer(bytearray(memoryview(data)[8 + hlen :]), dtype=torch.float32)
        if vec.numel() and not math.isfinite(float(vec.abs().max())):
            raise _fail("non-finite", "the model holds NaN or Inf")
        return unflatten(vec, task.param_shapes)
    except CodecError:
        raise
    except Exception as exc:
        raise CodecError("malformed", f"{type(exc).__name__}: {exc}", internal=True) from None
