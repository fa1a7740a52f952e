"""Barrier-aware expected cycle time (DESIGN.md §4) and the integer recommendation.

The r Attention workers synchronise every step, so a step waits for the slowest one.
With per-worker loads T_i ≈ N(B·θ, B·v) i.i.d., μ = t̄_A, σ = α_A·√(B·v) and
G = max{t_C, t_F(rB)}:

    E[τ] = E[max{G, μ + σ·max_{j≤r} Z_j}] = G + σ·∫_{z0}^{∞} (1 − Φ(x)^r) dx,
    z0 = (G − μ)/σ.

The integrand is evaluated as −expm1(r·log Φ(x)) (``afdplan.normal.log_cdf``) so it keeps
full relative precision both where Φ^r ≈ 1 and where it underflows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from afdplan.bundle import Pipeline
from afdplan.errors import check_nonnegative, require
from afdplan.normal import expected_max_normal
from afdplan.theory.rule import Deployment, throughput_per_instance, weighted_throughput
from afdplan.timing import StepTimes, routed_experts, transfer_each_way


@dataclass(frozen=True)
class BarrierPoint:
    """Expected cycle time at one integer r and what each device does in it."""

    r: int
    cycle_time: float  # E[τ], time units
    cycle_time_mean_field: float  # τ with every worker at its mean load
    t_attention: float  # mean busy time of one Attention worker, μ
    t_ffn: float
    t_comm: float
    binding: str  # the stage on top of the mean-field envelope

    @property
    def idle_attention(self) -> float:
        """Fraction of the cycle an Attention worker waits (barrier + FFN)."""
        return 1.0 - self.t_attention / self.cycle_time

    @property
    def idle_ffn(self) -> float:
        """Fraction of the cycle the FFN worker waits for the slowest Attention worker."""
        return 1.0 - self.t_ffn / self.cycle_time


def barrier_point(
    dep: Deployment,
    load_per_slot: float,
    load_var: float,
    r: int,
    times: StepTimes | None = None,
    attention: tuple[float, float] | None = None,
) -> BarrierPoint:
    """E[τ] at integer r under the Gaussian barrier model (DESIGN.md §4).

    ``times`` (default: the deployment's linear model) may be any step-time source, e.g.
    measured curves: then μ = t_A(B, B·θ), σ = t_A'(B·θ)·√(B·v) with the local slope, and
    t_C, t_F are read off the curves at r — the same formula on the real shapes.
    ``attention``: (t_A, its slope in KV tokens) at one micro-batch's mean load, which do
    not depend on r (:func:`attention_at_mean`; computed here when not given).
    """
    check_nonnegative("load variance v", load_var)
    require(int(r) == r and r >= 1, f"r must be an integer >= 1, got {r}")
    r, b = int(r), dep.batch
    times = times or dep.times
    mu, slope = attention or attention_at_mean(dep, load_per_slot, times)
    if dep.pipeline.layered:
        return _layered_point(dep, load_per_slot, load_var, r, times, mu, slope)
    sigma = slope * math.sqrt(b * load_var)
    comm = float(times.comm_time(b, r))
    ffn = float(times.ffn_time(r * b))
    expected, mean_field, binding = dep.pipeline.expected_step(mu, sigma, r, comm, ffn)
    return BarrierPoint(
        r=r,
        cycle_time=expected,
        cycle_time_mean_field=mean_field,
        t_attention=mu,
        t_ffn=ffn,
        t_comm=comm,
        binding=binding,
    )


def attention_at_mean(
    dep: Deployment, load_per_slot: float, times: StepTimes | None = None
) -> tuple[float, float]:
    """(t_A, dt_A/dT) for one micro-batch (B/m sequences) at its mean load: the attention
    side of every row, the same at every r."""
    times = times or dep.times
    b = dep.batch / dep.pipeline.microbatches
    return float(times.attention_time(b, b * load_per_slot)), _attention_slope(
        times, b, b * load_per_slot
    )


def _attention_slope(times: StepTimes, batch, load):
    """d t_A / d T at ``load`` KV tokens (the local slope on measured curves), ≥ 0;
    elementwise over arrays of ``batch`` and ``load``."""
    step = np.maximum(1.0, 0.01 * np.asarray(load, dtype=np.float64))
    lo = np.maximum(load - step, 0.0)
    rise = times.attention_time(batch, load + step) - times.attention_time(batch, lo)
    slope = np.maximum(rise / (load + step - lo), 0.0)
    return float(slope) if np.ndim(slope) == 0 else slope


@dataclass(frozen=True)
class LayeredTimes:
    """Per-layer micro-batch times of a layered pipeline and the step time they give
    (seconds; arrays over batches where the inputs were arrays)."""

    step_time: np.ndarray | float  # τ at the given spread of the slowest worker
    a_round: np.ndarray | float  # the slowest worker's attention on one micro-batch, per layer
    a_busy: np.ndarray | float  # the busiest worker's attention per micro-batch and layer
    x: np.ndarray | float  # one transfer, one direction (half the round trip)
    f: np.ndarray | float  # the FFN group on one micro-batch
    attention: np.ndarray | float  # one worker's whole-step attention at its mean load


def layered_times(
    pipeline: Pipeline,
    times: StepTimes,
    batch,
    r: int,
    load_per_slot: float,
    load_var: float,
    spread: float,
    attention: tuple | None = None,
    colocated: bool = False,
    ffn_quantile: float | None = None,
) -> LayeredTimes:
    """Step time of a layered pipeline when the slowest of r workers sits ``spread``
    standard deviations above the mean load (DESIGN.md §4, §8); vectorised over ``batch``.

    A micro-batch of b = B/m sequences holds T_ij ≈ N(b·θ, b·v) tokens on worker i. Its
    round trip waits for its slowest worker: a_round = (t_A(b, bθ) + t_A'·√(b·v)·spread)/L;
    the attention resource is bound by the busiest worker's m tasks, whose sum has the
    whole worker's spread √(B·v): a_busy = (m·t_A + t_A'·√(B·v)·spread)/(m·L).
    ``spread`` = E[max of r standard normals] gives E[τ]; Φ⁻¹(q^{1/r}) gives τ's
    q-quantile (τ is increasing in the slowest worker's load). ``attention``: (t_A, slope)
    at one micro-batch's mean load when already known. ``colocated``: attention and FFN
    share the GPUs (``Pipeline.colocated_step_time``). ``ffn_quantile`` q: the FFN at its
    busiest expert rank's q-quantile (``Experts.imbalance_quantile``) instead of its mean,
    for a step-time quantile that covers the expert barrier too.
    """
    m, L = pipeline.microbatches, pipeline.layers
    b = np.asarray(batch, dtype=np.float64) / m
    if attention is None:
        mu = times.attention_time(b, b * load_per_slot)
        slope = _attention_slope(times, b, b * load_per_slot)
    else:
        mu, slope = attention
    a_round = (mu + slope * np.sqrt(b * load_var) * spread) / L
    a_busy = (m * mu + slope * np.sqrt(m * b * load_var) * spread) / (m * L)
    x = transfer_each_way(times.comm_time(b, r)) / L
    imbalance = None
    if ffn_quantile is not None:
        experts, g_f = routed_experts(times)
        if experts is not None:
            imbalance = experts.imbalance_quantile(r * b, g_f, ffn_quantile)
    f = times.ffn_time(r * b, imbalance) / L
    if colocated:
        tau = pipeline.colocated_step_time(a_round, a_busy, x, f, x)
    else:
        tau = pipeline.step_time(a_round, a_busy, x, f, x)
    return LayeredTimes(tau, a_round, a_busy, x, f, m * mu)


def _layered_point(
    dep: Deployment,
    load_per_slot: float,
    load_var: float,
    r: int,
    times: StepTimes,
    mu: float,
    slope: float,
) -> BarrierPoint:
    """E[τ] under a layered pipeline (ping-pong, AIConfigurator's) with the barrier: the
    closed form at the expected spread of the slowest of r workers (:func:`layered_times`)."""
    p = dep.pipeline
    m, L = p.microbatches, p.layers
    spread = expected_max_normal(r) if r > 1 else 0.0
    at = (mu, slope)
    lt = layered_times(p, times, dep.batch, r, load_per_slot, load_var, spread, at)
    mean_field = layered_times(p, times, dep.batch, r, load_per_slot, 0.0, 0.0, at).step_time
    x, f = float(lt.x), float(lt.f)
    return BarrierPoint(
        r=r,
        cycle_time=float(lt.step_time),
        cycle_time_mean_field=float(mean_field),
        t_attention=m * mu,
        t_ffn=m * L * f,
        t_comm=2 * m * L * x,  # the round trip
        binding=p.binding(float(lt.a_round), float(lt.a_busy), x, f),
    )


@dataclass(frozen=True)
class RatioRow:
    """One integer r of the recommendation table."""

    point: BarrierPoint
    throughput_per_instance: float  # r·B/(instances·E[τ]), tokens per time unit
    throughput_per_weight: float  # r·B/((r·w_A + w_F)·E[τ])


def evaluate_ratios(
    dep: Deployment,
    load_per_slot: float,
    load_var: float,
    r_values: list[int],
    times: StepTimes | None = None,
) -> list[RatioRow]:
    """Barrier-aware rows for each integer r in ``r_values`` (``times``: see barrier_point)."""
    rows = []
    attention = attention_at_mean(dep, load_per_slot, times)
    for r in r_values:
        point = barrier_point(dep, load_per_slot, load_var, r, times, attention)
        rows.append(
            RatioRow(
                point=point,
                throughput_per_instance=float(
                    throughput_per_instance(dep.batch, r, point.cycle_time)
                ),
                throughput_per_weight=float(weighted_throughput(dep, r, point.cycle_time)),
            )
        )
    return rows


def best_row(rows: list[RatioRow]) -> RatioRow:
    """The row maximising the weighted objective; the smallest r among ties."""
    best = max(row.throughput_per_weight for row in rows)
    return next(row for row in rows if row.throughput_per_weight >= best * (1 - 1e-12))
