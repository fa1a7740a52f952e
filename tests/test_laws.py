"""Length laws: exact moments against direct sums, sampling against the pmf."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afdplan.errors import InputError
from afdplan.workload import Geometric, fixed, lognormal, uniform


def brute_moments(values: np.ndarray, probs: np.ndarray) -> tuple[float, float, float]:
    x = values.astype(float)
    return tuple(float(np.sum(probs * x**k)) for k in (1, 2, 3))


@pytest.mark.parametrize("p", [0.5, 0.1, 0.01, 1.0])
@pytest.mark.parametrize("start", [0, 1, 3])
def test_geometric_moments_match_truncated_sum(p, start):
    law = Geometric(p=p, start=start)
    k = np.arange(0, 20_000)
    probs = p * (1 - p) ** k
    expected = brute_moments(k + start, probs)
    assert law.raw_moments() == pytest.approx(expected, rel=1e-9)


def test_geometric_from_mean():
    assert Geometric.from_mean(500).mean() == pytest.approx(500)
    assert Geometric.from_mean(500).p == pytest.approx(1 / 500)
    assert Geometric.from_mean(10, start=0).mean() == pytest.approx(10)


@pytest.mark.parametrize("start", [0, 1, 4])
def test_geometric_size_biased_sampler(start):
    law = Geometric(p=0.2, start=start)
    rng = np.random.default_rng(1)
    draws = law.sample_size_biased(rng, 400_000)
    m1, m2, _ = law.raw_moments()
    # Size-biased mean is E[X²]/E[X].
    assert draws.mean() == pytest.approx(m2 / m1, rel=0.01)
    assert draws.min() >= max(start, 1)


def test_fixed_and_uniform_moments():
    assert fixed(7).raw_moments() == (7.0, 49.0, 343.0)
    law = uniform(1, 4)
    assert law.raw_moments() == pytest.approx((2.5, 7.5, 25.0))


def test_lognormal_pmf_is_normalised_and_capped():
    law = lognormal(200, 1.0, maximum=1000)
    assert law.probs.sum() == pytest.approx(1.0)
    assert law.values.max() == 1000 and law.values.min() == 1
    # The median of ceil(X) is the ceiling of X's median.
    cdf = np.cumsum(law.probs)
    assert law.values[np.searchsorted(cdf, 0.5)] == 200


def test_discrete_sampling_matches_pmf():
    law = uniform(3, 6)
    draws = law.sample(np.random.default_rng(0), 200_000)
    freq = np.bincount(draws, minlength=7)[3:] / draws.size
    assert freq == pytest.approx(np.full(4, 0.25), abs=0.005)
    biased = law.sample_size_biased(np.random.default_rng(0), 200_000)
    assert biased.mean() == pytest.approx(law.raw_moments()[1] / law.raw_moments()[0], rel=0.005)


@given(lo=st.integers(0, 50), width=st.integers(0, 50))
def test_uniform_moments_property(lo, width):
    law = uniform(lo, lo + width)
    values = np.arange(lo, lo + width + 1)
    assert law.raw_moments() == pytest.approx(
        brute_moments(values, np.full(values.size, 1 / values.size)), rel=1e-12
    )


@settings(max_examples=30, deadline=None)
@given(median=st.floats(2, 500), sigma=st.floats(0.05, 1.5))
def test_lognormal_mean_close_to_continuous(median, sigma):
    # ceil() adds between 0 and 1 token to the continuous mean, clipping only removes.
    law = lognormal(median, sigma)
    continuous = median * math.exp(sigma**2 / 2)
    assert continuous - 1e-3 * continuous <= law.mean() <= continuous + 1.0 + 1e-6


@pytest.mark.parametrize(
    "make",
    [
        lambda: Geometric(p=0),
        lambda: Geometric(p=1.5),
        lambda: Geometric(p=float("nan")),
        lambda: fixed(-1),
        lambda: fixed(2.5),
        lambda: uniform(5, 2),
        lambda: lognormal(-1, 1),
        lambda: lognormal(100, 0),
        lambda: lognormal(100, 4.0),  # tail too heavy to tabulate without a cap
    ],
)
def test_bad_law_parameters(make):
    with pytest.raises(InputError):
        make()
