"""Validation study: the rules' A/F ratios against the simulated optimum (issue 5).

For every case × workload × B we compute v1's r* (load μ_P + μ_D), the θ-based r*, their
best integers under the mean-field cycle time, the barrier-aware recommendation, and the
simulation-optimal r from a sweep over r with several seeds (common seeds across r).

Two kinds of case:

* **easy** — the simulator runs the very linear model the theory sees, on i.i.d.
  requests: it checks the algebra and the barrier/variance treatment only;
* **honest** — the simulator runs *measured* step-time tables (aiconfigurator-core kernel
  tables, or Vidur's FFN measurements) and replays traces in arrival order, while the
  theory sees only the linear fit of those tables and θ, v of the workload.

The result is a plain JSON-able dict; ``afdplan.report`` turns it into Markdown/HTML.
Memory feasibility is not enforced here (the question is where the throughput optimum
lies, not which B fits).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import joblib
import numpy as np

from afdplan import __version__
from afdplan.bundle import Pipeline
from afdplan.errors import InputError, require
from afdplan.plan import PlanResult, make_plan
from afdplan.sim import SimConfig, kernels, simulate_with_cycles
from afdplan.sim.results import Estimate
from afdplan.sim.sweep import SweepPoint, auto_jobs
from afdplan.timing import LinearStepTimes, StepTimes, TableStepTimes, load_coeffs
from afdplan.workload import EmpiricalWorkload, Workload, parse_workload, read_trace

RULES = ("v1", "theta", "barrier", "curves")
RULE_LABELS = {
    "v1": "v1: μ_P + μ_D, mean field, linear fit",
    "theta": "θ, mean field, linear fit",
    "barrier": "θ + barrier, linear fit",
    "curves": "θ + barrier on the measured curves",
}
MISS_ERROR = 0.05  # a rule "misses" above 5% error …
MISS_REGRET = 0.01  # … or 1% throughput regret

DEFAULT_WORKLOADS = {
    "geometric P100 D100": "geometric:prefill=100,decode_mean=100",
    "geometric P100 D500": "geometric:prefill=100,decode_mean=500",
    "geometric P500 D500": "geometric:prefill=500,decode_mean=500",
    "fixed P1000 D200": "fixed:prefill=1000,decode=200",
    "lognormal heavy-tail": (
        "lognormal:prefill_median=800,prefill_sigma=1.0,prefill_max=32768,"
        "decode_median=100,decode_sigma=1.5,decode_max=8192"
    ),
}
QUICK_WORKLOADS = ("geometric P100 D500", "lognormal heavy-tail")


@dataclass(frozen=True)
class Case:
    """What the theory sees and what the simulator runs."""

    name: str
    description: str
    theory: LinearStepTimes
    sim: StepTimes
    replay: bool  # replay traces in arrival order (parametric laws are always i.i.d.)
    honest: bool


@dataclass(frozen=True)
class Grid:
    batches: tuple[int, ...]
    seeds: int
    requests: int  # per simulation, at least
    min_steps: int  # per simulation, at least
    # … and at least this many mean lifetimes of the request a slot serves at a random step
    # (E[D²]/E[D]): heavy-tailed loads mix slowly and need long runs.
    mixing_lifetimes: float = 25.0


DEFAULT_GRID = Grid(batches=(64, 256), seeds=3, requests=50_000, min_steps=2_000)
# Seconds on two cores: a smoke test of the whole pipeline, not a verdict.
QUICK_GRID = Grid(batches=(64,), seeds=2, requests=4_000, min_steps=400, mixing_lifetimes=1.5)


# ------------------------------------------------------------------- the inputs


def builtin_workloads(quick: bool, traces: list[Path]) -> dict[str, Workload]:
    names = QUICK_WORKLOADS if quick else tuple(DEFAULT_WORKLOADS)
    out: dict[str, Workload] = {name: parse_workload(DEFAULT_WORKLOADS[name]) for name in names}
    for path in traces:
        out[f"trace {path.stem}"] = read_trace(path)
    return out


def builtin_cases(quick: bool) -> tuple[list[Case], list[dict]]:
    """The cases this machine can run, and the ones skipped with the reason."""
    cases = [
        _easy("easy: paper v1 set", "paper-v1-dsv3-910c"),
        _easy("easy: DeepSeek-V3 H200 fit", "deepseek-v3-h200"),
    ]
    skipped: list[dict] = []
    if quick:
        return cases, skipped
    for builder in (_honest_dsv3, _honest_llama, _honest_vidur):
        try:
            cases.append(builder())
        except InputError as exc:
            skipped.append({"case": builder.__doc__, "reason": str(exc)})
    return cases, skipped


def _easy(name: str, coeffs: str) -> Case:
    times = replace(load_coeffs(coeffs), kv_capacity_tokens=None)
    return Case(
        name,
        f"linear {coeffs} for both theory and simulator; i.i.d. requests",
        times,
        times,
        replay=False,
        honest=False,
    )


def _measured_case(name: str, coeffs: str, model: str, system: str, gpus_ffn: int) -> Case:
    from afdplan.calibrate.aiconfig import measured_tables
    from afdplan.calibrate.specs import load_model
    from afdplan.timing import tables_from_frame

    theory = replace(load_coeffs(coeffs), kv_capacity_tokens=None)
    rows = measured_tables(load_model(model), system, "vllm", 1, gpus_ffn).rows
    sim = tables_from_frame(rows, theory, f"aiconfigurator-core {system} {model}")
    return Case(
        name,
        f"theory: linear fit {coeffs}; simulator: measured {system} vLLM kernel tables "
        f"(attention, dense GEMMs, {'MoE EP' if gpus_ffn > 2 else 'FFN TP'}{gpus_ffn}), "
        "linear comm; traces replayed in arrival order",
        theory,
        sim,
        replay=True,
        honest=True,
    )


def _honest_dsv3() -> Case:
    """honest: DeepSeek-V3 H200 measured tables"""
    return _measured_case(
        "honest: DeepSeek-V3 H200 tables", "deepseek-v3-h200", "deepseek-v3", "h200_sxm", 8
    )


def _honest_llama() -> Case:
    """honest: Llama-3-70B H100 measured tables"""
    return _measured_case(
        "honest: Llama-3-70B H100 tables", "llama3-70b-h100", "llama3-70b", "h100_sxm", 2
    )


def _honest_vidur() -> Case:
    """honest: Vidur H100 Llama-2-70B FFN"""
    from afdplan.calibrate.build import combine, fit_table
    from afdplan.calibrate.readers import read_vidur_mlp
    from afdplan.calibrate.roofline import derive
    from afdplan.calibrate.specs import load_hardware, load_model
    from afdplan.data import builtin_path
    from afdplan.timing import tables_from_frame

    path = builtin_path("vidur-h100-llama2-70b")
    base = derive(load_model("llama2-70b"), load_hardware("h100-sxm"), 1, 2).times
    rows = read_vidur_mlp(path, layers=80, tp_attention=1, tp_ffn=2)
    theory = combine(fit_table(rows), base, {}, "vidur-llama2-70b-h100").times
    theory = replace(theory, kv_capacity_tokens=None)
    sim = tables_from_frame(rows, theory, "Vidur H100 Llama-2-70B mlp.csv")
    return Case(
        "honest: Vidur Llama-2-70B H100 FFN",
        "theory: linear fit of Vidur's measured FFN (TP 2) and attention GEMMs + roofline "
        "attention kernel; simulator: the measured curves themselves; traces replayed",
        theory,
        sim,
        replay=True,
        honest=True,
    )


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
