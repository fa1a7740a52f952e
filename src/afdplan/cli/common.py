"""Shared pieces of the command line: the app, consoles, options, loaders, formatting.

The CLI is the only part of afdplan that prints. Every bad input ends as one
``error: ...`` line on stderr and exit code 2 (see ``afdplan.cli.main``).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from afdplan.calibrate.roofline import derive
from afdplan.calibrate.specs import load_hardware, load_model
from afdplan.errors import InputError
from afdplan.plan import DEFAULT_WORKLOAD
from afdplan.theory import MODES
from afdplan.timing import (
    COMM_SCOPES,
    DEFAULT_COEFFS,
    LinearStepTimes,
    StepTimes,
    load_coeffs,
    read_step_table,
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
TABLE_STYLE = {"title_justify": "left", "box": box.SIMPLE_HEAD}

# ------------------------------------------------------------------ options

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

TablesOpt = Annotated[
    Path | None,
    typer.Option(
        "--tables",
        help="Measured step-time table (op,tokens,kv_tokens,batch,seconds): step times are "
        "read off its curves; stages it lacks use --coeffs.",
    ),
]
RequestsOpt = Annotated[
    int | None,
    typer.Option("--requests", help="Serve about N requests in the measured window [200000]."),
]
StepsOpt = Annotated[
    int | None,
    typer.Option("--steps", help="Measured window in decode steps (instead of --requests)."),
]
OrderOpt = Annotated[
    str, typer.Option("--order", help="iid (resample) | replay (trace in arrival order).")
]
WarmupOpt = Annotated[
    str | None,
    typer.Option("--warmup", help="stationary | cold [stationary where defined, else cold]."),
]
WarmupStepsOpt = Annotated[
    int | None, typer.Option("--warmup-steps", help="Steps discarded after a cold start.")
]
KvOpt = Annotated[
    str | None,
    typer.Option(
        "--kv-capacity",
        help="KV tokens per Attention worker ('auto': the coefficient set's); waits if full.",
    ),
]
NoiseOpt = Annotated[
    float, typer.Option("--noise", help="σ of a mean-one log-normal factor on stage times.")
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
    """A coefficient set: built-in name, file, or ``roofline:MODEL@HARDWARE``."""
    if coeffs.startswith("roofline:"):
        model, at, hardware = coeffs.removeprefix("roofline:").partition("@")
        if not at:
            raise InputError(f"--coeffs {coeffs!r}: use roofline:MODEL@HARDWARE")
        times = derive(load_model(model), load_hardware(hardware)).times
    else:
        times = load_coeffs(coeffs)
    if comm is not None:
        comm = comm.replace("-", "_")
        if comm not in COMM_SCOPES:
            raise InputError(f"--comm must be one of {', '.join(COMM_SCOPES)}, got {comm!r}")
        times = times.with_comm_scope(comm)
    return times


def load_step_times(
    coeffs: str, comm: str | None, tables: Path | None
) -> tuple[LinearStepTimes, StepTimes]:
    """(the linear coefficients, the same overlaid by measured tables where given)."""
    linear = load_times(coeffs, comm)
    return linear, linear if tables is None else read_step_table(tables, linear)


def progress_bar(label: str) -> Progress:
    """A transient progress bar on stderr, shown only on a terminal (stdout stays clean)."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def to_json(data: object, indent: int = 2) -> str:
    """Strict JSON: numpy scalars as numbers, NaN and infinities as null."""
    return json.dumps(_finite(data), indent=indent, default=_numpy, allow_nan=False)


def print_json(data: object) -> None:
    sys.stdout.write(to_json(data) + "\n")


def _numpy(value: object) -> object:
    if hasattr(value, "item"):
        return value.item()  # type: ignore[union-attr]
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(value: object) -> object:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


STAGE_LETTER = {"attention": "A", "communication": "C", "ffn": "F", "serial": "A+C+F"}


def fmt_time(value: float, unit: str) -> str:
    """A time in ms when the unit is seconds, else in the set's own unit."""
    return f"{value * 1e3:.3f}" if unit == "s" else f"{value:.4g}"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.4g}"


def parse_int_list(text: str, what: str) -> list[int]:
    """'1-4,8,16' → [1, 2, 3, 4, 8, 16]: integers >= 1, sorted, without repeats."""
    values: set[int] = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        lo, dash, hi = item.partition("-")
        try:
            first, last = (int(lo), int(hi)) if dash else (int(item), int(item))
        except ValueError as exc:
            raise InputError(f"{what}: {item!r} is not an integer or a range a-b") from exc
        if first < 1 or last < first:
            raise InputError(f"{what}: {item!r} must be integers >= 1 with a <= b")
        values.update(range(first, last + 1))
    if not values:
        raise InputError(f"{what}: empty list")
    return sorted(values)


def parse_range(text: str | None, what: str) -> tuple[float, float] | None:
    if text is None:
        return None
    lo, colon, hi = text.partition(":")
    try:
        bounds = (float(lo), float(hi))
    except ValueError as exc:
        raise InputError(f"{what} must be LO:HI tokens, got {text!r}") from exc
    if not colon or not 0 <= bounds[0] < bounds[1]:
        raise InputError(f"{what} must be LO:HI with 0 <= LO < HI, got {text!r}")
    return bounds
