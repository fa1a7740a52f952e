"""Open-system simulation and capacity planning."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afdplan.bundle import Pipeline
from afdplan.calibrate.resolve import resolve_coeffs
from afdplan.capacity import Slos, predict, saturation_rate, size_fleet, step_time_at
from afdplan.errors import InputError
from afdplan.sim import SimConfig, simulate
from afdplan.sim.open import Arrivals, Fleet, Gamma, Poisson, TraceTimes, simulate_open
from afdplan.theory.queueing import allen_cunneen_wait, erlang_c
from afdplan.workload import EmpiricalWorkload, parse_workload

TIMES = resolve_coeffs("deepseek-v3-h200")
EVEN = replace(TIMES, experts=None)  # no expert barrier: the hand-computed steps
WORKLOAD = parse_workload(
    "lognormal:prefill_median=1024,prefill_sigma=0.8,prefill_max=16384,"
    "decode_median=64,decode_sigma=0.8,decode_max=512"
)
PINGPONG = Pipeline("pingpong", 2, 61)


def fleet(**kw) -> Fleet:
    base = {"times": TIMES, "ratio": 4, "batch": 16, "bundles": 2, "pipeline": PINGPONG}
    return Fleet(**{**base, **kw})


@pytest.mark.parametrize("router", ["round-robin", "least-kv", "power-of-two"])
@pytest.mark.parametrize(
    "pipeline",
    [PINGPONG, Pipeline("overlap"), Pipeline("serial"), Pipeline("aic-optimistic", 3, 61)],
)
def test_compiled_loop_equals_the_reference(router, pipeline):
    f = fleet(router=router, pipeline=pipeline, kv_capacity_tokens=40_000)
    arr = Arrivals("poisson", 60.0)
    fast = simulate_open(WORKLOAD, f, arr, 1500, seed=3)
    slow = simulate_open(WORKLOAD, f, arr, 1500, seed=3, reference=True)
    np.testing.assert_array_equal(fast.worker, slow.worker)
    np.testing.assert_allclose(fast.start, slow.start, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fast.finish, slow.finish, rtol=0, atol=1e-9)
    assert fast.steps == slow.steps
    for key in ("in_system", "queued", "kv_tokens"):
        np.testing.assert_array_equal(fast.events[key], slow.events[key])


def test_every_request_is_served_once_and_in_order():
    f = fleet(router="round-robin")
    run = simulate_open(WORKLOAD, f, Arrivals("gamma", 80.0, cv=3.0), 3000, seed=1)
    assert np.all(np.isfinite(run.start)) and np.all(np.isfinite(run.finish))
    assert np.all(run.start >= run.arrival - 1e-12)
    assert np.all(run.finish > run.start)
    np.testing.assert_array_equal(run.worker, np.arange(3000) % f.workers)
    # FIFO per worker: admissions happen in arrival order
    for w in range(f.workers):
        starts = run.start[run.worker == w]
        assert np.all(np.diff(starts) >= 0)
    assert run.events["in_system"][-1] == 0 and run.events["queued"][-1] == 0


def test_one_request_at_a_time_takes_the_hand_computed_step():
    """Arrivals far apart: no queue, and every step serves one sequence. Its micro-batch is
    the only one with work, so the other is not run and the step is the serial one at the
    request's own context: L·(a + x + f + y), x = y = half the round trip t_C (DESIGN §8
    by hand)."""
    wl = EmpiricalWorkload(
        prompt=np.array([1000] * 5), decode=np.array([4] * 5), arrival=np.arange(5) * 100.0
    )
    f = fleet(ratio=2, bundles=1, times=EVEN)
    run = simulate_open(wl, f, Arrivals("trace"), 5, seed=0)
    assert np.all(run.wait == 0)
    a, fa, c = EVEN.attention, EVEN.ffn, EVEN.comm
    total = sum(
        (a.alpha * (1000 + k) + a.gamma + a.beta) + (c.alpha + c.beta) + (fa.alpha + fa.beta)
        for k in range(4)
    )
    np.testing.assert_allclose(run.finish - run.start, total, rtol=1e-12)


def test_two_micro_batches_each_carry_their_own_requests():
    """A runs alone; B arrives during A's first step and joins at its end, in the other
    micro-batch (the one with the fewest sequences). Their joint step is DESIGN §8's closed
    form with each micro-batch at its own context, the larger setting the round trip."""
    wl = EmpiricalWorkload(
        prompt=np.array([1000, 3000]), decode=np.array([3, 1]), arrival=np.array([0.0, 1e-6])
    )
    f = fleet(ratio=1, bundles=1, batch=4, times=EVEN)
    run = simulate_open(wl, f, Arrivals("trace"), 2, seed=0)
    a, fa, c = EVEN.attention, EVEN.ffn, EVEN.comm
    m, L = 2, 61
    t_a = [a.alpha * kv + a.gamma + a.beta for kv in (1001, 3000)]  # A in its 2nd step
    # one sequence per micro-batch; each direction carries half the round trip
    x, ff = (c.alpha + c.beta) / 2 / L, (fa.alpha + fa.beta) / L
    s = max(t_a) / L + 2 * x + ff
    s_max = max(sum(t_a) / m / L, x, ff)
    joint = s + (m - 1) * s_max + (L - 1) * max(m * s_max, s)
    assert run.finish[1] - run.start[1] == pytest.approx(joint, rel=1e-12)
    alone = a.alpha * 1000 + a.gamma + a.beta + (c.alpha + c.beta) + fa.alpha + fa.beta
    assert run.start[1] == pytest.approx(alone, rel=1e-12)


def test_littles_law():
    run = simulate_open(WORKLOAD, fleet(), Arrivals("poisson", 90.0), 20_000, seed=2)
    ev = run.events
    mean_in_system = float((ev["in_system"][:-1] * np.diff(ev["time"])).sum()) / float(
        ev["time"][-1] - ev["time"][0]
    )
    lam = run.arrival.size / float(ev["time"][-1] - ev["time"][0])
    sojourn = float(np.mean(run.finish - run.arrival))
    assert mean_in_system == pytest.approx(lam * sojourn, rel=0.01)


def test_low_load_matches_theory_and_high_load_the_closed_system():
    f = fleet(bundles=1)
    sat = saturation_rate(f, WORKLOAD)
    low = simulate_open(WORKLOAD, f, Arrivals("poisson", 0.2 * sat), 20_000, seed=0).summary()
    pred = predict(f, WORKLOAD, 0.2 * sat)
    assert low["tpot_mean_s"] == pytest.approx(pred.step_time_s, rel=0.02)
    assert low["wait_mean_s"] == pytest.approx(pred.wait_mean_s, rel=0.1)
    high = simulate_open(WORKLOAD, f, Arrivals("poisson", 1.5 * sat), 40_000, seed=0).summary()
    closed = simulate(
        WORKLOAD,
        TIMES,
        SimConfig(ratio=4, batch=16, requests=40_000, mode="pingpong", microbatches=2, layers=61),
    )
    closed_rps = closed.throughput_per_instance * (4 + 1) / WORKLOAD.stats().mu_decode
    assert high["throughput_requests"] == pytest.approx(closed_rps, rel=0.05)
    assert high["throughput_requests"] == pytest.approx(sat, rel=0.1)


def test_deterministic_per_seed():
    f = fleet(router="power-of-two")
    a = simulate_open(WORKLOAD, f, Arrivals("poisson", 50.0), 2000, seed=7)
    b = simulate_open(WORKLOAD, f, Arrivals("poisson", 50.0), 2000, seed=7)
    c = simulate_open(WORKLOAD, f, Arrivals("poisson", 50.0), 2000, seed=8)
    np.testing.assert_array_equal(a.finish, b.finish)
    assert not np.array_equal(a.finish, c.finish)


def test_arrival_processes_are_classes_with_their_own_ca2():
    # Each process is its own class, chosen by name or parsed; ca² is its own (a trace's is
    # measured on its gaps: 0 for evenly spaced times, > 1 for bursts).
    assert type(Arrivals("poisson", 2.0)) is Poisson and Arrivals("poisson", 2.0).ca2() == 1.0
    bursty = Arrivals.parse("gamma:cv=3", 5.0)
    assert type(bursty) is Gamma and bursty.ca2() == pytest.approx(9.0)
    assert bursty.describe() == "gamma cv=3 at 5 req/s"
    trace = Arrivals.parse("trace", None)
    assert type(trace) is TraceTimes and trace.ca2(np.arange(10.0)) == 0.0
    assert trace.ca2(np.array([0.0, 0.0, 0.0, 10.0])) > 1.0
    assert type(replace(bursty, rate=1.0)) is Gamma
    with pytest.raises(InputError, match="poisson arrivals take no cv"):
        Arrivals("poisson", 1.0, cv=2.0)
    # the drawn gaps have the law's mean and ca²
    times, _, _ = bursty.draw(WORKLOAD, 200_000, np.random.default_rng(4))
    gaps = np.diff(times)
    assert gaps.mean() == pytest.approx(1 / 5.0, rel=0.02)
    assert gaps.var() / gaps.mean() ** 2 == pytest.approx(9.0, rel=0.05)


def test_trace_arrivals_scale_and_repeat():
    wl = EmpiricalWorkload(
        prompt=np.array([10, 20, 30]), decode=np.array([2, 2, 2]), arrival=np.array([0.0, 1, 2])
    )
    times, prompt, _ = Arrivals("trace", 2.0).draw(wl, 7, np.random.default_rng(0))
    np.testing.assert_allclose(times, np.arange(7) * 0.5)
    np.testing.assert_array_equal(prompt, [10, 20, 30, 10, 20, 30, 10])


def test_unsorted_or_missing_timestamps_are_refused():
    wl = EmpiricalWorkload(prompt=np.array([1, 2]), decode=np.array([1, 1]))
    with pytest.raises(InputError, match="arrival-time column"):
        simulate_open(wl, fleet(), Arrivals("trace"), 2)
    wl = EmpiricalWorkload(
        prompt=np.array([1, 2]), decode=np.array([1, 1]), arrival=np.array([0.0, 1.0]),
        arrival_sorted=False,
    )  # fmt: skip
    with pytest.raises(InputError, match="not in order"):
        simulate_open(wl, fleet(), Arrivals("trace"), 2)


@pytest.mark.parametrize(
    ("servers", "offered", "expected"), [(1, 0.5, 0.5), (2, 1.0, 1 / 3), (1, 0.0, 0.0)]
)
def test_erlang_c_hand_values(servers, offered, expected):
    assert erlang_c(servers, offered) == pytest.approx(expected)


@given(st.floats(0.05, 0.95), st.floats(0.1, 10.0))
@settings(max_examples=50, deadline=None)
def test_allen_cunneen_is_exact_for_mm1(rho, service):
    lam = rho / service
    assert allen_cunneen_wait(1, lam, service, 1.0, 1.0) == pytest.approx(rho * service / (1 - rho))


@given(st.integers(1, 64), st.floats(0.01, 0.99))
@settings(max_examples=60, deadline=None)
def test_erlang_c_is_a_probability_increasing_in_load(c, share):
    p = erlang_c(c, share * c)
    assert 0.0 <= p <= 1.0
    assert erlang_c(c, min(share * 1.01, 0.999) * c) >= p - 1e-12


def test_size_fleet_returns_the_smallest_that_meets():
    f = fleet(bundles=1)
    slos = Slos(tpot_s=0.09, wait_s=1.0)
    rate = 2.5 * saturation_rate(f, WORKLOAD)
    sizing = size_fleet(WORKLOAD, f, Arrivals("poisson", rate), slos, 8000, seed=0)
    by_n = {p.bundles: p for p in sizing.probes}
    assert by_n[sizing.bundles].meets
    assert sizing.bundles > 1 and not by_n[sizing.bundles - 1].meets
    assert sizing.gpus == sizing.bundles * (4 * TIMES.gpus_attention + TIMES.gpus_ffn)


def test_a_fleet_that_falls_behind_is_never_the_answer():
    # Only a loose TPOT SLO: a full batch still steps fast enough, so the SLOs alone would
    # accept a fleet whose queue grows without bound. Stability rejects it: the answer
    # completes what it is offered and its closed-form saturation rate covers the rate.
    f = fleet(bundles=1)
    rate = 3.0 * saturation_rate(f, WORKLOAD)
    sizing = size_fleet(WORKLOAD, f, Arrivals("poisson", rate), Slos(tpot_s=1.0), 4000, seed=0)
    chosen = sizing.chosen
    assert chosen.stable and chosen.prediction.saturation_rate >= rate
    s = chosen.summary
    assert s["throughput_requests"] == pytest.approx(s["offered_rate"], rel=0.05)
    behind = [p for p in sizing.probes if not p.stable]
    assert behind and all(
        p.bundles < sizing.bundles and p.summary["unstable_because"] for p in behind
    )
    assert all(not p.meets for p in behind)


@pytest.mark.parametrize("share", [0.3, 0.7, 0.95])
def test_open_statistics_share_one_window_and_obey_littles_law(share):
    # Every figure over the measured window: Little's law from the summary alone, and
    # goodput <= completed <= offered (+ counting noise).
    f = fleet(bundles=1)
    rate = share * saturation_rate(f, WORKLOAD)
    s = simulate_open(WORKLOAD, f, Arrivals("poisson", rate), 40_000, seed=3).summary(
        tpot_slo_s=0.06
    )
    assert s["stable"] and s["unstable_because"] == ""
    assert s["mean_in_system"] == pytest.approx(s["offered_rate"] * s["residence_mean_s"], rel=0.03)
    noise = 3 * math.sqrt(s["offered_rate"] * s["window_s"]) / s["window_s"]
    assert s["goodput"] <= s["throughput_requests"] <= s["offered_rate"] + noise


def test_stability_flags_a_growing_queue():
    f = fleet(bundles=1)
    sat = saturation_rate(f, WORKLOAD)
    over = simulate_open(WORKLOAD, f, Arrivals("poisson", 1.3 * sat), 20_000, seed=1)
    verdict = over.stability()
    assert not verdict["stable"] and "falls behind" in verdict["because"]
    assert verdict["growth"] > 1000
    under = simulate_open(WORKLOAD, f, Arrivals("gamma", 0.9 * sat, 3.0), 20_000, seed=1)
    assert under.stability()["stable"]


def test_impossible_slos_are_refused():
    f = fleet(bundles=1)
    with pytest.raises(InputError, match="even an idle bundle's step takes"):
        size_fleet(WORKLOAD, f, Arrivals("poisson", 10.0), Slos(tpot_s=0.01), 1000)
    # far past what 2 bundles saturate at: refused from the closed form, nothing simulated
    with pytest.raises(InputError, match="no fleet of up to 2 bundles keeps up"):
        size_fleet(WORKLOAD, f, Arrivals("poisson", 1e4), Slos(wait_s=0.1), 4000, max_bundles=2)
    # within reach but an SLO none meets: simulated, and the best one seen is named
    sat = saturation_rate(f, WORKLOAD)
    with pytest.raises(InputError, match="no fleet of up to 2 bundles meets the SLOs"):
        size_fleet(WORKLOAD, f, Arrivals("poisson", 1.2 * sat), Slos(wait_s=1e-9), 4000,
                   max_bundles=2)  # fmt: skip


def test_step_time_grows_with_occupancy():
    f = fleet(bundles=1)
    values = [step_time_at(f, WORKLOAD, b) for b in (1, 4, 8, 16)]
    assert values == sorted(values)
    assert math.isfinite(predict(f, WORKLOAD, 1.0).wait_mean_s)


def test_ttft_is_prefill_plus_wait_and_counts_against_goodput():
    run = simulate_open(WORKLOAD, fleet(), Arrivals("poisson", 80.0), 3000, seed=4)
    prefill = (2e-4, 0.02)
    np.testing.assert_allclose(run.ttft(prefill), 2e-4 * run.prompt + 0.02 + run.wait)
    loose = run.summary(prefill=prefill, ttft_slo_s=100.0)
    tight = run.summary(prefill=prefill, ttft_slo_s=0.05)
    assert loose["slo_attainment"] == 1.0 and tight["slo_attainment"] < 0.5
    keep = run.measured
    assert loose["ttft_p99_s"] == pytest.approx(np.percentile(run.ttft(prefill)[keep], 99))
    with pytest.raises(InputError, match="needs the prefill"):
        Slos(ttft_s=1.0)


def test_sizing_several_rates_in_parallel_matches_one_by_one():
    from afdplan.capacity import size_fleets

    f = fleet(bundles=1)
    slos = Slos(tpot_s=0.09, wait_s=1.0)
    sat = saturation_rate(f, WORKLOAD)
    rates = [Arrivals("poisson", share * sat) for share in (0.5, 2.5)]
    together = size_fleets(WORKLOAD, f, rates, slos, 3000, n_jobs=2)
    alone = [size_fleet(WORKLOAD, f, arr, slos, 3000) for arr in rates]
    assert [s.bundles for s in together] == [s.bundles for s in alone]
    assert [s.chosen.summary for s in together] == [s.chosen.summary for s in alone]


def test_capacity_cli_with_bursty_arrivals_and_its_curve(cli):
    res = cli(
        "capacity", "--arrivals", "gamma:cv=2", "--rate", "40", "--tpot-ms", "80", "-r", "4",
        "-B", "16", "--requests", "2000", "--json",
    )  # fmt: skip
    assert res.code == 0, res.err
    out = res.json()
    assert out["bundles"] >= 1 and out["rows"][-1]["meets_slos"]
    assert out["curve"] and {row["arrivals"] for row in out["curve"]} == {"gamma cv=2"}
    assert sum(row["knee"] for row in out["curve"]) == 1


def test_theory_runs_only_the_micro_batches_that_have_sequences():
    from afdplan.capacity import running_pipeline

    assert [running_pipeline(PINGPONG, b).microbatches for b in (0.2, 1.0, 1.5, 2.0, 9.0)] == [
        1,
        1,
        2,
        2,
        2,
    ]
    # One sequence per worker: the serial step (one micro-batch), as the simulator runs it.
    one = fleet(ratio=1, bundles=1)
    serial = fleet(ratio=1, bundles=1, pipeline=Pipeline("serial", 1, 61))
    assert step_time_at(one, WORKLOAD, 1.0) == pytest.approx(step_time_at(serial, WORKLOAD, 1.0))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([0.0, 1.0, 1e300, -1e300, float("inf"), float("-inf")]),
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([None, 3.0]),
)
def test_any_timestamps_give_a_run_or_a_one_line_error(tmp_path_factory, stamps, rate):
    # inf, -inf, NaN, equal, decreasing, huge: the trace still plans (its lengths are
    # good), and the open system either runs or refuses in one line, never crashes.
    from afdplan.workload import read_trace

    path = tmp_path_factory.mktemp("ts") / "t.csv"
    rows = "".join(f"{t!r},{10 + i},{1 + i % 3}\n" for i, t in enumerate(stamps))
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n" + rows)
    wl = read_trace(path)
    assert wl.stats().theta > 0
    try:
        run = simulate_open(wl, fleet(bundles=1), Arrivals("trace", rate), 20, seed=0)
    except InputError as exc:
        assert "\n" not in str(exc)
    else:
        assert np.isfinite(run.finish).all() and (run.finish >= run.arrival).all()


@pytest.mark.slow
def test_the_compiled_loop_caches_across_processes_and_pipeline_kinds(tmp_path):
    # One process per pipeline kind on one on-disk cache: every kind reuses the one
    # compiled loop (a kind is a C callback of one signature), so what one kind writes to
    # the cache never holds a reference another process cannot rebuild.
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    for kind in ("pingpong", "serial", "pingpong", "overlap", "aic-optimistic"):
        layered = ["-m", "2", "--layers", "4"] if kind in ("pingpong", "aic-optimistic") else []
        code = (
            "import sys; from afdplan.cli import main; sys.argv = ['afdplan'] + sys.argv[1:]; "
            "main()"
        )
        args = ["simulate", "--arrivals", "poisson", "--rate", "5", "-r", "2", "-B", "4",
                "--requests", "300", "--pipeline", kind, *layered]  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr


def test_a_colocated_group_steps_as_deploy_scores_it():
    """One request alone in a colocated group (m = 1): attention, the FFN on the same GPUs
    and the exchange one after another, L·(a + f + x + y) — by hand; the compiled loop and
    the reference agree with several micro-batches and a KV cap too."""
    from afdplan.deploy.slo_search import colocated_times

    col = colocated_times(EVEN, 10_000_000, "colocated", 1)
    wl = EmpiricalWorkload(
        prompt=np.array([1000] * 3), decode=np.array([3] * 3), arrival=np.arange(3) * 100.0
    )
    f = Fleet(col, 4, 8, 1, Pipeline("pingpong", 1, 61), colocated=True)
    assert f.gpus == 4 * col.gpus_attention  # the FFN runs on the attention GPUs
    run = simulate_open(wl, f, Arrivals("trace"), 3, seed=0)
    a, fa, c = col.attention, col.ffn, col.comm
    total = sum(
        (a.alpha * (1000 + k) + a.gamma + a.beta) + (fa.alpha + fa.beta) + (c.alpha + c.beta)
        for k in range(3)
    )
    np.testing.assert_allclose(run.finish - run.start, total, rtol=1e-12)
    for m in (1, 2):
        g = Fleet(col, 4, 16, 2, Pipeline("pingpong", m, 61), 40_000, colocated=True)
        fast = simulate_open(WORKLOAD, g, Arrivals("poisson", 60.0), 1500, seed=3)
        slow = simulate_open(WORKLOAD, g, Arrivals("poisson", 60.0), 1500, seed=3, reference=True)
        np.testing.assert_allclose(fast.finish, slow.finish, rtol=0, atol=1e-9)
        low = simulate_open(WORKLOAD, g, Arrivals("poisson", 0.2 * saturation_rate(g, WORKLOAD)),
                            20_000, seed=0).summary()  # fmt: skip
        pred = predict(g, WORKLOAD, 0.2 * saturation_rate(g, WORKLOAD))
        assert low["tpot_mean_s"] == pytest.approx(pred.step_time_s, rel=0.03)
