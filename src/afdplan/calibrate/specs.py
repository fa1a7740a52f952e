"""Model and hardware specifications: built-in presets, or a user's HF ``config.json``.

A model is read from the fields of a Hugging Face ``config.json`` (dense or MoE; GQA or
MLA), so the built-in presets and a user's own file go through the same parser.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from importlib.util import find_spec
from pathlib import Path

from afdplan.calibrate import config_keys
from afdplan.errors import InputError, check_positive, require, unknown_name
from afdplan.presets import hardware_aliases, read_table

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1, "int8": 1, "fp4": 0.5}


@dataclass(frozen=True)
class ModelSpec:
    """The shapes a decode step's cost depends on (counts, bytes per element)."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int  # dense FFN width (dense layers of an MoE model too)
    vocab: int
    experts: int = 0  # routed experts; 0 = dense
    top_k: int = 0
    moe_intermediate: int = 0
    shared_intermediate: int = 0  # total width of shared experts
    dense_ffn_layers: int = 0  # an MoE model's layers with a dense FFN (first k, or any)
    kv_lora_rank: int = 0  # MLA (DeepSeek); 0 = GQA/MHA
    qk_rope_dim: int = 0
    qk_nope_dim: int = 0
    v_head_dim: int = 0
    q_lora_rank: int = 0
    tie_embeddings: bool = False
    weight_bytes: float = 2.0
    kv_bytes: float = 2.0
    act_bytes: float = 2.0
    source: str = ""
    ffn_weight_bytes: float | None = None  # the FFN side's weights, if served in another dtype
    architecture: str = ""  # the config's architectures[0]: which runtimes can serve it
    # copies of hot experts the serving layout adds (EPLB): the group holds experts +
    # redundant_experts, so its size need only divide that (DeepSeek-V3: EP 288 over 256 + 32)
    redundant_experts: int = 0
    # DeepSeek sparse attention (V3.2's DSA): a lightning indexer of ``index_heads`` x
    # ``index_head_dim`` scores every cached token, then MLA reads the top ``sparse_topk``
    sparse_topk: int = 0
    index_heads: int = 0
    index_head_dim: int = 0
    # Gated DeltaNet layers (Qwen3-Next, Qwen3.5): a constant-size recurrent state per
    # sequence instead of a KV cache; the other layers are full attention
    linear_layers: int = 0
    linear_key_heads: int = 0
    linear_value_heads: int = 0
    linear_key_dim: int = 0
    linear_value_dim: int = 0
    linear_conv_kernel: int = 0
    state_bytes: float = 2.0  # bytes per recurrent-state element (the SSM cache dtype)
    attention_output_gate: bool = False  # full attention's query projection also emits a gate

    @property
    def ffn_bytes(self) -> float:
        """Bytes per FFN weight (the FFN instance may serve another dtype, e.g. FP8 or FP4
        experts behind BF16 attention)."""
        return self.weight_bytes if self.ffn_weight_bytes is None else self.ffn_weight_bytes

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def physical_experts(self) -> int:
        """Experts the FFN group holds: the model's and their redundant copies."""
        return self.experts + self.redundant_experts

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def full_attention_layers(self) -> int:
        """Layers with a KV cache (all but the Gated DeltaNet ones)."""
        return self.layers - self.linear_layers

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_ffn_layers if self.is_moe else 0

    @property
    def dense_layers(self) -> int:
        return self.layers - self.moe_layers

    # ------------------------------------------------------------- per-layer counts

    def kv_elements_per_token_layer(self) -> int:
        """KV-cache elements one token adds to one layer."""
        if self.is_mla:
            return self.kv_lora_rank + self.qk_rope_dim
        return 2 * self.kv_heads * self.head_dim

    def indexer_bytes_per_token_layer(self) -> int:
        """Bytes of the sparse-attention indexer's key a token adds to one layer: FP8
        elements and one FP32 scale per 128 (vLLM's and SGLang's DSA indexer caches:
        index_head_dim + index_head_dim // 128 * 4, as uint8)."""
        if not self.sparse_topk:
            return 0
        return self.index_head_dim + self.index_head_dim // 128 * 4

    def indexer_flops_per_kv_token_layer(self) -> int:
        """The indexer's score FLOPs per cached token per layer (every cached token)."""
        return 2 * self.index_heads * self.index_head_dim if self.sparse_topk else 0

    def kv_bytes_per_token(self) -> float:
        """KV bytes one token holds across the full-attention layers (with a sparse model's
        index keys)."""
        per_layer = self.kv_elements_per_token_layer() * self.kv_bytes
        return self.full_attention_layers * (per_layer + self.indexer_bytes_per_token_layer())

    def linear_conv_channels(self) -> int:
        """Channels of a Gated DeltaNet layer's short convolution: its q, k and v."""
        return 2 * self.linear_key_heads * self.linear_key_dim + (
            self.linear_value_heads * self.linear_value_dim
        )

    def state_bytes_per_sequence(self) -> float:
        """Recurrent state one sequence holds across the Gated DeltaNet layers, whatever its
        length: per layer a key × value matrix per value head (in the SSM cache dtype) and
        the convolution's last kernel − 1 inputs (in the activation dtype)."""
        if not self.linear_layers:
            return 0.0
        matrix = self.linear_value_heads * self.linear_key_dim * self.linear_value_dim
        conv = (self.linear_conv_kernel - 1) * self.linear_conv_channels()
        return self.linear_layers * (matrix * self.state_bytes + conv * self.act_bytes)

    def state_tokens_per_sequence(self) -> int:
        """The recurrent state in KV tokens of this model (rounded up): the cache a
        sequence holds beyond its context, which runtimes page from the same pool."""
        state = self.state_bytes_per_sequence()
        return math.ceil(state / self.kv_bytes_per_token()) if state else 0

    def linear_attention_params_layer(self) -> int:
        """Weights of one Gated DeltaNet layer: the q, k, v and output-gate projection, the
        per-head decay and step projections, the convolution, the output projection."""
        h, value = self.hidden, self.linear_value_heads * self.linear_value_dim
        qkvz = h * (2 * self.linear_key_heads * self.linear_key_dim + 2 * value)
        ba = h * 2 * self.linear_value_heads
        conv = self.linear_conv_channels() * self.linear_conv_kernel
        return qkvz + ba + conv + value * h

    def attention_params(self) -> int:
        """Weights of every layer's attention (full and Gated DeltaNet)."""
        return (
            self.full_attention_layers * self.attention_params_layer()
            + self.linear_layers * self.linear_attention_params_layer()
        )

    def attention_params_layer(self) -> int:
        """Weights of one layer's attention projections (Q, K, V or MLA's, and O)."""
        h = self.hidden
        if self.is_mla:
            qk = self.qk_nope_dim + self.qk_rope_dim
            q = (
                h * self.q_lora_rank + self.q_lora_rank * self.heads * qk
                if self.q_lora_rank
                else h * self.heads * qk
            )
            kv = h * (self.kv_lora_rank + self.qk_rope_dim) + self.kv_lora_rank * self.heads * (
                self.qk_nope_dim + self.v_head_dim
            )
            return q + kv + self.heads * self.v_head_dim * h
        q_width = self.heads * self.head_dim
        # a gated output (Qwen3-Next) doubles the query projection: it emits the gate too
        q_out = q_width * (2 if self.attention_output_gate else 1)
        # a low-rank query (Step-3's share_q_dim) goes through the rank first
        q = h * self.q_lora_rank + self.q_lora_rank * q_out if self.q_lora_rank else h * q_out
        return q + 2 * h * self.kv_heads * self.head_dim + q_width * h

    def attention_flops_per_kv_token_layer(self) -> int:
        """Score and value FLOPs per cached token per layer (MLA: absorbed form)."""
        if self.is_mla:
            return 2 * self.heads * (2 * self.kv_lora_rank + self.qk_rope_dim)
        return 4 * self.heads * self.head_dim

    def prefill_attention_flops_per_pair_layer(self) -> int:
        """Score and value FLOPs per (query, key) pair per layer in prefill, where MLA
        runs un-absorbed on decompressed keys and values (vLLM and SGLang do)."""
        if self.is_mla:
            return 2 * self.heads * (self.qk_nope_dim + self.qk_rope_dim + self.v_head_dim)
        return 4 * self.heads * self.head_dim

    def dense_ffn_params_layer(self) -> int:
        return 3 * self.hidden * self.intermediate  # gate, up, down

    def moe_params_layer(self) -> int:
        """All weights of one MoE layer as served: routed experts (with their redundant
        copies), shared experts, router."""
        routed = self.physical_experts * 3 * self.hidden * self.moe_intermediate
        return routed + 3 * self.hidden * self.shared_intermediate + self.hidden * self.experts

    def moe_active_params_layer(self) -> int:
        """Weights one token passes through in one MoE layer."""
        routed = self.top_k * 3 * self.hidden * self.moe_intermediate
        return routed + 3 * self.hidden * self.shared_intermediate + self.hidden * self.experts

    def ffn_params(self) -> int:
        """All FFN-side weights of the model."""
        return (
            self.dense_layers * self.dense_ffn_params_layer()
            + self.moe_layers * self.moe_params_layer()
        )

    def ffn_active_params(self) -> int:
        """FFN weights one token passes through, all layers."""
        return (
            self.dense_layers * self.dense_ffn_params_layer()
            + self.moe_layers * self.moe_active_params_layer()
        )

    def embedding_params(self) -> int:
        """Input embedding and LM head (held by the Attention side in our layout)."""
        return self.vocab * self.hidden * (1 if self.tie_embeddings else 2)


@dataclass(frozen=True)
class HardwareSpec:
    """One accelerator (bytes/s, FLOP/s, bytes, seconds) and achievable-efficiency factors."""

    name: str
    flops_bf16: float
    flops_fp8: float
    hbm_bandwidth: float
    hbm_bytes: float
    link_bandwidth: float
    link_latency: float
    mem_efficiency: float = 0.8
    compute_efficiency: float = 0.7
    link_efficiency: float = 0.8
    layer_overhead_s: float = 5e-6  # kernel launches and sync per layer per stage
    usable_memory: float = 0.9  # share of HBM left for weights + KV after runtime buffers
    gpus_per_node: int = 8  # a node or tray: the unit runtimes place ranks in
    scaleup_gpus: int = 8  # GPUs one NVLink (scale-up) domain joins; beyond it, the network
    # the scale-out network port per GPU, per direction (one 400 Gb/s ConnectX-7 by default)
    network_bandwidth: float = 50e9  # bytes/s
    network_latency: float = 5e-6  # seconds per transfer
    source: str = ""
    price_per_hour: float | None = None  # $ per GPU-hour, a public on-demand figure
    price_source: str = ""
    board_power_w: float | None = None  # maximum board power, watts
    # aiconfigurator-core systems that are this GPU (the first is the one launch files name)
    aiconfigurator_systems: tuple[str, ...] = ()

    def peak_flops(self, weight_bytes: float) -> float:
        """Dense tensor-core FLOP/s for the weight precision (FP8 path for ≤ 1 byte)."""
        return self.flops_fp8 if weight_bytes <= 1 else self.flops_bf16


# ---------------------------------------------------------------------- parsing

REQUIRED_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


# The spellings of the same MoE fields across model families' configs (DeepSeek, Qwen,
# Mixtral, Llama 4, gpt-oss, MiniMax, Step-3, ...). The first present key wins.
EXPERT_KEYS = ("n_routed_experts", "num_experts", "num_local_experts", "moe_num_experts")
TOP_K_KEYS = (
    "num_experts_per_tok",
    "num_experts_per_token",
    "experts_per_token",
    "top_k_experts",
    "moe_top_k",
)
EXPERT_WIDTH_KEYS = ("moe_intermediate_size", "expert_intermediate_size", "intermediate_size")
SHARED_COUNT_KEYS = ("n_shared_experts", "num_shared_experts")
SHARED_WIDTH_KEYS = (
    "shared_expert_intermediate_size",
    "moe_shared_expert_intermediate_size",
    "share_expert_dim",  # Step-3: one shared expert of this width
)


def _first(config: dict, keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if config.get(k) is not None), None)


def _quantized_dtype(quant: dict) -> str | None:
    """The weight dtype a ``quantization_config`` implies: FP8 (``quant_method: fp8``),
    modelopt's ``quant_algo``, or compressed-tensors' weight ``num_bits`` (4 or 8)."""
    algo = str(quant.get("quant_method", "")).lower()
    if algo == "fp8" or str(quant.get("quant_algo", "")).upper() == "FP8":
        return "fp8"
    if str(quant.get("quant_algo", "")).upper() in ("NVFP4", "W4A8_AWQ", "W4A16_AWQ"):
        return "fp4"
    for group in (quant.get("config_groups") or {}).values():
        bits = ((group or {}).get("weights") or {}).get("num_bits")
        if bits in (4, 8):
            return "fp4" if bits == 4 else "fp8"
    return None


class _Fields:
    """Typed reads of one config's fields, each a one-line error naming the field."""

    def __init__(self, config: dict, name: str) -> None:
        self.config, self.name = config, name

    def number(self, key: str, default: float | None = None) -> float:
        value = self.config.get(key)
        value = default if value is None else value
        require(
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value),
            f"{self.name}: field {key!r} must be a number, got {value!r}",
        )
        return value  # type: ignore[return-value]

    def count(self, key: str | None, default: int | None = None, minimum: int = 1) -> int:
        """An integer field >= ``minimum`` (a fraction, a string or a negative is refused)."""
        if key is None:
            assert default is not None
            return default
        value = self.number(key, default)
        require(
            value == int(value) and value >= minimum,
            f"{self.name}: field {key!r} must be an integer >= {minimum}, got {value!r}",
        )
        return int(value)


def _architecture(config: dict) -> str:
    """The config's ``architectures[0]`` (the class runtimes register models by), or ''."""
    arch = config.get("architectures")
    return str(arch[0]) if isinstance(arch, list) and arch else ""


def _check_keys(config: dict, name: str) -> None:
    """Every key is read, has no cost, or is refused (``calibrate.config_keys``)."""
    arch = _architecture(config) or str(config.get("model_type", "this architecture"))
    for key in config_keys.UNSUPPORTED:
        if config.get(key) not in (None, False, [], {}):
            raise InputError(
                f"{name}: {arch} uses {key!r}: {config_keys.UNSUPPORTED[key]}, which afdplan "
                "does not model; it refuses the config rather than misread it"
            )
    unknown = sorted(
        k
        for k in config
        if k not in config_keys.READ and k not in config_keys.NO_COST
        and k not in config_keys.UNSUPPORTED
    )  # fmt: skip
    require(
        not unknown,
        f"{name}: {arch} config key(s) {', '.join(unknown[:5])} unknown to afdplan: it cannot "
        "tell whether they change a decode step's compute or memory (calibrate/config_keys.py)",
    )
    types = config.get("layer_types")
    if types is not None:
        kinds_ok = {"full_attention", "linear_attention"} if _is_gdn(config) else {"full_attention"}
        require(
            isinstance(types, list) and all(t in kinds_ok for t in types),
            f"{name}: {arch} has per-layer attention types "
            f"{sorted({str(t) for t in types}) if isinstance(types, list) else types!r} in "
            f"'layer_types': {config_keys.WINDOWED}, or linear attention without Gated "
            "DeltaNet's linear_* fields, which afdplan does not model",
        )
    kinds = config.get("attn_type_list")
    if kinds is not None:
        require(
            isinstance(kinds, list) and all(k == 1 for k in kinds),
            f"{name}: {arch} has linear-attention layers ('attn_type_list' entries 0): "
            f"{config_keys.HYBRID}, which afdplan does not model",
        )
    window = config.get("sliding_window")
    if window not in (None, 0, False) and config.get("use_sliding_window") is not False:
        raise InputError(
            f"{name}: {arch} sets 'sliding_window' = {window!r}: {config_keys.WINDOWED}, "
            "which afdplan does not model"
        )


GDN_KEYS = (
    "linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim",
    "linear_value_head_dim", "linear_conv_kernel_dim",
)  # fmt: skip


def _is_gdn(config: dict) -> bool:
    """Whether the config describes Gated DeltaNet layers (Qwen3-Next, Qwen3.5)."""
    return any(config.get(k) is not None for k in GDN_KEYS)


def _linear_layers(config: dict, f: _Fields, layers: int) -> int:
    """How many layers are Gated DeltaNet: 'layer_types' entries 'linear_attention', or all
    but every 'full_attention_interval'-th layer (Qwen3-Next's layout)."""
    if not _is_gdn(config):
        require(
            config.get("full_attention_interval") is None,
            f"{f.name}: 'full_attention_interval' without Gated DeltaNet's fields "
            f"({', '.join(GDN_KEYS)})",
        )
        return 0
    types = config.get("layer_types")
    if types is not None:
        require(
            len(types) == layers,
            f"{f.name}: 'layer_types' lists {len(types)} layers, num_hidden_layers is {layers}",
        )
        linear = sum(t == "linear_attention" for t in types)
    else:
        require(
            config.get("full_attention_interval") is not None,
            f"{f.name}: Gated DeltaNet fields but no layer layout: give 'layer_types' or "
            "'full_attention_interval'",
        )
        every = f.count("full_attention_interval")
        linear = layers - layers // every
    require(linear < layers, f"{f.name}: Gated DeltaNet in every layer; afdplan needs a KV cache")
    return linear


def _moe_layers(f: _Fields, layers: int) -> list[bool]:
    """Which of the ``layers`` decoder layers run routed experts, from whichever layout
    keys the config uses (DeepSeek's first_k_dense_replace and moe_layer_freq, Qwen's
    decoder_sparse_step and mlp_only_layers, Step-3's moe_layers_enum, per-layer
    mlp_layer_types); every layer by default."""
    c, name = f.config, f.name
    moe = [True] * layers
    if c.get("mlp_layer_types") is not None:
        kinds = c["mlp_layer_types"]
        require(
            isinstance(kinds, list) and len(kinds) == layers
            and set(kinds) <= {"sparse", "dense"},
            f"{name}: 'mlp_layer_types' must list 'sparse' or 'dense' for each of the "
            f"{layers} layers",
        )  # fmt: skip
        return [k == "sparse" for k in kinds]
    if c.get("moe_layers_enum") is not None:
        raw = c["moe_layers_enum"]
        items = raw.split(",") if isinstance(raw, str) else raw
        try:
            listed = {int(str(x).strip()) for x in items if str(x).strip()}
        except (TypeError, ValueError):
            raise InputError(f"{name}: 'moe_layers_enum' must list layer indices") from None
        require(
            all(0 <= i < layers for i in listed),
            f"{name}: 'moe_layers_enum' names layers outside 0..{layers - 1}",
        )
        return [i in listed for i in range(layers)]
    first = f.count("first_k_dense_replace", 0, minimum=0)
    freq = f.count("moe_layer_freq", 1)
    step = f.count("decoder_sparse_step", 1)
    dense_only = c.get("mlp_only_layers") or []
    require(
        isinstance(dense_only, list) and all(isinstance(i, int) for i in dense_only),
        f"{name}: 'mlp_only_layers' must list layer indices",
    )
    require(first < layers, f"{name}: first_k_dense_replace = {first} leaves no MoE layer")
    for i in range(layers):
        moe[i] = i >= first and i % freq == 0 and (i + 1) % step == 0 and i not in dense_only
    return moe


def model_from_config(config: dict, name: str, source: str = "") -> ModelSpec:
    """A ModelSpec from HF config.json fields (dense or MoE; GQA, MLA or Step-3's shared
    KV groups with a low-rank query; any placement of MoE layers; shared experts).

    Multimodal configs keep the language model under ``text_config``; its fields are
    read there. Every key is read, known to have no cost, or refused in one line
    (``afdplan.calibrate.config_keys``): a config afdplan would misread is refused.
    """
    require(isinstance(config, dict), f"{name}: config must be a JSON object")
    if isinstance(config.get("text_config"), dict):
        outer = {k: v for k, v in config.items() if k in config_keys.READ and k != "text_config"}
        config = {**outer, **config["text_config"]}
    _check_keys(config, name)
    f = _Fields(config, name)
    expert_key = _first(config, EXPERT_KEYS)
    missing = [k for k in REQUIRED_FIELDS if k not in config]
    experts = f.count(expert_key, 0, minimum=0) if expert_key else 0
    moe_hints = [
        k
        for k in (*TOP_K_KEYS, "moe_intermediate_size", "expert_intermediate_size",
                  *SHARED_COUNT_KEYS, *SHARED_WIDTH_KEYS, "moe_layers_enum")
        if config.get(k) not in (None, 0, "", [])
    ]  # fmt: skip
    require(
        experts or not moe_hints,
        f"{name}: config has MoE fields ({', '.join(moe_hints[:4])}) but no routed experts; "
        f"give one of {', '.join(EXPERT_KEYS)}",
    )
    if not experts and "intermediate_size" not in config:
        missing.append("intermediate_size")
    if experts and _first(config, EXPERT_WIDTH_KEYS) is None:
        missing.append("moe_intermediate_size")
    if experts and _first(config, TOP_K_KEYS) is None:
        missing.append("num_experts_per_tok")
    require(not missing, f"{name}: config is missing required field(s) {', '.join(missing)}")

    hidden = f.count("hidden_size")
    heads = f.count("num_attention_heads")
    layers = f.count("num_hidden_layers")
    kv_key = "num_attention_groups" if "num_attention_groups" in config else "num_key_value_heads"
    kv_heads = f.count(kv_key, heads)
    require(
        heads % kv_heads == 0,
        f"{name}: {heads} attention heads do not split into {kv_heads} KV heads ({kv_key})",
    )
    require(hidden >= heads, f"{name}: {heads} attention heads exceed hidden_size {hidden}")
    head_dim = f.count("head_dim", hidden // heads)
    top_k = f.count(_first(config, TOP_K_KEYS), 0) if experts else 0
    require(top_k <= experts, f"{name}: top-k {top_k} exceeds the {experts} routed experts")
    moe_inter = f.count(_first(config, EXPERT_WIDTH_KEYS)) if experts else 0
    shared = 0
    if experts:
        count_key, width_key = _first(config, SHARED_COUNT_KEYS), _first(config, SHARED_WIDTH_KEYS)
        shared = f.count(count_key, 0, minimum=0) * moe_inter if count_key else 0
        shared += f.count(width_key, 0, minimum=0) if width_key else 0
    moe = _moe_layers(f, layers) if experts else [False] * layers
    require(not experts or any(moe), f"{name}: the MoE layout leaves no MoE layer")
    dense_layers = layers - sum(moe)
    intermediate = (
        f.count("intermediate_size", 0, minimum=0) if "intermediate_size" in config else 0
    )
    require(
        dense_layers == 0 or intermediate >= 1,
        f"{name}: {dense_layers} dense-FFN layer(s) need intermediate_size >= 1",
    )
    mla = {
        key: f.count(key, 0, minimum=0)
        for key in ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
    }
    if mla["kv_lora_rank"]:
        for key in ("qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"):
            require(mla[key] >= 1, f"{name}: MLA (kv_lora_rank) needs {key} >= 1")
    if config.get("qk_head_dim") is not None:
        width = mla["qk_nope_head_dim"] + mla["qk_rope_head_dim"]
        require(
            mla["kv_lora_rank"] >= 1 and f.count("qk_head_dim") == width,
            f"{name}: 'qk_head_dim' {config['qk_head_dim']!r} is not MLA's qk_nope_head_dim + "
            f"qk_rope_head_dim = {width}: an attention variant afdplan does not model",
        )
    sparse_keys = ("index_topk", "index_n_heads", "index_head_dim")
    sparse = {k: f.count(k, 0, minimum=0) for k in sparse_keys}
    if sparse["index_topk"]:
        require(mla["kv_lora_rank"] >= 1, f"{name}: index_topk (sparse attention) needs MLA")
        for key in ("index_n_heads", "index_head_dim"):
            require(sparse[key] >= 1, f"{name}: sparse attention (index_topk) needs {key} >= 1")
    q_key = "share_q_dim" if config.get("share_q_dim") is not None else "q_lora_rank"
    q_rank = f.count(q_key, 0, minimum=0)
    weight_dtype = str(
        config.get("weight_dtype")
        or _quantized_dtype(config.get("quantization_config") or {})
        or config.get("torch_dtype")
        or config.get("dtype")
        or "bfloat16"
    )
    kv_dtype = str(config.get("kv_dtype", "bfloat16"))
    linear_layers = _linear_layers(config, f, layers)
    gdn = {k: f.count(k) if linear_layers else 0 for k in GDN_KEYS}
    if linear_layers:
        require(
            gdn["linear_num_value_heads"] % gdn["linear_num_key_heads"] == 0,
            f"{name}: {gdn['linear_num_value_heads']} Gated DeltaNet value heads do not share "
            f"{gdn['linear_num_key_heads']} key heads evenly",
        )
    # the recurrent state's dtype: the config's (Qwen3.5 pins float32), else 16-bit, as
    # vLLM's mamba_ssm_cache_dtype 'auto' and aiconfigurator-core's qwen35.py read it
    state_dtype = str(config.get("mamba_ssm_dtype") or "bfloat16")
    # Qwen3-Next's full attention always gates its output; Qwen3.5 says so in its config
    gate = config.get("attn_output_gate")
    gate = _architecture(config).startswith("Qwen3Next") if gate is None else gate
    require(isinstance(gate, bool), f"{name}: 'attn_output_gate' must be true or false")
    for label, dtype in (
        ("weight_dtype", weight_dtype), ("kv_dtype", kv_dtype), ("mamba_ssm_dtype", state_dtype)
    ):  # fmt: skip
        require(
            dtype in DTYPE_BYTES,
            f"{name}: unknown {label} {dtype!r}; known: {', '.join(DTYPE_BYTES)}",
        )
    return ModelSpec(
        name=name,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=intermediate,
        vocab=f.count("vocab_size"),
        experts=experts,
        top_k=top_k,
        moe_intermediate=moe_inter,
        shared_intermediate=shared,
        dense_ffn_layers=dense_layers if experts else 0,
        kv_lora_rank=mla["kv_lora_rank"],
        qk_rope_dim=mla["qk_rope_head_dim"],
        qk_nope_dim=mla["qk_nope_head_dim"],
        v_head_dim=mla["v_head_dim"],
        q_lora_rank=q_rank,
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        weight_bytes=DTYPE_BYTES[weight_dtype],
        kv_bytes=DTYPE_BYTES[kv_dtype],
        source=source or str(config.get("source", "")),
        architecture=_architecture(config),
        sparse_topk=sparse["index_topk"],
        index_heads=sparse["index_n_heads"] if sparse["index_topk"] else 0,
        index_head_dim=sparse["index_head_dim"] if sparse["index_topk"] else 0,
        linear_layers=linear_layers,
        linear_key_heads=gdn["linear_num_key_heads"],
        linear_value_heads=gdn["linear_num_value_heads"],
        linear_key_dim=gdn["linear_key_head_dim"],
        linear_value_dim=gdn["linear_value_head_dim"],
        linear_conv_kernel=gdn["linear_conv_kernel_dim"],
        state_bytes=DTYPE_BYTES[state_dtype],
        attention_output_gate=gate,
    )


def served_as(
    spec: ModelSpec, weight: str | None, ffn: str | None = None, kv: str | None = None
) -> ModelSpec:
    """``spec`` served with other element types: ``weight`` for the weights (the FFN's too
    unless ``ffn`` names its own) and ``kv`` for the KV cache; None keeps the config's."""
    changes: dict = {}
    for field_name, dtype in (
        ("weight_bytes", weight),
        ("ffn_weight_bytes", ffn),
        ("kv_bytes", kv),
    ):
        if dtype is not None:
            require(
                dtype in DTYPE_BYTES, f"unknown dtype {dtype!r}; known: {', '.join(DTYPE_BYTES)}"
            )
            changes[field_name] = DTYPE_BYTES[dtype]
    return replace(spec, **changes) if changes else spec


def _load_table(file: str) -> dict[str, dict]:
    return read_table(file.removesuffix(".toml"))


def model_names() -> list[str]:
    return sorted(_load_table("models.toml"))


def hardware_names() -> list[str]:
    return sorted(_load_table("hardware.toml"))


def load_model(name_or_path: str) -> ModelSpec:
    """A built-in model preset by name, an HF ``config.json`` by path, or a Hugging Face id
    (``org/name``) resolved offline from aiconfigurator-core's cached configs (the
    ``measured`` extra)."""
    path = Path(name_or_path)
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    if path.suffix.lower() == ".json" or path.is_file():
        require(path.is_file(), f"{path}: no such config file")
        return model_from_config(_read_json(path), path.stem, source=str(path))
    table = _load_table("models.toml")
    key = name_or_path.lower()
    if key in table:
        return model_from_config(table[key], key)
    if "/" in name_or_path:
        cached = _cached_hf_config(name_or_path)
        config = _read_json(cached)
        sidecar = cached.with_name(cached.name.replace("_config.json", "_hf_quant_config.json"))
        if sidecar.is_file() and "quantization_config" not in config:
            quant = _read_json(sidecar).get("quantization") or {}
            config = {**config, "quantization_config": quant}
            if str(quant.get("kv_cache_quant_algo", "")).upper() == "FP8":
                config.setdefault("kv_dtype", "fp8")
        return model_from_config(config, name_or_path, source=f"{name_or_path} ({cached.name})")
    raise unknown_name("model", name_or_path, table)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON: {str(exc).splitlines()[0]}") from exc


def _cached_hf_config(hf_id: str) -> Path:
    """aiconfigurator-core ships the config.json of the models it supports, named
    ``org--name_config.json``; no network is used."""
    from importlib.util import find_spec

    if find_spec("aiconfigurator_core") is None:
        raise InputError(
            f"model {hf_id!r}: a Hugging Face id is resolved from aiconfigurator-core's "
            "cached configs; install the extra (pip install 'afdplan[measured]') or give "
            "the path of its config.json"
        )
    folder = resources.files("aiconfigurator_core") / "model_configs"
    wanted = hf_id.replace("/", "--").lower() + "_config.json"
    by_name = {f.name.lower(): f for f in folder.iterdir() if f.name.endswith("_config.json")}
    if wanted not in by_name:
        known = sorted(
            f.name.removesuffix("_config.json").replace("--", "/")
            for f in folder.iterdir()
            if f.name.endswith("_config.json") and not f.name.endswith("hf_quant_config.json")
        )
        raise unknown_name("Hugging Face model (cached by aiconfigurator-core)", hf_id, known)
    return Path(str(by_name[wanted]))


def load_hardware(name: str, **overrides: float) -> HardwareSpec:
    """A hardware preset by name, by the name of an aiconfigurator-core system that is
    the same GPU (the preset's ``aiconfigurator_systems``), or a TOML file of the preset
    keys (``afdplan presets --hardware NAME --toml`` prints one to start from); with
    optional field overrides."""
    path = Path(name).expanduser()
    if path.suffix.lower() == ".toml" or path.is_file():
        key, fields = _hardware_file(path)
    else:
        table = _load_table("hardware.toml")
        aliases = hardware_aliases()
        key = aliases.get(name.lower(), name.lower())
        if key in table:
            fields = dict(table[key])
            fields.pop("aliases", None)
        elif key in aiconfigurator_systems():
            fields = _hardware_from_system(key)
        else:
            known = [*table, *(a for a in aliases if a not in table)]
            extra = [s for s in aiconfigurator_systems() if s not in aliases and s not in table]
            raise unknown_name("hardware", name, [*known, *extra])
    fields.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(fields) - set(HARDWARE_FIELDS))
    require(
        not unknown,
        f"{key}: unknown hardware key(s) {', '.join(unknown)}; known: {', '.join(HARDWARE_FIELDS)}",
    )
    for k in _HARDWARE_REQUIRED:
        require(k in fields, f"{key}: hardware needs {k}")
    fields["aiconfigurator_systems"] = tuple(fields.get("aiconfigurator_systems", ()))
    for k, v in fields.items():
        if k not in _HARDWARE_TEXT:
            require(
                isinstance(v, int | float) and not isinstance(v, bool),
                f"{key}: {k} must be a number, got {v!r}",
            )
            check_positive(f"{key}: {k}", v)
    for k in ("gpus_per_node", "scaleup_gpus"):
        if k in fields:
            require(int(fields[k]) == fields[k], f"{key}: {k} must be an integer, got {fields[k]}")
    for k in EFFICIENCIES:
        if k in fields:
            require(fields[k] <= 1, f"{key}: {k} must be in (0, 1], got {fields[k]:g}")
    return HardwareSpec(name=key, **fields)


EFFICIENCIES = ("mem_efficiency", "compute_efficiency", "link_efficiency", "usable_memory")
HARDWARE_FIELDS = tuple(f for f in HardwareSpec.__dataclass_fields__ if f != "name")
_HARDWARE_REQUIRED = (
    "flops_bf16", "flops_fp8", "hbm_bandwidth", "hbm_bytes", "link_bandwidth", "link_latency",
)  # fmt: skip
_HARDWARE_TEXT = ("source", "price_source", "aiconfigurator_systems")


@lru_cache(maxsize=1)
def aiconfigurator_systems() -> tuple[str, ...]:
    """The systems the installed aiconfigurator-core ships (none without the extra): its
    ``systems/*.yaml`` files with a ``gpu:`` and a ``node:`` section (the folder also holds
    manifests)."""
    if find_spec("aiconfigurator_core") is None:
        return ()
    folder = resources.files("aiconfigurator_core") / "systems"
    return tuple(
        sorted(
            p.name[:-5]
            for p in folder.iterdir()
            if p.name.endswith(".yaml")
            and {"gpu:", "node:"} <= set(p.read_text(encoding="utf-8").splitlines())
        )
    )


def _hardware_from_system(system: str) -> dict:
    """Preset fields from aiconfigurator-core's ``systems/SYSTEM.yaml`` (its GPU and node
    figures): a system with no preset of its own. The scale-up domain is the rack where
    the system names one, the node where its intra-node link beats PCIe, and one GPU on a
    PCIe-only host (every A↔F transfer and expert all-to-all then crosses PCIe or the
    network)."""
    from importlib.metadata import version

    import yaml

    folder = resources.files("aiconfigurator_core") / "systems"
    spec = yaml.safe_load((folder / f"{system}.yaml").read_text(encoding="utf-8"))
    gpu, node = spec["gpu"], spec["node"]
    intra, pcie = float(node["intra_node_bw"]), float(node.get("pcie_bw", 0.0))
    per_node = int(node["num_gpus_per_node"])
    pcie_only = intra <= pcie
    scaleup = 1 if pcie_only else int(node.get("num_gpus_per_rack", per_node))
    fields = {
        "flops_bf16": float(gpu["bfloat16_tc_flops"]),
        "flops_fp8": float(gpu.get("fp8_tc_flops", gpu["bfloat16_tc_flops"])),
        "hbm_bandwidth": float(gpu["mem_bw"]),
        "hbm_bytes": float(gpu["mem_capacity"]),
        "link_bandwidth": intra,
        "link_latency": float(node["p2p_latency"]),
        "mem_efficiency": float(gpu.get("mem_bw_empirical_scaling_factor", 0.8)),
        "gpus_per_node": per_node,
        "scaleup_gpus": scaleup,
        "network_bandwidth": float(node.get("inter_rack_bw", node["inter_node_bw"])),
        "aiconfigurator_systems": [system],
        "source": (
            f"aiconfigurator-core {version('aiconfigurator-core')} systems/{system}.yaml"
            + (" (PCIe only: no NVLink)" if pcie_only else "")
        ),
    }
    if "power" in gpu:
        fields["board_power_w"] = float(gpu["power"])
    return fields


def _hardware_file(path: Path) -> tuple[str, dict]:
    """(name, fields) of a hardware TOML file: the preset keys at the top level (named
    after the file, or by ``name = ...``) or under one ``[NAME]`` table."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such hardware file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    if len(data) == 1 and isinstance(next(iter(data.values())), dict):
        name, fields = next(iter(data.items()))
        return str(name), dict(fields)
    fields = dict(data)
    return str(fields.pop("name", path.stem)), fields
