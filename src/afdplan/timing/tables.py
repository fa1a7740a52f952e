"""Measured step-time tables, interpolated at the exact batch and load.

A simulation driven by tables keeps the non-linearities a linear fit smooths over (wave
quantisation, the flat-then-linear roofline knee of a weight-bound FFN). The generic
table is a CSV with one row per measurement::

    op,tokens,kv_tokens,batch,seconds
    attention,,524288,64,0.00071     # B sequences holding kv_tokens KV tokens in total
    attention_dense,64,,,0.0032      # per-sequence dense work of the Attention side
    ffn,512,,,0.0094                 # the FFN side on `tokens` tokens
    comm,64,,,0.0011                 # A↔F round trip of `tokens` tokens
    exchange,512,,,0.0021            # the part of the ffn row that is expert dispatch
                                     #   and combine (already inside it; fitted apart)

Times are whole-model per decode step, seconds. The Attention time is ``attention`` plus
``attention_dense`` at B tokens (projections, norms, LM head: they scale with sequences,
not with context). Stages a table lacks fall back to the linear coefficients (on the
Attention side: with dense rows but no kernel rows, the kernel is the linear α_A·T).
Between measured points the curves are piecewise linear; beyond the last point they
continue along the last segment (never clamp: a clamped FFN curve would make large
batches free).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from afdplan.errors import InputError, require
from afdplan.timing.linear import LinearStepTimes, transfer_tokens

if TYPE_CHECKING:
    import pandas as pd

# A table as columns: "op" holds strings, the other columns float64 (NaN where empty).
Columns = dict[str, np.ndarray]

TABLE_COLUMNS = ("op", "tokens", "kv_tokens", "batch", "seconds")
TABLE_OPS = ("attention", "attention_dense", "ffn", "comm", "exchange")


@dataclass(frozen=True)
class Curve:
    """Piecewise-linear y(x) through sorted, distinct x; linear beyond both ends."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        require(self.x.size >= 2, "a measured curve needs at least 2 distinct points")

    def __call__(self, q: np.ndarray | float) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        x, y = self.x, self.y
        out = np.interp(q, x, y)
        lo_slope = (y[1] - y[0]) / (x[1] - x[0])
        hi_slope = (y[-1] - y[-2]) / (x[-1] - x[-2])
        out = np.where(q < x[0], y[0] + lo_slope * (q - x[0]), out)
        return np.where(q > x[-1], y[-1] + hi_slope * (q - x[-1]), out)

    @classmethod
    def from_points(cls, x: np.ndarray, y: np.ndarray) -> Curve:
        """Sort, and take the median of repeated x."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        xs, group = np.unique(x, return_inverse=True)
        ys = np.array([np.median(y[group == i]) for i in range(xs.size)], dtype=np.float64)
        return cls(xs, ys)


@dataclass(frozen=True)
class AttentionTable:
    """Attention time vs (batch, total KV tokens): one curve per measured batch size.

    Between measured batches the time is interpolated linearly in B at the same mean
    context per sequence (T/B), which is how attention kernels scale.
    """

    batches: np.ndarray
    curves: tuple[Curve, ...]

    def __call__(self, batch: np.ndarray | float, kv_tokens: np.ndarray | float) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float64)
        kv = np.asarray(kv_tokens, dtype=np.float64)
        batch, kv = np.broadcast_arrays(batch, kv)
        out = np.empty(kv.shape)
        for b in np.unique(batch):
            mask = batch == b
            out[mask] = self._at_batch(float(b), kv[mask])
        return out

    def _at_batch(self, b: float, kv: np.ndarray) -> np.ndarray:
        bs = self.batches
        if bs.size == 1:
            return self.curves[0](kv * bs[0] / b) if b > 0 else np.zeros_like(kv)
        j = int(np.clip(np.searchsorted(bs, b), 1, bs.size - 1))
        b0, b1 = bs[j - 1], bs[j]
        per_seq = kv / b if b > 0 else np.zeros_like(kv)
        t0 = self.curves[j - 1](per_seq * b0)
        t1 = self.curves[j](per_seq * b1)
        return t0 + (t1 - t0) * (b - b0) / (b1 - b0)


@dataclass(frozen=True)
class TableStepTimes:
    """Step times from measured tables, with a linear model for any stage left out."""

    fallback: LinearStepTimes
    attention: AttentionTable | None = None
    attention_dense: Curve | None = None
    ffn: Curve | None = None
    comm: Curve | None = None
    source: str = "table"

    @property
    def comm_scope(self) -> str:
        return self.fallback.comm_scope

    @property
    def time_unit(self) -> str:
        return self.fallback.time_unit

    @property
    def name(self) -> str:
        missing = [s for s in ("attention", "ffn", "comm") if s not in self.stages()]
        return self.source + (
            f" (+{self.fallback.name} for {', '.join(missing)})" if missing else ""
        )

    def attention_time(self, batch, kv_tokens):
        if self.attention is None and self.attention_dense is None:
            return self.fallback.attention_time(batch, kv_tokens)
        # Without a kernel table the KV-proportional part comes from the linear model.
        if self.attention is None:
            kernel = self.fallback.attention.alpha * np.asarray(kv_tokens, dtype=np.float64)
        else:
            kernel = self.attention(batch, kv_tokens)
        dense = 0.0 if self.attention_dense is None else self.attention_dense(batch)
        return kernel + dense

    def ffn_time(self, tokens, imbalance=None):
        """The FFN on a micro-batch of ``tokens``, at its busiest expert rank (the
        curve read at ``tokens``·φ, as ``LinearStepTimes.ffn_time``)."""
        if self.ffn is None:
            return self.fallback.ffn_time(tokens, imbalance)
        effective = self.fallback.effective_tokens(tokens, imbalance)
        # an overlapped exchange leaves the stage (the linear fit of its part of the rows)
        return self.ffn(effective) - self.fallback.overlapped_exchange(effective, 1.0)

    def with_routing(self, routing) -> TableStepTimes:
        return replace(self, fallback=self.fallback.with_routing(routing))

    def comm_time(self, batch, ratio):
        if self.comm is None:
            return self.fallback.comm_time(batch, ratio)
        scope, g_f = self.comm_scope, self.fallback.gpus_ffn
        moved = self.comm(transfer_tokens(scope, np.asarray(batch, dtype=np.float64), ratio, g_f))
        return moved + self.fallback.overlapped_exchange(batch, ratio)

    def with_comm_scope(self, scope: str) -> TableStepTimes:
        return replace(self, fallback=self.fallback.with_comm_scope(scope))

    def outside_range(self, batch: float, kv_tokens: float, ffn_tokens: float) -> list[str]:
        """Where an operating point leaves the measured range (one line each): the curves
        continue along their last segment there, which the user should know."""
        notes = []
        if self.attention is not None:
            bs = self.attention.batches
            per_seq = max(c.x[-1] / b for c, b in zip(self.attention.curves, bs, strict=True))
            if kv_tokens / batch > per_seq:
                notes.append(
                    f"attention: {kv_tokens / batch:,.0f} KV tokens per sequence is beyond the "
                    f"longest measured context ({per_seq:,.0f}); extrapolated linearly"
                )
            if batch > bs[-1]:
                notes.append(
                    f"attention: batch {batch:g} is above the largest measured ({bs[-1]:g}); "
                    "extrapolated linearly"
                )
        if self.ffn is not None and not self.ffn.x[0] <= ffn_tokens <= self.ffn.x[-1]:
            notes.append(
                f"ffn: {ffn_tokens:,.0f} tokens is outside the measured "
                f"{self.ffn.x[0]:,.0f}..{self.ffn.x[-1]:,.0f}; extrapolated linearly"
            )
        return notes

    def stages(self) -> list[str]:
        """The stages that come from measurements (attention if either attention op)."""
        have = {op for op in TABLE_OPS if getattr(self, op, None) is not None}
        if "attention_dense" in have:
            have.add("attention")
        return [s for s in ("attention", "ffn", "comm") if s in have]


def validate_columns(cols: Columns, source: str) -> Columns:
    """The table in generic form (lower-case ``op``, every column), or a one-line error."""
    missing = [c for c in ("op", "seconds") if c not in cols]
    require(
        not missing,
        f"{source}: missing column(s) {', '.join(missing)}; need {', '.join(TABLE_COLUMNS)}",
    )
    n = len(cols["op"])
    require(n > 0, f"{source}: no rows")
    op = np.array([str(v).strip().lower() for v in cols["op"]], dtype=object)
    unknown = sorted(set(op) - set(TABLE_OPS))
    require(
        not unknown, f"{source}: unknown op(s) {', '.join(unknown)}; known: {', '.join(TABLE_OPS)}"
    )
    out: Columns = {"op": op}
    for col in TABLE_COLUMNS[1:]:
        out[col] = _numeric(cols[col]) if col in cols else np.full(n, np.nan)
    seconds = _checked(out["seconds"], np.ones(n, bool), "seconds", source)
    require(bool((seconds > 0).all()), f"{source}: seconds must be > 0 in every row")
    for name, needs in (
        ("attention", ("batch", "kv_tokens")),
        ("attention_dense", ("tokens",)),
        ("ffn", ("tokens",)),
        ("comm", ("tokens",)),
        ("exchange", ("tokens",)),
    ):
        rows = op == name
        for col in needs:
            if rows.any():
                _checked(out[col], rows, col, f"{source} ({name} rows)")
    return out


def validate_table(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """A pandas frame in generic form (see :func:`validate_columns`)."""
    import pandas as pd

    return pd.DataFrame(validate_columns(frame_columns(frame), source))


def frame_columns(frame: pd.DataFrame) -> Columns:
    return {str(c): frame[c].to_numpy() for c in frame.columns}


def _numeric(values: np.ndarray) -> np.ndarray:
    """float64 with NaN for empty or unparsable entries (reported by ``_checked``)."""
    values = np.asarray(values)
    if values.dtype.kind in "fiu":
        return values.astype(np.float64)
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if isinstance(v, bool | np.bool_):
            continue  # a boolean is not a count
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def _checked(values: np.ndarray, rows: np.ndarray, name: str, source: str) -> np.ndarray:
    picked = values[rows]
    bad = ~np.isfinite(picked)
    require(not bad.any(), f"{source}: {int(bad.sum())} non-numeric or missing {name!r} value(s)")
    require(bool((picked >= 0).all()), f"{source}: negative {name!r} value(s)")
    return picked


def tables_from_columns(cols: Columns, fallback: LinearStepTimes, source: str) -> TableStepTimes:
    """Build interpolating tables from generic columns (validated, one-line errors)."""
    cols = validate_columns(cols, source)
    op = cols["op"]
    parts: dict[str, object] = {}
    for name in ("attention_dense", "ffn", "comm"):
        rows = op == name
        if rows.any():
            parts[name] = Curve.from_points(cols["tokens"][rows], cols["seconds"][rows])
    rows = op == "attention"
    if rows.any():
        batch, kv, secs = cols["batch"][rows], cols["kv_tokens"][rows], cols["seconds"][rows]
        batches = np.unique(batch)
        curves = []
        for b in batches:
            sel = batch == b
            require(
                np.unique(kv[sel]).size >= 2,
                f"{source}: attention at batch {b:g} needs >= 2 distinct kv_tokens values",
            )
            curves.append(Curve.from_points(kv[sel], secs[sel]))
        parts["attention"] = AttentionTable(batches, tuple(curves))
    return TableStepTimes(fallback=fallback, source=source, **parts)  # type: ignore[arg-type]


def tables_from_frame(
    frame: pd.DataFrame, fallback: LinearStepTimes, source: str
) -> TableStepTimes:
    """:func:`tables_from_columns` for a pandas frame."""
    return tables_from_columns(frame_columns(frame), fallback, source)


def read_step_table(path: str | Path, fallback: LinearStepTimes) -> TableStepTimes:
    """Load a generic measured table (CSV, JSONL or Parquet; see module docstring).

    CSV is read without pandas: ``plan`` reads the shipped curves on every run and must
    start fast.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        cols = _read_csv_columns(path)
    else:
        from afdplan.tabular import read_table

        cols = frame_columns(read_table(path))
    return tables_from_columns(cols, fallback, path.name)


def _read_csv_columns(path: Path) -> Columns:
    require(path.is_file(), f"{path}: no such file")
    try:
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            require(header is not None, f"{path}: file is empty")
            names = [h.strip() for h in header]
            rows = [row for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read as csv: {exc}") from exc
    for i, row in enumerate(rows, start=2):
        require(
            len(row) == len(names),
            f"{path}: line {i} has {len(row)} fields, the header has {len(names)}",
        )
    return {name: np.array([row[j] for row in rows], dtype=object) for j, name in enumerate(names)}


def write_step_table(rows: pd.DataFrame, path: str | Path) -> None:
    """Write rows (any subset of the generic columns) in the generic format."""
    out = rows.reindex(columns=list(TABLE_COLUMNS))
    out.to_csv(path, index=False)
