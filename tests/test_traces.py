"""Trace reading: formats, column names, and one-line errors for bad files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from afdplan.errors import InputError
from afdplan.workload import read_trace
from afdplan.workload.traces import KNOWN_COLUMN_PAIRS

from .conftest import FIXTURES


@pytest.mark.parametrize("pair", KNOWN_COLUMN_PAIRS)
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_known_columns_every_format(tmp_path, pair, fmt):
    frame = pd.DataFrame({pair[0]: [10, 20, 30], pair[1]: [1, 2, 3], "other": [0, 0, 0]})
    path = tmp_path / f"t.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    w = read_trace(path)
    assert list(w.prompt) == [10, 20, 30] and list(w.decode) == [1, 2, 3]


def test_shipped_fixture_reads_and_sorts_by_arrival():
    w = read_trace(FIXTURES / "tiny_trace.csv")
    assert w.size == 6
    assert np.all(np.diff(w.arrival) >= 0)
    assert w.arrival[0] == 0.0


def test_column_overrides(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [5, 6], "b": [2, 2]}).to_csv(path, index=False)
    w = read_trace(path, prompt_col="a", decode_col="b")
    assert w.stats().theta == pytest.approx(6.0)
    with pytest.raises(InputError, match="column 'zz'"):
        read_trace(path, prompt_col="zz", decode_col="b")


def test_drop_invalid_counts_rows(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"input_length": [5, 6, 7], "output_length": [2, 0, 3]}).to_csv(path, index=False)
    with pytest.raises(InputError, match="1 row"):
        read_trace(path)
    w = read_trace(path, drop_invalid=True)
    assert w.size == 2 and w.dropped_rows == 1


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty"),
        ("input_length,output_length\n", "no requests"),
        ("x,y\n1,2\n", "no prompt/decode length columns"),
        ("input_length,output_length\n5,\n", "missing, NaN"),
        ("input_length,output_length\n5,nan\n", "missing, NaN"),
        ("input_length,output_length\n5,abc\n", "not numbers"),
        ("input_length,output_length\n5,2.5\n", "whole token counts"),
        ("input_length,output_length\n5,-3\n", "decode length < 1"),
        ("input_length,output_length\n-5,3\n", "prompt length < 0"),
    ],
)
def test_bad_csv(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        read_trace(path)
    assert "\n" not in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_trace(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="unknown file type"):
        read_trace(tmp_path / "trace.xlsx")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not a parquet file")
    with pytest.raises(InputError, match="cannot read as parquet"):
        read_trace(bad)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(InputError, match="cannot read as jsonl"):
        read_trace(bad)


def test_jsonl_with_extra_fields(tmp_path):
    path = tmp_path / "t.jsonl"
    rows = [
        {"prompt_tokens": 3, "output_tokens": 4, "id": "a"},
        {"prompt_tokens": 1, "output_tokens": 1},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert read_trace(path).size == 2
