"""Run the validation study: for every case × workload × B, v1's r*, the θ-based r*, their
best integers under the mean-field cycle time, the barrier-aware recommendation, and the
simulation-optimal r from a sweep over r with several seeds (common seeds across r).

The result is a plain JSON-able dict; ``afdplan.report`` turns it into Markdown/HTML.
Memory feasibility is not enforced here (the question is where the throughput optimum
lies, not which B fits).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import joblib
import numpy as np

from afdplan import __version__
from afdplan.bundle import Pipeline
from afdplan.errors import require
from afdplan.plan import PlanResult, make_plan
from afdplan.sim import SimConfig, kernels, simulate_with_cycles
from afdplan.sim.results import Estimate
from afdplan.sim.sweep import auto_jobs
from afdplan.study.cases import MISS_ERROR, MISS_REGRET, RULES, Case, Grid
from afdplan.study.compare import best_ratio, sweep_ratios
from afdplan.timing import StepTimes, TableStepTimes
from afdplan.workload import EmpiricalWorkload, Workload

# ------------------------------------------------------------------- the study


def _sim_task(
    workload: Workload,
    times: StepTimes,
    ratio: int,
    batch: int,
    steps: int,
    seed: int,
    order: str,
    want_cycles: bool,
    pipeline: Pipeline,
) -> dict:
    if order == "replay":
        kernels.preload()  # the study replays many times: pay numba's start-up once
    cfg = SimConfig(
        ratio=ratio,
        batch=batch,
        steps=steps,
        order=order,  # type: ignore[arg-type]
        seed=seed,
        mode=pipeline.kind,
        microbatches=pipeline.microbatches,
        layers=pipeline.layers,
    )
    res, cycles = simulate_with_cycles(workload, times, cfg)
    out = {
        "throughput": res.throughput_per_instance,
        "idle_attention": res.idle_attention,
        "idle_ffn": res.idle_ffn,
        "mean_step_time_s": res.mean_step_time_s,
        "tpot_p50_s": res.tpot_p50_s,
        "tpot_p99_s": res.tpot_p99_s,
        "share_attention_bound": res.share_attention_bound,
        "share_comm_bound": res.share_comm_bound,
        "share_ffn_bound": res.share_ffn_bound,
    }
    if want_cycles:
        counts, edges = np.histogram(cycles, bins=40)
        out["hist"] = {"counts": counts.tolist(), "edges": edges.tolist()}
    return out


def case_pipeline(case: Case, pipeline: tuple[str, int]) -> Pipeline:
    """The pipeline ``(kind, micro-batches)`` with the layer count of the case's model."""
    kind, m = pipeline
    return Pipeline(kind, m, case.theory.layers or 1)


@dataclass
class _Group:
    case: Case
    workload_name: str
    workload: Workload
    batch: int
    plan: PlanResult
    picks: dict[str, int]
    ratios: set[int]
    runs: dict[int, list[dict]]
    hist: dict | None = None

    @property
    def order(self) -> str:
        return (
            "replay" if self.case.replay and isinstance(self.workload, EmpiricalWorkload) else "iid"
        )

    def steps(self, ratio: int, grid: Grid) -> int:
        m = self.workload.moments()
        per_request = m.decode / (ratio * self.batch)
        mixing = grid.mixing_lifetimes * m.residual_decode
        return max(grid.min_steps, math.ceil(grid.requests * per_request), math.ceil(mixing))

    def objective(self) -> dict[int, float]:
        return {
            r: float(np.mean([run["throughput"] for run in runs])) for r, runs in self.runs.items()
        }

    def r_sim(self) -> int:
        return best_ratio(self.objective())

    def band(self) -> tuple[int, int]:
        """The contiguous range of swept r around the optimum that the simulation cannot tell
        from it: paired per-seed throughput differences to the best r whose 95% Student-t
        interval contains zero."""
        best = self.r_sim()
        top = np.array([run["throughput"] for run in self.runs[best]])

        def tied(r: int) -> bool:
            diff = top - np.array([run["throughput"] for run in self.runs[r]])
            half = Estimate.of(list(diff)).half_width if diff.size > 1 else 0.0
            return bool(diff.mean() <= (0.0 if math.isnan(half) else half))

        swept = sorted(self.runs)
        i = j = swept.index(best)
        while i > 0 and tied(swept[i - 1]):
            i -= 1
        while j < len(swept) - 1 and tied(swept[j + 1]):
            j += 1
        return swept[i], swept[j]


def run_validation(
    cases: list[Case],
    workloads: dict[str, Workload],
    grid: Grid,
    n_jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    skipped: list[dict] | None = None,
    seed: int = 0,
    pipeline: tuple[str, int] = ("overlap", 1),
) -> dict:
    """Run the study; returns the raw results as a JSON-able dict.

    ``pipeline`` (kind, micro-batches) runs every case under that pipeline: the theory its
    closed form with the barrier, the simulator its exact recurrence, each case with the
    layer count of its own model.
    """
    require(bool(cases) and bool(workloads), "validation needs at least one case and workload")
    started = time.perf_counter()
    groups = []
    for case in cases:
        for name, wl in workloads.items():
            for b in grid.batches:
                steps_run = case_pipeline(case, pipeline)
                plan = make_plan(wl, case.theory, b, pipeline=steps_run)
                picks = {
                    "v1": plan.r_recommended_v1,
                    "theta": plan.r_recommended_mean_field,
                    "barrier": plan.recommended.point.r,
                    "curves": plan.recommended.point.r,
                }
                if case.sim is not case.theory:
                    curves = make_plan(wl, case.theory, b, pipeline=steps_run, curves=case.sim)
                    picks["curves"] = curves.recommended.point.r
                groups.append(_Group(case, name, wl, b, plan, picks, sweep_ratios(picks), {}))
    done = [0]
    pending = [(g, r) for g in groups for r in sorted(g.ratios)]
    rounds = 0
    while pending:
        rounds += 1
        _run(pending, groups, grid, n_jobs, progress, done, seed)
        pending = []
        for g in groups:
            r_sim = g.r_sim()
            need = {1, max(1, round(r_sim / 2)), 2 * r_sim}
            if r_sim == max(g.runs):  # optimum at the edge: look further right
                need |= sweep_ratios({"edge": r_sim + 1, "far": 2 * r_sim})
            pending += [(g, r) for r in sorted(need - set(g.runs))]
        if rounds > 4:
            break
    results = [_summarise(g) for g in groups]
    return {
        "meta": {
            "afdplan": __version__,
            "grid": {
                "batches": list(grid.batches),
                "seeds": grid.seeds,
                "requests": grid.requests,
                "min_steps": grid.min_steps,
                "first_seed": seed,
            },
            "pipeline": pipeline[0],
            "microbatches": pipeline[1],
            "runtime_s": time.perf_counter() - started,
            "simulations": done[0],
            "miss_error": MISS_ERROR,
            "miss_regret": MISS_REGRET,
        },
        "cases": [
            {
                "name": c.name,
                "description": c.description,
                "honest": c.honest,
                "theory": c.theory.name,
                "simulator": c.sim.name,
            }
            for c in cases
        ],
        "skipped": skipped or [],
        "workloads": [_workload_row(name, wl) for name, wl in workloads.items()],
        "results": results,
        "summary": summarise(results),
    }


def _run(
    pending, groups, grid: Grid, n_jobs: int, progress, done: list[int], first_seed: int
) -> None:
    tasks = []
    for g, r in pending:
        for seed in range(first_seed, first_seed + grid.seeds):
            want = r == g.picks["barrier"] and seed == first_seed and g.hist is None
            tasks.append(
                (
                    g,
                    r,
                    want,
                    (
                        g.workload,
                        g.case.sim,
                        r,
                        g.batch,
                        g.steps(r, grid),
                        seed,
                        g.order,
                        want,
                        g.plan.deployment.pipeline,
                    ),
                )
            )
    total = done[0] + len(tasks)
    if n_jobs is None:
        # requests per task: its steps × slots / E[D]
        work = sum(args[4] * args[2] * args[3] / args[0].moments().decode for *_, args in tasks)
        n_jobs = auto_jobs(work, len(tasks))
    jobs = (joblib.delayed(_sim_task)(*args) for *_, args in tasks)
    with joblib.parallel_config(n_jobs=n_jobs):
        for (g, r, want, _), out in zip(
            tasks, joblib.Parallel(return_as="generator")(jobs), strict=True
        ):
            if want:
                g.hist = out.pop("hist")
            g.runs.setdefault(r, []).append(out)
            done[0] += 1
            if progress is not None:
                progress(done[0], total)


def _workload_row(name: str, wl: Workload) -> dict:
    s = wl.stats()
    return {
        "name": name,
        "description": wl.describe(),
        "theta": s.theta,
        "v": s.v,
        "mu_prefill": s.mu_prefill,
        "mu_decode": s.mu_decode,
        "load_v1": s.load_v1,
        "theta_se": s.theta_se,
        "trace": isinstance(wl, EmpiricalWorkload),
    }


def _summarise(g: _Group) -> dict:
    obj = g.objective()
    r_sim = g.r_sim()
    best = obj[r_sim]
    curve = []
    for r in sorted(g.runs):
        runs = g.runs[r]
        est = Estimate.of([run["throughput"] for run in runs])
        row = {"r": r, "throughput": est.mean, "throughput_ci95": est.half_width}
        for key in runs[0]:
            if key != "throughput":
                row[key] = float(np.mean([run[key] for run in runs]))
        curve.append(row)
    by_r = {row["r"]: row for row in curve}
    rule = g.plan.rule
    errors = {k: abs(v - r_sim) / r_sim for k, v in g.picks.items()}
    errors["v1_continuous"] = abs(g.plan.rule_v1.r_star - r_sim) / r_sim
    errors["theta_continuous"] = abs(rule.r_star - r_sim) / r_sim
    lo, hi = g.band()
    band_errors = {k: max(lo - v, v - hi, 0) / r_sim for k, v in g.picks.items()}
    regret = {k: 1.0 - obj[v] / best for k, v in g.picks.items()}
    baselines = {}
    for label, r in (
        ("r = 1", 1),
        ("half optimum", max(1, round(r_sim / 2))),
        ("recommended", g.picks["barrier"]),
        ("double optimum", 2 * r_sim),
    ):
        row = by_r[r]
        baselines[label] = {
            "r": r,
            "throughput_ratio": row["throughput"] / best,
            "idle_attention": row["idle_attention"],
            "idle_ffn": row["idle_ffn"],
        }
    point = next(row.point for row in g.plan.rows if row.point.r == g.picks["barrier"])
    out = {
        "case": g.case.name,
        "honest": g.case.honest,
        "workload": g.workload_name,
        "batch": g.batch,
        "order": g.order,
        "regime": rule.regime,
        "theta": g.plan.stats.theta,
        "load_v1": g.plan.stats.load_v1,
        "r_star_v1": g.plan.rule_v1.r_star,
        "r_star": rule.r_star,
        "r_v1": g.picks["v1"],
        "r_theta": g.picks["theta"],
        "r_barrier": g.picks["barrier"],
        "r_curves": g.picks["curves"],
        "r_sim": r_sim,
        "r_sim_band": [lo, hi],
        "errors": errors,
        "band_errors": band_errors,
        "regret": regret,
        "baselines": baselines,
        "predicted_step_time_s": point.cycle_time,
        "simulated_step_time_s": by_r[g.picks["barrier"]]["mean_step_time_s"],
        "curve": curve,
        "step_hist": g.hist,
    }
    out["diagnosis"] = diagnose(out, g)
    return out


def diagnose(result: dict, g: _Group) -> str | None:
    """Why the recommendation misses the simulated optimum, if it does."""
    if result["band_errors"]["barrier"] == 0 and result["regret"]["barrier"] <= MISS_REGRET:
        return None
    r_sim = result["r_sim"]
    sim_row = next(row for row in result["curve"] if row["r"] == r_sim)
    point = (
        make_plan(
            g.workload,
            g.case.theory,
            g.batch,
            r_max=max(r_sim, 1),
            pipeline=g.plan.deployment.pipeline,
        )
        .rows[r_sim - 1]
        .point
    )
    step_err = point.cycle_time / sim_row["mean_step_time_s"] - 1
    shares = ", ".join(
        f"{s} {sim_row[f'share_{k}_bound']:.0%}"
        for s, k in (("A", "attention"), ("C", "comm"), ("F", "ffn"))
    )
    lo, hi = result["r_sim_band"]
    text = (
        f"the simulation cannot tell r in [{lo}, {hi}] apart; the recommendation r = "
        f"{result['r_barrier']} gets {1 - result['regret']['barrier']:.1%} of the best "
        f"throughput. At the simulated optimum r = {r_sim} the linear model's expected step "
        f"time is {step_err:+.1%} off the simulation; theory calls it {point.binding}-bound, the "
        f"simulation's steps are bound by {shares}"
    )
    sim = g.case.sim
    if isinstance(sim, TableStepTimes):
        theory = g.case.theory
        n = r_sim * g.batch
        parts = []
        if sim.ffn is not None:
            ffn_err = float(theory.ffn_time(n)) / float(sim.ffn_time(n)) - 1
            parts.append(f"the FFN fit is {ffn_err:+.1%} off the measured curve at {n} tokens")
        load = g.batch * g.plan.stats.theta
        att_err = (
            float(theory.attention_time(g.batch, load)) / float(sim.attention_time(g.batch, load))
            - 1
        )
        parts.append(f"the attention fit is {att_err:+.1%} off at B = {g.batch}, T = B·θ")
        text += "; " + "; ".join(parts)
    return text


def summarise(results: list[dict]) -> list[dict]:
    """Per case kind (easy/honest/all) and rule: error and regret statistics."""
    rows = []
    kinds = [
        ("easy", [r for r in results if not r["honest"]]),
        ("honest", [r for r in results if r["honest"]]),
        ("all", results),
    ]
    for kind, subset in kinds:
        if not subset:
            continue
        for rule in RULES:
            err = np.array([r["errors"][rule] for r in subset])
            band = np.array([r["band_errors"][rule] for r in subset])
            reg = np.array([r["regret"][rule] for r in subset])
            rows.append(
                {
                    "kind": kind,
                    "rule": rule,
                    "n": len(subset),
                    "max_error": float(err.max()),
                    "mean_error": float(err.mean()),
                    "within_10pct": float((err <= 0.10).mean()),
                    "within_5pct": float((err <= 0.05).mean()),
                    "in_band": float((band == 0).mean()),
                    "max_band_error": float(band.max()),
                    "max_regret": float(reg.max()),
                    "mean_regret": float(reg.mean()),
                }
            )
    return rows


# ------------------------------------------------------------ sweeps vs theory
