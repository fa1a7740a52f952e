"""Model and hardware specifications: built-in presets, or a user's HF ``config.json``.

A model is read from the fields of a Hugging Face ``config.json`` (dense or MoE; GQA or
MLA), so the built-in presets and a user's own file go through the same parser.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from afdplan.errors import InputError, check_positive, require, unknown_name

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1, "int8": 1, "fp4": 0.5}
_PRESETS = resources.files("afdplan.calibrate") / "presets"


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
    first_dense_layers: int = 0  # MoE models whose first layers are dense
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

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def moe_layers(self) -> int:
        return self.layers - self.first_dense_layers if self.is_moe else 0

    @property
    def dense_layers(self) -> int:
        return self.layers - self.moe_layers

    # ------------------------------------------------------------- per-layer counts

    def kv_elements_per_token_layer(self) -> int:
        """KV-cache elements one token adds to one layer."""
        if self.is_mla:
            return self.kv_lora_rank + self.qk_rope_dim
        return 2 * self.kv_heads * self.head_dim

    def kv_bytes_per_token(self) -> float:
        """KV bytes one token holds across all layers."""
        return self.layers * self.kv_elements_per_token_layer() * self.kv_bytes

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
        return h * q_width + 2 * h * self.kv_heads * self.head_dim + q_width * h

    def attention_flops_per_kv_token_layer(self) -> int:
        """Score and value FLOPs per cached token per layer (MLA: absorbed form)."""
        if self.is_mla:
            return 2 * self.heads * (2 * self.kv_lora_rank + self.qk_rope_dim)
        return 4 * self.heads * self.head_dim

    def dense_ffn_params_layer(self) -> int:
        return 3 * self.hidden * self.intermediate  # gate, up, down

    def moe_params_layer(self) -> int:
        """All weights of one MoE layer: routed experts, shared experts, router."""
        routed = self.experts * 3 * self.hidden * self.moe_intermediate
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
    source: str = ""

    def peak_flops(self, weight_bytes: float) -> float:
        """Dense tensor-core FLOP/s for the weight precision (FP8 path for ≤ 1 byte)."""
        return self.flops_fp8 if weight_bytes <= 1 else self.flops_bf16


# ---------------------------------------------------------------------- parsing

REQUIRED_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def model_from_config(config: dict, name: str, source: str = "") -> ModelSpec:
    """A ModelSpec from HF config.json fields (dense, MoE, GQA or MLA)."""
    require(isinstance(config, dict), f"{name}: config must be a JSON object")
    missing = [f for f in REQUIRED_FIELDS if f not in config]
    is_moe = any(k in config for k in ("n_routed_experts", "num_experts", "num_local_experts"))
    if not is_moe and "intermediate_size" not in config:
        missing.append("intermediate_size")
    if is_moe and "moe_intermediate_size" not in config and "intermediate_size" not in config:
        missing.append("moe_intermediate_size")
    require(not missing, f"{name}: config is missing required field(s) {', '.join(missing)}")

    def num(key: str, default: float | None = None) -> float:
        value = config.get(key, default)
        require(
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value),
            f"{name}: field {key!r} must be a number, got {value!r}",
        )
        return value  # type: ignore[return-value]

    hidden = int(check_positive(f"{name}: hidden_size", num("hidden_size")))
    heads = int(check_positive(f"{name}: num_attention_heads", num("num_attention_heads")))
    experts = int(num("n_routed_experts", num("num_experts", num("num_local_experts", 0))))
    moe_inter = int(num("moe_intermediate_size", num("intermediate_size", 0))) if experts else 0
    shared = int(num("n_shared_experts", 0)) * moe_inter + int(
        num("shared_expert_intermediate_size", 0)
    )
    quant = config.get("quantization_config") or {}
    weight_dtype = str(
        config.get("weight_dtype")
        or ("fp8" if quant.get("quant_method") == "fp8" else config.get("torch_dtype", "bfloat16"))
    )
    kv_dtype = str(config.get("kv_dtype", "bfloat16"))
    for label, dtype in (("weight_dtype", weight_dtype), ("kv_dtype", kv_dtype)):
        require(
            dtype in DTYPE_BYTES,
            f"{name}: unknown {label} {dtype!r}; known: {', '.join(DTYPE_BYTES)}",
        )
    spec = ModelSpec(
        name=name,
        hidden=hidden,
        layers=int(check_positive(f"{name}: num_hidden_layers", num("num_hidden_layers"))),
        heads=heads,
        kv_heads=int(num("num_key_value_heads", heads)),
        head_dim=int(num("head_dim", hidden // heads)),
        intermediate=int(num("intermediate_size", 0)),
        vocab=int(num("vocab_size")),
        experts=experts,
        top_k=int(num("num_experts_per_tok", 0)) if experts else 0,
        moe_intermediate=moe_inter,
        shared_intermediate=shared if experts else 0,
        first_dense_layers=int(num("first_k_dense_replace", 0)) if experts else 0,
        kv_lora_rank=int(num("kv_lora_rank", 0)),
        qk_rope_dim=int(num("qk_rope_head_dim", 0)),
        qk_nope_dim=int(num("qk_nope_head_dim", 0)),
        v_head_dim=int(num("v_head_dim", 0)),
        q_lora_rank=int(num("q_lora_rank", 0) or 0),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        weight_bytes=DTYPE_BYTES[weight_dtype],
        kv_bytes=DTYPE_BYTES[kv_dtype],
        source=source or str(config.get("source", "")),
    )
    require(spec.kv_heads >= 1 and spec.head_dim >= 1, f"{name}: head counts must be >= 1")
    require(not spec.is_moe or spec.top_k >= 1, f"{name}: an MoE config needs num_experts_per_tok")
    require(spec.is_moe or spec.intermediate >= 1, f"{name}: intermediate_size must be >= 1")
    return spec


def _load_table(file: str) -> dict[str, dict]:
    return tomllib.loads((_PRESETS / file).read_text())


def model_names() -> list[str]:
    return sorted(_load_table("models.toml"))


def hardware_names() -> list[str]:
    return sorted(_load_table("hardware.toml"))


def load_model(name_or_path: str) -> ModelSpec:
    """A built-in model preset by name, or an HF ``config.json`` by path."""
    path = Path(name_or_path)
    if path.suffix.lower() == ".json" or path.is_file():
        require(path.is_file(), f"{path}: no such config file")
        try:
            config = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not valid JSON: {str(exc).splitlines()[0]}") from exc
        return model_from_config(config, path.stem, source=str(path))
    table = _load_table("models.toml")
    key = name_or_path.lower()
    if key not in table:
        raise unknown_name("model", name_or_path, table)
    return model_from_config(table[key], key)


def load_hardware(name: str, **overrides: float) -> HardwareSpec:
    """A built-in hardware preset by name, with optional field overrides."""
    table = _load_table("hardware.toml")
    key = name.lower()
    if key not in table:
        raise unknown_name("hardware", name, table)
    fields = {k: v for k, v in table[key].items()}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    for k, v in fields.items():
        if k != "source":
            check_positive(f"{key}: {k}", v)
    for k in EFFICIENCIES:
        if k in fields:
            require(fields[k] <= 1, f"{key}: {k} must be in (0, 1], got {fields[k]:g}")
    return HardwareSpec(name=key, **fields)


EFFICIENCIES = ("mem_efficiency", "compute_efficiency", "link_efficiency", "usable_memory")
