"""Calibration: fits, readers, roofline hand computations, presets and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from afdplan.calibrate.build import combine, fit_table
from afdplan.calibrate.fit import fit_attention, fit_linear
from afdplan.calibrate.readers import read_generic, read_vidur_mlp, read_vidur_send_recv
from afdplan.calibrate.roofline import derive, kv_capacity_tokens, min_ffn_gpus
from afdplan.calibrate.specs import (
    hardware_names,
    load_hardware,
    load_model,
    model_from_config,
    model_names,
)
from afdplan.errors import InputError
from afdplan.timing import load_coeffs

from .conftest import FIXTURES

# ------------------------------------------------------------------------- fits


def test_linear_fit_recovers_coefficients_from_noisy_data():
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 4096, 400)
    y = (3e-5 * x + 0.012) * (1 + 0.02 * rng.standard_normal(x.size))
    fit = fit_linear("ffn", x, y)
    assert fit.coef["alpha"] == pytest.approx(3e-5, rel=0.02)
    assert fit.coef["beta"] == pytest.approx(0.012, rel=0.03)
    assert fit.r2 > 0.99 and fit.median_rel_residual < 0.03
    assert fit.holds_from is not None and fit.holds_from <= 200


def test_attention_fit_recovers_alpha_gamma_beta():
    rng = np.random.default_rng(1)
    batch = rng.integers(1, 512, 600).astype(float)
    kv = batch * rng.uniform(10, 30_000, 600)
    y = (1e-7 * kv + 4e-5 * batch + 0.009) * (1 + 0.01 * rng.standard_normal(600))
    fit = fit_attention(kv, batch, y)
    assert fit.coef["alpha"] == pytest.approx(1e-7, rel=0.02)
    assert fit.coef["gamma"] == pytest.approx(4e-5, rel=0.05)
    assert fit.coef["beta"] == pytest.approx(0.009, rel=0.05)


def test_fit_reports_where_a_knee_breaks_it():
    # Flat (weight-bound) to 512 tokens, then linear: the fit holds only past the knee.
    x = np.geomspace(1, 16384, 60)
    y = np.maximum(0.02, 4e-5 * x)
    fit = fit_linear("ffn", x, y)
    assert fit.max_rel_residual > 0.2
    assert fit.holds_from is not None and fit.holds_from > 500


def test_nonnegative_coefficients():
    x = np.array([1.0, 10, 100, 1000])
    fit = fit_linear("ffn", x, 1e-4 * x)  # through the origin: beta clamps at 0, not below
    assert fit.coef["beta"] >= 0 and fit.coef["alpha"] == pytest.approx(1e-4)


@pytest.mark.parametrize(
    "x, y, message",
    [
        ([1, 2], [1.0, 2.0], "too few points"),
        ([1, 2, 3], [1.0, 0.0, 2.0], "must be > 0"),
        ([1, 2, 3], [1.0, -1.0, 2.0], "must be > 0"),
        ([1, 2, 3], [1.0, float("nan"), 2.0], "NaN"),
        ([5, 5, 5], [1.0, 1.1, 0.9], "do not vary enough"),
    ],
)
def test_fit_bad_input(x, y, message):
    with pytest.raises(InputError, match=message):
        fit_linear("ffn", np.array(x, float), np.array(y, float))


# ---------------------------------------------------------------------- readers


def test_vidur_mlp_reader_scales_layers_and_picks_tp():
    rows = read_vidur_mlp(FIXTURES / "vidur_mlp_tiny.csv", layers=10, tp_attention=1, tp_ffn=2)
    fits = fit_table(rows)
    # Fixture: FFN per layer 0.002·n/tp + 0.2/tp ms; attention side 0.0005·n + 0.05 ms.
    assert fits["ffn"].coef["alpha"] == pytest.approx(10 * 0.001 / 1e3, rel=1e-9)
    assert fits["ffn"].coef["beta"] == pytest.approx(10 * 0.1 / 1e3, rel=1e-9)
    assert fits["attention_dense"].coef["alpha"] == pytest.approx(10 * 0.0005 / 1e3, rel=1e-9)
    with pytest.raises(InputError, match="TP 4; available: \\[1, 2\\]"):
        read_vidur_mlp(FIXTURES / "vidur_mlp_tiny.csv", layers=10, tp_ffn=4)


def test_send_recv_reader():
    rows = read_vidur_send_recv(
        FIXTURES / "send_recv_tiny.csv", bytes_per_token=2048, transfers_per_step=4
    )
    fit = fit_table(rows)["comm"]
    assert fit.coef["alpha"] == pytest.approx(4 * 2.5e-9 * 2048 / 1e3, rel=1e-9)
    assert fit.coef["beta"] == pytest.approx(4 * 0.008 / 1e3, rel=1e-9)
    inter = fit_table(
        read_vidur_send_recv(FIXTURES / "send_recv_tiny.csv", 2048, 4, intra_node=False)
    )
    assert inter["comm"].coef["beta"] > fit.coef["beta"]


def test_generic_table_reader(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(
        "op,tokens,kv_tokens,batch,seconds\nffn,0,,,0.01\nffn,100,,,0.02\nffn,200,,,0.03\n"
    )
    assert fit_table(read_generic(path))["ffn"].coef["alpha"] == pytest.approx(1e-4)


@pytest.mark.parametrize(
    "content, message",
    [
        ("a,b\n1,2\n", "missing column"),
        ("op,seconds\nffn,1\n", "non-numeric or missing 'tokens'"),
        ("op,tokens,seconds\nmlp,1,1\n", "unknown op"),
        ("op,tokens,seconds\nffn,1,0\n", "> 0"),
    ],
)
def test_generic_table_bad_input(tmp_path, content, message):
    path = tmp_path / "m.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_generic(path)


def test_vidur_reader_missing_columns(tmp_path):
    path = tmp_path / "mlp.csv"
    path.write_text("num_tokens,num_tensor_parallel_workers\n1,1\n")
    with pytest.raises(InputError, match="missing column"):
        read_vidur_mlp(path, layers=2)


# --------------------------------------------------------------------- roofline


def test_roofline_dense_hand_computation():
    # Llama-3-70B on H100-SXM, efficiencies 0.8 memory / 0.7 compute / 0.8 link.
    d = derive(load_model("llama3-70b"), load_hardware("h100-sxm"))
    t = d.times
    bw, flops = 3.35e12 * 0.8, 989e12 * 0.7
    attn_params = 80 * (8192 * 8192 * 2 + 2 * 8192 * 8 * 128)  # Q, O + K, V
    lm_head, embeddings = 128256 * 8192, 2 * 128256 * 8192
    ffn_params = 80 * 3 * 8192 * 28672
    assert t.gpus_ffn == 2  # 112.7 GB of FFN weights over 72 GB usable per GPU
    assert t.attention.alpha == pytest.approx(80 * 2 * 8 * 128 * 2 / bw)
    assert t.attention.gamma == pytest.approx(2 * (attn_params + lm_head) / flops)
    assert t.attention.beta == pytest.approx((attn_params + embeddings) * 2 / bw + 80 * 5e-6)
    # the TP-2 FFN all-reduces each layer's output: half the vector each way, one latency
    reduce_alpha, reduce_beta = 80 * 8192 * 2 / (450e9 * 0.8), 80 * 8e-6
    assert t.ffn.alpha == pytest.approx(2 * ffn_params / (2 * flops) + reduce_alpha)
    assert t.ffn.beta == pytest.approx(ffn_params * 2 / (2 * bw) + 80 * 5e-6 + reduce_beta)
    assert t.exchange.alpha == pytest.approx(reduce_alpha)
    assert t.reduce is None  # one attention GPU: nothing to reduce
    split = derive(load_model("llama3-70b"), load_hardware("h100-sxm"), 4).times
    assert split.reduce.alpha == pytest.approx(80 * 1.5 * 8192 * 2 / (450e9 * 0.8))
    assert split.attention.gamma == pytest.approx(
        2 * (attn_params + lm_head) / (4 * flops) + split.reduce.alpha
    )
    assert t.comm.alpha == pytest.approx(2 * 80 * 8192 * 2 / (450e9 * 0.8))
    assert t.comm.beta == pytest.approx(2 * 80 * 8e-6)
    assert t.kv_capacity_tokens == math.floor(
        (80e9 * 0.9 - (attn_params + embeddings) * 2) / (80 * 2 * 8 * 128 * 2)
    )


def test_roofline_moe_mla_hand_computation():
    # DeepSeek-V3 (FP8 weights, BF16 MLA cache) on H200.
    m, hw = load_model("deepseek-v3"), load_hardware("h200")
    t = derive(m, hw).times
    per_expert = 3 * 7168 * 2048
    moe_layer = 256 * per_expert + per_expert + 7168 * 256  # routed, shared, router
    dense_layer = 3 * 7168 * 18432
    total = 58 * moe_layer + 3 * dense_layer
    active = 58 * (8 * per_expert + per_expert + 7168 * 256) + 3 * dense_layer
    assert min_ffn_gpus(m, hw) == math.ceil(total / (141e9 * 0.9)) == 6
    # The expert-parallel group must divide the 256 experts: 6 GPUs hold the weights, the
    # smallest group that splits the experts evenly is 8.
    assert t.gpus_ffn == 8
    fp8 = 1979e12 * 0.7
    # Dispatch and combine inside the 8-GPU NVLink group: a token reaches
    # d = 8·(1 − C(224, 8)/C(256, 8)) of the 8 ranks, d·7/8 of them elsewhere; a rank holds
    # T/8 tokens and moves 7168·(1 B FP8 dispatch + 2 B BF16 combine) per copy, over
    # NVLink at 450 GB/s x 0.8, in each of 58 MoE layers, plus two 8 us latencies a layer.
    d = 8 * (1 - math.comb(224, 8) / math.comb(256, 8))
    assert d == pytest.approx(5.2947, abs=1e-4)
    exchange = 58 * d * (7 / 8) * 7168 * 3 / 8 / (450e9 * 0.8)
    assert t.exchange.alpha == pytest.approx(exchange)
    assert t.exchange.beta == pytest.approx(2 * 58 * 8e-6)
    assert t.ffn.alpha == pytest.approx(2 * active / (8 * fp8) + exchange)
    assert t.ffn.beta == pytest.approx(total / (8 * 4.8e12 * 0.8) + 61 * 5e-6 + 2 * 58 * 8e-6)
    assert (t.experts.experts, t.experts.top_k, str(t.experts.routing)) == (256, 8, "balanced")
    with pytest.raises(InputError, match="does not divide the 256 experts"):
        derive(m, hw, gpus_ffn=6)
    # MLA decode is compute-bound on H200: 2·128·(2·512 + 64) FLOPs per cached token.
    assert t.attention.alpha == pytest.approx(61 * 2 * 128 * (2 * 512 + 64) / (989e12 * 0.7))
    assert m.kv_bytes_per_token() == 61 * 576 * 2
    q = 7168 * 1536 + 1536 * 128 * 192
    kv = 7168 * 576 + 512 * 128 * 256
    o = 128 * 128 * 7168
    assert m.attention_params_layer() == q + kv + o


def test_kv_capacity_grows_with_gpus():
    m, hw = load_model("llama3-70b"), load_hardware("h100-sxm")
    assert kv_capacity_tokens(m, hw, 2) > 2 * kv_capacity_tokens(m, hw, 1)


def test_presets_are_complete():
    assert {"llama3-8b", "llama3-70b", "qwen2.5-72b", "qwen3-235b-a22b", "deepseek-v3"} <= set(
        model_names()
    )
    assert {"h100-sxm", "h200", "h800", "a100-80g", "h20", "b200", "ascend-910c"} <= set(
        hardware_names()
    )
    for name in model_names():
        for hw in hardware_names():
            t = derive(load_model(name), load_hardware(hw)).times
            assert t.ffn.alpha > 0 and t.attention.alpha > 0 and t.kv_capacity_tokens > 0


def test_user_config_json_and_errors(tmp_path):
    m = load_model(str(FIXTURES / "tiny_model_config.json"))
    assert (m.layers, m.kv_heads, m.head_dim) == (4, 2, 128)
    with pytest.raises(InputError, match=r"unknown model 'gpt-5'; known: .*deepseek-v3"):
        load_model("gpt-5")
    with pytest.raises(InputError, match=r"unknown hardware 'tpu'; known: .*h100-sxm"):
        load_hardware("tpu")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hidden_size": 10, "num_attention_heads": 2}))
    with pytest.raises(InputError, match=r"missing required field.*num_hidden_layers"):
        load_model(str(bad))
    with pytest.raises(InputError, match=r"missing required field.*num_experts_per_tok"):
        model_from_config(
            {
                "hidden_size": 8,
                "num_hidden_layers": 1,
                "num_attention_heads": 1,
                "vocab_size": 4,
                "num_experts": 4,
                "moe_intermediate_size": 8,
            },
            "x",
        )


def test_combine_prefers_measurements_and_falls_back_to_roofline():
    base = derive(load_model("llama2-70b"), load_hardware("h100-sxm"), gpus_ffn=2).times
    rows = read_vidur_mlp(FIXTURES / "vidur_mlp_tiny.csv", layers=80, tp_ffn=2)
    cal = combine(fit_table(rows), base, {"ffn": "tiny", "attention_dense": "tiny"}, "x")
    assert cal.times.ffn.alpha == pytest.approx(80 * 0.001 / 1e3)
    assert cal.times.comm == base.comm and "roofline" in cal.sources["comm"]
    assert cal.times.attention.alpha == base.attention.alpha  # no kernel measured
    with pytest.raises(InputError, match="no usable measurements for attention"):
        combine(fit_table(rows), None, {}, "x")


def test_a_fit_that_explains_nothing_is_refused_loudly():
    # FFN "measurements" that do not grow with tokens: a line explains none of them.
    rng = np.random.default_rng(0)
    tokens = np.arange(1.0, 201.0)
    fit = fit_linear("ffn", tokens, 0.01 + 0.002 * rng.random(tokens.size))
    assert fit.r2 < 0.5
    base = derive(load_model("llama3-70b"), load_hardware("h100-sxm"), gpus_ffn=2).times
    cal = combine({"ffn": fit}, base, {"ffn": "noise"}, "x")
    assert cal.times.ffn == base.ffn and cal.sources["ffn"] == "roofline"
    assert any(note.startswith("REFUSED the ffn fit (R² = ") for note in cal.notes)
    with pytest.raises(InputError, match="the ffn fit was refused: R²"):
        combine({"ffn": fit}, None, {}, "x")


# -------------------------------------------------------------------------- CLI


def test_calibrate_cli_roofline_and_writes_file(cli, tmp_path):
    out = tmp_path / "c.toml"
    res = cli("calibrate", "--model", "llama3-70b", "--hardware", "h100-sxm", "-o", out)
    assert res.code == 0, res.err
    assert "alpha_A" in res.out and "memory-bound" in res.out
    t = load_coeffs(out)
    assert t.kv_capacity_tokens == 133_172
    res = cli("plan", "--coeffs", out, "--json")
    assert res.code == 0 and res.json()["max_feasible_batch"] > 0


def test_calibrate_cli_fixtures_and_plot(cli, tmp_path):
    res = cli(
        "calibrate",
        "--model",
        "llama2-70b",
        "--hardware",
        "h100-sxm",
        "--gpus-ffn",
        "2",
        "--vidur-mlp",
        FIXTURES / "vidur_mlp_tiny.csv",
        "--send-recv",
        FIXTURES / "send_recv_tiny.csv",
        "--save-dir",
        tmp_path / "cal",
        "--json",
    )
    assert res.code == 0, res.err
    data = res.json()
    assert set(data["fits"]) == {"ffn", "attention_dense", "comm"}
    assert data["coefficients"]["ffn"]["alpha"] == pytest.approx(80 * 0.001 / 1e3)
    assert (tmp_path / "cal" / "fit.png").stat().st_size > 10_000
    assert {"coefficients.toml", "table.csv", "fit.png"} == {
        p.name for p in (tmp_path / "cal").iterdir()
    }
    assert len(data["files"]) == 3


def test_roofline_coeffs_spec_in_plan(cli):
    res = cli("plan", "--coeffs", "roofline:qwen3-235b-a22b@h200", "--json")
    assert res.code == 0, res.err
    assert res.json()["coeffs"] == "roofline:qwen3-235b-a22b@h200"


def test_calibrate_too_few_points_exit_2(cli, tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("op,tokens,seconds\nffn,1,0.1\nffn,2,0.2\n")
    res = cli("calibrate", "--tables", path)
    assert res.code == 2 and "too few points" in res.err


def test_served_as_changes_only_the_named_dtypes():
    from afdplan.calibrate.specs import served_as

    base = load_model("deepseek-v3")
    assert served_as(base, None) is base
    fp4 = served_as(base, None, "fp4", "fp8")
    assert (fp4.weight_bytes, fp4.ffn_bytes, fp4.kv_bytes) == (base.weight_bytes, 0.5, 1)
    bf16 = served_as(base, "bfloat16")
    assert bf16.ffn_bytes == bf16.weight_bytes == 2
    with pytest.raises(InputError, match="unknown dtype 'fp5'; known:"):
        served_as(base, "fp5")


@pytest.mark.parametrize("system", ["h100_sxm", "h200_sxm"])
def test_tp_all_reduce_roofline_against_aiconfigurator_measurements(aic, system):
    """vLLM's custom all-reduce as aiconfigurator-core measured it (CUDA graphs, bf16) at
    TP 2/4/8 and decode-sized messages (8-512 tokens of an 8192-wide vector): the roofline
    sits within a factor 2 of every point (its 8 µs latency is above the one-shot kernel's
    4-5 µs on short messages, its ring bandwidth above the measured one at TP 2 on long
    ones), tightest at TP 8."""
    import glob

    import pandas as pd

    from afdplan.calibrate.roofline import tp_all_reduce
    from afdplan.calibrate.specs import ModelSpec

    root = Path(aic.__file__).parent / "systems" / "data" / system / "comm" / "vllm"
    newest = sorted(glob.glob(str(root / "*" / "custom_allreduce_perf.parquet")))[-1]
    table = pd.read_parquet(newest)
    table = table[(table.backend == "vllm_graph") & (table.allreduce_dtype == "bfloat16")]
    hw = load_hardware(system)
    model = ModelSpec("probe", hidden=8192, layers=1, heads=64, kv_heads=8, head_dim=128,
                      intermediate=1, vocab=1)  # fmt: skip
    ratios = {}
    for tp in (2, 4, 8):
        rows = table[(table.num_gpus == tp) & table.message_size.between(8 * 8192, 512 * 8192)]
        assert len(rows) >= 4
        ar = tp_all_reduce(model, hw, tp)
        predicted = ar.beta + ar.alpha * rows.message_size / 8192
        ratios[tp] = (predicted / (rows.latency * 1e-3)).to_numpy()
        assert (ratios[tp] > 0.5).all() and (ratios[tp] < 2.0).all(), (tp, ratios[tp])
    assert abs(np.log(ratios[8])).max() <= abs(np.log(ratios[2])).max()


def test_mla_latent_cache_is_read_whole_by_every_tp_rank(aic):
    """MLA's latent KV is shared by all heads, so a TP rank reads (and holds) every token's
    whole cache: aiconfigurator-core's MLA module on H200 costs the same per KV token at
    1-64 heads a rank, and the roofline's α_A agrees at TP 1, 2 and 8 within 20% (1.06,
    1.16, 1.17); splitting the cache over the ranks would put TP 8 at 0.15."""
    import glob

    import pandas as pd

    root = Path(aic.__file__).parent / "systems" / "data" / "h200_sxm" / "mla" / "vllm"
    newest = sorted(glob.glob(str(root / "*" / "mla_generation_module_perf.parquet")))[-1]
    table = pd.read_parquet(newest)
    table = table[(table.kv_cache_dtype == "bfloat16") & (table.gemm_type == "bfloat16")]
    model, hw = load_model("deepseek-v3"), load_hardware("h200")
    for tp in (1, 2, 8):
        rows = table[(table.num_heads == 128 // tp) & (table.batch_size == 64)]
        per_step = rows.groupby("step").latency.median()
        slope = np.polyfit(per_step.index * 64, per_step.to_numpy() / 1e3, 1)[0]  # s per KV token
        alpha = derive(model, hw, tp, 8).times.attention.alpha / model.layers
        assert alpha / slope == pytest.approx(1.0, abs=0.2), (tp, alpha / slope)
        if tp == 8:  # the split reading: each rank reading 1/8 of every token's cache
            split = model.kv_elements_per_token_layer() * model.kv_bytes / (8 * 4.8e12 * 0.8)
            assert split / slope < 0.2
    # and the cache is held once per rank: TP 8 holds less than 2x TP 1's tokens, not 8x
    assert kv_capacity_tokens(model, hw, 8) < 2 * kv_capacity_tokens(model, hw, 1)
