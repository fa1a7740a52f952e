"""How a step runs, shared by theory and simulator (DESIGN.md §8–9)."""

from afdplan.bundle.objective import objective_weights, weighted_rate
from afdplan.bundle.pipeline import (
    LAYERED,
    Pipeline,
    StageLine,
    pingpong_closed_form,
    recurrence,
)

__all__ = [
    "LAYERED",
    "Pipeline",
    "StageLine",
    "objective_weights",
    "pingpong_closed_form",
    "recurrence",
    "weighted_rate",
]
