"""KV-cache feasibility of a batch (DESIGN.md §2: T ≈ N(B·θ, B·v) per Attention worker)."""

from __future__ import annotations

import math

from afdplan.errors import check_nonnegative, check_positive


def max_feasible_batch(
    kv_capacity_tokens: float, theta: float, v: float, headroom_sigmas: float = 3.0
) -> int:
    """Largest B with B·θ + z·√(B·v) ≤ capacity (z = ``headroom_sigmas``), ≥ 0.

    The z·σ_T margin keeps the load fluctuation of one worker inside its KV cache at all
    but a ~Q(z) share of steps (z = 3: 0.13%).
    """
    cap = check_positive("KV capacity (tokens)", kv_capacity_tokens)
    theta = check_positive("theta", theta)
    z_sd = check_nonnegative("headroom sigmas", headroom_sigmas) * math.sqrt(
        check_nonnegative("v", v)
    )
    # θ·s² + z√v·s − C = 0 in s = √B.
    s = (-z_sd + math.sqrt(z_sd * z_sd + 4 * theta * cap)) / (2 * theta)
    b = math.floor(s * s)
    # Guard the floor against rounding at an exact root.
    while b > 0 and b * theta + z_sd * math.sqrt(b) > cap:
        b -= 1
    return b
