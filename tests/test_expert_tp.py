"""FFN groups whose experts are split over several GPUs (expert TP × expert parallel).

The barrier over expert ranks is over the expert-parallel slices; the exchange adds an
all-gather and a reduce-scatter inside each slice; vLLM's two layouts (whole experts,
every expert over the group) are searched by deploy, each runtime says which it launches.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from afdplan.calibrate.roofline import (
    derive,
    exchange_bytes,
    expert_exchange,
    expert_layout_problem,
    tp_all_reduce,
)
from afdplan.calibrate.specs import load_hardware, load_model
from afdplan.deploy import Slo, Space, Target, search
from afdplan.deploy.profiles import profile
from afdplan.deploy.runtime import colocated_files, violation
from afdplan.deploy.slo_search import expert_splits, group_label
from afdplan.errors import InputError
from afdplan.timing import Experts, coeffs_from_dict, coeffs_to_dict
from afdplan.workload import parse_workload

DSV3, H200 = load_model("deepseek-v3"), load_hardware("h200")


@given(
    st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128, 256]),
    st.sampled_from([1, 2, 4, 8]),
    st.floats(1.0, 1e5),
)
def test_split_experts_barrier_is_over_the_slices(slices, split, tokens):
    # a group of t·e GPUs with every expert over t waits for the busiest of e slices
    whole, each = Experts(256, 8), Experts(256, 8, expert_tp=split)
    g = slices * split
    assert each.imbalance(tokens, g) == pytest.approx(whole.imbalance(tokens, slices))
    assert each.distinct_ranks(g) == pytest.approx(whole.distinct_ranks(slices))
    q = each.imbalance_quantile(tokens, g, 0.99)
    assert q == pytest.approx(whole.imbalance_quantile(tokens, slices, 0.99))


def test_every_expert_over_the_whole_group_has_no_spread():
    experts = Experts(256, 8, expert_tp=8)
    assert np.all(experts.imbalance(np.array([1.0, 64.0, 4096.0]), 8) == 1.0)
    draws = experts.draw_imbalance(np.random.default_rng(0), np.full(100, 512.0), 8)
    assert np.all(draws == 1.0)
    with pytest.raises(InputError, match="split over 8"):
        experts.imbalance(64.0, 12)  # 12 GPUs are not slices of 8


def test_exchange_whole_experts_unchanged_and_split_experts_by_hand():
    h, layers = DSV3.hidden, DSV3.moe_layers
    port = H200.link_bandwidth * H200.link_efficiency
    E, k = 256, 8
    # whole experts, EP 8: the per-rank all-to-all of DESIGN §10
    d8 = 8 * (1 - math.comb(E - 32, k) / math.comb(E, k))
    alpha = layers * d8 * (1 - 1 / 8) * h * sum(exchange_bytes(DSV3)) / 8 / port
    assert expert_exchange(DSV3, H200, 8) == pytest.approx((alpha, 2 * layers * H200.link_latency))
    # every expert over all 8: one all-gather + reduce-scatter of the micro-batch a layer
    ring = 2 * 7 / 8 * h * DSV3.act_bytes / port
    assert expert_exchange(DSV3, H200, 8, 8) == pytest.approx(
        (layers * ring, 2 * layers * H200.link_latency)
    )
    assert tp_all_reduce(DSV3, H200, 8).alpha == pytest.approx(ring)
    # EP 4 slices of 2: the all-to-all between slices over 8 ports, then each slice's
    # all-gather + reduce-scatter of the d/4 share of tokens it serves
    d4 = 4 * (1 - math.comb(E - 64, k) / math.comb(E, k))
    between = d4 * (1 - 1 / 4) * h * sum(exchange_bytes(DSV3)) / 8 / port
    inside = d4 / 4 * (2 * 1 / 2 * h * DSV3.act_bytes / port)
    got = expert_exchange(DSV3, H200, 8, 2)
    assert got[0] == pytest.approx(layers * (between + inside))
    assert got[1] == pytest.approx(4 * layers * H200.link_latency)


def test_split_experts_move_only_the_exchange():
    # the kernels (FLOPs and weights over the group) do not depend on how experts split
    kernels = set()
    for split in (1, 2, 4, 8):
        times = derive(DSV3, H200, 1, 8, expert_tp=split).times
        assert times.experts.expert_tp == split
        kernels.add(round(times.ffn.alpha - times.exchange.alpha, 18))
        kernels.add(round(times.ffn.beta - times.exchange.beta, 12) + 1.0)
    assert len(kernels) == 2


def test_layout_problems_are_one_line_each():
    assert expert_layout_problem(DSV3, 8, 1) is None
    assert expert_layout_problem(DSV3, 8, 8) is None
    assert "does not divide the FFN group" in expert_layout_problem(DSV3, 8, 3)
    assert "width 2048" in expert_layout_problem(DSV3, 24, 24)
    assert "3 expert-parallel slices" in expert_layout_problem(DSV3, 12, 4)
    assert "dense" in expert_layout_problem(load_model("llama3-70b"), 4, 2)
    with pytest.raises(InputError, match="does not divide the FFN group"):
        derive(DSV3, H200, 1, 8, expert_tp=3)


def test_coefficients_file_keeps_the_split():
    times = derive(DSV3, H200, 1, 8, expert_tp=8).times
    back = coeffs_from_dict(coeffs_to_dict(times), "test")
    assert back.experts == times.experts
    whole = coeffs_to_dict(derive(DSV3, H200, 1, 8).times)
    assert "expert_tp" not in whole["experts"]  # files of whole experts stay as they were
    bad = coeffs_to_dict(times)
    bad["experts"]["expert_tp"] = 0
    with pytest.raises(InputError, match="expert_tp must be an integer >= 1"):
        coeffs_from_dict(bad, "test")


def test_measured_split_experts_gather_and_scatter(aic):
    from afdplan.calibrate import aiconfig
    from afdplan.timing import Routing

    data = aiconfig.resolve_version("h200_sxm", "vllm", DSV3)
    table, label = aiconfig._nccl_table(data)
    assert label == "NCCL 2.26.2"  # the version h200_sxm.yaml names, not the newest
    size = 1048576.0  # a measured message size: the table's own rows, summed
    want = sum(
        table[(table.op_name == op) & (table.num_gpus == 8) & (table.nccl_dtype == "half")
              & (table.message_size == size)].latency.median()
        for op in ("all_gather", "reduce_scatter")
    )  # fmt: skip
    assert aiconfig.gather_scatter(data, 8, np.array([size]), [])[0] == pytest.approx(want)
    split = aiconfig.measured_tables(DSV3, "h200_sxm", gpus_ffn=8, hw=H200, expert_tp=8)
    whole = aiconfig.measured_tables(DSV3, "h200_sxm", gpus_ffn=8, hw=H200)
    assert any("EP 1 x expert TP 8" in n for n in split.notes)
    rows = split.rows[split.rows.op == "exchange"]
    moved = DSV3.moe_layers * aiconfig.gather_scatter(
        data, 8, rows.tokens.to_numpy() * DSV3.hidden, []
    )
    assert np.allclose(rows.seconds.to_numpy(), moved / 1e3)
    # the tables' own finding: vLLM's split experts run faster than its expert-parallel ones
    curve_tp = aiconfig._routed_experts(DSV3, data, 8, "fp8_block", Routing(), 8)[0]
    curve_ep = aiconfig._routed_experts(DSV3, data, 8, "fp8_block", Routing())[0]
    assert curve_tp[1024] < curve_ep[1024]
    ffn = {name: t.rows[t.rows.op == "ffn"].set_index("tokens").seconds
           for name, t in (("split", split), ("whole", whole))}  # fmt: skip
    assert ffn["split"][1024] < ffn["whole"][1024]


WL = parse_workload(
    "lognormal:prefill_median=1024,prefill_sigma=0.8,prefill_max=16384,"
    "decode_median=128,decode_sigma=0.9,decode_max=2048"
)


def _target(**space) -> Target:
    space = {"gpus_attention": (1,), "gpus_ffn": (8,), "microbatches": (1, 2), **space}
    return Target(DSV3, H200, H200, WL.stats(), Slo(50.0, 99), space=Space(**space))


def test_deploy_searches_both_vllm_layouts_and_the_runtime_rules_them():
    result = search(_target(), "vllm-afd")
    afd = result.configs[result.configs.architecture == "afd"]
    assert set(afd.expert_tp) == {1, 8}
    split = afd[afd.expert_tp == 8]
    assert not split.runtime_ok.any()
    assert split.runtime_note.str.contains("splits an FFN expert over 1 GPU").all()
    assert result.chosen["expert_tp"] == 1  # what vllm-afd launches
    col = result.configs[result.configs.architecture != "afd"]
    assert set(col.expert_tp) == {1, 8}
    # --expert-tp 1: the whole-expert search alone, the same rows as before
    only = search(_target(expert_tp=(1,)), "vllm-afd").configs
    assert set(only.expert_tp) == {1}
    kept = afd[afd.expert_tp == 1].drop(columns=["runtime_ok", "runtime_note"])
    same = only[only.architecture == "afd"].drop(columns=["runtime_ok", "runtime_note"])
    assert kept.reset_index(drop=True).equals(same.reset_index(drop=True))


def test_mixed_splits_only_where_asked():
    assert expert_splits(DSV3, 8, Space()) == [1, 8]
    assert expert_splits(DSV3, 8, Space(expert_tp=(1, 2, 4))) == [1, 2, 4]
    assert expert_splits(DSV3, 8, Space(expert_tp=(2, 8)), colocated=True) == [8]
    assert expert_splits(load_model("llama3-70b"), 8, Space()) == [1]
    assert group_label(DSV3, 8, 1) == "8" and group_label(DSV3, 8, 8) == "8 TP"
    assert group_label(DSV3, 8, 2) == "8 EP4xTP2"
    result = search(_target(expert_tp=(2,)), "none")
    assert set(result.configs[result.configs.architecture == "afd"].expert_tp) == {2}
    with pytest.raises(InputError, match="--gpus-ffn 8 --expert-tp 3: expert TP 3 does not"):
        search(_target(expert_tp=(3,)), "none")
    with pytest.raises(InputError, match="--expert-tp 3: no FFN group of 8 GPUs splits"):
        search(_target(gpus_ffn=None, expert_tp=(3,)), "none")


def test_runtime_rules_and_launch_files_for_split_experts():
    vllm_afd = profile("vllm-afd")
    assert vllm_afd.ffn_expert_tp == (1,)
    assert violation(vllm_afd, 8, 1, 8, 1, 8) is None
    assert "not 8" in violation(vllm_afd, 8, 1, 8, 1, 8, expert_tp=8)
    row = {"gpus_ffn": 8, "gpus_attention": 1, "microbatches": 1, "batch": 64, "expert_tp": 8}
    text = colocated_files(row, DSV3, H200)["colocated/vllm.sh"]
    assert "--enable-expert-parallel" not in text and "every expert split over the 8" in text
    ep = colocated_files({**row, "expert_tp": 1}, DSV3, H200)["colocated/vllm.sh"]
    assert "--enable-expert-parallel" in ep
    with pytest.raises(InputError, match="plain vLLM"):
        colocated_files({**row, "expert_tp": 2}, DSV3, H200)


def test_deploy_cli_expert_tp_errors(cli):
    res = cli("deploy", "--gpus-ffn", "8", "--expert-tp", "3", "--no-verify")
    assert res.code == 2 and "--expert-tp 3" in res.err and "Traceback" not in res.err
    res = cli("deploy", "--model", "llama3-70b", "--attention-hw", "h100", "--expert-tp", "2")
    assert res.code == 2 and "dense" in res.err
    res = cli("deploy", "--expert-tp", "0")
    assert res.code == 2 and "--expert-tp" in res.err


def test_deploy_cli_shows_the_layout(cli):
    res = cli("deploy", "--gpus-ffn", "8", "-m", "1", "--no-verify", "--runtime", "none")
    assert res.code == 0, res.err
    assert "FFN group of 8 (" in res.out
    data = cli("deploy", "--gpus-ffn", "8", "-m", "1", "--no-verify", "--json").json()
    assert {"expert_tp"} <= set(data["chosen"]) and {"expert_tp"} <= set(data["frontier"][0])
    times = coeffs_from_dict(data["colocated"]["step_times"], "test")
    assert times.experts.expert_tp == data["colocated"]["best"]["expert_tp"]


def test_split_models_with_redundant_experts():
    # copies make 264 experts: whole experts over 8 GPUs, or 8 splits over 24 (3 slices)
    spec = replace(DSV3, redundant_experts=8)
    assert expert_layout_problem(spec, 8, 1) is None
    assert expert_layout_problem(spec, 24, 8) is None


def test_plan_and_simulate_take_the_split(cli, aic):
    from afdplan.calibrate.measured_sets import shipped_sources
    from afdplan.calibrate.resolve import resolve_coeffs, resolve_step_times

    roof = resolve_coeffs("roofline:deepseek-v3@h200", gpus_ffn=8, expert_tp=8)
    assert roof == derive(DSV3, H200, 1, 8, expert_tp=8).times
    # a shipped measured set is read again from its tables' split rows
    linear, _ = resolve_step_times("deepseek-v3-h200", None, None, expert_tp=8)
    want = shipped_sources()["deepseek-v3-h200"].ffn(8, None, 8)
    assert (linear.ffn, linear.exchange) == want and linear.experts.expert_tp == 8
    split = cli("plan", "--coeffs", "deepseek-v3-h200", "--expert-tp", "8", "--json")
    whole = cli("plan", "--coeffs", "deepseek-v3-h200", "--json")
    assert split.code == 0 and whole.code == 0, split.err
    assert split.out != whole.out
    res = cli("plan", "--coeffs", "paper-v1-dsv3-910c", "--expert-tp", "8")
    assert res.code == 2 and "was fitted with every expert split over 1" in res.err
    res = cli("simulate", "--coeffs", "roofline:deepseek-v3@h200", "--gpus-ffn", "8",
              "--expert-tp", "8", "-r", "4", "-B", "32", "--requests", "2000")  # fmt: skip
    assert res.code == 0, res.err
    res = cli("plan", "--coeffs", "roofline:deepseek-v3@h200", "--gpus-ffn", "8",
              "--expert-tp", "3")  # fmt: skip
    assert res.code == 2 and "expert TP 3 does not divide the FFN group of 8" in res.err
