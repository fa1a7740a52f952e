"""Shared pieces of the command line: the app, consoles, options, parsing, output files.

The CLI is the only part of afdplan that prints. Every bad input ends as one
``error: ...`` line on stderr and exit code 2 (see ``afdplan.cli.main``).

Start-up matters (``afdplan --help`` within 2× a bare ``import numpy``): this module and
the command modules import only typer, rich and light afdplan modules at the top; numpy,
pandas and the library are imported inside the commands that need them.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from afdplan.choices import Backend, CommScope, Dtype, Mode, Objective, PipelineKind
from afdplan.errors import InputError, require

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help text: rich markup would eat the bracketed defaults, e.g. "[200000]".
    rich_markup_mode=None,
)


@app.callback()
def _group() -> None:
    """Size Attention–FFN disaggregated (AFD) LLM decoding: A/F ratio, batch, throughput."""
    # A callback keeps the app a command group even when only one command is registered
    # (a run registers only the command it runs; see afdplan.cli.load_commands).


# Piped or redirected output is read by programs: never wrap or truncate a table for an
# 80-column terminal that is not there.
_WIDTH = None if sys.stdout.isatty() else 1000
out = Console(width=_WIDTH, highlight=False)
err = Console(stderr=True)

# ------------------------------------------------------------------ options
# One name, one meaning, in every command.

TraceOpt = Annotated[
    str | None,
    typer.Option("--trace", help="Request trace (CSV, JSONL or Parquet) or a shipped trace name."),
]
WorkloadOpt = Annotated[
    str | None,
    typer.Option(
        "--workload",
        help="Workload spec, e.g. geometric:prefill=512,decode_mean=256 (see README).",
    ),
]
PromptColOpt = Annotated[
    str | None, typer.Option("--prompt-col", help="Trace column with prompt lengths.")
]
DecodeColOpt = Annotated[
    str | None, typer.Option("--decode-col", help="Trace column with decode lengths.")
]
LinearOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--linear-only",
        help="Use the linear fit even when the coefficient set ships measured curves.",
    ),
]
DropInvalidOpt = Annotated[
    bool,
    typer.Option("--drop-invalid", help="Drop trace rows with D < 1 or P < 0 (counted)."),
]
CoeffsOpt = Annotated[
    str,
    typer.Option(
        "--coeffs",
        help="Coefficient set: built-in name, JSON/TOML file, or roofline:MODEL@HARDWARE.",
    ),
]
PipelineOpt = Annotated[
    PipelineKind | None,
    typer.Option("--pipeline", help="How a decode step runs (DESIGN.md §8) [overlap]."),
]
ModeOpt = Annotated[
    Mode | None,
    typer.Option("--mode", hidden=True, help="Former name of --pipeline (overlap|serial)."),
]
MicrobatchesOpt = Annotated[
    int,
    typer.Option(
        "--microbatches", "-m", help="Micro-batches per step, for pingpong and aic-* pipelines."
    ),
]
LayersOpt = Annotated[
    int | None,
    typer.Option("--layers", help="Transformer layers L [the coefficient set's]."),
]
ObjectiveOpt = Annotated[
    Objective,
    typer.Option("--objective", help="Maximise tokens/s per GPU, per dollar or per instance."),
]
LinkOpt = Annotated[
    str | None,
    typer.Option(
        "--link",
        help="A-F link per GPU: nvlink (the hardware's), ib-ndr (400 Gb/s), ib-xdr "
        "(800 Gb/s), or BANDWIDTHgbps@LATENCYus, e.g. 200gbps@8us [the set's; a roofline: "
        "NVLink within one machine].",
    ),
]
RoutingOpt = Annotated[
    str | None,
    typer.Option(
        "--routing",
        help="How tokens pick experts: balanced or power-law:ALPHA (e.g. power-law:1.2); the "
        "FFN waits for its busiest expert rank [balanced; measured sets read power-law rows "
        "from their tables].",
    ),
]
WeightDtypeOpt = Annotated[
    Dtype | None, typer.Option("--weight-dtype", help="Attention-side weights [the model's].")
]
FfnDtypeOpt = Annotated[
    Dtype | None, typer.Option("--ffn-dtype", help="FFN-side weights [--weight-dtype].")
]
KvDtypeOpt = Annotated[
    Dtype | None, typer.Option("--kv-dtype", help="KV-cache elements [the model's].")
]
GpusAttOpt = Annotated[
    int | None,
    typer.Option(
        "--gpus-attention", help="GPUs per Attention instance (TP) [the coefficient set's]."
    ),
]
GpusFfnOpt = Annotated[
    int | None,
    typer.Option("--gpus-ffn", help="GPUs in the FFN group (EP/TP) [the coefficient set's]."),
]
ExpertTpOpt = Annotated[
    int,
    typer.Option(
        "--expert-tp",
        help="GPUs each routed expert is split over in the FFN group (1: expert parallel).",
    ),
]
MtpOpt = Annotated[
    str | None,
    typer.Option(
        "--mtp",
        help="Multi-token prediction DEPTH:ACCEPTED (e.g. 1:0.8): draft tokens a step and the "
        "mean accepted of them; step times are then per token of progress.",
    ),
]
ExchangeOverlapOpt = Annotated[
    bool,
    typer.Option(
        "--exchange-overlap/--no-exchange-overlap",
        help="AFD FFN groups run their expert exchange beside the other micro-batches' "
        "experts (vLLM's DBO, NVLS collectives), not in series with their own.",
    ),
]
PriceAttOpt = Annotated[
    float | None,
    typer.Option("--price-attention", help="$ per GPU-hour of the Attention side (for cost)."),
]
PriceFfnOpt = Annotated[
    float | None,
    typer.Option("--price-ffn", help="$ per GPU-hour of the FFN side (for cost)."),
]
CommOpt = Annotated[
    CommScope | None,
    typer.Option("--comm", help="Communication scope [the coefficient set's]."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (the first, with --seeds).")]
WAttOpt = Annotated[
    float | None,
    typer.Option(
        "--w-attention", help="Custom weight of one Attention instance (instead of --objective)."
    ),
]
WFfnOpt = Annotated[
    float | None,
    typer.Option("--w-ffn", help="Custom weight of the FFN instance (instead of --objective)."),
]
TablesOpt = Annotated[
    str | None,
    typer.Option(
        "--tables",
        help="Measured step-time table (op,tokens,kv_tokens,batch,seconds) or a shipped "
        "table name: step times are read off its curves; stages it lacks use --coeffs.",
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
JobsOpt = Annotated[
    int | None,
    typer.Option(
        "--jobs",
        "-j",
        help="Parallel processes: -1 all cores, 1 in this process [auto: one process for "
        "small work, else one per core].",
    ),
]
BackendOpt = Annotated[Backend | None, typer.Option("--backend", help="joblib backend [loky].")]
SchedulerOpt = Annotated[
    str | None,
    typer.Option("--scheduler", help="Dask scheduler or Ray cluster address (with --backend)."),
]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write the results to this file.")
]
SaveDirOpt = Annotated[
    Path | None, typer.Option("--save-dir", help="Write the files into this folder.")
]

# ------------------------------------------------------------------ output paths


def prepare_output_file(
    path: Path | None, what: str = "--output", suffixes: tuple[str, ...] | None = None
) -> Path | None:
    """Check an output file before any work: a file name of a format we write, in a folder
    that exists or is created now. Refuses with one line what cannot work."""
    if path is None:
        return None
    path = Path(path).expanduser()
    require(not path.is_dir(), f"{what} {path}: is a folder; give a file name")
    if suffixes is not None:
        require(
            path.suffix.lower() in suffixes,
            f"{what} {path}: unknown file type {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(suffixes)}",
        )
    _make_folder(path.parent, what)
    return path


def prepare_output_dir(path: Path | None, what: str = "--save-dir") -> Path | None:
    """Create an output folder before any work, or refuse with one line."""
    if path is None:
        return None
    path = Path(path).expanduser()
    _make_folder(path, what)
    return path


def _make_folder(folder: Path, what: str) -> None:
    for parent in (folder, *folder.parents):
        if parent.exists():
            require(parent.is_dir(), f"{what}: {parent} is a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{what}: cannot create folder {folder}: {exc.strerror}") from exc
    require(os.access(folder, os.W_OK), f"{what}: folder {folder} is not writable")


# ------------------------------------------------------------------ progress and JSON


def progress_bar(label: str):
    """A transient progress bar on stderr, shown only on a terminal (stdout stays clean)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

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
    if hasattr(value, "tolist"):
        return _finite(value.tolist())  # type: ignore[union-attr]
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(value: object) -> object:
    if isinstance(value, float) or (hasattr(value, "dtype") and hasattr(value, "item")):
        item = value.item() if hasattr(value, "item") else value  # type: ignore[union-attr]
        if isinstance(item, float):
            return item if math.isfinite(item) else None
        return item
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# ------------------------------------------------------------------ tables


class OutTable:
    """A table of plain strings: drawn by rich on a terminal, printed as aligned text when
    stdout goes to a file or a program (whole cells, no box characters, and no
    rendering cost: a rich table costs a tenth of a second of ``plan``'s start-up)."""

    def __init__(self, title: str | None = None, **_style) -> None:
        self.title = title
        self.columns: list[tuple[str, str]] = []
        self.rows: list[list[str]] = []
        self.styles: list[str | None] = []

    def add_column(self, name: str, justify: str = "left", **_options) -> None:
        self.columns.append((name, justify))

    def add_row(self, *cells: str, style: str | None = None) -> None:
        self.rows.append([str(c) for c in cells])
        self.styles.append(style)


def show(table: OutTable) -> None:
    """Print ``table`` (see :class:`OutTable`)."""
    if out.is_terminal:
        from rich import box
        from rich.table import Table
        from rich.text import Text

        rich_table = Table(title=table.title, title_justify="left", box=box.SIMPLE_HEAD)
        for name, justify in table.columns:
            rich_table.add_column(Text(name), justify=justify)  # type: ignore[arg-type]
        for cells, style in zip(table.rows, table.styles, strict=True):
            rich_table.add_row(*(Text(c) for c in cells), style=style)
        out.print(rich_table)
        return
    widths = [
        max([len(name), *(len(row[i]) for row in table.rows)])
        for i, (name, _) in enumerate(table.columns)
    ]

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(w) if justify == "right" else c.ljust(w)
            for c, w, (_, justify) in zip(cells, widths, table.columns, strict=True)
        ]
        return "  ".join(parts).rstrip()

    text = [table.title] if table.title else []
    text += [line([name for name, _ in table.columns]), "  ".join("-" * w for w in widths)]
    text += [line(row) for row in table.rows]
    sys.stdout.write("\n".join(text) + "\n\n")


# ------------------------------------------------------------------ formatting and parsing

STAGE_LETTER = {
    "attention": "A",
    "communication": "C",
    "ffn": "F",
    "serial": "A+C+F",
    "round-trip": "A→F→A",
}


def fmt_time(value: float, unit: str) -> str:
    """A time in ms when the unit is seconds, else in the set's own unit."""
    return f"{value * 1e3:.3f}" if unit == "s" else f"{value:.4g}"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.4g}"


def parse_int_list(text: str, what: str, limit: int = 100_000) -> list[int]:
    """'1-4,8,16' → [1, 2, 3, 4, 8, 16]: integers >= 1, sorted, without repeats."""
    values: set[int] = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        lo, dash, hi = item.partition("-")
        try:
            if item.lstrip("+-").isdigit():  # one value, possibly negative
                dash, first, last = "", int(item), int(item)
            else:
                first, last = int(lo), int(hi)
        except ValueError as exc:
            raise InputError(f"{what}: {item!r} is not an integer or a range a-b") from exc
        if not dash and first < 1:
            raise InputError(f"{what} must be an integer >= 1, got {item!r}")
        if first < 1 or last < first:
            raise InputError(f"{what}: range {item!r} needs integers 1 <= a <= b")
        require(last <= limit, f"{what}: {last} is above the largest allowed value {limit}")
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
    if not colon or not (math.isfinite(bounds[1]) and 0 <= bounds[0] < bounds[1]):
        raise InputError(f"{what} must be LO:HI with 0 <= LO < HI (finite), got {text!r}")
    return bounds


def single_int(text: str | None, what: str) -> int | None:
    """An option that takes one integer >= 1 here (the list form belongs to ``sweep``)."""
    if text is None:
        return None
    values = parse_int_list(text, what)
    require(len(values) == 1, f"{what} takes one value here, got {text!r} (lists: sweep)")
    return values[0]


# ------------------------------------------------------------------ inputs


def load_workload(
    trace: str | None,
    workload: str | None,
    prompt_col: str | None = None,
    decode_col: str | None = None,
    drop_invalid: bool = False,
):
    """The workload from ``--trace`` or ``--workload`` (not both), else the default."""
    from afdplan.choices import DEFAULT_WORKLOAD
    from afdplan.data import resolve_input
    from afdplan.workload import parse_workload, read_trace

    if trace is not None and workload is not None:
        raise InputError("give either --trace or --workload, not both")
    if trace is not None:
        return read_trace(resolve_input(trace, "trace"), prompt_col, decode_col, drop_invalid)
    if workload is not None:
        require(workload.strip() != "", "--workload is empty; e.g. fixed:prefill=512,decode=128")
    return parse_workload(DEFAULT_WORKLOAD if workload is None else workload)


def load_step_times(
    coeffs: str,
    comm: CommScope | None,
    tables: str | None,
    gpus: tuple[int | None, int | None] = (None, None),
    linear_only: bool = False,
    dtypes: tuple = (None, None, None),
    link: str | None = None,
    routing: str | None = None,
    expert_tp: int = 1,
    exchange_overlap: bool = False,
    mtp: str | None = None,
):
    """(the linear coefficients, the step times to use): the given measured tables, else
    the coefficient set's own curves (unless ``linear_only``), else the linear model.
    ``dtypes``: the ``--weight-dtype``, ``--ffn-dtype``, ``--kv-dtype`` choices; ``link``
    the ``--link``; ``routing`` the ``--routing``; ``expert_tp`` the ``--expert-tp``;
    ``exchange_overlap`` the ``--exchange-overlap``; ``mtp`` the ``--mtp`` (step times
    then per token of progress, ``afdplan.timing.mtp``)."""
    from dataclasses import replace

    from afdplan.calibrate.resolve import resolve_step_times, set_curves

    names = tuple(None if d is None else d.value for d in dtypes)
    linear, times = resolve_step_times(
        coeffs, None if comm is None else comm.value, tables, gpus, names, link, routing,
        expert_tp,
    )  # fmt: skip
    if exchange_overlap:
        require(
            linear.exchange is not None,
            f"--exchange-overlap: {linear.name} holds no expert exchange ([exchange])",
        )
        overlapped = replace(linear, exchange_overlap=True)
        times = overlapped if times is linear else replace(times, fallback=overlapped)
        linear = overlapped
    if linear_only and tables is None:
        times = linear
    elif tables is None and times is linear:
        times = set_curves(linear) or linear
    if mtp is not None:
        from afdplan.timing import Mtp

        require(
            times is linear,
            "--mtp prices the linear step times (measured curves hold one token a sequence "
            "a step): add --linear-only",
        )
        linear = times = Mtp.parse(mtp).apply(linear)
    return linear, times


def parse_kv_capacity(kv_capacity: str | None, linear) -> int | None:
    """``--kv-capacity``: None, 'auto' (the coefficient set's) or an integer."""
    if kv_capacity is None:
        return None
    if kv_capacity == "auto":
        kv = linear.kv_capacity_tokens
        require(kv is not None, "--kv-capacity auto: the coefficient set has no kv_capacity_tokens")
        return int(kv)
    try:
        return int(kv_capacity)
    except ValueError as exc:
        raise InputError(
            f"--kv-capacity must be an integer or 'auto', got {kv_capacity!r}"
        ) from exc


def check_jobs(jobs: int | None) -> None:
    require(
        jobs is None or (jobs != 0 and jobs >= -1),
        f"--jobs must be >= 1 or -1 (all cores), got {jobs}",
    )


def resolve_pipeline(
    pipeline: PipelineKind | None, mode: Mode | None, microbatches: int, layers: int | None, linear
):
    """The :class:`Pipeline` the options ask for (``--mode`` is the old ``--pipeline``)."""
    from afdplan.bundle import Pipeline

    require(pipeline is None or mode is None, "give --pipeline or its old name --mode, not both")
    kind = (pipeline or mode or PipelineKind.overlap).value
    if layers is None:
        layers = linear.layers
    layered = kind not in (PipelineKind.overlap, PipelineKind.serial)
    require(
        layers is not None or not layered,
        f"--pipeline {kind} needs the model's layer count: the coefficient set has no "
        "meta.layers; pass --layers L",
    )
    return Pipeline(kind, microbatches, 1 if layers is None else layers)


def resolve_weights(
    objective: Objective,
    w_attention: float | None,
    w_ffn: float | None,
    prices: tuple[float | None, float | None],
    linear,
) -> tuple[str | None, float, float]:
    """(objective name, or None for custom weights; w_A, w_F) with the GPUs per instance
    of the coefficient set ``linear``."""
    if w_attention is None and w_ffn is None:
        from afdplan.bundle import objective_weights

        if objective != Objective.cost:
            require(prices == (None, None), "--price-* are used with --objective cost only")
        weights = objective_weights(objective, linear.gpus_attention, linear.gpus_ffn, *prices)
        return (objective.value, *weights)
    return (
        None,
        1.0 if w_attention is None else w_attention,
        1.0 if w_ffn is None else w_ffn,
    )
