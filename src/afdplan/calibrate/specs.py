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

from afdplan.errors import InputError, check_positive, require, unknown_name
from afdplan.presets import read_table, system_hardware

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
    ffn_weight_bytes: float | None = None  # the FFN side's weights, if served in another dtype

    @property
    def ffn_bytes(self) -> float:
        """Bytes per FFN weight (the FFN instance may serve another dtype, e.g. FP8 or FP4
        experts behind BF16 attention)."""
        return self.weight_bytes if self.ffn_weight_bytes is None else self.ffn_weight_bytes

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
# Mixtral, Llama 4, gpt-oss, MiniMax, ...). The first present key wins.
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
SHARED_WIDTH_KEYS = ("shared_expert_intermediate_size", "moe_shared_expert_intermediate_size")


def _first(config: dict, keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if config.get(k) not in (None, 0)), None)


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


def model_from_config(config: dict, name: str, source: str = "") -> ModelSpec:
    """A ModelSpec from HF config.json fields (dense, MoE, GQA or MLA).

    Multimodal configs keep the language model under ``text_config``; its fields are
    read there. A config that names MoE fields but no expert count this parser knows is
    refused: reading it as a dense model would be silently wrong.
    """
    require(isinstance(config, dict), f"{name}: config must be a JSON object")
    if isinstance(config.get("text_config"), dict):
        outer = {k: v for k, v in config.items() if k in ("quantization_config", "source")}
        config = {**outer, **config["text_config"]}
    expert_key = _first(config, EXPERT_KEYS)
    hints = sorted(
        k
        for k, v in config.items()
        if ("expert" in k.lower() or k.lower().startswith("moe")) and v not in (None, 0, False)
    )
    require(
        expert_key is not None or not hints,
        f"{name}: config has MoE fields ({', '.join(hints[:4])}) but no expert count this "
        f"parser knows; give one of {', '.join(EXPERT_KEYS)}",
    )
    is_moe = expert_key is not None
    missing = [f for f in REQUIRED_FIELDS if f not in config]
    if not is_moe and "intermediate_size" not in config:
        missing.append("intermediate_size")
    if is_moe and _first(config, EXPERT_WIDTH_KEYS) is None:
        missing.append("moe_intermediate_size")
    if is_moe and _first(config, TOP_K_KEYS) is None:
        missing.append("num_experts_per_tok")
    require(not missing, f"{name}: config is missing required field(s) {', '.join(missing)}")

    def num(key: str | None, default: float | None = None) -> float:
        value = config.get(key, default) if key else default
        require(
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value),
            f"{name}: field {key!r} must be a number, got {value!r}",
        )
        return value  # type: ignore[return-value]

    hidden = int(check_positive(f"{name}: hidden_size", num("hidden_size")))
    heads = int(check_positive(f"{name}: num_attention_heads", num("num_attention_heads")))
    experts = int(num(expert_key, 0))
    moe_inter = int(num(_first(config, EXPERT_WIDTH_KEYS), 0)) if experts else 0
    shared = int(num(_first(config, SHARED_COUNT_KEYS), 0)) * moe_inter + int(
        num(_first(config, SHARED_WIDTH_KEYS), 0)
    )
    weight_dtype = str(
        config.get("weight_dtype")
        or _quantized_dtype(config.get("quantization_config") or {})
        or config.get("torch_dtype", "bfloat16")
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
        top_k=int(num(_first(config, TOP_K_KEYS), 0)) if experts else 0,
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
    require(spec.is_moe or spec.intermediate >= 1, f"{name}: intermediate_size must be >= 1")
    return spec


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
        aliases = system_hardware()
        key = aliases.get(name.lower(), name.lower())
        if key in table:
            fields = dict(table[key])
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
