"""The validation study: theory against simulation across cases, workloads and batches
(``afdplan validate``; DESIGN.md §7)."""

from afdplan.study.cases import (
    DEFAULT_GRID,
    DEPLOYMENT_FFN_GROUPS,
    DEPLOYMENT_GRID,
    DEPLOYMENT_PIPELINES,
    DEPLOYMENT_QUICK_WORKLOADS,
    DEPLOYMENT_TRACE,
    QUICK_GRID,
    RULE_LABELS,
    RULES,
    Case,
    Grid,
    builtin_cases,
    builtin_workloads,
    deployment_cases,
)
from afdplan.study.compare import SweepOptimum, best_ratio, compare_sweep, simulated_optimum
from afdplan.study.run import case_pipeline, deployment_table, run_validation, summarise

__all__ = [
    "DEFAULT_GRID",
    "DEPLOYMENT_FFN_GROUPS",
    "DEPLOYMENT_GRID",
    "DEPLOYMENT_PIPELINES",
    "DEPLOYMENT_QUICK_WORKLOADS",
    "DEPLOYMENT_TRACE",
    "QUICK_GRID",
    "RULES",
    "RULE_LABELS",
    "Case",
    "Grid",
    "SweepOptimum",
    "best_ratio",
    "builtin_cases",
    "builtin_workloads",
    "case_pipeline",
    "compare_sweep",
    "deployment_cases",
    "deployment_table",
    "run_validation",
    "simulated_optimum",
    "summarise",
]
