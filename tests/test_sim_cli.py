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
        "--batches",
        "32,64",
        "--ratios",
        "1-6",
        "--seeds",
        "2",
        *FAST,
        "--jobs",
        "1",
        "--csv",
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["simulate", "-r", "0", "-B", "4"], "ratio r must be"),
        (["simulate", "-r", "2", "-B", "0"], "batch B must be"),
        (["simulate", "-r", "2", "-B", "4", "--steps", "0"], "steps must be >= 1"),
        (["simulate", "-r", "2", "-B", "4", "--steps", "5", "--requests", "5"], "exactly one"),
        (["simulate", "-r", "2", "-B", "4", "--kv-capacity", "0"], "KV capacity must be >= 1"),
        (["simulate", "-r", "2", "-B", "4", "--kv-capacity", "lots"], "integer or 'auto'"),
        (["simulate", "-r", "2", "-B", "4", "--seeds", "0"], "--seeds must be >= 1"),
        (["simulate", "-r", "2", "-B", "4", "--order", "replay"], "needs a trace"),
        (["sweep", "--ratios", "0-3"], "integers >= 1"),
        (["sweep", "--ratios", "5-2"], "a <= b"),
        (["sweep", "--batches", "x"], "not an integer"),
        (["sweep", "--batches", ","], "empty list"),
        (["sweep", "--scheduler", "tcp://h:1"], "needs --backend dask or ray"),
    ],
)
def test_bad_input_exit_2(cli, args, message):
    res = cli(*args)
    assert res.code == 2, res.err
    assert message in res.err and res.err.strip().count("\n") == 0


def test_empty_workload_exit_2(cli, tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_text("num_prefill_tokens,num_decode_tokens\n")
    res = cli("simulate", "--trace", empty, "-r", "1", "-B", "1")
    assert res.code == 2 and "no requests" in res.err


def test_kv_capacity_auto_reads_the_coefficient_set(cli):
    res = cli(
        "simulate", "-B", "8", "-r", "2", "--requests", "500", "--kv-capacity", "auto", "--json"
    )
    assert res.code == 0, res.err
    assert res.json()["runs"][0]["kv"]["capacity_tokens"] == 1_617_048  # deepseek-v3-h200
    res = cli("simulate", "-B", "8", "-r", "2", *FAST, "--kv-capacity", "auto")
    assert res.code == 2 and "has no kv_capacity_tokens" in res.err
