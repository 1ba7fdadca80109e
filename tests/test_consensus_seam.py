"""The seam between PBFT and the application: ``validate`` may answer PENDING (re-deriving a
pot block takes seconds), the replica keeps the pre-prepare aside and judges it again on
``resume``; ``now`` is an argument of every application call; one host loop (``ReplicaHost``)
for the validator and the simulator."""

from __future__ import annotations

from typing import Any

from consensus_harness import Keys

from pot_cli.consensus.app import ChainApp, Validity
from pot_cli.consensus.host import ReplicaHost
from pot_cli.consensus.messages import Commit, Message, Prepare, PrePrepare
from pot_cli.consensus.replica import Output
from pot_cli.consensus.wal import MemoryWal
from pot_cli.sim.consensus import FAULT_KINDS, plan_seed, run_seed


class Deriving(ChainApp):
    """A chain application whose verdict the test decides: PENDING until ``answer`` is set."""

    def __init__(self) -> None:
        super().__init__(target=10)
        self.answer: Validity = Validity.PENDING
        self.asked: list[tuple[int, int]] = []

    def validate(self, seq: int, proposal: Any, now: int) -> Validity:
        self.asked.append((seq, now))
        if self.answer is Validity.VALID and not self.valid_proposal(seq, proposal):
            return Validity.INVALID
        return self.answer


def sent(out: Output, kind: type) -> list[Any]:
    return [m for _, m in out.sends if isinstance(m, kind)]


def test_pending_pre_prepare_is_kept_aside_and_prepared_on_resume() -> None:
    k = Keys()
    app = Deriving()
    r = k.replica(1, app)
    r.start(0)
    pp = k.pp(0, 1)
    out = r.step(pp, 10)
    assert not sent(out, Prepare) and not out.rejected  # deriving: no vote yet, no refusal
    assert app.asked == [(1, 10)]  # `now` is passed in, not set on the application
    assert out.timer is not None  # the view-change timer still protects liveness
    # the other backups' prepares arrive meanwhile and are kept
    r.step(k.prepare(0, 1, pp.digest, 2), 11)
    out = r.resume(20)  # still deriving: nothing changes
    assert not sent(out, Prepare)
    app.answer = Validity.VALID
    out = r.resume(30)
    assert [m.seq for m in sent(out, Prepare)] == [1]
    assert [m.seq for m in sent(out, Commit)] == [1]  # 2f prepares were already there
    assert app.asked[-1] == (1, 30)
    assert any(
        rec["kind"] == "msg" and rec["message"]["type"] == "pre-prepare" for rec in out.records
    )


def test_pending_then_invalid_is_rejected() -> None:
    k = Keys()
    app = Deriving()
    r = k.replica(2, app)
    r.start(0)
    r.step(k.pp(0, 1, {"seq": 1, "data": "poison"}), 5)
    app.answer = Validity.VALID  # the application finished: the proposal is invalid
    out = r.resume(9)
    assert not sent(out, Prepare)
    assert any("application rejected" in reason for reason in out.rejected)


def test_a_primary_whose_proposal_never_derives_is_replaced() -> None:
    k = Keys(view_change_timeout=100)
    app = Deriving()
    r = k.replica(3, app)
    r.start(0)
    out = r.step(k.pp(0, 1), 0)
    assert out.timer is not None and out.timer <= 100
    out = r.tick(out.timer)
    while out.timer is not None and not any(m.TYPE == "view-change" for _, m in out.sends):
        out = r.tick(out.timer)
    assert r.view == 1 and not r.active


def test_an_application_that_answers_garbage_counts_as_invalid() -> None:
    class Broken(ChainApp):
        def validate(self, seq: int, proposal: Any, now: int) -> Validity:
            return True  # type: ignore[return-value]  # a bool is not a Validity

    k = Keys()
    r = k.replica(1, Broken(target=3))
    r.start(0)
    out = r.step(k.pp(0, 1), 1)
    assert not sent(out, Prepare) and any("rejected" in x for x in out.rejected)


def test_host_writes_before_hooks_and_sends() -> None:
    """The write-ahead order of the one host loop: log, then the output hook, then sends
    (after the rewrite hook)."""
    k = Keys()
    events: list[str] = []

    class Log(MemoryWal):
        def write(self, out: Output) -> None:
            if out.records or out.compact is not None:
                events.append("write")
            super().write(out)

    def send(to: int | None, msg: Any) -> None:
        events.append(f"send {msg.TYPE}")

    def on_output(replica: Any, out: Output) -> None:
        events.append("hook")

    def rewrite(replica: Any, sends: list[tuple[int | None, Message]]) -> list[Any]:
        events.append("rewrite")
        return [s for s in sends if isinstance(s[1], PrePrepare)]  # drop everything else

    host = ReplicaHost(
        k.cfg, 0, k.ids[0], ChainApp(target=2), Log(), send, 0, on_output=on_output, rewrite=rewrite
    )
    assert events[:3] == ["write", "hook", "rewrite"]
    assert set(events[3:]) == {"send pre-prepare"}  # max_in_flight pre-prepares, nothing else
    assert host.next_timer is not None and host.replica_seconds >= 0


def test_slow_validation_sweep_every_fault_kind() -> None:
    """Every fault kind with an application that takes 60 virtual ms to re-derive a proposal
    (validate PENDING until then, the simulator resumes the replica when it is done), and a
    few runs where deriving takes longer than the view-change timeout."""
    failures = []
    for seed in range(2 * len(FAULT_KINDS)):
        n, fault = plan_seed(seed, (4, 7), FAULT_KINDS)
        result = run_seed(seed, n, fault, derive_time=60)
        if not result.ok:
            failures.append(f"{result.violations[0]} -- replay: {result.replay}")
    for seed, fault in ((0, "none"), (1, "silent-primary"), (2, "crash-loss")):
        result = run_seed(seed, 4, fault, derive_time=250)
        if not result.ok:
            failures.append(f"{result.violations[0]} -- replay: {result.replay}")
    assert not failures, "\n".join(failures)
    assert run_seed(0, 4, "none", derive_time=250).replay.endswith("--derive-time 250")
