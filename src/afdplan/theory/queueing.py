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
"""

from __future__ import annotations

import math

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
