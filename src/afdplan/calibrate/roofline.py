"""First-principles step-time coefficients (paper Appendix B style, DESIGN.md §6).

A decode step is a sum over layers of memory reads and matrix FLOPs; each stage is split
into a part that scales with the work (α) and a part that does not (β):

Attention instance (g_A GPUs, heads split across them):
    α_A = L·max( c·kv_bytes_layer / (g_A·BW·e_m),  kv_flops_layer / (g_A·F·e_c) )  per KV token
    γ_A = 2·(L·P_attn + P_lm_head) / (g_A·F·e_c) + L·α_AR                           per sequence
    β_A = (L·P_attn + P_emb)·w_bytes / (g_A·BW·e_m) + L·t_layer + L·β_AR
    c = the GPUs holding each KV token (1 for split heads; g_A for MLA's shared latent
    cache), (α_AR, β_AR) the output projection's all-reduce for g_A > 1 (``tp_all_reduce``)

FFN instance (g_F GPUs, experts/columns split across them):
    α_F = 2·P_ffn_active / (g_F·F·e_c)                                                per token
    β_F = P_ffn·w_bytes / (g_F·BW·e_m) + L·t_layer     (a large batch touches every expert)
    + the expert dispatch and combine inside the group (``expert_exchange``), and the
    busiest expert rank sets the time (``[experts]``: t_F read at T·φ, DESIGN.md §10);
    a dense FFN over g_F > 1 all-reduces its output instead

Communication (the round trip: A→F and F→A every layer, per Attention worker; at the FFN
end g_F ports receive every worker's tokens, the ``fan_in`` scope):
    α_C = 2·L·h·act_bytes / (link_BW·e_l)      per token,      β_C = 2·L·link_latency

The sum α·n + β overstates the time near the roofline knee, where the real time is
max(compute, memory); a measured table keeps that knee (``afdplan.timing.tables``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from afdplan.calibrate.specs import HardwareSpec, ModelSpec
from afdplan.errors import require
from afdplan.timing import AttentionLinear, Experts, Linear, LinearStepTimes, PrefillTimes


@dataclass(frozen=True)
class Derivation:
    """Coefficients and how each was obtained (one line per quantity)."""

    times: LinearStepTimes
    notes: tuple[str, ...]


def min_ffn_gpus(model: ModelSpec, hw: HardwareSpec) -> int:
    """Fewest GPUs whose usable HBM holds the FFN weights."""
    return max(
        1, math.ceil(model.ffn_params() * model.ffn_bytes / (hw.hbm_bytes * hw.usable_memory))
    )


def check_ffn_fits(model: ModelSpec, hw: HardwareSpec, gpus_ffn: int) -> None:
    """A one-line error unless an FFN group of ``gpus_ffn`` holds the FFN weights."""
    least = min_ffn_gpus(model, hw)
    require(
        gpus_ffn >= least,
        f"--gpus-ffn {gpus_ffn}: the FFN weights of {model.name} need at least {least} x {hw.name}",
    )


def ffn_group_size(model: ModelSpec, minimum: int) -> int:
    """The smallest FFN group of at least ``minimum`` GPUs the model can be split over:
    a divisor of the expert count for MoE (expert parallel), else ``minimum``."""
    if not model.is_moe:
        return minimum
    e = model.physical_experts
    return next(d for d in range(minimum, e + 1) if e % d == 0)


def attention_weight_bytes(model: ModelSpec) -> float:
    return (model.attention_params() + model.embedding_params()) * model.weight_bytes


def kv_copies(model: ModelSpec, gpus_attention: int) -> int:
    """How many GPUs of a TP attention instance hold each KV token: one for heads split
    with their KV, all of them for MLA, whose latent cache every head reads (vLLM and
    SGLang replicate it over the TP ranks; aiconfigurator-core's MLA tables time the same
    per-token cost at 1 to 64 heads a rank)."""
    return gpus_attention if model.is_mla else 1


def kv_capacity_tokens(model: ModelSpec, hw: HardwareSpec, gpus_attention: int = 1) -> int:
    """KV tokens one Attention instance holds: usable HBM − its weights, over KV bytes/token
    times the GPUs holding each token (``kv_copies``)."""
    free = gpus_attention * hw.hbm_bytes * hw.usable_memory - attention_weight_bytes(model)
    per_token = model.kv_bytes_per_token() * kv_copies(model, gpus_attention)
    return max(0, math.floor(free / per_token))


# The A↔F link when the two sides run on different hardware, hence different machines, or
# a bundle outgrows one NVLink domain: the hardware's scale-out port per GPU
# (``HardwareSpec.network_*``; by default one 400 Gb/s InfiniBand NDR / RoCE port, NVIDIA
# ConnectX-7, per direction, which these name).
INTER_NODE_LINK_BANDWIDTH = 50e9  # bytes/s
INTER_NODE_LINK_LATENCY = 5e-6  # seconds


@dataclass(frozen=True)
class Link:
    """An A↔F link per GPU and direction: ``bandwidth`` bytes/s, ``latency`` seconds;
    ``bandwidth`` None means the attention hardware's own NVLink (and its latency)."""

    name: str
    bandwidth: float | None = None
    latency: float | None = None

    def resolve(self, hw: HardwareSpec) -> tuple[float, float]:
        """(bytes/s, seconds) on ``hw``."""
        if self.bandwidth is None:
            return hw.link_bandwidth, hw.link_latency
        return self.bandwidth, float(self.latency or 0.0)


# Named links (``--link``). One NIC port per GPU, per direction: ConnectX-7 (InfiniBand NDR
# or 400 GbE RoCE) and ConnectX-8 (XDR, 800 Gb/s), at the 5 us per transfer the inter-node
# link above assumes.
LINKS = {
    "nvlink": Link("nvlink"),
    "ib-ndr": Link("ib-ndr", INTER_NODE_LINK_BANDWIDTH, INTER_NODE_LINK_LATENCY),
    "ib-xdr": Link("ib-xdr", 2 * INTER_NODE_LINK_BANDWIDTH, INTER_NODE_LINK_LATENCY),
}
_CUSTOM_LINK = re.compile(r"^(?P<gbps>\d+(\.\d+)?)gbps@(?P<us>\d+(\.\d+)?)us$")


def parse_link(text: str) -> Link:
    """A named link or ``GBPSgbps@USus`` (e.g. ``200gbps@8us``), else a one-line error."""
    name = text.strip().lower()
    if name in LINKS:
        return LINKS[name]
    found = _CUSTOM_LINK.match(name)
    require(
        found is not None,
        f"unknown link {text!r}; known: {', '.join(LINKS)}, or BANDWIDTHgbps@LATENCYus "
        "(e.g. 200gbps@8us)",
    )
    gbps, us = float(found["gbps"]), float(found["us"])
    require(gbps > 0, f"link {text!r}: the bandwidth must be > 0")
    return Link(name, gbps * 1e9 / 8, us * 1e-6)


def network_link(hw: HardwareSpec) -> Link:
    """The hardware's scale-out port as a link."""
    return Link(
        f"network {hw.network_bandwidth * 8 / 1e9:.0f} Gb/s",
        hw.network_bandwidth,
        hw.network_latency,
    )


def link_comm(model: ModelSpec, hw: HardwareSpec, link: Link) -> tuple[float, float]:
    """(α_C, β_C) of the A↔F transfers over ``link``: one hidden vector each way per token
    and layer, at the hardware's link efficiency, and one latency each way per layer."""
    bandwidth, latency = link.resolve(hw)
    alpha = 2 * model.layers * model.hidden * model.act_bytes / (bandwidth * hw.link_efficiency)
    return alpha, 2 * model.layers * latency


def tp_all_reduce(model: ModelSpec, hw: HardwareSpec, tp: int) -> Linear:
    """One tensor-parallel all-reduce of every token's hidden vector over ``tp`` GPUs, per
    layer: α seconds per token, β seconds. A ring's reduce-scatter and all-gather move
    2·(tp − 1)/tp of the vector per GPU at the link's efficiency (NVLink inside one
    scale-up domain, the network beyond it) plus one link latency; zero for one GPU.

    Where runtimes put it (aiconfigurator-core's models, ``sdk/models/llama.py`` lines
    210-213: ``generation_ar_1`` and ``_2``, h elements per token per layer): after the
    attention's output projection when attention is split over TP > 1, and after a dense
    MLP split over TP > 1. Its measured vLLM custom all-reduce (graph mode, H100/H200,
    TP 2/4/8) takes 4-9 µs + bytes / (190-230 GB/s) at decode sizes; this gives 8 µs +
    bytes / (206-360 GB/s) (tests/test_roofline.py compares them)."""
    if tp <= 1:
        return Linear(alpha=0.0, beta=0.0)
    inside = tp <= hw.scaleup_gpus
    bandwidth = hw.link_bandwidth if inside else hw.network_bandwidth
    latency = hw.link_latency if inside else hw.network_latency
    moved = 2 * (tp - 1) / tp * model.hidden * model.act_bytes
    return Linear(alpha=moved / (bandwidth * hw.link_efficiency), beta=latency)


def model_experts(model: ModelSpec, expert_tp: int = 1) -> Experts | None:
    """The routed experts of an MoE model (balanced routing, each split over ``expert_tp``
    GPUs), None for a dense one."""
    # a token's k experts spread over every copy: the group sees the physical experts
    if not model.is_moe:
        return None
    return Experts(model.physical_experts, model.top_k, expert_tp=expert_tp)


def expert_layout_problem(model: ModelSpec, g_f: int, expert_tp: int = 1) -> str | None:
    """Why an FFN group of ``g_f`` GPUs cannot hold the experts with each split over
    ``expert_tp`` of them (expert parallel over the g_F / expert_tp slices), or None."""
    t = expert_tp
    if t < 1:
        return f"--expert-tp must be an integer >= 1, got {t}"
    if t == 1 and not model.is_moe:
        return None
    if not model.is_moe:
        return f"--expert-tp {t}: {model.name} is dense (its FFN is split by columns already)"
    if g_f % t:
        return f"expert TP {t} does not divide the FFN group of {g_f} GPUs"
    if model.moe_intermediate % t:
        return f"expert TP {t} does not split the experts' width {model.moe_intermediate}"
    e, slices = model.physical_experts, g_f // t
    if e % slices:
        divisors = [d for d in range(1, e + 1) if e % d == 0]
        what = "an expert-parallel FFN group" if t == 1 else f"{slices} expert-parallel slices"
        return (
            f"{what} of {g_f} GPUs does not divide the {e} experts of {model.name}; use "
            f"one of {', '.join(str(d * t) for d in divisors)}, or add redundant experts "
            f"({-e % slices} more fill {slices} {'GPUs' if t == 1 else 'slices'})"
        )
    return None


def slice_share(model: ModelSpec, g_f: int, expert_tp: int) -> float:
    """The share of a micro-batch's tokens one of the g_F / ``expert_tp`` expert-parallel
    slices serves: d/e, a token reaching d of the e slices (1 for one slice)."""
    experts = model_experts(model, expert_tp)
    assert experts is not None
    return experts.distinct_ranks(g_f) / (g_f // expert_tp)


def exchange_bytes(model: ModelSpec) -> tuple[float, float]:
    """(dispatch, combine) bytes per element: dispatch in FP8 when the experts are (as
    DeepEP's low-latency kernels send it), else in the activations' dtype; combine in the
    activations' dtype."""
    dispatch = 1.0 if model.ffn_bytes <= 1 else model.act_bytes
    return dispatch, model.act_bytes


def expert_exchange(
    model: ModelSpec, hw: HardwareSpec, g_f: int, expert_tp: int = 1
) -> tuple[float, float]:
    """(α per token of the group's micro-batch, β), whole step: moving an FFN group's
    tokens to its experts and back (DESIGN.md §10), every expert split over ``expert_tp``
    = t GPUs and expert parallel over the e = g_F/t slices.

    Between slices (e > 1): a GPU holding T/g tokens sends each to the d distinct slices
    its top-k experts live on (``Experts.distinct_ranks``), d·(1 − 1/e) of them elsewhere,
    and takes the results back: T/g·d·(1 − 1/e)·h·(b_dispatch + b_combine) bytes out and
    as many in, on its own port. Of the other slices' GPUs the share beyond the node's
    scale-up domain crosses the network, the rest NVLink; the two run side by side, so the
    slower one sets the time. Each MoE layer also pays two latencies (the network's when
    any rank is beyond it).

    Inside a slice (t > 1): its t GPUs each need all the T·d/e tokens the slice serves and
    sum their partial outputs: an all-gather and a reduce-scatter, one all-reduce's traffic
    (``tp_all_reduce``) and two latencies on T·d/e tokens a layer (``slice_share``; T for
    t = g_F: vLLM's MoE without expert parallelism, ``FusedMoEParallelConfig.make`` in
    vllm/model_executor/layers/fused_moe/config.py). Zero for a dense FFN or one GPU."""
    if not model.is_moe or g_f <= 1:
        return 0.0, 0.0
    experts = model_experts(model, expert_tp)
    assert experts is not None
    t, e = expert_tp, g_f // expert_tp
    alpha = beta = 0.0
    if e > 1:
        reached = experts.distinct_ranks(g_f)
        per_token = reached * (1 - 1 / e) * model.hidden * sum(exchange_bytes(model)) / g_f
        local = min(g_f, hw.scaleup_gpus)
        beyond = min(1.0, max(0.0, (g_f - local) / (g_f - t)))
        nvlink = per_token * (1 - beyond) / (hw.link_bandwidth * hw.link_efficiency)
        network = per_token * beyond / (hw.network_bandwidth * hw.link_efficiency)
        latency = hw.network_latency if beyond > 0 else hw.link_latency
        alpha, beta = model.moe_layers * max(nvlink, network), 2 * model.moe_layers * latency
    if t > 1:
        reduce = tp_all_reduce(model, hw, t)
        alpha += model.moe_layers * slice_share(model, g_f, t) * reduce.alpha
        beta += 2 * model.moe_layers * reduce.beta  # two collectives, a latency each
    return alpha, beta


def derive(
    model: ModelSpec,
    hw: HardwareSpec,
    gpus_attention: int = 1,
    gpus_ffn: int | None = None,
    ffn_hw: HardwareSpec | None = None,
    cross_node: bool = False,
    link: Link | None = None,
    expert_tp: int = 1,
) -> Derivation:
    """Roofline α, β (and γ_A) for ``model`` with the given instance sizes: attention on
    ``hw``, the FFN group on ``ffn_hw`` (default ``hw``), its experts each split over
    ``expert_tp`` GPUs. With different hardware on the two sides, or a bundle larger than
    one NVLink domain (``cross_node``), the transfers cross an inter-node link
    (``INTER_NODE_LINK_*``), not NVLink; ``link`` names it outright.
    """
    require(gpus_attention >= 1, f"attention GPUs must be >= 1, got {gpus_attention}")
    fhw = ffn_hw or hw
    g_f = ffn_group_size(model, min_ffn_gpus(model, fhw)) if gpus_ffn is None else gpus_ffn
    require(g_f >= 1, f"FFN GPUs must be >= 1, got {g_f}")
    problem = expert_layout_problem(model, g_f, expert_tp)
    require(problem is None, str(problem))
    g_a = gpus_attention
    L, h = model.layers, model.hidden
    bw = hw.hbm_bandwidth * hw.mem_efficiency
    flops = hw.peak_flops(model.weight_bytes) * hw.compute_efficiency
    attn_flops = hw.flops_bf16 * hw.compute_efficiency  # scores run in 16-bit
    kv_layer_bytes = model.kv_elements_per_token_layer() * model.kv_bytes
    L_kv = model.full_attention_layers  # Gated DeltaNet layers hold no per-token KV
    # each GPU reads its own copy of a token's KV: 1/g_A of it when heads split the cache
    kv_mem = L_kv * kv_layer_bytes * kv_copies(model, g_a) / (g_a * bw)
    kv_cmp = L_kv * model.attention_flops_per_kv_token_layer() / (g_a * attn_flops)
    alpha_a = max(kv_mem, kv_cmp)
    sparse_gamma = 0.0
    if model.sparse_topk:
        # DSA: the indexer scores every cached token (its FP8 keys, shared by the heads
        # like MLA's cache), then MLA reads k of them a sequence: k tokens' cost moves to
        # the per-sequence term (exact once every context holds k tokens; above for shorter)
        sparse_gamma = model.sparse_topk * alpha_a
        index_bytes = model.indexer_bytes_per_token_layer() * kv_copies(model, g_a)
        index_mem = L_kv * index_bytes / (g_a * bw)
        index_cmp = L_kv * model.indexer_flops_per_kv_token_layer() / (
            g_a * hw.flops_fp8 * hw.compute_efficiency
        )
        alpha_a = max(index_mem, index_cmp)
    p_attn = model.attention_params()
    lm_head = model.vocab * h
    # a Gated DeltaNet layer reads and rewrites its sequence's state every step (split
    # with the heads over TP), whatever the context: a per-sequence cost
    state_rw = 2 * model.state_bytes_per_sequence() / (g_a * bw)
    gamma_a = 2 * (p_attn + lm_head) / (g_a * flops) + sparse_gamma + state_rw
    beta_a = (p_attn + model.embedding_params()) * model.weight_bytes / (
        g_a * bw
    ) + L * hw.layer_overhead_s
    # a split attention all-reduces its output projection every layer (one token a sequence)
    reduce_a = tp_all_reduce(model, hw, g_a)
    gamma_a += L * reduce_a.alpha
    beta_a += L * reduce_a.beta
    ffn_flops = fhw.peak_flops(model.ffn_bytes) * fhw.compute_efficiency
    ffn_bw = fhw.hbm_bandwidth * fhw.mem_efficiency
    alpha_f = 2 * model.ffn_active_params() / (g_f * ffn_flops)
    beta_f = model.ffn_params() * model.ffn_bytes / (g_f * ffn_bw) + L * fhw.layer_overhead_s
    alpha_x, beta_x = expert_exchange(model, fhw, g_f, expert_tp)
    # a dense FFN split over g_F GPUs (tensor parallel) all-reduces its output every layer:
    # the group's communication, as an MoE group's is its dispatch and combine
    reduce_f = Linear(0.0, 0.0) if model.is_moe else tp_all_reduce(model, fhw, g_f)
    if reduce_f.beta:
        alpha_x, beta_x = L * reduce_f.alpha, L * reduce_f.beta
    alpha_f += alpha_x
    beta_f += beta_x
    if link is None:
        link = LINKS["nvlink"] if fhw is hw and not cross_node else network_link(hw)
    link_bw, link_latency = link.resolve(hw)
    link_name = "NVLink" if link.bandwidth is None else link.name
    alpha_c, beta_c = link_comm(model, hw, link)
    capacity = kv_capacity_tokens(model, hw, g_a)
    require(capacity >= 1, f"{model.name} attention weights do not fit {g_a} x {hw.name}; add GPUs")
    bound = "memory" if kv_mem >= kv_cmp else "compute"
    shape = (
        f"MLA kv_lora {model.kv_lora_rank}+{model.qk_rope_dim}"
        if model.is_mla
        else f"head dim {model.head_dim}"
    )
    ffn_kind = (
        f"MoE {model.experts} experts"
        + (f" (+{model.redundant_experts} redundant)" if model.redundant_experts else "")
        + f" top-{model.top_k} width {model.moe_intermediate}"
        f" (+shared {model.shared_intermediate}), {model.dense_ffn_layers} dense layers"
        if model.is_moe
        else "dense FFN"
    )
    gb = 1e9
    notes = (
        f"model {model.name}: L={L}, h={h}, heads {model.heads}/{model.kv_heads} KV, {shape}, "
        f"{ffn_kind}; {model.weight_bytes:g} B/weight"
        + ("" if model.ffn_bytes == model.weight_bytes else f" ({model.ffn_bytes:g} in the FFN)")
        + f", {model.kv_bytes:g} B/KV element",
        *(
            f"{side} hardware {x.name}: {x.peak_flops(nbytes) / 1e12:.0f} TFLOP/s "
            f"x {x.compute_efficiency:g}, HBM {x.hbm_bandwidth / 1e12:.2f} TB/s x "
            f"{x.mem_efficiency:g}"
            for side, x, nbytes in (
                ("attention", hw, model.weight_bytes),
                ("FFN", fhw, model.ffn_bytes),
            )
        ),
        f"A-F link ({link_name}): {link_bw / gb:.0f} GB/s x {hw.link_efficiency:g}, "
        f"{link_latency * 1e6:.0f} us",
        f"instances: Attention {g_a} GPU(s); FFN {g_f} GPU(s)"
        + (" (fewest that hold the FFN weights)" if gpus_ffn is None else "")
        + (
            f", every expert split over {expert_tp} (expert parallel over "
            f"{g_f // expert_tp} slice(s))"
            if expert_tp > 1
            else ""
        ),
        f"alpha_A = {alpha_a:.4g} s/KV token: {L} layers x max({kv_layer_bytes:g} B / HBM "
        f"= {kv_mem:.3g}, {model.attention_flops_per_kv_token_layer()} FLOP / peak "
        f"= {kv_cmp:.3g}) -> {bound}-bound",
        f"gamma_A = {gamma_a:.4g} s/sequence: 2 x ({p_attn / gb:.2f}B attention + "
        f"{lm_head / gb:.2f}B LM-head params) FLOP / peak",
        f"beta_A = {beta_a:.4g} s: read {attention_weight_bytes(model) / gb:.1f} GB of "
        f"attention and embedding weights + {L} x {hw.layer_overhead_s * 1e6:.0f} us",
        f"alpha_F = {alpha_f:.4g} s/token: 2 x {model.ffn_active_params() / gb:.2f}B active "
        f"FFN params FLOP / ({g_f} x peak)",
        f"beta_F = {beta_f:.4g} s: read {model.ffn_params() * model.ffn_bytes / gb:.1f} GB "
        f"of FFN weights over {g_f} GPU(s) + layer overhead",
        *(
            [
                f"expert dispatch + combine (in alpha_F, beta_F): {alpha_x:.4g} s/token, "
                f"{beta_x:.4g} s; each token reaches "
                f"{model_experts(model, expert_tp).distinct_ranks(g_f):.2f} of "  # type: ignore[union-attr]
                f"{g_f // expert_tp} {'ranks' if expert_tp == 1 else 'slices'} "
                f"({'beyond one NVLink domain' if g_f > fhw.scaleup_gpus else 'NVLink'})"
                + (
                    f", then an all-gather and reduce-scatter inside each slice of {expert_tp}"
                    if expert_tp > 1
                    else ""
                )
            ]
            if model.is_moe and (alpha_x or beta_x)
            else []
        ),
        f"alpha_C = {alpha_c:.4g} s/token: 2 x {L} x {h} x {model.act_bytes:g} B over the "
        f"link; beta_C = {beta_c:.4g} s: 2 x {L} link latencies",
        *(
            [
                f"{side} TP {g} all-reduce (in its gamma/alpha and beta): "
                f"{L} x ({ar.alpha:.3g} s/token + {ar.beta * 1e6:.0f} us)"
                for side, g, ar in (("attention", g_a, reduce_a), ("FFN", g_f, reduce_f))
                if ar.beta
            ]
        ),
        f"KV: {model.kv_bytes_per_token() / 1024:.1f} KiB/token -> {capacity:,} tokens per "
        "Attention instance",
        *(
            [
                f"Gated DeltaNet: {model.linear_layers} of {L} layers keep a "
                f"{model.state_bytes_per_sequence() / 2**20:.1f} MiB state a sequence "
                f"(= {model.state_tokens_per_sequence():,} KV tokens, reserved with P + D), "
                f"read and rewritten every step: {state_rw:.3g} s/sequence in gamma_A"
            ]
            if model.linear_layers
            else []
        ),
    )
    times = LinearStepTimes(
        attention=AttentionLinear(alpha=alpha_a, beta=beta_a, gamma=gamma_a),
        ffn=Linear(alpha=alpha_f, beta=beta_f),
        comm=Linear(alpha=alpha_c, beta=beta_c),
        # r attention instances send to g_F FFN GPUs: the FFN end receives all r·B tokens
        comm_scope="fan_in",
        name=f"roofline:{model.name}@{hw.name}" + ("" if fhw is hw else f"+{fhw.name}"),
        provenance=f"roofline from {model.source or model.name} and {hw.source or hw.name}"
        + ("" if fhw is hw else f"; FFN on {fhw.source or fhw.name}"),
        gpus_attention=float(g_a),
        gpus_ffn=float(g_f),
        kv_capacity_tokens=capacity,
        state_tokens=model.state_tokens_per_sequence(),
        layers=int(model.layers),
        exchange=Linear(alpha=alpha_x, beta=beta_x) if model.is_moe or beta_x else None,
        reduce=(
            Linear(alpha=L * reduce_a.alpha, beta=L * reduce_a.beta) if reduce_a.beta else None
        ),
        experts=model_experts(model, expert_tp),
    )
    return Derivation(times, notes)


def prefill_gpus(model: ModelSpec, hw: HardwareSpec) -> int:
    """The fewest GPUs (a power of two) whose usable HBM holds every weight with room for
    prompts' KV: one prefill instance as runtimes size it."""
    weights = attention_weight_bytes(model) + model.ffn_params() * model.ffn_bytes
    need = weights / (0.8 * hw.hbm_bytes * hw.usable_memory)
    return 1 << max(0, math.ceil(math.log2(max(need, 1.0))))


def derive_prefill(
    model: ModelSpec,
    hw: HardwareSpec,
    gpus: int | None = None,
    max_batch_tokens: int = 8192,
    layout: str = "tp",
) -> PrefillTimes:
    """Roofline prefill on an instance of ``gpus`` GPUs (default :func:`prefill_gpus`),
    attention and FFN split over all of them (``layout`` ``tp``; ``dp``: data-parallel
    attention ranks, which split the work the same way and skip the attention
    all-reduce, and a forward holds ``gpus`` times the tokens):

        a = 2·(P_attn + P_ffn_active) / (g·F·e_c)         per prompt token
          + L_GDN·4·n_v·d_k·d_v / (g·F_bf16·e_c)         (Gated DeltaNet's state update)
        c = L_full·(pair FLOPs) / (g·F_bf16·e_c)         per causal (query, key) pair
        w = (all weights)·bytes / (g·BW·e_m)             a forward reads every weight once
        f = L·t_layer + 2·L·β_AR                         launches and the TP all-reduces
        a += 2·L·α_AR for g > 1                          (``tp_all_reduce``)

    and the KV cache goes to decode over one scale-out port: t_k = KV bytes per token /
    (network BW·e_l), t_0 = one network latency (+ a hybrid model's state, once)."""
    g = gpus if gpus is not None else prefill_gpus(model, hw)
    require(g >= 1, f"--prefill-gpus must be >= 1, got {g}")
    weights = attention_weight_bytes(model) + model.ffn_params() * model.ffn_bytes
    require(
        weights < g * hw.hbm_bytes * hw.usable_memory,
        f"{model.name}'s weights ({weights / 1e9:.0f} GB) do not fit {g} x {hw.name}; "
        f"give --prefill-gpus {prefill_gpus(model, hw)} or more",
    )
    L = model.layers
    flops = hw.peak_flops(model.weight_bytes) * hw.compute_efficiency
    dp = layout == "dp"
    reduce = Linear(0.0, 0.0) if dp else tp_all_reduce(model, hw, g)
    per_token = 2 * (model.attention_params() + model.ffn_active_params()) / (g * flops)
    recurrence = 4 * model.linear_value_heads * model.linear_key_dim * model.linear_value_dim
    per_token += model.linear_layers * recurrence / (g * hw.flops_bf16 * hw.compute_efficiency)
    pair_cost = model.full_attention_layers * model.prefill_attention_flops_per_pair_layer() / (
        g * hw.flops_bf16 * hw.compute_efficiency
    )
    per_pair = pair_cost
    if model.sparse_topk:  # each query attends k keys (P > k), the indexer scores them all
        per_token += model.sparse_topk * pair_cost
        per_pair = model.full_attention_layers * model.indexer_flops_per_kv_token_layer() / (
            g * hw.flops_fp8 * hw.compute_efficiency
        )
    weights_read = model.attention_params() * model.weight_bytes
    weights_read += model.ffn_params() * model.ffn_bytes
    read = weights_read / (g * hw.hbm_bandwidth * hw.mem_efficiency)
    network = hw.network_bandwidth * hw.link_efficiency
    return PrefillTimes(
        per_token=per_token + 2 * L * reduce.alpha,
        per_pair=per_pair,
        weights=read,
        fixed=L * hw.layer_overhead_s + 2 * L * reduce.beta,
        transfer_per_token=model.kv_bytes_per_token() / network,
        transfer_fixed=hw.network_latency + model.state_bytes_per_sequence() / network,
        max_batch_tokens=max_batch_tokens * (g if dp else 1),
        gpus=g,
        name=f"roofline prefill:{model.name}@{hw.name} x{g}" + (" DP" if dp else ""),
    )
