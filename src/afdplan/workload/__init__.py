"""Workload: request-length laws and traces reduced to the per-slot load θ, v (DESIGN.md §2)."""

from afdplan.workload.laws import DiscreteLaw, Geometric, LengthLaw, fixed, lognormal, uniform
from afdplan.workload.sources import (
    EmpiricalWorkload,
    IndependentWorkload,
    LoadStats,
    MixtureWorkload,
    RequestMoments,
    Workload,
    context_sums,
)
from afdplan.workload.spec import parse_workload
from afdplan.workload.traces import read_trace

__all__ = [
    "DiscreteLaw",
    "EmpiricalWorkload",
    "Geometric",
    "IndependentWorkload",
    "LengthLaw",
    "LoadStats",
    "MixtureWorkload",
    "RequestMoments",
    "Workload",
    "context_sums",
    "fixed",
    "lognormal",
    "parse_workload",
    "read_trace",
    "uniform",
]
