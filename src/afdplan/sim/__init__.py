"""The trace-driven rA–1F AFD bundle simulator (DESIGN.md §5)."""

from afdplan.sim.config import ORDERS, WARMUPS, SimConfig
from afdplan.sim.engine import measure, simulate, simulate_seeds, simulate_with_cycles
from afdplan.sim.results import Estimate, SimResult, SimSummary
from afdplan.sim.schedule import KvStats, Occupancy

__all__ = [
    "ORDERS",
    "WARMUPS",
    "Estimate",
    "KvStats",
    "Occupancy",
    "SimConfig",
    "SimResult",
    "SimSummary",
    "measure",
    "simulate",
    "simulate_seeds",
    "simulate_with_cycles",
]
