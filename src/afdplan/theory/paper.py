"""Paper v1's finite-horizon load (Definition 4.2 of arXiv 2601.21351 v1, DESIGN.md §3)."""

from __future__ import annotations

import math

from afdplan.errors import check_positive, require


def v1_finite_horizon_load(batch: int, mu_prefill: float, p: float, n_requests: float) -> float:
    """Per-slot average load over the K = N/(B·p) steps that serve N requests (tokens).

    T̄(B; N)/B = μ_P + μ_D·(1 − (1 − (1 − p)^K)/(p·K)), with v1's μ_D = (1 − p)/p; it
    tends to μ_P + μ_D (= θ for geometric D, see afdplan.workload) as N → ∞.
    """
    require(batch >= 1, f"batch must be >= 1, got {batch}")
    require(0 < p <= 1, f"p must be in (0, 1], got {p}")
    check_positive("n_requests", n_requests)
    mu_decode = (1 - p) / p
    pk = n_requests / batch  # p·K
    k = pk / p
    # (1 − p)^K via log1p: K is in the thousands, p tiny.
    survive = math.exp(k * math.log1p(-p)) if p < 1 else 0.0
    return mu_prefill + mu_decode * (1 - (1 - survive) / pk)
