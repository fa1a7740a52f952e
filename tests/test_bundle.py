"""The bundle's own facts (DESIGN.md §1–2, §8): GPU totals, costs, weights, the KV limit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from afdplan.bundle import (
    KV_SIGMAS,
    Bundle,
    Pipeline,
    bundle_cost,
    kv_load,
    max_feasible_batch,
    objective_weights,
)
from afdplan.errors import InputError


def test_bundle_gpus_cost_weights_split():
    b = Bundle(6, 64, 2, 8, Pipeline("pingpong", 3, 61))
    assert b.gpus == 6 * 2 + 8
    assert b.cost_per_hour(1.5, 3.0) == pytest.approx(6 * 2 * 1.5 + 8 * 3.0)
    assert b.weights("gpu") == (2.0, 8.0)
    assert b.weights("cost", 1.5, 3.0) == objective_weights("cost", 2, 8, 1.5, 3.0)
    assert list(b.split()) == [22, 21, 21]
    # the vectorised cost is the same arithmetic
    r = np.array([1, 6])
    assert list(bundle_cost(r, 2, 8, 1.5, 3.0)) == [27.0, b.cost_per_hour(1.5, 3.0)]
    with pytest.raises(InputError, match="ratio r must be >= 1"):
        Bundle(0, 64)
    with pytest.raises(InputError, match="GPUs per FFN instance"):
        Bundle(1, 64, 1, 0)


def test_kv_limit_hand_value():
    # B = 100, θ = 90, v = 400: 9,000 + 3·√40,000 = 9,600 tokens.
    assert KV_SIGMAS == 3.0
    assert kv_load(100, 90.0, 400.0) == pytest.approx(9_600.0)
    assert max_feasible_batch(9_600, 90.0, 400.0) == 100
    assert max_feasible_batch(9_599, 90.0, 400.0) == 99


@given(
    batch=st.integers(1, 5_000),
    theta=st.floats(1.0, 5_000.0),
    v=st.floats(0.0, 1e7),
)
def test_max_feasible_batch_inverts_the_kv_load(batch, theta, v):
    # The largest B whose load fits a cache of exactly kv_load(B) tokens is B itself
    # (up to rounding at the boundary), and B + 1 never fits.
    cap = float(kv_load(batch, theta, v))
    best = max_feasible_batch(cap, theta, v)
    assert best in (batch - 1, batch) or math.isclose(kv_load(best, theta, v), cap)
    assert kv_load(best, theta, v) <= cap
    assert kv_load(best + 1, theta, v) > cap
