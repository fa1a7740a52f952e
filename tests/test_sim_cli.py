"""``afdplan simulate`` and ``afdplan sweep`` end to end."""

from __future__ import annotations

import pandas as pd
import pytest

from .conftest import FIXTURES

FAST = ["--coeffs", "paper-v1-dsv3-910c", "--requests", "4000"]


def test_simulate_json_keys_and_determinism(cli):
    args = [
        "simulate",
        "--workload",
        "geometric:prefill=500,decode_mean=100",
        "-B",
        "32",
        "-r",
        "4",
        *FAST,
        "--seed",
        "3",
        "--json",
    ]
    first = cli(*args)
    assert first.code == 0, first.err
    data = first.json()
    for key in (
        "throughput_per_instance",
        "mean_step_time_s",
        "step_time_p99_s",
        "idle_attention",
        "idle_ffn",
        "tpot_p50_s",
        "tpot_p90_s",
        "tpot_p99_s",
        "share_attention_bound",
        "share_comm_bound",
        "share_ffn_bound",
        "requests_completed",
    ):
        assert key in data and "mean" in data[key]
    assert cli(*args).out == first.out


def test_simulate_defaults_to_plan_and_prints_table(cli):
    res = cli(
        "simulate", "--workload", "fixed:prefill=100,decode=10", "-B", "64", *FAST, "--seeds", "2"
    )
    assert res.code == 0, res.err
    assert "throughput per instance" in res.out and "± 95% CI" in res.out


def test_simulate_replay_and_kv(cli):
    res = cli(
        "simulate",
        "--trace",
        FIXTURES / "tiny_trace.csv",
        "-B",
        "4",
        "-r",
        "2",
        *FAST,
        "--order",
        "replay",
        "--kv-capacity",
        "1500",
        "--json",
    )
    assert res.code == 0, res.err
    run = res.json()["runs"][0]
    assert run["warmup"] == "cold" and run["kv"]["capacity_tokens"] == 1500


def test_sweep_json_and_csv(cli, tmp_path):
    out_csv = tmp_path / "rows.csv"
    res = cli(
        "sweep",
        "--workload",
        "geometric:prefill=1000,decode_mean=200",
        "--batch",
        "32,64",
        "--ratio",
        "1-6",
        "--seeds",
        "2",
        *FAST,
        "--jobs",
        "1",
        "-o",
        out_csv,
        "--json",
    )
    assert res.code == 0, res.err
    data = res.json()
    assert {"rows", "r_sim_opt", "r_theory", "optima"} <= set(data)
    assert len(data["optima"]) == 2 and len(data["rows"]) == 12
    for opt in data["optima"]:
        rows = [r for r in data["rows"] if r["batch"] == opt["batch"]]
        best = max(rows, key=lambda r: r["throughput_per_weight"])
        assert opt["r_sim_opt"] == best["r"]
        assert opt["rel_error"] == pytest.approx(abs(opt["r_theory"] - best["r"]) / best["r"])
    assert len(pd.read_csv(out_csv)) == 12


def test_kv_capacity_auto_reads_the_coefficient_set(cli):
    res = cli(
        "simulate", "-B", "8", "-r", "2", "--requests", "500", "--kv-capacity", "auto", "--json"
    )
    assert res.code == 0, res.err
    assert res.json()["runs"][0]["kv"]["capacity_tokens"] == 1_617_048  # deepseek-v3-h200
