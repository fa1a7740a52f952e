"""How a step runs, shared by theory and simulator (DESIGN.md §8–9)."""

from afdplan.bundle.objective import objective_weights, weighted_rate
from afdplan.bundle.pipeline import (
    LAYERED,
    Pipeline,
    StageLine,
    pingpong_closed_form,
    recurrence,
)
from afdplan.bundle.shape import (
    KV_SIGMAS,
    Bundle,
    bundle_cost,
    bundle_gpus,
    kv_load,
    max_feasible_batch,
)

__all__ = [
    "KV_SIGMAS",
    "LAYERED",
    "Bundle",
    "Pipeline",
    "StageLine",
    "bundle_cost",
    "bundle_gpus",
    "kv_load",
    "max_feasible_batch",
    "objective_weights",
    "pingpong_closed_form",
    "recurrence",
    "weighted_rate",
]
