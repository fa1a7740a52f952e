"""Gated DeltaNet hybrids (Qwen3-Next, Qwen3.5): read from their configs, a constant
recurrent state per sequence priced in the roofline and reserved with every request."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from afdplan.bundle import Pipeline
from afdplan.calibrate.roofline import derive, kv_capacity_tokens
from afdplan.calibrate.specs import load_hardware, load_model, model_from_config
from afdplan.capacity import effective_batch
from afdplan.errors import InputError
from afdplan.plan import resolve_batch
from afdplan.sim.open import Arrivals, Fleet, simulate_open
from afdplan.timing import coeffs_from_dict, coeffs_to_dict
from afdplan.workload import EmpiricalWorkload, parse_workload

# Qwen/Qwen3-Next-80B-A3B-Instruct's config.json, the fields that shape a step
QWEN3_NEXT = {
    "architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next",
    "hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 16,
    "num_key_value_heads": 2, "head_dim": 256, "intermediate_size": 5120,
    "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512,
    "num_experts": 512, "num_experts_per_tok": 10, "decoder_sparse_step": 1,
    "mlp_only_layers": [], "full_attention_interval": 4, "linear_conv_kernel_dim": 4,
    "linear_key_head_dim": 128, "linear_num_key_heads": 16, "linear_num_value_heads": 32,
    "linear_value_head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "partial_rotary_factor": 0.25, "norm_topk_prob": True,
}  # fmt: skip


def test_qwen3_next_reads_by_hand():
    m = model_from_config(QWEN3_NEXT, "qwen3-next")
    assert (m.linear_layers, m.full_attention_layers) == (36, 12)
    assert m.attention_output_gate  # Qwen3-Next's q_proj also emits the output gate
    # per Gated DeltaNet layer: 32 value heads × 128 × 128 state in bf16, and the 3 last
    # inputs of the 2·16·128 + 32·128 = 8192-channel convolution
    per_layer = 32 * 128 * 128 * 2 + 3 * 8192 * 2
    assert m.state_bytes_per_sequence() == 36 * per_layer == 39_518_208
    assert m.kv_bytes_per_token() == 12 * 2 * 2 * 256 * 2  # only the full layers
    assert m.state_tokens_per_sequence() == math.ceil(39_518_208 / 24_576) == 1608
    gdn = 2048 * (2 * 16 * 128 + 2 * 32 * 128) + 2048 * 64 + 8192 * 4 + 32 * 128 * 2048
    full = 2048 * 16 * 256 * 2 + 2 * 2048 * 2 * 256 + 16 * 256 * 2048
    assert m.attention_params() == 36 * gdn + 12 * full
    # the preset holds the same config
    assert load_model("qwen3-next-80b-a3b").state_bytes_per_sequence() == 39_518_208


def test_qwen35_layer_types_and_float32_state():
    cfg = {
        **{k: v for k, v in QWEN3_NEXT.items() if k != "full_attention_interval"},
        "architectures": ["Qwen3_5MoeForConditionalGeneration"],
        "num_hidden_layers": 8, "attn_output_gate": True, "mamba_ssm_dtype": "float32",
        "layer_types": ["linear_attention"] * 3 + ["full_attention"]
        + ["linear_attention"] * 3 + ["full_attention"],
    }  # fmt: skip
    m = model_from_config(cfg, "qwen3.5")
    assert (m.linear_layers, m.state_bytes) == (6, 4)
    assert m.state_bytes_per_sequence() == 6 * (32 * 128 * 128 * 4 + 3 * 8192 * 2)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"full_attention_interval": None}, "no layer layout"),
        ({"layer_types": ["linear_attention"] * 47}, "lists 47 layers"),
        ({"linear_num_value_heads": 24}, "do not share"),
        ({"linear_key_head_dim": 0}, "linear_key_head_dim"),
        ({"full_attention_interval": 1.5}, "full_attention_interval"),
        ({"mamba_ssm_dtype": "float64"}, "mamba_ssm_dtype"),
        ({"attn_output_gate": "yes"}, "attn_output_gate"),
        ({"full_attention_interval": 1, "linear_num_key_heads": 16}, None),
    ],
)
def test_bad_hybrid_fields_are_one_line_errors(change, says):
    cfg = {**QWEN3_NEXT, **change}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    if says is None:  # every layer full attention: a plain model with unused GDN fields
        assert model_from_config(cfg, "x").linear_layers == 0
        return
    with pytest.raises(InputError, match=says) as exc:
        model_from_config(cfg, "x")
    assert "\n" not in str(exc.value)


def test_linear_layers_without_gated_deltanet_fields_are_refused():
    cfg = {
        k: v for k, v in QWEN3_NEXT.items() if not k.startswith("linear_")
        and k != "full_attention_interval"
    }  # fmt: skip
    cfg["layer_types"] = ["linear_attention", "full_attention"] * 24
    with pytest.raises(InputError, match="Gated DeltaNet"):
        model_from_config(cfg, "x")
    with pytest.raises(InputError, match="full_attention_interval"):
        model_from_config({**cfg, "layer_types": None, "full_attention_interval": 4}, "x")


def test_roofline_prices_the_state_once_a_step_and_reserves_it():
    m = load_model("qwen3-next-80b-a3b")
    hw = load_hardware("h200")
    times = derive(m, hw, 1, 8).times
    plain = replace(m, linear_layers=0)  # the same model read as all full attention
    bw = hw.hbm_bandwidth * hw.mem_efficiency
    # γ: read and rewrite 39.5 MB a sequence; α: 12 KV layers instead of 48
    dense_gamma = derive(plain, hw, 1, 8).times.attention.gamma
    gamma_plain = dense_gamma - 2 * (plain.attention_params() - m.attention_params()) / (
        hw.peak_flops(m.weight_bytes) * hw.compute_efficiency
    )
    assert times.attention.gamma - gamma_plain == pytest.approx(2 * 39_518_208 / bw, rel=1e-9)
    assert times.attention.alpha == pytest.approx(24_576 / bw, rel=1e-9)
    assert times.state_tokens == 1608
    assert times.kv_capacity_tokens == kv_capacity_tokens(m, hw, 1)
    # the state survives a round trip through a coefficients file
    assert coeffs_from_dict(coeffs_to_dict(times)).state_tokens == 1608
    with pytest.raises(InputError, match="state_tokens"):
        coeffs_from_dict({**coeffs_to_dict(times), "meta": {"state_tokens": -1}})


def test_the_kv_cache_holds_fewer_sequences_by_their_state():
    m = load_model("qwen3-next-80b-a3b")
    times = derive(m, load_hardware("h200"), 1, 8).times
    wl = parse_workload("fixed:prefill=1000,decode=200")
    s = wl.stats()
    with_state = resolve_batch(times, s, None)[1]
    without = resolve_batch(replace(times, state_tokens=0), s, None)[1]
    # B·(θ + s) fits where B·θ did: the largest B shrinks by about θ/(θ + s)
    assert with_state == pytest.approx(without * s.theta / (s.theta + 1608), rel=0.01)
    f = Fleet(times, 2, 4096, kv_capacity_tokens=times.kv_capacity_tokens)
    assert effective_batch(f, wl) == pytest.approx(times.kv_capacity_tokens / (1200 + 1608))


@pytest.mark.parametrize("router", ["round-robin", "least-kv"])
def test_open_system_reserves_the_state_with_every_request(router):
    """Two requests of P + D = 100 fit a 300-token worker, but not with 160 state tokens
    each: the second then waits for the first to finish (the compiled loop and the plain
    reference agree)."""
    times = derive(load_model("qwen3-next-80b-a3b"), load_hardware("h200"), 1, 8).times
    wl = EmpiricalWorkload(
        prompt=np.array([90, 90]), decode=np.array([10, 10]), arrival=np.array([0.0, 1e-6])
    )
    for state, overlap in ((0, True), (160, False)):
        f = Fleet(
            replace(times, state_tokens=state), 1, 4, 1, Pipeline("serial"),
            kv_capacity_tokens=300, router=router,
        )  # fmt: skip
        fast = simulate_open(wl, f, Arrivals("trace"), 2, seed=0)
        slow = simulate_open(wl, f, Arrivals("trace"), 2, seed=0, reference=True)
        np.testing.assert_allclose(fast.start, slow.start, rtol=0, atol=1e-12)
        assert bool(fast.start[1] < fast.finish[0]) is overlap
    with pytest.raises(InputError, match="recurrent state"):
        f = Fleet(replace(times, state_tokens=250), 1, 4, 1, kv_capacity_tokens=300)
        simulate_open(wl, f, Arrivals("trace"), 2, seed=0)


def test_measured_gated_deltanet_layers(aic):
    # Qwen3.5-35B-A3B on H200: 10 full-attention layers from the attention table, 30 Gated
    # DeltaNet layers from gdn_perf's decode kernels (convolution update + recurrent rule)
    import pandas as pd

    from afdplan.calibrate import aiconfig

    model = load_model("Qwen/Qwen3.5-35B-A3B")
    assert (model.full_attention_layers, model.linear_layers) == (10, 30)
    data = aiconfig.resolve_version("h200_sxm", "vllm", model)
    assert ("linear_attention", "gdn_perf.parquet") in aiconfig.needed_tables(model)
    table = pd.read_parquet(aiconfig.data_root() / "h200_sxm/linear_attention/vllm"
                            / data.version / "gdn_perf.parquet")  # fmt: skip
    rows = table[(table.phase == "generation") & (table.d_model == 2048)
                 & (table.num_k_heads == 16) & (table.num_v_heads == 32)]  # fmt: skip
    at64 = rows[rows.batch_size == 64].groupby("kernel_source").latency.median().sum()
    ms, label = aiconfig._gdn_ms(model, data, 1, np.array([64.0, 2048.0]))
    assert ms[0] == pytest.approx(at64) and "fused_recurrent" in label
    at1024 = rows[rows.batch_size == 1024].groupby("kernel_source").latency.median().sum()
    assert ms[1] == pytest.approx(2 * at1024)  # past the table: each sequence's update again
    with pytest.raises(InputError, match="do not split over 3 GPUs"):
        aiconfig._gdn_ms(model, data, 3, np.array([1.0]))
    tables = aiconfig.measured_tables(model, "h200_sxm", gpus_ffn=8)
    attention = tables.rows[tables.rows.op == "attention"]
    assert any("30 Gated DeltaNet layers" in n for n in tables.notes)
    # the rows are the full layers' kernel plus the recurrent layers' (a test of the sum)
    full = aiconfig._attention_rows(replace(model, linear_layers=0), data, 1, "bfloat16",
                                    "bfloat16", [])  # fmt: skip
    assert len(attention) == len(full)
    one = attention.iloc[5]
    recurrent, _ = aiconfig._gdn_ms(model, data, 1, np.array([one.batch]))
    alone = full.iloc[5].seconds * 10 / model.layers
    assert one.seconds == pytest.approx(alone + 30 * recurrent[0] / 1e3)


def test_calibrate_fits_a_hybrid_model_from_the_tables(cli, aic):
    res = cli("calibrate", "--model", "Qwen/Qwen3.5-35B-A3B", "--system", "h200_sxm",
              "--gpus-ffn", "8", "--json")  # fmt: skip
    assert res.code == 0, res.err
    data = res.json()
    assert "attention" in data["fits"] and "REFUSED" not in res.out


# AIConfigurator 0.12.0's own reading of the same rows: `cli_estimate("Qwen/Qwen3.5-35B-A3B",
# "h200_sxm", mode="static_gen", backend_name="vllm", isl=1024, batch_size=B, tp_size=1)`,
# its generation_gdn_conv1d + generation_gdn_recurrence ops (ms a step, all 30 GDN layers)
AIC_GDN_MS = {16: 0.067 + 0.512, 64: 0.120 + 2.149, 256: 0.324 + 8.023}


def test_gated_deltanet_read_equals_aiconfigurators_ops(aic):
    from afdplan.calibrate import aiconfig

    model = load_model("Qwen/Qwen3.5-35B-A3B")
    data = aiconfig.resolve_version("h200_sxm", "vllm", model)
    batch = np.array(sorted(AIC_GDN_MS), dtype=float)
    ms, _ = aiconfig._gdn_ms(model, data, 1, batch)
    want = np.array([AIC_GDN_MS[int(b)] for b in batch])
    np.testing.assert_allclose(model.linear_layers * ms, want, rtol=0.01)
