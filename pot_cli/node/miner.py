"""``pot mine``'s round loop: read the round, fetch the model by hash, compute the assigned
gradient on the rig, encode, sign, submit to every validator, and report each verdict once its
block commits.

Rules it keeps (and why):

* **The model is verified, never trusted.** A downloaded model must decode strictly and hash to
  the round's model hash; otherwise the next validator is asked. Models are cached by hash, so
  a model is downloaded once.
* **Every validator gets the submission** (a primary that withholds one is caught only if the
  backups hold it); unreachable ones are retried with the same bytes until the deadline.
* **A round is submitted at most once**, across restarts too: the height is written to
  ``<home>/miner-state.json`` (atomically) *before* the first byte is sent, because a second,
  different payload for a height gets both refused as duplicates.
* **A round it cannot make is skipped, and said so** (wrong task, a compression the network
  does not take, not enough time left for the measured work, no verifiable model, every worker
  paused): no work is wasted on a submission that would be refused as late.
* **Verdicts come with the block**: after the round moves past ``h`` the miner reads block ``h``
  and prints one line for it (accepted / rejected / slashed, reward, samples/s, devices).

:func:`run_miner` wires it together (NVML session, rig plan, status API, workers, loop) for the
CLI; a Byzantine test miner passes a :data:`Forger` (built by the CLI from ``pot_cli.sim``,
which nothing here imports).
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pot_cli.config import PotConfig
from pot_cli.crypto import Identity
from pot_cli.errors import ConfigError, PotError
from pot_cli.hw.nvml import NvmlBackend
from pot_cli.node.api_models import BlockOut, RoundOut, SubmitOut
from pot_cli.node.client import ApiError, Backoff, FailoverClient, Unreachable, ValidatorClient
from pot_cli.node.miner_api import MinerStatus, StatusServer, to_units
from pot_cli.node.rig import (
    Logger,
    LogRecord,
    Rig,
    RigMonitor,
    RigPlan,
    ThermalLimits,
    cuda_index_map,
    plan_rig,
)
from pot_cli.protocol.commitments import sign_commitment
from pot_cli.training.assignment import assign_batch
from pot_cli.training.codec import CodecError, Compression, decode_model, encode_gradient
from pot_cli.training.errors import TrainingError
from pot_cli.training.gradients import Params
from pot_cli.training.state import model_hash
from pot_cli.training.tasks import Task, load_task

T = TypeVar("T")
STATE_FILE = "miner-state.json"
SAFETY_MARGIN_S = 0.15  # kept free before the deadline for the submission to arrive
EWMA = 0.3  # weight of the newest measurement in the time estimates
MODELS_KEPT = 8  # models cached by hash (a stale-model attack looks 5 rounds back)


class RoundSkipped(PotError):
    """This round is not worth (or not possible) doing; the message says why."""


class ModelUnavailable(RoundSkipped):
    """No validator served a model that decodes and hashes to the round's model hash."""


class ModelRefused(PotError):
    """A served model does not decode, or hashes to something else."""


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class MinerSettings:
    """Everything ``pot mine`` takes from the config and its options."""

    chain_id: str
    validators: tuple[str, ...]
    task: str
    home: Path
    name: str = "pot-miner"
    compression: str = "auto"
    topk_fraction: float = 0.2
    request_timeout_s: float = 10.0
    gpus: str = "all"
    api_listen: str = "127.0.0.1:4067"
    price_per_kwh: float = 0.15
    limits: ThermalLimits = field(default_factory=ThermalLimits)
    watchdog_seconds: float = 5.0
    rounds: int = 0  # stop after this many rounds submitted or skipped (0: never)
    log_level: str = "info"
    power_limit_w: int = 0

    @property
    def state_path(self) -> Path:
        return self.home / STATE_FILE

    @classmethod
    def from_config(cls, cfg: PotConfig, home: Path, **overrides: Any) -> MinerSettings:
        m = cfg.miner
        if m.temperature_resume_c > m.temperature_limit_c:
            raise ConfigError(
                f"[miner] temperature_resume_c ({m.temperature_resume_c}) must not be above "
                f"temperature_limit_c ({m.temperature_limit_c})"
            )
        base = cls(
            chain_id=cfg.node.chain_id,
            validators=tuple(cfg.network.validators),
            task=m.task,
            home=home,
            name=cfg.node.name,
            compression=m.compression,
            topk_fraction=m.topk_fraction,
            request_timeout_s=cfg.network.request_timeout_seconds,
            gpus=m.gpus,
            api_listen=m.api_listen,
            price_per_kwh=m.electricity_price_per_kwh,
            limits=ThermalLimits(m.temperature_limit_c, m.temperature_resume_c),
            log_level=cfg.node.log_level,
            power_limit_w=m.power_limit_watts,
        )
        return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


# ------------------------------------------------------------------------ pure decisions


def resolve_compression(setting: str, topk_fraction: float, network_label: str) -> Compression:
    """The compression to encode with: the network's (``auto``), or the configured one when it
    is exactly what the network takes; else :class:`RoundSkipped` (no work is done)."""
    try:
        network = Compression.parse(network_label)
    except TrainingError as exc:
        raise RoundSkipped(f"the network asks for an unknown compression: {exc}") from None
    if setting == "auto":
        return network
    mine = Compression(setting, topk_fraction) if setting == "topk" else Compression(setting)
    if mine.label() != network.label():
        raise RoundSkipped(
            f'[miner] compression is "{mine.label()}" but the network takes '
            f'"{network.label()}": round refused (set compression = "auto" to follow it)'
        )
    return network


def skip_reason(remaining_s: float, expected_s: float | None, margin_s: float) -> str | None:
    """Why a round with ``remaining_s`` left should be skipped when the work is expected to take
    ``expected_s`` (None: not measured yet, try), or None to go ahead."""
    if remaining_s <= margin_s:
        return f"only {max(remaining_s, 0.0):.2f} s left before the deadline"
    if expected_s is not None and expected_s + margin_s > remaining_s:
        return f"{remaining_s:.2f} s left, the work takes ~{expected_s:.2f} s"
    return None


def verify_model(task: Task, data: bytes, expected_hash: str) -> dict[str, Any]:
    """Decode a served model strictly and check it hashes to ``expected_hash``."""
    try:
        params = decode_model(task, data)
    except CodecError as exc:
        raise ModelRefused(f"undecodable model: {exc}") from None
    got = model_hash(params)
    if got != expected_hash:
        raise ModelRefused(f"the model hashes to {got[:16]}…, not {expected_hash[:16]}…")
    return params


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^\"'()]+)")


def describe_failure(exc: PotError) -> str:
    """One short line for a failed request: ``http://host:port: connection refused`` rather
    than the HTTP library's nested retry report."""
    text = str(exc)
    if not isinstance(exc, Unreachable):
        return text
    url, _, rest = text.partition(": ")
    m = _ERRNO.search(rest)
    if m:
        reason = m.group(1).strip().lower()
    elif "timed out" in rest.lower():
        reason = "timed out"
    else:
        reason = rest.partition(":")[0] or "unreachable"
    return f"{url}: {reason}"


def verdict_line(
    height: int,
    kind: str,
    code: str | None,
    net: int,
    samples_per_s: float | None,
    devices: Sequence[str],
) -> str:
    """``round 12  accepted  +0.2000 POT  5,120 samples/s  (gpu0 gpu1 gpu2)``."""
    what = kind if not code or kind == "accepted" else f"{kind} ({code})"
    parts = [f"round {height}", what, f"{to_units(net):+.4f} POT"]
    if samples_per_s is not None:
        parts.append(f"{samples_per_s:,.0f} samples/s")
    if devices:
        parts.append(f"({' '.join(devices)})")
    return "  ".join(parts)


# ------------------------------------------------------------------------- state file


def load_last_submitted(path: Path, chain_id: str, address: str) -> int:
    """The last height this miner submitted on this chain (0: none or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    if not isinstance(data, dict):
        return 0
    if data.get("chain_id") != chain_id or data.get("address") != address:
        return 0
    height = data.get("last_submitted_height")
    return height if isinstance(height, int) and height >= 0 else 0


def save_last_submitted(path: Path, chain_id: str, address: str, height: int) -> None:
    """Write the state file atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    body = {"chain_id": chain_id, "address": address, "last_submitted_height": height}
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(body, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ models


class ModelCache:
    """Verified models by hash, the newest ``keep`` (oldest first in :meth:`history`)."""

    def __init__(self, keep: int = MODELS_KEPT) -> None:
        self.keep = keep
        self._models: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.downloads = 0

    def __contains__(self, model_hash: str) -> bool:
        return model_hash in self._models

    def history(self) -> list[Params]:
        return list(self._models.values())

    def get(
        self, client: FailoverClient, task: Task, wanted: str, log: Logger, timeout: float
    ) -> Params:
        """The model ``wanted``: cached, else from the first validator serving it verifiably."""
        if wanted in self._models:
            return self._models[wanted]
        n = len(client.clients)
        order = [client.clients[(client.current + i) % n] for i in range(n)]
        problems = []
        for c in order:
            try:
                data = c.model(wanted, timeout=timeout)
                self.downloads += 1
                params = verify_model(task, data, wanted)
            except ModelRefused as exc:
                log(
                    LogRecord(
                        "warning",
                        "model-refused",
                        f"{c.base_url} served a bad model for {wanted[:12]}: {exc}; "
                        "trying another validator",
                        {"validator": c.base_url},
                    )
                )
                problems.append(f"{c.base_url}: {exc}")
                continue
            except PotError as exc:
                problems.append(describe_failure(exc))
                continue
            self._models[wanted] = params
            while len(self._models) > self.keep:
                self._models.popitem(last=False)
            return params
        raise ModelUnavailable(
            f"no validator served model {wanted[:12]} verifiably ({'; '.join(problems)})"
        )


# ------------------------------------------------------------------------------ forging


@dataclass(frozen=True)
class ForgeRequest:
    """What a Byzantine test miner knows when it forges its round's payload."""

    task: Task
    height: int
    model_hash: str
    params: Params
    history: Sequence[Params]  # models seen, oldest first, the current one last
    compression: Compression
    indices: Sequence[int]
    round_seed: bytes
    address: str


Forger = Callable[[ForgeRequest], bytes]


# --------------------------------------------------------------------------------- loop


@dataclass(frozen=True)
class _Pending:
    """A submitted round awaiting its block."""

    samples_per_s: float | None
    devices: tuple[str, ...]


@dataclass(frozen=True)
class SubmitResult:
    """How the validators answered one submission (by validator URL)."""

    kept: int
    refused: dict[str, ApiError]
    unreachable: dict[str, PotError]

    def describe(self) -> str:
        """``ejected from 4 validators (the miner was ejected…); 1 unreachable``."""
        by_code: dict[str, list[ApiError]] = {}
        for exc in self.refused.values():
            by_code.setdefault(exc.code, []).append(exc)
        parts = [f"{code} from {len(errs)} ({errs[0].detail})" for code, errs in by_code.items()]
        if self.unreachable:
            first = describe_failure(next(iter(self.unreachable.values())))
            parts.append(f"{len(self.unreachable)} unreachable ({first})")
        return "; ".join(parts)


class Miner:
    """The round loop (see the module docstring). :meth:`run` returns when ``stop`` is set or
    ``settings.rounds`` rounds were done (and their verdicts read, or given up on)."""

    def __init__(
        self,
        settings: MinerSettings,
        identity: Identity,
        *,
        client: FailoverClient,
        rig: Rig,
        status: MinerStatus,
        log: Logger,
        stop: threading.Event,
        forger: Forger | None = None,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.address = identity.address
        self.client = client
        self.rig = rig
        self.status = status
        self.log = log
        self.stop = stop
        self.forger = forger
        self.models = ModelCache()
        self.backoff = Backoff(0.5, 15.0)
        self.last_submitted = load_last_submitted(
            settings.state_path, settings.chain_id, self.address
        )
        self.last_done = self.last_submitted
        self.rounds_done = 0
        self.pending: dict[int, _Pending] = {}
        self.finished_at: float | None = None
        self.compute_s: float | None = None
        self.download_s: float | None = None
        self.submit_s: float | None = None
        self._last_warning = ""
        self.ejected = False

    # ------------------------------------------------------------------ helpers

    def _emit(self, level: str, event: str, message: str, **fields: Any) -> None:
        if level in ("warning", "error"):
            self.status.set_error(message)
        self.log(LogRecord(level, event, message, fields))

    def _transient(self, message: str) -> None:
        """A retryable problem: say it (not twice in a row), wait the backoff."""
        delay = self.backoff.next()
        self.status.set_error(message)
        if message != self._last_warning:
            self.log(LogRecord("warning", "retry", f"{message}; retrying in {delay:g} s"))
            self._last_warning = message
        self.stop.wait(delay)

    def _ok(self) -> None:
        self.backoff.reset()
        self._last_warning = ""

    def _any(self, fn: Callable[[ValidatorClient], T]) -> T:
        """``fn`` on the current validator, else on each other one (also past a 4xx: a
        validator that is behind answers 404 for a block the others have)."""
        try:
            return self.client.call(fn)
        except ApiError as first:
            for c in self.client.clients:
                try:
                    return fn(c)
                except PotError:
                    continue
            raise first

    @staticmethod
    def _ewma(old: float | None, new: float) -> float:
        return new if old is None else (1 - EWMA) * old + EWMA * new

    # ------------------------------------------------------------------ run

    def run(self) -> None:
        if not self._check_chain():
            return
        if self.last_submitted:
            self._emit(
                "info", "resume", f"resuming after round {self.last_submitted} (already submitted)"
            )
        while not self.stop.is_set() and not self._finished():
            got = self._fetch_round()
            if got is None:
                return
            rnd, fetched_at = got
            deadline = fetched_at + rnd.deadline_in_ms / 1000.0
            self.status.set_round(
                height=rnd.height,
                phase=rnd.phase,
                model_hash=rnd.model_hash,
                compression=rnd.compression,
                deadline_in_ms=rnd.deadline_in_ms,
                round_ms=rnd.round_ms,
            )
            self._settle(rnd.height)
            if self._limit_reached() or rnd.height <= self.last_done or rnd.phase != "open":
                self.stop.wait(self._poll_delay(rnd, deadline))
                continue
            self._play(rnd, deadline)
            self.last_done = rnd.height
            self.rounds_done += 1
            if self._limit_reached():
                grace = max(10.0, 3 * rnd.round_ms / 1000.0)
                self.finished_at = max(deadline, time.monotonic()) + grace

    def _limit_reached(self) -> bool:
        return self.settings.rounds > 0 and self.rounds_done >= self.settings.rounds

    def _finished(self) -> bool:
        """Done: the round limit is reached and every verdict is read (or waited for enough)."""
        if not self._limit_reached():
            return False
        if not self.pending:
            return True
        if self.finished_at is not None and time.monotonic() > self.finished_at:
            missing = ", ".join(str(h) for h in sorted(self.pending))
            self._emit("warning", "verdicts-missing", f"no block yet for round {missing}: stopping")
            self.pending.clear()
            return True
        return False

    def _poll_delay(self, rnd: RoundOut, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left > 0:
            return min(left + 0.05, 2.0)
        return min(max(rnd.round_ms / 20000.0, 0.05), 0.5)

    def _check_chain(self) -> bool:
        """Wait for a validator to answer, and refuse to mine on another chain."""
        while not self.stop.is_set():
            try:
                status = self.client.call(lambda c: c.status())
            except PotError as exc:
                self._transient(f"no validator answers ({describe_failure(exc)})")
                continue
            self._ok()
            if status.chain_id != self.settings.chain_id:
                raise ConfigError(
                    f"validator {self.client.url} serves chain {status.chain_id!r}, but this "
                    f"miner's [node] chain_id is {self.settings.chain_id!r}"
                )
            self._emit(
                "info",
                "connected",
                f"connected to {self.client.url}: chain {status.chain_id}, height {status.height}",
            )
            return True
        return False

    def _fetch_round(self) -> tuple[RoundOut, float] | None:
        while not self.stop.is_set() and not self._finished():
            asked = time.monotonic()
            try:
                rnd = self.client.call(lambda c: c.round())
            except ApiError as exc:
                if exc.code != "busy":
                    self._transient(f"cannot read the round ({describe_failure(exc)})")
                else:  # between rounds: not a problem, ask again soon
                    self.stop.wait(0.2)
                continue
            except PotError as exc:
                self._transient(f"cannot read the round ({describe_failure(exc)})")
                continue
            self._ok()
            if rnd.chain_id != self.settings.chain_id:
                self._transient(f"{self.client.url} answers for chain {rnd.chain_id!r}")
                continue
            return rnd, asked
        return None

    # ------------------------------------------------------------------ one round

    def _play(self, rnd: RoundOut, deadline: float) -> None:
        h = rnd.height
        try:
            self._work(rnd, deadline)
        except PotError as exc:
            if self.stop.is_set():
                return
            # a round that cannot be done is skipped and said so; the next one is tried
            self.status.count("skipped")
            self.status.set_round(state="skipped", reason=str(exc))
            level = "info" if isinstance(exc, RoundSkipped) else "error"
            self._emit(level, "round-skipped", f"round {h}  skipped: {exc}", height=h)

    def _work(self, rnd: RoundOut, deadline: float) -> None:
        if self.ejected:
            raise RoundSkipped(
                f"{self.address} was ejected for a proven forgery and can no longer mine "
                "(pot init --force makes a new identity)"
            )
        if rnd.task != self.settings.task:
            raise RoundSkipped(
                f"the network trains {rnd.task!r}, but [miner] task is {self.settings.task!r}"
            )
        compression = resolve_compression(
            self.settings.compression, self.settings.topk_fraction, rnd.compression
        )
        task = load_task(rnd.task)
        if rnd.train_size != task.train_size:
            raise RoundSkipped(
                f"the network's {rnd.task} has {rnd.train_size} training samples, "
                f"this install has {task.train_size} (update pot)"
            )
        needs_model = rnd.model_hash not in self.models
        expected = self._expected_seconds(needs_model)
        reason = skip_reason(deadline - time.monotonic(), expected, SAFETY_MARGIN_S)
        if reason:
            raise RoundSkipped(reason)
        self.status.set_round(state="computing")
        started = time.monotonic()
        params = self.models.get(
            self.client, task, rnd.model_hash, self.log, self.settings.request_timeout_s
        )
        if needs_model:
            self.download_s = self._ewma(self.download_s, time.monotonic() - started)
        seed = bytes.fromhex(rnd.round_seed)
        indices = assign_batch(seed, self.address, rnd.train_size, rnd.batch_size)
        payload, samples_per_s, devices = self._payload(
            task, rnd, params, indices, compression, seed, deadline
        )
        left = deadline - time.monotonic()
        if left < SAFETY_MARGIN_S / 3:
            when = "after" if left < 0 else "before"
            raise RoundSkipped(f"the gradient was ready {abs(left):.2f} s {when} the deadline")
        self._submit_round(rnd, payload, deadline, samples_per_s, devices)

    def _expected_seconds(self, needs_model: bool) -> float | None:
        if self.compute_s is None:
            return None
        return (
            self.compute_s
            + ((self.download_s or 0.0) if needs_model else 0.0)
            + (self.submit_s or 0.0)
        )

    def _payload(
        self,
        task: Task,
        rnd: RoundOut,
        params: Params,
        indices: list[int],
        compression: Compression,
        seed: bytes,
        deadline: float,
    ) -> tuple[bytes, float | None, tuple[str, ...]]:
        """The signed-to-be payload: the rig's honest gradient, or the forger's bytes."""
        started = time.monotonic()
        if self.forger is not None:
            request = ForgeRequest(
                task=task,
                height=rnd.height,
                model_hash=rnd.model_hash,
                params=params,
                history=self.models.history(),
                compression=compression,
                indices=indices,
                round_seed=seed,
                address=self.address,
            )
            payload = self.forger(request)
            seconds = time.monotonic() - started
            self.compute_s = self._ewma(self.compute_s, seconds)
            self.status.set_samples_per_s(len(indices) / max(seconds, 1e-9))
            return payload, len(indices) / max(seconds, 1e-9), ("forged",)
        result = self.rig.compute(task.name, params, indices, deadline=deadline, stop=self.stop)
        payload = encode_gradient(
            task,
            result.grad,
            model_hash=rnd.model_hash,
            height=rnd.height,
            compression=compression,
            numerics="fp32",
        )
        self.compute_s = self._ewma(self.compute_s, time.monotonic() - started)
        self.status.set_samples_per_s(result.samples_per_s)
        return payload, result.samples_per_s, result.workers

    def _submit_round(
        self,
        rnd: RoundOut,
        payload: bytes,
        deadline: float,
        samples_per_s: float | None,
        devices: tuple[str, ...],
    ) -> None:
        h = rnd.height
        payload_hash, signature = sign_commitment(
            self.identity, self.settings.chain_id, h, rnd.model_hash, payload
        )
        # written before the first byte leaves: a restarted miner must not send another payload
        save_last_submitted(self.settings.state_path, self.settings.chain_id, self.address, h)
        self.last_submitted = h
        self.status.set_round(state="submitting", payload_hash=payload_hash)
        started = time.monotonic()

        def send(c: ValidatorClient) -> SubmitOut:
            return c.submit(
                chain_id=self.settings.chain_id,
                public_key=self.identity.public_key,
                height=h,
                model_hash=rnd.model_hash,
                payload_hash=payload_hash,
                signature=signature,
                payload=payload,
                timeout=max(0.5, min(self.settings.request_timeout_s, deadline - time.monotonic())),
            )

        result = self._submit_everywhere(send, deadline)
        self.submit_s = self._ewma(self.submit_s, time.monotonic() - started)
        total = len(self.client.clients)
        if any(e.code == "ejected" for e in result.refused.values()):
            self.ejected = True
        if result.kept == 0:
            self.status.count("refused")
            self.status.set_round(state="refused")
            self._emit(
                "error",
                "round-refused",
                f"round {h}  not taken: {result.describe()}",
                height=h,
                codes=sorted({e.code for e in result.refused.values()}),
            )
            return
        if result.refused or result.unreachable:
            self._emit(
                "warning",
                "submit-partial",
                f"round {h}: kept by {result.kept} of {total}; {result.describe()}",
                height=h,
                codes=sorted({e.code for e in result.refused.values()}),
            )
        self.status.count("submitted")
        self.status.set_round(state="submitted", kept_by=result.kept)
        self.pending[h] = _Pending(samples_per_s, devices)
        self._emit(
            "debug",
            "round-submitted",
            f"round {h}  submitted to {result.kept}/{total} validators",
            height=h,
            kept_by=result.kept,
        )

    def _submit_everywhere(
        self, send: Callable[[ValidatorClient], SubmitOut], deadline: float
    ) -> SubmitResult:
        """Send to every validator at once; retry the unreachable (and 5xx) ones, with the
        same bytes, until the deadline."""
        todo = list(self.client.clients)
        kept = 0
        refused: dict[str, ApiError] = {}
        unreachable: dict[str, PotError] = {}
        backoff = Backoff(0.1, 1.0)
        while todo:
            retry = []
            for c, out in zip(todo, send_to_all(send, todo), strict=True):
                if isinstance(out, SubmitOut) or (
                    isinstance(out, ApiError) and out.code == "already-kept"
                ):  # already-kept: an earlier try arrived although its answer did not
                    kept += 1
                    unreachable.pop(c.base_url, None)
                elif isinstance(out, ApiError) and out.status < 500:
                    refused[c.base_url] = out
                    unreachable.pop(c.base_url, None)
                else:
                    unreachable[c.base_url] = out
                    retry.append(c)
            todo = retry
            delay = backoff.next()
            if not todo or self.stop.is_set() or time.monotonic() + delay > deadline:
                break
            self.stop.wait(delay)
        return SubmitResult(kept, refused, unreachable)

    # ------------------------------------------------------------------ verdicts

    def _settle(self, current_height: int) -> None:
        """Read the block of every submitted round below ``current_height``; one line each."""
        ready = [h for h in sorted(self.pending) if h < current_height]
        if not ready:
            return
        for h in ready:

            def fetch(c: ValidatorClient, height: int = h) -> BlockOut:
                return c.block(height)

            try:
                block = self._any(fetch)
            except PotError as exc:
                self._emit("debug", "block-unavailable", f"block {h} not available yet: {exc}")
                return
            self._report(block, self.pending.pop(h))
        self._refresh_balance()

    def _report(self, block: BlockOut, pending: _Pending) -> None:
        mine = [v for v in block.verdicts if v.miner == self.address]
        h = block.height
        if not mine:
            self.status.count("missing")
            self._emit(
                "warning",
                "round-missing",
                f"round {h}  not in the block (the submission missed the round's set)",
                height=h,
            )
            return
        v = mine[0]
        net = v.reward - v.penalty
        self.status.add_verdict(v.kind, v.reward, v.penalty)
        line = verdict_line(h, v.kind, v.code, net, pending.samples_per_s, pending.devices)
        self.log(
            LogRecord(
                "info",  # the one line per round, whatever the verdict
                "round",
                line,
                {
                    "height": h,
                    "kind": v.kind,
                    "code": v.code,
                    "reward": v.reward,
                    "penalty": v.penalty,
                    "samples_per_s": pending.samples_per_s,
                    "devices": list(pending.devices),
                },
            )
        )
        if v.kind != "accepted":
            self.status.set_error(line)

    def _refresh_balance(self) -> None:
        try:
            account = self._any(lambda c: c.account(self.address))
        except PotError:
            return
        self.status.set_balance(account.balance, account.stake, account.ejected)
        self.ejected = self.ejected or account.ejected


def send_to_all(
    send: Callable[[ValidatorClient], SubmitOut], clients: Sequence[ValidatorClient]
) -> list[SubmitOut | PotError]:
    """``send`` to every client at once, each on a daemon thread (so a hung validator delays
    no other, and Ctrl-C never waits for one); each answer or the error it raised, in order."""
    answers: queue.Queue[tuple[int, SubmitOut | PotError]] = queue.Queue()

    def one(i: int, c: ValidatorClient) -> None:
        try:
            answers.put((i, send(c)))
        except PotError as exc:
            answers.put((i, exc))
        except Exception as exc:  # a bug must not leave the loop waiting forever
            answers.put((i, PotError(f"{c.base_url}: {type(exc).__name__}: {exc}")))

    for i, c in enumerate(clients):
        threading.Thread(target=one, args=(i, c), name="pot-submit", daemon=True).start()
    out: dict[int, SubmitOut | PotError] = {}
    while len(out) < len(clients):
        i, answer = answers.get()
        out[i] = answer
    return [out[i] for i in range(len(clients))]


# ----------------------------------------------------------------------------- wiring


def run_miner(
    settings: MinerSettings,
    identity: Identity,
    *,
    backend: NvmlBackend,
    log: Logger,
    stop: threading.Event,
    forger: Forger | None = None,
) -> None:
    """Plan the rig, start the status API and the workers, run the loop; close all on the way
    out (also on Ctrl-C). Raises :class:`PotError` for what a rig owner must fix."""
    monitor = RigMonitor(backend)
    rig: Rig | None = None
    server: StatusServer | None = None
    client: FailoverClient | None = None
    try:
        readings = monitor.open()
        plan = plan_rig(
            readings,
            settings.gpus,
            nvml_message=monitor.message,
            cuda_map=cuda_index_map(readings or []),
            cuda_count=_cuda_count() if readings is None else 0,
        )
        _log_plan(plan, log)
        if settings.power_limit_w:
            log(
                LogRecord(
                    "warning",
                    "power-limit",
                    f"[miner] power_limit_watts = {settings.power_limit_w} is not applied: "
                    f"pot reads NVML only; set it with 'nvidia-smi -pl "
                    f"{settings.power_limit_w}' (as root)",
                )
            )
        task = load_task(settings.task)
        task.dataset()  # load the data once here, not in every worker at once
        rig = Rig(
            plan,
            log=log,
            monitor=monitor if readings is not None else None,
            readings=readings or [],
            limits=settings.limits,
            poll_seconds=settings.watchdog_seconds,
            price_per_kwh=settings.price_per_kwh,
        )
        status = MinerStatus(
            address=identity.address,
            name=settings.name,
            chain_id=settings.chain_id,
            task=settings.task,
            validators=settings.validators,
            devices=rig.devices,
            electricity=rig.electricity,
        )
        server = StatusServer(status)
        url = server.start(settings.api_listen)
        log(LogRecord("info", "api", f"status API on {url} (/summary, /metrics)", {"url": url}))
        rig.start()
        client = FailoverClient(settings.validators, timeout=settings.request_timeout_s)
        log(
            LogRecord(
                "info",
                "start",
                f"mining as {identity.address} on chain {settings.chain_id}, task {settings.task}",
            )
        )
        Miner(
            settings,
            identity,
            client=client,
            rig=rig,
            status=status,
            log=log,
            stop=stop,
            forger=forger,
        ).run()
    finally:
        stop.set()
        if rig is not None:
            rig.close()
        if server is not None:
            server.stop()
        if client is not None:
            client.close()
        monitor.close()


def _log_plan(plan: RigPlan, log: Logger) -> None:
    """One line per note, warning (a lost card) and planned worker, then the summary."""
    for note in plan.notes:
        log(LogRecord("info", "rig-note", note))
    for warning in plan.warnings:
        log(LogRecord("warning", "rig-warning", warning))
    for w in plan.workers:
        card = f"  {w.card}" if w.card else ""
        fields = {"device": w.name, "gpu_index": w.gpu_index, "on": w.device}
        log(LogRecord("info", "worker-planned", f"{w.name}{card}  worker on {w.device}", fields))
    n = len(plan.workers)
    names = " ".join(w.name for w in plan.workers)
    log(LogRecord("info", "rig-planned", f"{n} worker{'' if n == 1 else 's'} planned: {names}"))


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
