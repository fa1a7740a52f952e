"""The validation study and its report: structure, internal consistency, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from afdplan.errors import InputError
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


@pytest.mark.slow
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


def test_study_does_not_score_a_batch_the_kv_cache_cannot_hold():
    from dataclasses import replace

    from afdplan.study import Case
    from afdplan.timing import load_coeffs
    from afdplan.workload import parse_workload

    wl = parse_workload("geometric:prefill=100,decode_mean=100")
    stats = wl.stats()
    # Room for B = 16 with the plan's 3σ headroom, not for B = 32.
    cap = int(16 * stats.theta + 3 * (16 * stats.v) ** 0.5) + 1
    times = replace(load_coeffs("deepseek-v3-h200"), kv_capacity_tokens=cap)
    case = Case("easy: capped", "small KV cache", times, times, replay=False, honest=False)
    grid = Grid(batches=(16, 32), seeds=2, requests=1_500, min_steps=200, mixing_lifetimes=1.0)
    res = run_validation([case], {"geo": wl}, grid, n_jobs=1)
    assert [r["batch"] for r in res["results"]] == [16]
    (skipped,) = res["infeasible"]
    assert skipped["batch"] == 32 and "does not fit the KV cache" in skipped["reason"]
    assert all(row["n"] == 1 for row in res["summary"])  # only the feasible B is scored
    with pytest.raises(InputError, match="no configuration"):
        run_validation([case], {"geo": wl}, replace(grid, batches=(32,)), n_jobs=1)


@pytest.fixture(scope="module")
def pipeline_results():
    cases, _ = builtin_cases(quick=True)
    workloads = builtin_workloads(quick=True, traces=[])
    grid = Grid(batches=(32,), seeds=2, requests=1_500, min_steps=300, mixing_lifetimes=1.0)
    return run_validation(
        cases[1:2],  # the DeepSeek-V3 fit: 61 layers, 8 FFN GPUs
        {"geo": workloads["geometric P100 D500"]},
        grid,
        n_jobs=1,
        pipelines=(("serial", 1), ("pingpong", 2)),
        objective="gpu",
    )


def test_study_over_pipelines_reports_how_r_moves(pipeline_results):
    rows = pipeline_results["deployments"]
    assert [(row["pipeline"], row["microbatches"]) for row in rows] == [
        ("serial", 1),
        ("pingpong", 2),
    ]
    serial, pingpong = rows
    assert serial["closed_form_gap"] is None  # one micro-batch: no recurrence to compare
    assert abs(pingpong["closed_form_gap"]) < 0.02
    # The easy case: the theory's pick is (statistically) the simulated optimum.
    for row in rows:
        lo, hi = row["r_sim_band"]
        assert lo <= row["r_barrier"] <= hi and row["regret_barrier"] < 0.01
        assert row["gpus_ffn"] == 8
    # Two micro-batches hide attention behind the FFN: a larger ratio keeps the FFN busy.
    assert pingpong["r_sim"] > serial["r_sim"]
    assert pingpong["simulated_idle_ffn"] < serial["simulated_idle_ffn"]


def test_per_gpu_objective_scores_tokens_per_gpu(pipeline_results):
    for res in pipeline_results["results"]:
        assert res["objective"] == "gpu"
        for row in res["curve"]:
            # r attention GPUs + 8 FFN GPUs against r + 1 instances
            ratio = row["throughput_per_instance"] / row["throughput_per_gpu"]
            assert ratio == pytest.approx((row["r"] + 8) / (row["r"] + 1))
            assert row["throughput"] == row["throughput_per_gpu"]


def test_report_of_a_pipeline_study(pipeline_results, tmp_path):
    md, _ = write_report(pipeline_results, tmp_path / "rep")
    text = md.read_text()
    assert "How r* moves with the pipeline and the FFN group" in text
    assert "· pingpong m=2" in text and "· serial" in text  # each pipeline reads as a case
    assert len(list((tmp_path / "rep").glob("case*_throughput.png"))) == 2


def test_deployment_grid_without_the_measured_tables_keeps_the_shipped_size(monkeypatch):
    from afdplan.calibrate import measured_sets
    from afdplan.study import deployment_cases

    monkeypatch.setattr(measured_sets, "tables_installed", lambda: False)
    cases, skipped = deployment_cases((8, 16), quick=True)
    # EP8 is the shipped set's own size (its fit and shipped curves); EP16 needs the tables
    assert [c.name for c in cases] == ["easy: DeepSeek-V3 H200 EP8 fit"]
    (miss,) = skipped
    assert (
        miss["case"] == "DeepSeek-V3 H200 EP16" and "install the measured extra" in (miss["reason"])
    )


def test_build_study_assembles_each_grid():
    from afdplan.study import QUICK_GRID, build_study

    paper = build_study(deployment=False, quick=True, traces=None)
    assert paper.pipelines == (("overlap", 1),) and paper.objective == "instance"
    assert paper.grid == QUICK_GRID and set(paper.workloads) == {
        "geometric P100 D500",
        "lognormal heavy-tail",
    }
    deployment = build_study(deployment=True, quick=True, traces=None)
    assert deployment.pipelines == (("serial", 1), ("pingpong", 2))
    assert deployment.objective == "gpu"
    assert [c.name for c in deployment.cases] == ["easy: DeepSeek-V3 H200 EP8 fit"]
    with pytest.raises(InputError, match="--grid deployment runs serial"):
        build_study(deployment=True, quick=True, traces=None, pipeline=("pingpong", 2))
