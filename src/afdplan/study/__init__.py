"""The validation study: theory against simulation across cases, workloads and batches
(``afdplan validate``; DESIGN.md §7)."""

from afdplan.study.cases import (
    DEFAULT_GRID,
    QUICK_GRID,
    RULES,
    Case,
    Grid,
    Study,
    build_study,
    builtin_cases,
    builtin_workloads,
    deployment_cases,
)
from afdplan.study.compare import SweepOptimum, best_ratio, compare_sweep, simulated_optimum
from afdplan.study.run import case_pipeline, deployment_table, run_validation, summarise

__all__ = [
    "DEFAULT_GRID",
    "QUICK_GRID",
    "RULES",
    "Case",
    "Grid",
    "Study",
    "SweepOptimum",
    "best_ratio",
    "build_study",
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
