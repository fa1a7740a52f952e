"""The mean-field closed-form A/F rule (DESIGN.md §1, §3).

Every stage time is a line in r (the number of Attention workers per FFN worker):

    attention      t̄_A = α_A·B·θ + γ_A·B + β_A           (slope 0)
    communication  t̄_C = α_C·B + β_C                     (per worker, v1: slope 0)
                   t_C(r) = α_C·r·B + β_C                (aggregate round trip)
                   t_C(r) = α_C·B·max(1, r/g_F) + β_C    (fan-in: two lines, their max)
    ffn            t_F(r) = α_F·r·B + β_F

and the cycle time is their upper envelope (overlap: τ = max) or their sum (serial:
τ = t_A + t_C + t_F, t_C being the round trip; itself a line). A stage that is the max of
two lines (fan-in) enters every composition as either line, the same in every term, so
the step time is the envelope over both choices. Under the layered pipelines (ping-pong with m
micro-batches, AIConfigurator's cycle models) the per-layer micro-batch times a, x, f, y
are lines in r too and the mean-field step time is again an upper envelope of lines
(``Pipeline.cycle_lines``, DESIGN.md §8). The objective is

    Θ_w(r) = r·B / ((r·w_A + w_F)·τ(r))      (tokens per time unit per weight unit)

On a stretch where one line a·r + b dominates, Θ_w is increasing if a = 0 and
unimodal with its peak at √(b·w_F / (a·w_A)) otherwise, so the optimum is one of the
envelope's corners or one of those peaks. For v1's per-worker communication this is
exactly Theorem 4.4: r* = max{r_A, r_C, r_peak}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from afdplan.bundle import Pipeline, StageLine, weighted_rate
from afdplan.errors import check_positive, require
from afdplan.timing.linear import LinearStepTimes, transfer_each_way


@dataclass(frozen=True)
class Deployment:
    """What the rule needs besides the workload: times, batch B, how a step runs
    (``pipeline``: a :class:`Pipeline` or the name of a one-micro-batch pipeline), and the
    instance weights of the objective (GPUs or cost per instance)."""

    times: LinearStepTimes
    batch: int
    pipeline: Pipeline | str = "overlap"
    w_attention: float = 1.0
    w_ffn: float = 1.0

    def __post_init__(self) -> None:
        require(
            isinstance(self.batch, int | np.integer) and self.batch >= 1,
            f"batch B must be an integer >= 1, got {self.batch}",
        )
        if isinstance(self.pipeline, str):
            object.__setattr__(self, "pipeline", Pipeline(self.pipeline))
        if self.pipeline.layered:
            self.pipeline.split(self.batch)  # refuses m > B
        check_positive("w_attention", self.w_attention)
        check_positive("w_ffn", self.w_ffn)

    @property
    def mode(self) -> str:
        """The pipeline's name (overlap, serial, pingpong, aic-*)."""
        return self.pipeline.kind


@dataclass(frozen=True)
class Breakpoints:
    """The named candidates of DESIGN.md §3 (may be ≤ 0 when a regime cannot bind).

    ``r_attention``  = (t̄_A − β_F)/(α_F·B)
    ``r_comm``       = (t̄_C − β_F)/(α_F·B)                (per-worker communication)
    ``r_peak``       = √(β_F·w_F/(α_F·B·w_A))
    and, for aggregate communication t_C(rB):
    ``r_attention_comm`` = (t̄_A − β_C)/(α_C·B), ``r_peak_comm`` = √(β_C·w_F/(α_C·B·w_A)),
    ``r_comm_ffn`` = (β_C − β_F)/(B·(α_F − α_C)).
    """

    r_attention: float
    r_comm: float | None  # None with aggregate communication (see the three below)
    r_peak: float
    r_attention_comm: float | None = None
    r_peak_comm: float | None = None
    r_comm_ffn: float | None = None


@dataclass(frozen=True)
class RuleResult:
    """The continuous mean-field optimum and why it sits where it does."""

    r_star: float
    regime: str  # "attention" | "communication" | "ffn" | "serial"
    breakpoints: Breakpoints
    t_attention: float  # t̄_A at the given load (time units)
    load_per_slot: float  # the θ (or v1 load) used (tokens)


def mean_attention_time(times: LinearStepTimes, batch: int, load_per_slot: float) -> float:
    """t̄_A = α_A·B·θ + γ_A·B + β_A (DESIGN.md §3), time units."""
    return float(times.attention_time(batch, batch * load_per_slot))


def comm_lines(times: LinearStepTimes, batch: float) -> list[StageLine]:
    """The round trip t_C of ``batch`` tokens per worker as lines in r whose max it is:
    one line per worker (per_worker), the r·B line (aggregate), or both pieces of the
    fan-in α_C·B·max(1, r/g_F) + β_C."""
    c, b = times.comm, batch
    if times.comm_scope == "aggregate":
        return [StageLine("communication", c.alpha * b, c.beta)]
    own = StageLine("communication", 0.0, c.alpha * b + c.beta)
    if times.comm_scope == "fan_in":
        return [own, StageLine("communication", c.alpha * b / times.gpus_ffn, c.beta)]
    return [own]


def stage_lines(dep: Deployment, load_per_slot: float) -> list[StageLine]:
    """The three stage times as lines in r, in the mode's order (A, C, F); C is the first
    of :func:`comm_lines` (the only one unless the transfers fan in)."""
    t, b = dep.times, dep.batch
    return [
        StageLine("attention", 0.0, mean_attention_time(t, b, load_per_slot)),
        comm_lines(t, b)[0],
        StageLine("ffn", t.ffn.alpha * b, t.ffn.beta),
    ]


def layer_lines(dep: Deployment, load_per_slot: float, piece: int = 0) -> dict[str, StageLine]:
    """One micro-batch's per-layer times a, x, f, y as lines in r (DESIGN.md §8).

    A micro-batch holds b = B/m sequences per worker: a = t_A(b, b·θ)/L, x = y = half the
    round trip t_C of its tokens (:func:`comm_lines`, line ``piece``)/L, f = t_F(r·b)/L.
    """
    t, p = dep.times, dep.pipeline
    b = dep.batch / p.microbatches
    L = p.layers
    a = StageLine("a", 0.0, float(t.attention_time(b, b * load_per_slot)) / L)
    x = comm_lines(t, b)[piece].scaled(transfer_each_way(1.0) / L, "x")
    f = StageLine("f", t.ffn.alpha * b / L, t.ffn.beta / L)
    return {"a": a, "x": x, "f": f, "y": x.scaled(1, "y")}


def cycle_lines(dep: Deployment, load_per_slot: float) -> list[StageLine]:
    """The lines whose upper envelope is the mean-field step time τ(r) (the union over
    the pieces of a fan-in transfer)."""
    t = dep.times
    whole = {line.stage: line for line in stage_lines(dep, load_per_slot)}
    lines = []
    for piece, comm in enumerate(comm_lines(t, dep.batch)):
        whole["communication"] = comm
        per_layer = layer_lines(dep, load_per_slot, piece) if dep.pipeline.layered else None
        lines += dep.pipeline.cycle_lines(whole, per_layer)
    return lines


def mean_field_cycle_time(
    dep: Deployment, load_per_slot: float, r: np.ndarray | float
) -> np.ndarray:
    """τ(r) under the deployment's pipeline with every worker at its mean load: the
    envelope of :func:`cycle_lines`, or for a layered pipeline its own step time on the
    per-layer lines (AIConfigurator's optimistic cycle falls back to the conservative one
    where too few micro-batches hide the transfers, which no envelope expresses)."""
    r = np.asarray(r, dtype=np.float64)
    if dep.pipeline.layered:
        steps = []
        for piece in range(len(comm_lines(dep.times, dep.batch))):
            a, x, f, y = (v.at(r) for v in layer_lines(dep, load_per_slot, piece).values())
            steps.append(np.broadcast_to(dep.pipeline.step_time(a, a, x, f, y), r.shape))
        return np.max(steps, axis=0)
    lines = cycle_lines(dep, load_per_slot)
    return np.max([np.broadcast_to(line.at(r), r.shape) for line in lines], axis=0)


def weighted_throughput(
    dep: Deployment, r: np.ndarray | float, cycle_time: np.ndarray | float
) -> np.ndarray:
    """Θ_w = r·B / ((r·w_A + w_F)·τ): tokens per time unit per weight unit (DESIGN.md §1)."""
    r = np.asarray(r, dtype=np.float64)
    return weighted_rate(r * dep.batch, np.asarray(cycle_time), r, dep.w_attention, dep.w_ffn)


def throughput_per_instance(batch: int, r: np.ndarray | float, cycle_time) -> np.ndarray:
    """Θ = r·B / (instances·τ), r Attention + 1 FFN: tokens per time unit per instance
    (the paper's objective)."""
    r = np.asarray(r, dtype=np.float64)
    return weighted_rate(r * batch, np.asarray(cycle_time), r, 1.0, 1.0)


def _peak(line: StageLine, dep: Deployment) -> float | None:
    if line.slope <= 0 or line.intercept <= 0:
        return None
    return math.sqrt(line.intercept * dep.w_ffn / (line.slope * dep.w_attention))


def _crossing(a: StageLine, b: StageLine) -> float | None:
    if a.slope == b.slope:
        return None
    return (b.intercept - a.intercept) / (a.slope - b.slope)


def breakpoints(dep: Deployment, load_per_slot: float) -> Breakpoints:
    """The named breakpoints of DESIGN.md §3 for this deployment and load."""
    att, comm, _ = stage_lines(dep, load_per_slot)
    t, b = dep.times, dep.batch
    r_peak = math.sqrt(t.ffn.beta * dep.w_ffn / (t.ffn.alpha * b * dep.w_attention))
    r_attention = (att.intercept - t.ffn.beta) / (t.ffn.alpha * b)
    if t.comm_scope != "aggregate":  # per worker (fan-in: while r ≤ g_F)
        return Breakpoints(r_attention, (comm.intercept - t.ffn.beta) / (t.ffn.alpha * b), r_peak)
    alpha_c, beta_c = t.comm.alpha, t.comm.beta
    return Breakpoints(
        r_attention=r_attention,
        r_comm=None,
        r_peak=r_peak,
        r_attention_comm=(att.intercept - beta_c) / (alpha_c * b) if alpha_c > 0 else None,
        r_peak_comm=_peak(comm, dep),
        r_comm_ffn=(beta_c - t.ffn.beta) / (b * (t.ffn.alpha - alpha_c))
        if t.ffn.alpha != alpha_c
        else None,
    )


def optimal_ratio(dep: Deployment, load_per_slot: float) -> RuleResult:
    """The continuous r* > 0 maximising Θ_w under the mean-field cycle time.

    Implements DESIGN.md §3 (Theorem 4.4 of v1 for per-worker communication, plus the
    aggregate-communication breakpoints) and, for every pipeline, the optimum over the
    corners and peaks of the envelope of ``cycle_lines`` (serial: one line, its peak).
    """
    bps = breakpoints(dep, load_per_slot)
    t_a = stage_lines(dep, load_per_slot)[0].intercept
    lines = cycle_lines(dep, load_per_slot)
    if len(lines) == 1:
        r_star = _peak(lines[0], dep)
        require(r_star is not None, f"the {dep.mode} step time has no interior optimum")
        return RuleResult(float(r_star), lines[0].stage, bps, t_a, load_per_slot)
    candidates = [p for line in lines if (p := _peak(line, dep)) is not None]
    pairs = [(a, b) for i, a in enumerate(lines) for b in lines[i + 1 :]]
    if dep.pipeline.layered:
        pairs += dep.pipeline.regime_switches(layer_lines(dep, load_per_slot))
    for a, b in pairs:
        if (x := _crossing(a, b)) is not None:
            candidates.append(x)
    candidates = sorted({c for c in candidates if c > 0})
    require(bool(candidates), "no positive A/F ratio candidate; check the coefficients")
    cand = np.array(candidates)
    value = weighted_throughput(dep, cand, mean_field_cycle_time(dep, load_per_slot, cand))
    # Prefer the smallest r among (numerically) equal optima: fewer instances, same rate.
    best = float(cand[int(np.flatnonzero(value >= value.max() * (1 - 1e-12))[0])])
    return RuleResult(best, _binding_stage(lines, best), bps, t_a, load_per_slot)


def _binding_stage(lines: list[StageLine], r: float) -> str:
    """The stage on top of the envelope just left of r (the one that set r there)."""
    left = r * (1 - 1e-9)
    values = [line.at(left) for line in lines]
    return lines[int(np.argmax(values))].stage
