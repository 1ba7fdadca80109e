"""The model's metric per round, measured by the dashboard itself (the validators' API does not
report it yet).

For each committed block the evaluator downloads the block's ``model_after`` from a validator
(``GET /v1/models/{hash}``; validators serve their last few models), checks it against the hash,
and evaluates it on the task's held-out set (``Task.evaluate``: accuracy, or bits per byte).
With the network's genesis it also keeps the **centralized baseline** alongside: the same
initial model (``genesis_params``), the same optimizer, one step per committed block on the
concatenated batches of that block's accepted miners (each batch is fixed by the round seed and
the miner's address), exactly as ``pot devnet``'s quality figure computes it at the end
(:mod:`pot_cli.node.quality`), but incrementally, block by block. Blocks before the dashboard
started are read from the validators for the baseline.

Everything here runs in one worker thread with one torch thread (torch is imported there, not
when the dashboard starts). A block whose model is no longer served gets no PoT point; the
baseline does not need the model.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from pot_cli.errors import PotError
from pot_cli.node.api_models import BlockOut
from pot_cli.node.client import ApiError, FailoverClient, ValidatorClient
from pot_cli.tui.sources.live import Backoff, now_ms
from pot_cli.tui.sources.observation import EVAL, Observation, Sink

if TYPE_CHECKING:
    from pot_cli.protocol.genesis import Genesis
    from pot_cli.training.baseline import BaselineTrainer
    from pot_cli.training.tasks import Task

EVAL_URL = "local"  # the evaluator's "url" in observations: this machine


class ModelEvaluator:
    """Feed it block observations (:meth:`observe`, any thread); :meth:`run` in a worker."""

    def __init__(
        self,
        validators: Sequence[str],
        sink: Sink,
        *,
        genesis: dict[str, Any] | None = None,
        task: str | None = None,
        baseline: bool = True,
        history: int = 64,
    ) -> None:
        self.client = FailoverClient(list(validators), timeout=10.0)
        self.sink = sink
        self.genesis_raw = genesis
        self.task_name = task
        self.baseline_on = baseline
        self.history = history
        self.blocks: queue.Queue[dict[str, Any]] = queue.Queue()
        self.task: Task | None = None
        self.genesis: Genesis | None = None
        self._central: BaselineTrainer | None = None
        self._baseline_height = 0
        self._evaluated: set[int] = set()

    def observe(self, obs: Observation) -> None:
        if obs.kind == "block" and isinstance(obs.data, dict):
            self.blocks.put(obs.data)
        elif obs.kind == "summary" and self.task_name is None and isinstance(obs.data, dict):
            miner = obs.data.get("miner")
            if isinstance(miner, dict) and isinstance(miner.get("task"), str):
                self.task_name = miner["task"]

    def put(self, kind: str, data: Any) -> None:
        self.sink.put(Observation(now_ms(), EVAL, EVAL_URL, kind, data))

    # ------------------------------------------------------------------ the worker

    def run(self, stop: threading.Event) -> None:
        backoff = Backoff()
        while not stop.is_set():
            try:
                block = self.blocks.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._setup(block)
                self._handle(block, stop)
                backoff.reset()
            except PotError as exc:
                self.put("down", {"error": str(exc)[:160], "retry_in_s": backoff.next()})
        self.client.close()

    def _setup(self, block: dict[str, Any]) -> None:
        if self.task is not None:
            return
        import torch

        from pot_cli.protocol.genesis import parse_genesis
        from pot_cli.training.tasks import load_task

        torch.set_num_threads(1)  # the dashboard's evaluator must not take the rig's cores
        if self.genesis_raw is None:  # none given: the validators serve it (checked here)
            try:
                self.genesis_raw = self.client.call(lambda c: c.genesis())
                self.put("genesis", self.genesis_raw)
            except PotError:
                self.genesis_raw = None
        if self.genesis_raw is not None:
            self.genesis = parse_genesis(self.genesis_raw, "genesis")
        self.baseline_on = self.baseline_on and self.genesis is not None
        name = _block_task(block) or self.task_name or (self.genesis and self.genesis.task)
        if not name:
            raise PotError("the task is unknown (no block, genesis or miner names it)")
        self.task = load_task(name)
        self.put(
            "task",
            {
                "name": self.task.name,
                "metric": self.task.metric_name,
                "higher_is_better": self.task.higher_is_better,
                "vram_need_mb": self.task.vram_need_mb,
                "baseline": self.baseline_on,
            },
        )

    def _handle(self, block: dict[str, Any], stop: threading.Event) -> None:
        height = int(block["height"])
        if height in self._evaluated:
            return
        self._evaluated.add(height)
        point: dict[str, Any] = {"height": height, "metric": None, "baseline": None}
        body = _block_body(block)
        if body is None:
            return
        point["metric"], point["note"] = self._pot_metric(str(body.get("model_after", "")))
        if self.baseline_on:
            point["baseline"] = self._baseline(height, block, stop)
        if point["metric"] is not None or point["baseline"] is not None:
            self.put("metric", point)

    def _pot_metric(self, model_after: str) -> tuple[float | None, str]:
        from pot_cli.training.codec import decode_model
        from pot_cli.training.errors import TrainingError
        from pot_cli.training.state import model_hash

        assert self.task is not None
        try:
            data = self.client.call(lambda c: c.model(model_after, timeout=30.0))
        except ApiError as exc:
            if exc.status == 404:
                return None, "model no longer served"
            raise
        try:
            params = decode_model(self.task, data)
        except TrainingError as exc:
            return None, f"model does not decode: {exc}"
        if model_hash(params) != model_after:
            return None, "model does not match its hash"
        return float(self.task.evaluate(params)), ""

    def _baseline(self, height: int, block: dict[str, Any], stop: threading.Event) -> float | None:
        """The centralized model after ``height`` steps (catching up from genesis first)."""
        from pot_cli.protocol.derive import genesis_params
        from pot_cli.training.baseline import BaselineTrainer
        from pot_cli.training.gradients import Numerics

        assert self.task is not None and self.genesis is not None
        if self._central is None:
            params = genesis_params(self.task, self.genesis.model_seed)
            self._central = BaselineTrainer(self.task, params, Numerics(threads=1))
        if height <= self._baseline_height:
            return None  # an old block seen late: the baseline has moved past it
        for h in range(self._baseline_height + 1, height):
            if stop.is_set():
                return None
            self._step(_block_body(self.client.call(partial(_fetch_block, height=h)).model_dump()))
            self._baseline_height = h
        self._step(_block_body(block))
        self._baseline_height = height
        return float(self._central.metric())

    def _step(self, body: dict[str, Any] | None) -> None:
        """One centralized step on the samples the block accepted (none: no step)."""
        from pot_cli.training.baseline import round_batch

        assert self.task is not None and self._central is not None
        if body is None:
            return
        accepted = [
            str(s["miner"])
            for s in body.get("submissions", [])
            if isinstance(s, dict) and (s.get("verdict") or {}).get("kind") == "accepted"
        ]
        if accepted:
            seed = bytes.fromhex(str(body["round_seed"]))
            self._central.step(round_batch(self.task, seed, accepted))


def _fetch_block(c: ValidatorClient, height: int) -> BlockOut:
    return c.block(height)


def _block_body(block: dict[str, Any]) -> dict[str, Any] | None:
    """The PoT block inside a ``/v1/blocks/{h}`` answer (None for an empty proposal)."""
    proposal = block.get("proposal")
    if isinstance(proposal, dict) and isinstance(proposal.get("block"), dict):
        body: dict[str, Any] = proposal["block"]
        return body
    return None


def _block_task(block: dict[str, Any]) -> str | None:
    body = _block_body(block)
    task = body.get("task") if body else None
    return task if isinstance(task, str) else None


__all__ = ["EVAL_URL", "ModelEvaluator"]
