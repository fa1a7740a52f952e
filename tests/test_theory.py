"""The closed-form rule and the barrier refinement against hand and independent values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from afdplan.bundle import Pipeline, max_feasible_batch
from afdplan.errors import InputError
from afdplan.theory import (
    Deployment,
    barrier_point,
    best_row,
    breakpoints,
    evaluate_ratios,
    excess_integral,
    expected_max_normal,
    mean_field_cycle_time,
    optimal_ratio,
    v1_finite_horizon_load,
    weighted_throughput,
)
from afdplan.timing import AttentionLinear, Linear, LinearStepTimes, load_coeffs

PAPER = load_coeffs("paper-v1-dsv3-910c")


def times(
    a_a=0.00165, b_a=50.0, g_a=0.0, a_f=0.083, b_f=100.0, a_c=0.022, b_c=20.0, scope="per_worker"
):
    return LinearStepTimes(
        AttentionLinear(a_a, b_a, g_a), Linear(a_f, b_f), Linear(a_c, b_c), comm_scope=scope
    )


# --------------------------------------------------------------- paper v1 numbers


@pytest.mark.parametrize(
    "batch, mu_p, mu_d, paper_r_star",
    [
        (128, 100, 500, 7.08),
        (256, 100, 500, 9.34),
        (512, 100, 500, 10.31),
        (256, 100, 100, 2.17),
        (256, 100, 500, 9.30),
        (256, 500, 500, 17.25),
    ],
)
def test_reproduces_paper_v1_r_star(batch, mu_p, mu_d, paper_r_star):
    p = 1 / (1 + mu_d)  # v1: μ_D = (1 − p)/p
    load = v1_finite_horizon_load(batch, mu_p, p, n_requests=10_000)
    r_star = optimal_ratio(Deployment(PAPER, batch), load).r_star
    assert r_star == pytest.approx(paper_r_star, rel=0.01)
    # The paper's pipeline named explicitly (afdplan.bundle) gives the same number.
    named = optimal_ratio(Deployment(PAPER, batch, Pipeline("overlap", 1, 61)), load)
    assert named.r_star == r_star


def test_hand_computed_breakpoints():
    # B = 256, load 600: t̄_A = 0.00165·256·600 + 50 = 303.44; α_F·B = 21.248.
    dep = Deployment(PAPER, 256)
    bp = breakpoints(dep, 600.0)
    assert bp.r_attention == pytest.approx((303.44 - 100) / 21.248)
    assert bp.r_comm == pytest.approx((0.022 * 256 + 20 - 100) / 21.248)
    assert bp.r_peak == pytest.approx(math.sqrt(100 / 21.248))
    res = optimal_ratio(dep, 600.0)
    assert res.r_star == pytest.approx(bp.r_attention) and res.regime == "attention"


def test_gamma_enters_attention_time():
    dep = Deployment(times(g_a=0.1), 100)
    assert breakpoints(dep, 10.0).r_attention == pytest.approx(
        (0.00165 * 1000 + 0.1 * 100 + 50 - 100) / (0.083 * 100)
    )


def test_finite_horizon_load_limits():
    p = 1 / 501
    assert v1_finite_horizon_load(256, 100, p, 1e12) == pytest.approx(600, rel=1e-6)
    # N = B: every request is still young, load well below the stationary one.
    assert v1_finite_horizon_load(256, 100, p, 256) < 400


def test_weighted_interior_optimum():
    # FFN-bound: r* = √(β_F·w_F/(α_F·B·w_A)).
    dep = Deployment(times(a_a=1e-6), 64, w_attention=1.0, w_ffn=4.0)
    res = optimal_ratio(dep, 10.0)
    assert res.regime == "ffn"
    assert res.r_star == pytest.approx(math.sqrt(100 * 4 / (0.083 * 64)))


def test_serial_mode_optimum():
    # τ = t̄_A + t̄_C + β_F + α_F·r·B (t̄_C the round trip): r* = √((t̄_A + t̄_C + β_F)/(α_F·B)).
    dep = Deployment(PAPER, 256, pipeline="serial")
    t_a = 0.00165 * 256 * 600 + 50
    t_c = 0.022 * 256 + 20
    res = optimal_ratio(dep, 600.0)
    assert res.regime == "serial"
    assert res.r_star == pytest.approx(math.sqrt((t_a + t_c + 100) / (0.083 * 256)))


coefficient = st.floats(1e-4, 10.0)


@settings(max_examples=200, deadline=None)
@given(
    a_a=coefficient,
    b_a=coefficient,
    a_f=coefficient,
    b_f=coefficient,
    a_c=coefficient,
    b_c=coefficient,
    batch=st.integers(1, 1024),
    load=st.floats(1.0, 5000.0),
    w_f=st.floats(0.25, 8.0),
)
def test_envelope_optimum_is_theorem_4_4(a_a, b_a, a_f, b_f, a_c, b_c, batch, load, w_f):
    dep = Deployment(times(a_a, b_a, 0.0, a_f, b_f, a_c, b_c), batch, w_ffn=w_f)
    bp = breakpoints(dep, load)
    res = optimal_ratio(dep, load)
    assert res.r_star == pytest.approx(max(bp.r_attention, bp.r_comm, bp.r_peak), rel=1e-9)


@settings(max_examples=150, deadline=None)
@given(
    a_a=coefficient,
    b_a=coefficient,
    a_f=coefficient,
    b_f=coefficient,
    a_c=coefficient,
    b_c=coefficient,
    batch=st.integers(1, 256),
    load=st.floats(1.0, 2000.0),
    mode=st.sampled_from(["overlap", "serial"]),
)
def test_aggregate_comm_optimum_beats_dense_grid(a_a, b_a, a_f, b_f, a_c, b_c, batch, load, mode):
    # Independent check: the rule's r* is at least as good as any point of a fine grid.
    dep = Deployment(
        times(a_a, b_a, 0.0, a_f, b_f, a_c, b_c, scope="aggregate"), batch, pipeline=mode
    )
    res = optimal_ratio(dep, load)
    grid = np.geomspace(1e-3, 1e4, 20_001)
    best_grid = weighted_throughput(dep, grid, mean_field_cycle_time(dep, load, grid)).max()
    at_rule = weighted_throughput(dep, res.r_star, mean_field_cycle_time(dep, load, res.r_star))
    assert float(at_rule) >= best_grid * (1 - 1e-9)


@given(batch=st.integers(1, 4096))
def test_r_peak_scales_as_inverse_sqrt_batch(batch):
    r1 = breakpoints(Deployment(PAPER, batch), 100.0).r_peak
    r4 = breakpoints(Deployment(PAPER, 4 * batch), 100.0).r_peak
    assert r1 / r4 == pytest.approx(2.0)


@given(load=st.floats(0.0, 1e5), extra=st.floats(0.0, 1e5), batch=st.integers(1, 1024))
def test_r_star_non_decreasing_in_theta(load, extra, batch):
    dep = Deployment(PAPER, batch)
    assert optimal_ratio(dep, load + extra).r_star >= optimal_ratio(dep, load).r_star * (1 - 1e-12)


@settings(max_examples=100, deadline=None)
@given(batch=st.integers(1, 512), load=st.floats(1.0, 3000.0), b_f=st.floats(1.0, 1e4))
def test_throughput_unimodal_in_ffn_bound_regime(batch, load, b_f):
    dep = Deployment(times(b_f=b_f), batch)
    res = optimal_ratio(dep, load)
    assume(res.regime == "ffn")
    r = np.linspace(1e-3, 10 * res.r_star + 10, 5000)
    theta = weighted_throughput(dep, r, mean_field_cycle_time(dep, load, r))
    k = int(np.argmax(theta))
    assert np.all(np.diff(theta[: k + 1]) >= -1e-12 * theta.max())
    assert np.all(np.diff(theta[k:]) <= 1e-12 * theta.max())


# --------------------------------------------------------------------- barrier


def test_expected_max_normal_known_values():
    assert expected_max_normal(1) == pytest.approx(0.0, abs=1e-10)
    assert expected_max_normal(2) == pytest.approx(1 / math.sqrt(math.pi), rel=1e-9)
    assert expected_max_normal(3) == pytest.approx(1.5 / math.sqrt(math.pi), rel=1e-9)


def test_excess_integral_limits():
    # r = 1: ∫_{z0}^∞ Q(x) dx = φ(z0) − z0·Q(z0).
    from scipy import stats

    for z0 in (-3.0, 0.0, 1.5, 13.0):
        exact = stats.norm.pdf(z0) - z0 * stats.norm.sf(z0)
        assert excess_integral(z0, 1) == pytest.approx(exact, rel=1e-7, abs=1e-300)
    # Far below, the max always exceeds G: the integral is −z0 + E[max].
    assert excess_integral(-50.0, 8) == pytest.approx(50 + expected_max_normal(8), rel=1e-10)


@pytest.mark.parametrize("r", [1, 2, 5, 9, 16, 40])
@pytest.mark.parametrize("mode", ["overlap", "serial"])
def test_barrier_matches_monte_carlo(r, mode):
    dep = Deployment(PAPER, 256, pipeline=mode)
    theta, v = 599.0, 249_500.0
    point = barrier_point(dep, theta, v, r)
    rng = np.random.default_rng(r)
    mu = 0.00165 * 256 * theta + 50
    sigma = 0.00165 * math.sqrt(256 * v)
    t_f = 0.083 * r * 256 + 100
    t_c = 0.022 * 256 + 20
    worst = mu + sigma * rng.standard_normal((200_000, r)).max(axis=1)
    if mode == "overlap":
        mc = np.maximum(max(t_c, t_f), worst).mean()
    else:
        mc = (worst + t_c + t_f).mean()
    assert point.cycle_time == pytest.approx(mc, rel=0.01)
    assert point.cycle_time >= point.cycle_time_mean_field - 1e-9


def test_zero_variance_barrier_is_mean_field():
    dep = Deployment(PAPER, 128)
    for r in (1, 3, 8, 20):
        p = barrier_point(dep, 600.0, 0.0, r)
        assert p.cycle_time == pytest.approx(p.cycle_time_mean_field)


def test_idle_fractions_hand_values():
    dep = Deployment(PAPER, 256)
    p = barrier_point(dep, 600.0, 0.0, 4)  # A-bound: τ = t̄_A = 303.44
    assert p.idle_attention == pytest.approx(0.0)
    assert p.idle_ffn == pytest.approx(1 - (0.083 * 1024 + 100) / 303.44)


def test_barrier_moves_optimum_up_for_attention_bound():
    dep = Deployment(PAPER, 64)
    rows = evaluate_ratios(dep, 1226.0, 508_000.0, list(range(1, 31)))
    mean_rows = evaluate_ratios(dep, 1226.0, 0.0, list(range(1, 31)))
    assert best_row(rows).point.r >= best_row(mean_rows).point.r


def test_rejects_bad_deployments():
    with pytest.raises(InputError):
        Deployment(PAPER, 0)
    with pytest.raises(InputError):
        Deployment(PAPER, 16, pipeline="pipelined")
    with pytest.raises(InputError):
        Deployment(PAPER, 16, w_ffn=0)
    with pytest.raises(InputError):
        barrier_point(Deployment(PAPER, 16), 10.0, 1.0, 0)


# ---------------------------------------------------------------------- memory


def test_max_feasible_batch_hand_value():
    # Zero variance: ⌊C/θ⌋.
    assert max_feasible_batch(10_000, 100.0, 0.0) == 100
    # B·θ + 3√(B·v) ≤ C with θ = 100, v = 10_000: B = 81 gives 8100 + 2700 = 10_800.
    b = max_feasible_batch(10_800, 100.0, 10_000.0)
    assert b == 81
    assert max_feasible_batch(50, 100.0, 0.0) == 0
