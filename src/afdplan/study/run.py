"""Run the validation study: for every case × workload × B × pipeline, v1's r*, the θ-based
r*, their best integers under the mean-field cycle time, the barrier-aware recommendation,
and the simulation-optimal r from a sweep over r with several seeds (common seeds across r).

The simulations go through :func:`afdplan.sim.sweep.run_tasks`, like ``afdplan sweep``'s,
so the study runs on any joblib backend. A (case, workload, B) whose B the KV cache cannot
hold (``afdplan plan``'s check: B·θ + 3σ above the case's capacity) is not simulated or
scored; it is listed under ``infeasible`` with the reason.

The result is a plain JSON-able dict; ``afdplan.report`` turns it into Markdown/HTML.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from afdplan import __version__
from afdplan.bundle import Pipeline
from afdplan.errors import InputError, require
from afdplan.plan import PlanResult, make_plan, resolve_batch
from afdplan.sim import SimConfig, SimResult
from afdplan.sim.results import Estimate
from afdplan.sim.sweep import SimTask, run_tasks
from afdplan.study.cases import MISS_ERROR, MISS_REGRET, RULES, Case, Grid
from afdplan.study.compare import best_ratio, sweep_ratios
from afdplan.timing import TableStepTimes, gpus_per_instance
from afdplan.workload import EmpiricalWorkload, Workload

OBJECTIVES = ("instance", "gpu")
# What each simulation contributes to the study's curves (means over seeds).
_METRICS = (
    "throughput_per_instance",
    "throughput_per_gpu",
    "idle_attention",
    "idle_ffn",
    "mean_step_time_s",
    "tpot_p50_s",
    "tpot_p99_s",
    "share_attention_bound",
    "share_comm_bound",
    "share_ffn_bound",
)
HIST_BINS = 40

# ------------------------------------------------------------------- the study


def _metrics(result: SimResult, objective: str) -> dict:
    out = {key: float(getattr(result, key)) for key in _METRICS}
    out["throughput"] = out[f"throughput_per_{objective}"]
    out["closed_form_gap"] = result.closed_form_gap
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
    objective: str
    hist: dict | None = None

    @property
    def pipeline(self) -> Pipeline:
        return self.plan.deployment.pipeline

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

    def task(self, ratio: int, grid: Grid, seed: int, histogram: bool) -> SimTask:
        pipe = self.pipeline
        config = SimConfig(
            ratio=ratio,
            batch=self.batch,
            steps=self.steps(ratio, grid),
            order=self.order,  # type: ignore[arg-type]
            seed=seed,
            mode=pipe.kind,
            microbatches=pipe.microbatches,
            layers=pipe.layers,
        )
        return SimTask(self.workload, self.case.sim, config, HIST_BINS if histogram else 0)

    def objective_by_r(self) -> dict[int, float]:
        return {
            r: float(np.mean([run["throughput"] for run in runs])) for r, runs in self.runs.items()
        }

    def r_sim(self) -> int:
        return best_ratio(self.objective_by_r())

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


def _group(
    case: Case, name: str, wl: Workload, batch: int, pipeline: Pipeline, objective: str
) -> _Group:
    """The theory's picks for one configuration."""
    plan = make_plan(wl, case.theory, batch, pipeline=pipeline, objective=objective)
    picks = {
        "v1": plan.r_recommended_v1,
        "theta": plan.r_recommended_mean_field,
        "barrier": plan.recommended.point.r,
        "curves": plan.recommended.point.r,
    }
    if case.sim is not case.theory:
        curves = make_plan(
            wl, case.theory, batch, pipeline=pipeline, objective=objective, curves=case.sim
        )
        picks["curves"] = curves.recommended.point.r
    return _Group(case, name, wl, batch, plan, picks, sweep_ratios(picks), {}, objective)


def run_validation(
    cases: list[Case],
    workloads: dict[str, Workload],
    grid: Grid,
    n_jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    skipped: list[dict] | None = None,
    seed: int = 0,
    pipelines: Sequence[tuple[str, int]] = (("overlap", 1),),
    objective: str = "instance",
    backend: str | None = None,
) -> dict:
    """Run the study; returns the raw results as a JSON-able dict.

    Every case runs under each of ``pipelines`` (kind, micro-batches): the theory its closed
    form with the barrier, the simulator its exact recurrence, each case with the layer count
    of its own model. ``objective`` is what both sides maximise: tokens/s per instance (the
    paper's) or per GPU (weights g_A, g_F of the case's step times). ``n_jobs``/``backend``
    as for :func:`afdplan.sim.sweep.run_tasks`.
    """
    require(bool(cases) and bool(workloads), "validation needs at least one case and workload")
    require(bool(pipelines), "validation needs at least one pipeline")
    require(objective in OBJECTIVES, f"objective must be one of {', '.join(OBJECTIVES)}")
    started = time.perf_counter()
    groups: list[_Group] = []
    infeasible: list[dict] = []
    for case in cases:
        for kind, m in pipelines:
            steps_run = case_pipeline(case, (kind, m))
            for name, wl in workloads.items():
                for b in grid.batches:
                    try:  # plan's memory check: B·θ + 3σ within the KV capacity
                        resolve_batch(case.theory, wl.stats(), b)
                    except InputError as exc:  # not simulated, not scored
                        infeasible.append(
                            {
                                "case": case.name,
                                "workload": name,
                                "batch": b,
                                "pipeline": kind,
                                "microbatches": m,
                                "reason": str(exc),
                            }
                        )
                        continue
                    groups.append(_group(case, name, wl, b, steps_run, objective))
    require(bool(groups), "no configuration of the study fits the KV cache")
    done = [0]
    pending = [(g, r) for g in groups for r in sorted(g.ratios)]
    rounds = 0
    while pending:
        rounds += 1
        _run(pending, grid, n_jobs, backend, progress, done, seed)
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
            "pipeline": pipelines[0][0],
            "microbatches": pipelines[0][1],
            "pipelines": [{"pipeline": k, "microbatches": m} for k, m in pipelines],
            "objective": objective,
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
                "gpus_ffn": gpus_per_instance(c.theory)[1],
                "kv_capacity_tokens": c.theory.kv_capacity_tokens,
            }
            for c in cases
        ],
        "skipped": skipped or [],
        "infeasible": infeasible,
        "workloads": [_workload_row(name, wl) for name, wl in workloads.items()],
        "results": results,
        "summary": summarise(results),
        "deployments": deployment_table(results),
    }


def _run(
    pending: list[tuple[_Group, int]],
    grid: Grid,
    n_jobs: int | None,
    backend: str | None,
    progress: Callable[[int, int], None] | None,
    done: list[int],
    first_seed: int,
) -> None:
    owners: list[tuple[_Group, int, bool]] = []
    tasks: list[SimTask] = []
    for g, r in pending:
        for seed in range(first_seed, first_seed + grid.seeds):
            want = r == g.picks["barrier"] and seed == first_seed and g.hist is None
            owners.append((g, r, want))
            tasks.append(g.task(r, grid, seed, want))
    before, total = done[0], done[0] + len(tasks)

    def tick(finished: int, _: int) -> None:
        done[0] = before + finished
        if progress is not None:
            progress(done[0], total)

    for (g, r, want), output in zip(owners, run_tasks(tasks, n_jobs, backend, tick), strict=True):
        if want and output.histogram is not None:
            counts, edges = output.histogram
            g.hist = {"counts": counts, "edges": edges}
        g.runs.setdefault(r, []).append(_metrics(output.result, g.objective))


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
    obj = g.objective_by_r()
    r_sim = g.r_sim()
    best = obj[r_sim]
    curve = []
    for r in sorted(g.runs):
        runs = g.runs[r]
        est = Estimate.of([run["throughput"] for run in runs])
        row = {"r": r, "throughput": est.mean, "throughput_ci95": est.half_width}
        for key, value in runs[0].items():
            if key != "throughput" and value is not None:
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
    at_pick = by_r[g.picks["barrier"]]
    out = {
        "case": g.case.name,
        "honest": g.case.honest,
        "workload": g.workload_name,
        "batch": g.batch,
        "pipeline": g.pipeline.kind,
        "microbatches": g.pipeline.microbatches,
        "gpus_ffn": gpus_per_instance(g.case.theory)[1],
        "objective": g.objective,
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
        "simulated_step_time_s": at_pick["mean_step_time_s"],
        "binding": point.binding,
        "predicted_idle_ffn": point.idle_ffn,
        "simulated_idle_ffn": at_pick["idle_ffn"],
        # ping-pong: the closed form's mean step time over the exact recurrence's, minus one
        "closed_form_gap": at_pick.get("closed_form_gap"),
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
            pipeline=g.pipeline,
            objective=g.objective,
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
        n = r_sim * g.batch / g.pipeline.microbatches  # the FFN's tokens per call
        parts = []
        if sim.ffn is not None:
            ffn_err = float(theory.ffn_time(n)) / float(sim.ffn_time(n)) - 1
            parts.append(f"the FFN fit is {ffn_err:+.1%} off the measured curve at {n:.0f} tokens")
        load = g.batch * g.plan.stats.theta
        att_err = (
            float(theory.attention_time(g.batch, load)) / float(sim.attention_time(g.batch, load))
            - 1
        )
        parts.append(f"the attention fit is {att_err:+.1%} off at B = {g.batch}, T = B·θ")
        text += "; " + "; ".join(parts)
    return text


def deployment_table(results: list[dict]) -> list[dict]:
    """How r* moves with the pipeline and the FFN group: per (case, workload, B, FFN GPUs,
    pipeline) the theory's picks, the simulated optimum and its band, the throughput lost
    by following the pick, the binding stage, the FFN's idle share, and how far the closed
    form's step time is from the exact recurrence's."""
    rows = []
    for res in results:
        lo, hi = res["r_sim_band"]
        at_optimum = next(row for row in res["curve"] if row["r"] == res["r_sim"])
        rows.append(
            {
                "case": res["case"],
                "honest": res["honest"],
                "workload": res["workload"],
                "batch": res["batch"],
                "gpus_ffn": res["gpus_ffn"],
                "pipeline": res["pipeline"],
                "microbatches": res["microbatches"],
                "r_barrier": res["r_barrier"],
                "r_curves": res["r_curves"],
                "r_sim": res["r_sim"],
                "r_sim_band": [lo, hi],
                # the simulated objective there (tokens per time per instance or per GPU)
                "best_objective": at_optimum["throughput"],
                "regret_barrier": res["regret"]["barrier"],
                "regret_curves": res["regret"]["curves"],
                "binding": res["binding"],
                "predicted_idle_ffn": res["predicted_idle_ffn"],
                "simulated_idle_ffn": res["simulated_idle_ffn"],
                "step_time_error": res["predicted_step_time_s"] / res["simulated_step_time_s"] - 1,
                "closed_form_gap": res["closed_form_gap"],
            }
        )
    return sorted(
        rows,
        key=lambda row: (
            row["honest"],
            row["gpus_ffn"],
            row["case"],
            row["workload"],
            row["batch"],
            row["microbatches"],
            row["pipeline"],
        ),
    )


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
