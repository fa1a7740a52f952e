"""Measured step-time tables from NVIDIA's ``aiconfigurator-core`` (optional extra).

The package (Apache-2.0, ``pip install afdplan[measured]``) ships kernel latencies
measured per GPU system and serving framework, in ms per layer. For one model × system
× framework we assemble whole-model, per-decode-step rows of the generic table:

* ``attention`` — GQA models: ``generation_attention_perf`` at the model's head shape
  divided over the Attention instance's GPUs (``step`` is the context length, ``isl`` is
  always 1; sliding-window variants are dropped). MLA models (DeepSeek):
  ``mla_generation_module_perf``, which covers the whole attention module.
* ``attention_dense`` — GQA: the QKV and O projections; every model: the LM head
  (vocab-parallel over the instance's GPUs); from the GEMM table at m = B.
* ``ffn`` — dense FFN: gate-up and down GEMMs, tensor-parallel over the FFN instance's
  g_F GPUs, plus the NCCL all-reduce of the output; MoE: ``moe_perf`` with expert
  parallelism g_F read at ``num_tokens`` = the whole FFN batch T (see below), balanced
  routing, beside the shared experts (run on a second stream: the longer of the two sets a
  layer), plus the leading dense layers; shared and dense weights are replicated per rank
  and run by each rank on its T/g_F tokens; plus the expert dispatch and combine.

The MoE table's token axis is the group's, not a rank's. aiconfigurator-core's collectors
time EP rank 0 while ``num_tokens`` hidden states are routed over all E experts, rank 0
computing only its E/g local experts (``collector/vllm/collect_moe.py`` at ai-dynamo/
aiconfigurator 095f58a: ``hidden_states = torch.randn([num_tokens, hidden_size])`` line 702,
``balanced_logits(num_tokens, num_experts, topk)`` line 748, the rank-0 expert map of a
``moe_ep_size`` world, lines 539-542), and its estimator queries the table with every
data-parallel rank's tokens together (``operators/moe.rs`` lines 196-197, 274-279:
``num_tokens * attention_dp_size``; its roofline divides ``num_tokens·topk`` by the EP size,
line 799). The tables agree: at a fixed ``num_tokens`` the time falls as the EP size grows
(h200_sxm vllm 0.24.0, 16,384 tokens: EP8 5.1 ms, EP16 4.0 ms), where a per-rank axis would
keep it flat. So a micro-batch of T tokens on the group takes ``table(num_tokens = T)``.

GEMM shapes missing from the table are scaled from the closest measured shape by the
ratio of n·k (both the weight bytes and the FLOPs scale with it); the notes say so. The
fastest kernel per shape is used, as an autotuner would. Times are × layers / 1000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import util
from pathlib import Path

import numpy as np
import pandas as pd

from afdplan.calibrate.specs import HardwareSpec, ModelSpec
from afdplan.choices import Framework
from afdplan.errors import InputError, require
from afdplan.timing.experts import Routing
from afdplan.timing.tables import TABLE_COLUMNS

PACKAGE = "aiconfigurator_core"


def data_root() -> Path:
    """The ``systems/data`` folder of the installed package, or a one-line error."""
    spec = util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise InputError(
            "measured tables need aiconfigurator-core: pip install 'afdplan[measured]'"
        )
    return Path(spec.origin).parent / "systems" / "data"


FRAMEWORKS = tuple(f.value for f in Framework)
VERSION_ALIASES = ("current", "previous", "next")
TABLE_KINDS = ("attention", "mla", "gemm", "moe")  # the kernel tables afdplan reads


def systems() -> list[str]:
    """The systems whose data folder holds measured tables (the package also ships empty
    folders for systems it only describes)."""
    root = data_root()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and next(p.rglob("*.parquet"), None))


def _version_key(text: str) -> tuple:
    from packaging.version import InvalidVersion, Version

    try:
        return (0, Version(text))
    except InvalidVersion:
        return (1, text)


def _check_system(system: str) -> Path:
    root = data_root()
    if (root / system).is_dir() and system not in systems():
        raise InputError(
            f"{system}: the installed aiconfigurator-core has no measured tables for it "
            f"(empty data folder); systems with data: {', '.join(systems())}"
        )
    require(system in systems(), f"unknown system {system!r}; known: {', '.join(systems())}")
    return root / system


def declared_versions(system: str, framework: str) -> list[str]:
    """Every data version of ``framework`` on ``system`` that holds any kind of table afdplan
    reads, oldest first."""
    base = _check_system(system)
    require(framework in FRAMEWORKS, f"unknown framework {framework!r}; known: {FRAMEWORKS}")
    found = {
        v.name
        for kind in TABLE_KINDS
        if (base / kind / framework).is_dir()
        for v in (base / kind / framework).iterdir()
        if v.is_dir()
    }
    require(bool(found), f"{system}: no {framework} tables")
    return sorted(found, key=_version_key)


def _slots(system: str, framework: str) -> dict[str, str | None]:
    """aiconfigurator-core's queryable versions of (system, framework): ``current`` and
    ``previous`` from its ``query_versions.yaml`` (defaults, then per-system overrides), and
    ``next``, the newest declared version after ``current``."""
    import yaml

    path = data_root().parent / "query_versions.yaml"
    doc = yaml.safe_load(path.read_text()) if path.is_file() else {}
    slot = dict((doc.get("defaults") or {}).get(framework) or {})
    slot.update(((doc.get("overrides") or {}).get(system) or {}).get(framework) or {})
    declared = declared_versions(system, framework)
    current = slot.get("current") or declared[-1]
    newer = [v for v in declared if _version_key(v) > _version_key(current)]
    return {"current": current, "previous": slot.get("previous"), "next": (newer or [None])[-1]}


@dataclass(frozen=True)
class DataVersion:
    """One aiconfigurator-core data version of a (system, framework), as its own loader
    reads it: a table missing from the version is taken from the version its
    ``reuse.yaml`` names, else from the newest older version that has it (backward fill,
    never forward)."""

    system: str
    framework: str
    version: str

    def path(self, kind: str, file: str) -> Path | None:
        """The file that serves ``kind/file`` at this version, or None."""
        base = data_root() / self.system / kind / self.framework
        if not base.is_dir():
            return None
        here = base / self.version / file
        if here.is_file():
            return here
        donor = _reuse_donor(base / self.version / "reuse.yaml", Path(file).stem)
        if donor is not None and (base / donor / file).is_file():
            return base / donor / file
        older = [
            v.name
            for v in base.iterdir()
            if (v / file).is_file() and _version_key(v.name) < _version_key(self.version)
        ]
        return base / max(older, key=_version_key) / file if older else None

    def label(self, path: Path) -> str:
        """``system/kind/framework/version/file``, saying when the version was filled in."""
        rel = path.relative_to(data_root()).as_posix()
        served = path.parent.name
        return rel if served == self.version else f"{rel} (serves {self.version})"


def _reuse_donor(path: Path, table: str) -> str | None:
    if not path.is_file():
        return None
    import yaml

    for item in (yaml.safe_load(path.read_text()) or {}).get("reuse") or []:
        if item.get("table") == table:
            return str(item.get("from_version"))
    return None


def needed_tables(model: ModelSpec) -> list[tuple[str, str]]:
    """(kind, file) of every table :func:`measured_tables` reads for ``model``."""
    attention = (
        ("mla", "mla_generation_module_perf.parquet")
        if model.is_mla
        else ("attention", "generation_attention_perf.parquet")
    )
    need = [attention, ("gemm", "gemm_perf.parquet")]
    if model.linear_layers:
        need.append(("linear_attention", "gdn_perf.parquet"))
    if model.is_moe:
        need.append(("moe", "moe_perf.parquet"))
    return need


def working_versions(system: str, framework: str, model: ModelSpec) -> list[str]:
    """The declared versions at which every table ``model`` needs can be served."""
    return [
        v
        for v in declared_versions(system, framework)
        if all(DataVersion(system, framework, v).path(k, f) for k, f in needed_tables(model))
    ]


def resolve_version(
    system: str, framework: str, model: ModelSpec, version: str | None = None
) -> DataVersion:
    """The data version to read: ``version`` (a declared version or current / previous /
    next), by default aiconfigurator-core's ``current``; a one-line error naming the versions
    that work when it cannot serve every table the model needs."""
    declared = declared_versions(system, framework)
    slots = _slots(system, framework)
    wanted = version or "current"
    if wanted in VERSION_ALIASES:
        require(
            slots[wanted] is not None,
            f"{system}/{framework}: no {wanted!r} data version; declared: {', '.join(declared)}",
        )
        wanted = str(slots[wanted])
    require(
        wanted in declared,
        f"{system}/{framework}: no data version {wanted!r}; declared: {', '.join(declared)} "
        f"(or {', '.join(VERSION_ALIASES)})",
    )
    chosen = DataVersion(system, framework, wanted)
    missing = [f"{k}/{f}" for k, f in needed_tables(model) if chosen.path(k, f) is None]
    if missing:
        works = working_versions(system, framework, model)
        raise InputError(
            f"{system}/{framework} {wanted}: no {', '.join(missing)} at or before it for "
            f"{model.name}; versions that work: {', '.join(works) if works else 'none'}"
        )
    return chosen


def _table(data: DataVersion, kind: str, file: str) -> tuple[pd.DataFrame, str]:
    path = data.path(kind, file)
    require(path is not None, f"{data.system}/{kind}/{data.framework}: no {file}")
    return _read(path), data.label(path)


@lru_cache(maxsize=32)
def _read(path: Path) -> pd.DataFrame:
    """A table, read once per process (a deploy search reads several sizes from it);
    callers only select from it."""
    return pd.read_parquet(path)


def _values(column: pd.Series) -> set:
    """The distinct values of a column (without iterating an Arrow-backed column in
    Python, which costs more than reading the table)."""
    return set(column.unique().tolist())


@dataclass(frozen=True)
class MeasuredTables:
    """Generic-table rows and the notes that say where each came from."""

    rows: pd.DataFrame
    notes: tuple[str, ...]


class _Gemm:
    """Fastest measured GEMM latency (ms) at (m, n, k), scaled from the nearest shape."""

    def __init__(self, table: pd.DataFrame, dtype: str, source: str):
        sub = table[table["gemm_dtype"] == dtype]
        require(len(sub) > 0, f"{source}: no {dtype} GEMMs")
        self.best = sub.groupby(["n", "k", "m"])["latency"].min()
        self.shapes = np.array(sorted({(n, k) for n, k, _ in self.best.index}), dtype=np.float64)
        self.source, self.dtype = source, dtype
        self.notes: list[str] = []

    def __call__(self, m: np.ndarray, n: int, k: int, what: str) -> np.ndarray:
        shapes = self.shapes
        # Keep the reduction size k if it was measured (then n), else n, else the nearest both.
        for axis in (1, 0):
            same = shapes[shapes[:, axis] == (k, n)[1 - axis]]
            if same.size:
                shapes = same
                break
        distance = np.abs(np.log(shapes[:, 0] / n)) + np.abs(np.log(shapes[:, 1] / k))
        n0, k0 = (int(v) for v in shapes[int(np.argmin(distance))])
        scale = (n * k) / (n0 * k0)
        if (n0, k0) != (n, k):
            self.notes.append(f"{what}: GEMM n={n}, k={k} scaled x{scale:.3g} from n={n0}, k={k0}")
        curve = self.best.loc[(n0, k0)]
        ms = np.interp(
            np.asarray(m, dtype=np.float64), curve.index.to_numpy(np.float64), curve.to_numpy()
        )
        return ms * scale


def measured_tables(
    model: ModelSpec,
    system: str,
    framework: str = "vllm",
    gpus_attention: int = 1,
    gpus_ffn: int = 1,
    version: str | None = None,
    routing: Routing | None = None,
    hw: HardwareSpec | None = None,
    expert_tp: int = 1,
) -> MeasuredTables:
    """Whole-model per-step rows for ``model`` on ``system`` (see module doc): the MoE at
    ``routing``'s rows (balanced by default), every expert split over ``expert_tp`` GPUs
    (the tables' ``moe_tp_size``), its expert dispatch and combine measured where the
    framework's DeepEP table covers the group, else on the link roofline of ``hw`` (the
    system's hardware preset), the split experts' all-gather and reduce-scatter from the
    system's NCCL table (``gather_scatter``)."""
    require(gpus_attention >= 1 and gpus_ffn >= 1, "GPU counts must be >= 1")
    data = resolve_version(system, framework, model, version)
    notes: list[str] = [f"aiconfigurator-core data: {system} {framework} {data.version}"]
    w_dtype = "fp8_block" if model.weight_bytes <= 1 else "bfloat16"
    kv_dtype = "fp8" if model.kv_bytes <= 1 else "bfloat16"
    gemm_table, gemm_src = _table(data, "gemm", "gemm_perf.parquet")
    gemm = _Gemm(
        gemm_table,
        w_dtype if w_dtype in _values(gemm_table["gemm_dtype"]) else "bfloat16",
        gemm_src,
    )
    L = model.layers
    parts = [_attention_rows(model, data, gpus_attention, kv_dtype, w_dtype, notes)]

    batches = np.array(sorted(parts[0]["batch"].unique()), dtype=np.float64)
    # vLLM's LM head is vocab-parallel: each of the g_A GPUs holds vocab/g_A rows.
    dense = gemm(batches, math.ceil(model.vocab / gpus_attention), model.hidden, "LM head")
    if not model.is_mla:
        g = gpus_attention
        # a gated query projection also emits the output gate (Qwen3-Next, Qwen3.5)
        q = model.heads * model.head_dim * (2 if model.attention_output_gate else 1)
        qkv = gemm(batches, (q + 2 * model.kv_heads * model.head_dim) // g, model.hidden, "QKV")
        out = gemm(batches, model.hidden, model.heads * model.head_dim // g, "O proj")
        dense = dense + model.full_attention_layers * (qkv + out)
        if model.linear_layers:  # a Gated DeltaNet layer's q, k, v, gate, b, a and output
            value = model.linear_value_heads * model.linear_value_dim
            width = (2 * model.linear_key_heads * model.linear_key_dim + 2 * value
                     + 2 * model.linear_value_heads)  # fmt: skip
            gdn = gemm(batches, width // g, model.hidden, "GDN in") + gemm(
                batches, model.hidden, value // g, "GDN out"
            )
            dense = dense + model.linear_layers * gdn
    if gpus_attention > 1:  # the split output projection's all-reduce, every layer
        dense = dense + L * _all_reduce(data, gpus_attention, batches * model.hidden, notes)
    parts.append(_rows("attention_dense", tokens=batches, seconds=dense / 1e3))
    notes.append(
        f"attention_dense: {gemm_src} ({gemm.dtype}), "
        + (
            f"LM head (vocab-parallel, TP {gpus_attention})"
            if model.is_mla
            else f"QKV + O projections (TP {gpus_attention}) x {L} + LM head (vocab-parallel)"
        )
    )
    parts.append(
        _ffn_rows(
            model, data, gpus_ffn, w_dtype, gemm, notes, routing or Routing(), hw, expert_tp
        )
    )
    notes.extend(dict.fromkeys(gemm.notes))
    return MeasuredTables(pd.concat(parts, ignore_index=True), tuple(notes))


def _rows(op: str, **columns: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"op": op, **columns}).reindex(columns=list(TABLE_COLUMNS))


def _attention_rows(
    model: ModelSpec,
    data: DataVersion,
    g: int,
    kv_dtype: str,
    w_dtype: str,
    notes: list[str],
) -> pd.DataFrame:
    heads = model.heads / g
    require(heads.is_integer(), f"{model.heads} heads do not split over {g} GPUs")
    if model.is_mla:
        table, src = _table(data, "mla", "mla_generation_module_perf.parquet")
        gemm_type = w_dtype if w_dtype in _values(table["gemm_type"]) else "bfloat16"
        sub = table[
            (table["num_heads"] == heads)
            & (table["kv_cache_dtype"] == kv_dtype)
            & (table["gemm_type"] == gemm_type)
        ]
        have = sorted(_values(table["num_heads"]))
        require(
            len(sub) > 0, f"{src}: no MLA rows for {heads:g} heads, KV {kv_dtype}; heads: {have}"
        )
        notes.append(f"attention: {src}, MLA {heads:g} heads, KV {kv_dtype}, GEMM {gemm_type}")
    else:
        table, src = _table(data, "attention", "generation_attention_perf.parquet")
        kv_heads = max(1, model.kv_heads // g)
        sub = table[
            (table["num_heads"] == heads)
            & (table["num_key_value_heads"] == kv_heads)
            & (table["head_dim"] == model.head_dim)
            & (table["kv_cache_dtype"] == kv_dtype)
            & (table["window_size"] == 0)
        ]
        if len(sub) == 0:
            shapes = table.groupby(["num_heads", "num_key_value_heads", "head_dim"]).size().index
            raise InputError(
                f"{src}: no rows for {heads:g}/{kv_heads}/{model.head_dim} (heads/KV heads/dim), "
                f"KV {kv_dtype}; {len(shapes)} shapes measured, e.g. {list(shapes)[:6]}"
            )
        notes.append(
            f"attention: {src}, {heads:g} heads / {kv_heads} KV heads / dim {model.head_dim}, "
            f"KV {kv_dtype}, full attention (window 0); context = step"
        )
    sub = sub.groupby(["batch_size", "step"], as_index=False)["latency"].median()
    batch = sub["batch_size"].to_numpy(np.float64)
    ms = model.full_attention_layers * sub["latency"].to_numpy(np.float64)
    if model.linear_layers:
        recurrent, label = _gdn_ms(model, data, g, batch)
        ms = ms + model.linear_layers * recurrent
        notes.append(f"attention: + {model.linear_layers} Gated DeltaNet layers from {label}")
    return _rows(
        "attention",
        batch=batch,
        kv_tokens=(sub["batch_size"] * sub["step"]).to_numpy(np.float64),
        seconds=ms / 1e3,
    )


def _gdn_ms(model: ModelSpec, data: DataVersion, g: int, batch: np.ndarray):
    """(ms of one Gated DeltaNet layer's decode kernels at each ``batch``, a label): the
    framework's ``gdn_perf`` generation rows (the convolution update and the recurrent
    rule, summed) at 1/g of the key and value heads, interpolated in log batch."""
    table, src = _table(data, "linear_attention", "gdn_perf.parquet")
    heads = (model.linear_key_heads / g, model.linear_value_heads / g)
    require(
        all(h.is_integer() for h in heads),
        f"{model.linear_key_heads}/{model.linear_value_heads} Gated DeltaNet key/value heads "
        f"do not split over {g} GPUs",
    )
    sub = table[
        (table["phase"] == "generation")
        & (table["d_model"] == model.hidden)
        & (table["num_k_heads"] == heads[0])
        & (table["num_v_heads"] == heads[1])
        & (table["head_k_dim"] == model.linear_key_dim)
        & (table["head_v_dim"] == model.linear_value_dim)
        & (table["d_conv"] == model.linear_conv_kernel)
    ]
    require(
        len(sub) > 0,
        f"{src}: no decode rows for {heads[0]:g}/{heads[1]:g} key/value heads at hidden "
        f"{model.hidden} (conv {model.linear_conv_kernel})",
    )
    kernels = sorted(_values(sub["kernel_source"]))
    per = sub.groupby(["batch_size", "kernel_source"])["latency"].median().groupby("batch_size")
    total = per.sum()
    measured, ms_at = total.index.to_numpy(np.float64), total.to_numpy(np.float64)
    b = np.maximum(batch, 1.0)
    ms = np.interp(np.log(b), np.log(measured), ms_at)
    # past the largest batch measured each sequence's state update costs what it did there
    ms = np.where(b > measured[-1], ms_at[-1] * b / measured[-1], ms)
    return ms, f"{src} ({heads[0]:g}/{heads[1]:g} heads a rank: {' + '.join(kernels)})"


def _ffn_rows(
    model: ModelSpec,
    data: DataVersion,
    g: int,
    w_dtype: str,
    gemm: _Gemm,
    notes: list[str],
    routing: Routing,
    hw: HardwareSpec | None,
    expert_tp: int = 1,
) -> pd.DataFrame:
    if not model.is_moe:
        inter = model.intermediate / g
        require(inter.is_integer(), f"FFN width {model.intermediate} does not split over {g} GPUs")
        tokens = np.array(sorted({m for _, _, m in gemm.best.index}), dtype=np.float64)
        per_layer = gemm(tokens, int(2 * inter), model.hidden, "FFN gate-up") + gemm(
            tokens, model.hidden, int(inter), "FFN down"
        )
        notes.append(f"ffn: dense gated MLP from {gemm.source}, TP {g} x {model.layers} layers")
        if g == 1:
            return _rows("ffn", tokens=tokens, seconds=model.layers * per_layer / 1e3)
        # the all-reduce is the group's communication (as an MoE group's exchange is)
        reduce = model.layers * _all_reduce(data, g, tokens * model.hidden, notes) / 1e3
        return pd.concat(
            [_rows("ffn", tokens=tokens, seconds=model.layers * per_layer / 1e3 + reduce),
             _rows("exchange", tokens=tokens, seconds=reduce)],
            ignore_index=True,
        )  # fmt: skip
    sub, src, moe_dtype = _routed_experts(model, data, g, w_dtype, routing, expert_tp)
    tokens = sub.index.to_numpy(np.float64)  # the whole group's micro-batch (module doc)
    per_rank = tokens / g  # the replicated dense parts run on each rank's share
    per_layer_moe = sub.to_numpy(np.float64)
    if model.shared_intermediate:
        # Decode runs the shared experts on a second CUDA stream beside the routed ones
        # (vLLM's maybe_execute_in_parallel under CUDA graphs; aiconfigurator-core models it
        # as an overlap, sdk/models/deepseek.py ``generation_moe_overlap``): the longer of
        # the two sets the layer.
        shared = gemm(per_rank, 2 * model.shared_intermediate, model.hidden, "shared up") + gemm(
            per_rank, model.hidden, model.shared_intermediate, "shared down"
        )
        per_layer_moe = np.maximum(per_layer_moe, shared)
    total = model.moe_layers * per_layer_moe
    if model.dense_ffn_layers:
        dense = gemm(per_rank, 2 * model.intermediate, model.hidden, "dense-layer up") + gemm(
            per_rank, model.hidden, model.intermediate, "dense-layer down"
        )
        total = total + model.dense_ffn_layers * dense
    layout = f"EP {g}" if expert_tp == 1 else f"EP {g // expert_tp} x expert TP {expert_tp}"
    notes.append(
        f"ffn: {src}, {moe_dtype}, {layout}, {routing} routing rows"
        + (" (timed at the busiest rank)" if routing.kind == "power-law" else "")
        + f", num_tokens = the group's micro-batch; {model.moe_layers} MoE layers"
        + (" beside the shared experts (overlapped)" if model.shared_intermediate else "")
        + (f" + {model.dense_ffn_layers} dense layers (GEMM)" if model.dense_ffn_layers else "")
    )
    exchange = _exchange(model, data, g, tokens, hw, notes, expert_tp)
    rows = [_rows("ffn", tokens=tokens, seconds=total / 1e3 + exchange)]
    if exchange.any():  # the part of the ffn rows that is the exchange, for colocated decode
        rows.append(_rows("exchange", tokens=tokens, seconds=exchange))
    return pd.concat(rows, ignore_index=True)


def _routed_experts(
    model: ModelSpec,
    data: DataVersion,
    g: int,
    w_dtype: str,
    routing: Routing,
    expert_tp: int = 1,
) -> tuple[pd.Series, str, str]:
    """(ms per MoE layer by ``num_tokens`` = the group's micro-batch, the table's label, the
    dtype read) of the routed experts on a group of g GPUs at ``routing``'s rows: expert
    parallel, or with ``expert_tp`` > 1 every expert split over that many GPUs (the
    table's ``moe_tp_size``; expert parallel over the g/expert_tp such slices)."""
    table, src = _table(data, "moe", "moe_perf.parquet")
    moe_dtype = w_dtype if w_dtype in _values(table["moe_dtype"]) else "bfloat16"
    shape = (
        (table["hidden_size"] == model.hidden)
        & (table["inter_size"] == model.moe_intermediate)
        & (table["topk"] == model.top_k)
        & (table["num_experts"] == model.experts)
        & (table["moe_tp_size"] == expert_tp)
        & (table["moe_dtype"] == moe_dtype)
    )
    eps = sorted(_values(table.loc[shape, "moe_ep_size"]))
    require(bool(eps), f"{src}: no {moe_dtype} MoE rows for {model.name}'s expert shape")
    ep = g // expert_tp
    require(
        ep * expert_tp == g and ep in eps,
        f"{src}: no expert-parallel size {ep} at expert TP {expert_tp} for {model.name}; "
        f"measured: {eps}",
    )
    shape = shape & (table["moe_ep_size"] == ep)
    wanted = routing.table_distribution
    found = sorted(_values(table.loc[shape, "distribution"]))
    require(
        wanted in found,
        f"{src}: no {routing} routing rows for {model.name} at EP {g}; measured: "
        + ", ".join(d.replace("power_law_", "power-law:") for d in found),
    )
    rows = table[shape & (table["distribution"] == wanted)]
    return rows.groupby("num_tokens")["latency"].median(), src, moe_dtype


def routed_experts_curve(
    model: ModelSpec,
    system: str,
    framework: str,
    g: int,
    routing: Routing | None = None,
    version: str | None = None,
):
    """The routed experts alone: a ``Curve`` of ms per MoE layer against the group's
    micro-batch (what ``measured_tables`` folds into its FFN rows; for cross-checks)."""
    from afdplan.timing.tables import Curve

    data = resolve_version(system, framework, model, version)
    w_dtype = "fp8_block" if model.weight_bytes <= 1 else "bfloat16"  # as measured_tables
    sub, _, _ = _routed_experts(model, data, g, w_dtype, routing or Routing())
    return Curve(sub.index.to_numpy(np.float64), sub.to_numpy(np.float64))


def _exchange(
    model: ModelSpec,
    data: DataVersion,
    g: int,
    tokens: np.ndarray,
    hw: HardwareSpec | None,
    notes: list[str],
    expert_tp: int = 1,
) -> np.ndarray:
    """Seconds per step of moving micro-batches of ``tokens`` to a g-GPU group's experts
    and back (DESIGN.md §10), every expert split over ``expert_tp`` = t GPUs: between the
    e = g/t expert-parallel slices, DeepEP's low-latency kernels as the framework's
    ``moe_a2a`` table measured them for whole experts (per-rank ``num_tokens`` = T/g, the
    group and node count exact), else the link roofline of
    ``calibrate.roofline.expert_exchange``; inside a slice, an all-gather and a
    reduce-scatter over its t GPUs of the tokens it serves (``gather_scatter``)."""
    from afdplan.calibrate.roofline import expert_exchange, slice_share

    t, e = expert_tp, g // expert_tp
    seconds = np.zeros_like(tokens)
    if e > 1:
        nodes = 1 if hw is None else -(-g // hw.scaleup_gpus)
        measured = _deepep_ll(model, data, e, nodes) if t == 1 else None
        if measured is not None:
            curve, label = measured
            notes.append(
                f"ffn: + expert dispatch and combine from {label} at T/{g} tokens a rank"
            )
            seconds = model.moe_layers * curve(tokens / g) / 1e6
        elif hw is None:
            notes.append("ffn: no expert dispatch or combine (no hardware for the link roofline)")
        else:
            alpha, beta = expert_exchange(model, hw, e)
            notes.append(
                f"ffn: + expert dispatch and combine from the link roofline ({data.system} "
                f"has no {data.framework} DeepEP table at EP {e} over {nodes} node(s) for "
                "this shape)"
            )
            # each slice's t GPUs send over t ports: 1/t of a lone rank's time per token
            seconds = alpha / t * tokens + beta
    if t > 1:
        served = slice_share(model, g, t) * tokens
        moved = gather_scatter(data, t, served * model.hidden, notes)
        seconds = seconds + model.moe_layers * moved / 1e3
    return seconds


def _deepep_ll(model: ModelSpec, data: DataVersion, g: int, nodes: int):
    """(µs of dispatch + combine per MoE layer against per-rank tokens, its label) from the
    framework's DeepEP low-latency rows at this EP size and node count, or None."""
    from afdplan.timing.tables import Curve

    if data.framework == "sglang":
        # SGLang's rows are normalised to EP 8 on one node (aiconfigurator-core's
        # moe_comm_resolver keeps that coordinate), so they serve exactly that group.
        path = data.path("comm", "wideep_deepep_ll_perf.parquet")
        if path is None or (g, nodes) != (8, 1):
            return None
        t = _read(path)
        sel = t[
            (t["hidden_size"] == model.hidden)
            & (t["num_topk"] == model.top_k)
            & (t["num_experts"] == model.experts)
            & (t["node_num"] == nodes)
        ]
        if sel["num_token"].nunique() < 2:
            return None
        both = sel.groupby("num_token")[["dispatch_avg_t_us", "combine_avg_t_us"]].median()
        x, y = both.index.to_numpy(np.float64), both.sum(axis=1).to_numpy(np.float64)
        return Curve(x, y), data.label(path)
    path = data.path("comm", "moe_a2a_perf.parquet")
    if path is None:
        return None
    t = _read(path)
    sel = t[
        (t["comm_backend"].isin(["deepep_ll", "trtllm_deepep_ll"]))
        & (t["ep_size"] == g)
        & (t["node_num"] == nodes)
        & (t["hidden_size"] == model.hidden)
        & (t["topk"] == model.top_k)
        & (t["num_experts"] == model.experts)
    ]
    if sel.empty:
        return None
    if "comm_dtype" in sel and sel["comm_dtype"].nunique() > 1:
        fp8 = "fp8" if model.ffn_bytes <= 1 else "bfloat16"
        keep = sel["comm_dtype"].isin([fp8, "default"])
        sel = sel[keep] if keep.any() else sel
    phases = sel.pivot_table(index="num_tokens", columns="phase", values="latency")
    if not {"dispatch", "combine"} <= set(phases.columns) or len(phases) < 2:
        return None
    phases = phases[["dispatch", "combine"]].dropna()
    return Curve(phases.index.to_numpy(np.float64), phases.sum(axis=1).to_numpy()), data.label(
        path
    )


def _all_reduce(data: DataVersion, g: int, elements: np.ndarray, notes: list[str]) -> np.ndarray:
    """ms of one bf16 all-reduce of ``elements`` over ``g`` GPUs: the framework's own
    custom all-reduce as measured under CUDA graphs (``comm/FRAMEWORK/VERSION/
    custom_allreduce_perf.parquet``, what vLLM and SGLang run at decode sizes), else
    NCCL's table. Both index ``message_size`` in elements (ai-dynamo/aiconfigurator
    ``collector/network/collect_all_reduce.py`` lines 69-75: a tensor of that many
    elements; ``collect_nccl.py`` line 107: bytes // element size); interpolated in log
    size."""
    custom = data.path("comm", "custom_allreduce_perf.parquet")
    if custom is not None:
        table, label = _read(custom), data.label(custom)
        if "backend" in table:  # decode runs under CUDA graphs
            table = table[table["backend"].astype(str).str.endswith("graph")]
        sub = table[(table["num_gpus"] == g) & (table["allreduce_dtype"] == "bfloat16")]
    else:
        base = data_root() / data.system / "comm" / "nccl"
        require(base.is_dir(), f"{data.system}: no all-reduce tables")
        latest = sorted((p.name for p in base.iterdir()), key=_version_key)[-1]
        table, label = _read(base / latest / "nccl_perf.parquet"), f"NCCL {latest}"
        sub = table[
            (table["op_name"] == "all_reduce")
            & (table["num_gpus"] == g)
            & (table["nccl_dtype"] == "half")
        ]
    require(len(sub) > 0, f"{data.system}: no all-reduce measured over {g} GPUs ({label})")
    note = f"+ all-reduce over {g} GPUs each layer from {label}"
    if note not in notes:
        notes.append(note)
    return _by_message_size(sub, elements)


def _by_message_size(rows: pd.DataFrame, elements: np.ndarray) -> np.ndarray:
    """The median latency of a collective's ``rows`` by ``message_size``, read at
    ``elements`` (interpolated in log size)."""
    curve = rows.groupby("message_size")["latency"].median()
    x = np.log(curve.index.to_numpy(np.float64))
    return np.interp(np.log(np.maximum(elements, 1.0)), x, curve.to_numpy(np.float64))


def _nccl_table(data: DataVersion) -> tuple[pd.DataFrame, str]:
    """The system's NCCL table: the version its system file names (``misc.nccl_version``,
    the one aiconfigurator-core's estimator reads), else the newest measured."""
    import yaml

    base = data_root() / data.system / "comm" / "nccl"
    require(base.is_dir(), f"{data.system}: no NCCL tables")
    spec = data_root().parent / f"{data.system}.yaml"
    doc = yaml.safe_load(spec.read_text()) if spec.is_file() else {}
    named = str(((doc or {}).get("misc") or {}).get("nccl_version", ""))
    versions = sorted((p.name for p in base.iterdir()), key=_version_key)
    version = named if named in versions else versions[-1]
    return _read(base / version / "nccl_perf.parquet"), f"NCCL {version}"


def gather_scatter(
    data: DataVersion, g: int, elements: np.ndarray, notes: list[str]
) -> np.ndarray:
    """ms of one NCCL all-gather plus one reduce-scatter of ``elements`` (the whole
    gathered tensor, half precision) over ``g`` GPUs: how vLLM moves a data-parallel
    group's tokens to an MoE it does not run expert parallel and sums the split experts'
    partial outputs back (``get_ep_group().dispatch``/``combine`` around FusedMoE; priced
    so in aiconfigurator-core's ``MoEDispatch`` for vLLM, ``operators/moe_dispatch.rs``
    lines 185-205). The table indexes the whole buffer: nccl-tests' size, divided by the
    element size (``collector/network/collect_nccl.py`` lines 64-66 and 107);
    interpolated in log size."""
    table, label = _nccl_table(data)
    total = np.zeros_like(np.asarray(elements, dtype=np.float64))
    for op in ("all_gather", "reduce_scatter"):
        sub = table[
            (table["op_name"] == op) & (table["num_gpus"] == g) & (table["nccl_dtype"] == "half")
        ]
        require(len(sub) > 0, f"{data.system}: no {op} measured over {g} GPUs ({label})")
        total = total + _by_message_size(sub, elements)
    note = f"+ all-gather and reduce-scatter over {g} GPUs each MoE layer from {label}"
    if note not in notes:
        notes.append(note)
    return total


def choose_ffn_gpus(model: ModelSpec, minimum: int) -> int:
    """A power-of-two FFN instance size ≥ ``minimum`` (EP/TP splits are powers of two)."""
    return 1 << max(0, math.ceil(math.log2(max(1, minimum))))
