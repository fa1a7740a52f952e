"""θ and v (DESIGN.md §2): closed forms, hand values, estimator convergence, mixtures."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afdplan.errors import InputError
from afdplan.workload import (
    EmpiricalWorkload,
    Geometric,
    IndependentWorkload,
    MixtureWorkload,
    fixed,
    parse_workload,
    uniform,
)


def enumerate_contexts(prompts, decodes):
    """Every per-step context under the P + k − 1 convention, written out."""
    return np.concatenate([p + np.arange(d) for p, d in zip(prompts, decodes, strict=True)])


def test_hand_computed_trace():
    # Contexts: 10, 11 (P=10, D=2) and 0, 1, 2 (P=0, D=3): mean 24/5, E[x²] = 226/5.
    w = EmpiricalWorkload(np.array([10, 0]), np.array([2, 3]))
    s = w.stats()
    assert s.theta == pytest.approx(4.8)
    assert s.v == pytest.approx(226 / 5 - 4.8**2)
    assert s.mu_prefill == 5 and s.mu_decode == 2.5 and s.load_v1 == 7.5


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 60)), min_size=1, max_size=40))
def test_trace_estimator_equals_enumeration(pairs):
    prompts, decodes = map(np.array, zip(*pairs, strict=True))
    ctx = enumerate_contexts(prompts, decodes)
    s = EmpiricalWorkload(prompts, decodes).stats()
    assert s.theta == pytest.approx(ctx.mean(), rel=1e-12)
    assert s.v == pytest.approx(ctx.var(), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("p", [0.5, 0.01, 1 / 501])
@pytest.mark.parametrize("mu_p", [0, 100, 2048])
def test_geometric_theta_is_paper_mu_p_plus_mu_d(p, mu_p):
    # Under the P + k − 1 convention, θ = μ_P + (1 − p)/p: v1's μ_P + μ_D, μ_D = (1−p)/p.
    w = IndependentWorkload(fixed(mu_p), Geometric(p=p))
    assert w.stats().theta == pytest.approx(mu_p + (1 - p) / p, rel=1e-12)
    assert w.stats().mu_decode == pytest.approx(1 / p)


def test_geometric_variance_closed_form():
    # Stationary age of a geometric request is Geom0(p): Var = (1 − p)/p².
    p = 0.01
    w = IndependentWorkload(fixed(100), Geometric(p=p))
    assert w.stats().v == pytest.approx((1 - p) / p**2, rel=1e-12)


def test_fixed_lengths_closed_form():
    # Contexts P, …, P + d − 1 equally often: mean P + (d − 1)/2, variance (d² − 1)/12.
    w = IndependentWorkload(fixed(300), fixed(41))
    assert w.stats().theta == pytest.approx(320)
    assert w.stats().v == pytest.approx((41**2 - 1) / 12)


@settings(max_examples=30, deadline=None)
@given(plo=st.integers(0, 20), pw=st.integers(0, 10), dlo=st.integers(1, 20), dw=st.integers(0, 10))
def test_independent_equals_enumeration(plo, pw, dlo, dw):
    prompt, decode = uniform(plo, plo + pw), uniform(dlo, dlo + dw)
    pp, dd = np.meshgrid(prompt.values, decode.values)
    s = IndependentWorkload(prompt, decode).stats()
    e = EmpiricalWorkload(pp.ravel(), dd.ravel()).stats()  # every (P, D) pair once
    assert s.theta == pytest.approx(e.theta, rel=1e-12)
    assert s.v == pytest.approx(e.v, rel=1e-9, abs=1e-9)


def test_mixture_equals_pooled_enumeration():
    mix = MixtureWorkload(
        (IndependentWorkload(fixed(100), fixed(4)), IndependentWorkload(fixed(7), fixed(10))),
        (3.0, 1.0),
    )
    pooled = EmpiricalWorkload(np.array([100, 100, 100, 7]), np.array([4, 4, 4, 10]))
    assert mix.stats().theta == pytest.approx(pooled.stats().theta)
    assert mix.stats().v == pytest.approx(pooled.stats().v)


@pytest.mark.parametrize(
    "spec",
    [
        "geometric:prefill=512,decode_mean=256",
        "lognormal:prefill_median=800,prefill_sigma=0.7,decode_median=150,decode_sigma=0.8",
        "mix:0.6*geometric:prefill=100,decode_mean=50 + 0.4*fixed:prefill=2000,decode=20",
    ],
)
def test_estimator_converges_to_closed_form(spec):
    w = parse_workload(spec)
    prompts, decodes = w.sample(np.random.default_rng(7), 400_000)
    est = EmpiricalWorkload(prompts, decodes).stats()
    exact = w.stats()
    assert est.theta == pytest.approx(exact.theta, rel=0.01)
    assert est.v == pytest.approx(exact.v, rel=0.05)
    # The delta-method standard error covers the gap.
    assert abs(est.theta - exact.theta) < 5 * est.theta_se


@pytest.mark.parametrize(
    "spec",
    [
        "geometric:prefill=512,decode_mean=256",
        "uniform:prefill_lo=10,prefill_hi=900,decode_lo=1,decode_hi=300",
        "mix:0.6*geometric:prefill=100,decode_mean=50 + 0.4*fixed:prefill=2000,decode=20",
    ],
)
def test_stationary_sampler_is_size_biased(spec):
    # A slot at a random step serves request (P, D) with probability ∝ D; its average
    # context over the request's life, weighted that way, is θ again.
    w = parse_workload(spec)
    p, d = w.sample_stationary(np.random.default_rng(3), 400_000)
    exact = w.stats()
    assert (p + (d - 1) / 2).mean() == pytest.approx(exact.theta, rel=0.01)


def test_same_seed_same_draws():
    w = parse_workload("mix:0.5*geometric:prefill=10,decode_mean=5 + 0.5*fixed:prefill=3,decode=2")
    a = w.sample(np.random.default_rng(11), 1000)
    b = w.sample(np.random.default_rng(11), 1000)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_spec_kinds():
    assert parse_workload("fixed:prefill=5,decode=3").stats().theta == pytest.approx(6)
    w = parse_workload("geometric:prefill=100,p=0.002")
    assert w.stats().theta == pytest.approx(100 + 0.998 / 0.002)
    w = parse_workload("uniform:prefill_lo=0,prefill_hi=0,decode_lo=1,decode_hi=3")
    assert w.stats().theta == pytest.approx(EmpiricalWorkload([0, 0, 0], [1, 2, 3]).stats().theta)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("geometric", "KIND:params"),
        ("poisson:prefill=1", "unknown workload kind"),
        ("geometric:prefill=10", "missing decode_mean"),
        ("geometric:prefill=10,decode_mean=abc", "must be a number"),
        ("geometric:prefill=10,decode_mean=nan", "finite"),
        ("geometric:prefill=10,decode_mean=0", "geometric mean"),
        ("fixed:prefill=10,decode=0", "decode must be >= 1"),
        ("fixed:prefill=-5,decode=3", ">= 0"),
        ("fixed:decode=3", "prefill"),
        ("fixed:prefill=1,decode=3,colour=2", "unknown parameter 'colour'"),
        ("mix:geometric:prefill=1,decode_mean=2", "WEIGHT*SPEC"),
        ("mix:-1*fixed:prefill=1,decode=2", "weights"),
        ("trace:", "needs a path"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(InputError, match=message.replace("*", r"\*")):
        parse_workload(spec)


def test_empirical_rejects_bad_arrays():
    with pytest.raises(InputError):
        EmpiricalWorkload(np.array([], dtype=int), np.array([], dtype=int))
    with pytest.raises(InputError):
        EmpiricalWorkload(np.array([1]), np.array([0]))
