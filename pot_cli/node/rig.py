"""The rig side of ``pot mine``: which devices mine, one worker per device, the thermal watchdog.

* :func:`plan_rig` turns the NVML readings and the ``--gpus`` selection into one
  :class:`WorkerSpec` per usable card (a lost card is skipped and said so; no NVML at all means
  one CPU worker). A card computes on ``cuda:<i>`` when torch sees it, else on the CPU.
* :class:`DeviceWorker` is a thread per device (the task's forward template is per thread in
  the training library: ``functional_call`` swaps a module's parameters in place). A worker whose
  gradient raises has *crashed*: its thread ends, the rig starts a fresh one on the same queue.
* :class:`Rig` splits a round's batch into contiguous shards, one per active worker, and
  combines the shard gradients weighted by shard size (the mean over the whole batch); a shard
  whose worker crashed is computed again elsewhere. Its watchdog polls every card through NVML,
  keeps the latest readings (``/summary``), pauses a worker above the temperature limit and
  resumes it at or below the resume temperature, integrates power into energy, and restarts
  crashed workers.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pot_cli.errors import PotError
from pot_cli.gpu_selection import GpuSelectionError, parse_gpu_selection, parse_gpu_spec
from pot_cli.hw import nvml
from pot_cli.hw.nvml import NvmlBackend, NvmlNotFound, Unavailable
from pot_cli.hw.readings import GpuReading, read_gpu
from pot_cli.training.gradients import Gradient, Numerics, Params, compute_gradient
from pot_cli.training.tasks import Task, load_task

GradientFn = Callable[[Task, Params, Sequence[int], Numerics], Gradient]
MAX_SHARD_ATTEMPTS = 3  # a shard whose workers crash this often fails the round
CPU = "cpu"


# ------------------------------------------------------------------------------ log records


@dataclass(frozen=True)
class LogRecord:
    """One event of the miner: ``message`` is the line a rig owner reads, ``event`` and
    ``fields`` the same for programs (``--json-log``)."""

    level: str  # debug, info, warning, error
    event: str
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)


Logger = Callable[[LogRecord], None]


class RigError(PotError):
    """The rig cannot produce this round's gradient (every worker paused or lost, a shard that
    keeps crashing, the deadline passed)."""


# ------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class WorkerSpec:
    """One worker: ``name`` (``gpu3`` or ``cpu``), the torch ``device`` it computes on, and the
    NVML card it stands for (None for the CPU worker)."""

    name: str
    device: str
    gpu_index: int | None = None
    card: str | None = None


@dataclass(frozen=True)
class RigPlan:
    """The workers, what a rig owner should know (``notes``) and what needs fixing
    (``warnings``: a selected card that is lost)."""

    workers: tuple[WorkerSpec, ...]
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def plan_rig(
    readings: Sequence[GpuReading] | None,
    selection: str,
    *,
    nvml_message: str | None = None,
    cuda_map: Mapping[int, int] | None = None,
    cuda_count: int = 0,
) -> RigPlan:
    """The workers for ``selection`` (``all``, ``0-3,6``…).

    ``readings`` are NVML's (None: NVML is unavailable, ``nvml_message`` says why);
    ``cuda_map`` maps NVML indices to the CUDA devices torch sees, ``cuda_count`` is how many
    there are (used only without NVML). Raises :class:`GpuSelectionError` for a selection this
    rig cannot serve and :class:`RigError` when every selected card is lost.
    """
    cuda_map = cuda_map or {}
    if readings is None:
        why = nvml_message or "NVML is unavailable"
        if parse_gpu_spec(selection) is not None:
            raise GpuSelectionError(
                f"cannot mine on GPU {selection}: {why} (use --gpus all to mine on the CPU)"
            )
        if cuda_count:
            cuda = tuple(WorkerSpec(f"cuda{i}", f"cuda:{i}") for i in range(cuda_count))
            return RigPlan(cuda, (why, "no temperature watchdog without NVML"))
        return RigPlan((WorkerSpec(CPU, CPU),), (why,))
    chosen = parse_gpu_selection(selection, [r.index for r in readings])
    if not chosen:
        return RigPlan((WorkerSpec(CPU, CPU),), ("no NVIDIA GPU found: mining on the CPU",))
    by_index = {r.index: r for r in readings}
    notes: list[str] = []
    lost: list[str] = []
    workers: list[WorkerSpec] = []
    for index in chosen:
        reading = by_index[index]
        if reading.error:
            detail = reading.error.removeprefix(f"GPU {index} is lost").strip()
            lost.append(f"GPU {index} is lost and skipped {detail}".rstrip())
            continue
        device = f"cuda:{cuda_map[index]}" if index in cuda_map else CPU
        workers.append(WorkerSpec(f"gpu{index}", device, index, reading.name))
    if not workers:
        raise RigError(f"no usable GPU among the selected ({selection}): every one is lost")
    if any(w.device == CPU for w in workers):
        notes.append(
            "torch cannot use these cards here (no CUDA): their workers compute on the CPU"
        )
    return RigPlan(tuple(workers), tuple(notes), tuple(lost))


def cuda_index_map(readings: Sequence[GpuReading]) -> dict[int, int]:
    """NVML index -> CUDA index for the cards torch can use (matched by UUID or PCI location:
    CUDA numbers fastest-first, NVML by bus). Empty without CUDA."""
    if not torch.cuda.is_available():
        return {}
    from pot_cli.hw.power import nvml_index_for_cuda

    known = [(r.index, r.uuid, r.pci_bus_id) for r in readings if not r.error]
    out: dict[int, int] = {}
    for cuda_index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(cuda_index)
        nvml_index = nvml_index_for_cuda(props, known)
        if nvml_index is not None:
            out[nvml_index] = cuda_index
    return out


def plan_shards(total: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, end)`` slices of a batch of ``total`` samples, one per worker (fewer
    when the batch is smaller), sizes differing by at most one."""
    if total < 1 or workers < 1:
        raise ValueError(f"cannot shard {total} samples over {workers} workers")
    count = min(total, workers)
    base, extra = divmod(total, count)
    out, start = [], 0
    for i in range(count):
        end = start + base + (1 if i < extra else 0)
        out.append((start, end))
        start = end
    return out


def combine_shards(parts: Sequence[tuple[Gradient, int]]) -> Gradient:
    """The mean-loss gradient of the whole batch from per-shard mean gradients and shard sizes
    (accumulated in float64, returned as CPU float32)."""
    if not parts:
        raise ValueError("no shard gradients to combine")
    if len(parts) == 1:
        return parts[0][0]
    total = sum(n for _, n in parts)
    out: Gradient = {}
    for name in parts[0][0]:
        acc = torch.zeros(parts[0][0][name].shape, dtype=torch.float64)
        for grad, n in parts:
            acc += grad[name].double() * (n / total)
        out[name] = acc.float().contiguous()
    return out


def reference_precision_for_process() -> None:
    """Turn TF32 and reduced-precision reductions off for the whole process.

    ``compute_gradient`` turns them off around each call and restores them after; the flags are
    process-wide, so with one worker thread per GPU one thread's restore would re-enable TF32
    under another's running gradient. Off for good, every save/restore pair is a no-op (the
    miner never wants them: validators re-compute in the declared precision)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False


# ------------------------------------------------------------------------------ NVML session


class RigMonitor:
    """An NVML session for the miner's life (the planner and the watchdog read through it)."""

    def __init__(self, backend: NvmlBackend) -> None:
        self.backend = backend
        self.message: str | None = None
        self._open = False
        self._lock = threading.Lock()

    def open(self) -> list[GpuReading] | None:
        """Start NVML and read every card; None (and ``message``) when NVML cannot start."""
        try:
            nvml.start(self.backend)
        except NvmlNotFound as exc:
            self.message = str(exc)
            return None
        self._open = True
        count = nvml.query(self.backend.device_count)
        if isinstance(count, Unavailable):
            self.message = f"cannot count GPUs: {count.reason}"
            return []
        return [self.read(i) for i in range(count)]

    def read(self, index: int) -> GpuReading:
        with self._lock:
            return read_gpu(self.backend, index)

    def close(self) -> None:
        with self._lock:
            if self._open:
                nvml.query(self.backend.shutdown)
                self._open = False


# ---------------------------------------------------------------------------------- workers


@dataclass
class _Job:
    """One shard: ``indices`` (the batch's slice from ``start``) of one round's gradient; the
    answer goes to ``results``; ``cancel`` drops it when the round was given up."""

    task_name: str
    params: Params
    start: int
    indices: Sequence[int]
    results: queue.Queue[_ShardResult]
    cancel: threading.Event
    attempt: int = 1


@dataclass(frozen=True)
class _ShardResult:
    """A shard's gradient, or the error that crashed its worker."""

    worker: str
    job: _Job
    grad: Gradient | None
    error: str | None
    seconds: float


class DeviceWorker:
    """One device's worker thread; jobs wait in its queue, which outlives a crashed thread."""

    def __init__(
        self, spec: WorkerSpec, compute: GradientFn, task_loader: Callable[[str], Task]
    ) -> None:
        self.spec = spec
        self.compute = compute
        self.task_loader = task_loader
        self.paused = False
        self.lost = False
        self.crashed = False
        self.busy = False
        self.restarts = 0
        self.shards = 0
        self.samples = 0
        self.busy_seconds = 0.0
        self.last_error: str | None = None
        self.queued = 0
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._task: Task | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def available(self) -> bool:
        """Takes new shards: not paused by the watchdog and not lost."""
        return not (self.paused or self.lost)

    @property
    def state(self) -> str:
        if self.lost:
            return "lost"
        if self.crashed:
            return "crashed"
        if self.paused:
            return "paused"
        return "busy" if self.busy else "idle"

    def start(self) -> None:
        self.crashed = False
        self._task = None  # looked up again by the new thread (its own forward template)
        self._thread = threading.Thread(
            target=self._loop, name=f"pot-worker-{self.name}", daemon=True
        )
        self._thread.start()

    def submit(self, job: _Job) -> None:
        self.queued += 1
        self._jobs.put(job)

    def stop(self, timeout: float) -> None:
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self.queued -= 1
            if job.cancel.is_set():
                continue
            self.busy = True
            started = time.perf_counter()
            try:
                if self._task is None or self._task.name != job.task_name:
                    self._task = self.task_loader(job.task_name)
                grad = self.compute(
                    self._task, job.params, job.indices, Numerics(device=self.spec.device)
                )
            except Exception as exc:  # the worker crashed: report it and end this thread
                self.busy = False
                self.crashed = True
                self.last_error = f"{type(exc).__name__}: {exc}"
                job.results.put(
                    _ShardResult(
                        self.name, job, None, self.last_error, time.perf_counter() - started
                    )
                )
                return
            seconds = time.perf_counter() - started
            self.busy = False
            self.shards += 1
            self.samples += len(job.indices)
            self.busy_seconds += seconds
            job.results.put(_ShardResult(self.name, job, grad, None, seconds))


# ------------------------------------------------------------------------------------- rig


@dataclass(frozen=True)
class ThermalLimits:
    """Pause above ``limit_c``; resume at or below ``resume_c``."""

    limit_c: int = 83
    resume_c: int = 75

    def __post_init__(self) -> None:
        if self.resume_c > self.limit_c:
            raise PotError(
                f"temperature_resume_c ({self.resume_c}) must not be above "
                f"temperature_limit_c ({self.limit_c})"
            )


@dataclass(frozen=True)
class RigGradient:
    grad: Gradient
    samples: int
    seconds: float
    workers: tuple[str, ...]

    @property
    def samples_per_s(self) -> float:
        return self.samples / max(self.seconds, 1e-9)


class Rig:
    """The workers of a plan and their watchdog (see the module docstring)."""

    def __init__(
        self,
        plan: RigPlan,
        *,
        log: Logger,
        monitor: RigMonitor | None = None,
        readings: Sequence[GpuReading] = (),
        limits: ThermalLimits = ThermalLimits(),
        poll_seconds: float = 5.0,
        price_per_kwh: float = 0.0,
        compute: GradientFn = compute_gradient,
        task_loader: Callable[[str], Task] = load_task,
    ) -> None:
        self.plan = plan
        self.log = log
        self.monitor = monitor
        self.limits = limits
        self.poll_seconds = poll_seconds
        self.price_per_kwh = price_per_kwh
        self.workers = [DeviceWorker(spec, compute, task_loader) for spec in plan.workers]
        self.readings: dict[int, GpuReading] = {r.index: r for r in readings}
        self.energy_kwh = 0.0
        self._last_poll: float | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        if any(w.spec.device.startswith("cuda") for w in self.workers):
            reference_precision_for_process()
        for w in self.workers:
            w.start()
        if self.monitor is not None and any(w.spec.gpu_index is not None for w in self.workers):
            self._watchdog = threading.Thread(target=self._watch, name="pot-watchdog", daemon=True)
            self._watchdog.start()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the watchdog and the workers (a shard in progress is left to finish on its
        daemon thread: it cannot be interrupted, and nothing waits for it)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.stop(max(0.0, deadline - time.monotonic()))
        if self._watchdog is not None:
            self._watchdog.join(max(0.1, deadline - time.monotonic()))

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception as exc:  # the watchdog must outlive a bad reading
                self.log(LogRecord("error", "watchdog-error", f"watchdog: {exc}"))

    # ------------------------------------------------------------------ watchdog

    def poll(self) -> None:
        """One watchdog pass: read every card, pause/resume on temperature, count energy,
        restart crashed workers."""
        now = time.monotonic()
        power = 0.0
        for w in self.workers:
            index = w.spec.gpu_index
            if index is None or self.monitor is None:
                continue
            reading = self.monitor.read(index)
            with self._lock:
                self.readings[index] = reading
            if reading.power_draw_w is not None:
                power += reading.power_draw_w
            self._judge(w, reading)
        with self._lock:
            if self._last_poll is not None:
                self.energy_kwh += power * (now - self._last_poll) / 3.6e6
            self._last_poll = now
        self.restart_crashed()

    def _judge(self, w: DeviceWorker, reading: GpuReading) -> None:
        if reading.error and not w.lost:
            w.lost = True
            self.log(
                LogRecord(
                    "error", "worker-lost", f"{w.name} lost: {reading.error}", {"device": w.name}
                )
            )
            return
        if not reading.error and w.lost:
            w.lost = False
            self.log(
                LogRecord("info", "worker-back", f"{w.name} answers again", {"device": w.name})
            )
        temp = reading.temperature_c
        if temp is None:
            return
        fields = {"device": w.name, "temperature_c": temp}
        if not w.paused and temp > self.limits.limit_c:
            w.paused = True
            self.log(
                LogRecord(
                    "warning",
                    "worker-paused",
                    f"{w.name} paused: {temp} °C is above the {self.limits.limit_c} °C limit",
                    fields,
                )
            )
        elif w.paused and temp <= self.limits.resume_c:
            w.paused = False
            self.log(
                LogRecord(
                    "info",
                    "worker-resumed",
                    f"{w.name} resumed: {temp} °C (resumes at {self.limits.resume_c} °C or less)",
                    fields,
                )
            )

    def restart_crashed(self) -> list[str]:
        """Start a fresh thread for every worker whose thread ended (not while closing)."""
        restarted = []
        with self._lock:
            for w in self.workers:
                if self._stop.is_set() or w.alive:
                    continue
                w.restarts += 1
                w.start()
                restarted.append(w.name)
                self.log(
                    LogRecord(
                        "warning",
                        "worker-restarted",
                        f"{w.name} worker restarted (restart {w.restarts})",
                        {"device": w.name, "restarts": w.restarts},
                    )
                )
        return restarted

    # ------------------------------------------------------------------ work

    def compute(
        self,
        task_name: str,
        params: Params,
        indices: Sequence[int],
        *,
        deadline: float | None = None,
        stop: threading.Event | None = None,
    ) -> RigGradient:
        """The batch's mean gradient over the active workers (``deadline``: ``time.monotonic``
        by which it must be done). Raises :class:`RigError`."""
        stop = stop or threading.Event()
        active = self._wait_for_workers(deadline, stop)
        started = time.perf_counter()
        results: queue.Queue[_ShardResult] = queue.Queue()
        cancel = threading.Event()
        shards = plan_shards(len(indices), len(active))
        for (a, b), w in zip(shards, active, strict=True):
            w.submit(_Job(task_name, params, a, indices[a:b], results, cancel))
        done: dict[int, tuple[Gradient, int]] = {}
        used: set[str] = set()
        try:
            while len(done) < len(shards):
                self._check_time(deadline, stop)
                try:
                    res = results.get(timeout=0.05)
                except queue.Empty:
                    continue
                if res.grad is not None:
                    done[res.job.start] = (res.grad, len(res.job.indices))
                    used.add(res.worker)
                    continue
                self._retry(res, deadline, stop)
        except BaseException:
            cancel.set()
            raise
        grad = combine_shards([done[a] for a, _ in shards])
        order = tuple(w.name for w in self.workers if w.name in used)
        return RigGradient(grad, len(indices), time.perf_counter() - started, order)

    def _retry(self, res: _ShardResult, deadline: float | None, stop: threading.Event) -> None:
        self.log(
            LogRecord(
                "error",
                "worker-crashed",
                f"{res.worker} crashed on its shard ({res.error}); restarting it",
                {"device": res.worker, "error": res.error},
            )
        )
        self.restart_crashed()
        job = res.job
        if job.attempt >= MAX_SHARD_ATTEMPTS:
            raise RigError(f"a shard failed {job.attempt} times (last: {res.worker}: {res.error})")
        candidates = self._wait_for_workers(deadline, stop)
        others = [w for w in candidates if w.name != res.worker] or candidates
        target = min(others, key=lambda w: w.queued + (1 if w.busy else 0))
        target.submit(dataclasses.replace(job, attempt=job.attempt + 1))

    def _wait_for_workers(
        self, deadline: float | None, stop: threading.Event
    ) -> list[DeviceWorker]:
        """The workers taking shards now, waiting (until the deadline) while all are paused."""
        while True:
            active = [w for w in self.workers if w.available]
            if active:
                return active
            if all(w.lost for w in self.workers):
                raise RigError("every worker's GPU is lost")
            self._check_time(deadline, stop, waiting="every worker is paused (too hot)")
            stop.wait(0.05)

    @staticmethod
    def _check_time(deadline: float | None, stop: threading.Event, waiting: str = "") -> None:
        if stop.is_set():
            raise RigError("stopping")
        if deadline is not None and time.monotonic() > deadline:
            raise RigError(
                f"the deadline passed{': ' + waiting if waiting else ' while computing'}"
            )

    # ------------------------------------------------------------------ status

    def devices(self) -> list[dict[str, Any]]:
        """Per-worker state and its card's latest readings (for ``/summary``)."""
        with self._lock:
            out = []
            for w in self.workers:
                index = w.spec.gpu_index
                reading = self.readings.get(index) if index is not None else None
                out.append(
                    {
                        "name": w.name,
                        "gpu_index": index,
                        "card": w.spec.card,
                        "device": w.spec.device,
                        "state": w.state,
                        "restarts": w.restarts,
                        "shards": w.shards,
                        "samples": w.samples,
                        "samples_per_s": (
                            round(w.samples / w.busy_seconds, 1) if w.busy_seconds > 0 else None
                        ),
                        "last_error": w.last_error,
                        "reading": reading.to_dict() if reading is not None else None,
                    }
                )
            return out

    def power_w(self) -> float | None:
        """The summed power draw of the mining cards (None: no card reports power)."""
        with self._lock:
            draws = [
                r.power_draw_w
                for w in self.workers
                if w.spec.gpu_index is not None
                and (r := self.readings.get(w.spec.gpu_index)) is not None
                and r.power_draw_w is not None
            ]
        return round(sum(draws), 3) if draws else None

    def electricity(self) -> dict[str, Any]:
        power = self.power_w()
        with self._lock:
            energy = self.energy_kwh
        return {
            "price_per_kwh": self.price_per_kwh,
            "power_w": power,
            "energy_kwh": round(energy, 6),
            "cost": round(energy * self.price_per_kwh, 6) if power is not None else None,
            "cost_per_hour": (
                round(power / 1000.0 * self.price_per_kwh, 6) if power is not None else None
            ),
        }
