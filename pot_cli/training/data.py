"""The data sets tasks train on. Both ship with the machine: nothing is downloaded.

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images). The train/test split
  is a permutation derived from the split seed with SHA-256 (not numpy's generator, whose
  streams are not promised stable across versions), so every node gets the same split.
* ``pycorpus``: the top-level ``*.py`` files of the running interpreter's standard library
  (``sysconfig.get_paths()["stdlib"]``), sorted by name. Every ``validation_every``-th file is
  validation, the rest training. Samples are non-overlapping windows of ``context + 1`` bytes.
  The corpus hash (SHA-256 over every file's name, size and bytes, in order) identifies the
  corpus: a node whose Python ships a different standard library gets a different hash and can
  detect it (``Dataset.fingerprint``) before it wastes work.
"""

from __future__ import annotations

import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from pot_cli.crypto import StreamingHash, sha256
from pot_cli.training.errors import DatasetError


def seeded_permutation(n: int, seed: int, domain: str) -> list[int]:
    """A permutation of ``range(n)`` from ``seed``: sort indices by SHA-256(domain, seed, i)."""
    prefix = f"pot/perm/{domain}/{seed}/".encode()
    return sorted(range(n), key=lambda i: sha256(prefix + i.to_bytes(8, "little")))


@dataclass(frozen=True)
class Dataset:
    """Training inputs/targets and a fixed evaluation set, as CPU tensors.

    ``train_x[i]`` / ``train_y[i]`` is training sample ``i``; batches are lists of indices.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    fingerprint: str

    @property
    def train_size(self) -> int:
        return int(self.train_x.shape[0])

    @property
    def eval_size(self) -> int:
        return int(self.eval_x.shape[0])

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The training samples at ``indices`` (in that order)."""
        if len(indices) == 0:
            raise DatasetError(f"{self.name}: empty batch")
        for i in indices:
            if not 0 <= i < self.train_size:
                raise DatasetError(f"{self.name}: sample index {i} out of range")
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return self.train_x[idx], self.train_y[idx]

    def eval_batches(self, batch_size: int = 512) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, self.eval_size, batch_size):
            yield self.eval_x[start : start + batch_size], self.eval_y[start : start + batch_size]


@lru_cache(maxsize=8)
def load_digits_dataset(test_fraction: float, split_seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    n = int(labels.shape[0])
    order = seeded_permutation(n, split_seed, "digits-split")
    n_test = round(n * test_fraction)
    if not 0 < n_test < n:
        raise DatasetError(f"digits: test_fraction {test_fraction} leaves an empty split")
    test_idx = torch.tensor(sorted(order[:n_test]), dtype=torch.long)
    train_idx = torch.tensor(sorted(order[n_test:]), dtype=torch.long)
    fp = StreamingHash()
    fp.update(b"digits/v1\x00").update(images.numpy().tobytes()).update(labels.numpy().tobytes())
    fp.update(f"{test_fraction}/{split_seed}".encode())
    return Dataset(
        name="digits",
        train_x=images[train_idx],
        train_y=labels[train_idx],
        eval_x=images[test_idx],
        eval_y=labels[test_idx],
        fingerprint=fp.hexdigest(),
    )


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_files(root: Path) -> list[Path]:
    """The corpus file list: top-level ``*.py`` files of ``root``, sorted by name."""
    return sorted((p for p in root.glob("*.py") if p.is_file()), key=lambda p: p.name)


@lru_cache(maxsize=4)
def load_pycorpus_dataset(
    context: int, validation_every: int, eval_windows: int, root: str | None = None
) -> Dataset:
    base = Path(root) if root is not None else stdlib_dir()
    files = corpus_files(base)
    if len(files) < 2 * validation_every:
        raise DatasetError(
            f"pycorpus: found only {len(files)} Python files under {base}; the standard "
            "library source is needed (is this a stripped Python install?)"
        )
    fp = StreamingHash().update(b"pycorpus/v1\x00")
    train_parts: list[bytes] = []
    val_parts: list[bytes] = []
    for i, path in enumerate(files):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"pycorpus: cannot read {path}: {exc.strerror}") from None
        fp.update(path.name.encode() + b"\x00" + str(len(data)).encode() + b"\x00").update(data)
        (val_parts if i % validation_every == validation_every - 1 else train_parts).append(
            data + b"\n"
        )
    window = context + 1

    def windows(blob: bytes) -> torch.Tensor:
        n = len(blob) // window
        arr = torch.frombuffer(bytearray(blob[: n * window]), dtype=torch.uint8)
        return arr.view(n, window).long()

    train = windows(b"".join(train_parts))
    val_all = windows(b"".join(val_parts))
    if val_all.shape[0] < eval_windows:
        raise DatasetError(f"pycorpus: only {val_all.shape[0]} validation windows")
    # Evenly spaced validation windows: the whole validation split is represented, cheaply.
    step = val_all.shape[0] / eval_windows
    val = val_all[torch.tensor([int(i * step) for i in range(eval_windows)], dtype=torch.long)]
    fp.update(f"{context}/{validation_every}/{eval_windows}".encode())
    return Dataset(
        name="pycorpus",
        train_x=train[:, :-1].contiguous(),
        train_y=train[:, 1:].contiguous(),
        eval_x=val[:, :-1].contiguous(),
        eval_y=val[:, 1:].contiguous(),
        fingerprint=fp.hexdigest(),
    )
