"""Coefficient files: the contract with calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from afdplan.errors import InputError
from afdplan.timing import (
    AttentionLinear,
    Linear,
    LinearStepTimes,
    builtin_coeff_names,
    load_coeffs,
    write_coeffs_file,
)

GOOD = {
    "attention": {"alpha": 1e-7, "beta": 1e-3, "gamma": 2e-5},
    "ffn": {"alpha": 5e-5, "beta": 0.01},
    "comm": {"alpha": 1e-6, "beta": 1e-3},
}


def test_stage_times_hand_values():
    t = LinearStepTimes(AttentionLinear(2.0, 5.0, 3.0), Linear(4.0, 1.0), Linear(0.5, 2.0))
    assert t.attention_time(10, 100) == 2 * 100 + 3 * 10 + 5
    assert t.ffn_time(30) == 121
    assert t.comm_time(10, 3) == 7  # per worker: B tokens
    assert t.with_comm_scope("aggregate").comm_time(10, 3) == 17  # r·B tokens
    assert np.allclose(t.ffn_time(np.array([0, 1])), [1, 5])


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_round_trip(tmp_path, suffix):
    path = tmp_path / f"c{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(GOOD))
    else:
        path.write_text(
            "[attention]\nalpha = 1e-7\nbeta = 1e-3\ngamma = 2e-5\n"
            "[ffn]\nalpha = 5e-5\nbeta = 0.01\n[comm]\nalpha = 1e-6\nbeta = 1e-3\n"
        )
    model = load_coeffs(path)
    assert model.attention.gamma == 2e-5 and model.ffn.beta == 0.01
    again = tmp_path / f"again{suffix}"
    write_coeffs_file(model, again)
    assert load_coeffs(again) == model


def test_gamma_defaults_to_zero(tmp_path):
    data = json.loads(json.dumps(GOOD))
    del data["attention"]["gamma"]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    assert load_coeffs(path).attention.gamma == 0.0


def test_builtin_sets_load():
    names = builtin_coeff_names()
    assert {"paper-v1-dsv3-910c", "llama3-70b-h100"} <= set(names)
    paper = load_coeffs("paper-v1-dsv3-910c")
    assert (paper.attention.alpha, paper.attention.beta) == (0.00165, 50.0)
    assert (paper.ffn.alpha, paper.ffn.beta, paper.comm.alpha, paper.comm.beta) == (
        0.083,
        100.0,
        0.022,
        20.0,
    )
    assert load_coeffs().provenance  # the default set says where it comes from


def _mutated(change):
    data = json.loads(json.dumps(GOOD))
    change(data)
    return data


@pytest.mark.parametrize(
    "data, message",
    [
        (_mutated(lambda d: d["ffn"].update(alpha=-1)), "ffn.alpha must be >= 0"),
        (_mutated(lambda d: d["ffn"].update(alpha=0)), "ffn.alpha must be > 0"),
        (_mutated(lambda d: d["attention"].update(beta="fast")), "must be a number"),
        (_mutated(lambda d: d.pop("comm")), r"missing section \[comm\]"),
        (_mutated(lambda d: d["comm"].pop("beta")), "needs beta"),
        (_mutated(lambda d: d["comm"].update(delta=1)), "unknown key"),
        (_mutated(lambda d: d["comm"].update(scope="global")), "comm.scope"),
        (_mutated(lambda d: d.update(extra={})), "unknown section"),
    ],
)
def test_bad_coefficient_files(tmp_path, data, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=message):
        load_coeffs(path)


def test_unparseable_and_unknown(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[attention\nalpha=")
    with pytest.raises(InputError, match="cannot parse"):
        load_coeffs(path)
    with pytest.raises(InputError, match=r"known: .*paper-v1-dsv3-910c"):
        load_coeffs("no-such-set")
    with pytest.raises(InputError, match="no such"):
        load_coeffs(tmp_path / "missing.json")
