"""Calibration on the real measurements: Vidur's profiles (shipped with the package) and
the aiconfigurator-core tables (the [measured] extra of the README's install)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from afdplan.calibrate.build import fit_table
from afdplan.calibrate.readers import read_vidur_mlp, read_vidur_send_recv
from afdplan.calibrate.roofline import derive
from afdplan.calibrate.specs import load_hardware, load_model
from afdplan.data import builtin_path
from afdplan.timing import Linear

VIDUR_L70 = builtin_path("vidur-h100-llama2-70b")
NVLINK = builtin_path("vidur-h100-dgx")


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_roofline_ffn_matches_vidur_h100(tp):
    # Cross-check: roofline FFN of Llama-2-70B on H100 vs Vidur's measurement.
    rows = read_vidur_mlp(VIDUR_L70, layers=80, tp_attention=1, tp_ffn=tp)
    fit = fit_table(rows)["ffn"]
    times = derive(load_model("llama2-70b"), load_hardware("h100-sxm"), gpus_ffn=tp).times
    # Vidur times the MLP's GEMMs alone: compare the kernels, without the TP all-reduce
    ar = times.exchange or Linear(0.0, 0.0)
    assert (ar.beta > 0) == (tp > 1)
    roof = Linear(times.ffn.alpha - ar.alpha, times.ffn.beta - ar.beta)
    # Per-token cost: within 10% (measured 0.95-0.99 of the fit).
    assert roof.alpha / fit.coef["alpha"] == pytest.approx(1.0, abs=0.1)
    # Fixed cost: the roofline's weight-read time matches the *flat* part of the
    # measurement (<= 64 tokens) within 15%; the fitted intercept sits below it (knee).
    ffn = rows[rows["op"] == "ffn"]
    flat = float(np.median(ffn.loc[ffn["tokens"] <= 64, "seconds"]))
    assert roof.beta / flat == pytest.approx(1.0, abs=0.15)
    assert fit.coef["beta"] <= flat


def test_vidur_nvlink_bandwidth():
    rows = read_vidur_send_recv(NVLINK, bytes_per_token=1, transfers_per_step=1)
    fit = fit_table(rows)["comm"]
    bandwidth = 1 / fit.coef["alpha"]  # bytes per second
    assert 300e9 < bandwidth < 450e9  # NVLink 4, one direction: 450 GB/s peak
    assert fit.coef["beta"] == pytest.approx(8e-6, rel=0.2)


# ----------------------------------------------------------- aiconfigurator-core


def _fits(model: str, system: str, gpus_ffn: int):
    from afdplan.calibrate.aiconfig import measured_tables

    tables = measured_tables(load_model(model), system, "vllm", 1, gpus_ffn)
    return tables, fit_table(tables.rows)


def test_llama70b_h100_attention_kernel_fit(aic):
    # The first look: per layer alpha ~1.26e-6 ms/KV token (HBM roofline 1.22e-6).
    _, fits = _fits("llama3-70b", "h100_sxm", 2)
    kernel = fits["attention"]
    per_layer_ms = kernel.coef["alpha"] / 80 * 1e3
    assert per_layer_ms == pytest.approx(1.22e-6, rel=0.06)
    assert kernel.coef["gamma"] / 80 * 1e3 == pytest.approx(1.5e-4, rel=0.35)
    assert kernel.holds_from is not None and kernel.holds_from >= 1024  # not at small T
    assert kernel.median_rel_residual_where_holds < 0.05


def test_dense_ffn_knee_in_measured_table(aic):
    tables, _ = _fits("llama3-70b", "h100_sxm", 2)
    ffn = tables.rows[tables.rows["op"] == "ffn"].set_index("tokens")["seconds"]
    # Flat (weight-bound) at small token counts, then linear.
    assert ffn.loc[64] / ffn.loc[1] < 1.3
    assert ffn.loc[4096] / ffn.loc[1024] > 3


def test_deepseek_v3_h200_tables_and_roofline(aic):
    _, fits = _fits("deepseek-v3", "h200_sxm", 8)
    roof = derive(load_model("deepseek-v3"), load_hardware("h200"), gpus_ffn=8).times
    # MLA decode is compute-bound: the measured per-token cost is within 25% of the
    # roofline's compute bound.
    assert fits["attention"].coef["alpha"] / roof.attention.alpha == pytest.approx(1.0, abs=0.25)
    assert fits["ffn"].r2 > 0.98


def _collector_balanced_rank0_pairs(num_tokens: int, experts: int, top_k: int, ep: int) -> int:
    """Token-expert pairs that land on EP rank 0 under aiconfigurator's ``balanced_logits``
    (collector/helper.py: token t picks experts (t + i·⌈E/k⌉) mod E, i < k), rank 0 owning
    experts [0, E/ep): written from that definition, not copied."""
    stride = -(-experts // top_k)
    t = np.arange(num_tokens)[:, None]
    if num_tokens >= stride:
        chosen = (t + np.arange(top_k)[None, :] * stride) % experts
    else:
        chosen = (t * stride / num_tokens + np.arange(top_k)[None, :] * stride) % experts
    return int((chosen < experts // ep).sum())


@pytest.mark.parametrize("num_tokens", [64, 1024, 4096])
@pytest.mark.parametrize("ep", [1, 8, 32])
def test_collector_rank0_does_its_share_of_the_whole_batch(num_tokens, ep):
    # A row (num_tokens = n, EP g) times rank 0 on n·k/g pairs: the share of ONE group
    # receiving n tokens in total, not of a group whose every rank holds n tokens.
    assert _collector_balanced_rank0_pairs(num_tokens, 256, 8, ep) == num_tokens * 8 // ep


def _moe_rows(ep: int, version: str = "0.24.0"):
    import pandas as pd

    from afdplan.calibrate.aiconfig import data_root

    table = pd.read_parquet(data_root() / f"h200_sxm/moe/vllm/{version}/moe_perf.parquet")
    sel = (
        (table["hidden_size"] == 7168)
        & (table["num_experts"] == 256)
        & (table["topk"] == 8)
        & (table["moe_tp_size"] == 1)
        & (table["moe_dtype"] == "fp8_block")
        & (table["distribution"] == "balanced")
        & (table["moe_ep_size"] == ep)
    )
    return table[sel].groupby("num_tokens")["latency"].median()


@pytest.mark.parametrize("version", ["0.19.0", "0.24.0"])
@pytest.mark.parametrize("ep", [128, 256])
def test_moe_rows_are_impossible_under_a_per_rank_token_axis(aic, version, ep):
    # Where the two readings differ: at large EP and many tokens. If every rank held
    # num_tokens = n tokens, each rank would run n·k token-expert pairs (3 GEMMs of
    # h x I each), and the measured time would sit below what H200 FP8 tensor cores can
    # do at peak (1979 TFLOP/s): impossible. As the group's batch, rank 0 runs n·k/g pairs,
    # far inside the peak.
    peak, h, inter, k = 1979e12, 7168, 2048, 8
    rows = _moe_rows(ep, version)
    for n in (8192, 16384):
        measured_s = rows.loc[n] / 1e3
        flops_per_pair = 2 * 3 * h * inter
        assert n * k * flops_per_pair / peak > measured_s  # per-rank reading: too fast
        assert n * k / ep * flops_per_pair / peak < measured_s  # group reading: fine


def test_measured_ffn_reads_the_moe_table_at_the_group_batch(aic):
    from afdplan.calibrate.aiconfig import measured_tables

    model = load_model("deepseek-v3")
    rows = measured_tables(model, "h200_sxm", "vllm", 1, 8).rows
    exchange = rows[rows["op"] == "exchange"].set_index("tokens")["seconds"]
    ffn = rows[rows["op"] == "ffn"].set_index("tokens")["seconds"] - exchange
    moe = _moe_rows(8)
    for tokens in (512, 4096, 16384):
        routed_only = model.moe_layers * moe.loc[tokens] / 1e3
        # The FFN of a micro-batch of T tokens is at least its routed experts at
        # num_tokens = T (plus shared experts and dense layers) ...
        assert ffn.loc[tokens] > routed_only
        # ... and not the per-rank reading, which would price T/8 tokens.
        assert ffn.loc[tokens] < routed_only * 1.5
    assert ffn.loc[16384] > 4 * ffn.loc[2048]


def test_gemm_table_cross_check_llama2_70b(aic):
    from afdplan.calibrate.aiconfig import measured_tables

    vidur = read_vidur_mlp(VIDUR_L70, layers=80, tp_ffn=8)
    rows = measured_tables(load_model("llama2-70b"), "h100_sxm", "vllm", 1, 8).rows
    rows = rows[(rows["op"] == "ffn") & (rows["tokens"] <= 4096)]
    ratio = fit_table(rows)["ffn"].coef["alpha"] / fit_table(vidur)["ffn"].coef["alpha"]
    assert 0.75 < ratio < 1.4


def test_measured_table_drives_the_simulator(cli, tmp_path, aic):
    table = tmp_path / "table.csv"
    res = cli(
        "calibrate",
        "--model",
        "deepseek-v3",
        "--system",
        "h200_sxm",
        "--gpus-ffn",
        "8",
        "--save-dir",
        tmp_path,
    )
    assert res.code == 0, res.err
    res = cli(
        "simulate",
        "--coeffs",
        tmp_path / "coefficients.toml",
        "--tables",
        table,
        "-B",
        "128",
        "-r",
        "4",
        "--requests",
        "5000",
        "--json",
    )
    assert res.code == 0, res.err
    assert res.json()["throughput_per_instance"]["mean"] > 0


def test_unknown_system_lists_known(cli, aic):
    res = cli("calibrate", "--model", "llama3-8b", "--system", "tpu_v5")
    assert res.code == 2 and "known:" in res.err and "h100_sxm" in res.err


@pytest.fixture
def fake_aic(tmp_path, monkeypatch):
    """A miniature aiconfigurator-core data tree: versions 0.5 (MoE only), 1.0 (all),
    2.0 (MoE; GEMM reused from 1.0 by reuse.yaml; MLA filled back from 1.0) and 3.0 (MoE)."""
    pytest.importorskip("yaml", reason="aiconfigurator-core's version files are YAML")
    from afdplan.calibrate import aiconfig

    root = tmp_path / "systems" / "data"
    files = {
        "mla/vllm/1.0/mla_generation_module_perf.parquet": "",
        "gemm/vllm/1.0/gemm_perf.parquet": "",
        "gemm/vllm/2.0/reuse.yaml": "reuse:\n- table: gemm_perf\n  from_version: '1.0'\n",
        **{f"moe/vllm/{v}/moe_perf.parquet": "" for v in ("0.5", "1.0", "2.0", "3.0")},
    }
    for rel, text in files.items():
        path = root / "sys_x" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "sys_empty" / "gemm").mkdir(parents=True)
    (root.parent / "query_versions.yaml").write_text(
        "defaults:\n  vllm: {current: '2.0', previous: '1.0'}\n"
    )
    monkeypatch.setattr(aiconfig, "data_root", lambda: root)
    return aiconfig, root / "sys_x"


def test_data_version_follows_aiconfigurators_slots_reuse_and_back_fill(fake_aic):
    from afdplan.calibrate.specs import load_model

    aiconfig, base = fake_aic
    model = load_model("deepseek-v3")  # MLA + MoE: reads mla, gemm and moe tables
    current = aiconfig.resolve_version("sys_x", "vllm", model)
    assert current.version == "2.0"
    assert current.path("moe", "moe_perf.parquet") == base / "moe/vllm/2.0/moe_perf.parquet"
    gemm = current.path("gemm", "gemm_perf.parquet")
    assert gemm == base / "gemm/vllm/1.0/gemm_perf.parquet"  # reuse.yaml's donor
    assert current.label(gemm) == "sys_x/gemm/vllm/1.0/gemm_perf.parquet (serves 2.0)"
    assert aiconfig.resolve_version("sys_x", "vllm", model, "previous").version == "1.0"
    newest = aiconfig.resolve_version("sys_x", "vllm", model, "next")
    assert newest.version == "3.0"  # the newest declared version after current
    mla = newest.path("mla", "mla_generation_module_perf.parquet")
    assert mla == base / "mla/vllm/1.0/mla_generation_module_perf.parquet"  # back fill
    assert aiconfig.working_versions("sys_x", "vllm", model) == ["1.0", "2.0", "3.0"]


@pytest.mark.parametrize(
    ("system", "version", "message"),
    [
        (
            "sys_x",
            "0.5",
            "no mla/mla_generation_module_perf.parquet, gemm/gemm_perf.parquet at "
            "or before it for deepseek-v3; versions that work: 1.0, 2.0, 3.0",
        ),
        ("sys_x", "9.0", "no data version '9.0'; declared: 0.5, 1.0, 2.0, 3.0"),
        (
            "sys_empty",
            None,
            "no measured tables for it (empty data folder); systems with data: sys_x",
        ),
        ("nope", None, "unknown system 'nope'; known: sys_x"),
    ],
)
def test_data_version_errors_name_what_works(fake_aic, system, version, message):
    from afdplan.calibrate.specs import load_model
    from afdplan.errors import InputError

    aiconfig, _ = fake_aic
    with pytest.raises(InputError, match=re.escape(message)):
        aiconfig.resolve_version(system, "vllm", load_model("deepseek-v3"), version)


def test_calibrate_reads_the_chosen_data_version(aic, cli):
    ds = ("calibrate", "--model", "deepseek-v3", "--system", "h200_sxm", "--gpus-ffn", "8")
    res = cli(*ds, "--data-version", "0.19.0")
    assert res.code == 2
    assert "versions that work: 0.24.0" in res.err
    res = cli(*ds, "--data-version", "current", "--json")
    assert res.code == 0, res.err
    assert "aiconfigurator-core data: h200_sxm vllm 0.24.0" in res.out


def test_moe_read_equals_aiconfigurators_own_op(aic):
    """AIConfigurator 0.12's estimator, run on the cross-check grid (its per-op times are
    recorded in benchmarks/data): its routed-expert op at every AFD point equals afdplan's
    read of the same table at num_tokens = the whole micro-batch T (it would be T/g_F's
    row under the per-rank reading: 0.75x at T = 256, 0.17x at 8,192 for DeepSeek-V3)."""
    import json
    import math

    from afdplan.calibrate.aiconfig import routed_experts_curve
    from afdplan.timing import Routing

    from .conftest import ROOT

    data = json.loads((ROOT / "benchmarks/data/aiconfigurator_reference.json").read_text())
    alpha = {"deepseek-v3": 1.01, "qwen3-235b-a22b-fp8": 1.2}
    ids = {"deepseek-v3": "deepseek-v3", "qwen3-235b-a22b-fp8": "Qwen/Qwen3-235B-A22B-FP8"}
    checked = 0
    for p in data["points"]:
        if p["kind"] != "afd" or "aiconfigurator" not in p:
            continue
        ref = p["aiconfigurator"]
        theirs = ref.get("f_inner_ms", {}).get("generation_moe") or ref["f_per_op_ms"].get(
            "generation_moe"
        )
        model = load_model(ids[p["model"]])
        skewed = p["distribution"] != "balanced"
        routing = Routing("power-law", alpha[p["model"]]) if skewed else Routing()
        curve = routed_experts_curve(model, p["system"], p["framework"], p["gpus_ffn"], routing)
        tokens = p["r"] * math.ceil(p["batch"] / p["microbatches"])
        assert tokens == ref["b_micro_total"]
        # AIConfigurator charges every layer of its model as MoE (61 for DeepSeek-V3)
        layers = 61 if p["model"] == "deepseek-v3" else model.layers
        assert float(curve(tokens)) == pytest.approx(theirs / layers, rel=0.03)
        checked += 1
    assert checked == 48
