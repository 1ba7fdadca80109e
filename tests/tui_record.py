"""Records ``tests/data/dashboard/session.jsonl`` from a real devnet (run it by hand:
``.venv/bin/python tests/tui_record.py [OUT]``; about a minute and a half).

The network: 4 validators, 3 miners, the last one Byzantine (``noise``: caught by the spot
checks and slashed). miner-0 replays the 8-GPU rig recording (``POT_NVML_REPLAY``, computing on
the CPU) with a temperature limit of 62 °C, so the watchdog pauses its 63 °C GTX 1070; miner-1
replays an RTX 3090 on an x1 riser; miner-2 is a plain CPU. Midway the primary (val-0) is killed
for a while and restarted: a disconnection, a failover of the chain poller and a view change.
The dashboard's own evaluator runs too (the metric and the centralized baseline per round).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pot_cli.config import config_from_dict, write_config  # noqa: E402
from pot_cli.node.devnet import Devnet, DevnetSpec, write_network  # noqa: E402
from pot_cli.tui.sources.evaluate import ModelEvaluator  # noqa: E402
from pot_cli.tui.sources.live import live_pollers, now_ms  # noqa: E402
from pot_cli.tui.sources.observation import (  # noqa: E402
    DASHBOARD,
    Observation,
    Recorder,
    RecordingHeader,
    Sink,
)
from pot_cli.tui.sources.recording import MinerAddresses  # noqa: E402

NVML = ROOT / "tests" / "data" / "nvml"
SPEC = DevnetSpec(validators=4, miners=3, byzantine=1, attack="noise", rounds=12, round_seconds=3.0)


def set_temperature_limit(home: Path, limit: int, resume: int) -> None:
    path = home / "config.toml"
    raw = tomllib.loads(path.read_text())
    raw["miner"]["temperature_limit_c"] = limit
    raw["miner"]["temperature_resume_c"] = resume
    write_config(path, config_from_dict(raw, where=str(path)), force=True)


def record(out: Path, seconds: float = 75.0) -> None:
    root = Path(tempfile.mkdtemp(prefix="pot-dash-rec-"))
    layout = write_network(root / "net", SPEC)
    set_temperature_limit(layout.miners[0].home, 62, 55)
    net = Devnet(layout)
    miners = [m.url for m in layout.miners]
    validators = [v.url for v in layout.validators]
    header = RecordingHeader(miners, validators, now_ms(), note="pot devnet: tests/tui_record.py")
    recorder = Recorder(out, header)
    sink = Sink(recorder, keep=False)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        net.start_validators()
        net.wait_ready(120)
        for m, nvml in zip(layout.miners, ("rig8.json", "rtx3090.json", None), strict=True):
            if nvml:
                os.environ["POT_NVML_REPLAY"] = str(NVML / nvml)
            else:
                os.environ.pop("POT_NVML_REPLAY", None)
            net.start(m)
        os.environ.pop("POT_NVML_REPLAY", None)
        net.wait_miners(120)
        genesis = layout.genesis.to_dict()
        sink.put(Observation(now_ms(), DASHBOARD, "", "genesis", genesis))
        addresses = MinerAddresses()
        sink.subscribe(["summary"], addresses.observe)
        evaluator = ModelEvaluator(validators, sink, genesis=genesis)
        sink.subscribe(["block", "summary"], evaluator.observe)
        workers = [*live_pollers(miners, validators, sink, addresses), evaluator]
        for w in workers:
            t = threading.Thread(target=w.run, args=(stop,), daemon=True)
            t.start()
            threads.append(t)
        third = seconds / 3
        time.sleep(third)
        print("killing val-0 (the primary)", flush=True)
        net.kill("val-0")
        time.sleep(12)
        print("restarting val-0", flush=True)
        net.restart("val-0")
        time.sleep(seconds - third - 12)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        recorder.close()
        net.stop_all()
    print(f"recorded {out} ({out.stat().st_size} bytes); network in {root}")


if __name__ == "__main__":
    record(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests/data/dashboard/session.jsonl")
