"""Closed forms for an open fleet of AFD bundles: saturation and queueing.

Each attention worker holds up to B_eff sequences (B, or fewer when the KV cache binds:
a request reserves its final context P + D at admission, so about C / E[P + D] fit), and a
sequence holds its slot for D steps of the bundle's step time τ. So a worker is a
c-server queue with c = B_eff and mean service time E[D]·τ, and

    λ_max per bundle = r·B_eff / (E[D]·E[τ at full batch])                  (saturation)

Below saturation the step time itself depends on the load: with ρ the share of busy
slots, τ(ρ) is the step time at ρ·B_eff sequences per worker, and ρ solves the fixed
point ρ = λ_w·E[D]·τ(ρ) / B_eff (λ_w = λ / workers, routing balanced). The wait is the
Allen–Cunneen approximation of the G/G/c queue,

    W_q ≈ C(c, a) / (c·μ − λ_w) · (c_a² + c_s²) / 2,   a = λ_w / μ,  μ = 1 / (E[D]·τ(ρ)),

with C the Erlang-C probability of waiting, c_a² the squared coefficient of variation of
the inter-arrival times (1 Poisson, cv² gamma) and c_s² = Var(D)/E[D]².

That per-worker queue is the round-robin router's: each worker sees every W-th arrival, so
its inter-arrival times are sums of W and c_a² becomes c_a²/W. The pooling routers
(least-KV, power-of-two) send each request to the worker with the fewest reserved tokens
Σ(P + D), so they balance token mass, not requests. A worker then holds the number of
requests whose footprints fill a common token budget — a renewal count, whose variance is
n̄·κ² for a mean of n̄ (κ² = Var(P + D)/E[P + D]², the renewal CLT). With N ~ Normal(n̄,
n̄·κ²) requests at a worker of c slots,

    E[min(N, c)] = ρ·c  fixes n̄,   L_q = W·E[(N − c)⁺] requests wait,   W_q = L_q / λ   (Little)

(``balanced_queue``): a queue at one worker beside free slots at another, which neither the
per-worker queue (too pessimistic: workers share arrivals) nor one pooled G/G/(W·c) queue
(too optimistic: the router cannot move a request once queued) describes. Where the KV
cache binds rather than B, the tokens being balanced are the binding resource itself and
the pooled G/G/(W·c) queue applies.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from afdplan.errors import require


def erlang_c(servers: int, offered: float) -> float:
    """P(wait) in an M/M/c queue with c = ``servers`` and offered load a = λ/μ < c.

    Computed through the Erlang-B recursion B_k = a·B_{k−1}/(k + a·B_{k−1}), stable for
    thousands of servers, then C = c·B / (c − a·(1 − B))."""
    require(servers >= 1, f"servers must be >= 1, got {servers}")
    require(0 <= offered < servers, f"offered load {offered} must be in [0, {servers})")
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    return servers * b / (servers - offered * (1.0 - b))


def allen_cunneen_wait(
    servers: int, arrival_rate: float, service_time: float, ca2: float, cs2: float
) -> float:
    """Mean wait in queue (time units of ``service_time``) of a G/G/c queue, or inf at or
    above saturation."""
    mu = 1.0 / service_time
    offered = arrival_rate / mu
    if offered >= servers:
        return math.inf
    c = erlang_c(servers, offered)
    return c / (servers * mu - arrival_rate) * (ca2 + cs2) / 2.0


def normal_excess(mean: float, variance: float, level: float) -> float:
    """E[(N − level)⁺] for N ~ Normal(mean, variance): σ·φ(z) + (mean − level)·Φ̄(z),
    z = (level − mean)/σ."""
    if variance <= 0.0:
        return max(mean - level, 0.0)
    sd = math.sqrt(variance)
    z = (level - mean) / sd
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return sd * pdf + (mean - level) * 0.5 * math.erfc(z / math.sqrt(2.0))


def _bisect(f: Callable[[float], float], lo: float, hi: float) -> float:
    """The root of an increasing ``f`` on [lo, hi] (f(lo) ≤ 0 ≤ f(hi))."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if f(mid) < 0.0:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def balanced_queue(servers: float, busy: float, weight_cv2: float) -> float:
    """Mean requests waiting at one worker of ``servers`` slots with ``busy`` of them
    occupied on average, when the router balances token mass across workers and a
    request's footprint has squared coefficient of variation ``weight_cv2``: E[(N − c)⁺]
    with N ~ Normal(n̄, n̄·κ²) and n̄ such that E[min(N, c)] = busy (module docstring)."""
    require(servers > 0, f"servers must be > 0, got {servers}")
    require(0.0 <= busy < servers, f"busy slots {busy} must be in [0, {servers})")
    require(weight_cv2 >= 0.0, f"weight_cv2 must be >= 0, got {weight_cv2}")
    if busy == 0.0:
        return 0.0

    def excess(nbar: float) -> float:
        return normal_excess(nbar, nbar * weight_cv2, servers)

    def served(nbar: float) -> float:  # E[min(N, c)]
        return nbar - excess(nbar)

    # E[min(N, c)] rises with n̄ to a peak below c, then falls slowly (the spread keeps
    # growing); busy slots beyond the peak cannot be reached: the queue grows without bound
    lo, hi = 0.0, 0.5 * servers
    while served(hi) < busy:
        lo, nxt = hi, 1.05 * hi
        if served(nxt) <= served(hi):
            return math.inf
        hi = nxt
    return excess(_bisect(lambda n: served(n) - busy, lo, hi))
