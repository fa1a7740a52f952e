"""Ready on a stranger's machine: shipped data, the numpy-only normal helpers,
one CLI vocabulary, help text, piped output, and what ``plan`` says about how sure it is."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afdplan import normal
from afdplan.calibrate.resolve import resolve_coeffs, set_curves
from afdplan.data import BUILTIN_DATA, builtin_path, resolve_input
from afdplan.errors import InputError
from afdplan.plan import make_plan
from afdplan.timing import TableStepTimes, load_coeffs, read_coeffs_file
from afdplan.timing.tables import tables_from_columns
from afdplan.workload import parse_workload, read_trace

# ------------------------------------------------------------------ normal.py vs scipy


def test_normal_helpers_match_scipy():
    special = pytest.importorskip("scipy.special")
    x = np.linspace(-36.0, 30.0, 20_001)
    ref = special.log_ndtr(x)
    assert np.allclose(normal.log_cdf_array(x), ref, rtol=1e-12, atol=0)
    assert np.allclose(normal.cdf_array(x), special.ndtr(x), rtol=1e-12, atol=1e-300)
    for v in (-50.0, -37.5, -5.0, 0.0, 3.0, 9.0):
        assert normal.log_cdf(v) == pytest.approx(float(special.log_ndtr(v)), rel=1e-12)
        assert normal.sf(v) == pytest.approx(float(special.ndtr(-v)), rel=1e-13)
    assert normal.Z_1E9 == pytest.approx(float(special.ndtri(1 - 1e-9)), rel=1e-15)


def test_gauss_legendre_nodes_and_accuracy():
    nodes, weights = np.polynomial.legendre.leggauss(16)
    assert np.allclose(normal._NODES, nodes, rtol=0, atol=1e-15)
    assert np.allclose(normal._WEIGHTS, weights, rtol=0, atol=1e-15)
    # ∫_0^π sin = 2; ∫_{-10}^{10} φ = 1 − 2Q(10).
    assert normal.integrate(np.sin, 0.0, math.pi) == pytest.approx(2.0, rel=1e-14)
    gauss = normal.integrate(lambda x: np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi), -10, 10)
    assert gauss == pytest.approx(1 - 2 * normal.sf(10.0), rel=1e-14)


@settings(max_examples=60, deadline=None)
@given(st.floats(-30, 30), st.floats(-30, 30))
def test_log_cdf_is_increasing(a, b):
    lo, hi = sorted((a, b))
    assert normal.log_cdf(lo) <= normal.log_cdf(hi)


# ------------------------------------------------------------------ shipped data


def test_every_shipped_file_exists_with_its_source():
    sources = (builtin_path("azure-conv-2023").parents[1] / "SOURCES.md").read_text()
    for name in BUILTIN_DATA:
        assert builtin_path(name).is_file(), name
        assert f"`{name}`" in sources, f"{name} has no source/licence line in SOURCES.md"
    assert (builtin_path("vidur-h100-dgx").parent / "LICENSE").read_text().strip()


def test_resolve_input_paths_names_and_mistakes(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("x")
    assert resolve_input(str(path), "trace") == path
    assert resolve_input("azure-code-2023", "trace") == builtin_path("azure-code-2023")
    with pytest.raises(InputError, match="built-in trace names: azure-code-2023, azure-conv"):
        resolve_input("nope.csv", "trace")
    with pytest.raises(InputError, match="is a folder"):
        resolve_input(str(tmp_path), "trace")
    with pytest.raises(InputError, match="no such file"):  # a name of another kind
        resolve_input("azure-conv-2023", "tables")


def test_shipped_traces_read_by_name(cli):
    res = cli("plan", "--trace", "azure-code-2023", "--json")
    assert res.code == 0, res.err
    assert res.json()["theta"] == pytest.approx(2130.426, rel=1e-6)


# ------------------------------------------------------------------ coefficient files


def test_time_units_convert_to_seconds(tmp_path):
    body = (
        "[attention]\nalpha=2\nbeta=3\ngamma=4\n[ffn]\nalpha=5\nbeta=6\n[comm]\nalpha=7\nbeta=8\n"
    )
    (tmp_path / "ms.toml").write_text("[meta]\ntime_unit = 'ms'\n" + body)
    (tmp_path / "us.toml").write_text("[meta]\ntime_unit = 'us'\n" + body)
    ms, us = read_coeffs_file(tmp_path / "ms.toml"), read_coeffs_file(tmp_path / "us.toml")
    assert ms.time_unit == "s" and ms.attention.gamma == pytest.approx(4e-3)
    assert us.ffn.beta == pytest.approx(6e-6) and us.comm.alpha == pytest.approx(7e-6)
    assert load_coeffs("paper-v1-dsv3-910c").time_unit == "arbitrary"


def test_built_in_sets_ship_their_measured_curves(tmp_path):
    linear = resolve_coeffs("deepseek-v3-h200")
    curves = set_curves(linear)
    assert isinstance(curves, TableStepTimes)
    assert curves.stages() == ["attention", "ffn"]
    assert set_curves(resolve_coeffs("paper-v1-dsv3-910c")) is None
    # A file's curves are found beside it.
    (tmp_path / "t.csv").write_text(
        "op,tokens,kv_tokens,batch,seconds\nffn,1,,,0.01\nffn,100,,,0.02\n"
    )
    (tmp_path / "c.toml").write_text(
        "[meta]\ncurves = 't.csv'\n[attention]\nalpha=1e-8\nbeta=1e-3\n"
        "[ffn]\nalpha=1e-6\nbeta=1e-2\n[comm]\nalpha=1e-7\nbeta=1e-4\n"
    )
    local = set_curves(resolve_coeffs(str(tmp_path / "c.toml")))
    assert local is not None and float(local.ffn_time(50.5)) == pytest.approx(0.015)


def test_csv_table_reader_equals_the_frame_reader():
    import pandas as pd

    linear = load_coeffs("deepseek-v3-h200")
    path = builtin_path("deepseek-v3-h200")
    from afdplan.timing import read_step_table, tables_from_frame

    fast = read_step_table(path, linear)
    frame = tables_from_frame(pd.read_csv(path), linear, path.name)
    n = np.array([64.0, 512.0, 4096.0])
    assert np.array_equal(fast.ffn_time(n), frame.ffn_time(n))
    kv = np.array([1e4, 3e5, 2e6])
    assert np.array_equal(fast.attention_time(64, kv), frame.attention_time(64, kv))


def test_boolean_table_values_are_not_numbers():
    cols = {
        "op": np.array(["ffn", "ffn"], dtype=object),
        "tokens": np.array([True, 2], dtype=object),
        "seconds": np.array([0.1, 0.2], dtype=object),
    }
    with pytest.raises(InputError, match="non-numeric or missing 'tokens'"):
        tables_from_columns(cols, load_coeffs("paper-v1-dsv3-910c"), "t")


# ------------------------------------------------------------------ CLI vocabulary


def test_help_keeps_bracketed_defaults_and_lists_choices(cli):
    res = cli("simulate", "--help")
    assert res.code == 0
    text = " ".join(res.out.split())
    for needle in ("[200000]", "[plan's pick]", "[default: deepseek-v3-h200]", "overlap|serial"):
        assert needle in text, needle
    res = cli("sweep", "--help")
    assert "loky|threading|dask|ray" in res.out and "iid|replay" in res.out


def test_piped_tables_keep_whole_cells(cli):
    res = cli("presets")
    assert res.code == 0
    provenance = load_coeffs("deepseek-v3-h200").provenance
    assert provenance in res.out  # not cut to the width of a terminal that is not there
    assert "…" not in res.out


def test_presets_json_lists_everything(cli):
    res = cli("presets", "--json")
    assert res.code == 0, res.err
    data = res.json()
    assert {"coefficient_sets", "models", "hardware", "runtimes", "data"} == set(data)
    assert data["coefficient_sets"]["deepseek-v3-h200"]["meta"]["curves"] == "deepseek-v3-h200"
    assert data["data"]["azure-conv-2023"]["option"] == "--trace"
    pinned = {(r["runtime"], r["version"]): r["commit"] for r in data["runtimes"]}
    assert pinned[("vllm-afd", "0.19.1rc1")].startswith("2f4f4627")


def test_one_spelling_for_batch_ratio_and_seed(cli):
    common = ["--workload", "geometric:prefill=500,decode_mean=50", "--coeffs"]
    common += ["paper-v1-dsv3-910c"]
    plan = cli("plan", *common, "-B", "32", "-r", "2-6", "--json")
    assert plan.code == 0, plan.err
    assert [row["r"] for row in plan.json()["rows"]] == [2, 3, 4, 5, 6]
    sim = cli("simulate", *common, "--batch", "32", "--ratio", "3", "--requests", "300")
    assert sim.code == 0, sim.err
    sweep = cli(
        "sweep", *common, "--batch", "32", "--ratio", "2-3", "--seeds", "1", "--seed", "5",
        "--requests", "300", "--jobs", "1", "--json",
    )  # fmt: skip
    assert sweep.code == 0, sweep.err


def test_sweep_theory_is_not_capped_by_the_swept_range(cli):
    wl = ["--workload", "geometric:prefill=500,decode_mean=100"]
    plan = cli("plan", *wl, "-B", "16", "--json").json()
    sweep = cli(
        "sweep", *wl, "--ratio", "4", "-B", "16", "--seeds", "1", "--requests", "300",
        "--jobs", "1", "--json",
    )  # fmt: skip
    assert sweep.code == 0, sweep.err
    assert plan["r_recommended"] > 4
    assert sweep.json()["optima"][0]["r_theory"] == plan["r_recommended"]


def test_simulate_refuses_infeasible_batch_unless_overcommitted(cli):
    args = ["simulate", "--workload", "fixed:prefill=4000,decode=10", "-B", "5000", "-r", "1"]
    refused = cli(*args, "--steps", "20")
    assert refused.code == 2 and "does not fit the KV cache" in refused.err
    assert cli(*args, "--steps", "20", "--overcommit").code == 0


def test_output_folders_are_created_before_the_work(cli, tmp_path):
    target = tmp_path / "a" / "b"
    res = cli("calibrate", "--model", "llama3-70b", "--hardware", "h100-sxm", "--save-dir", target)
    assert res.code == 0, res.err
    assert (target / "coefficients.toml").is_file()
    rows = tmp_path / "c" / "rows.parquet"
    res = cli(
        "sweep", "--workload", "fixed:prefill=100,decode=10", "--coeffs", "paper-v1-dsv3-910c",
        "-B", "8", "-r", "1-2", "--seeds", "1", "--steps", "50", "--jobs", "1", "-o", rows,
    )  # fmt: skip
    assert res.code == 0, res.err
    import pandas as pd

    assert len(pd.read_parquet(rows)) == 2


def test_drop_invalid_reports_the_count(cli, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens\n100,10\n5,0\n-1,4\n200,20\n")
    res = cli("plan", "--trace", path, "--drop-invalid", "--json")
    assert res.code == 0, res.err
    assert res.json()["dropped_rows"] == 2
    text = cli("plan", "--trace", path, "--drop-invalid")
    assert "2 invalid rows dropped" in text.out


# ------------------------------------------------------------------ plan: how sure


def test_plan_certainty_on_a_trace_and_a_law():
    linear = load_coeffs("paper-v1-dsv3-910c")
    trace = read_trace(builtin_path("azure-code-2023"))
    res = make_plan(trace, linear, 64)
    c = res.certainty
    s = res.stats
    assert c.theta_interval == pytest.approx(
        (s.theta - 1.96 * s.theta_se, s.theta + 1.96 * s.theta_se)
    )
    lo, hi = c.band
    assert lo <= res.recommended.point.r <= hi
    best = res.recommended.throughput_per_weight
    near = [row.point.r for row in res.rows if row.throughput_per_weight >= 0.99 * best]
    assert (min(near), max(near)) == (lo, hi)
    # Attention-bound: a larger θ is more attention work per worker, so each FFN instance
    # can feed more workers: r grows with θ across its interval.
    assert res.rule.regime == "attention"
    r_lo, r_hi = c.r_at_theta_interval
    assert r_lo <= res.recommended.point.r <= r_hi
    law = make_plan(parse_workload("geometric:prefill=100,decode_mean=500"), linear, 256)
    assert law.certainty.theta_interval is None and law.certainty.r_curves is None


def test_plan_uses_the_sets_curves_and_reports_the_linear_rule(cli):
    res = cli("plan", "--json")
    assert res.code == 0, res.err
    c = res.json()["certainty"]
    assert c["r_curves"] == res.json()["r_recommended"] and "deepseek-v3-h200" in c["curves"]
    assert res.json()["curves"] == c["curves"]
    linear = cli("plan", "--linear-only", "--json").json()
    assert linear["curves"] is None
    assert linear["certainty"]["r_linear"] == linear["r_recommended"] == c["r_linear"]
    assert linear["certainty"]["r_curves"] == c["r_curves"]
    text = cli("plan").out
    assert "How sure:" in text and "on the measured curves" in text
    assert "none: that regime never binds" in text


def test_search_over_r_is_not_bounded_by_the_linear_rule():
    # A flat FFN curve (weight-bound at every batch): more workers are always better.
    linear = load_coeffs("paper-v1-dsv3-910c")
    cols = {
        "op": np.array(["ffn", "ffn"], dtype=object),
        "tokens": np.array([1.0, 1e9]),
        "seconds": np.array([100.0, 100.0]),
    }
    flat = tables_from_columns(cols, linear, "flat")
    wl = parse_workload("geometric:prefill=100,decode_mean=100")
    res = make_plan(wl, linear, 64, curves=flat)
    assert res.recommended.point.r > 4 * res.rule.r_star


def test_plan_says_when_it_reads_curves_outside_their_range(cli):
    long = (
        "lognormal:prefill_median=200000,prefill_sigma=0.3,prefill_max=400000,"
        "decode_median=100,decode_sigma=0.5,decode_max=1000"
    )
    res = cli("plan", "--workload", long, "--json")
    assert res.code == 0, res.err
    (note,) = res.json()["notes"]
    assert note.startswith("attention:") and "beyond the longest measured context" in note
    assert cli("plan", "--json").json()["notes"] == []
    flat = cli("plan", "--workload", long, "--linear-only", "--json").json()
    assert flat["notes"] == []  # a linear model has no measured range to leave
