"""Read request traces (CSV, JSONL, Parquet) into an :class:`EmpiricalWorkload`.

Column names of the common public traces are recognised; ``prompt_col``/``decode_col``
override them. Every problem with the file is an :class:`InputError` with one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from afdplan.errors import InputError, require
from afdplan.tabular import read_table
from afdplan.workload.laws import MAX_LENGTH_TOKENS
from afdplan.workload.sources import EmpiricalWorkload

if TYPE_CHECKING:
    import pandas as pd

# (prompt column, decode column) pairs of known traces, tried in order.
KNOWN_COLUMN_PAIRS: tuple[tuple[str, str], ...] = (
    ("num_prefill_tokens", "num_decode_tokens"),  # Splitwise's processed Azure 2023
    ("ContextTokens", "GeneratedTokens"),  # Azure LLM inference traces 2023/2024
    ("Request tokens", "Response tokens"),  # BurstGPT
    ("input_length", "output_length"),  # Mooncake and others
    ("prompt_tokens", "output_tokens"),
    ("prompt_len", "output_len"),
    ("input_tokens", "output_tokens"),
)
ARRIVAL_COLUMNS: tuple[str, ...] = (
    "arrived_at",
    "TIMESTAMP",
    "timestamp",
    "Timestamp",
    "arrival_time",
)


def _pick_columns(
    frame: pd.DataFrame, path: Path, prompt_col: str | None, decode_col: str | None
) -> tuple[str, str]:
    found = list(frame.columns)
    listing = ", ".join(map(str, found))
    for given, what in ((prompt_col, "--prompt-col"), (decode_col, "--decode-col")):
        require(
            given is None or given in found,
            f"{path}: column {given!r} ({what}) not found; columns are: {listing}",
        )
    if prompt_col and decode_col:
        return prompt_col, decode_col
    for p, d in KNOWN_COLUMN_PAIRS:
        p_ok = (prompt_col or p) in found
        d_ok = (decode_col or d) in found
        if p_ok and d_ok:
            return prompt_col or p, decode_col or d
    known = "; ".join(f"{p}/{d}" for p, d in KNOWN_COLUMN_PAIRS)
    raise InputError(
        f"{path}: no prompt/decode length columns (known pairs: {known}); columns are: "
        f"{listing}; pass --prompt-col and --decode-col"
    )


def _lengths(frame: pd.DataFrame, col: str, path: Path, what: str) -> np.ndarray:
    """Column ``col`` as float64; raises on NaN, non-numbers and fractional counts."""
    import pandas as pd

    raw = frame[col]
    is_bool = raw.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(bool)
    if is_bool.any():
        first = int(np.flatnonzero(is_bool)[0]) + 1
        raise InputError(
            f"{path}: {int(is_bool.sum())} {what} value(s) in column {col!r} are true/false, "
            f"not token counts (first at data row {first})"
        )
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0]) + 1
        raise InputError(
            f"{path}: {int(bad.sum())} {what} value(s) in column {col!r} are missing, NaN or "
            f"not numbers (first at data row {first})"
        )
    big = values > MAX_LENGTH_TOKENS
    if big.any():
        first = int(np.flatnonzero(big)[0]) + 1
        raise InputError(
            f"{path}: {int(big.sum())} {what} value(s) in column {col!r} are above the largest "
            f"supported length, {MAX_LENGTH_TOKENS:,} tokens (first at data row {first})"
        )
    frac = values != np.round(values)
    if frac.any():
        first = int(np.flatnonzero(frac)[0]) + 1
        raise InputError(
            f"{path}: {int(frac.sum())} {what} value(s) in column {col!r} are not whole "
            f"token counts (first at data row {first})"
        )
    return values


def read_trace(
    path: str | Path,
    prompt_col: str | None = None,
    decode_col: str | None = None,
    drop_invalid: bool = False,
) -> EmpiricalWorkload:
    """Load a trace; P ≥ 0 and D ≥ 1 per row (or rows dropped and counted, if asked).

    Rows keep the file's order unless an arrival-time column is present, in which case
    they are sorted by arrival (stable), which is what arrival-order replay uses.
    """
    import pandas as pd

    path = Path(path)
    frame = read_table(path)
    require(len(frame) > 0, f"{path}: trace has no requests")
    pcol, dcol = _pick_columns(frame, path, prompt_col, decode_col)
    prompt = _lengths(frame, pcol, path, "prompt length")
    decode = _lengths(frame, dcol, path, "decode length")
    invalid = (decode < 1) | (prompt < 0)
    if invalid.any() and not drop_invalid:
        first = int(np.flatnonzero(invalid)[0]) + 1
        raise InputError(
            f"{path}: {int(invalid.sum())} row(s) have decode length < 1 or prompt length < 0 "
            f"(first at data row {first}); fix them or pass --drop-invalid"
        )
    keep = ~invalid
    require(bool(keep.any()), f"{path}: no valid requests left after dropping invalid rows")
    arrival = None
    in_order = True
    arrival_col = next((c for c in ARRIVAL_COLUMNS if c in frame.columns), None)
    order = np.arange(int(keep.sum()))
    problem = None
    if arrival_col is not None:
        times = pd.to_numeric(frame[arrival_col], errors="coerce")
        if times.isna().any():
            times = pd.to_datetime(frame[arrival_col], errors="coerce")
            times = (times - times.min()).dt.total_seconds()
        values = times.to_numpy(dtype=np.float64)[keep]
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(keep)[np.flatnonzero(bad)[0]]) + 1
            raw = frame[arrival_col].iloc[row - 1]
            problem = (
                f"{path.name}: column {arrival_col!r} is not a finite time at data row {row} "
                f"({raw})"
            )
        else:
            arrival = values
            in_order = bool(np.all(np.diff(arrival) >= 0))
            order = np.argsort(arrival, kind="stable")
            arrival = arrival[order] - arrival[order][0]
    return EmpiricalWorkload(
        prompt=prompt[keep].astype(np.int64)[order],
        decode=decode[keep].astype(np.int64)[order],
        source=path.name,
        arrival=arrival,
        dropped_rows=int(invalid.sum()),
        arrival_sorted=in_order,
        arrival_problem=problem,
    )
