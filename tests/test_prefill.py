"""The prefill pool: its roofline, its queue (compiled and plain, against each other and
against M/D/1), its sizing, and the capacity command that puts it in front of decode."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afdplan.calibrate.roofline import derive_prefill, prefill_gpus
from afdplan.calibrate.specs import load_hardware, load_model
from afdplan.capacity import (
    PREFILL_MAX_LOAD,
    PREFILL_TTFT_SHARE,
    Slos,
    prefill_saturation,
    size_prefill,
)
from afdplan.errors import InputError
from afdplan.sim.open import Arrivals, PrefillPool, serve
from afdplan.sim.open.prefill import serve_reference
from afdplan.timing import PrefillTimes
from afdplan.workload import parse_workload

TIMES = PrefillTimes(
    per_token=1e-4, per_pair=1e-9, weights=0.02, fixed=0.001, transfer_per_token=1e-6,
    transfer_fixed=5e-6, max_batch_tokens=4096,
)  # fmt: skip


def test_roofline_prefill_hand_computation():
    model, hw = load_model("llama3-70b"), load_hardware("h100-sxm")
    t = derive_prefill(model, hw, 4)
    flops = 989e12 * 0.7
    attn = 80 * (8192 * 8192 * 2 + 2 * 8192 * 8 * 128)
    ffn = 80 * 3 * 8192 * 28672
    reduce = 2 * 80 * 1.5 * 8192 * 2 / (450e9 * 0.8)  # two TP-4 all-reduces a layer
    assert t.per_token == pytest.approx(2 * (attn + ffn) / (4 * flops) + reduce)
    assert t.per_pair == pytest.approx(80 * 4 * 64 * 128 / (4 * flops))
    assert t.weights == pytest.approx((attn + ffn) * 2 / (4 * 3.35e12 * 0.8))
    assert t.transfer_per_token == pytest.approx(80 * 2 * 8 * 128 * 2 / (50e9 * 0.8))
    assert prefill_gpus(model, hw) == 4  # 141 GB of weights
    with pytest.raises(InputError, match="do not fit 1 x h100-sxm"):
        derive_prefill(model, hw, 1)


def test_forward_is_the_roofline_of_one_batch():
    assert TIMES.forward(1000, 500_500) == pytest.approx(0.1 + 500_500e-9 + 0.001)
    assert TIMES.forward(10, 55) == pytest.approx(0.02 + 0.001)  # the weight read binds
    # 10k tokens run in three chunks, each reading the weights and paying the fixed cost
    assert TIMES.forward(10_000, 0) == pytest.approx(1.0 + 3 * 0.001)


def test_a_lone_request_is_prefilled_then_sent():
    pool = PrefillPool(2, TIMES)
    arrival, prompt = np.array([0.0, 10.0]), np.array([1000.0, 2000.0])
    run = serve(arrival, prompt, pool)
    assert run.begin.tolist() == [0.0, 10.0]
    assert run.done == pytest.approx(arrival + TIMES.forward(prompt, prompt * (prompt + 1) / 2))
    assert run.ready == pytest.approx(run.done + TIMES.transfer(prompt))


def test_waiting_prompts_share_a_batch_up_to_the_token_budget():
    pool = PrefillPool(1, TIMES)
    arrival = np.array([0.0, 0.01, 0.02, 0.03])
    prompt = np.array([3000.0, 500.0, 500.0, 200.0])  # the first runs alone; 1,200 wait
    run = serve(arrival, prompt, pool)
    assert run.begin[1] == run.begin[2] == run.begin[3] == run.done[0]
    assert len(set(run.done[1:])) == 1


@settings(max_examples=40, deadline=None)
@given(
    gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=60),
    prompts=st.lists(st.integers(1, 9000), min_size=60, max_size=60),
    instances=st.integers(1, 4),
)
def test_compiled_pool_equals_the_event_heap(gaps, prompts, instances):
    arrival = np.cumsum(gaps)
    prompt = np.array(prompts[: arrival.size], dtype=float)
    pool = PrefillPool(instances, TIMES)
    a, b = serve(arrival, prompt, pool), serve_reference(arrival, prompt, pool)
    np.testing.assert_allclose(a.done, b.done, rtol=1e-12)
    np.testing.assert_allclose(a.begin, b.begin, rtol=1e-12)
    assert a.busy == pytest.approx(b.busy)
    assert np.all(a.begin >= arrival) and np.all(np.diff(a.begin) >= 0)  # FIFO, causal
    assert a.busy <= instances * (a.done.max() - arrival.min()) + 1e-9


def test_one_instance_without_batching_is_md1():
    """Poisson arrivals, one prompt length, one prompt a forward: the mean wait is the
    Pollaczek–Khinchine M/D/1 value ρ·s / (2(1 − ρ))."""
    rng = np.random.default_rng(3)
    p = 1000.0
    times = PrefillTimes(
        per_token=1e-4, per_pair=0.0, weights=0.0, fixed=0.0, transfer_per_token=0.0,
        transfer_fixed=0.0, max_batch_tokens=1000,
    )  # fmt: skip
    service = 0.1
    for rho in (0.5, 0.8):
        n = 400_000
        arrival = np.cumsum(rng.exponential(service / rho, n))
        run = serve(arrival, np.full(n, p), PrefillPool(1, times))
        wait = (run.begin - arrival)[n // 10 :].mean()
        assert wait == pytest.approx(rho * service / (2 * (1 - rho)), rel=0.05)


WL = parse_workload(
    "lognormal:prefill_median=1024,prefill_sigma=0.8,prefill_max=8192,"
    "decode_median=128,decode_sigma=0.9,decode_max=2048"
)


def test_sizing_takes_the_fewest_instances_that_meet_the_ttft_share():
    times = derive_prefill(load_model("deepseek-v3"), load_hardware("h200"))
    slos = Slos(ttft_s=1.0, prefill_pool=True)
    arrivals = Arrivals("poisson", 60.0)
    pool = size_prefill(WL, arrivals, PrefillPool(1, times), slos, 20_000, seed=1)
    draw = arrivals.draw(WL, 20_000, np.random.default_rng(1))

    def stage_p99(n):
        run = serve(draw[0], draw[1], PrefillPool(n, times))
        keep = draw[0] >= draw[0][0] + 0.1 * (draw[0][-1] - draw[0][0])
        return np.percentile((run.ready - draw[0])[keep], 99)

    assert stage_p99(pool.instances) <= PREFILL_TTFT_SHARE * 1.0
    # one fewer either misses the stage's share or is offered more than 95% of its
    # saturation rate (every forward full)
    rate = len(draw[0]) / (draw[0][-1] - draw[0][0])
    full = prefill_saturation(times, draw[1])
    assert rate <= PREFILL_MAX_LOAD * pool.instances * full
    fewer = pool.instances - 1
    assert fewer == 0 or stage_p99(fewer) > PREFILL_TTFT_SHARE * 1.0 or (
        rate > PREFILL_MAX_LOAD * fewer * full
    )
    with pytest.raises(InputError, match="no number of instances meets it"):
        size_prefill(WL, arrivals, PrefillPool(1, times), Slos(ttft_s=0.05, prefill_pool=True),
                     2000)  # fmt: skip


def test_capacity_sizes_prefill_and_decode_together(cli):
    res = cli(
        "capacity", "--trace", "azure-conv-2023", "--rate", "10x", "--tpot-ms", "50",
        "--ttft-ms", "2000", "--prefill-hw", "h200", "--no-curve", "--requests", "20000",
        "--json",
    )  # fmt: skip
    assert res.code == 0, res.err
    data = res.json()
    pool = data["prefill"]
    assert pool["instances"] >= 1 and pool["gpus"] == pool["instances"] * pool["gpus_per_instance"]
    assert data["total_gpus"] == data["gpus"] + pool["gpus"]
    sim = data["chosen"]["simulated"]
    # TTFT is simulated end to end: it holds the prefill stage and the decode wait
    assert sim["ttft_p99_s"] <= 2.0 and sim["ttft_p50_s"] >= sim["prefill_stage_p50_s"]
    assert 0 < sim["prefill_utilisation"] <= 1.0
    assert math.isclose(sim["mean_in_system"], sim["throughput_requests"]
                        * sim["residence_mean_s"], rel_tol=0.1)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prefill-gpus", "8"], "only with --prefill-hw"),
        (["--prefill-hw", "h200"], "give --ttft-ms"),
        (["--prefill-hw", "h200", "--ttft-ms", "2000", "--prefill-alpha", "1e-4"],
         "give one or the other"),
        (["--prefill-hw", "h200", "--ttft-ms", "2000", "--prefill-instances", "0"],
         "--prefill-instances must be >= 1"),
        (["--prefill-hw", "h200", "--ttft-ms", "2000", "--prefill-gpus", "1"], "do not fit"),
        (["--prefill-hw", "h9000", "--ttft-ms", "2000"], "unknown hardware"),
        (["--prefill-hw", "h200", "--ttft-ms", "2000", "--prefill-tokens", "0"],
         "--prefill-tokens must be >= 1"),
        (["--prefill-hw", "h200", "--ttft-ms", "2000", "--prefill-model", "nope"],
         "unknown model 'nope'"),
        (["--prefill-hw", "h200", "--ttft-ms", "2000", "--coeffs", "paper-v1-dsv3-910c"],
         "say which model the pool serves"),
        (["--prefill-layout", "dp"], "only with --prefill-hw"),
        (["--prefill-hw", "h200", "--ttft-ms", "2000", "--prefill-model", "llama3-70b",
          "--prefill-layout", "dp"], "dp needs an MoE model"),
        (["--prefill-hw", "h200", "--ttft-ms", "2000", "--prefill-layout", "ep"],
         "'ep' is not one of"),
    ],
)  # fmt: skip
def test_prefill_options_are_checked(cli, args, message):
    res = cli("capacity", "--trace", "azure-conv-2023", "--rate", "1x", "--tpot-ms", "50",
              "--no-curve", *args)  # fmt: skip
    assert res.code == 2, (res.code, res.out[-300:])
    assert message in res.err


def test_measured_prefill_fits_the_tables_and_departs_from_the_roofline(aic):
    """aiconfigurator-core's context-attention and MoE tables for DeepSeek-V3 on 8 x H200:
    the fitted a·P + c·Q + f holds them within 10%, and an 8k prompt takes 3-4x the
    roofline's time (the MoE kernels' share of peak, as in decode)."""
    from afdplan.calibrate.prefill import measured_prefill

    model, hw = load_model("deepseek-v3"), load_hardware("h200")
    times, error = measured_prefill(model, "h200_sxm", hw)
    assert error < 0.10 and times.gpus == 8
    roof = derive_prefill(model, hw)
    q = 8192 * 8193 / 2
    assert 3.0 < times.forward(8192, q) / roof.forward(8192, q) < 4.0
    assert times.transfer_per_token == roof.transfer_per_token
    dense, _ = measured_prefill(load_model("llama3-70b"), "h100_sxm", load_hardware("h100-sxm"))
    assert dense.gpus == 4 and 0.1 < dense.forward(8192, q) < 1.0


def test_data_parallel_prefill_ranks_each_take_a_prompt(aic):
    """The dp layout (data-parallel attention, experts over all 8): one forward holds eight
    prompts and the fit holds the tables within 5%. On H200 the tables time every expert
    split over the 8 GPUs (moe_tp_size 8) 2.5x faster at prefill sizes than expert
    parallel, so the dp instance uses that, as AIConfigurator's prefill worker does (its
    vLLM 0.24.0 disagg answer for DeepSeek-V3, ISL 1155: DP8 + etp8, 25.8 prompts a second,
    eight every 310 ms). Ours: eight 1,155-token prompts in 0.7-1.0x of that, and under half
    the TP instance's one batch of them. The roofline's dp instance skips the attention
    all-reduce and takes 8x the tokens."""
    from afdplan.calibrate.prefill import measured_prefill

    model, hw = load_model("deepseek-v3"), load_hardware("h200")
    tp, _ = measured_prefill(model, "h200_sxm", hw, layout="tp")
    dp, error = measured_prefill(model, "h200_sxm", hw, layout="dp")
    assert error < 0.05 and dp.max_batch_tokens == 8 * tp.max_batch_tokens
    assert "experts TP 8" in dp.name and "EP 8" in tp.name
    n, q = 8 * 1155, 8 * 1155 * 1156 / 2
    assert 0.7 * 0.310 < dp.forward(n, q) < 0.310
    assert dp.forward(n, q) < 0.5 * tp.forward(n, q)
    roof_tp, roof_dp = derive_prefill(model, hw), derive_prefill(model, hw, layout="dp")
    assert roof_dp.per_token < roof_tp.per_token and roof_dp.fixed < roof_tp.fixed
    assert roof_dp.max_batch_tokens == 8 * roof_tp.max_batch_tokens


def test_saturation_is_a_full_forward_by_hand():
    # 8,192 tokens of 1,024-token prompts: 8 prompts a forward
    times = derive_prefill(load_model("deepseek-v3"), load_hardware("h200"))
    prompt = np.full(100, 1024.0)
    count = times.max_batch_tokens / 1024.0
    forward = times.forward(count * 1024.0, count * 1024.0 * 1025.0 / 2.0)
    assert prefill_saturation(times, prompt) == pytest.approx(count / forward)
    # a prompt longer than a forward's budget is served alone
    long = np.full(10, 4.0 * times.max_batch_tokens)
    alone = times.forward(long[0], long[0] * (long[0] + 1) / 2)
    assert prefill_saturation(times, long) == pytest.approx(1.0 / alone)


def test_an_idle_instance_takes_what_waits_so_busy_time_overstates_load():
    # a pool offered half its saturation rate still computes most of the time (small
    # batches), so the sizing caps the load, not the busy time
    times = derive_prefill(load_model("deepseek-v3"), load_hardware("h200"))
    arrivals = Arrivals("poisson", 1.0)
    draw = arrivals.draw(WL, 20_000, np.random.default_rng(3))
    full = prefill_saturation(times, draw[1])
    n = 4
    rate = 0.5 * n * full
    arrival = draw[0] / draw[0][-1] * (len(draw[0]) / rate)
    run = serve(arrival, draw[1], PrefillPool(n, times))
    assert run.utilisation(n, arrival[-1] - arrival[0]) > 0.6
