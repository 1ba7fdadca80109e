"""Verification: every attack is caught by the check meant for it; honest work is accepted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
import torch

from pot_cli.sim.attacks import ATTACKS, STALE_LAG, ForgeContext, attack_for, forge
from pot_cli.sim.pot import miner_identities
from pot_cli.training.aggregation import AggregationRule, aggregate
from pot_cli.training.assignment import assign_batch, round_seed
from pot_cli.training.codec import Compression, encode_gradient
from pot_cli.training.gradients import Gradient, Numerics, compute_gradient, torch_threads
from pot_cli.training.optim import apply_update, init_optimizer_state
from pot_cli.training.state import flatten, model_hash
from pot_cli.training.tasks import Task, load_task
from pot_cli.training.verification import (
    RoundContext,
    RoundVerification,
    Submission,
    VerificationPolicy,
    verify_round,
)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Single-threaded torch: on a shared machine OpenMP spin-waits make 2 threads far slower."""
    with torch_threads(1):
        yield


HONEST = 7


@dataclass
class Round:
    task: Task
    height: int
    seed: bytes
    params: dict[str, torch.Tensor]
    history: list[dict[str, torch.Tensor]]
    addresses: list[str]
    attacker: str
    payloads: dict[str, bytes]
    grads: dict[str, Gradient]
    previous: list[torch.Tensor]


def _round() -> Round:
    """A digits model trained STALE_LAG + 1 honest rounds, and round h's honest submissions."""
    task = load_task("digits")
    addresses = sorted(i.address for i in miner_identities("verify", HONEST + 1))
    attacker, honest = addresses[3], [a for a in addresses if a != addresses[3]]
    params = task.initial_params()
    state = init_optimizer_state(task.optimizer, params)
    history = [params]
    previous: list[torch.Tensor] = []
    for h in range(STALE_LAG + 2):
        seed = round_seed("verify", h)
        mh = model_hash(params)
        grads = {
            a: compute_gradient(
                task, params, assign_batch(seed, a, task.train_size, task.batch_size)
            )
            for a in honest
        }
        payloads = {a: encode_gradient(task, g, model_hash=mh, height=h) for a, g in grads.items()}
        if h == STALE_LAG + 1:
            return Round(
                task, h, seed, params, history, addresses, attacker, payloads, grads, previous
            )
        previous = [flatten(g, task.param_shapes) for g in grads.values()]
        agg = aggregate(AggregationRule("mean"), grads, task.param_shapes)
        params, state = apply_update(task.optimizer, params, state, agg)
        history.append(params)
    raise AssertionError("unreachable")


ROUND = _round()


def _verify(
    r: Round, extra: dict[str, bytes], rate: float = 0.0, compression: Compression = Compression()
) -> RoundVerification:
    ctx = RoundContext(
        r.task, r.height, r.seed, r.params, model_hash(r.params), compression, r.previous
    )
    subs = [Submission(a, p) for a, p in {**r.payloads, **extra}.items()]
    return verify_round(ctx, subs, VerificationPolicy(spot_check_rate=rate))


def _forge(r: Round, attack: str, compression: Compression = Compression()) -> bytes:
    task = r.task
    ctx = ForgeContext(
        task=task,
        height=r.height,
        model_hash=model_hash(r.params),
        params=r.params,
        history=r.history,
        compression=compression,
        indices=assign_batch(r.seed, r.attacker, task.train_size, task.batch_size),
        other_indices=assign_batch(
            round_seed("x", 99), r.attacker, task.train_size, task.batch_size
        ),
        others=r.payloads,
        others_grads=r.grads,
        seed=5,
    )
    return forge(attack, ctx)


# attack -> (spot-check rate needed, check expected to reject it)
EXPECTED = {
    "garbage": (0.0, "codec"),
    "nan": (0.0, "codec"),
    "wrong-shape": (0.0, "codec"),
    "oversize": (0.0, "codec"),
    "zero": (0.0, "zero"),
    "scaled": (0.0, "norm"),
    "sign-flip": (0.0, "direction"),
    "noise": (0.0, "direction"),
    "copy": (0.0, "copy"),
    "copy-perturbed": (0.0, "copy"),
    "stale": (1.0, "spot-check"),
    "wrong-data": (1.0, "spot-check"),
    "lazy": (1.0, "spot-check"),
}


def test_every_attack_is_listed() -> None:
    assert set(EXPECTED) == set(ATTACKS)
    assert {attack_for("mixed", 0, h) for h in range(len(ATTACKS))} == set(ATTACKS)


@pytest.mark.parametrize("attack", sorted(EXPECTED))
def test_attack_caught_by_the_right_check(attack: str) -> None:
    rate, check = EXPECTED[attack]
    r = ROUND
    result = _verify(r, {r.attacker: _forge(r, attack)}, rate=rate)
    verdict = result.verdicts[r.attacker]
    assert not verdict.accepted, verdict
    assert verdict.check == check, verdict
    assert verdict.reason
    if attack == "nan":
        assert "non-finite" in verdict.reason
    if attack == "oversize":
        assert verdict.reason.startswith("oversize")
    if attack == "wrong-shape":
        assert verdict.reason.startswith("layout")
    # every honest miner is accepted, including the copy victim (its recompute clears it)
    honest = {a: v for a, v in result.verdicts.items() if a != r.attacker}
    assert len(honest) == HONEST and all(v.accepted for v in honest.values()), honest
    assert r.attacker not in result.accepted


def test_statistically_invisible_forgeries_pass_without_a_spot_check() -> None:
    """Stale and wrong-data gradients look like honest ones: only a recompute catches them,
    which is why the sample is unpredictable. (With rate 0 nothing re-computes them.)"""
    r = ROUND
    for attack in ("stale", "wrong-data"):
        result = _verify(r, {r.attacker: _forge(r, attack)}, rate=0.0)
        assert result.verdicts[r.attacker].accepted


def test_replay_of_an_earlier_round_is_a_copy() -> None:
    r = ROUND
    old = r.task.param_shapes
    prev = r.previous[0]
    from pot_cli.training.state import unflatten

    replay = encode_gradient(
        r.task, unflatten(prev, old), model_hash=model_hash(r.params), height=r.height
    )
    result = _verify(r, {r.attacker: replay})
    v = result.verdicts[r.attacker]
    assert not v.accepted and v.check == "copy" and "earlier round" in v.reason


def test_honest_mixed_numerics_all_accepted_when_all_recomputed() -> None:
    r = ROUND
    task = r.task
    mh = model_hash(r.params)
    extra = {}
    for k, num in enumerate((Numerics(dtype="bf16"), Numerics(dtype="fp16", threads=1))):
        a = r.addresses[3] if k == 0 else "pot1extra"
        g = compute_gradient(task, r.params, assign_batch(r.seed, a, task.train_size, 64), num)
        extra[a] = encode_gradient(task, g, model_hash=mh, height=r.height, numerics=num.dtype)
    result = _verify(r, extra, rate=1.0)
    assert all(v.accepted for v in result.verdicts.values()), result.rejected
    assert result.recomputed == HONEST + 2
    # re-computed in the declared precision: only rounding-order noise remains
    tol = task.spot_check_tolerance
    assert all(
        v.rel_error is not None and v.rel_error < tol / 100 for v in result.verdicts.values()
    )


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_forgeries_declared_in_low_precision_are_recomputed_in_it(dtype: str) -> None:
    """A stale or wrong-data gradient computed and declared in bf16/fp16 is compared with a
    recompute in that precision, and fails it: declaring a lower precision buys no slack."""
    r = ROUND
    task = r.task
    mh = model_hash(r.params)
    num = Numerics(dtype=dtype, threads=1)
    batch = assign_batch(r.seed, r.attacker, task.train_size, task.batch_size)
    other = assign_batch(round_seed("x", 99), r.attacker, task.train_size, task.batch_size)
    forged = {
        "stale": compute_gradient(task, r.history[-1 - STALE_LAG], batch, num),
        "wrong-data": compute_gradient(task, r.params, other, num),
    }
    honest = compute_gradient(task, r.params, batch, num)
    for name, g in {**forged, "honest": honest}.items():
        payload = encode_gradient(task, g, model_hash=mh, height=r.height, numerics=dtype)
        v = _verify(r, {r.attacker: payload}, rate=1.0).verdicts[r.attacker]
        assert v.accepted == (name == "honest"), (name, v)
        assert v.rel_error is not None
        if name != "honest":
            assert v.check == "spot-check" and v.rel_error > 2 * task.spot_check_tolerance


def test_misdeclared_precision_is_compared_across_precisions() -> None:
    """A bf16 gradient declared as fp32 is checked against an fp32 recompute: its error is the
    cross-precision gap, not the (zero) same-precision one. That gap (0.006-0.048 measured,
    ``pot bench calibrate``) lies around the tolerance, so a misdeclared honest gradient may
    pass or fail; it gains nothing either way (rewards do not depend on the precision, and the
    gradient is as useful). What matters is that the recompute ran in the declared precision."""
    r = ROUND
    task = r.task
    batch = assign_batch(r.seed, r.attacker, task.train_size, task.batch_size)
    g = compute_gradient(task, r.params, batch, Numerics(dtype="bf16", threads=1))
    truthful = encode_gradient(
        task, g, model_hash=model_hash(r.params), height=r.height, numerics="bf16"
    )
    lying = encode_gradient(task, g, model_hash=model_hash(r.params), height=r.height)
    ok = _verify(r, {r.attacker: truthful}, rate=1.0).verdicts[r.attacker]
    bad = _verify(r, {r.attacker: lying}, rate=1.0).verdicts[r.attacker]
    assert ok.accepted and ok.spot_checked and bad.spot_checked
    assert ok.rel_error is not None and ok.rel_error <= 1e-6  # same precision: rounding only
    assert bad.rel_error is not None and bad.rel_error >= 1e-3  # an fp32 recompute it was


def test_wrong_round_binding_and_duplicates() -> None:
    r = ROUND
    task = r.task
    g = r.grads[r.addresses[0]]
    stale_header = encode_gradient(task, g, model_hash="0" * 64, height=r.height)
    result = _verify(r, {r.attacker: stale_header})
    assert result.verdicts[r.attacker].check == "codec"
    assert "model hash" in result.verdicts[r.attacker].reason
    ctx = RoundContext(task, r.height, r.seed, r.params, model_hash(r.params))
    subs = [Submission("pot1x", r.payloads[r.addresses[0]]), Submission("pot1x", b"junk")]
    out = verify_round(ctx, subs, VerificationPolicy())
    assert out.verdicts["pot1x"].check == "duplicate" and not out.accepted


def test_duplicate_submissions_do_not_make_the_round_depend_on_arrival_order() -> None:
    """A miner that submits twice has both refused, and the spot-check seed (hence the sample,
    the accepted set and the new model) is the same whichever of its payloads came first."""
    r = ROUND
    ctx = RoundContext(r.task, r.height, r.seed, r.params, model_hash(r.params))
    honest = [Submission(a, p) for a, p in r.payloads.items()]
    twice = r.addresses[0]
    other = Submission(twice, r.payloads[r.addresses[1]])
    first = [*honest, other]
    second = [other, *honest]
    policy = VerificationPolicy(spot_check_rate=0.5)
    a, b = verify_round(ctx, first, policy), verify_round(ctx, second, policy)
    assert a.spot_seed == b.spot_seed
    assert a.verdicts == b.verdicts and sorted(a.accepted) == sorted(b.accepted)
    assert a.verdicts[twice].check == "duplicate" and "2 submissions" in a.verdicts[twice].reason
    assert twice not in a.accepted and len(a.accepted) == HONEST - 1


def test_overflowing_int8_submission_never_reaches_the_model() -> None:
    """Finite int8 values x finite scales = Inf: refused by the codec, even as the only
    submission of a round and outside the spot-check sample (no statistics to flag it)."""
    from safetensors.torch import load

    from pot_cli.training.codec import write_safetensors

    r = ROUND
    int8 = Compression("int8")
    g = r.grads[r.addresses[0]]
    payload = encode_gradient(r.task, g, model_hash=model_hash(r.params), height=r.height,
                              compression=int8)  # fmt: skip
    tensors = dict(load(payload))
    tensors["int8.scale"] = tensors["int8.scale"].clone()
    tensors["int8.scale"][0] = 3e38
    tensors["int8.q"] = tensors["int8.q"].clone()
    tensors["int8.q"][0] = 127
    hlen = int.from_bytes(payload[:8], "little")
    meta = json.loads(payload[8 : 8 + hlen])["__metadata__"]
    ctx = RoundContext(r.task, r.height, r.seed, r.params, model_hash(r.params), int8)
    sub = Submission(r.addresses[0], write_safetensors(tensors, meta))
    out = verify_round(ctx, [sub], VerificationPolicy(spot_check_rate=0.0))
    v = out.verdicts[r.addresses[0]]
    assert not v.accepted and v.check == "codec" and "non-finite" in v.reason
    assert out.accepted == {}


@pytest.mark.parametrize("mode", ["int8", "topk"])
def test_compressed_rounds(mode: str) -> None:
    comp = Compression(mode)
    mh = model_hash(ROUND.params)
    payloads = {
        a: encode_gradient(ROUND.task, g, model_hash=mh, height=ROUND.height, compression=comp)
        for a, g in ROUND.grads.items()
    }
    r = replace(ROUND, payloads=payloads)
    ok = _verify(r, {}, rate=1.0, compression=comp)
    assert all(v.accepted for v in ok.verdicts.values())
    for attack, (_, check) in (("wrong-data", (1.0, "spot-check")), ("scaled", (0.0, "norm"))):
        result = _verify(r, {r.attacker: _forge(r, attack, comp)}, rate=1.0, compression=comp)
        v = result.verdicts[r.attacker]
        assert not v.accepted and v.check == check, v


def _scaled(r: Round, factor: float) -> bytes:
    """The attacker's honest gradient scaled to ``factor`` x the honest median norm: inside the
    norm flag for factor < norm_factor."""
    task = r.task
    idx = assign_batch(r.seed, r.attacker, task.train_size, task.batch_size)
    grad = compute_gradient(task, r.params, idx)
    norms = sorted(float(flatten(g, task.param_shapes).norm()) for g in r.grads.values())
    scale = factor * norms[len(norms) // 2] / float(flatten(grad, task.param_shapes).norm())
    return encode_gradient(
        task, {n: t * scale for n, t in grad.items()}, model_hash=model_hash(r.params),
        height=r.height,
    )  # fmt: skip


@pytest.mark.parametrize("factor", [3.0, 3.5, 3.9])
def test_a_forgery_aimed_just_inside_the_norm_flag_is_suspicious(factor: float) -> None:
    """Scaled 3-3.9x the median norm (the norm flag is at 4x): no flag fires, but the norm lies
    over 5 robust deviations from the honest ones (re-compute probability 1), so it is
    re-computed even with no random sample at all; the honest miners' draws stay negative."""
    r = ROUND
    result = _verify(r, {r.attacker: _scaled(r, factor)}, rate=0.0)
    v = result.verdicts[r.attacker]
    assert not any(f.startswith("norm") for f in v.flags)
    assert v.statistics is not None and v.statistics.suspicion >= 0.0
    assert not v.accepted and v.check == "suspicion", v
    for a, hv in result.verdicts.items():
        if a != r.attacker:
            assert hv.accepted and hv.statistics is not None
            assert hv.statistics.suspicion < 0.0, (a, hv.statistics)


def test_an_honest_round_draws_no_suspicion() -> None:
    r = ROUND
    result = _verify(r, {}, rate=0.0)
    assert all(v.accepted for v in result.verdicts.values())
    assert result.recomputed == 0
