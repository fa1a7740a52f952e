"""Workload + step times + batch → one A/F recommendation (theory side).

Puts DESIGN.md §2–4 together: θ and v from the workload, v1's and the θ-based
closed-form r*, the barrier-aware expected cycle time at every integer r up to r_max,
and the integer recommendation (the best of those by the weighted objective), with
what makes it more or less sure: the band of r within 1% of the best, the recommendation
at the ends of θ's 95% interval (traces), and the recommendation on measured curves.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from afdplan.bundle import KV_SIGMAS, Pipeline, kv_load, max_feasible_batch, objective_weights
from afdplan.errors import InputError, require
from afdplan.theory import (
    Deployment,
    RatioRow,
    RuleResult,
    best_row,
    evaluate_ratios,
    optimal_ratio,
    weighted_throughput,
)
from afdplan.timing import LinearStepTimes, StepTimes
from afdplan.workload import LoadStats, Workload

# Without --batch: the largest B the KV cache holds, capped here (256 is a common serving
# max_num_seqs and the paper's main batch); without a known capacity, this B.
DEFAULT_MAX_BATCH = 256
BAND_TOLERANCE = 0.01  # r within 1% of the best predicted objective
R_SEARCH_CAP = 4096  # the automatic search over r stops here


@dataclass(frozen=True)
class Certainty:
    """How sure the recommendation is.

    ``band``: the smallest and largest r whose predicted objective is within
    ``BAND_TOLERANCE`` of the best. ``theta_interval``: θ's 95% interval for a trace
    (None for a law: its θ is exact), and ``r_at_theta_interval`` the recommendation at
    its two ends. ``r_linear``/``r_curves``: the recommendation on the linear fit and on
    measured curves, when both are known.
    """

    band: tuple[int, int]
    theta_interval: tuple[float, float] | None = None
    r_at_theta_interval: tuple[int, int] | None = None
    r_linear: int | None = None
    r_curves: int | None = None
    curves: str | None = None


@dataclass(frozen=True)
class PlanResult:
    """Everything ``afdplan plan`` reports; ``to_dict`` is its JSON form."""

    workload: str
    stats: LoadStats
    deployment: Deployment
    rule: RuleResult  # θ-based mean field
    rule_v1: RuleResult  # v1: load μ_P + μ_D
    rows: list[RatioRow]
    recommended: RatioRow  # barrier-aware integer optimum
    recommended_per_gpu: RatioRow  # the same, weighting instances by their GPU counts
    r_recommended_mean_field: int  # best of ⌊r*⌋, ⌈r*⌉ under the mean-field cycle time
    r_recommended_v1: int  # the same with v1's load μ_P + μ_D
    max_feasible_batch: int | None
    certainty: Certainty
    curves: str | None = None  # measured step-time source behind the rows, if any
    dropped_rows: int = 0  # invalid trace rows dropped on request (--drop-invalid)
    objective: str = "custom"  # gpu | cost | instance, or custom weights
    notes: tuple[str, ...] = ()  # e.g. the recommendation read outside measured curves

    @property
    def times(self) -> LinearStepTimes:
        return self.deployment.times

    def throughput_per_gpu(self, row: RatioRow) -> float:
        """r·B / ((r·g_A + g_F)·E[τ]) with the set's GPUs per instance (tokens/time/GPU)."""
        return per_gpu_rate(self.deployment, row)

    def row_dict(self, row: RatioRow) -> dict:
        p = row.point
        return {
            "r": p.r,
            "step_time_s": p.cycle_time,
            "step_time_mean_field_s": p.cycle_time_mean_field,
            "throughput_per_instance": row.throughput_per_instance,
            "throughput_per_weight": row.throughput_per_weight,
            "throughput_per_gpu": self.throughput_per_gpu(row),
            "idle_attention": p.idle_attention,
            "idle_ffn": p.idle_ffn,
            "binding": p.binding,
        }

    def to_dict(self) -> dict:
        d, t, s = self.deployment, self.times, self.stats
        return {
            "workload": self.workload,
            "theta": s.theta,
            "theta_se": s.theta_se,
            "v": s.v,
            "mu_prefill": s.mu_prefill,
            "mu_decode": s.mu_decode,
            "load_v1": s.load_v1,
            "n_requests": s.n_requests,
            "batch": d.batch,
            "pipeline": d.pipeline.kind,
            "microbatches": d.pipeline.microbatches,
            "layers": d.pipeline.layers,
            "objective": self.objective,
            "gpus_attention": t.gpus_attention,
            "gpus_ffn": t.gpus_ffn,
            "comm_scope": t.comm_scope,
            "w_attention": d.w_attention,
            "w_ffn": d.w_ffn,
            "coeffs": t.name,
            "curves": self.curves,
            "time_unit": t.time_unit,
            "r_star": self.rule.r_star,
            "regime": self.rule.regime,
            "breakpoints": asdict(self.rule.breakpoints),
            "r_star_v1": self.rule_v1.r_star,
            "regime_v1": self.rule_v1.regime,
            "r_recommended": self.recommended.point.r,
            "r_recommended_mean_field": self.r_recommended_mean_field,
            "r_recommended_v1": self.r_recommended_v1,
            "r_recommended_per_gpu": self.recommended_per_gpu.point.r,
            "recommended": self.row_dict(self.recommended),
            "kv_capacity_tokens": t.kv_capacity_tokens,
            "max_feasible_batch": self.max_feasible_batch,
            "dropped_rows": self.dropped_rows,
            "certainty": asdict(self.certainty),
            "notes": list(self.notes),
            "rows": [self.row_dict(row) for row in self.rows],
        }


def gpu_weighted(dep: Deployment) -> Deployment:
    """The same deployment with each instance weighted by its GPU count."""
    return replace(dep, w_attention=dep.times.gpus_attention, w_ffn=dep.times.gpus_ffn)


def per_gpu_rate(dep: Deployment, row: RatioRow) -> float:
    """Tokens per time unit per GPU at ``row``."""
    return float(weighted_throughput(gpu_weighted(dep), row.point.r, row.point.cycle_time))


def default_r_max(*r_stars: float) -> int:
    """Enough integers to show the optimum and the fall-off past it."""
    return max(8, math.ceil(2 * max(r_stars)) + 2)


def resolve_batch(
    times: LinearStepTimes, stats: LoadStats, batch: int | None
) -> tuple[int, int | None]:
    """(B to use, largest feasible B or None); refuses B that the KV cache cannot hold."""
    cap = times.kv_capacity_tokens
    theta = stats.theta + times.state_tokens  # a hybrid model's state rides on every slot
    b_max = None if cap is None else max_feasible_batch(cap, theta, stats.v)
    if batch is None:
        if b_max is None:
            return DEFAULT_MAX_BATCH, None
        require(
            b_max >= 1,
            f"one request of this workload (θ = {theta:.0f} tokens) does "
            f"not fit the KV capacity of {cap} tokens",
        )
        return min(b_max, DEFAULT_MAX_BATCH), b_max
    require(batch >= 1, f"batch B must be >= 1, got {batch}")
    if b_max is not None and batch > b_max:
        raise InputError(
            f"B = {batch} does not fit the KV cache: {batch} × θ {theta:.0f} + "
            f"{KV_SIGMAS:g}σ exceeds {cap} tokens per Attention worker; "
            f"largest feasible B is {b_max}"
        )
    return batch, b_max


def make_plan(
    workload: Workload,
    times: LinearStepTimes,
    batch: int | None = None,
    *,
    pipeline: Pipeline | str = "overlap",
    r_max: int | None = None,
    w_attention: float = 1.0,
    w_ffn: float = 1.0,
    stats: LoadStats | None = None,
    curves: StepTimes | None = None,
    r_values: list[int] | None = None,
    other_curves: StepTimes | None = None,
    objective: str | None = None,
    prices: tuple[float | None, float | None] = (None, None),
) -> PlanResult:
    """The full theory-side recommendation for one workload and step-time model.

    The closed-form r* always uses the linear ``times``; with ``curves`` (measured
    tables) the barrier-aware rows and the recommendation use the measured shapes.
    ``other_curves`` (e.g. the curves a coefficient set ships) are only reported beside
    the recommendation. ``r_values`` fixes the r to evaluate; by default 1..``r_max``,
    and without ``r_max`` the range grows until the optimum is well inside it.
    ``objective`` (gpu | cost | instance, with ``prices`` in $ per GPU-hour for cost) sets
    the instance weights from the GPUs per instance of ``times``; without it the weights
    are ``w_attention``, ``w_ffn`` (the objective is then reported as custom).
    """
    if objective is not None:
        w_attention, w_ffn = objective_weights(
            objective, times.gpus_attention, times.gpus_ffn, *prices
        )
    stats = stats or workload.stats()
    batch, b_max = resolve_batch(times, stats, batch)
    dep = Deployment(times, batch, pipeline, w_attention, w_ffn)
    rule = optimal_ratio(dep, stats.theta)
    rule_v1 = optimal_ratio(dep, stats.load_v1)
    start = default_r_max(
        rule.r_star, rule_v1.r_star, optimal_ratio(gpu_weighted(dep), stats.theta).r_star
    )
    if r_values is None and r_max is not None:
        require(r_max >= 1, f"r-max must be >= 1, got {r_max}")
        r_values = list(range(1, r_max + 1))
    if r_values is None:
        rows = _search_rows(dep, stats.theta, stats.v, curves, start)
    else:
        require(bool(r_values) and min(r_values) >= 1, "r values must be integers >= 1")
        rows = evaluate_ratios(dep, stats.theta, stats.v, sorted(set(r_values)), curves)
    best = best_row(rows)
    mean_field_int = _best_integer_mean_field(dep, stats.theta, rule.r_star)
    v1_int = _best_integer_mean_field(dep, stats.load_v1, rule_v1.r_star)
    certainty = _certainty(dep, stats, rows, curves, other_curves, r_values, start)
    return PlanResult(
        workload=workload.describe(),
        stats=stats,
        deployment=dep,
        rule=rule,
        rule_v1=rule_v1,
        rows=rows,
        recommended=best,
        recommended_per_gpu=max(rows, key=lambda row: per_gpu_rate(dep, row)),
        r_recommended_mean_field=mean_field_int,
        r_recommended_v1=v1_int,
        max_feasible_batch=b_max,
        certainty=certainty,
        curves=None if curves is None else curves.name,
        dropped_rows=getattr(workload, "dropped_rows", 0),
        objective=objective or "custom",
        notes=_range_notes(dep, stats, best.point.r, curves),
    )


def _range_notes(
    dep: Deployment, stats: LoadStats, r: int, curves: StepTimes | None
) -> tuple[str, ...]:
    """Where the recommendation reads measured curves outside their measured range (one
    micro-batch's sequences and mean-plus-3σ load, its FFN tokens)."""
    if curves is None or not hasattr(curves, "outside_range"):
        return ()
    b = dep.batch / dep.pipeline.microbatches
    load = float(kv_load(b, stats.theta, stats.v))
    return tuple(curves.outside_range(b, load, r * b))


def _search_rows(
    dep: Deployment, theta: float, v: float, times: StepTimes | None, start: int
) -> list[RatioRow]:
    """Rows for r = 1..n, n grown (doubling) until the best r lies in the lower 2/3.

    The linear r* only seeds the range: on measured curves the optimum can lie far
    beyond it, and the search must not be bounded by it.
    """
    rows = evaluate_ratios(dep, theta, v, list(range(1, start + 1)), times)
    while best_row(rows).point.r > 2 * len(rows) // 3 and len(rows) < R_SEARCH_CAP:
        n = len(rows)
        rows += evaluate_ratios(
            dep, theta, v, list(range(n + 1, min(2 * n, R_SEARCH_CAP) + 1)), times
        )
    return rows


def _best_r(
    dep: Deployment,
    theta: float,
    v: float,
    times: StepTimes | None,
    r_values: list[int] | None,
    start: int,
) -> int:
    if r_values is None:
        return best_row(_search_rows(dep, theta, v, times, start)).point.r
    return best_row(evaluate_ratios(dep, theta, v, sorted(set(r_values)), times)).point.r


def _certainty(
    dep: Deployment,
    stats: LoadStats,
    rows: list[RatioRow],
    curves: StepTimes | None,
    other_curves: StepTimes | None,
    r_values: list[int] | None,
    start: int,
) -> Certainty:
    best = max(row.throughput_per_weight for row in rows)
    near = [row.point.r for row in rows if row.throughput_per_weight >= best * (1 - BAND_TOLERANCE)]
    interval = r_interval = None
    if stats.theta_se:
        half = 1.96 * stats.theta_se
        interval = (max(stats.theta - half, 0.0), stats.theta + half)
        r_interval = tuple(  # type: ignore[assignment]
            _best_r(dep, theta, stats.v, curves, r_values, start) for theta in interval
        )
    r_linear = r_curves = None
    name = None
    alt = curves if curves is not None else other_curves
    if alt is not None:
        r_linear = _best_r(dep, stats.theta, stats.v, None, r_values, start)
        r_curves = (
            best_row(rows).point.r
            if alt is curves
            else _best_r(dep, stats.theta, stats.v, alt, r_values, start)
        )
        name = alt.name
    return Certainty((min(near), max(near)), interval, r_interval, r_linear, r_curves, name)


def _best_integer_mean_field(dep: Deployment, load: float, r_star: float) -> int:
    """The better of ⌊r*⌋ and ⌈r*⌉ when every worker holds ``load`` tokens per slot."""
    candidates = sorted({max(1, math.floor(r_star)), max(1, math.ceil(r_star))})
    rows = evaluate_ratios(dep, load, 0.0, candidates)
    return best_row(rows).point.r
