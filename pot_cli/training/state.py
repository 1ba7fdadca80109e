"""Model state helpers: THE model hash, and flattening a gradient to one vector and back.

The model hash covers every tensor in sorted-name order with its name, dtype and shape, so two
states hash equal only when they are bit-identical tensor for tensor.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from pot_cli.crypto import StreamingHash

MODEL_HASH_DOMAIN = "pot/model/v1"


def tensors_hash(tensors: Mapping[str, torch.Tensor], domain: str = MODEL_HASH_DOMAIN) -> str:
    """Hex SHA-256 over ``domain`` and every tensor (sorted by name): name, dtype, shape, bytes."""
    h = StreamingHash().update(domain.encode() + b"\x00")
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        head = f"{name}\x00{str(t.dtype).removeprefix('torch.')}\x00{list(t.shape)}\x00"
        h.update(head.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_hash(params: Mapping[str, torch.Tensor]) -> str:
    """The hash that names a model version (parameters only: our models have no buffers)."""
    return tensors_hash(params, MODEL_HASH_DOMAIN)


def flatten(
    tensors: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]]
) -> torch.Tensor:
    """One float32 vector: the tensors of ``shapes`` (canonical order) concatenated."""
    return torch.cat([tensors[n].reshape(-1).to(torch.float32) for n in shapes])


def unflatten(
    vector: torch.Tensor, shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten`."""
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape in shapes.items():
        n = 1
        for s in shape:
            n *= s
        out[name] = vector[offset : offset + n].reshape(shape).contiguous()
        offset += n
    if offset != vector.numel():
        raise ValueError(f"vector has {vector.numel()} elements, shapes need {offset}")
    return out


def clone_params(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in params.items()}
