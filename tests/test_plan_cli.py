"""``afdplan plan``: JSON contract, default scenario, KV feasibility and exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from afdplan.plan import make_plan
from afdplan.timing import load_coeffs
from afdplan.workload import parse_workload

from .conftest import FIXTURES

REQUIRED_KEYS = {
    "theta",
    "mu_prefill",
    "mu_decode",
    "r_star",
    "r_star_v1",
    "r_recommended",
    "regime",
    "rows",
}


def test_default_scenario_runs(cli):
    res = cli("plan")
    assert res.code == 0, res.err
    assert "Recommendation: r =" in res.out


def test_json_contract(cli):
    res = cli(
        "plan",
        "--trace",
        FIXTURES / "tiny_trace.csv",
        "--coeffs",
        "paper-v1-dsv3-910c",
        "--batch",
        "64",
        "--json",
    )
    assert res.code == 0, res.err
    data = res.json()
    assert REQUIRED_KEYS <= set(data)
    assert all({"r", "step_time_s", "throughput_per_instance"} <= set(row) for row in data["rows"])
    assert [row["r"] for row in data["rows"]] == list(range(1, len(data["rows"]) + 1))
    best = max(data["rows"], key=lambda row: row["throughput_per_weight"])
    assert data["r_recommended"] == best["r"]


def test_plan_matches_library_and_coeff_file(cli, tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            {
                "attention": {"alpha": 0.00165, "beta": 50},
                "ffn": {"alpha": 0.083, "beta": 100},
                "comm": {"alpha": 0.022, "beta": 20},
            }
        )
    )
    spec = "geometric:prefill=100,p=0.002"
    data = cli("plan", "--workload", spec, "--coeffs", path, "-B", "256", "--json").json()
    lib = make_plan(parse_workload(spec), load_coeffs("paper-v1-dsv3-910c"), 256)
    assert data["r_star"] == pytest.approx(lib.rule.r_star)
    # θ = μ_P + (1 − p)/p for geometric D: v1's load, 599, vs μ_P + E[D] = 600.
    assert data["theta"] == pytest.approx(599.0)
    assert data["r_star"] == pytest.approx((0.00165 * 256 * 599 + 50 - 100) / (0.083 * 256))


def test_weights_shift_optimum(cli):
    base = [
        "plan",
        "--workload",
        "fixed:prefill=10,decode=2",
        "--coeffs",
        "paper-v1-dsv3-910c",
        "-B",
        "16",
        "--json",
    ]
    one = cli(*base).json()
    heavy = cli(*base, "--w-ffn", "4").json()
    assert heavy["r_star"] == pytest.approx(2 * one["r_star"])  # √(w_F) scaling, FFN-bound


def test_kv_capacity_refuses_infeasible_batch(cli):
    res = cli("plan", "--workload", "fixed:prefill=4000,decode=100", "--batch", "1000")
    assert res.code == 2
    assert "does not fit the KV cache" in res.err and "largest feasible B" in res.err


def test_presets_lists_sets(cli):
    res = cli("presets")
    assert res.code == 0 and "paper-v1-dsv3-910c" in res.out


def test_json_is_strict_with_aggregate_comm(cli):
    # Aggregate communication has no per-worker r_C: null, never a bare NaN token.
    res = cli("plan", "--comm", "aggregate", "--json")
    assert res.code == 0, res.err

    def reject(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    data = json.loads(res.out, parse_constant=reject)
    assert data["breakpoints"]["r_comm"] is None
    assert data["breakpoints"]["r_attention_comm"] is not None


def test_a_shipped_set_is_read_at_other_sizes_from_its_tables(cli, aic):
    from afdplan.calibrate.measured_sets import shipped_sources
    from afdplan.calibrate.resolve import resolve_step_times
    from afdplan.calibrate.roofline import expert_exchange
    from afdplan.calibrate.specs import load_hardware, load_model

    linear, curves = resolve_step_times("deepseek-v3-h200", None, None, (None, 16))
    fitted, rows = shipped_sources()["deepseek-v3-h200"].calibrate(1, 16, "")
    # 16 H200s span two nodes: no DeepEP table there, so the exchange is the link
    # roofline (the network between the nodes), inside the measured FFN rows.
    alpha, beta = expert_exchange(load_model("deepseek-v3"), load_hardware("h200"), 16)
    assert linear.exchange.alpha == pytest.approx(alpha) and alpha > 0
    assert linear.exchange.beta == pytest.approx(beta) and beta > 0
    assert linear.gpus_ffn == 16 and linear.attention == fitted.attention
    assert linear.ffn == fitted.ffn
    ffn = rows[rows["op"] == "ffn"].set_index("tokens")["seconds"]
    exchange = rows[rows["op"] == "exchange"].set_index("tokens")["seconds"]
    np.testing.assert_allclose(exchange, alpha * exchange.index + beta)
    middle = ffn.index[len(ffn) // 2]
    assert float(curves.ffn(middle)) == pytest.approx(ffn.loc[middle])
    res = cli("plan", "--gpus-ffn", "16", "--json")
    assert res.code == 0, res.err
    data = res.json()
    assert data["coeffs"] == "deepseek-v3-h200 at TP 1, FFN group 16"
    assert data["gpus_ffn"] == 16


def test_without_the_tables_a_measured_set_refuses_other_sizes(cli, monkeypatch):
    from afdplan.calibrate import measured_sets

    monkeypatch.setattr(measured_sets, "tables_installed", lambda: False)
    res = cli("plan", "--gpus-ffn", "16")
    assert res.code == 2
    assert "deepseek-v3-h200 was measured with 8 FFN GPUs; for 16 install the measured extra" in (
        res.err
    )
