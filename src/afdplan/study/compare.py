"""The simulated optimum r of a sweep against the theory's pick (``afdplan sweep`` and the
study): ties, the swept ratios, and the regret of a pick."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from afdplan.plan import make_plan
from afdplan.sim.sweep import SweepPoint
from afdplan.timing import LinearStepTimes, StepTimes
from afdplan.workload import Workload


def best_ratio(objective: dict[int, float]) -> int:
    """The r with the highest simulated objective; the smallest r among (numerical) ties."""
    best = max(objective.values())
    return min(r for r, v in objective.items() if v >= best * (1 - 1e-12))


def sweep_ratios(picks: dict[str, int]) -> set[int]:
    """r to simulate: every integer up to 20 around the picks, then ~5% apart up to 1.5×."""
    low, top = min(picks.values()), max(picks.values())
    lo, hi = max(1, low // 2), math.ceil(1.5 * top) + 1
    ratios = {1} | set(range(lo, min(hi, 20) + 1))
    if hi > 20:
        ratios |= {
            round(x)
            for x in np.geomspace(20, hi, math.ceil(math.log(hi / 20) / math.log(1.05)) + 1)
        }
    for p in picks.values():
        ratios |= {max(1, p - 1), p, p + 1}
    return ratios


@dataclass(frozen=True)
class SweepOptimum:
    """The simulated best r for one (workload, B) against the theory's pick."""

    workload: str
    batch: int
    r_sim_opt: int
    r_theory: int
    throughput_sim_opt: float  # weighted objective at r_sim_opt (simulated mean)
    throughput_at_theory: float | None  # simulated objective at r_theory, if swept

    @property
    def rel_error(self) -> float:
        """|r_theory − r_sim| / r_sim."""
        return abs(self.r_theory - self.r_sim_opt) / self.r_sim_opt

    @property
    def regret(self) -> float | None:
        """1 − Θ(r_theory)/Θ(r_sim): throughput lost by following the theory."""
        if self.throughput_at_theory is None:
            return None
        return 1.0 - self.throughput_at_theory / self.throughput_sim_opt


def simulated_optimum(
    points: list[SweepPoint], w_attention: float = 1.0, w_ffn: float = 1.0
) -> tuple[int, dict[int, float]]:
    """(argmax r, objective by r) for the points of one (workload, B); ties → smaller r."""
    objective = {p.ratio: p.weighted_throughput(w_attention, w_ffn).mean for p in points}
    return best_ratio(objective), objective


def compare_sweep(
    points: list[SweepPoint],
    workloads: dict[str, Workload],
    linear: LinearStepTimes,
    pipeline,
    w_attention: float,
    w_ffn: float,
    curves: StepTimes | None = None,
    objective: str = "custom",
) -> dict:
    """Rows per (workload, B, r) and, per (workload, B), the simulated vs theory optimum.

    The theory's pick uses the measured ``curves`` when the sweep ran on them, and its
    search over r is not bounded by the swept range.
    """
    rows, optima = [], []
    groups: dict[tuple[str, int], list[SweepPoint]] = {}
    for p in points:
        groups.setdefault((p.workload, p.batch), []).append(p)
        tp = p.estimate("throughput_per_instance")
        rows.append(
            {
                "workload": p.workload,
                "batch": p.batch,
                "r": p.ratio,
                "seeds": len(p.runs),
                "throughput_per_instance": tp.mean,
                "throughput_ci95": tp.half_width,
                "throughput_per_weight": p.weighted_throughput(w_attention, w_ffn).mean,
                "throughput_per_gpu": p.estimate("throughput_per_gpu").mean,
                "pipeline": p.runs[0].mode,
                "microbatches": p.runs[0].microbatches,
                "objective": objective,
                "mean_step_time_s": p.estimate("mean_step_time_s").mean,
                "idle_attention": p.estimate("idle_attention").mean,
                "idle_ffn": p.estimate("idle_ffn").mean,
                "tpot_p99_s": p.estimate("tpot_p99_s").mean,
            }
        )
    for (name, b), group in groups.items():
        r_sim, objective = simulated_optimum(group, w_attention, w_ffn)
        planned = make_plan(
            workloads[name],
            replace(linear, kv_capacity_tokens=None),
            b,
            pipeline=pipeline,
            w_attention=w_attention,
            w_ffn=w_ffn,
            curves=curves,
        )
        opt = SweepOptimum(
            name,
            b,
            r_sim,
            planned.recommended.point.r,
            objective[r_sim],
            objective.get(planned.recommended.point.r),
        )
        optima.append(
            {
                "workload": name,
                "batch": b,
                "r_sim_opt": opt.r_sim_opt,
                "r_theory": opt.r_theory,
                "r_star": planned.rule.r_star,
                "r_star_v1": planned.rule_v1.r_star,
                "regime": planned.rule.regime,
                "rel_error": opt.rel_error,
                "regret": opt.regret,
            }
        )
    return {
        "rows": rows,
        "optima": optima,
        "r_sim_opt": {f"{o['workload']}@B={o['batch']}": o["r_sim_opt"] for o in optima},
        "r_theory": {f"{o['workload']}@B={o['batch']}": o["r_theory"] for o in optima},
    }
