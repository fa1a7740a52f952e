"""The MoE side of a step (DESIGN.md §10): routing, distinct ranks, the barrier over
expert ranks (closed form against Monte Carlo), the simulator's draws, the coefficients
file, the measured dispatch/combine rows and power-law rows, the CLI option."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afdplan.errors import InputError
from afdplan.normal import expected_max_normal
from afdplan.sim import SimConfig, simulate
from afdplan.timing import Experts, Routing, coeffs_from_dict, coeffs_to_dict, load_coeffs
from afdplan.workload import parse_workload

DSV3 = load_coeffs("deepseek-v3-h200")


def _token_level_loads(rng, experts: int, top_k: int, ranks: int, tokens: int, reps: int):
    """Exact balanced routing, token by token: each token's count on each rank is the
    multivariate hypergeometric draw of k experts out of E in g blocks of E/g."""
    colors = [experts // ranks] * ranks
    per_token = rng.multivariate_hypergeometric(colors, top_k, size=(reps, tokens))
    return per_token.sum(axis=1)  # (reps, g) pairs per rank


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from([(256, 8), (128, 8), (64, 6), (160, 6), (32, 4)]),
    st.sampled_from([2, 4, 8, 16]),
    st.integers(0, 3),  # the normal law only tightens with more tokens; small T is the test
)
def test_busiest_rank_closed_form_matches_monte_carlo(shape, ranks, log_tokens):
    experts, top_k = shape
    if experts % ranks:
        ranks = 2
    tokens = 32 * ranks * 2**log_tokens // top_k + 1  # at least 32 pairs a rank on average
    rng = np.random.default_rng(experts * 1000 + ranks * 10 + log_tokens)
    loads = _token_level_loads(rng, experts, top_k, ranks, tokens, 3000)
    phi = loads.max(axis=1) / (tokens * top_k / ranks)
    mc, se = phi.mean(), phi.std() / math.sqrt(phi.size)
    closed = float(Experts(experts, top_k).imbalance(tokens, ranks))
    # The normal law of the rank loads is an approximation: within 1% of φ where a rank
    # averages >= 32 pairs (it tightens as T grows; at 16 it is up to 2% low, the loads'
    # right skew), plus the Monte Carlo error.
    assert closed == pytest.approx(mc, abs=0.01 * mc + 4 * se)


def test_the_fixed_sum_stretches_the_spread_by_one_over_sqrt_one_minus_one_over_g():
    # g = 2: N_1 − μ = −(N_2 − μ), so E[max] = μ + σ·E|Z| = μ + σ·√(2/π) exactly in the
    # normal law; a √(1 − 1/g) factor (instead of 1/√(1 − 1/g)) would give half of that.
    assert expected_max_normal(2) / math.sqrt(1 - 1 / 2) == pytest.approx(math.sqrt(2 / math.pi))
    e = Experts(256, 8)
    tokens = 1000.0
    sigma = math.sqrt(tokens * e.rank_variance(2))
    assert float(e.imbalance(tokens, 2)) == pytest.approx(
        1 + sigma * math.sqrt(2 / math.pi) / (tokens * 8 / 2)
    )


def test_hypergeometric_variance_and_distinct_ranks_by_hand():
    e = Experts(256, 8)
    # k·(1/g)(1 − 1/g)(E − k)/(E − 1) at g = 8: 8·(1/8)(7/8)(248/255)
    assert e.rank_variance(8) == pytest.approx(7 / 8 * 248 / 255)
    # the chance a rank holds none of a token's 8 experts: C(224, 8)/C(256, 8)
    assert e.distinct_ranks(8) == pytest.approx(8 * (1 - math.comb(224, 8) / math.comb(256, 8)))
    assert e.distinct_ranks(1) == 1.0 and e.imbalance(100, 1) == 1.0
    # one expert per rank and top-1: a token reaches exactly one rank
    assert Experts(8, 1).distinct_ranks(8) == pytest.approx(1.0)
    # the cap: a rank never holds more than T·min(k, E/g) pairs
    assert float(Experts(16, 8).imbalance(1, 8)) <= 8 * min(8, 2) / 8


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5000), st.sampled_from([2, 4, 8, 16, 32]))
def test_imbalance_is_at_least_one_and_falls_with_the_batch(tokens, ranks):
    e = Experts(256, 8)
    phi = e.imbalance(np.array([tokens, 2 * tokens]), ranks)
    assert phi[0] >= phi[1] >= 1.0


def test_simulator_draws_average_to_the_closed_form():
    e = Experts(256, 8)
    rng = np.random.default_rng(7)
    tokens = np.full(200_000, 344.0)
    drawn = e.draw_imbalance(rng, tokens, 8)
    assert drawn.mean() == pytest.approx(float(e.imbalance(344.0, 8)), rel=2e-3)
    assert drawn.min() >= 1.0


def test_simulated_ffn_time_is_the_expected_busiest_rank():
    # Overlap, FFN-bound at every step (B = 256 short sequences, r = 24): the mean step is
    # the mean FFN time, which the theory reads at T·E[φ] (linear in φ on a linear fit).
    wl = parse_workload("fixed:prefill=100,decode=1")
    cfg = SimConfig(ratio=24, batch=256, steps=1000, warmup="cold", warmup_steps=0, seed=3)
    res = simulate(wl, DSV3, cfg)
    tokens = 24 * 256
    expected = float(DSV3.ffn_time(tokens))
    assert res.share_ffn_bound == 1.0
    assert res.mean_step_time_s == pytest.approx(expected, rel=2e-3)
    even = simulate(wl, replace(DSV3, experts=None), cfg)
    assert even.mean_step_time_s == pytest.approx(float(DSV3.ffn(tokens)), rel=1e-12)
    assert res.mean_step_time_s > even.mean_step_time_s  # the barrier costs time


def test_power_law_spread_is_deterministic_and_grows_with_skew():
    mild, steep = Experts(256, 8, Routing.parse("power-law:1.01")), Experts(
        256, 8, Routing.parse("power-law:1.2")
    )
    tokens = np.array([64.0, 1024.0, 8192.0])
    np.testing.assert_array_equal(mild.imbalance(tokens, 8), mild.imbalance(tokens, 8))
    assert (steep.imbalance(tokens, 8) >= mild.imbalance(tokens, 8) - 1e-9).all()
    assert (mild.imbalance(tokens, 8) > Experts(256, 8).imbalance(tokens, 8)).all()
    # a fit measured at the busiest rank carries no further spread
    fitted = Experts(256, 8, Routing.parse("power-law:1.2"), skew_in_fit=True)
    np.testing.assert_array_equal(fitted.imbalance(tokens, 8), 1.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("zipf", "unknown routing 'zipf'; known: balanced, power-law:ALPHA"),
        ("power-law:0", "needs a finite ALPHA > 0"),
        ("power-law:-2", "needs a finite ALPHA > 0"),
        ("power-law:nan", "needs a finite ALPHA > 0"),
        ("power-law:inf", "needs a finite ALPHA > 0"),
        ("power-law:", "ALPHA must be a number"),
        ("balanced:2", "unknown routing"),
    ],
)
def test_routing_parse_errors(text, message):
    with pytest.raises(InputError, match=message):
        Routing.parse(text)


def test_routing_round_trips_and_names_the_table_rows():
    assert str(Routing.parse("power-law:1.2")) == "power-law:1.2"
    assert Routing.parse("Power-Law:1.01").table_distribution == "power_law_1.01"
    assert Routing.parse("balanced").table_distribution == "balanced"


def test_coefficients_file_keeps_the_moe_side():
    data = coeffs_to_dict(DSV3)
    assert data["experts"] == {
        "experts": 256,
        "top_k": 8,
        "routing": "balanced",
        "skew_in_fit": False,
    }
    back = coeffs_from_dict(data, "round trip")
    assert back.experts == DSV3.experts and back.exchange == DSV3.exchange
    bad = {**data, "experts": {**data["experts"], "top_k": 300}}
    with pytest.raises(InputError, match="top_k = 300 exceeds the 256 experts"):
        coeffs_from_dict(bad, "f")
    bad = {**data, "experts": {**data["experts"], "shards": 2}}
    with pytest.raises(InputError, match=r"unknown key\(s\) in \[experts\]: shards"):
        coeffs_from_dict(bad, "f")
    bad = {**data, "experts": {**data["experts"], "experts": 2.5}}
    with pytest.raises(InputError, match=r"experts\.experts must be an integer"):
        coeffs_from_dict(bad, "f")


def test_a_skewed_fit_refuses_another_routing():
    skewed = replace(
        DSV3, experts=Experts(256, 8, Routing.parse("power-law:1.2"), skew_in_fit=True)
    )
    with pytest.raises(InputError, match=r"was measured at power-law:1\.2 routing"):
        skewed.with_routing("balanced")
    assert DSV3.with_routing("power-law:1.5").experts.routing.alpha == 1.5


# ---------------------------------------------------------------- measured tables


def test_measured_exchange_is_deepeps_low_latency_row(aic):
    """DeepSeek-V3 on an EP-8 H200 group: the exchange of a micro-batch of T tokens is
    dispatch + combine of vLLM 0.24's DeepEP low-latency rows at T/8 tokens a rank."""
    import pandas as pd

    from afdplan.calibrate.aiconfig import data_root, measured_tables
    from afdplan.calibrate.specs import load_hardware, load_model

    table = pd.read_parquet(data_root() / "h200_sxm/comm/vllm/0.24.0/moe_a2a_perf.parquet")
    row = table[
        (table["comm_backend"] == "deepep_ll")
        & (table["hidden_size"] == 7168)
        & (table["topk"] == 8)
        & (table["num_experts"] == 256)
        & (table["num_tokens"] == 128)
    ].set_index("phase")["latency"]
    model = load_model("deepseek-v3")
    rows = measured_tables(model, "h200_sxm", "vllm", 1, 8, hw=load_hardware("h200")).rows
    exchange = rows[rows["op"] == "exchange"].set_index("tokens")["seconds"]
    per_layer_us = row["dispatch"] + row["combine"]  # 112.1 + 100.6 us at 128 tokens a rank
    assert exchange.loc[1024] == pytest.approx(58 * per_layer_us / 1e6)


def test_power_law_rows_are_read_and_time_the_busiest_rank(aic, cli):
    from afdplan.calibrate.resolve import resolve_step_times

    linear, curves = resolve_step_times(
        "deepseek-v3-h200", None, None, routing="power-law:1.01"
    )
    assert linear.experts.skew_in_fit and str(linear.experts.routing) == "power-law:1.01"
    # the rows are used as measured: φ = 1 on top of them
    assert float(curves.ffn_time(2048)) == pytest.approx(float(curves.ffn(2048)))
    res = cli("plan", "--routing", "power-law:1.01", "--json")
    assert res.code == 0, res.err
    assert "power-law:1.01 routing" in res.json()["coeffs"]


def test_roofline_routing_changes_only_the_spread(cli):
    res = cli("plan", "--coeffs", "roofline:qwen3-235b-a22b@h200", "--routing", "power-law:1.2")
    assert res.code == 0, res.err
    res = cli("plan", "--coeffs", "roofline:llama3-70b@h100-sxm", "--routing", "power-law:1.2")
    assert res.code == 2 and "has no routed experts (--routing)" in res.err


def test_busiest_rank_quantile_matches_monte_carlo():
    e = Experts(256, 8)
    rng = np.random.default_rng(11)
    tokens = 512
    loads = _token_level_loads(rng, 256, 8, 8, tokens, 20_000)
    phi = loads.max(axis=1) / (tokens * 8 / 8)
    for q in (0.9, 0.99):
        assert float(e.imbalance_quantile(tokens, 8, q)) == pytest.approx(
            np.quantile(phi, q), rel=0.01
        )
    assert float(e.imbalance_quantile(tokens, 8, 0.99)) > float(e.imbalance(tokens, 8))
