"""An AFD FFN group whose expert exchange overlaps its other micro-batches' experts.

The FFN stage keeps the kernels; each transfer stage carries half the exchange of the
worker's share; one micro-batch gains nothing (its stages run in series anyway).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from afdplan.bundle import Pipeline
from afdplan.calibrate.specs import load_hardware, load_model
from afdplan.deploy import MoeAssumptions, Slo, Space, Target, search
from afdplan.deploy.slo_search import colocated_times, roofline_times
from afdplan.errors import InputError
from afdplan.sim.open import Fleet
from afdplan.theory.barrier import layered_times
from afdplan.timing import Linear, coeffs_from_dict, coeffs_to_dict, transfer_each_way
from afdplan.workload import parse_workload

DSV3, H200 = load_model("deepseek-v3"), load_hardware("h200")
SERIAL = roofline_times(DSV3, H200, H200, 1, 8, False)
OVERLAP = replace(SERIAL, exchange_overlap=True)


@given(st.floats(1.0, 1e4), st.integers(1, 64))
def test_the_exchange_moves_from_the_ffn_to_the_transfers(batch, r):
    x = SERIAL.exchange
    tokens = r * batch
    phi = float(SERIAL.experts.imbalance(tokens, 8))
    assert OVERLAP.ffn_time(tokens) == pytest.approx(
        SERIAL.ffn(tokens * phi) - x(tokens * phi), rel=1e-12
    )
    assert OVERLAP.comm_time(batch, r) == pytest.approx(
        SERIAL.comm_time(batch, r) + x.alpha * tokens + x.beta, rel=1e-12
    )


def test_one_micro_batch_gains_nothing_two_gain():
    # split experts (no busiest-rank spread, which the serial exchange is read at too)
    serial_tp = roofline_times(DSV3, H200, H200, 1, 8, False, expert_tp=8)
    overlap_tp = replace(serial_tp, exchange_overlap=True)
    b = np.arange(8.0, 256.0, 8.0)
    one = Pipeline("pingpong", 1, DSV3.layers)
    serial = layered_times(one, serial_tp, b, 8, 1500.0, 0.0, 0.0).step_time
    overlap = layered_times(one, overlap_tp, b, 8, 1500.0, 0.0, 0.0).step_time
    assert np.allclose(serial, overlap, rtol=1e-9)
    two = Pipeline("pingpong", 2, DSV3.layers)
    serial = layered_times(two, SERIAL, b, 8, 1500.0, 0.0, 0.0).step_time
    overlap = layered_times(two, OVERLAP, b, 8, 1500.0, 0.0, 0.0).step_time
    assert np.all(overlap <= serial * (1 + 1e-12)) and np.any(overlap < serial * 0.999)


def test_the_open_loop_reads_the_same_stages():
    fleet = Fleet(OVERLAP, ratio=8, batch=64)
    *_, f_a, _, c_a, c_b = fleet.coefficients()
    for b in (1.0, 17.0, 64.0):
        assert c_a * b + c_b == pytest.approx(transfer_each_way(OVERLAP.comm_time(b, 8)))
    for tokens in (8.0, 512.0):
        assert fleet.ffn_time(tokens) == pytest.approx(OVERLAP.ffn_time(tokens), rel=1e-3)
    assert f_a == pytest.approx(SERIAL.ffn.alpha - SERIAL.exchange.alpha)


def test_files_keep_it_and_colocated_resets_it():
    back = coeffs_from_dict(coeffs_to_dict(OVERLAP), "test")
    assert back.exchange_overlap and back == replace(OVERLAP, reduce=None, name=back.name)
    assert "overlap" not in coeffs_to_dict(SERIAL)["exchange"]
    bad = coeffs_to_dict(OVERLAP)
    bad["exchange"]["overlap"] = "yes"
    with pytest.raises(InputError, match=r"exchange\.overlap must be true or false"):
        coeffs_from_dict(bad, "test")
    with pytest.raises(InputError, match="needs the FFN's exchange"):
        replace(SERIAL, exchange=None, exchange_overlap=True)
    col = colocated_times(OVERLAP, 10**6, "colocated")
    assert not col.exchange_overlap
    assert col.ffn == Linear(SERIAL.ffn.alpha - SERIAL.exchange.alpha,
                             SERIAL.ffn.beta - SERIAL.exchange.beta)  # fmt: skip


def test_deploy_searches_it_and_its_margin_tries_the_other():
    wl = parse_workload("fixed:prefill=1024,decode=128")
    space = Space(gpus_attention=(1,), gpus_ffn=(8,), microbatches=(1, 2))

    def target(overlap: bool) -> Target:
        return Target(DSV3, H200, H200, wl.stats(), Slo(50.0, 99), space=space,
                      moe=MoeAssumptions(exchange_overlap=overlap))  # fmt: skip

    serial, overlap = search(target(False), "none"), search(target(True), "none")
    assert overlap.chosen["score"] >= serial.chosen["score"]
    # colocated decode overlaps under two-batch overlap already: the flag leaves it alone
    assert overlap.colocated["score"] == pytest.approx(serial.colocated["score"])
    margin = serial.with_margin().margin
    assert margin[-1]["assumption"].endswith("exchange overlapped")
    assert margin[-1]["afd_over_colocated"] == pytest.approx(overlap.afd_over_colocated)


def test_deploy_cli_flag(cli):
    res = cli("deploy", "--gpus-ffn", "8", "-m", "2", "--no-verify", "--exchange-overlap",
              "--json")  # fmt: skip
    assert res.code == 0, res.err
    data = res.json()
    assert data["chosen_step_times"]["exchange"]["overlap"] is True
    assert data["colocated"]["margin"][0]["assumption"].endswith("exchange overlapped")


def test_the_closed_simulator_and_the_theory_agree_with_it():
    from afdplan.sim import SimConfig, simulate

    wl = parse_workload("fixed:prefill=1024,decode=128")
    pipe = Pipeline("pingpong", 2, DSV3.layers)
    config = SimConfig(ratio=8, batch=64, steps=2000, mode="pingpong", microbatches=2,
                       layers=DSV3.layers, exact=True, seed=0)  # fmt: skip
    for times in (SERIAL, OVERLAP):
        run = simulate(wl, times, config)
        stats = wl.stats()
        theory = float(
            layered_times(pipe, times, 64.0, 8, stats.theta, stats.v, 0.0).step_time
        )
        assert run.mean_step_time_s == pytest.approx(theory, rel=0.02)
    assert simulate(wl, OVERLAP, config).mean_step_time_s < simulate(
        wl, SERIAL, config
    ).mean_step_time_s


def test_plan_and_simulate_take_the_flag(cli):
    serial = cli("plan", "--pipeline", "pingpong", "-m", "2", "--json").json()
    overlap = cli("plan", "--pipeline", "pingpong", "-m", "2", "--exchange-overlap",
                  "--json").json()  # fmt: skip
    assert serial != overlap
    res = cli("plan", "--coeffs", "paper-v1-dsv3-910c", "--exchange-overlap")
    assert res.code == 2 and "holds no expert exchange" in res.err
    res = cli("simulate", "-r", "8", "-B", "64", "--pipeline", "pingpong", "-m", "2",
              "--exchange-overlap", "--requests", "3000")  # fmt: skip
    assert res.code == 0, res.err
