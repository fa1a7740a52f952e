"""Measured step-time tables: interpolation, extrapolation, and their use in the simulator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from afdplan.errors import InputError
from afdplan.sim import SimConfig, simulate
from afdplan.timing import Curve, load_coeffs, read_step_table, tables_from_frame, write_step_table
from afdplan.workload import parse_workload

PAPER = load_coeffs("paper-v1-dsv3-910c")


def test_curve_interpolates_and_extrapolates_linearly():
    c = Curve.from_points(np.array([10.0, 0.0, 20.0, 10.0]), np.array([1.0, 0.0, 5.0, 3.0]))
    # Duplicate x=10 → median 2.0.
    assert c(np.array([0.0, 5.0, 10.0, 15.0, 20.0])) == pytest.approx([0, 1, 2, 3.5, 5])
    assert c(30.0) == pytest.approx(5 + 10 * 0.3)  # last segment's slope
    assert c(-10.0) == pytest.approx(-2.0)


def linear_table(times, batches=(32, 64, 128), tokens=(64, 256, 1024, 4096)) -> pd.DataFrame:
    rows = []
    for b in batches:
        for ctx in (100, 1000, 4000):
            rows.append(
                {
                    "op": "attention",
                    "batch": b,
                    "kv_tokens": b * ctx,
                    "seconds": float(times.attention_time(b, b * ctx)),
                }
            )
    for n in tokens:
        rows.append({"op": "ffn", "tokens": n, "seconds": float(times.ffn_time(n))})
        rows.append({"op": "comm", "tokens": n, "seconds": float(times.comm(n))})
    return pd.DataFrame(rows)


def test_table_of_a_linear_model_reproduces_it(tmp_path):
    path = tmp_path / "t.csv"
    write_step_table(linear_table(PAPER), path)
    tab = read_step_table(path, PAPER)
    assert tab.stages() == ["attention", "ffn", "comm"]
    # Between and beyond measured batches and contexts: still the same plane.
    b = np.array([32, 48, 100, 200])
    kv = b * np.array([500.0, 2500.0, 50.0, 8000.0])
    assert tab.attention_time(b, kv) == pytest.approx(PAPER.attention_time(b, kv))
    assert tab.ffn_time(np.array([100, 9000])) == pytest.approx(
        PAPER.ffn_time(np.array([100, 9000]))
    )
    workload = parse_workload("geometric:prefill=300,decode_mean=100")
    cfg = SimConfig(ratio=4, batch=64, requests=10_000)
    assert simulate(workload, tab, cfg).mean_step_time_s == pytest.approx(
        simulate(workload, PAPER, cfg).mean_step_time_s, rel=1e-9
    )


def test_knee_in_ffn_table_changes_simulation():
    # A flat-then-linear FFN (weight-bound below 1024 tokens) costs more at small r·B
    # than its linear fit says.
    frame = pd.DataFrame(
        {"op": ["ffn"] * 3, "tokens": [1, 1024, 4096], "seconds": [185.0, 185.0, 440.0]}
    )
    tab = tables_from_frame(frame, PAPER, "knee")
    assert tab.ffn_time(512) == pytest.approx(185.0)
    assert tab.attention_time(4, 400) == PAPER.attention_time(4, 400)  # falls back


@pytest.mark.parametrize(
    "frame, message",
    [
        (pd.DataFrame({"op": ["ffn"], "tokens": [1]}), "missing column"),
        (pd.DataFrame({"op": ["gemm"], "tokens": [1], "seconds": [1.0]}), "unknown op"),
        (
            pd.DataFrame({"op": ["ffn", "ffn"], "tokens": [1, 2], "seconds": [1.0, -1.0]}),
            "negative 'seconds'",
        ),
        (pd.DataFrame({"op": ["ffn", "ffn"], "tokens": [1, 2], "seconds": [1.0, 0.0]}), "> 0"),
        (pd.DataFrame({"op": ["ffn"], "tokens": [1], "seconds": [1.0]}), "at least 2"),
        (
            pd.DataFrame({"op": ["ffn", "ffn"], "tokens": [1, None], "seconds": [1.0, 2.0]}),
            "non-numeric",
        ),
        (
            pd.DataFrame(
                {
                    "op": ["attention"] * 2,
                    "batch": [4, 4],
                    "kv_tokens": [9, 9],
                    "seconds": [1.0, 2.0],
                }
            ),
            "distinct kv_tokens",
        ),
    ],
)
def test_bad_tables(frame, message):
    with pytest.raises(InputError, match=message):
        tables_from_frame(frame, PAPER, "t")
