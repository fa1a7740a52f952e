"""The validation study: theory against simulation across cases, workloads and batches
(``afdplan validate``; DESIGN.md §7)."""

from afdplan.study.cases import (
    DEFAULT_GRID,
    QUICK_GRID,
    RULE_LABELS,
    RULES,
    Case,
    Grid,
    builtin_cases,
    builtin_workloads,
)
from afdplan.study.compare import SweepOptimum, best_ratio, compare_sweep, simulated_optimum
from afdplan.study.run import case_pipeline, run_validation, summarise

__all__ = [
    "DEFAULT_GRID",
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
    "run_validation",
    "simulated_optimum",
    "summarise",
]
