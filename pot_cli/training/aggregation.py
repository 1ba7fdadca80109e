"""Aggregation rules behind one interface: :func:`aggregate_flat` (flat vectors, what
verification accepts) and :func:`aggregate` (per-parameter gradients, flattened first).

* ``mean``: the seed paper's rule, ``(1/N) Σ g_i``.
* ``clipped_mean`` (the default): the mean after scaling every gradient whose norm exceeds
  ``clip_factor`` x the median norm down to that bound (norm clipping, as in centered-clipping
  aggregation): one Byzantine gradient moves the update by at most ``clip_factor · median / N``,
  and honest gradients, which almost never exceed twice the median, are averaged unchanged.
  Chosen as the default because the coordinate-wise rules and Krum cost honest quality where
  gradients are sparse or heavy-tailed: on pycorpus (150 rounds, honest) trimmed mean reached
  3.44 bits/byte and multi-Krum 3.38 against 3.10 for the mean; trimmed mean zeroes coordinates
  (rare bytes' embeddings) that only one or two miners' batches touch.
* ``trimmed_mean``: coordinate-wise, dropping the ``ceil(trim_fraction·N)``
  largest and smallest values of every coordinate (at most ``(N-1)//2``). The default fraction
  0.125 drops one value per side at N=8: verification removes what it catches first, so the
  rule only has to absorb what slips through, and a heavier trim costs honest quality (digits,
  80 rounds: 0.953 accuracy at 0.125 vs 0.933 at 0.25, mean 0.955).
* ``median``: coordinate-wise median (the mean of the two middle values when N is even).
* ``multi_krum``: Krum scores (sum of squared distances to the ``N-f-2`` nearest others), the
  ``m = N-f`` lowest-scoring gradients averaged.

Determinism (every validator must derive the bit-identical model): gradients are taken in
sorted-address order, on the CPU in float32; the combining arithmetic is element-wise (sums
are accumulated row by row, never by a multi-threaded reduction) and an element-wise
min/max sorting network (exact).
Multi-Krum's distances need reductions: they are computed in float64 and rounded to 9
significant digits before ranking, ties broken by address, so an ulp of reduction-order noise
cannot change which gradients are selected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from pot_cli.training.errors import TrainingError
from pot_cli.training.state import flatten, unflatten

RULES = ("mean", "clipped_mean", "trimmed_mean", "median", "multi_krum")
DEFAULT_RULE = "clipped_mean"

Gradient = dict[str, torch.Tensor]


@dataclass(frozen=True)
class AggregationRule:
    """A rule and its parameters. ``krum_f`` defaults to ``floor(N/4)``; ``krum_m`` to ``N-f``."""

    name: str = DEFAULT_RULE
    trim_fraction: float = 0.125
    clip_factor: float = 2.0
    krum_f: int | None = None
    krum_m: int | None = None

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise TrainingError(
                f"unknown aggregation rule {self.name!r} (use one of {', '.join(RULES)})"
            )
        if not 0.0 <= self.trim_fraction < 0.5:
            raise TrainingError(f"trim fraction must be in [0, 0.5), got {self.trim_fraction}")

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "trim_fraction": self.trim_fraction,
            "clip_factor": self.clip_factor,
            "krum_f": self.krum_f,
            "krum_m": self.krum_m,
        }


def _comparators(n: int) -> list[tuple[int, int]]:
    """Batcher's odd-even merge sort network for ``n`` (a power of two) inputs."""
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def sort_rows(vectors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Coordinate-wise sort of equal-length vectors (ascending), with a sorting network of
    element-wise ``minimum``/``maximum``: exact, deterministic and, for the handful of rows a
    round has, several times faster than ``torch.sort`` along a short dimension."""
    n = len(vectors)
    size = 1
    while size < n:
        size *= 2
    rows = list(vectors) + [torch.full_like(vectors[0], math.inf)] * (size - n)
    for i, j in _comparators(size):
        a, b = rows[i], rows[j]
        rows[i], rows[j] = torch.minimum(a, b), torch.maximum(a, b)
    return rows[:n]


def _norm64(v: torch.Tensor) -> float:
    """L2 norm, float64 squares (exact for float32 inputs) summed by numpy's pairwise sum."""
    a = v.detach().to(torch.float64).numpy()
    return float(np.sqrt(np.add.reduce(a * a)))


def _row_mean(rows: list[torch.Tensor]) -> torch.Tensor:
    acc = rows[0].clone()
    for r in rows[1:]:
        acc = acc + r
    return acc / float(len(rows))


def aggregate_vectors(
    rule: AggregationRule, vectors: list[torch.Tensor], keys: list[str]
) -> torch.Tensor:
    """Combine flat float32 vectors (already in sorted-key order) with ``rule``."""
    n = len(vectors)
    if n == 0:
        raise TrainingError("no gradients to aggregate")
    if rule.name == "mean" or n == 1:
        return _row_mean(vectors)
    if rule.name == "clipped_mean":
        norms = [_norm64(v) for v in vectors]
        bound = float(np.median(norms)) * rule.clip_factor
        rows = []
        for v, norm in zip(vectors, norms, strict=True):
            if norm > bound:
                # the scale is rounded to 6 significant digits: an ulp of reduction-order
                # noise in the norm cannot change the bits of the update
                v = v * float(f"{bound / norm:.6g}")
            rows.append(v)
        return _row_mean(rows)
    if rule.name in ("trimmed_mean", "median"):
        ordered = sort_rows(vectors)
        if rule.name == "median":
            mid = n // 2
            if n % 2:
                return ordered[mid].clone()
            return (ordered[mid - 1] + ordered[mid]) / 2.0
        t = min(math.ceil(rule.trim_fraction * n - 1e-9), (n - 1) // 2)
        return _row_mean([ordered[i] for i in range(t, n - t)])
    # multi-Krum
    f = rule.krum_f if rule.krum_f is not None else n // 4
    m = rule.krum_m if rule.krum_m is not None else n - f
    m = max(1, min(n, m))
    neighbours = max(1, n - f - 2)
    mat = torch.stack(vectors).to(torch.float64)
    dist = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            d = float(((mat[i] - mat[j]) ** 2).sum())
            dist[i][j] = dist[j][i] = d
    scores = []
    for i in range(n):
        others = sorted(dist[i][j] for j in range(n) if j != i)
        score = sum(others[: min(neighbours, n - 1)])
        scores.append((float(f"{score:.9g}"), keys[i], i))
    chosen = sorted(sorted(scores)[:m], key=lambda s: s[1])
    return _row_mean([vectors[i] for _, _, i in chosen])


def aggregate_flat(
    rule: AggregationRule,
    vectors: Mapping[str, torch.Tensor],
    shapes: Mapping[str, tuple[int, ...]],
) -> Gradient:
    """Combine flat gradients (address -> vector in the canonical order of ``shapes``, as
    ``verify_round`` accepts them) with ``rule``; the result is unflattened once, for
    ``optim.apply_update``."""
    keys = sorted(vectors)
    rows = [vectors[k].to("cpu", torch.float32) for k in keys]
    return unflatten(aggregate_vectors(rule, rows, keys), shapes)


def aggregate(
    rule: AggregationRule,
    gradients: Mapping[str, Mapping[str, torch.Tensor]],
    shapes: Mapping[str, tuple[int, ...]],
) -> Gradient:
    """Combine the accepted ``gradients`` (address -> gradient) into one gradient with ``rule``.

    ``shapes`` is the task's canonical parameter order (``task.param_shapes``).
    """
    return aggregate_flat(rule, {k: flatten(g, shapes) for k, g in gradients.items()}, shapes)
