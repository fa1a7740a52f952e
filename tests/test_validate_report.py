"""The validation study and its report: structure, internal consistency, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from afdplan.report.validation import summary_table, write_report
from afdplan.study import Grid, builtin_cases, builtin_workloads, run_validation, summarise

TINY = Grid(batches=(32,), seeds=2, requests=2_000, min_steps=300, mixing_lifetimes=2.0)


@pytest.fixture(scope="module")
def tiny_results():
    cases, _ = builtin_cases(quick=True)
    workloads = builtin_workloads(quick=True, traces=[])
    return run_validation(cases[:1], {"geo": workloads["geometric P100 D500"]}, TINY, n_jobs=1)


def test_results_are_consistent_with_their_curves(tiny_results):
    (res,) = tiny_results["results"]
    curve = {row["r"]: row["throughput"] for row in res["curve"]}
    best = max(curve.values())
    assert curve[res["r_sim"]] == best
    lo, hi = res["r_sim_band"]
    assert lo <= res["r_sim"] <= hi
    for rule, key in (("v1", "r_v1"), ("theta", "r_theta"), ("barrier", "r_barrier")):
        r = res[key]
        assert res["regret"][rule] == pytest.approx(1 - curve[r] / best)
        assert res["errors"][rule] == pytest.approx(abs(r - res["r_sim"]) / res["r_sim"])
        assert (res["band_errors"][rule] == 0) == (lo <= r <= hi)
    # Baselines r = 1, half and double the optimum were simulated.
    assert {1, 2 * res["r_sim"]} <= set(curve)
    assert res["baselines"]["r = 1"]["throughput_ratio"] == pytest.approx(curve[1] / best)


def test_summary_matches_raw_results(tiny_results):
    assert summarise(tiny_results["results"]) == tiny_results["summary"]
    (res,) = tiny_results["results"]
    row = next(s for s in tiny_results["summary"] if s["kind"] == "easy" and s["rule"] == "barrier")
    assert row["max_regret"] == pytest.approx(res["regret"]["barrier"])
    assert row["max_error"] == pytest.approx(res["errors"]["barrier"])


def test_report_files(tiny_results, tmp_path):
    md, page = write_report(tiny_results, tmp_path / "rep")
    text = md.read_text()
    table = summary_table(tiny_results["summary"])
    assert all(cell in text for cell in table[1])  # the summary numbers are in the report
    assert "data:image/png;base64," in page.read_text()  # self-contained
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert {
        "theta.png",
        "case0_throughput.png",
        "case0_idle.png",
        "case0_tpot.png",
        "case0_steps.png",
    } <= set(pngs)


def test_json_round_trip_is_plain(tiny_results):
    again = json.loads(json.dumps(tiny_results))
    assert again["summary"] == tiny_results["summary"]
    assert all(np.isfinite(row["throughput"]) for row in again["results"][0]["curve"])


def test_validate_quick_and_report_cli(cli, tmp_path):
    raw = tmp_path / "new" / "v.json"  # the folder does not exist yet
    res = cli("validate", "--quick", "-o", raw, "--save-dir", tmp_path / "rep")
    assert res.code == 0, res.err
    assert "barrier" in res.out
    data = json.loads(raw.read_text())
    assert len(data["results"]) == 4
    assert (tmp_path / "rep" / "report.html").is_file()
    res = cli("report", raw, "--save-dir", tmp_path / "r")
    assert res.code == 0, res.err
    assert (tmp_path / "r" / "report.html").stat().st_size > 50_000


def test_best_ratio_prefers_smaller_r_on_ties():
    from afdplan.study import best_ratio

    assert best_ratio({4: 1.0, 2: 1.0, 3: 0.5}) == 2
    assert best_ratio({1: 0.2, 5: 0.9, 9: 0.8}) == 5
