"""End-to-end: real `pot validate` and `pot mine` processes on 127.0.0.1.

Bounded waits; every process is stopped by the harness whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from net_harness import all_at_least, heights, running_network, wait_until

from pot_cli.node.chainstore import ChainStore, verify_chain
from pot_cli.node.client import ValidatorClient
from pot_cli.node.devnet import POT, Devnet, DevnetSpec
from pot_cli.protocol.genesis import parse_genesis

pytestmark = pytest.mark.timeout(240)


def _blocks(net: Devnet, name: str, upto: int) -> list[str]:
    c = net.clients[name]
    return [c.block(h).hash for h in range(1, upto + 1)]


def _accepted(net: Devnet, address: str, upto: int) -> list[int]:
    """Heights at which ``address`` has an accepted verdict (from validator 1's blocks)."""
    c = net.clients["val-1"]
    out = []
    for h in range(1, upto + 1):
        if any(v.miner == address and v.kind == "accepted" for v in c.block(h).verdicts):
            out.append(h)
    return out


def _same_chain(net: Devnet, names: list[str]) -> None:
    """Every named validator serves the same blocks up to the lowest height, and the same
    model once they stand at the same height; every chain store re-derives from genesis."""
    hs = heights(net, names)
    top = min(hs.values())
    chains = {n: _blocks(net, n, top) for n in names}
    assert len({tuple(c) for c in chains.values()}) == 1, chains
    models = {net.clients[n].block(top).proposal["block"]["model_after"] for n in names}
    assert len(models) == 1


def _stores_verify(net: Devnet) -> None:
    for v in net.layout.validators:
        store = ChainStore(v.home / "chain" / "chain.sqlite")
        try:
            report = verify_chain(store)
            assert report.first_mismatch is None, (v.name, report.first_mismatch)
            assert store.heights() == list(range(1, report.height + 1)), v.name
        finally:
            store.close()


def test_network_commits_pays_and_a_restarted_miner_resumes(tmp_path: Path) -> None:
    spec = DevnetSpec(miners=3, round_seconds=2.0)
    with running_network(tmp_path / "net", spec) as net:
        miners = net.layout.miners
        wait_until(
            net,
            "three blocks with accepted work for every miner",
            lambda: all(len(_accepted(net, m.address, heights(net)["val-1"])) >= 3 for m in miners),
            timeout=90,
        )
        net.check_all_alive()
        for m in miners:  # the ledger paid them: balance above the genesis' 90 POT
            assert net.clients["val-0"].account(m.address).balance > 90 * POT
        _same_chain(net, [v.name for v in net.layout.validators])
        # the model's held-out metric, and the event stream a dashboard reads
        served = parse_genesis(net.clients["val-1"].genesis(), "served genesis")
        assert served == net.layout.genesis
        model = net.clients["val-2"].current_model()
        assert model.metric == "accuracy" and 0.0 <= model.value <= 1.0
        stream = net.clients["val-3"].stream_events(after=0)
        kinds = {next(stream).kind for _ in range(5)}
        stream.close()
        assert kinds & {"round", "block", "submission"}
        polled = net.clients["val-3"].events_since(0, wait=1.0)
        assert polled and polled[0].id >= 1

        # a miner killed and restarted resumes from the next round
        victim = miners[0]
        net.kill(victim.name)
        killed_at = heights(net)["val-1"]
        time.sleep(3)
        net.restart(victim.name)
        restarted_at = max(heights(net).values())
        wait_until(
            net,
            "the restarted miner's work accepted again",
            lambda: any(
                h > restarted_at for h in _accepted(net, victim.address, heights(net)["val-1"])
            ),
            timeout=60,
        )
        net.check_all_alive()
        top = heights(net)["val-1"]
        for h in range(1, top + 1):  # never two submissions of one miner in one block
            miners_in = [v.miner for v in net.clients["val-1"].block(h).verdicts]
            assert len(miners_in) == len(set(miners_in))
        assert killed_at <= restarted_at
        log = victim.log_path.read_text()
        assert "round" in log
    _stores_verify(net)


def test_validators_survive_kill_9_view_change_and_catch_up(tmp_path: Path) -> None:
    spec = DevnetSpec(miners=2, round_seconds=1.5)
    with running_network(tmp_path / "net", spec) as net:
        wait_until(net, "height 3", lambda: all_at_least(net, 3), 60)
        committed_before = {h: net.clients["val-0"].block(h).hash for h in range(1, 4)}

        net.kill("val-2")  # a backup, mid-round: the other three go on
        h = max(heights(net).values())
        others = ["val-0", "val-1", "val-3"]
        wait_until(net, "progress without val-2", lambda: all_at_least(net, h + 3, others), 60)

        # val-2 comes back with its data wiped: it catches up by state transfer from its peers
        # (and fills its chain store from them) to the same head and model
        shutil.rmtree(net.node("val-2").home / "chain")
        net.restart("val-2")
        h = max(heights(net).values())
        wait_until(net, "val-2 caught up", lambda: all_at_least(net, h + 1), 90)

        net.kill("val-0")  # the primary of view 0: a view change, then progress
        h = max(heights(net).values())
        backups = ["val-1", "val-2", "val-3"]
        wait_until(
            net, "progress after a view change", lambda: all_at_least(net, h + 2, backups), 90
        )
        assert min(net.clients[n].status().view for n in backups) >= 1

        net.restart("val-0")  # kept its data: replays its log, then catches up
        h = max(heights(net).values())
        wait_until(net, "val-0 caught up", lambda: all_at_least(net, h + 1), 90)
        names = [v.name for v in net.layout.validators]
        # the restarted validators' stores are filled (backfill), not just their state
        top = min(heights(net).values())
        wait_until(
            net,
            "every store holds every block",
            lambda: all(net.clients[n].block(h) for n in names for h in range(1, top + 1)),
            30,
        )
        _same_chain(net, names)
        for height, digest in committed_before.items():  # no committed block lost
            assert {net.clients[n].block(height).hash for n in names} == {digest}
        net.check_all_alive()
    _stores_verify(net)


def _descendants_alive(marker: str) -> list[int]:
    """PIDs of live processes whose command line mentions ``marker`` (the devnet's home)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if marker in cmd and state != "Z":
            out.append(int(entry.name))
    return out


def _pot(*args: str) -> list[str]:
    return [sys.executable, "-m", "pot_cli", *args]


def test_devnet_byzantine_miner_earns_less_and_leaves_no_process(tmp_path: Path) -> None:
    home = tmp_path / "devnet"
    args = ["devnet", "--home", str(home), "--miners", "3", "--byzantine", "1"]
    args += ["--attack", "lazy", "--rounds", "4", "--round-seconds", "1.5", "--json"]
    done = subprocess.run(_pot(*args), capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    report = json.loads(done.stdout)
    for key in ("rounds_committed", "rounds_on_time", "view_changes", "quality_ratio"):
        assert key in report
    assert report["rounds_committed"] >= 4 and report["validators_agree"]
    rows = report["miners"]
    byz = [m for m in rows if m["byzantine"]]
    honest = [m for m in rows if not m["byzantine"]]
    assert len(byz) == 1 and len(honest) == 2
    assert byz[0]["earnings"] < min(m["earnings"] for m in honest)
    assert byz[0]["slashed"] >= 1 and all(m["slashed"] == 0 for m in honest)
    assert report["quality_ratio"] > 0.9
    assert _descendants_alive(str(home)) == []


def test_devnet_stops_every_child_on_sigint(tmp_path: Path) -> None:
    home = tmp_path / "devnet"
    proc = subprocess.Popen(
        _pot("devnet", "--home", str(home), "--miners", "1", "--rounds", "50"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(_descendants_alive(str(home))) < 6:
            time.sleep(0.5)  # 4 validators + 1 miner (the launcher's own cmdline too)
        assert len(_descendants_alive(str(home))) >= 6
        url = next(
            line.split('"')[1]
            for line in (home / "val-0" / "config.toml").read_text().splitlines()
            if line.startswith("listen")
        )
        ValidatorClient(f"http://{url}").status()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
        assert rc != 0  # interrupted: the network did not finish
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _descendants_alive(str(home)):
            time.sleep(0.2)
        assert _descendants_alive(str(home)) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
