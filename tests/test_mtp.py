"""Multi-token prediction: step times per token of progress (``afdplan.timing.mtp``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from afdplan.bundle import Pipeline
from afdplan.calibrate.roofline import derive
from afdplan.calibrate.specs import load_hardware, load_model
from afdplan.errors import InputError
from afdplan.theory.barrier import layered_times
from afdplan.timing import Mtp, coeffs_from_dict, coeffs_to_dict
from afdplan.workload import parse_workload

DSV3 = derive(load_model("deepseek-v3"), load_hardware("h200"), 1, 8).times
L = DSV3.layers


def test_parse_and_refuse():
    assert Mtp.parse("1:0.8") == Mtp(1, 0.8) and Mtp(1, 0.8).tokens_per_step == 1.8
    for text, message in (("2:3", r"within \[0, 2\]"), ("x", "DEPTH:ACCEPTED"),
                          ("0:0", "integer >= 1"), ("1:nan", "within")):  # fmt: skip
        with pytest.raises(InputError, match=message):
            Mtp.parse(text)


def test_coefficients_by_hand():
    # one draft token accepted 80% of the time: a step runs L + 1 layers on 2 tokens a
    # sequence and advances 1.8; per token of progress every time × (L + 1)/(1.8·L), the
    # per-sequence and per-token work × 2 more
    u = Mtp(1, 0.8).apply(DSV3)
    s = (L + 1) / (L * 1.8)
    a, f, c, x = DSV3.attention, DSV3.ffn, DSV3.comm, DSV3.exchange
    assert u.attention.alpha == pytest.approx(a.alpha * s)
    assert u.attention.beta == pytest.approx(a.beta * s)
    assert u.attention.gamma == pytest.approx(a.gamma * 2 * s)
    assert (u.ffn.alpha, u.ffn.beta) == pytest.approx((f.alpha * 2 * s, f.beta * s))
    assert (u.comm.alpha, u.comm.beta) == pytest.approx((c.alpha * 2 * s, c.beta * s))
    assert (u.exchange.alpha, u.exchange.beta) == pytest.approx((x.alpha * 2 * s, x.beta * s))
    assert u.kv_capacity_tokens == DSV3.kv_capacity_tokens and u.experts.verify == 2


@given(st.integers(1, 4), st.floats(0.0, 1.0), st.floats(1.0, 1e4), st.floats(1.0, 512.0))
def test_each_stage_is_the_verified_step_over_its_progress(depth, share, tokens, batch):
    mtp = Mtp(depth, share * depth)
    u = mtp.apply(DSV3)
    s = (L + depth) / (L * mtp.tokens_per_step)
    w = depth + 1
    # the busiest expert rank is read at the batch the FFN runs: the verified tokens
    assert u.ffn_time(tokens) == pytest.approx(s * DSV3.ffn_time(w * tokens), rel=1e-9)
    assert u.comm_time(batch, 8) == pytest.approx(s * DSV3.comm_time(w * batch, 8), rel=1e-9)
    kv = 1500.0 * batch  # the KV is read once a step, whatever the drafts
    want = s * (DSV3.attention.alpha * kv + DSV3.attention.gamma * w * batch
                + DSV3.attention.beta)  # fmt: skip
    assert u.attention_time(batch, kv) == pytest.approx(want, rel=1e-9)


def test_files_keep_the_verified_batch():
    u = Mtp(2, 1.5).apply(DSV3)
    back = coeffs_from_dict(coeffs_to_dict(u), "test")
    assert back.experts.verify == 3
    assert back.ffn_time(256.0) == pytest.approx(u.ffn_time(256.0))
    bad = coeffs_to_dict(u)
    bad["experts"]["verify"] = 0
    with pytest.raises(InputError, match=r"experts\.verify must be an integer >= 1"):
        coeffs_from_dict(bad, "test")


def test_the_simulator_and_the_theory_agree_per_token():
    from afdplan.sim import SimConfig, simulate

    u = Mtp(1, 0.8).apply(DSV3)
    wl = parse_workload("fixed:prefill=1024,decode=128")
    config = SimConfig(ratio=8, batch=64, steps=2000, mode="pingpong", microbatches=2,
                       layers=L, exact=True, seed=0)  # fmt: skip
    stats = wl.stats()
    theory = layered_times(Pipeline("pingpong", 2, L), u, 64.0, 8, stats.theta, stats.v, 0.0)
    run = simulate(wl, u, config)
    assert run.mean_step_time_s == pytest.approx(float(theory.step_time), rel=0.02)
    assert run.mean_step_time_s < simulate(wl, DSV3, config).mean_step_time_s


def test_cli(cli, tmp_path):
    res = cli("plan", "--mtp", "1:0.8")
    assert res.code == 2 and "add --linear-only" in res.err  # the default set has curves
    plain = cli("plan", "--linear-only", "--json").json()
    mtp = cli("plan", "--linear-only", "--mtp", "1:0.8", "--json").json()
    assert plain != mtp
    out = tmp_path / "d"
    res = cli("deploy", "--gpus-ffn", "8", "-m", "1", "--no-verify", "--mtp", "1:0.8",
              "--json", "--save-dir", str(out))  # fmt: skip
    assert res.code == 0, res.err
    data = res.json()
    assert data["launch_refusal"].startswith("--mtp: no runtime launch files")
    assert [Path(f).name for f in data["files"] if f.endswith(".sh")] == ["aiconfigurator.sh"]
    text = (out / "aiconfigurator.sh").read_text()
    assert "--nextn 1" in text and "--nextn-accepted 0.8" in text
    base = cli("deploy", "--gpus-ffn", "8", "-m", "1", "--no-verify", "--json").json()
    # more tokens a step: more tokens/s per GPU at the same per-token SLO
    assert (
        data["colocated"]["best"]["throughput_per_gpu"]
        > base["colocated"]["best"]["throughput_per_gpu"]
    )
    assert np.isfinite(data["chosen"]["throughput_per_gpu"])
