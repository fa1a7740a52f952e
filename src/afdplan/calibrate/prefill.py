"""Prefill step times from aiconfigurator-core's measured kernel tables.

One prompt of P tokens on a prefill instance of g GPUs (attention split over g, experts
over g), per layer as aiconfigurator-core times it:

* attention: the context-attention module (MLA: ``mla_context_module_perf``, the whole
  module; GQA: ``context_attention_perf`` plus the QKV and output GEMMs) at 1/g of the
  heads and batch 1, and the output projection's all-reduce for g > 1;
* FFN: the routed experts at ``num_tokens`` = P on the EP-g group (the decode reader's
  ``_routed_experts``), the shared experts and dense layers as GEMMs on each rank's P/g
  tokens, the dispatch and combine on the link roofline; a dense MLP as TP-g GEMMs and
  its all-reduce.

The sum over layers, T(P), is fitted on the tables' prompt lengths to
``a·P + c·P(P+1)/2 + f`` (non-negative least squares): a per token, c per causal pair, f
per forward. A batch of prompts then costs a·N + c·Q + f, so batching shares f. The KV
transfer keeps the roofline's (``calibrate.roofline.derive_prefill``).

That is the ``tp`` layout. In the ``dp`` layout (data-parallel attention, the experts over
all g: how vLLM and SGLang run DeepSeek-style MoE prefill at scale, and the prefill
worker AIConfigurator picks) each of the g ranks takes its own prompt: attention at all
heads and batch 1 on P tokens, shared experts and dense layers on the rank's P tokens,
the routed experts and the exchange on the group's g·P tokens, and no attention
all-reduce. One forward then holds g prompts, and the fit runs over N = g·P tokens and
Q = g·P(P+1)/2 pairs, assuming the ranks are evenly loaded, on prompts of 1,024/g to
16,384/g tokens so that the group's tokens stay inside the tables. The experts run
whichever is faster on the tables: expert parallel with its all-to-all, or every expert
split over the g GPUs (``moe_tp_size`` = g) with an NCCL all-gather and reduce-scatter of
the group's tokens a layer (``aiconfig.gather_scatter``), the layout
AIConfigurator's prefill worker uses (``etp``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.optimize import nnls

from afdplan.calibrate import aiconfig
from afdplan.calibrate.roofline import derive_prefill, expert_exchange
from afdplan.calibrate.specs import HardwareSpec, ModelSpec
from afdplan.errors import InputError, require
from afdplan.timing import PrefillTimes, Routing

# Prompt lengths fitted (tokens): the range prefill batches live in.
FIT_RANGE = (256, 16384)
DP_FIT_LOW = 1024  # group tokens: where the dp layout's fit starts
LAYOUTS = ("tp", "dp")


def _attention_ms(model, data, g, kv_dtype, w_dtype, gemm, prompts) -> tuple[np.ndarray, str]:
    """ms per layer of the attention of one prompt of each length, at 1/g of the heads
    (g = 1: one data-parallel rank, all heads)."""
    heads = model.heads / g
    require(heads.is_integer(), f"{model.heads} heads do not split over {g} GPUs")
    if model.is_mla:
        table, src = aiconfig._table(data, "mla", "mla_context_module_perf.parquet")
        gemm_type = w_dtype if w_dtype in aiconfig._values(table["gemm_type"]) else "bfloat16"
        sub = table[
            (table["num_heads"] == heads) & (table["batch_size"] == 1)
            & (table["kv_cache_dtype"] == kv_dtype) & (table["gemm_type"] == gemm_type)
        ]  # fmt: skip
        curve = sub.groupby("isl")["latency"].median()
        require(len(curve) >= 4, f"{src}: too few MLA context rows at {heads:g} heads")
        ms = np.interp(prompts, curve.index.to_numpy(float), curve.to_numpy())
        return ms, f"{src} ({heads:g} heads, batch 1)"
    table, src = aiconfig._table(data, "attention", "context_attention_perf.parquet")
    kv_heads = max(1, model.kv_heads // g)
    sub = table[(table["num_heads"] == heads) & (table["num_key_value_heads"] == kv_heads)
                & (table["head_dim"] == model.head_dim) & (table["batch_size"] == 1)
                & (table["kv_cache_dtype"] == kv_dtype) & (table["window_size"] == 0)]  # fmt: skip
    curve = sub.groupby("isl")["latency"].median()
    require(len(curve) >= 4, f"{src}: too few context rows for {heads:g}/{kv_heads} heads")
    ms = np.interp(prompts, curve.index.to_numpy(float), curve.to_numpy())
    qkv = gemm(prompts, (model.heads + 2 * model.kv_heads) * model.head_dim // g, model.hidden,
               "QKV")  # fmt: skip
    out = gemm(prompts, model.hidden, model.heads * model.head_dim // g, "O proj")
    return ms + qkv + out, f"{src} ({heads:g}/{kv_heads} heads, batch 1) + QKV/O GEMMs"


def _ffn_ms(model, data, g, w_dtype, gemm, hw, prompts, ranks=None) -> tuple[np.ndarray, str]:
    """ms of every FFN layer of one prompt of each length (the sum over layers); with
    ``ranks`` (the dp layout), each of them its own prompt: the experts see them all."""
    if not model.is_moe:
        inter = model.intermediate // g
        per_layer = gemm(prompts, 2 * inter, model.hidden, "FFN up") + gemm(
            prompts, model.hidden, inter, "FFN down"
        )
        if g > 1:
            per_layer = per_layer + aiconfig._all_reduce(data, g, prompts * model.hidden, [])
        return model.layers * per_layer, f"dense MLP GEMMs and all-reduce at TP {g}"
    group = prompts * (ranks or 1)  # tokens the expert group receives
    routed, moved, label = _experts_ms(model, data, g, w_dtype, hw, group, bool(ranks))
    per_rank = prompts if ranks else prompts / g
    shared = (
        gemm(per_rank, 2 * model.shared_intermediate, model.hidden, "shared up")
        + gemm(per_rank, model.hidden, model.shared_intermediate, "shared down")
        if model.shared_intermediate
        else 0.0
    )
    total = model.moe_layers * np.maximum(routed, shared)
    if model.dense_ffn_layers:
        dense = gemm(per_rank, 2 * model.intermediate, model.hidden, "dense up") + gemm(
            per_rank, model.hidden, model.intermediate, "dense down"
        )
        total = total + model.dense_ffn_layers * dense
    return total + moved, label


def _experts_ms(model, data, g, w_dtype, hw, group, either: bool):
    """(ms per MoE layer of the routed experts on ``group`` tokens, ms of moving the tokens
    over all MoE layers, a label). Expert parallel over g, the dispatch and combine on the
    link roofline; with ``either`` (the dp layout) also every expert split over all g
    (the tables' ``moe_tp_size`` = g rows, AIConfigurator's etp layout), whose partial
    sums cost an all-gather and a reduce-scatter of the group's tokens a layer (vLLM's
    dispatch and combine around an MoE it does not run expert parallel), and whichever is
    faster over the fitted prompts."""
    curve, src, dtype = aiconfig._routed_experts(model, data, g, w_dtype, Routing())
    alpha, beta = expert_exchange(model, hw, g)
    best = (
        np.interp(group, curve.index.to_numpy(float), curve.to_numpy()),
        1e3 * (alpha * group + beta),
        f"{src} ({dtype}, EP {g}) + link exchange",
    )
    if not either or g == 1:
        return best
    try:
        tp_curve, _, _ = aiconfig._routed_experts(model, data, g, w_dtype, Routing(), g)
    except InputError:  # no expert-TP rows at this size: expert parallel it is
        return best
    split = (
        np.interp(group, tp_curve.index.to_numpy(float), tp_curve.to_numpy()),
        model.moe_layers * aiconfig.gather_scatter(data, g, group * model.hidden, []),
        f"{src} ({dtype}, experts TP {g}) + all-gather/reduce-scatter",
    )
    faster = np.sum(model.moe_layers * split[0] + split[1]) < np.sum(
        model.moe_layers * best[0] + best[1]
    )
    return split if faster else best


def measured_prefill(
    model: ModelSpec,
    system: str,
    hw: HardwareSpec,
    gpus: int | None = None,
    max_batch_tokens: int = 8192,
    framework: str = "vllm",
    layout: str = "tp",
) -> tuple[PrefillTimes, float]:
    """(prefill step times fitted to the measured tables, the fit's largest relative
    error over the fitted prompt lengths); a one-line error where the tables lack the
    model's shapes. ``layout``: ``tp`` or ``dp`` (module docstring)."""
    require(layout in LAYOUTS, f"prefill layout must be one of {', '.join(LAYOUTS)}")
    dp = layout == "dp"
    require(not dp or model.is_moe, "a data-parallel prefill layout needs an MoE model")
    roof = derive_prefill(model, hw, gpus, max_batch_tokens, layout)
    g = roof.gpus
    data = aiconfig.resolve_version(system, framework, model)
    w_dtype = "fp8_block" if model.weight_bytes <= 1 else "bfloat16"
    kv_dtype = "fp8" if model.kv_bytes <= 1 else "bfloat16"
    table, src = aiconfig._table(data, "gemm", "gemm_perf.parquet")
    dtype = w_dtype if w_dtype in aiconfig._values(table["gemm_dtype"]) else "bfloat16"
    gemm = aiconfig._Gemm(table, dtype, src)
    ranks = g if dp else 1  # prompts one forward holds
    # the group's tokens stay inside the tables' range (the MoE rows end at 16,384) and,
    # data parallel, above 1,024: below it the split experts' fixed cost bends the curve
    # (the fit held the tables within 13% from 256, within 5% from 1,024)
    low = FIT_RANGE[0] if ranks == 1 else max(FIT_RANGE[0], DP_FIT_LOW)
    prompts = np.unique(np.geomspace(low / ranks, FIT_RANGE[1] / ranks, 24).round())
    attention, a_src = _attention_ms(model, data, 1 if dp else g, kv_dtype, w_dtype, gemm, prompts)
    attention = model.layers * attention
    if g > 1 and not dp:
        attention = attention + model.layers * aiconfig._all_reduce(
            data, g, prompts * model.hidden, []
        )
    ffn, f_src = _ffn_ms(model, data, g, w_dtype, gemm, hw, prompts, g if dp else None)
    seconds = (attention + ffn) / 1e3
    design = np.column_stack(
        [ranks * prompts, ranks * prompts * (prompts + 1) / 2, np.ones_like(prompts)]
    )
    scale = design.max(axis=0)
    coef, _ = nnls(design / scale, seconds)
    per_token, per_pair, fixed = coef / scale
    fitted = design @ (coef / scale)
    error = float(np.max(np.abs(fitted / seconds - 1)))
    times = PrefillTimes(
        per_token=float(per_token),
        per_pair=float(per_pair),
        weights=0.0,
        fixed=float(fixed),
        transfer_per_token=roof.transfer_per_token,
        transfer_fixed=roof.transfer_fixed,
        max_batch_tokens=roof.max_batch_tokens,
        gpus=g,
        name=f"measured prefill:{model.name}@{system} x{g} {layout.upper()} ({a_src}; "
        f"{f_src}; {data.framework} {data.version})",
    )
    return times, error


def prefill_times(
    model: ModelSpec,
    hw: HardwareSpec,
    gpus: int | None = None,
    max_batch_tokens: int = 8192,
    layout: str | None = None,
) -> PrefillTimes:
    """A prefill instance's step times as well as afdplan knows them: measured where
    aiconfigurator-core has the model's kernels on this hardware (the fit's worst error
    in the name), else the roofline (a lower bound, named so). ``layout`` None: ``dp``
    for an MoE model (data-parallel attention ranks, the experts over all of them, as
    runtimes serve them), ``tp`` for a dense one."""
    from afdplan.calibrate.measured_sets import tables_installed

    layout = layout or ("dp" if model.is_moe else "tp")
    require(layout == "tp" or model.is_moe, "--prefill-layout dp needs an MoE model")
    roofline = derive_prefill(model, hw, gpus, max_batch_tokens, layout)
    if not (tables_installed() and hw.aiconfigurator_systems):
        return roofline
    try:
        times, error = measured_prefill(
            model, hw.aiconfigurator_systems[0], hw, gpus, max_batch_tokens, layout=layout
        )
    except InputError:  # the tables lack this model's kernels
        return roofline
    return replace(times, name=f"{times.name}; fit within {error:.0%}")
