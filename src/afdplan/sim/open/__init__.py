"""The open system: requests arrive over time (``arrivals``), queue and are served by a
fleet of N bundles (``fleet``); ``run.simulate_open`` runs the compiled event loop
(``loop``) or its plain oracle (``reference``)."""

from afdplan.sim.open.arrivals import ARRIVALS, Arrivals, Gamma, Poisson, TraceTimes
from afdplan.sim.open.fleet import WARMUP_SHARE, Fleet, OpenResult
from afdplan.sim.open.prefill import PrefillPool, PrefillRun, serve
from afdplan.sim.open.run import simulate_open

__all__ = [
    "ARRIVALS",
    "WARMUP_SHARE",
    "Arrivals",
    "Fleet",
    "Gamma",
    "OpenResult",
    "Poisson",
    "PrefillPool",
    "PrefillRun",
    "TraceTimes",
    "serve",
    "simulate_open",
]
