"""The bundle simulator against the theory where it is exact, and against a naive
per-slot stepping reference step by step."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afdplan.errors import InputError
from afdplan.sim import SimConfig, simulate, simulate_seeds
from afdplan.sim.engine import build_occupancy, measure
from afdplan.sim.reference import plan_refill, queue_refill, step_slots
from afdplan.sim.schedule import iid_plan, replay_plan
from afdplan.theory import Deployment, barrier_point
from afdplan.timing import AttentionLinear, Linear, LinearStepTimes, load_coeffs
from afdplan.workload import EmpiricalWorkload, parse_workload

PAPER = load_coeffs("paper-v1-dsv3-910c")


def linear(a_a=0.00165, b_a=50.0, g_a=0.0, a_f=0.083, b_f=100.0, a_c=0.022, b_c=20.0):
    return LinearStepTimes(AttentionLinear(a_a, b_a, g_a), Linear(a_f, b_f), Linear(a_c, b_c))


SMALL_TRACE = EmpiricalWorkload(
    np.array([5, 0, 17, 3, 40, 8, 1, 22, 9, 2]), np.array([3, 1, 7, 2, 11, 4, 1, 6, 9, 5])
)


# ------------------------------------------------------- step-by-step reference


@settings(max_examples=25, deadline=None)
@given(
    ratio=st.integers(1, 4),
    batch=st.integers(1, 6),
    steps=st.integers(1, 120),
    seed=st.integers(0, 10_000),
    stationary=st.booleans(),
)
def test_iid_loads_match_per_slot_stepping(ratio, batch, steps, seed, stationary):
    workload = parse_workload("geometric:prefill_lo=0,prefill_hi=50,decode_mean=6")
    slots = ratio * batch
    plan = iid_plan(workload, slots, steps, np.random.default_rng(seed), stationary)
    fast = plan.occupancy(ratio, batch, steps).loads
    p0, d0, age0, refill = plan_refill(plan, slots)
    slow = step_slots(ratio, batch, steps, p0, d0, age0, refill)
    assert np.array_equal(fast, slow)


@settings(max_examples=25, deadline=None)
@given(
    ratio=st.integers(1, 3),
    batch=st.integers(1, 5),
    steps=st.integers(1, 80),
    first=st.integers(0, 9),
)
def test_replay_matches_per_slot_stepping(ratio, batch, steps, first):
    slots = ratio * batch
    plan = replay_plan(SMALL_TRACE, slots, steps, first)
    fast = plan.occupancy(ratio, batch, steps).loads
    refill = queue_refill(SMALL_TRACE.prompt, SMALL_TRACE.decode, first)
    p0, d0 = refill(np.arange(slots))
    slow = step_slots(ratio, batch, steps, p0, d0, np.zeros(slots, dtype=int), refill)
    assert np.array_equal(fast, slow)


def test_replay_serves_trace_in_order():
    plan = replay_plan(SMALL_TRACE, 4, 30, first=0)
    order = np.lexsort((plan.slot, plan.start))
    k = np.arange(plan.prompt.size) % SMALL_TRACE.size
    assert np.array_equal(plan.prompt[order], SMALL_TRACE.prompt[k])
    assert np.array_equal(plan.decode[order], SMALL_TRACE.decode[k])


# ------------------------------------------------------ agreement with theory


@pytest.mark.parametrize("start", ["stationary", "cold"])
@pytest.mark.parametrize("coeffs", ["attention", "ffn"])
def test_fixed_lengths_r1_give_formula_exactly(start, coeffs):
    # Fixed D: each slot cycles through contexts P..P+D−1, so over a whole number of
    # periods the mean load is exactly B·θ and the step time is the formula's.
    times = linear(b_f=10.0) if coeffs == "attention" else linear(a_a=1e-6)
    workload = parse_workload("fixed:prefill=100,decode=10")
    cfg = SimConfig(ratio=1, batch=8, steps=500, warmup=start, warmup_steps=0)
    res = simulate(workload, times, cfg)
    theta = 100 + 4.5
    dep = Deployment(times, 8)
    expected = barrier_point(dep, theta, 0.0, 1).cycle_time
    assert res.mean_load_per_worker == pytest.approx(8 * theta, rel=1e-12)
    assert res.mean_step_time_s == pytest.approx(expected, rel=1e-12)
    assert res.throughput_per_instance == pytest.approx(8 / (2 * expected), rel=1e-12)


def test_zero_variance_bundle_is_mean_field():
    # r workers with the same fixed-length cold start: all loads equal at every step.
    workload = parse_workload("fixed:prefill=50,decode=4")
    for r in (1, 3, 7):
        res = simulate(
            workload, PAPER, SimConfig(ratio=r, batch=16, steps=400, warmup="cold", warmup_steps=0)
        )
        expected = barrier_point(Deployment(PAPER, 16), 51.5, 0.0, r).cycle_time
        assert res.mean_step_time_s == pytest.approx(expected, rel=1e-12)


def test_geometric_mean_load_is_b_theta():
    workload = parse_workload("geometric:prefill=100,decode_mean=200")
    res = simulate(workload, PAPER, SimConfig(ratio=4, batch=128, requests=200_000))
    assert res.mean_load_per_worker == pytest.approx(128 * workload.stats().theta, rel=0.01)


def test_barrier_formula_matches_simulation_attention_bound():
    # Many independent slots: the Gaussian barrier model of DESIGN.md §4 holds.
    workload = parse_workload("geometric:prefill=100,decode_mean=500")
    s = workload.stats()
    for r in (2, 8):
        res = simulate(workload, PAPER, SimConfig(ratio=r, batch=256, steps=60_000, seed=r))
        predicted = barrier_point(Deployment(PAPER, 256), s.theta, s.v, r).cycle_time
        assert res.mean_step_time_s == pytest.approx(predicted, rel=0.01)
        # The load mixes slowly (a request lives ~500 steps): over a 60,000-step window the
        # sample spread sits a few percent low and varies by about ±5% across seeds.
        assert res.std_load_per_worker == pytest.approx(math.sqrt(256 * s.v), rel=0.12)


def test_stationary_start_is_unbiased_and_cold_start_is_not():
    workload = parse_workload("geometric:prefill=100,decode_mean=300")
    target = 64 * workload.stats().theta
    early = {"stationary": [], "cold": []}
    for seed in range(20):
        for start in early:
            cfg = SimConfig(ratio=2, batch=64, steps=100, warmup=start, warmup_steps=0, seed=seed)
            early[start].append(simulate(workload, PAPER, cfg).mean_load_per_worker)
    assert np.mean(early["stationary"]) == pytest.approx(target, rel=0.02)
    assert np.mean(early["cold"]) < 0.6 * target  # every request young at the start
    # With the default discard, the cold start reaches the same level.
    res = simulate(workload, PAPER, SimConfig(ratio=2, batch=64, steps=20_000, warmup="cold"))
    assert res.warmup_steps > 0
    assert res.mean_load_per_worker == pytest.approx(target, rel=0.02)


def test_constant_step_gives_tpot_equal_step():
    # FFN-bound with no noise: every step lasts t_F, so every TPOT equals it.
    times = linear(a_a=1e-9, b_f=1000.0)
    res = simulate(
        parse_workload("geometric:prefill=10,decode_mean=20"),
        times,
        SimConfig(ratio=2, batch=8, steps=2000),
    )
    t_f = 0.083 * 16 + 1000
    assert res.mean_step_time_s == pytest.approx(t_f)
    assert res.tpot_p50_s == pytest.approx(t_f) and res.tpot_p99_s == pytest.approx(t_f)
    assert res.share_ffn_bound == 1.0 and res.idle_ffn == pytest.approx(0.0, abs=1e-12)


def test_serial_mode_adds_stages():
    workload = parse_workload("fixed:prefill=10,decode=2")
    cfg = SimConfig(ratio=3, batch=4, steps=100, mode="serial", warmup="cold", warmup_steps=0)
    res = simulate(workload, PAPER, cfg)
    t_a = 0.00165 * 4 * 10.5 + 50
    # t_C is the round trip (both directions): charged once
    assert res.mean_step_time_s == pytest.approx(t_a + (0.022 * 4 + 20) + 0.083 * 12 + 100)


# ------------------------------------------------------------------ invariants


@pytest.mark.parametrize("order", ["iid", "replay"])
def test_token_conservation(order):
    cfg = SimConfig(ratio=3, batch=5, steps=300, order=order, warmup="cold", warmup_steps=0, seed=4)
    occ = build_occupancy(SMALL_TRACE, cfg, 300, stationary=False)
    produced = occ.active_counts().sum()
    overlap = np.minimum(occ.end, 300) - np.maximum(occ.start, 0)
    assert produced == 3 * 5 * 300 == overlap.sum()
    done = occ.end <= 300
    in_flight = (300 - np.maximum(occ.start, 0))[~done]
    assert (
        produced == occ.decode[done].sum() - np.maximum(-occ.start[done], 0).sum() + in_flight.sum()
    )
    res = measure(occ, PAPER, cfg, "cold", 0)
    assert res.tokens_generated == produced


def test_deterministic_per_seed():
    workload = parse_workload("lognormal:prefill=100,decode_median=50,decode_sigma=1")
    cfg = SimConfig(ratio=4, batch=32, requests=20_000, seed=7, noise=0.05)
    a, b = simulate(workload, PAPER, cfg), simulate(workload, PAPER, cfg)
    assert a == b
    c = simulate(workload, PAPER, SimConfig(ratio=4, batch=32, requests=20_000, seed=8, noise=0.05))
    assert c != a


def test_noise_lengthens_barrier_steps():
    workload = parse_workload("fixed:prefill=100,decode=10")
    quiet = simulate(workload, PAPER, SimConfig(ratio=8, batch=16, steps=5000))
    noisy = simulate(workload, PAPER, SimConfig(ratio=8, batch=16, steps=5000, noise=0.1))
    assert noisy.mean_step_time_s > quiet.mean_step_time_s


def test_seeds_give_confidence_interval():
    workload = parse_workload("geometric:prefill=2000,decode_mean=500")  # attention-bound
    summary = simulate_seeds(
        workload, PAPER, SimConfig(ratio=4, batch=32, requests=5000), [0, 1, 2, 3]
    )
    est = summary.estimate("throughput_per_instance")
    assert est.n == 4 and est.half_width > 0
    values = [run.throughput_per_instance for run in summary.runs]
    assert min(values) <= est.mean <= max(values)


# ------------------------------------------------------------------- KV capacity


def test_kv_cap_large_equals_replay_in_total():
    # A cap nothing reaches admits exactly like replay; only the worker choice differs.
    cfg = SimConfig(ratio=2, batch=3, steps=200, order="replay", warmup_steps=0, seed=1)
    plain = build_occupancy(SMALL_TRACE, cfg, 200, stationary=False)
    capped = build_occupancy(
        SMALL_TRACE,
        SimConfig(
            ratio=2,
            batch=3,
            steps=200,
            order="replay",
            warmup_steps=0,
            kv_capacity_tokens=10**9,
            seed=1,
        ),
        200,
        stationary=False,
    )
    assert np.array_equal(plain.loads.sum(axis=0), capped.loads.sum(axis=0))
    assert capped.kv.slot_utilisation == 1.0 and capped.kv.waited_requests == 0


def test_kv_cap_binds_and_is_respected():
    workload = parse_workload("geometric:prefill=500,decode_mean=200")
    cap = 16 * 500  # room for fewer than 16 requests of 500 + D tokens
    res = simulate(
        workload, PAPER, SimConfig(ratio=2, batch=16, requests=20_000, kv_capacity_tokens=cap)
    )
    assert res.kv.slot_utilisation < 1.0 and res.kv.waited_requests > 0
    occ = build_occupancy(
        workload, SimConfig(ratio=2, batch=16, steps=3000, kv_capacity_tokens=cap), 3000, False
    )
    assert occ.loads.max() <= cap


def test_kv_cap_rejects_requests_that_never_fit():
    trace = EmpiricalWorkload(np.array([10, 5000]), np.array([5, 5]))
    res = simulate(trace, PAPER, SimConfig(ratio=1, batch=4, steps=500, kv_capacity_tokens=100))
    assert res.kv.rejected_requests > 0


# -------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ratio": 0, "batch": 4, "steps": 10}, "ratio r must be"),
        ({"ratio": 2, "batch": 0, "steps": 10}, "batch B must be"),
        ({"ratio": 2, "batch": 4, "steps": 0}, "steps must be >= 1"),
        ({"ratio": 2, "batch": 4, "steps": -5}, "steps must be >= 1"),
        ({"ratio": 2, "batch": 4}, "exactly one of steps or requests"),
        ({"ratio": 2, "batch": 4, "steps": 5, "requests": 5}, "exactly one"),
        ({"ratio": 2, "batch": 4, "requests": 0}, "requests must be >= 1"),
        ({"ratio": 2, "batch": 4, "steps": 5, "noise": -1}, "noise"),
        ({"ratio": 2, "batch": 4, "steps": 5, "kv_capacity_tokens": 0}, "KV capacity"),
        ({"ratio": 2, "batch": 4, "steps": 5, "mode": "fast"}, "pipeline must be one of"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(InputError, match=message):
        SimConfig(**kwargs)


def test_kv_capacity_below_one_request():
    with pytest.raises(InputError, match="below the smallest request"):
        trace = EmpiricalWorkload(np.array([10, 20]), np.array([5, 5]))
        simulate(trace, PAPER, SimConfig(ratio=1, batch=2, steps=10, kv_capacity_tokens=14))


def test_replay_needs_trace_and_no_stationary():
    with pytest.raises(InputError, match="needs a trace"):
        simulate(
            parse_workload("fixed:prefill=1,decode=1"),
            PAPER,
            SimConfig(ratio=1, batch=1, steps=5, order="replay"),
        )
    with pytest.raises(InputError, match="stationary start"):
        simulate(
            SMALL_TRACE,
            PAPER,
            SimConfig(ratio=1, batch=1, steps=5, order="replay", warmup="stationary"),
        )
