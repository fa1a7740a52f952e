"""afdplan deploy: the SLO search, runtime rules, launch files, verification."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afdplan.bundle import max_feasible_batch
from afdplan.calibrate.specs import load_hardware, load_model, model_from_config
from afdplan.deploy import Slo, Space, Target, search
from afdplan.deploy.anchor import resolve_anchor
from afdplan.deploy.profiles import profile
from afdplan.deploy.result import thin_frontier
from afdplan.deploy.runtime import aiconfigurator_command, violation, write_launch_files
from afdplan.deploy.slo_search import _pareto, kv_limit, roofline_times, spread_quantile
from afdplan.deploy.verify import verify
from afdplan.errors import InputError
from afdplan.workload import LoadStats, parse_workload

WORKLOAD = parse_workload("fixed:prefill=1024,decode=128")
VARIED = parse_workload(
    "lognormal:prefill_median=1024,prefill_sigma=0.8,prefill_max=16384,"
    "decode_median=128,decode_sigma=0.9,decode_max=2048"
)


def small_target(
    tpot_ms: float = 50.0, workload=VARIED, model: str = "deepseek-v3", **space
) -> Target:
    space = {"gpus_attention": (1,), "gpus_ffn": (8,), "microbatches": (1, 2), **space}
    hw = load_hardware("h200")
    return Target(
        load_model(model), hw, hw, workload.stats(), Slo(tpot_ms, 99), space=Space(**space)
    )


@pytest.fixture(scope="module")
def result():
    return search(small_target(), "vllm-afd")


def test_spread_quantile_matches_monte_carlo():
    rng = np.random.default_rng(0)
    for r, q in ((1, 0.99), (8, 0.9), (64, 0.99)):
        sample = rng.standard_normal((200_000, r)).max(axis=1)
        assert spread_quantile(r, q) == pytest.approx(np.quantile(sample, q), abs=0.02)


@given(
    cap=st.floats(1e3, 1e7),
    theta=st.floats(10, 5e4),
    v=st.floats(0, 1e7),
)
@settings(max_examples=60, deadline=None)
def test_kv_limit_agrees_with_the_closed_form(cap, theta, v):
    b = kv_limit(cap, LoadStats(1, 1, theta, v), 4096)
    assert b == min(max_feasible_batch(cap, theta, v, 3.0), 4096)
    if b < 4096:  # one more sequence would not fit (a tolerance for the exact boundary)
        assert (b + 1) * theta + 3 * math.sqrt((b + 1) * v) > cap * (1 - 1e-12)


@given(st.lists(st.tuples(st.floats(0.1, 100), st.floats(0.1, 100)), min_size=1, max_size=40))
@settings(max_examples=80, deadline=None)
def test_pareto_keeps_exactly_the_undominated_points(pairs):
    pts = np.array([[u, g, i, 1.0] for i, (u, g) in enumerate(pairs)])
    kept = _pareto(pts)
    for u, g, *_ in kept:  # nothing beats a kept point on both axes
        assert not any((pu >= u and pg >= g) and (pu > u or pg > g) for pu, pg, *_ in pts)
    for u, g, *_ in pts:  # every point is matched or beaten by a kept one
        assert any(ku >= u and kg >= g for ku, kg, *_ in kept)


def test_fan_in_scales_only_the_per_token_transfer():
    from afdplan.calibrate.roofline import derive

    t = derive(load_model("deepseek-v3"), load_hardware("h200"), 1, 8).times
    assert t.comm_scope == "fan_in"
    own = t.comm.alpha * 32 + t.comm.beta  # a worker's 32 tokens on its own link
    assert t.comm_time(32, 4) == pytest.approx(own)  # 4 senders into 8 FFN ports: no wait
    assert t.comm_time(32, 24) == pytest.approx(3 * t.comm.alpha * 32 + t.comm.beta)


def test_every_row_meets_the_slo_and_fits_the_kv_cache(result):
    t = result.target
    assert (result.configs.tpot_ms <= t.slo.tpot_ms + 1e-9).all()
    assert (result.configs.batch <= result.configs.max_batch_kv).all()
    assert (result.configs.kv_headroom >= 0).all()
    assert (result.configs.batch >= result.configs.microbatches).all()
    # the chosen row is the best launchable one by the objective
    allowed = result.configs[(result.configs.architecture == "afd") & result.configs.runtime_ok]
    assert result.chosen["score"] == pytest.approx(allowed.score.max())
    assert result.chosen["throughput_per_gpu"] == pytest.approx(
        result.chosen["r"]
        * result.chosen["batch"]
        / (result.chosen["gpus"] * result.chosen["step_time_mean_ms"] / 1e3)
    )


def test_zero_variance_quantile_equals_the_mean():
    from dataclasses import replace

    from afdplan.deploy.slo_search import MoeAssumptions

    one_step = parse_workload("fixed:prefill=1024,decode=1")
    assert one_step.stats().v == 0
    # No load spread over workers, and a power-law routing's deterministic expert spread:
    # nothing random is left, so the quantile is the mean.
    fixed = replace(small_target(workload=one_step), moe=MoeAssumptions("power-law:1.2"))
    row = search(fixed, "none").chosen
    assert row["tpot_ms"] == pytest.approx(row["step_time_mean_ms"], rel=1e-12)
    # Balanced routing keeps the busiest expert rank's spread: the quantile sits above.
    row = search(small_target(workload=one_step), "none").chosen
    assert row["tpot_ms"] > row["step_time_mean_ms"]


def test_looser_slo_never_lowers_the_best_objective():
    scores = [search(small_target(ms), "none").chosen["score"] for ms in (30, 50, 80)]
    assert scores == sorted(scores)


def test_impossible_slo_names_the_closest_configuration():
    with pytest.raises(
        InputError,
        match=r"no AFD configuration meets p99.*closest is r = 1, g_A = 1, g_F = 8, .* ms$",
    ):
        search(small_target(1.0), "none")


def test_frontier_is_monotone_and_thinned(result):
    for _, part in result.frontier.groupby("family"):
        part = part.sort_values("throughput_per_user")
        assert np.all(np.diff(part.throughput_per_gpu.to_numpy()) <= 1e-9)
    thin = thin_frontier(result.frontier, 5)
    assert thin.groupby("family").size().max() <= 5


def test_colocated_baseline_is_reported(result):
    assert result.colocated is not None
    assert result.colocated["architecture"] == "colocated@h200"
    assert result.afd_over_colocated == pytest.approx(
        result.chosen["score"] / result.colocated["score"]
    )


@pytest.mark.parametrize(
    ("runtime", "r", "g_a", "g_f", "m", "ok"),
    [("vllm-afd", 8, 1, 8, 2, True), ("vllm-afd", 16, 1, 8, 1, True),
     ("vllm-afd", 5, 1, 8, 2, False), ("vllm-afd", 12, 1, 8, 2, False),
     ("vllm-afd", 8, 1, 8, 3, False), ("vllm-afd", 4, 2, 8, 2, True),
     ("vllm-afd", 2, 16, 8, 2, False),
     ("sglang", 16, 1, 8, 1, True), ("sglang", 16, 1, 8, 2, False),
     ("sglang", 8, 2, 8, 1, False), ("sglang", 12, 1, 8, 1, False),
     ("sglang", 16, 1, 12, 1, False),
     ("fastafd", 16, 1, 8, 2, True), ("fastafd", 16, 1, 16, 2, True),
     ("fastafd", 12, 1, 8, 2, False), ("fastafd", 16, 1, 8, 3, False),
     ("fastafd", 8, 2, 8, 2, True), ("fastafd", 16, 1, 12, 2, False),
     ("fastafd", 8, 3, 8, 2, False)],
)  # fmt: skip
def test_runtime_topology_rules(runtime, r, g_a, g_f, m, ok):
    assert (violation(profile(runtime), r, g_a, g_f, m, 8) is None) == ok
    assert violation(None, r, g_a, g_f, m, 8) is None


@pytest.mark.parametrize(("runtime", "model"), [("sglang", "deepseek-v3"),
                                                 ("fastafd", "qwen3-235b-a22b")])
def test_node_based_runtimes_choose_whole_nodes_and_write_valid_scripts(runtime, model, tmp_path):
    res = search(small_target(gpus_ffn=(8, 16), microbatches=(1, 2), model=model), runtime)
    c = res.chosen
    rules = profile(runtime)
    sizes = (c["r"], c["gpus_attention"], c["gpus_ffn"], c["microbatches"])
    assert violation(rules, *sizes, 8) is None
    assert (c["r"] * c["gpus_attention"]) % 8 == 0
    assert res.launch_refusal is None
    paths = write_launch_files(tmp_path, rules, c, res.target.model, res.target.attention_hw,
                               1000, 200)  # fmt: skip
    for path in paths:
        subprocess.run(["bash", "-n", str(path)], check=True)
    text = (
        tmp_path / ("sglang/node.sh" if runtime == "sglang" else "fastafd/launch.sh")
    ).read_text()
    if runtime == "sglang":
        world = c["r"] + c["gpus_ffn"]
        assert f"--tp-size {world} --dp-size {world} --enable-dp-attention" in text
        assert "--afd-role" in text and rules.commit in text
        # the plugin's own checks: DP attention, more than one DP rank and node, and a
        # load balancer it allows (validation_hook.py, serving_hook.py)
        assert "--load-balance-method round_robin" in text and "SGLANG_AFD_PLUGIN_ENABLED=1" in text
        assert world > 1 and int(re.search(r"--nnodes (\d+)", text).group(1)) > 1
    else:
        nodes = (c["r"] * c["gpus_attention"] + c["gpus_ffn"]) // 8
        for line in (f"PER_ATTN_GPU_BSZ={c['batch']}", f"AFD_TOTAL_NODES={nodes}",
                     f"AFD_MLP_EP_SIZE={c['gpus_ffn']}", "PROMPT_LEN=1000", "MAX_TOKENS=200",
                     "MINISGL_MAX_SEQ_LEN=1264", rules.commit[:8], "qwen3_235b"):  # fmt: skip
            assert line in text
        graphs = re.search(r"AFD_DECODE_GRAPH_BS=([\d,]+)", text).group(1).split(",")
        assert str(math.ceil(c["batch"] / c["microbatches"])) in graphs


def test_models_a_runtime_does_not_serve_get_no_files_and_a_pointer(tmp_path):
    hw = load_hardware("h100-sxm")
    dense = search(Target(load_model("llama3-70b"), hw, hw, VARIED.stats(), Slo(50, 99)), "sglang")
    assert "dense" in dense.launch_refusal
    qwen = search(small_target(model="qwen3-235b-a22b"), "vllm-afd")
    assert "not Qwen3MoeForCausalLM" in qwen.launch_refusal
    assert "fastafd 3c71619" in qwen.launch_refusal  # the pinned release that serves it
    paths = write_launch_files(tmp_path, qwen.profile, qwen.chosen, qwen.target.model, hw, 1e3, 2e2)
    assert [p.name for p in paths] == ["aiconfigurator.sh"]


FAKE_VLLM = """#!/usr/bin/env bash
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >> "$VLLM_ARGS_LOG"
"""


def _launch(script, tmp_path, **env) -> list[str]:
    """Run a written launch script with a stand-in ``vllm`` that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "vllm").write_text(FAKE_VLLM)
    (bin_dir / "vllm").chmod(0o755)
    log = tmp_path / "args.jsonl"
    log.unlink(missing_ok=True)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "VLLM_ARGS_LOG": str(log), "MODEL_PATH": "m",
           "AFD_HOST": "10.0.0.9", "DP_HEAD": "10.0.0.1", **env}  # fmt: skip
    subprocess.run(["bash", str(script)], check=True, env=env)
    (line,) = log.read_text().splitlines()  # one vllm serve per node
    return json.loads(line)


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.mark.parametrize("version", ["0.19.1rc1", "0.26.0"])
@pytest.mark.parametrize(("r", "g_a", "g_f", "m"), [(8, 1, 8, 2), (4, 2, 8, 1), (32, 1, 16, 2)])
def test_vllm_afd_files_launch_what_the_pinned_plugin_accepts(version, r, g_a, g_f, m, tmp_path):
    """Each role's script, run per node with a stand-in vllm: its AFD section passes the
    pinned schema (afd-plugin's AFDConfig at the profile's commit), the ranks add up
    across nodes, DBO and CUDA graphs are set on both roles."""
    from afdplan.deploy.profiles import config_problems

    rules = profile("vllm-afd", version)
    row = {"r": r, "gpus_attention": g_a, "gpus_ffn": g_f, "microbatches": m, "batch": 64}
    write_launch_files(tmp_path, rules, row, load_model("deepseek-v3"), load_hardware("h200"),
                       1e3, 2e2)  # fmt: skip
    for role, gpus, dp in (("attention", r * g_a, r), ("ffn", g_f, g_f)):
        script = tmp_path / "vllm-afd" / f"{role}.sh"
        assert rules.commit in script.read_text()
        nodes = math.ceil(gpus / 8)
        runs = [_launch(script, tmp_path, NODE_RANK=str(k)) for k in range(nodes)]
        for k, args in enumerate(runs):
            section = json.loads(_flag(args, "--additional-config"))
            assert config_problems(section["afd"], rules.config_schema) == []
            assert section["afd"]["role"] == role
            assert section["afd"]["num_attention_ranks"] == r * g_a
            assert section["afd"]["num_ffn_ranks"] == g_f
            assert ("--enable-dbo" in args) == (m == 2)
            assert json.loads(_flag(args, "--compilation-config"))["cudagraph_mode"] == (
                "FULL_DECODE_ONLY"
            )
            assert int(_flag(args, "--data-parallel-size")) == dp
            assert ("--headless" in args) == (k > 0)
        if nodes > 1:
            local = [int(_flag(a, "--data-parallel-size-local")) for a in runs]
            starts = [0] + [int(_flag(a, "--data-parallel-start-rank")) for a in runs[1:]]
            assert sum(local) == dp and starts == list(np.cumsum([0, *local[:-1]]))
        else:
            assert "--data-parallel-size-local" not in runs[0]
    env_lines = (tmp_path / "vllm-afd" / "ffn.sh").read_text()
    assert ("VLLM_USE_V2_MODEL_RUNNER=0" in env_lines) == (version == "0.26.0")


def test_the_pinned_schema_rejects_the_keys_of_the_plugins_older_main():
    """The drift check has teeth: the keys afdplan wrote before (the plugin's main branch
    up to July 2026) are what the pinned release rejects."""
    from afdplan.deploy.profiles import config_problems

    old = {"enabled": True, "role": "attention", "connector": "p2pconnector", "host": "h",
           "port": 1, "num_attention_servers": 8, "num_ffn_servers": 2}  # fmt: skip
    problems = config_problems(old, profile("vllm-afd").config_schema)
    assert "unknown AFD config field 'enabled'" in problems
    assert any("num_attention_servers" in p for p in problems)
    assert any("connector must be one of" in p for p in problems)
    assert config_problems({"role": "ffn", "num_attention_ranks": 6, "num_ffn_ranks": 4},
                           "afd-plugin-config-256590ab")  # fmt: skip


AFD_PLUGIN_GIT = Path(
    os.environ.get("AFDPLAN_AFD_PLUGIN_GIT", "/work/.mirror/vllm-project+afd-plugin/repo")
)


@pytest.mark.skipif(not AFD_PLUGIN_GIT.is_dir(), reason="no afd-plugin git checkout at hand")
@pytest.mark.parametrize("version", ["0.19.1rc1", "0.26.0"])
def test_the_pinned_schema_is_the_plugins_config_class_at_its_commit(version):
    """The second copy: AFDConfig's fields and defaults read from the plugin's source at the
    profile's commit equal the shipped schema."""
    from afdplan.deploy.profiles import schema_from_source
    from afdplan.presets import runtime_schema

    rules = profile("vllm-afd", version)
    text = subprocess.run(
        ["git", "-C", str(AFD_PLUGIN_GIT), "show", f"{rules.commit}:afd_plugin/config.py"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    fields = schema_from_source(text)
    pinned = runtime_schema(rules.config_schema)["fields"]
    assert set(fields) == set(pinned) - {"connector_extra_config"}
    kinds = {"str": "str", "int": "int", "bool": "bool", "AFDRole": "str"}
    for name, field in fields.items():
        assert field["default"] == pinned[name]["default"], name
        assert kinds[field["annotation"]] == pinned[name]["type"], name


def test_aiconfigurator_command_rounds_to_whole_nodes(tmp_path):
    row = {"r": 12, "gpus_attention": 1, "gpus_ffn": 8, "microbatches": 3, "batch": 64}
    text = aiconfigurator_command(row, load_model("deepseek-v3"), load_hardware("h200"), 1e3, 200)
    (tmp_path / "a.sh").write_text(text)
    subprocess.run(["bash", "-n", str(tmp_path / "a.sh")], check=True)
    assert "--n-a-nodes 2" in text and "--n-f-nodes 1" in text and "--system h200_sxm" in text
    assert "round up to 2 node(s) (r = 16)" in text
    assert "--model deepseek-ai/DeepSeek-V3" in text


def test_simulation_agrees_with_the_prediction(result):
    rows = verify(result, VARIED, top=1, seeds=2, steps=800)
    v = rows[0]
    assert v["simulated_throughput_per_gpu"]["mean"] == pytest.approx(
        v["predicted_throughput_per_gpu"], rel=0.03
    )
    assert v["simulated_step_time_ms"]["mean"] == pytest.approx(
        v["predicted_step_time_ms"], rel=0.03
    )
    again = verify(result, VARIED, top=1, seeds=2, steps=800)
    assert again == rows  # deterministic per seed


def _checked(row, status: str, mean: float, half: float = 0.5) -> dict:
    est = {"mean": mean, "half_width": half, "n": 3}
    keys = ("r", "batch", "microbatches", "gpus_attention", "gpus_ffn")
    return {**{k: int(row[k]) for k in keys}, "slo_status": status,
            "simulated_step_time_ms": est, "simulated_tpot_ms": est}  # fmt: skip


def test_the_answer_obeys_its_simulation(result):
    # The search's best breaks the SLO in simulation, the second straddles it, the third
    # holds it: the third is chosen and the search's pick is kept beside it.
    top = result.top(3)
    rows = [_checked(top.iloc[i], s, m) for i, (s, m) in
            enumerate((("breaks", 99.0), ("at limit", 50.0), ("ok", 10.0)))]  # fmt: skip
    checked = result.with_verification(rows)
    assert (
        checked.chosen["r"] == top.iloc[2]["r"] and checked.chosen["score"] == top.iloc[2]["score"]
    )
    assert checked.analytic_choice == result.chosen
    assert checked.chosen_check["slo_status"] == "ok"
    assert checked.to_dict()["chosen"]["slo_status"] == "ok"
    # no clean one: the best at the limit; every one breaks: the search's pick, flagged
    rows[2]["slo_status"] = "breaks"
    assert result.with_verification(rows).chosen["score"] == top.iloc[1]["score"]
    rows[1]["slo_status"] = "breaks"
    same = result.with_verification(rows)
    assert same.chosen == result.chosen and same.analytic_choice is None
    assert same.chosen_check["slo_status"] == "breaks"


def test_slo_status_reads_the_interval():
    from afdplan.deploy.verify import slo_status

    q = lambda mean, half: {"mean": mean, "half_width": half}  # noqa: E731
    assert slo_status(q(9.0, 0.5), q(9.5, 0.4), 10.0) == "ok"
    assert slo_status(q(9.8, 0.5), q(9.0, 0.1), 10.0) == "at limit"  # 10.3 straddles
    assert slo_status(q(10.6, 0.5), q(9.0, 0.1), 10.0) == "breaks"
    assert slo_status(q(10.2, float("nan")), q(9.0, 0.1), 10.0) == "breaks"  # one seed


def test_model_config_variants():
    base = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 10}
    moe = model_from_config(
        {"text_config": {**base, "num_local_experts": 8, "experts_per_token": 2,
                         "expert_intermediate_size": 32}}, "vl"
    )  # fmt: skip
    assert (moe.experts, moe.top_k, moe.moe_intermediate) == (8, 2, 32)
    with pytest.raises(InputError, match=r"moe_expert_count unknown to afdplan"):
        model_from_config({**base, "intermediate_size": 8, "moe_expert_count": 8}, "odd")
    with pytest.raises(InputError, match=r"MoE fields \(moe_intermediate_size\) but no routed"):
        model_from_config({**base, "intermediate_size": 8, "moe_intermediate_size": 8}, "odd")
    fp4 = model_from_config(
        {**base, "intermediate_size": 8,
         "quantization_config": {"config_groups": {"g": {"weights": {"num_bits": 4}}}}}, "q"
    )  # fmt: skip
    assert fp4.weight_bytes == 0.5


def test_hardware_aliases_and_unknown_names():
    assert load_hardware("h200_sxm").name == "h200"
    with pytest.raises(InputError, match=re.escape("unknown hardware 'h300'; known:")):
        load_hardware("h300")


def test_anchor_reproduces_the_measured_set_at_its_own_sizes():
    from afdplan.calibrate.resolve import resolve_coeffs
    from afdplan.calibrate.roofline import derive
    from afdplan.deploy.anchor import resolve_anchor

    model, hw = load_model("deepseek-v3"), load_hardware("h200")
    anchor = resolve_anchor(None, model, hw, hw)
    assert anchor is not None and anchor.name == "deepseek-v3-h200"
    measured = resolve_coeffs("deepseek-v3-h200")
    roof = derive(model, hw, 1, 8).times
    anchored = anchor.apply(roof, "h200", "h200")
    for key in ("alpha", "beta", "gamma"):
        assert getattr(anchored.attention, key) == pytest.approx(
            getattr(measured.attention, key), rel=1e-12
        )
    # The FFN kernels are the measured ones; the links (A↔F transfers, the expert
    # dispatch and combine) stay the roofline's.
    for key in ("alpha", "beta"):
        kernels = getattr(measured.ffn, key) - getattr(measured.exchange, key)
        assert getattr(anchored.ffn, key) - getattr(anchored.exchange, key) == pytest.approx(
            kernels, rel=1e-9
        )
    assert anchored.exchange == roof.exchange
    assert anchored.comm == roof.comm
    # only the side on the anchor's hardware is scaled
    h20 = load_hardware("h20")
    mixed = anchor.apply(derive(model, h20, 1, 8, hw).times, "h20", "h200")
    plain = derive(model, h20, 1, 8, hw).times
    assert mixed.attention == plain.attention and mixed.ffn != plain.ffn
    assert resolve_anchor("none", model, hw, hw) is None
    assert resolve_anchor(None, load_model("qwen3-235b-a22b"), hw, hw) is None


def test_anchored_search_is_verified_with_the_same_times(result):
    from afdplan.deploy.anchor import resolve_anchor

    t = small_target()
    anchored = Target(
        t.model, t.attention_hw, t.ffn_hw, t.stats, t.slo, space=t.space,
        anchor=resolve_anchor(None, t.model, t.attention_hw, t.ffn_hw),
    )  # fmt: skip
    res = search(anchored, "vllm-afd")
    assert res.chosen["throughput_per_gpu"] < result.chosen["throughput_per_gpu"]
    v = verify(res, VARIED, top=1, seeds=1, steps=600)[0]
    assert v["simulated_throughput_per_gpu"]["mean"] == pytest.approx(
        v["predicted_throughput_per_gpu"], rel=0.03
    )


def test_cost_objective_uses_the_hardware_prices():
    hw = load_hardware("h200")
    assert hw.price_per_hour == 4.0 and "2026" in hw.price_source
    t = small_target()
    target = Target(
        t.model, hw, hw, t.stats, t.slo, objective="cost", space=t.space,
        prices=(hw.price_per_hour, hw.price_per_hour),
    )  # fmt: skip
    c = search(target, "none").chosen
    dollars = (c["r"] * c["gpus_attention"] + c["gpus_ffn"]) * 4.0
    assert c["score"] == pytest.approx(
        c["r"] * c["batch"] / (dollars * c["step_time_mean_ms"] / 1e3)
    )
    assert load_hardware("h20").price_per_hour is None
    l40s = load_hardware("l40s")  # every price names its source and date
    assert l40s.price_per_hour == 1.861 and "AWS G6e" in l40s.price_source
    assert "2025" in l40s.price_source


def test_tokens_per_joule_at_board_power(result):
    c = result.chosen
    assert c["tokens_per_joule"] == pytest.approx(c["throughput_per_gpu"] / 700.0)
    col = result.colocated
    assert col["tokens_per_joule"] == pytest.approx(col["throughput_per_gpu"] / 700.0)
    assert load_hardware("b300_sxm").board_power_w == 1100


def test_ffn_dtype_changes_only_the_ffn_side():
    from dataclasses import replace

    from afdplan.calibrate.roofline import derive

    model, hw = load_model("deepseek-v3"), load_hardware("h200")
    base = derive(model, hw, 1, 8).times
    fp4 = derive(replace(model, ffn_weight_bytes=0.5), hw, 1, 8).times
    assert fp4.attention == base.attention and fp4.comm == base.comm
    # FP4 experts halve the weight reads; the FP8 dispatch of their inputs is unchanged
    fixed = model.layers * hw.layer_overhead_s + base.exchange.beta
    assert fp4.exchange == base.exchange
    assert fp4.ffn.beta - fixed == pytest.approx((base.ffn.beta - fixed) / 2)


def test_dtype_options_keep_the_anchor_of_the_served_model(cli):
    fast = ["deploy", "--gpus-ffn", "16", "-m", "2", "--tpot-ms", "100", "--no-verify", "--json"]
    base = cli(*fast).json()
    fp4 = cli(*fast, "--ffn-dtype", "fp4").json()
    bf16 = cli(*fast, "--weight-dtype", "bfloat16").json()
    # the anchor's ratios come from the served (FP8) model, so cheaper FFN weights help and
    # BF16 weights hurt, instead of the anchor cancelling the change; the per-size measured
    # tables hold the FP8 model only, so the other dtypes use the ratios alone
    ratios = base["anchor_ratios"].split(";")[0]
    assert fp4["anchor_ratios"] == ratios == bf16["anchor_ratios"]
    assert fp4["chosen"]["throughput_per_gpu"] > base["chosen"]["throughput_per_gpu"]
    assert bf16["chosen"]["throughput_per_gpu"] < base["chosen"]["throughput_per_gpu"]


def test_ffn_groups_stay_in_one_nvlink_domain_unless_asked():
    from dataclasses import replace

    from afdplan.deploy.slo_search import ffn_group_sizes

    model, h200, gb200 = load_model("deepseek-v3"), load_hardware("h200"), load_hardware("gb200")
    assert ffn_group_sizes(model, h200, Space()) == [8]
    assert ffn_group_sizes(model, h200, Space(across_nodes=True)) == [8, 16, 32, 64]
    assert ffn_group_sizes(model, gb200, Space()) == [4, 8, 16, 32, 64]  # one NVL72 rack
    bf16 = replace(model, weight_bytes=2.0)
    with pytest.raises(InputError, match=r"more than one 8-GPU NVLink domain.*--ffn-across-nodes"):
        ffn_group_sizes(bf16, h200, Space())
    assert ffn_group_sizes(bf16, h200, Space(gpus_ffn=(16,))) == [16]  # named outright


def test_expert_exchange_inside_and_between_nodes_hand_value():
    from afdplan.calibrate.roofline import derive, expert_exchange
    from afdplan.deploy.anchor import resolve_anchor
    from afdplan.deploy.slo_search import roofline_times

    model, hw = load_model("deepseek-v3"), load_hardware("h200")
    # EP16 over two 8-GPU nodes: a token reaches d = 16·(1 − C(240, 8)/C(256, 8)) ranks,
    # d·15/16 of them elsewhere, 8 of those 15 beyond the node (the network, 400 Gb/s at
    # 0.8), 7 inside (NVLink, 450 GB/s at 0.8): the network is the slower side.
    d = 16 * (1 - math.comb(240, 8) / math.comb(256, 8))
    per_token = d * (15 / 16) * 7168 * 3 / 16  # bytes a rank moves per token of the batch
    network = per_token * (8 / 15) / (50e9 * 0.8)
    nvlink = per_token * (7 / 15) / (450e9 * 0.8)
    assert network > nvlink
    alpha, beta = expert_exchange(model, hw, 16)
    assert alpha == pytest.approx(58 * network)
    assert beta == pytest.approx(2 * 58 * 5e-6)  # two network latencies a MoE layer
    plain = derive(model, hw, 1, 16).times
    assert plain.exchange.alpha == pytest.approx(alpha)
    anchor = resolve_anchor(None, model, hw, hw, per_size=False)
    anchored = roofline_times(model, hw, hw, 1, 16, True, anchor).ffn
    # the kernels' ratio scales the kernels, not the links
    assert anchored.alpha == pytest.approx((plain.ffn.alpha - alpha) * anchor.ffn[0] + alpha)
    assert anchored.beta == pytest.approx((plain.ffn.beta - beta) * anchor.ffn[1] + beta)


def test_anchor_reads_each_size_from_the_measured_tables(aic):
    from afdplan.calibrate.pipeline import Sources, calibrate
    from afdplan.deploy.anchor import resolve_anchor

    model, hw = load_model("deepseek-v3"), load_hardware("h200")
    anchor = resolve_anchor(None, model, hw, hw)
    assert anchor.measured is not None
    for g_a, g_f in ((2, 8), (1, 16)):
        times = roofline_times(model, hw, hw, g_a, g_f, cross_node=g_f > 8, anchor=anchor)
        fitted = calibrate(
            Sources(
                model="deepseek-v3",
                system="h200_sxm",
                gpus_attention=g_a,
                gpus_ffn=g_f,
                ffn_range=(256, 16384),
            )
        )[0].times
        assert times.attention == fitted.attention
        # the kernels as measured, with the exchange as calibrate reads it (DeepEP's table
        # at EP 8 on one node, the link roofline for EP 16 over two)
        assert times.ffn == fitted.ffn and times.exchange == fitted.exchange
    # A TP the MLA tables do not split into (128 heads over 3 GPUs) falls back to the ratios.
    ratio_only = resolve_anchor(None, model, hw, hw, per_size=False)
    odd = roofline_times(model, hw, hw, 3, 8, cross_node=False, anchor=anchor)
    assert odd.attention == roofline_times(model, hw, hw, 3, 8, False, ratio_only).attention
    text = anchor.describe([1, 2, 3], [8, 16])
    assert "tables for attention at 1, 2 GPUs and FFN at 8, 16 GPUs" in text


def test_anchor_without_the_tables_uses_the_ratios(monkeypatch):
    from afdplan.deploy import anchor as anchors

    monkeypatch.setattr(anchors, "tables_installed", lambda: False)
    model, hw = load_model("deepseek-v3"), load_hardware("h200")
    anchor = anchors.resolve_anchor(None, model, hw, hw)
    assert anchor.measured is None and "tables" not in anchor.describe([1], [8])


def test_capacity_sizes_the_bundle_with_the_step_times_deploy_chose(cli, tmp_path):
    from afdplan.choices import Architecture
    from afdplan.deploy.saved import load_answer
    from afdplan.timing import coeffs_to_dict

    fast = ["deploy", "--gpus-ffn", "8", "-m", "1", "--tpot-ms", "60", "--no-verify", "--json"]
    base = cli(*fast).json()
    fp4 = cli(*fast, "--ffn-dtype", "fp4").json()
    assert fp4["chosen_step_times"]["ffn"] != base["chosen_step_times"]["ffn"]
    path = tmp_path / "fp4.json"
    path.write_text(json.dumps(fp4))
    afd = load_answer(path, Architecture.afd)
    times, pipeline, r, b = afd.times, afd.pipeline, afd.ratio, afd.batch
    assert coeffs_to_dict(times) == fp4["chosen_step_times"]  # FP4 experts, not the FP8 model
    chosen = fp4["chosen"]
    assert (r, b, pipeline.microbatches) == (chosen["r"], chosen["batch"], chosen["microbatches"])
    assert pipeline.layers == 61 and not afd.colocated and afd.model == "deepseek-v3"
    # what deploy recommends: here colocated decode (AFD loses), its best group as compared
    assert fp4["recommendation"] == "colocated"
    answer = load_answer(path)  # what deploy recommends
    times, pipeline, r, b = answer.times, answer.pipeline, answer.ratio, answer.batch
    group = fp4["colocated"]["best"]
    assert answer.colocated and coeffs_to_dict(times) == fp4["colocated"]["step_times"]
    assert (r, b, pipeline.microbatches) == (group["r"], group["batch"], group["microbatches"])
    assert times.gpus_attention * r == group["gpus"]
    # the colocated step the open system runs is the one deploy scored the group with
    from afdplan.capacity import step_time_at
    from afdplan.choices import DEFAULT_WORKLOAD
    from afdplan.sim.open import Fleet
    from afdplan.workload import parse_workload

    fleet = Fleet(times, r, b, 1, pipeline, times.kv_capacity_tokens, colocated=True)
    assert fleet.gpus == group["gpus"]
    wl = parse_workload(DEFAULT_WORKLOAD)
    assert 1e3 * step_time_at(fleet, wl, b) == pytest.approx(group["step_time_mean_ms"], rel=0.02)


def test_network_option_sets_the_scale_out_port_of_both_sides():
    from afdplan.calibrate.roofline import expert_exchange
    from afdplan.cli.deploy_cmd import over_network

    model, h200 = load_model("deepseek-v3"), load_hardware("h200")
    a_hw, f_hw = over_network("ib-xdr", h200, h200)
    assert a_hw is f_hw and a_hw.network_bandwidth == 100e9  # one machine type, one object
    ndr, xdr = expert_exchange(model, h200, 16), expert_exchange(model, a_hw, 16)
    assert xdr[0] == pytest.approx(ndr[0] / 2) and xdr[1] == ndr[1]  # twice the bandwidth
    a_hw, f_hw = over_network("200gbps@8us", load_hardware("h20"), h200)
    assert (a_hw.network_bandwidth, f_hw.network_bandwidth) == (25e9, 25e9)
    assert f_hw.network_latency == pytest.approx(8e-6)
    # Blackwell boards ship ConnectX-8 (800 Gb/s), as aiconfigurator-core records them
    assert load_hardware("b300").network_bandwidth == load_hardware("b200").network_bandwidth
    assert load_hardware("b300").network_bandwidth == 2 * h200.network_bandwidth


# ------------------------------------------------------------------ the MoE side, colocated


def test_colocated_decode_pays_the_exchange_on_its_links_and_the_busiest_rank():
    from afdplan.calibrate.roofline import derive
    from afdplan.deploy.slo_search import colocated_times

    model, hw = load_model("deepseek-v3"), load_hardware("h200")
    afd = derive(model, hw, 1, 8).times
    col = colocated_times(afd, 10_000, "c")
    # the kernels stay on the GPUs' compute, the dispatch and combine become the transfers
    assert col.ffn.alpha == pytest.approx(afd.ffn.alpha - afd.exchange.alpha)
    assert col.ffn.beta == pytest.approx(afd.ffn.beta - afd.exchange.beta)
    assert col.comm == afd.exchange and col.comm_scope == "aggregate"
    assert col.experts == afd.experts  # the busiest expert rank still sets the FFN
    # 8 GPUs of 16 sequences each: a micro-batch of 128 tokens on the group's links
    assert col.comm_time(16, 8) == pytest.approx(afd.exchange.alpha * 128 + afd.exchange.beta)
    assert float(col.ffn_time(128)) > float(col.ffn(128))


def test_colocated_two_batch_overlap_hides_the_exchange_behind_compute():
    from afdplan.bundle import Pipeline

    # compute a + f, transfers x + y per micro-batch and layer, m = 2 (TBO)
    a, f, x, y = 1.0, 2.0, 0.5, 0.5
    one = Pipeline("pingpong", 1, 4).colocated_step_time(a, a, x, f, y)
    two = Pipeline("pingpong", 2, 4).colocated_step_time(a / 2, a / 2, x / 2, f / 2, y / 2)
    assert one == pytest.approx(4 * (a + f + x + y))  # no overlap: every term in series
    # halves: compute 1.5, transfers 0.5 per micro-batch; the transfers hide except the
    # first fill: S + (m − 1)·s_max + (L − 1)·max(m·s_max, S) with S = 2, s_max = 1.5
    assert two == pytest.approx(2 + 1.5 + 3 * max(3.0, 2.0))


def test_verdict_words_and_margin():
    from afdplan.deploy.result import verdict, verdict_margin

    assert verdict(1.2) == "AFD pays" and verdict(0.97) == "parity" and verdict(0.5) == "AFD loses"
    res = search(small_target(), "vllm-afd")
    margin = verdict_margin(res)
    labels = [m["assumption"] for m in margin]
    assert labels == [
        "balanced routing",
        "power-law:1.01 routing",
        "power-law:1.2 routing",
        "balanced routing, exchange x0.5",
        "balanced routing, exchange x2",
        "balanced routing, exchange overlapped",
    ]
    assert margin[0]["afd_over_colocated"] == pytest.approx(res.afd_over_colocated)
    for m in margin:
        assert m["verdict"] in ("AFD pays", "parity", "AFD loses", "nothing meets the SLO")


def test_a_dearer_exchange_costs_colocated_more_than_afd():
    # Colocated decode moves every token between GPUs in every layer; AFD's FFN group
    # does too, but its attention ranks do not. Doubling the exchange lowers both,
    # colocated at least as much per GPU.
    from dataclasses import replace

    from afdplan.deploy.slo_search import MoeAssumptions

    base = search(small_target(), "none")
    dear = search(replace(small_target(), moe=MoeAssumptions(exchange_scale=2.0)), "none")
    assert dear.colocated["score"] < base.colocated["score"]
    assert dear.chosen["score"] <= base.chosen["score"]
    assert dear.afd_over_colocated >= base.afd_over_colocated - 1e-9


def test_deploy_routing_option_and_json_verdict(cli):
    res = cli("deploy", "--gpus-ffn", "8", "-m", "1", "--gpus-attention", "1", "--no-verify",
              "--routing", "power-law:1.2", "--json")  # fmt: skip
    assert res.code == 0, res.err
    data = res.json()
    assert data["moe"] == "power-law:1.2 routing"
    col = data["colocated"]
    assert col["verdict"] in ("AFD pays", "parity", "AFD loses")
    assert col["margin"][0]["assumption"] == "power-law:1.2 routing"
    res = cli("deploy", "--model", "llama3-70b", "--attention-hw", "h100-sxm", "--routing",
              "power-law:1.2", "--no-verify")  # fmt: skip
    assert res.code == 2 and "is dense" in res.err


def test_a_hugging_face_id_gets_the_provenance_of_its_preset(aic):
    """The same model under its preset name and its Hugging Face id: the same shipped
    measured set, the same answer."""
    hw = load_hardware("h200")
    answers = []
    for name in ("deepseek-v3", "deepseek-ai/DeepSeek-V3"):
        model = load_model(name)
        space = Space(gpus_attention=(1,), gpus_ffn=(8,), microbatches=(1,))
        anchor = resolve_anchor(None, model, hw, hw)
        target = Target(model, hw, hw, VARIED.stats(), Slo(50, 99), anchor=anchor, space=space)
        result = search(target, "vllm-afd")
        answers.append((result.target.anchor.name, result.provenance, result.chosen["score"]))
    assert answers[0] == answers[1]
    assert answers[0][1] == "measured tables at this size"
    # a model of other shapes does not borrow the set
    qwen = load_model("qwen3-235b-a22b")
    assert resolve_anchor(None, qwen, hw, hw) is None


def test_a_roofline_only_answer_carries_its_band():
    hw = load_hardware("h200")
    target = small_target(model="qwen3-235b-a22b", microbatches=(1,))
    result = search(target, "none").with_band()
    assert result.provenance == "plain roofline"
    band = {b["anchor"]: b for b in result.roofline_band}
    assert set(band) == {"deepseek-v3-h200's ratios", "llama3-70b-h100's ratios"}
    # DeepSeek-V3's measured kernels on H200 run well below the roofline: so would this one
    slow = band["deepseek-v3-h200's ratios"]["throughput_per_gpu"]
    assert slow < 0.8 * result.chosen["throughput_per_gpu"]
    # an anchored answer has no band
    ds = search(small_target(microbatches=(1,)), "none")
    anchored = replace(ds.target, anchor=resolve_anchor(None, ds.target.model, hw, hw, False))
    assert search(anchored, "none").with_band().roofline_band == []


def test_when_afd_loses_colocated_is_recommended_and_launchable(cli, tmp_path):
    out = tmp_path / "out"
    args = ["deploy", "--gpus-ffn", "8", "-m", "1", "--tpot-ms", "60", "--no-verify"]
    res = cli(*args, "--json", "--save-dir", str(out))
    assert res.code == 0, res.err
    data = res.json()
    assert data["colocated"]["verdict"] == "AFD loses" and data["recommendation"] == "colocated"
    assert data["runtime_profile"]["commit"] == profile("vllm-afd").commit
    names = {Path(f).relative_to(out).as_posix() for f in data["files"]}
    assert {"colocated/vllm.sh", "vllm-afd/attention.sh", "vllm-afd/ffn.sh"} <= names
    col = data["colocated"]["best"]
    nodes = math.ceil(col["gpus_ffn"] / 8)
    runs = [_launch(out / "colocated/vllm.sh", tmp_path, NODE_RANK=str(k)) for k in range(nodes)]
    # DP x TP attention ranks fill the expert group
    assert all(int(_flag(a, "--data-parallel-size")) == col["r"] for a in runs)
    assert all(int(_flag(a, "--tensor-parallel-size")) == col["gpus_attention"] for a in runs)
    assert col["r"] * col["gpus_attention"] == col["gpus_ffn"]
    if nodes > 1:
        assert sum(int(_flag(a, "--data-parallel-size-local")) for a in runs) == col["r"]
    # vLLM runs the MoE expert parallel only when told; split experts go without the flag
    assert col["expert_tp"] in (1, col["gpus_ffn"])
    ep = col["expert_tp"] == 1
    assert all(("--enable-expert-parallel" in a) == ep for a in runs)
    assert all("--additional-config" not in a for a in runs)
    assert all(int(_flag(a, "--max-num-seqs")) == col["batch"] for a in runs)
    text = cli(*args).out
    assert "Recommendation: colocated decode" in text
    assert "Provenance of the chosen bundle's step times" in text


def test_attention_tp_must_split_the_heads():
    from afdplan.deploy.slo_search import attention_tp_problem

    ds, llama = load_model("deepseek-v3"), load_model("llama3-70b")  # 128 MLA; 64 / 8 KV heads
    assert "128 attention heads" in attention_tp_problem(ds, 3)
    assert attention_tp_problem(ds, 8) is None
    assert attention_tp_problem(llama, 16) is None  # KV heads replicated twice
    odd = model_from_config(
        {"hidden_size": 1536, "num_hidden_layers": 2, "num_attention_heads": 12,
         "num_key_value_heads": 6, "intermediate_size": 64, "vocab_size": 10}, "odd"
    )  # fmt: skip
    assert "KV heads" in attention_tp_problem(odd, 4) and attention_tp_problem(odd, 12) is None
    with pytest.raises(InputError, match="does not split the 128 attention heads"):
        search(small_target(gpus_attention=(3,)), "none")


def test_dense_colocated_decode_is_tensor_parallel_instances():
    """A dense model's colocated baseline is what runtimes serve: TP-t instances holding
    1/t of every weight, each paying two all-reduces a layer, not one full attention copy
    per GPU."""
    hw = load_hardware("h100-sxm")
    target = Target(load_model("llama3-70b"), hw, hw, VARIED.stats(), Slo(50, 99))
    result = search(target, "none")
    colocated = result.configs[result.configs.architecture != "afd"]
    assert (colocated.r == 1).all()
    assert (colocated.gpus_attention == colocated.gpus_ffn).all()
    assert set(colocated.gpus_attention) <= {2, 4, 8}  # 140 GB of weights: not on one GPU
    best = result.colocated
    assert best["gpus"] == best["gpus_attention"]
    from afdplan.deploy.runtime import colocated_files

    text = colocated_files(best, target.model, hw)["colocated/vllm.sh"]
    assert f"--tensor-parallel-size {best['gpus_attention']}" in text
    assert "--enable-expert-parallel" not in text and "--data-parallel-size" not in text


def test_batch_per_rank_is_capped_at_the_runtime_default():
    from afdplan.deploy.slo_search import default_max_batch

    assert default_max_batch(load_hardware("h200")) == 1024
    assert default_max_batch(load_hardware("a100-80g")) == 256  # vLLM keeps A100 small
    assert default_max_batch(load_hardware("l40s")) == 256  # 48 GB
    loose = search(small_target(tpot_ms=200, workload=WORKLOAD), "none")
    assert loose.configs.batch.max() <= 1024
    tight = search(small_target(tpot_ms=200, workload=WORKLOAD, max_batch=48), "none")
    assert tight.configs.batch.max() <= 48 and loose.configs.batch.max() > 48
    with pytest.raises(InputError, match="--max-batch-per-rank must be >= 1"):
        Space(max_batch=0)


def test_redundant_experts_let_the_group_exceed_the_expert_count():
    """EP 288 over DeepSeek-V3's 256 experts with 32 redundant copies (its published
    serving layout): the group holds 288 experts' weights, a token's experts spread over
    all copies, the search accepts the size, and the measured set still anchors it (by its
    ratios: the tables time 256 experts)."""
    from dataclasses import replace as copy

    from afdplan.calibrate.roofline import derive

    model, hw = load_model("deepseek-v3"), load_hardware("h200")
    served = copy(model, redundant_experts=32)
    assert served.physical_experts == 288
    routed = 3 * model.hidden * model.moe_intermediate * model.moe_layers
    assert served.ffn_params() - model.ffn_params() == 32 * routed
    assert served.ffn_active_params() == model.ffn_active_params()
    with pytest.raises(InputError, match="add redundant experts"):
        derive(model, hw, 1, 288)
    t = derive(served, hw, 1, 288).times
    assert t.experts.experts == 288
    target = Target(served, hw, hw, VARIED.stats(), Slo(50, 99),
                    anchor=resolve_anchor(None, served, hw, hw),
                    space=Space(gpus_attention=(4,), gpus_ffn=(288,), microbatches=(2,),
                                across_nodes=True))  # fmt: skip
    result = search(target, "none")
    assert result.chosen["gpus_ffn"] == 288
    assert result.provenance == "attention: measured tables at this size; FFN: anchored roofline"
    with pytest.raises(InputError, match="--redundant-experts 32"):
        search(replace(target, model=model), "none")


def test_moe_colocated_search_includes_tp_attention_over_the_ep_group():
    """An MoE colocated group of G GPUs runs G/t attention instances of TP t (t = 1: data-
    parallel) beside the experts over all G, as vLLM's DP x TP with expert parallelism
    does; a TP-t instance holds its attention weights once over t GPUs (MLA's cache on each)."""
    from afdplan.deploy.runtime import colocated_files
    from afdplan.deploy.slo_search import colocated_capacity

    model, hw = load_model("deepseek-v3"), load_hardware("h200")
    result = search(small_target(gpus_ffn=(8,), microbatches=(1,)), "none")
    colocated = result.configs[result.configs.architecture != "afd"]
    assert {1, 2, 4, 8} <= set(colocated.gpus_attention)
    assert (colocated.r * colocated.gpus_attention == colocated.gpus_ffn).all()
    one, two = colocated_capacity(model, hw, 8, 1), colocated_capacity(model, hw, 8, 2)
    assert one < two < 2 * one  # the attention weights are shared, the MLA cache is not
    row = colocated[colocated.gpus_attention == 2].iloc[0].to_dict()
    text = colocated_files(row, model, hw)["colocated/vllm.sh"]
    assert "--data-parallel-size 4" in text and "--tensor-parallel-size 2" in text
    assert "--enable-expert-parallel" in text


def test_a_colocated_label_names_its_hardware():
    from afdplan.deploy.slo_search import colocated_hardware, colocated_label

    h20, h200 = load_hardware("h20"), load_hardware("h200")
    assert colocated_hardware(colocated_label(h200), h20, h200) is h200
    assert colocated_hardware(colocated_label(h20), h20, h200) is h20
    # one kind of GPU, or a label that names neither: the attention side's
    assert colocated_hardware(colocated_label(h200), h200, h200) is h200
    assert colocated_hardware("", h20, h200) is h20
