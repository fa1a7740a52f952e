"""What the validation study covers: its cases (step-time sources), workloads, grids and
the rules it scores (DESIGN.md §7).

Two kinds of case:

* **easy** — the simulator runs the very linear model the theory sees, on i.i.d.
  requests: it checks the algebra and the barrier/variance treatment only;
* **honest** — the simulator runs *measured* step-time tables (aiconfigurator-core kernel
  tables, or Vidur's FFN measurements) and replays traces in arrival order, while the
  theory sees only the linear fit of those tables and θ, v of the workload.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from afdplan.errors import InputError, require
from afdplan.timing import LinearStepTimes, StepTimes, load_coeffs
from afdplan.workload import Workload, parse_workload, read_trace

RULES = ("v1", "theta", "barrier", "curves")
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
# The deployment study (``validate --grid deployment``): how r* moves with the pipeline and
# the FFN group, on DeepSeek-V3 FP8 on H200 with the expert-parallel group measured by
# aiconfigurator-core at each size, per-GPU objective.
DEPLOYMENT_PIPELINES = (("serial", 1), ("pingpong", 2), ("pingpong", 3))
DEPLOYMENT_FFN_GROUPS = (8, 16)
DEPLOYMENT_TRACE = "azure-conv-2023"  # real traffic; --trace replaces it
DEPLOYMENT_QUICK_WORKLOADS = ("geometric P100 D500",)  # the quick grid runs no trace


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
# Each simulation runs the exact recurrence (L = 61 layers, m micro-batches), so fewer
# requests per run than the paper grid: the optimum bands are wider, and reported.
DEPLOYMENT_GRID = Grid(
    batches=(64, 256), seeds=2, requests=8_000, min_steps=500, mixing_lifetimes=3.0
)


# ------------------------------------------------------------------- the inputs


@dataclass(frozen=True)
class Study:
    """Everything one run of the study needs: what ``afdplan validate`` assembles."""

    cases: list[Case]
    skipped: list[dict]  # cases this machine cannot run, with the reason
    workloads: dict[str, Workload]
    pipelines: tuple[tuple[str, int], ...]
    grid: Grid
    objective: str


def build_study(
    deployment: bool,
    quick: bool,
    traces: list[Path] | None,
    pipeline: tuple[str, int] | None = None,
    objective: str | None = None,
) -> Study:
    """The paper grid (under ``pipeline``, default overlap; per instance) or the deployment
    grid (serial and ping-pong m = 2, 3 with EP8/EP16 groups; per GPU). ``traces`` None:
    the shipped traces the grid uses (none with ``quick``)."""
    from afdplan.data import builtin_names, resolve_input

    require(
        not (deployment and pipeline is not None),
        "--grid deployment runs serial and ping-pong m = 2, 3 itself; "
        "--pipeline/--microbatches choose the paper grid's pipeline",
    )
    if traces is None:
        shipped = [DEPLOYMENT_TRACE] if deployment else builtin_names("trace")
        traces = [] if quick else [resolve_input(n, "trace") for n in shipped]
    if deployment:
        groups = DEPLOYMENT_FFN_GROUPS[:1] if quick else DEPLOYMENT_FFN_GROUPS
        cases, skipped = deployment_cases(groups, quick)
        require(bool(cases), "; ".join(dict.fromkeys(s["reason"] for s in skipped)))
        pipelines = DEPLOYMENT_PIPELINES[:2] if quick else DEPLOYMENT_PIPELINES
        workloads = builtin_workloads(quick, traces, DEPLOYMENT_QUICK_WORKLOADS if quick else ())
        grid = QUICK_GRID if quick else DEPLOYMENT_GRID
    else:
        cases, skipped = builtin_cases(quick)
        pipelines = (pipeline or ("overlap", 1),)
        workloads = builtin_workloads(quick, traces)
        grid = QUICK_GRID if quick else DEFAULT_GRID
    goal = objective or ("gpu" if deployment else "instance")
    return Study(cases, skipped, workloads, tuple(pipelines), grid, goal)


def builtin_workloads(
    quick: bool, traces: list[Path], names: tuple[str, ...] | None = None
) -> dict[str, Workload]:
    """The parametric workloads ``names`` (default: the paper grid's, or its quick subset)
    and the traces."""
    if names is None:
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


def deployment_cases(gpus_ffn: tuple[int, ...], quick: bool) -> tuple[list[Case], list[dict]]:
    """An easy and an honest DeepSeek-V3/H200 case per FFN group size (the honest ones only
    without ``quick``): the shipped set read at that expert-parallel size from the
    aiconfigurator-core vLLM tables it was built from, as ``plan --gpus-ffn`` reads it —
    a group beyond one node (16 H200s) also pays the expert all-to-all over the network.
    The A↔F transfers are Vidur's NVLink profile at every size.
    """
    cases: list[Case] = []
    skipped: list[dict] = []
    for g in gpus_ffn:
        try:
            theory, sim = _calibrated_dsv3(g)
        except InputError as exc:
            skipped.append({"case": f"DeepSeek-V3 H200 EP{g}", "reason": str(exc)})
            continue
        cases.append(
            Case(
                f"easy: DeepSeek-V3 H200 EP{g} fit",
                f"linear fit of the measured EP{g} tables for both theory and simulator; "
                "i.i.d. requests",
                theory,
                theory,
                replay=False,
                honest=False,
            )
        )
        if not quick:
            cases.append(
                Case(
                    f"honest: DeepSeek-V3 H200 EP{g} tables",
                    f"theory: linear fit; simulator: aiconfigurator-core h200_sxm vLLM tables "
                    f"(MLA attention, MoE EP{g}"
                    + (", + expert all-to-all between nodes" if g > 8 else "")
                    + "), linear comm; traces replayed in arrival order",
                    theory,
                    sim,
                    replay=True,
                    honest=True,
                )
            )
    return cases, skipped


def _calibrated_dsv3(gpus_ffn: int) -> tuple[LinearStepTimes, StepTimes]:
    """The shipped DeepSeek-V3/H200 set read at FFN group ``gpus_ffn`` exactly as
    ``afdplan plan --gpus-ffn`` reads it (its fit and its measured curves)."""
    from afdplan.calibrate.resolve import resolve_step_times, set_curves

    linear, times = resolve_step_times("deepseek-v3-h200", None, None, (None, gpus_ffn))
    if times is linear:  # the set's own size: its shipped curves
        times = set_curves(linear)
    require(times is not None, "internal: deepseek-v3-h200 ships no curves")
    return linear, times


def _easy(name: str, coeffs: str) -> Case:
    times = load_coeffs(coeffs)
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

    theory = load_coeffs(coeffs)
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
