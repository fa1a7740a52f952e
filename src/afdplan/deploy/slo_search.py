"""What to launch: the search over AFD bundles under a TPOT SLO (DESIGN.md §8).

For every attention TP size g_A, FFN group size g_F and how it holds the experts (whole,
expert parallel, or each split over ``expert_tp`` of its GPUs: ``expert_splits``),
micro-batch count m and integer ratio r, every batch B from m up to the KV limit is
evaluated at once (numpy over B):

* E[τ] with the barrier: the layered closed form at the expected spread of the slowest
  of r workers (``theory.barrier.layered_times``);
* τ's SLO quantile: the same closed form with the slowest worker at Φ⁻¹(q^{1/r})
  standard deviations (P(max of r loads ≤ x) = Φ(x)^r, DESIGN.md §8 "TPOT and the SLO")
  and the FFN at its busiest expert rank's q-quantile (DESIGN.md §10): both barriers at
  the SLO's percentile, which covers the step's quantile from above;
* the KV limit: B·θ + z·√(B·v) ≤ the attention instance's KV capacity, z = 3.

The SLO is on the per-step time at its percentile; a request's TPOT is the mean of its
step times, so its percentile sits at or below the step-time one when steps vary — the
verification simulation reports both. Every B that meets the SLO is a point of the
throughput-per-GPU vs tokens-per-user frontier; per configuration the best B by the
objective is a row. The same search runs for ordinary colocated decode (attention and FFN
on the same GPUs: data-parallel attention, the FFN over the group as vLLM runs it, expert
parallel or every expert split) on the same hardware and workload, so the user sees
whether AFD pays.

Step times come from the roofline (``calibrate.roofline.derive``) for each instance size,
anchored on a measured coefficient set where one exists for the model and hardware
(``afdplan.deploy.anchor``): measurements exist only at single instance sizes, so they
set the level and the roofline the scaling with g_A and g_F.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace

import numpy as np

from afdplan import normal
from afdplan.bundle import (
    Pipeline,
    bundle_gpus,
    kv_load,
    max_feasible_batch,
    objective_weights,
)
from afdplan.calibrate.roofline import (
    attention_weight_bytes,
    check_ffn_fits,
    derive,
    expert_layout_problem,
    ffn_group_size,
    kv_copies,
    min_ffn_gpus,
)
from afdplan.calibrate.specs import HardwareSpec, ModelSpec
from afdplan.choices import Objective
from afdplan.deploy.anchor import Anchor
from afdplan.errors import InputError, check_positive, require
from afdplan.normal import expected_max_normal
from afdplan.theory.barrier import layered_times
from afdplan.timing import Linear, LinearStepTimes, Mtp, Routing
from afdplan.workload import LoadStats

PERCENTILES = (50, 90, 99)
MICROBATCHES = (1, 2, 3, 4)
ATTENTION_TP = (1, 2, 4, 8)
MAX_RATIO = 512
# vLLM's default max_num_seqs a rank (EngineArgs.get_batch_defaults in
# vllm/engine/arg_utils.py): 1024 on GPUs of 70 GiB or more other than the A100, else 256.
# A deploy answer should launch without raising it, so it caps B per attention instance.
LARGE_GPU_MAX_SEQS, SMALL_GPU_MAX_SEQS = 1024, 256


def default_max_batch(hw: HardwareSpec) -> int:
    """Sequences one rank of ``hw`` runs by default (vLLM's ``max_num_seqs``)."""
    large = hw.hbm_bytes >= 70 * 2**30 and "a100" not in hw.name.lower()
    return LARGE_GPU_MAX_SEQS if large else SMALL_GPU_MAX_SEQS
RACK_GPUS = 72  # the largest FFN group searched across nodes (one NVL72 rack)


@dataclass(frozen=True)
class Slo:
    """Per-step time at ``percentile`` (50, 90 or 99) must not exceed ``tpot_ms``."""

    tpot_ms: float
    percentile: int = 99

    def __post_init__(self) -> None:
        check_positive("--tpot-ms", self.tpot_ms)
        require(
            self.percentile in PERCENTILES,
            f"--tpot-percentile must be one of {', '.join(f'p{p}' for p in PERCENTILES)}, "
            f"got {self.percentile}",
        )

    @property
    def seconds(self) -> float:
        return self.tpot_ms / 1e3

    @property
    def quantile(self) -> float:
        return self.percentile / 100


@dataclass(frozen=True)
class Space:
    """What the search may choose (``None``: the defaults in the module docstring)."""

    gpus_attention: tuple[int, ...] = ATTENTION_TP
    gpus_ffn: tuple[int, ...] | None = None
    microbatches: tuple[int, ...] = MICROBATCHES
    max_ratio: int = MAX_RATIO
    max_batch: int | None = None  # sequences a rank runs; None: ``default_max_batch``
    gpu_budget: int | None = None  # GPUs one bundle may use
    colocated: bool = True
    # Expert-parallel groups larger than one NVLink domain pay an all-to-all over the
    # network inside the group. The roofline prices it at the network's bandwidth
    # (``calibrate.roofline.expert_all_to_all``), but NVIDIA's AIConfigurator charges
    # several times more (EP16 over two H200 nodes: twice EP8's FFN time a layer), so by
    # default the FFN group (and a colocated group) stays inside one scale-up domain.
    across_nodes: bool = False
    # GPUs each routed expert is split over (``expert_splits``); None: vLLM's two layouts
    # for a group of g, whole experts (1, expert parallel) or every expert split over all
    # g (its MoE without --enable-expert-parallel)
    expert_tp: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for label, values in (
            ("--gpus-attention", self.gpus_attention),
            ("--gpus-ffn", self.gpus_ffn or (1,)),
            ("--microbatches", self.microbatches),
            ("--expert-tp", self.expert_tp or (1,)),
        ):
            require(
                bool(values) and all(int(v) == v and v >= 1 for v in values),
                f"{label} values must be integers >= 1, got {values}",
            )
        require(self.max_ratio >= 1, f"max ratio must be >= 1, got {self.max_ratio}")
        require(
            self.max_batch is None or self.max_batch >= 1,
            f"--max-batch-per-rank must be >= 1, got {self.max_batch}",
        )
        if self.gpu_budget is not None:
            require(self.gpu_budget >= 2, f"--gpus must be >= 2, got {self.gpu_budget}")


@dataclass(frozen=True)
class MoeAssumptions:
    """The uncertain terms of the MoE side: how tokens pick experts, a factor on the
    expert dispatch and combine (1: as measured or on the link roofline), and whether an
    AFD FFN group runs that exchange beside the experts of its other micro-batches
    (``LinearStepTimes.exchange_overlap``) or in series with its own (the default, as
    AIConfigurator's AFD model prices it)."""

    routing: Routing = field(default_factory=Routing)
    exchange_scale: float = 1.0
    exchange_overlap: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "routing", Routing.parse(self.routing))
        check_positive("exchange scale", self.exchange_scale)

    def scale_exchange(self, times: LinearStepTimes) -> LinearStepTimes:
        """``times`` with the exchange part of the FFN times ``exchange_scale``, overlapped
        with the other micro-batches' experts where assumed."""
        x = times.exchange
        if x is not None and self.exchange_overlap:
            times = replace(times, exchange_overlap=True)
        if x is None or self.exchange_scale == 1.0:
            return times
        k = self.exchange_scale - 1.0
        ffn = Linear(times.ffn.alpha + k * x.alpha, times.ffn.beta + k * x.beta)
        scaled = Linear(self.exchange_scale * x.alpha, self.exchange_scale * x.beta)
        return replace(times, ffn=ffn, exchange=scaled)

    def describe(self) -> str:
        scale = "" if self.exchange_scale == 1.0 else f", exchange x{self.exchange_scale:g}"
        overlap = ", exchange overlapped" if self.exchange_overlap else ""
        return f"{self.routing} routing{scale}{overlap}"


@dataclass(frozen=True)
class Target:
    """The question: a model on attention/FFN hardware, a workload, an SLO, an objective
    (``prices``: $ per GPU-hour of the attention and FFN hardware, for ``cost``)."""

    model: ModelSpec
    attention_hw: HardwareSpec
    ffn_hw: HardwareSpec
    stats: LoadStats
    slo: Slo
    objective: str = Objective.gpu
    prices: tuple[float | None, float | None] = (None, None)
    space: Space = field(default_factory=Space)
    anchor: Anchor | None = None  # measured / roofline ratios (afdplan.deploy.anchor)
    moe: MoeAssumptions = field(default_factory=MoeAssumptions)
    mtp: Mtp | None = None  # multi-token prediction: step times per token of progress

    def __post_init__(self) -> None:
        require(
            self.objective in tuple(o.value for o in Objective),
            f"objective must be one of {', '.join(o.value for o in Objective)}",
        )
        if self.objective == Objective.cost:
            for hw, price, option in (
                (self.attention_hw, self.prices[0], "--price-attention"),
                (self.ffn_hw, self.prices[1], "--price-ffn"),
            ):
                require(
                    price is not None,
                    f"--objective cost: no public price for {hw.name}; give {option} "
                    "($ per GPU-hour)",
                )
            for p in self.prices:
                check_positive("price per GPU-hour", p)

    @property
    def heterogeneous(self) -> bool:
        return self.attention_hw.name != self.ffn_hw.name


# Columns of a configuration row, in order (times in ms, rates in tokens/s).
ROW_COLUMNS = (
    "architecture",
    "gpus_attention",
    "gpus_ffn",
    "expert_tp",
    "microbatches",
    "r",
    "batch",
    "gpus",
    "tpot_ms",
    "step_time_mean_ms",
    "throughput_per_gpu",
    "throughput_per_user",
    "throughput_per_bundle",
    "score",
    "idle_attention",
    "idle_ffn",
    "binding",
    "kv_headroom",
    "max_batch_kv",
    "cross_node",
)


@dataclass
class _Collector:
    rows: list[dict] = field(default_factory=list)
    frontier: list[np.ndarray] = field(default_factory=list)  # per user, per GPU, row, B
    closest: tuple[float, dict] | None = None  # smallest SLO-quantile τ seen, and where

    def near_miss(self, tau_q: float, where: dict) -> None:
        if self.closest is None or tau_q < self.closest[0]:
            self.closest = (tau_q, where)


@functools.lru_cache(maxsize=4096)
def spread_quantile(r: int, q: float) -> float:
    """z with Φ(z)^r = q: the q-quantile of the largest of r standard normals."""
    return normal.ppf(q ** (1.0 / r))


def ffn_group_sizes(model: ModelSpec, hw: HardwareSpec, space: Space) -> list[int]:
    """FFN group sizes that hold the FFN weights: divisors of the expert count (expert
    parallel) for MoE, powers of two for dense (tensor parallel), within one NVLink domain
    of ``hw`` (up to a rack with ``space.across_nodes``). Sizes the user lists are checked,
    not limited."""
    least = min_ffn_gpus(model, hw)
    if space.gpus_ffn is not None:
        for g in space.gpus_ffn:
            e = model.physical_experts
            if model.is_moe and not expert_splits(model, g, space):
                if space.expert_tp is not None:
                    splits = ",".join(map(str, space.expert_tp))
                    why = "; ".join(
                        str(expert_layout_problem(model, g, t)) for t in space.expert_tp
                    )
                    raise InputError(f"--gpus-ffn {g} --expert-tp {splits}: {why}")
                divisors = [d for d in range(1, e + 1) if e % d == 0]
                raise InputError(
                    f"--gpus-ffn {g}: an expert-parallel group does not divide the {e} "
                    f"experts of {model.name}; use one of {', '.join(map(str, divisors))}, or "
                    f"--redundant-experts {-e % g}"
                )
            check_ffn_fits(model, hw, g)
        return sorted(set(space.gpus_ffn))
    top = RACK_GPUS if space.across_nodes else hw.scaleup_gpus
    require(
        least <= top,
        f"the FFN weights of {model.name} need {least} x {hw.name}, more than one "
        f"{hw.scaleup_gpus}-GPU NVLink domain; pass --ffn-across-nodes (the expert all-to-all "
        "between nodes is priced at line rate, an optimistic bound) or --gpus-ffn",
    )
    if model.is_moe:
        e = model.physical_experts
        return [d for d in range(least, top + 1) if e % d == 0] or [
            ffn_group_size(model, least)
        ]
    return [g for g in (1, 2, 4, 8, 16, 32, 64) if least <= g <= top] or [least]


def expert_splits(model: ModelSpec, g: int, space: Space, colocated: bool = False) -> list[int]:
    """How a group of g GPUs may split each routed expert (the ``expert_tp`` values):
    ``space.expert_tp`` where it divides the group, by default whole experts (1) and every
    expert over all g; a colocated group (plain vLLM) only those two, its MoE either
    expert parallel or not (``FusedMoEParallelConfig.make`` in vllm/model_executor/layers/
    fused_moe/config.py). Each kept only where the experts' count and width allow it."""
    if not model.is_moe:
        return [1]
    wanted = (1, g) if space.expert_tp is None else space.expert_tp
    if colocated:
        wanted = [t for t in wanted if t in (1, g)]
    return [t for t in sorted(set(wanted)) if expert_layout_problem(model, g, t) is None]


def expert_layout(model: ModelSpec, g: int, expert_tp: int) -> str:
    """How a group of g GPUs holds the FFN, in words: ``expert parallel``, ``every expert
    split over all 8``, ``expert parallel over 2 slices of 4`` (``tensor parallel`` for a
    dense model)."""
    if not model.is_moe:
        return "tensor parallel"
    if expert_tp == 1:
        return "expert parallel"
    if expert_tp == g:
        return f"every expert split over all {g}"
    return f"expert parallel over {g // expert_tp} slices of {expert_tp}"


def group_label(model: ModelSpec, g: int, expert_tp: int) -> str:
    """A table cell for an FFN group: ``8`` (expert parallel or dense), ``8 TP`` (every
    expert split over all 8), ``8 EP2xTP4``."""
    if not model.is_moe or expert_tp == 1:
        return str(g)
    return f"{g} TP" if expert_tp == g else f"{g} EP{g // expert_tp}xTP{expert_tp}"


def attention_tp_problem(model: ModelSpec, tp: int) -> str | None:
    """Why attention cannot be split over ``tp`` GPUs as vLLM and SGLang split it, or None:
    the query heads must divide evenly, and GQA's KV heads must divide evenly or be
    replicated a whole number of times."""
    if model.heads % tp:
        return f"TP {tp} does not split the {model.heads} attention heads of {model.name}"
    if not model.is_mla and model.kv_heads % tp and tp % model.kv_heads:
        return f"TP {tp} neither splits nor replicates the {model.kv_heads} KV heads"
    return None


def kv_limit(capacity: float, stats: LoadStats, max_batch: int, state_tokens: int = 0) -> int:
    """Largest B with B·(θ + s) + z·√(B·v) ≤ capacity (z = ``KV_SIGMAS``, s the tokens a
    sequence's recurrent state takes), at most max_batch."""
    return min(max_feasible_batch(capacity, stats.theta + state_tokens, stats.v), max_batch)


def roofline_times(
    model: ModelSpec,
    attention_hw: HardwareSpec,
    ffn_hw: HardwareSpec,
    g_a: int,
    g_f: int,
    cross_node: bool,
    anchor: Anchor | None = None,
    moe: MoeAssumptions | None = None,
    expert_tp: int = 1,
    mtp: Mtp | None = None,
) -> LinearStepTimes | None:
    """Roofline times for one instance-size pair, every expert split over ``expert_tp``
    FFN GPUs (anchored on measurements where an anchor is given) under ``moe``'s routing
    and exchange, per token of progress under ``mtp``, or None when the weights do not
    fit."""
    heterogeneous = attention_hw.name != ffn_hw.name
    try:
        times = derive(
            model,
            attention_hw,
            g_a,
            g_f,
            ffn_hw if heterogeneous else None,
            cross_node=cross_node,
            expert_tp=expert_tp,
        ).times
    except InputError:
        return None
    moe = moe or MoeAssumptions()
    if anchor is not None and model.redundant_experts and anchor.measured is not None:
        # the tables time the model's own experts: the copies are priced by the ratios
        anchor = replace(anchor, measured=None)
    if anchor is not None:
        times = anchor.apply(times, attention_hw.name, ffn_hw.name, (g_a, g_f), moe.routing)
    elif times.experts is not None:
        times = times.with_routing(moe.routing)
    times = moe.scale_exchange(times)
    return times if mtp is None else mtp.apply(times)


def crosses_nodes(attention_hw: HardwareSpec, ffn_hw: HardwareSpec, gpus: int) -> bool:
    """Whether a bundle's A↔F transfers leave the NVLink domain: different hardware on
    the two sides, or more GPUs than one scale-up domain joins."""
    return attention_hw.name != ffn_hw.name or gpus > attention_hw.scaleup_gpus


def bundle_times(
    model: ModelSpec,
    attention_hw: HardwareSpec,
    ffn_hw: HardwareSpec,
    g_a: int,
    g_f: int,
    r: int,
    anchor: Anchor | None = None,
    moe: MoeAssumptions | None = None,
    expert_tp: int = 1,
    mtp: Mtp | None = None,
) -> tuple[LinearStepTimes, bool]:
    """(step times, crosses nodes) of one AFD bundle: NVLink while the bundle fits one
    scale-up domain on one kind of hardware, else the inter-node link (the roofline's
    transfers fan in at the FFN end, ``comm_scope = "fan_in"``)."""
    cross = crosses_nodes(attention_hw, ffn_hw, r * g_a + g_f)
    times = roofline_times(
        model, attention_hw, ffn_hw, g_a, g_f, cross, anchor, moe, expert_tp, mtp
    )
    require(times is not None, f"the weights of {model.name} do not fit g_A = {g_a}, g_F = {g_f}")
    assert times is not None
    return times, cross


def _record(
    out: _Collector,
    target: Target,
    config: dict,
    times: LinearStepTimes,
    pipeline: Pipeline,
    b_max: int,
    weight: float,
    gpus: int,
    colocated: bool = False,
) -> float | None:
    """Evaluate one configuration (r = ``config["r"]`` workers, the bundle's objective
    weight ``weight``) at every B; keep its best row and its frontier points. Returns the
    best score, or None when no B meets the SLO."""
    if b_max < pipeline.microbatches:
        return None
    r, s = config["r"], target.stats
    batch = np.arange(pipeline.microbatches, b_max + 1, dtype=np.float64)
    mean_spread = expected_max_normal(r) if r > 1 else 0.0
    mean = layered_times(pipeline, times, batch, r, s.theta, s.v, mean_spread, colocated=colocated)
    q_spread = spread_quantile(r, target.slo.quantile)
    quantile = layered_times(
        pipeline, times, batch, r, s.theta, s.v, q_spread, colocated=colocated,
        ffn_quantile=target.slo.quantile,
    )  # fmt: skip
    tau_q = np.asarray(quantile.step_time)
    tokens = r * batch  # per step, every worker's B sequences
    score = tokens / (weight * mean.step_time)
    per_gpu = tokens / (gpus * mean.step_time)
    ok = tau_q <= target.slo.seconds
    if not ok.any():
        if not colocated:
            i = int(np.argmin(tau_q))
            out.near_miss(float(tau_q[i]), {**config, "batch": int(batch[i])})
        return None
    idx = np.flatnonzero(ok)
    best = int(idx[np.argmax(score[idx])])
    at = {"batch": batch, "tau_q": tau_q, "tokens": tokens, "score": score, "per_gpu": per_gpu}
    row = _row(target, config, times, pipeline, mean, {k: v[best] for k, v in at.items()})
    row.update(gpus=gpus, max_batch_kv=b_max)
    if colocated:
        row.update(idle_ffn=0.0, binding="colocated")
    out.rows.append(row)
    points = np.column_stack(
        [
            1.0 / mean.step_time[idx],
            per_gpu[idx],
            np.full(idx.size, len(out.rows) - 1.0),
            batch[idx],
        ]
    )
    out.frontier.append(_pareto(points))
    return row["score"]


def _row(target, config, times, pipeline, mean, best: dict) -> dict:
    """The table row of one configuration at its best batch (``best``: that batch's B,
    step-time quantile, tokens per step, score and tokens/s per GPU)."""
    i = int(best["batch"]) - pipeline.microbatches  # index into the batch grid
    step = float(np.asarray(mean.step_time)[i])
    m, L = pipeline.microbatches, pipeline.layers
    a_round, a_busy, x, f = (
        float(np.asarray(v)[i]) for v in (mean.a_round, mean.a_busy, mean.x, mean.f)
    )
    return {
        **config,
        "batch": int(best["batch"]),
        "tpot_ms": 1e3 * float(best["tau_q"]),
        "step_time_mean_ms": 1e3 * step,
        "throughput_per_gpu": float(best["per_gpu"]),
        "throughput_per_user": 1.0 / step,
        "throughput_per_bundle": float(best["tokens"]) / step,
        "score": float(best["score"]),
        "idle_attention": 1.0 - m * L * a_busy / step,
        "idle_ffn": 1.0 - m * L * f / step,
        "binding": pipeline.binding(a_round, a_busy, x, f),
        "kv_headroom": 1.0
        - _kv_load(target.stats, float(best["batch"]), times.state_tokens)
        / times.kv_capacity_tokens,
    }


def _kv_load(stats: LoadStats, batch: float, state_tokens: int = 0) -> float:
    return float(kv_load(batch, stats.theta + state_tokens, stats.v))


def _pareto(points: np.ndarray) -> np.ndarray:
    """Rows of (per user, per GPU, …) that no other row beats on both (ties kept once)."""
    if points.size == 0:
        return points
    order = np.lexsort((-points[:, 1], -points[:, 0]))
    p = points[order]
    best_so_far = np.maximum.accumulate(p[:, 1])
    keep = np.ones(len(p), dtype=bool)
    keep[1:] = p[1:, 1] > best_so_far[:-1]
    return p[keep]


def search_afd(target: Target, out: _Collector) -> None:
    """Every (g_A, g_F, m, r) whose weights fit; the best B of each (see module doc)."""
    model, space = target.model, target.space
    sizes = [g for g in space.gpus_attention if attention_tp_problem(model, g) is None]
    require(
        bool(sizes),
        "; ".join(str(attention_tp_problem(model, g)) for g in space.gpus_attention)
        + ": give --gpus-attention sizes that divide them",
    )
    groups = ffn_group_sizes(model, target.ffn_hw, space)
    layouts = [(g_f, split) for g_f in groups for split in expert_splits(model, g_f, space)]
    if not layouts:
        tried = space.expert_tp or (1,)
        raise InputError(
            f"--expert-tp {','.join(map(str, tried))}: no FFN group of "
            f"{', '.join(map(str, groups))} GPUs splits the experts of {model.name} that way "
            f"(e.g. {expert_layout_problem(model, groups[0], tried[0])})"
        )
    for g_a in sizes:
        for g_f, split in layouts:
            if space.gpu_budget is not None and g_a + g_f > space.gpu_budget:
                continue
            _search_ratios(target, out, g_a, g_f, split)


def _search_ratios(target: Target, out: _Collector, g_a: int, g_f: int, split: int) -> None:
    """Every m and r for attention TP g_A and an FFN group of g_F GPUs, each expert split
    over ``split`` of them."""
    model, space = target.model, target.space
    sides = (model, target.attention_hw, target.ffn_hw, g_a, g_f)
    near = roofline_times(*sides, False, target.anchor, target.moe, split, target.mtp)
    far = roofline_times(*sides, True, target.anchor, target.moe, split, target.mtp)
    if near is None or far is None or g_f < min_ffn_gpus(model, target.ffn_hw):
        return
    cap = space.max_batch or default_max_batch(target.attention_hw)
    b_kv = kv_limit(near.kv_capacity_tokens, target.stats, cap, near.state_tokens)
    w_a, w_f = objective_weights(target.objective, g_a, g_f, *target.prices)
    for m in space.microbatches:
        pipeline = Pipeline("pingpong", m, model.layers)
        best_r, best_score, misses = 0, -1.0, 0
        for r in range(1, space.max_ratio + 1):
            gpus = bundle_gpus(r, g_a, g_f)
            if space.gpu_budget is not None and gpus > space.gpu_budget:
                break
            cross = crosses_nodes(target.attention_hw, target.ffn_hw, gpus)
            times = far if cross else near
            config = {
                "architecture": "afd",
                "gpus_attention": g_a,
                "gpus_ffn": g_f,
                "expert_tp": split,
                "microbatches": m,
                "r": r,
                "cross_node": bool(cross),
            }
            weight = r * w_a + w_f
            score = _record(out, target, config, times, pipeline, b_kv, weight, gpus)
            if score is None:
                misses += 1
                if misses >= 3:
                    break  # more workers only lengthen the step
                continue
            misses = 0
            if score > best_score:
                best_r, best_score = r, score
            elif r > 2 * best_r + 8:
                break  # well past the peak of a unimodal objective


def colocated_capacity(model: ModelSpec, hw: HardwareSpec, group: int, tp: int = 1) -> int:
    """KV tokens one attention instance of a colocated group holds: its ``tp`` GPUs' usable
    HBM − the attention weights (a full copy per instance, split over its GPUs) − their
    share of the FFN weights (1/group each), over the KV bytes of a token times the GPUs
    holding it (``kv_copies``: all ``tp`` for MLA)."""
    free = tp * (
        hw.hbm_bytes * hw.usable_memory - model.ffn_params() * model.ffn_bytes / group
    ) - attention_weight_bytes(model)
    return max(0, math.floor(free / (model.kv_bytes_per_token() * kv_copies(model, tp))))


def colocated_times(
    times: LinearStepTimes, capacity: int, name: str, tp: int = 1
) -> LinearStepTimes:
    """A colocated group's step times from its AFD-side ones: the FFN kernels run on the
    same GPUs as attention (the compute resource), the expert dispatch and combine are the
    transfers (the group's whole micro-batch on its links, ``aggregate``: what two-batch
    overlap hides behind the other micro-batch's compute), no A↔F link; the busiest
    expert rank still sets the FFN."""
    x = times.exchange or Linear(0.0, 0.0)
    kernels = Linear(alpha=max(times.ffn.alpha - x.alpha, 1e-15), beta=times.ffn.beta - x.beta)
    return replace(
        times,
        ffn=kernels,
        comm=x,
        exchange_overlap=False,  # the comm is the exchange already
        comm_scope="aggregate",
        name=name,
        gpus_attention=float(tp),
        kv_capacity_tokens=capacity,
    )


def search_colocated(target: Target, out: _Collector) -> None:
    """Ordinary decode as runtimes serve it, with and without two-batch overlap. An MoE
    model: groups of G GPUs, each GPU its own B sequences' attention (data parallel) and
    1/G of the experts over all G·B tokens (expert parallel). A dense model: tensor-
    parallel instances of t GPUs, each holding 1/t of every weight for its B sequences
    (``_search_colocated_tp``)."""
    model, space = target.model, target.space
    hardware = [target.attention_hw] + ([target.ffn_hw] if target.heterogeneous else [])
    for side, hw in enumerate(hardware):
        price = target.prices[side]
        if not model.is_moe:
            _search_colocated_tp(target, out, hw, price)
            continue
        groups = Space(gpu_budget=space.gpu_budget, across_nodes=space.across_nodes)
        try:
            sizes = ffn_group_sizes(model, hw, groups)
        except InputError:
            continue  # no colocated group of this hardware holds the weights
        for g in sizes:
            if space.gpu_budget is not None and g > space.gpu_budget:
                continue
            for t in (1, 2, 4, 8):
                if g % t or t > hw.scaleup_gpus or attention_tp_problem(model, t) is not None:
                    continue
                for split in expert_splits(model, g, space, colocated=True):
                    _colocated_group(target, out, hw, price, g, t, split)


def _colocated_group(
    target: Target, out: _Collector, hw: HardwareSpec, price, g: int, t: int, split: int = 1
):
    """One colocated group of g GPUs: g/t attention instances of TP t (t = 1: data-parallel
    attention), the FFN over all g (experts, each split over ``split`` GPUs, or a dense
    MLP's columns), with and without two-batch overlap."""
    model, space = target.model, target.space
    times = colocated_group_times(target, hw, g, t, split)
    if times is None:
        return
    capacity, cross = times.kv_capacity_tokens or 0, g > hw.scaleup_gpus
    b_kv = kv_limit(
        capacity, target.stats, space.max_batch or default_max_batch(hw), times.state_tokens
    )
    weight = g * price if target.objective == Objective.cost else float(g)
    for m in (1, 2):
        config = {
            "architecture": colocated_label(hw),
            "gpus_attention": t,
            "gpus_ffn": g,
            "expert_tp": split,
            "microbatches": m,
            "r": g // t,
            "cross_node": cross,
        }
        pipeline = Pipeline("pingpong", m, model.layers)
        _record(out, target, config, times, pipeline, b_kv, weight, g, colocated=True)


def colocated_label(hw: HardwareSpec) -> str:
    """The ``architecture`` of a colocated group on ``hw`` in rows and JSON."""
    return f"colocated@{hw.name}"


def colocated_hardware(
    architecture: str, attention_hw: HardwareSpec, ffn_hw: HardwareSpec
) -> HardwareSpec:
    """Which of the two GPU kinds a colocated group labelled ``architecture`` runs on."""
    on_ffn = attention_hw.name != ffn_hw.name and architecture == colocated_label(ffn_hw)
    return ffn_hw if on_ffn else attention_hw


def colocated_group_times(
    target: Target, hw: HardwareSpec, g: int, t: int, expert_tp: int = 1
) -> LinearStepTimes | None:
    """The step times of one colocated group of g GPUs of ``hw`` with attention TP t, each
    expert split over ``expert_tp`` GPUs (the anchor and MoE assumptions applied), or None
    where they do not exist or hold no KV."""
    model = target.model
    capacity = colocated_capacity(model, hw, g, t)
    cross = g > hw.scaleup_gpus
    times = roofline_times(
        model, hw, hw, t, g, cross, target.anchor, target.moe, expert_tp, target.mtp
    )
    if times is None or capacity < 1:
        return None
    return colocated_times(times, capacity, f"colocated:{model.name}@{hw.name}", t)


def _search_colocated_tp(target: Target, out: _Collector, hw: HardwareSpec, price) -> None:
    """Dense colocated decode: instances of t GPUs (t = 1, 2, 4, 8 inside one NVLink
    domain, splitting the heads), attention and MLP both tensor parallel, each paying its
    all-reduce every layer; instances are independent (no barrier between them). Each is a
    colocated group of its own t GPUs (``_colocated_group`` with g = t)."""
    for t in (1, 2, 4, 8):
        if t > hw.scaleup_gpus or attention_tp_problem(target.model, t) is not None:
            continue
        if target.space.gpu_budget is None or t <= target.space.gpu_budget:
            _colocated_group(target, out, hw, price, t, t)
