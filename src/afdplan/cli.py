"""The ``afdplan`` command line: the only module that prints.

Every bad input ends as one ``error: ...`` line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from afdplan.errors import InputError
from afdplan.plan import DEFAULT_WORKLOAD, PlanResult, make_plan
from afdplan.theory import MODES
from afdplan.timing import (
    COMM_SCOPES,
    DEFAULT_COEFFS,
    LinearStepTimes,
    builtin_coeff_names,
    load_coeffs,
)
from afdplan.workload import Workload, parse_workload, read_trace

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Size Attention–FFN disaggregated (AFD) LLM decoding: A/F ratio, batch, throughput.",
)
out = Console()
err = Console(stderr=True)

# ------------------------------------------------------------------ shared options

TraceOpt = Annotated[
    Path | None, typer.Option("--trace", help="Request trace: CSV, JSONL or Parquet.")
]
WorkloadOpt = Annotated[
    str | None,
    typer.Option(
        "--workload",
        help="Workload spec, e.g. geometric:prefill=512,decode_mean=256 (see docs).",
    ),
]
PromptColOpt = Annotated[
    str | None, typer.Option("--prompt-col", help="Trace column with prompt lengths.")
]
DecodeColOpt = Annotated[
    str | None, typer.Option("--decode-col", help="Trace column with decode lengths.")
]
DropInvalidOpt = Annotated[
    bool,
    typer.Option("--drop-invalid", help="Drop trace rows with D < 1 or P < 0 (counted)."),
]
CoeffsOpt = Annotated[
    str,
    typer.Option(
        "--coeffs", help=f"Coefficients file (JSON/TOML) or built-in set name [{DEFAULT_COEFFS}]."
    ),
]
ModeOpt = Annotated[str, typer.Option("--mode", help=f"Pipelining: {' | '.join(MODES)}.")]
CommOpt = Annotated[
    str | None,
    typer.Option(
        "--comm", help=f"Communication scope: {' | '.join(COMM_SCOPES)} (default: file's)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
WAttOpt = Annotated[
    float, typer.Option("--w-attention", help="Weight (GPUs or cost) of one Attention instance.")
]
WFfnOpt = Annotated[
    float, typer.Option("--w-ffn", help="Weight (GPUs or cost) of the FFN instance.")
]


def load_workload(
    trace: Path | None,
    workload: str | None,
    prompt_col: str | None = None,
    decode_col: str | None = None,
    drop_invalid: bool = False,
) -> Workload:
    """The workload from ``--trace`` or ``--workload`` (not both), else the default."""
    if trace is not None and workload is not None:
        raise InputError("give either --trace or --workload, not both")
    if trace is not None:
        return read_trace(trace, prompt_col, decode_col, drop_invalid)
    return parse_workload(workload or DEFAULT_WORKLOAD)


def load_times(coeffs: str, comm: str | None) -> LinearStepTimes:
    times = load_coeffs(coeffs)
    if comm is not None:
        comm = comm.replace("-", "_")
        if comm not in COMM_SCOPES:
            raise InputError(f"--comm must be one of {', '.join(COMM_SCOPES)}, got {comm!r}")
        times = times.with_comm_scope(comm)
    return times


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: object) -> object:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()  # type: ignore[union-attr]
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


STAGE_LETTER = {"attention": "A", "communication": "C", "ffn": "F", "serial": "A+C+F"}


def fmt_time(value: float, unit: str) -> str:
    """A time in ms when the unit is seconds, else in the set's own unit."""
    return f"{value * 1e3:.3f}" if unit == "s" else f"{value:.4g}"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.4g}"


# ------------------------------------------------------------------------ commands


@app.command()
def plan(
    trace: TraceOpt = None,
    workload: WorkloadOpt = None,
    coeffs: CoeffsOpt = DEFAULT_COEFFS,
    batch: Annotated[
        int | None,
        typer.Option("--batch", "-B", help="Sequences per Attention worker [largest that fits]."),
    ] = None,
    r_max: Annotated[int | None, typer.Option("--r-max", help="Largest r to evaluate.")] = None,
    mode: ModeOpt = "overlap",
    comm: CommOpt = None,
    w_attention: WAttOpt = 1.0,
    w_ffn: WFfnOpt = 1.0,
    prompt_col: PromptColOpt = None,
    decode_col: DecodeColOpt = None,
    drop_invalid: DropInvalidOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Recommend the A/F ratio r for a workload, step-time model and batch B."""
    wl = load_workload(trace, workload, prompt_col, decode_col, drop_invalid)
    result = make_plan(
        wl,
        load_times(coeffs, comm),
        batch,
        mode=mode,
        r_max=r_max,
        w_attention=w_attention,
        w_ffn=w_ffn,
    )
    if as_json:
        print_json(result.to_dict())
    else:
        render_plan(result)


def render_plan(result: PlanResult) -> None:
    t, d, s = result.times, result.deployment, result.stats
    unit = t.time_unit
    out.print(f"[bold]Workload[/bold]  {result.workload}")
    se = f" ± {1.96 * s.theta_se:.1f} (95%)" if s.theta_se else ""
    out.print(
        f"  θ = {s.theta:,.1f} tokens/slot{se}   √v = {s.v**0.5:,.1f}   "
        f"μ_P + μ_D = {s.load_v1:,.1f} (v1)   μ_P = {s.mu_prefill:,.1f}   μ_D = {s.mu_decode:,.1f}"
    )
    cap = (
        f"   KV capacity {t.kv_capacity_tokens:,} tokens → B ≤ {result.max_feasible_batch}"
        if (t.kv_capacity_tokens)
        else ""
    )
    out.print(
        f"[bold]Deployment[/bold]  coeffs {t.name}   B = {d.batch}   mode {d.mode}   "
        f"comm {t.comm_scope}   weights A:F = {d.w_attention:g}:{d.w_ffn:g}{cap}"
    )
    if unit != "s":
        out.print(f"  times are in the set's own unit u = {unit!r}", highlight=False)
    time_head = "ms" if unit == "s" else "u"
    rate_head = "tok/s" if unit == "s" else "tok/u"
    table = Table(
        title="Barrier-aware prediction per A/F ratio r (★ = recommended)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    heads = (
        "r",
        escape(f"E[τ] {time_head}"),
        f"τ̄ {time_head}",
        f"{rate_head}/inst",
        f"{rate_head}/GPU",
        "idle A",
        "idle F",
        "bound",
    )
    for col in heads:
        table.add_column(col, justify="left" if col == "bound" else "right", no_wrap=True)
    best = result.recommended.point.r
    for row in result.rows:
        p = row.point
        table.add_row(
            f"{p.r}{'★' if p.r == best else ''}",
            fmt_time(p.cycle_time, unit),
            fmt_time(p.cycle_time_mean_field, unit),
            fmt_rate(row.throughput_per_instance),
            fmt_rate(result.throughput_per_gpu(row)),
            f"{p.idle_attention:.1%}",
            f"{p.idle_ffn:.1%}",
            STAGE_LETTER[p.binding],
            style="bold green" if p.r == best else None,
        )
    out.print(table)
    out.print(
        "E[τ]: expected step time with the barrier; τ̄: all workers at mean load.", highlight=False
    )
    bp = result.rule.breakpoints
    out.print(
        f"r* (θ, mean field) = {result.rule.r_star:.2f}  ({result.rule.regime}-bound; "
        f"r_A = {bp.r_attention:.2f}, r_C = {bp.r_comm:.2f}, r_peak = {bp.r_peak:.2f})",
        highlight=False,
    )
    out.print(
        f"r* (v1, μ_P + μ_D)  = {result.rule_v1.r_star:.2f}  ({result.rule_v1.regime}-bound)",
        highlight=False,
    )
    rec = result.recommended
    per = "s" if unit == "s" else unit
    out.print(
        f"[bold green]Recommendation: r = {best}[/bold green] Attention instances per FFN "
        f"instance at B = {d.batch}: {fmt_rate(rec.throughput_per_instance)} tokens/{per} per "
        f"instance, {fmt_rate(result.throughput_per_gpu(rec))} per GPU; idle A "
        f"{rec.point.idle_attention:.1%}, idle F {rec.point.idle_ffn:.1%}."
    )


@app.command()
def presets() -> None:
    """List the built-in coefficient sets."""
    table = Table(title="Built-in coefficient sets (--coeffs NAME)", title_justify="left")
    for col in ("name", "time unit", "GPUs A:F", "provenance"):
        table.add_column(col)
    for name in builtin_coeff_names():
        t = load_coeffs(name)
        table.add_row(name, t.time_unit, f"{t.gpus_attention:g}:{t.gpus_ffn:g}", t.provenance)
    out.print(table)


def main() -> None:
    """Console entry point: run the app, turning bad input into one line and exit 2."""
    try:
        app()
    except InputError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("AFDPLAN_DEBUG"):
            raise
        err.print(
            f"error: internal error ({type(exc).__name__}: {exc}); rerun with AFDPLAN_DEBUG=1 "
            "and report it",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
