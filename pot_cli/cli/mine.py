"""``pot mine``: the miner a rig owner runs (the loop lives in :mod:`pot_cli.node.miner`).

Readable log lines go to stdout, flushed, one per round (``--json-log``: one JSON object per
line instead). Ctrl-C (or SIGTERM) stops it cleanly within a few seconds, exit code 0.

The hidden ``--attack NAME`` turns it into a Byzantine test miner for ``pot devnet --byzantine
K --attack NAME``: it submits ``pot_cli.sim.attacks.forge(NAME, …)`` instead of its honest
gradient. It is built here because nothing a node runs imports ``pot_cli.sim``.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from pot_cli.cli.context import get_state
from pot_cli.errors import UsageError

if TYPE_CHECKING:
    from pot_cli.node.miner import Forger
    from pot_cli.node.rig import LogRecord

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
# attacks a lone miner can play: the copy attacks need other miners' payloads, which a miner
# does not see before it submits; the flag-aware ones need the other gradients too
SOLO_EXTRA = ("partial",)
NEEDS_OTHERS = ("copy", "copy-perturbed")


class LogSink:
    """Prints :class:`~pot_cli.node.rig.LogRecord` lines at or above ``level`` on stdout
    (flushed; the rig's threads log too, hence the lock)."""

    def __init__(self, level: str = "info", *, as_json: bool = False) -> None:
        self.threshold = LEVELS.get(level, 20)
        self.as_json = as_json
        self._lock = threading.Lock()

    def __call__(self, record: LogRecord) -> None:
        if LEVELS.get(record.level, 20) < self.threshold:
            return
        if self.as_json:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            body = {
                "ts": stamp + "Z",
                "level": record.level,
                "event": record.event,
                "message": record.message,
                **record.fields,
            }
            line = json.dumps(body, default=str)
        else:
            prefix = f"{record.level}: " if record.level in ("warning", "error") else ""
            line = f"{time.strftime('%H:%M:%S')}  {prefix}{record.message}"
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def solo_attacks() -> tuple[str, ...]:
    """The attacks ``--attack`` takes (``mixed`` rotates through them by height)."""
    from pot_cli.sim.attacks import ATTACKS, MIXED

    return (*(a for a in ATTACKS if a not in NEEDS_OTHERS), *SOLO_EXTRA, MIXED)


def build_forger(name: str) -> Forger:
    """A forger playing attack ``name`` (or ``mixed``) from :mod:`pot_cli.sim.attacks`."""
    from pot_cli.crypto import sha256
    from pot_cli.node.miner import ForgeRequest
    from pot_cli.sim.attacks import MIXED, ForgeContext, forge
    from pot_cli.training.assignment import assign_batch

    allowed = solo_attacks()
    if name not in allowed:
        raise UsageError(f"--attack: unknown attack {name!r} (use one of {', '.join(allowed)})")
    rotation = tuple(a for a in allowed if a != MIXED)

    def forger(req: ForgeRequest) -> bytes:
        attack = rotation[req.height % len(rotation)] if name == MIXED else name
        ctx = ForgeContext(
            task=req.task,
            height=req.height,
            model_hash=req.model_hash,
            params=req.params,
            history=list(req.history),
            compression=req.compression,
            indices=req.indices,
            other_indices=assign_batch(
                sha256(req.round_seed + b"/other"),
                req.address,
                req.task.train_size,
                len(req.indices),
            ),
            others={},
            others_grads={},
            seed=req.height,
        )
        return forge(attack, ctx)

    return forger


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def mine_command(
    ctx: typer.Context,
    gpus: Annotated[
        str | None,
        typer.Option(
            "--gpus",
            help='GPUs to mine on: "all" or indices like "0-3,6" (default: [miner] gpus).',
            show_default=False,
        ),
    ] = None,
    rounds: Annotated[
        int,
        typer.Option(
            "--rounds", min=0, help="Stop after N rounds submitted or skipped (0: never)."
        ),
    ] = 0,
    api_listen: Annotated[
        str | None,
        typer.Option(
            "--api-listen",
            help="host:port of the local status API (default: [miner] api_listen; port 0: any).",
            show_default=False,
        ),
    ] = None,
    json_log: Annotated[
        bool, typer.Option("--json-log", help="Log one JSON object per line instead of text.")
    ] = False,
    attack: Annotated[
        str | None,
        typer.Option("--attack", hidden=True, help="Byzantine test miner: forge with this attack."),
    ] = None,
    watchdog_seconds: Annotated[
        float,
        typer.Option("--watchdog-seconds", hidden=True, min=0.01, help="Watchdog poll interval."),
    ] = 5.0,
) -> None:
    """Mine: compute the assigned gradient each round on every selected GPU and submit it.

    Status: `/summary` (JSON) and `/metrics` (Prometheus) on the status API. Ctrl-C stops it.
    """
    from pot_cli import crypto
    from pot_cli.config import load_config
    from pot_cli.gpu_selection import parse_gpu_spec
    from pot_cli.hw.backend import default_backend
    from pot_cli.node.miner import MinerSettings, run_miner
    from pot_cli.node.miner_api import parse_listen
    from pot_cli.node.rig import LogRecord

    state = get_state(ctx)
    cfg = load_config(state.config_path)
    settings = MinerSettings.from_config(
        cfg,
        state.home,
        gpus=gpus,
        api_listen=api_listen,
        rounds=rounds,
        watchdog_seconds=watchdog_seconds,
    )
    parse_gpu_spec(settings.gpus)  # syntax errors before anything starts
    parse_listen(settings.api_listen)
    forger = build_forger(attack) if attack is not None else None
    identity = crypto.load_key_file(state.key_path)
    log = LogSink(settings.log_level, as_json=json_log)
    if attack is not None:
        log(
            LogRecord(
                "warning",
                "byzantine",
                f"Byzantine test miner: submitting {attack!r} "
                "forgeries instead of honest gradients",
            )
        )
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        run_miner(settings, identity, backend=default_backend(), log=log, stop=stop, forger=forger)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C ends it at once
        log(LogRecord("info", "stopped", "stopped (interrupted)"))
        return
    finally:
        stop.set()
        signal.signal(signal.SIGTERM, previous)
    done = f"stopped after {rounds} round{'' if rounds == 1 else 's'}" if rounds else "stopped"
    log(LogRecord("info", "stopped", done))


def register(app: typer.Typer, *, panel: str) -> None:
    app.command("mine", rich_help_panel=panel)(mine_command)
