"""Reading tabular files (CSV, TSV, JSONL, Parquet) with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from afdplan.errors import InputError, require

if TYPE_CHECKING:
    import pandas as pd

SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV/TSV/JSONL/Parquet file; one-line :class:`InputError` on any failure."""
    import pandas as pd

    path = Path(path)
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    require(
        fmt is not None,
        f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(SUFFIX_FORMATS)}",
    )
    require(path.is_file(), f"{path}: no such file")
    try:
        if fmt == "csv":
            return pd.read_csv(path)
        if fmt == "tsv":
            return pd.read_csv(path, sep="\t")
        if fmt == "jsonl":
            return pd.read_json(path, lines=True)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"{path}: file is empty") from exc
    except Exception as exc:  # pandas, pyarrow and the OS each raise their own types
        raise InputError(f"{path}: cannot read as {fmt}: {first_line(exc)}") from exc


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name if it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
