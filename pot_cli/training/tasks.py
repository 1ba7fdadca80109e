"""The task registry: a task is a model, a data set, a loss, a metric, an optimizer and a batch
size, defined by a TOML file in ``pot_cli/configs/tasks/`` (``configs/tasks/`` at the repository
root links there).

File format (every key is checked; an unknown or ill-typed key is an error naming file and key)::

    [task]
    name = "digits"            # must equal the file name without .toml
    description = "..."
    dataset = "digits"         # digits | pycorpus
    metric = "accuracy"        # accuracy (higher is better) | bits_per_byte (lower is better)
    batch_size = 32            # samples per miner per round
    init_seed = 0              # seed of the initial model
    vram_need_mb = 0           # optional: 0 or absent = estimated (see Task.vram_need_mb)
    spot_check_tolerance = 0.1 # relative L2 error a recompute may differ by (calibrated)

    [model]                    # kind + architecture parameters (see models.py)
    kind = "digits_cnn"

    [data]                     # data set parameters (see data.py)

    [optimizer]
    kind = "sgd"               # sgd (momentum, weight_decay) | adam (beta1, beta2, eps)
    learning_rate = 0.05

    [bench]                    # defaults of `pot bench quality` for this task
    miners = 8
    rounds = 60
"""

from __future__ import annotations

import math
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pot_cli.training import data as data_mod
from pot_cli.training.errors import TaskConfigError
from pot_cli.training.models import MODEL_KINDS, build_architecture

METRICS: dict[str, bool] = {"accuracy": True, "bits_per_byte": False}
DATASETS = ("digits", "pycorpus")
OPTIMIZERS = ("sgd", "adam")
# Memory a GPU worker needs beyond tensors: CUDA context, cuBLAS/cuDNN workspaces, allocator
# slack. Measured contexts on recent drivers are 300-500 MiB; we take the upper end.
GPU_RUNTIME_OVERHEAD_MB = 512


def tasks_dir() -> Path:
    """Directory of the built-in task TOML files (inside the installed package)."""
    return Path(str(resources.files("pot_cli").joinpath("configs", "tasks")))


@dataclass(frozen=True)
class OptimizerSpec:
    """Which optimizer the validators apply to the aggregated gradient, with its constants."""

    kind: str
    learning_rate: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass(frozen=True)
class Task:
    """A training task. Build it with :func:`load_task`."""

    name: str
    description: str
    path: Path
    dataset_kind: str
    data_params: Mapping[str, Any]
    model_kind: str
    model_params: Mapping[str, Any]
    metric_name: str
    batch_size: int
    init_seed: int
    optimizer: OptimizerSpec
    bench_miners: int
    bench_rounds: int
    vram_override_mb: int = 0
    spot_check_tolerance: float = 0.1
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # ------------------------------------------------------------------ properties
    @property
    def learning_rate(self) -> float:
        return self.optimizer.learning_rate

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric_name]

    @property
    def template(self) -> nn.Module:
        """A module of this task's architecture, used (with explicit parameters) to run the
        forward pass; its own weights are never read. One per thread: ``functional_call``
        swaps a module's parameters in place for the duration of a call, so two threads
        sharing one module (a validator's derivation worker and its API, a rig's workers)
        could compute with each other's parameters."""
        local = self._cache.get("template")
        if local is None:
            local = self._cache.setdefault("template", threading.local())
        module: nn.Module | None = getattr(local, "module", None)
        if module is None:
            module = local.module = self.build_model(self.init_seed)
        return module

    @cached_property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter names (sorted: the canonical order everywhere) and shapes."""
        named = dict(self.template.named_parameters())
        return {name: tuple(named[name].shape) for name in sorted(named)}

    @property
    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes.values())

    # -------------------------------------------------------------------- methods
    def build_model(self, seed: int) -> nn.Module:
        """A freshly initialised model (same seed, same weights in every process)."""
        try:
            return build_architecture(self.model_kind, self.model_params, seed)
        except ValueError as exc:
            raise TaskConfigError(f"{self.path}: [model]: {exc}") from None

    def initial_params(self) -> dict[str, torch.Tensor]:
        """The model state at height 0: parameters in canonical order, CPU float32."""
        named = dict(self.build_model(self.init_seed).named_parameters())
        return {n: named[n].detach().clone().float().contiguous() for n in sorted(named)}

    def dataset(self) -> data_mod.Dataset:
        """The task's data set (cached per process)."""
        p = self.data_params
        if self.dataset_kind == "digits":
            return data_mod.load_digits_dataset(
                float(p.get("test_fraction", 0.2)), int(p.get("split_seed", 0))
            )
        return data_mod.load_pycorpus_dataset(
            int(self.model_params.get("context", 64)),
            int(p.get("validation_every", 10)),
            int(p.get("eval_windows", 256)),
        )

    @property
    def train_size(self) -> int:
        return self.dataset().train_size

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the batch (over every position for language models)."""
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]).float(), targets.reshape(-1))

    @torch.no_grad()
    def evaluate(self, params: Mapping[str, torch.Tensor]) -> float:
        """The task metric of the model ``params`` on the fixed evaluation set (CPU, fp32)."""
        from torch.func import functional_call

        ds = self.dataset()
        correct = 0
        total_nats = 0.0
        count = 0
        for x, y in ds.eval_batches():
            out = functional_call(self.template, dict(params), (x,))
            if self.metric_name == "accuracy":
                correct += int((out.argmax(dim=-1) == y).sum())
                count += int(y.numel())
            else:
                nll = F.cross_entropy(
                    out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="sum"
                )
                total_nats += float(nll)
                count += int(y.numel())
        if self.metric_name == "accuracy":
            return correct / count
        return total_nats / count / math.log(2)

    def quality_ratio(self, pot_metric: float, centralized_metric: float) -> float:
        """PoT quality relative to centralized: >= 1 means PoT is at least as good."""
        if self.higher_is_better:
            return pot_metric / centralized_metric if centralized_metric else float("nan")
        return centralized_metric / pot_metric if pot_metric else float("nan")

    def activation_bytes(self) -> int:
        """Bytes autograd saves for backward in one gradient step of ``batch_size`` samples
        (measured once, on the CPU, with saved-tensor hooks)."""
        if "activation_bytes" not in self._cache:
            from torch.func import functional_call

            total = 0

            def pack(t: torch.Tensor) -> torch.Tensor:
                nonlocal total
                total += t.numel() * t.element_size()
                return t

            ds = self.dataset()
            x, y = ds.batch(list(range(min(self.batch_size, ds.train_size))))
            params = {n: p.detach().requires_grad_() for n, p in self.template.named_parameters()}
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = self.loss(functional_call(self.template, params, (x,)), y)
            loss.backward()
            self._cache["activation_bytes"] = total
        return int(self._cache["activation_bytes"])

    @property
    def vram_need_mb(self) -> int:
        """GPU memory a worker needs for one gradient step of this task, in MiB.

        From the TOML (``vram_need_mb``) when set; otherwise estimated as weights + gradients
        (fp32) + the activations autograd saves for one batch, x2 for allocator fragmentation
        and temporaries, plus :data:`GPU_RUNTIME_OVERHEAD_MB` for the CUDA runtime. Workers do
        not hold optimizer state (validators apply the update).
        """
        if self.vram_override_mb:
            return self.vram_override_mb
        tensors = 2 * 4 * self.num_params + self.activation_bytes()
        return GPU_RUNTIME_OVERHEAD_MB + math.ceil(2 * tensors / 2**20)

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (for reports and ``--json`` output)."""
        return {
            "name": self.name,
            "dataset": self.dataset_kind,
            "model": self.model_kind,
            "num_params": self.num_params,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer.kind,
            "learning_rate": self.learning_rate,
            "metric": self.metric_name,
            "higher_is_better": self.higher_is_better,
        }


# ----------------------------------------------------------------------------- loading


class _Table:
    """Typed access to one TOML table, with errors that name file and key."""

    def __init__(self, path: Path, name: str, data: Any, allowed: set[str]) -> None:
        if not isinstance(data, dict):
            raise TaskConfigError(f"{path}: [{name}] must be a table")
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise TaskConfigError(f"{path}: [{name}] unknown key {unknown[0]!r}")
        self.path, self.name, self.data = path, name, data

    def _bad(self, key: str, what: str) -> TaskConfigError:
        return TaskConfigError(
            f"{self.path}: {self.name}.{key} must be {what}, got {self.data.get(key)!r}"
        )

    def string(self, key: str, default: str | None = None, choices: tuple[str, ...] = ()) -> str:
        value = self.data.get(key, default)
        if value is None:
            raise TaskConfigError(f"{self.path}: missing key {self.name}.{key}")
        if not isinstance(value, str) or (choices and value not in choices):
            raise self._bad(key, f"one of {list(choices)}" if choices else "a string")
        return value

    def integer(self, key: str, default: int | None = None, minimum: int = 1) -> int:
        value = self.data.get(key, default)
        if value is None:
            raise TaskConfigError(f"{self.path}: missing key {self.name}.{key}")
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self._bad(key, f"an integer >= {minimum}")
        return value

    def number(
        self, key: str, default: float | None = None, lo: float = 0.0, hi: float = math.inf
    ) -> float:
        value = self.data.get(key, default)
        if value is None:
            raise TaskConfigError(f"{self.path}: missing key {self.name}.{key}")
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or not lo <= value <= hi
        ):
            raise self._bad(key, f"a number in [{lo}, {hi}]")
        return float(value)


def task_names() -> list[str]:
    """Names of the built-in tasks, sorted."""
    return sorted(p.stem for p in tasks_dir().glob("*.toml"))


def load_task_file(path: Path) -> Task:
    """Load and validate a task definition from ``path``."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaskConfigError(f"{path}: task file not found") from None
    except OSError as exc:
        raise TaskConfigError(f"{path}: cannot read task file: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TaskConfigError(f"{path}: invalid TOML: {exc}") from None
    unknown = sorted(set(raw) - {"task", "model", "data", "optimizer", "bench"})
    if unknown:
        raise TaskConfigError(f"{path}: unknown table [{unknown[0]}]")
    for required in ("task", "model", "optimizer"):
        if required not in raw:
            raise TaskConfigError(f"{path}: missing table [{required}]")
    t = _Table(
        path,
        "task",
        raw["task"],
        {
            "name",
            "description",
            "dataset",
            "metric",
            "batch_size",
            "init_seed",
            "vram_need_mb",
            "spot_check_tolerance",
        },
    )
    name = t.string("name")
    if name != path.stem:
        raise TaskConfigError(f"{path}: task.name {name!r} must equal the file name {path.stem!r}")
    model_raw = raw["model"]
    if not isinstance(model_raw, dict):
        raise TaskConfigError(f"{path}: [model] must be a table")
    m = _Table(path, "model", model_raw, set(model_raw))
    model_kind = m.string("kind", choices=MODEL_KINDS)
    dataset_kind = t.string("dataset", choices=DATASETS)
    data_allowed = (
        {"test_fraction", "split_seed"}
        if dataset_kind == "digits"
        else {"validation_every", "eval_windows"}
    )
    d = _Table(path, "data", raw.get("data", {}), data_allowed)
    if dataset_kind == "digits":
        d.number("test_fraction", 0.2, lo=0.01, hi=0.9)
        d.integer("split_seed", 0, minimum=0)
    else:
        d.integer("validation_every", 10, minimum=2)
        d.integer("eval_windows", 256)
    o = _Table(
        path,
        "optimizer",
        raw["optimizer"],
        {"kind", "learning_rate", "momentum", "weight_decay", "beta1", "beta2", "eps"},
    )
    optimizer = OptimizerSpec(
        kind=o.string("kind", choices=OPTIMIZERS),
        learning_rate=o.number("learning_rate", lo=1e-9, hi=10.0),
        momentum=o.number("momentum", 0.0, hi=0.999),
        weight_decay=o.number("weight_decay", 0.0, hi=1.0),
        beta1=o.number("beta1", 0.9, hi=0.9999),
        beta2=o.number("beta2", 0.999, hi=0.99999),
        eps=o.number("eps", 1e-8, lo=1e-12, hi=1.0),
    )
    b = _Table(path, "bench", raw.get("bench", {}), {"miners", "rounds"})
    task = Task(
        name=name,
        description=t.string("description", ""),
        path=path,
        dataset_kind=dataset_kind,
        data_params=dict(d.data),
        model_kind=model_kind,
        model_params={k: v for k, v in model_raw.items() if k != "kind"},
        metric_name=t.string("metric", choices=tuple(METRICS)),
        batch_size=t.integer("batch_size"),
        init_seed=t.integer("init_seed", 0, minimum=0),
        optimizer=optimizer,
        bench_miners=b.integer("miners", 8),
        bench_rounds=b.integer("rounds", 50),
        vram_override_mb=t.integer("vram_need_mb", 0, minimum=0),
        spot_check_tolerance=t.number("spot_check_tolerance", 0.1, lo=1e-6, hi=1.0),
    )
    task.build_model(task.init_seed)  # architecture parameters are validated here
    return task


_LOADED: dict[str, Task] = {}


def load_task(name: str) -> Task:
    """The built-in task ``name`` (cached per process)."""
    if name in _LOADED:
        return _LOADED[name]
    path = tasks_dir() / f"{name}.toml"
    if not name or "/" in name or "\\" in name or not path.is_file():
        raise TaskConfigError(
            f"{tasks_dir()}: unknown task {name!r} (known: {', '.join(task_names()) or 'none'})"
        )
    task = load_task_file(path)
    _LOADED[name] = task
    return task
