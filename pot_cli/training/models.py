"""The model architectures tasks can name. Small, buffer-free (no BatchNorm: the model state is
exactly its parameters, so hashing and aggregating parameters covers everything) and initialised
deterministically from a seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class DigitsCNN(nn.Module):
    """A small CNN for 8x8 grey digits: two 3x3 convolutions, one 2x2 pool, two dense layers."""

    def __init__(self, channels: tuple[int, int], hidden: int, classes: int = 10) -> None:
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(c2 * 4 * 4, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        # The dense layers run in float32 even under autocast: confident logits (|z| ~ 20) in
        # bf16 carry ~0.1 absolute error, which made honest bf16 gradients of a trained model
        # differ from fp32 by up to 30% (10,000-submission bench); the convolutions, where the
        # compute is, stay in the autocast precision.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.relu(self.fc1(x.flatten(1).float()))
            return self.fc2(x)


class DigitsMLP(nn.Module):
    """A plain multilayer perceptron over the 64 pixels."""

    def __init__(self, hidden: int, classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError("d_model must be a multiple of heads")
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        shape = (b, t, self.heads, d // self.heads)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, d_model: int, heads: int, d_ff: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ff2(F.gelu(self.ff1(self.ln2(x))))


class ByteTransformer(nn.Module):
    """A byte-level causal transformer language model (GPT-style, pre-norm, learned positions)."""

    def __init__(self, context: int, d_model: int, layers: int, heads: int, d_ff: int) -> None:
        super().__init__()
        self.context = context
        self.tok = nn.Embedding(256, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(Block(d_model, heads, d_ff) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 256)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, mean=0.0, std=0.02)
                if name.endswith("proj.weight") or name.endswith("ff2.weight"):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * layers))
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        h = self.tok(x) + self.pos(torch.arange(t, device=x.device))
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))


def _int(params: Mapping[str, Any], key: str, default: int) -> int:
    value = params.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"model.{key} must be a positive integer, got {value!r}")
    return value


def build_architecture(kind: str, params: Mapping[str, Any], seed: int) -> nn.Module:
    """Build a model of ``kind`` with ``params`` (the task's ``[model]`` table), initialised from
    ``seed`` (same seed, same weights, in every process)."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model: nn.Module
        if kind == "digits_cnn":
            channels = params.get("channels", [16, 32])
            if (
                not isinstance(channels, list)
                or len(channels) != 2
                or not all(isinstance(c, int) and c > 0 for c in channels)
            ):
                raise ValueError(f"model.channels must be two positive integers, got {channels!r}")
            model = DigitsCNN((channels[0], channels[1]), _int(params, "hidden", 128))
        elif kind == "digits_mlp":
            model = DigitsMLP(_int(params, "hidden", 128))
        elif kind == "byte_transformer":
            model = ByteTransformer(
                context=_int(params, "context", 64),
                d_model=_int(params, "d_model", 64),
                layers=_int(params, "layers", 2),
                heads=_int(params, "heads", 4),
                d_ff=_int(params, "d_ff", 256),
            )
        else:
            raise ValueError(f"unknown model kind {kind!r}")
    finally:
        torch.random.set_rng_state(gen_state)
    return model.float()


MODEL_KINDS = ("digits_cnn", "digits_mlp", "byte_transformer")
