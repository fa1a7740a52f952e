"""The model reader never guesses (``calibrate.config_keys``): every config aiconfigurator-
core caches loads or is refused in one line naming the key and the architecture; Step-3's
attention and MoE layout read right; every numeric field is checked."""

from __future__ import annotations

import json
from importlib import resources
from importlib.util import find_spec

import pytest

from afdplan.calibrate import config_keys
from afdplan.calibrate.specs import load_model, model_from_config
from afdplan.errors import InputError

# What aiconfigurator-core 0.12's cached configs give: these load, every other is refused.
LOADED = {
    "MiniMaxAI/MiniMax-M2.5", "MiniMaxAI/MiniMax-M2.7", "Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B",
    "Qwen/Qwen3-235B-A22B-FP8", "Qwen/Qwen3-235B-A22B", "Qwen/Qwen3-30B-A3B-FP8",
    "Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-32B-FP8-Static-PerTensor", "Qwen/Qwen3-32B-FP8",
    "Qwen/Qwen3-32B", "Qwen/Qwen3-8B", "Qwen/Qwen3-Coder-480B-A35B-Instruct",
    "Qwen/Qwen3-VL-235B-A22B-Instruct", "Qwen/Qwen3-VL-2B-Instruct",
    "Qwen/Qwen3-VL-30B-A3B-Instruct", "Qwen/Qwen3-VL-32B-Instruct",
    "Qwen/Qwen3-VL-32B-Thinking", "Qwen/Qwen3-VL-4B-Instruct", "Qwen/Qwen3-VL-8B-Instruct",
    "XiaomiMiMo/MiMo-7B-Base", "deepseek-ai/DeepSeek-R1", "deepseek-ai/DeepSeek-V3",
    "deepseek-ai/DeepSeek-V3.2", "nvidia/DeepSeek-V3.2-NVFP4",
    "meta-llama/Meta-Llama-3.1-405B", "meta-llama/Meta-Llama-3.1-70B",
    "meta-llama/Meta-Llama-3.1-8B", "mistralai/Mixtral-8x22B-v0.1",
    "mistralai/Mixtral-8x7B-v0.1", "moonshotai/Kimi-K2-Instruct", "moonshotai/Kimi-K2.5",
    "nvidia/DeepSeek-V3.1-NVFP4", "nvidia/Kimi-K2.5-NVFP4", "nvidia/Kimi-K2.6-NVFP4",
    "nvidia/Kimi-K2.7-Code-NVFP4", "nvidia/Llama-3.1-70B-Instruct-FP8",
    "nvidia/MiniMax-M2.5-NVFP4", "nvidia/MiniMax-M2.7-NVFP4", "nvidia/Qwen3-235B-A22B-NVFP4",
    # Gated DeltaNet hybrids (three linear-attention layers to one full)
    "Qwen/Qwen3.5-122B-A10B", "Qwen/Qwen3.5-27B", "Qwen/Qwen3.5-35B-A3B",
    "Qwen/Qwen3.5-397B-A17B", "nvidia/Qwen3.5-122B-A10B-NVFP4",
    "nvidia/Qwen3.5-397B-A17B-NVFP4", "nvidia/Qwen3.6-35B-A3B-NVFP4",
    # DeepSeek-V3.2's sparse attention under another name (GLM-5, GLM-5.1)
    "zai-org/GLM-5", "zai-org/GLM-5-FP8", "zai-org/GLM-5.1", "zai-org/GLM-5.1-FP8",
    "nvidia/GLM-5-NVFP4",
}  # fmt: skip
# and why a few of the refused ones are refused (the architecture, not a typo)
REFUSED_BECAUSE = {
    "moonshotai/Kimi-K3": "hybrid layers of linear attention",
    "nvidia/Qwen3.6-27B-NVFP4": "hybrid layers of linear attention",  # its output_gate_type
    "openai/gpt-oss-120b": "sliding-window",
    "meta-llama/Llama-4-Maverick-17B-128E-Instruct": "chunked attention",
    "nvidia/Llama-3_3-Nemotron-Super-49B-v1": "heterogeneous blocks",
    "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16": "state-space",
    "stepfun-ai/Step-3.7-Flash": "sliding-window",
}

needs_cache = pytest.mark.skipif(
    find_spec("aiconfigurator_core") is None, reason="needs the measured extra"
)


def _cached_ids() -> list[str]:
    if find_spec("aiconfigurator_core") is None:
        return []
    folder = resources.files("aiconfigurator_core") / "model_configs"
    return sorted(
        p.name[: -len("_config.json")].replace("--", "/", 1)
        for p in folder.iterdir()
        if p.name.endswith("_config.json") and not p.name.endswith("hf_quant_config.json")
    )


@needs_cache
def test_every_cached_config_loads_or_is_refused_in_one_line():
    loaded, refused = set(), {}
    for hf_id in _cached_ids():
        try:
            load_model(hf_id)
            loaded.add(hf_id)
        except InputError as exc:
            message = str(exc)
            assert "\n" not in message and hf_id in message
            assert "does not model" in message or "unknown to afdplan" in message
            refused[hf_id] = message
    assert loaded == LOADED
    for hf_id, reason in REFUSED_BECAUSE.items():
        assert reason in refused[hf_id], refused[hf_id]


@needs_cache
def test_every_cached_key_is_classified():
    # The lists cover every key of every cached config (an unknown key would refuse it
    # for the wrong reason); and a key sits in exactly one list.
    folder = resources.files("aiconfigurator_core") / "model_configs"
    seen: set[str] = set()
    for p in folder.iterdir():
        if p.name.endswith("_config.json") and not p.name.endswith("hf_quant_config.json"):
            config = json.loads(p.read_text())
            seen |= set(config) | set(config.get("text_config") or {})
    known = config_keys.READ | config_keys.NO_COST | set(config_keys.UNSUPPORTED)
    assert seen - known == set()
    assert not config_keys.READ & config_keys.NO_COST
    assert not (config_keys.READ | config_keys.NO_COST) & set(config_keys.UNSUPPORTED)


def test_step3_reads_its_attention_and_moe_layout():
    # Step-3 tech report (arXiv 2507.19427) Table 1: 316B parameters, 38B activated per
    # token, one shared 256-wide KV head, low-rank query 2048, MoE on all layers but the
    # first four and the last.
    m = load_model("step3")
    assert (m.kv_heads, m.head_dim, m.q_lora_rank) == (1, 256, 2048)
    assert (m.moe_layers, m.dense_layers, m.shared_intermediate) == (56, 5, 5120)
    attention = m.layers * m.attention_params_layer() + m.embedding_params()
    assert (attention + m.ffn_params()) / 1e9 == pytest.approx(316, rel=0.005)
    assert (attention + m.ffn_active_params()) / 1e9 == pytest.approx(38, rel=0.03)
    assert m.kv_bytes_per_token() == 61 * 2 * 256 * 2  # one K and one V head per layer


BASE = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "vocab_size": 10}
MOE = {**BASE, "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 16}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {**BASE, "num_hidden_layers": 0.5, "intermediate_size": 8},
            "'num_hidden_layers' must be an integer >= 1, got 0.5",
        ),
        (
            {**BASE, "vocab_size": -1, "intermediate_size": 8},
            "'vocab_size' must be an integer >= 1, got -1",
        ),
        ({**MOE, "num_experts": -8}, "'num_experts' must be an integer >= 0, got -8"),
        ({**MOE, "num_experts_per_tok": 9}, "top-k 9 exceeds the 8 routed experts"),
        (
            {**BASE, "num_key_value_heads": 3, "intermediate_size": 8},
            "4 attention heads do not split into 3 KV heads",
        ),
        ({**BASE, "intermediate_size": "wide"}, "'intermediate_size' must be a number"),
        ({**MOE, "first_k_dense_replace": 4}, "leaves no MoE layer"),
        ({**MOE, "first_k_dense_replace": 1}, "1 dense-FFN layer(s) need intermediate_size >= 1"),
        ({**MOE, "moe_layers_enum": "1,9"}, "'moe_layers_enum' names layers outside 0..3"),
        (
            {**BASE, "intermediate_size": 8, "index_topk_freq": 2},
            "'index_topk_freq': a sparse-attention variant",
        ),
        (
            {**BASE, "intermediate_size": 8, "index_topk": 2048},
            "index_topk (sparse attention) needs MLA",
        ),
        (
            {**BASE, "intermediate_size": 8, "layer_types": ["full_attention", "linear_attention"]},
            "per-layer attention types",
        ),
        ({**BASE, "intermediate_size": 8, "sliding_window": 4096}, "'sliding_window' = 4096"),
        (
            {**BASE, "intermediate_size": 8, "attn_type_list": [1, 0, 1, 1]},
            "linear-attention layers",
        ),
        ({**BASE, "intermediate_size": 8, "colour": "blue"}, "colour unknown to afdplan"),
        (
            {**BASE, "intermediate_size": 8, "kv_lora_rank": 512},
            "MLA (kv_lora_rank) needs qk_rope_head_dim",
        ),
    ],
)
def test_impossible_or_unmodelled_configs_are_refused(config, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model_from_config(config, "m")


def _moe_layers(**extra) -> int:
    return model_from_config({**MOE, "intermediate_size": 8, **extra}, "m").moe_layers


def test_moe_layouts_are_counted():
    # DeepSeek's first dense layers, Qwen's sparse step and dense list, per-layer types
    assert _moe_layers(first_k_dense_replace=1) == 3
    assert _moe_layers(decoder_sparse_step=2) == 2
    assert _moe_layers(mlp_only_layers=[0, 3]) == 2
    assert _moe_layers(mlp_layer_types=["dense", "sparse", "sparse", "dense"]) == 2
    assert _moe_layers(moe_layers_enum="1,2") == 2
    # a sliding window switched off, all-full layer types and MiniMax's all-1 list load
    quiet = {"sliding_window": 4096, "use_sliding_window": False, "attn_type_list": [1] * 4}
    assert model_from_config({**BASE, "intermediate_size": 8, **quiet}, "e").layers == 4


@needs_cache
def test_deepseek_v32_reads_its_sparse_attention():
    """DeepSeek-V3.2's DSA: the indexer (64 heads x 128, FP8 keys with a scale per 128)
    scores every cached token and MLA reads 2,048 of them, so a sequence's attention grows
    with its context only by the indexer's cost."""
    from afdplan.calibrate.roofline import derive
    from afdplan.calibrate.specs import load_hardware

    v32, v3 = load_model("deepseek-ai/DeepSeek-V3.2"), load_model("deepseek-ai/DeepSeek-V3")
    assert (v32.sparse_topk, v32.index_heads, v32.index_head_dim) == (2048, 64, 128)
    assert v32.kv_bytes_per_token() - v3.kv_bytes_per_token() == 61 * 132
    hw = load_hardware("h200")
    sparse, dense = derive(v32, hw, 1, 8).times, derive(v3, hw, 1, 8).times
    assert sparse.attention.gamma == pytest.approx(
        dense.attention.gamma + 2048 * dense.attention.alpha
    )
    assert sparse.attention.alpha == pytest.approx(61 * 132 / (4.8e12 * 0.8))
    at = lambda t, T: t.attention_time(1, T)  # noqa: E731
    assert at(sparse, 32_768) < 0.92 * at(dense, 32_768)  # long contexts cost less
    assert at(sparse, 2048) == pytest.approx(at(dense, 2048), rel=0.01)  # equal at k
    with pytest.raises(InputError, match=r"index_topk \(sparse attention\) needs MLA"):
        model_from_config({**BASE, "intermediate_size": 8, "index_topk": 64,
                           "index_n_heads": 2, "index_head_dim": 16}, "x")  # fmt: skip


@needs_cache
def test_sparse_attention_roofline_against_the_measured_dsa_module():
    """aiconfigurator-core's DSA decode module for DeepSeek-V3.2 on H200 (SGLang, 128 heads,
    batch 64): the cost per cached token drops about 9x once a context passes the top-k
    (the indexer alone), and the roofline's two slopes sit within 2x of the measured ones."""
    import glob
    from pathlib import Path

    import aiconfigurator_core
    import pandas as pd

    from afdplan.calibrate.roofline import derive
    from afdplan.calibrate.specs import load_hardware

    root = Path(aiconfigurator_core.__file__).parent / "systems" / "data" / "h200_sxm"
    tables = root / "sparse_attention" / "sglang" / "*" / "dsa_generation_module_perf.parquet"
    t = pd.read_parquet(sorted(glob.glob(str(tables)))[-1])
    t = t[(t.op_name == "dsa_generation_module") & (t.model == "deepseek-ai/DeepSeek-V3.2")
          & (t.kv_cache_dtype == "bfloat16") & (t.gemm_type == "fp8_block")
          & (t.num_heads == 128) & (t.batch_size == 64)]  # fmt: skip
    ms = t.groupby("step").latency.median()
    below = (ms[2048] - ms[512]) / 1e3 / ((2048 - 512) * 64)  # s per KV token and layer
    above = (ms[4096] - ms[2048]) / 1e3 / ((4096 - 2048) * 64)
    assert above < 0.2 * below
    v32, v3 = load_model("deepseek-ai/DeepSeek-V3.2"), load_model("deepseek-ai/DeepSeek-V3")
    hw = load_hardware("h200")
    index_alpha = derive(v32, hw, 1, 8).times.attention.alpha / 61
    mla_alpha = derive(v3, hw, 1, 8).times.attention.alpha / 61
    assert 0.5 < index_alpha / above < 2.0 and 0.5 < mla_alpha / below < 2.0


@needs_cache
def test_glm5_reads_as_deepseek_sparse_attention():
    """GLM-5 is served as DeepSeek-V3.2's architecture (vLLM: GlmMoeDsaForCausalLM is a
    DeepseekV2ForCausalLM); its qk_head_dim restates nope + rope, checked, and a config
    where it does not is refused."""
    m = load_model("zai-org/GLM-5")
    assert (m.is_mla, m.sparse_topk, m.index_heads, m.index_head_dim) == (True, 2048, 32, 128)
    # 78 layers × ((512 + 64) bf16 latent + 128 FP8 index keys + 4 bytes of scale)
    assert m.kv_bytes_per_token() == 78 * ((512 + 64) * 2 + 128 + 4)
    path = resources.files("aiconfigurator_core") / "model_configs" / "zai-org--GLM-5_config.json"
    config = json.loads(path.read_text())
    with pytest.raises(InputError, match="qk_head_dim' 300 is not MLA"):
        model_from_config({**config, "qk_head_dim": 300}, "glm")
