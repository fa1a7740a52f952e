"""Theory: the closed-form A/F rule and its barrier-aware refinement (DESIGN.md §3–4)."""

from afdplan.normal import excess_integral, expected_max_normal
from afdplan.theory.barrier import (
    BarrierPoint,
    RatioRow,
    barrier_point,
    best_row,
    evaluate_ratios,
)
from afdplan.theory.paper import v1_finite_horizon_load
from afdplan.theory.rule import (
    Breakpoints,
    Deployment,
    RuleResult,
    StageLine,
    breakpoints,
    cycle_lines,
    layer_lines,
    mean_attention_time,
    mean_field_cycle_time,
    optimal_ratio,
    stage_lines,
    throughput_per_instance,
    weighted_throughput,
)

__all__ = [
    "BarrierPoint",
    "Breakpoints",
    "Deployment",
    "RatioRow",
    "RuleResult",
    "StageLine",
    "barrier_point",
    "best_row",
    "breakpoints",
    "cycle_lines",
    "evaluate_ratios",
    "excess_integral",
    "expected_max_normal",
    "layer_lines",
    "mean_attention_time",
    "mean_field_cycle_time",
    "optimal_ratio",
    "stage_lines",
    "throughput_per_instance",
    "v1_finite_horizon_load",
    "weighted_throughput",
]
