"""``afdplan deploy``: what to launch under a TPOT SLO, checked by simulation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from afdplan.choices import Objective, Percentile, Runtime
from afdplan.cli.common import (
    DecodeColOpt,
    DropInvalidOpt,
    ExchangeOverlapOpt,
    FfnDtypeOpt,
    JsonOpt,
    KvDtypeOpt,
    MtpOpt,
    ObjectiveOpt,
    OutTable,
    PriceAttOpt,
    PriceFfnOpt,
    PromptColOpt,
    RoutingOpt,
    SaveDirOpt,
    SeedOpt,
    TraceOpt,
    WeightDtypeOpt,
    WorkloadOpt,
    app,
    fmt_rate,
    load_workload,
    out,
    parse_int_list,
    prepare_output_dir,
    print_json,
    progress_bar,
    show,
)
from afdplan.errors import require


def over_network(text: str, a_hw, f_hw):
    """Both sides' hardware with ``--network`` as their scale-out port."""
    from dataclasses import replace

    from afdplan.calibrate.roofline import parse_link

    link = parse_link(text)
    require(
        link.bandwidth is not None,
        "--network: nvlink is the scale-up domain itself; name a network link "
        "(ib-ndr, ib-xdr or BANDWIDTHgbps@LATENCYus)",
    )
    swap = {"network_bandwidth": link.bandwidth, "network_latency": link.latency}
    a_new = replace(a_hw, **swap)
    return a_new, a_new if f_hw is a_hw else replace(f_hw, **swap)


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        help="Model preset, config.json path, or Hugging Face id (cached by the measured extra).",
    ),
]


@app.command()
def deploy(
    model: ModelOpt = "deepseek-v3",
    attention_hw: Annotated[
        str, typer.Option("--attention-hw", help="Attention hardware (preset or AIC name).")
    ] = "h200",
    ffn_hw: Annotated[
        str | None, typer.Option("--ffn-hw", help="FFN hardware [the attention hardware].")
    ] = None,
    weight_dtype: WeightDtypeOpt = None,
    ffn_dtype: FfnDtypeOpt = None,
    kv_dtype: KvDtypeOpt = None,
    trace: TraceOpt = None,
    workload: WorkloadOpt = None,
    prompt_col: PromptColOpt = None,
    decode_col: DecodeColOpt = None,
    drop_invalid: DropInvalidOpt = False,
    tpot_ms: Annotated[
        float, typer.Option("--tpot-ms", help="SLO on the decode step time, milliseconds.")
    ] = 50.0,
    tpot_percentile: Annotated[
        Percentile,
        typer.Option("--tpot-percentile", help="Percentile of the step time the SLO bounds."),
    ] = Percentile.p99,
    gpus: Annotated[
        int | None, typer.Option("--gpus", help="Most GPUs one bundle may use.")
    ] = None,
    gpus_attention: Annotated[
        str, typer.Option("--gpus-attention", help="Attention TP sizes to search (list).")
    ] = "1,2,4,8",
    gpus_ffn: Annotated[
        str | None,
        typer.Option("--gpus-ffn", help="FFN group sizes to search [all that fit, to 72]."),
    ] = None,
    expert_tp: Annotated[
        str | None,
        typer.Option(
            "--expert-tp",
            help="GPUs each routed expert is split over in an FFN group (list) [1 and the "
            "whole group: vLLM's expert-parallel and split-expert MoE].",
        ),
    ] = None,
    ffn_across_nodes: Annotated[
        bool,
        typer.Option(
            "--ffn-across-nodes",
            help="Let FFN (and colocated) groups span nodes (all-to-all at network line rate).",
        ),
    ] = False,
    network: Annotated[
        str | None,
        typer.Option(
            "--network",
            help="Scale-out port per GPU beyond one NVLink domain: ib-ndr (400 Gb/s), ib-xdr "
            "(800 Gb/s) or BANDWIDTHgbps@LATENCYus [the hardware's].",
        ),
    ] = None,
    microbatches: Annotated[
        str, typer.Option("--microbatches", "-m", help="Micro-batch counts to search (list).")
    ] = "1-4",
    redundant_experts: Annotated[
        int,
        typer.Option(
            "--redundant-experts",
            help="Copies of hot experts the FFN group adds (EPLB): groups then divide the "
            "experts plus these (DeepSeek-V3's EP 288 = 256 + 32).",
        ),
    ] = 0,
    max_batch_per_rank: Annotated[
        int | None,
        typer.Option(
            "--max-batch-per-rank",
            help="Most sequences one attention rank (or colocated GPU) runs [vLLM's default "
            "max_num_seqs: 1024 on GPUs of 70 GiB or more other than A100, else 256].",
        ),
    ] = None,
    routing: RoutingOpt = None,
    exchange_overlap: ExchangeOverlapOpt = False,
    mtp: MtpOpt = None,
    objective: ObjectiveOpt = Objective.gpu,
    price_attention: PriceAttOpt = None,
    price_ffn: PriceFfnOpt = None,
    anchor: Annotated[
        str | None,
        typer.Option(
            "--anchor",
            help="Measured set that scales the roofline (name or file; 'none') [shipped match].",
        ),
    ] = None,
    runtime: Annotated[
        Runtime, typer.Option("--runtime", help="Runtime whose rules and launch files apply.")
    ] = Runtime.vllm_afd,
    runtime_version: Annotated[
        str | None,
        typer.Option(
            "--runtime-version",
            help="Release of the runtime whose profile applies (afdplan presets lists "
            "them) [the first listed].",
        ),
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Configurations to show and simulate.")] = 5,
    seeds: Annotated[int, typer.Option("--seeds", help="Simulation seeds per configuration.")] = 3,
    verify: Annotated[
        bool,
        typer.Option("--verify/--no-verify", help="Check the top configurations by simulation."),
    ] = True,
    seed: SeedOpt = 0,
    save_dir: SaveDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Search r, B, micro-batches and parallelism under a TPOT SLO; compare with colocated
    decode; simulate the best; write launch files (with --save-dir)."""
    require(top >= 1, f"--top must be >= 1, got {top}")
    require(seeds >= 1, f"--seeds must be >= 1, got {seeds}")
    require(seed >= 0, f"--seed must be >= 0, got {seed}")
    folder = prepare_output_dir(save_dir)

    from afdplan.calibrate.specs import load_hardware, load_model, served_as
    from afdplan.deploy import MoeAssumptions, Slo, Space, Target, search
    from afdplan.deploy.anchor import resolve_anchor
    from afdplan.timing import Mtp, Routing

    moe = MoeAssumptions(Routing.parse(routing), exchange_overlap=exchange_overlap)

    wl = load_workload(trace, workload, prompt_col, decode_col, drop_invalid)
    served = load_model(model)  # in the dtypes its config names: what a measured set saw
    spec = served_as(
        served, *(None if d is None else d.value for d in (weight_dtype, ffn_dtype, kv_dtype))
    )
    require(redundant_experts >= 0, f"--redundant-experts must be >= 0, got {redundant_experts}")
    require(
        runtime_version is None or runtime != Runtime.none,
        "--runtime-version: --runtime none has no releases (name a runtime)",
    )
    if redundant_experts:
        require(spec.is_moe, f"--redundant-experts: {spec.name} is dense (no routed experts)")
        spec = replace(spec, redundant_experts=redundant_experts)
    a_hw = load_hardware(attention_hw)
    f_hw = load_hardware(ffn_hw) if ffn_hw else a_hw
    if network is not None:
        a_hw, f_hw = over_network(network, a_hw, f_hw)
    target = Target(
        model=spec,
        attention_hw=a_hw,
        ffn_hw=f_hw,
        # per-size measured tables hold the model in the dtypes it was measured in
        anchor=resolve_anchor(anchor, served, a_hw, f_hw, per_size=spec == served),
        stats=wl.stats(),
        slo=Slo(tpot_ms, int(tpot_percentile.value[1:])),
        objective=objective.value,
        prices=(
            price_attention if price_attention is not None else a_hw.price_per_hour,
            price_ffn if price_ffn is not None else f_hw.price_per_hour,
        ),
        space=Space(
            gpus_attention=tuple(parse_int_list(gpus_attention, "--gpus-attention", 64)),
            gpus_ffn=None if gpus_ffn is None else tuple(parse_int_list(gpus_ffn, "--gpus-ffn")),
            expert_tp=(
                None if expert_tp is None else tuple(parse_int_list(expert_tp, "--expert-tp"))
            ),
            microbatches=tuple(parse_int_list(microbatches, "--microbatches", 16)),
            gpu_budget=gpus,
            across_nodes=ffn_across_nodes,
            max_batch=max_batch_per_rank,
        ),
        moe=moe,
        mtp=None if mtp is None else Mtp.parse(mtp),
    )
    require(
        routing is None or spec.is_moe,
        f"--routing: {spec.name} is dense (no routed experts)",
    )
    require(
        expert_tp is None or spec.is_moe,
        f"--expert-tp: {spec.name} is dense (no routed experts to split)",
    )
    with progress_bar("searching; the verdict's margin; the roofline band") as bar:
        task = bar.add_task("search", total=3)
        result = search(target, runtime.value, runtime_version)
        bar.advance(task)
        result = result.with_margin()
        bar.advance(task)
        result = result.with_band()
        bar.advance(task)
    if verify:
        from afdplan.deploy.verify import verify as run_verify

        n = len(result.top(top))
        with progress_bar("simulating") as bar:
            task = bar.add_task("simulating", total=n)
            rows = run_verify(
                result,
                wl,
                top,
                seeds,
                seed=seed,
                progress=lambda i, _: bar.update(task, completed=i),
            )
        result = result.with_verification(rows)
    files = _write_files(folder, result, wl) if folder is not None else []
    if json_out:
        print_json({"workload": wl.describe(), **result.to_dict([str(f) for f in files])})
        return
    _render(result, wl.describe(), top, files)


def _write_files(folder: Path, result, wl) -> list[Path]:
    from afdplan.deploy.runtime import write_launch_files
    from afdplan.report.figures import plot_frontier

    t = result.target
    paths = []
    for name, frame in (("configurations", result.configs), ("frontier", result.frontier)):
        frame.to_csv(folder / f"{name}.csv", index=False)
        frame.to_parquet(folder / f"{name}.parquet", index=False)
        paths += [folder / f"{name}.csv", folder / f"{name}.parquet"]
    png = folder / "frontier.png"
    plot_frontier(
        result.frontier,
        result.chosen,
        f"{t.model.name} on {t.attention_hw.name}"
        + (f" + {t.ffn_hw.name}" if t.heterogeneous else "")
        + f", p{t.slo.percentile} step <= {t.slo.tpot_ms:g} ms",
        png,
    )
    paths.append(png)
    stats = t.stats
    colocated = None
    if result.recommendation == "colocated":
        col = result.colocated
        from afdplan.deploy.slo_search import colocated_hardware

        # the colocated decode the search picked runs on one of the two GPU kinds
        colocated = (col, colocated_hardware(col["architecture"], t.attention_hw, t.ffn_hw))
    paths += write_launch_files(
        folder, result.profile, result.chosen, t.model, t.attention_hw,
        stats.mu_prefill, stats.mu_decode, colocated, t.mtp,
    )  # fmt: skip
    return paths


def _render(result, workload: str, top: int, files: list[Path]) -> None:
    from afdplan.deploy.slo_search import expert_layout, group_label

    t, c = result.target, result.chosen
    pct = f"p{t.slo.percentile}"
    out.print(
        f"{t.model.name}: attention on {t.attention_hw.name}, FFN on {t.ffn_hw.name}; "
        f"{workload} (θ = {t.stats.theta:,.0f} KV tokens/slot); SLO: {pct} step time <= "
        f"{t.slo.tpot_ms:g} ms; objective: tokens/s per "
        + {"gpu": "GPU", "cost": "$/hour", "instance": "instance"}[t.objective],
        markup=False,
    )
    out.print(
        "Step times: roofline per instance size"
        + ("" if t.anchor is None else f", anchored on {result.anchor_text()}")
        + f"; beyond one NVLink domain a {t.attention_hw.network_bandwidth * 8 / 1e9:.0f} Gb/s "
        f"port per GPU ({t.attention_hw.network_latency * 1e6:g} us)"
        + (
            ""
            if t.mtp is None
            else f"; {t.mtp.describe()}: every step time below is per token of progress "
            f"(a step over {t.mtp.tokens_per_step:g} tokens a sequence)"
        ),
        markup=False,
    )
    out.print(f"Provenance of the chosen bundle's step times: {result.provenance}.", markup=False)
    _render_band(result)
    rules = result.runtime if result.profile is None else result.profile.label
    table = OutTable(f"Best launchable configurations ({rules})")
    for name in ("r", "g_A", "g_F", "m", "B", "GPUs", f"{pct} ms", "mean ms", "tok/s/GPU",
                 "tok/s/user", "idle A", "idle F", "binds", "KV free"):  # fmt: skip
        table.add_column(name, justify="left" if name == "binds" else "right")
    for row in result.top(top).itertuples():
        table.add_row(
            row.r, row.gpus_attention, group_label(t.model, row.gpus_ffn, row.expert_tp),
            row.microbatches, row.batch, row.gpus,
            f"{row.tpot_ms:.1f}", f"{row.step_time_mean_ms:.1f}", fmt_rate(row.throughput_per_gpu),
            f"{row.throughput_per_user:.1f}", f"{row.idle_attention:.0%}", f"{row.idle_ffn:.0%}",
            row.binding, f"{row.kv_headroom:.0%}",
        )  # fmt: skip
    show(table)
    if result.verification:
        sim = OutTable("Checked by simulation (exact ping-pong recurrence, 95% CI over seeds)")
        for name in ("r", "m", "B", "tok/s/GPU pred", "tok/s/GPU sim", f"step {pct} pred",
                     f"step {pct} sim", f"TPOT {pct} sim", "SLO"):  # fmt: skip
            sim.add_column(name, justify="right")
        for v in result.verification:
            s_tp, s_step, s_tpot = (
                v["simulated_throughput_per_gpu"], v["simulated_step_time_ms"],
                v["simulated_tpot_ms"],
            )  # fmt: skip
            sim.add_row(
                v["r"], v["microbatches"], v["batch"], fmt_rate(v["predicted_throughput_per_gpu"]),
                f"{fmt_rate(s_tp['mean'])} ± {_hw(s_tp['half_width'])}",
                f"{v['predicted_step_time_ms']:.2f}",
                f"{s_step['mean']:.2f} ± {_hw(s_step['half_width'], 2)}",
                f"{s_tpot['mean']:.2f} ± {_hw(s_tpot['half_width'], 2)}",
                {"breaks": "BREAKS"}.get(v["slo_status"], v["slo_status"]),
            )  # fmt: skip
        show(sim)
    _render_frontier(result.frontier, t.model)
    best = result.best_unconstrained
    if result.runtime_cost > 0:
        out.print(
            f"{result.runtime}'s rules cost {result.runtime_cost:.1%} of the objective: the best "
            f"without them is r = {best['r']}, g_F = "
            f"{group_label(t.model, best['gpus_ffn'], best['expert_tp'])}, m = "
            f"{best['microbatches']}, B = {best['batch']} ({fmt_rate(best['throughput_per_gpu'])}"
            f" tok/s/GPU; {best['runtime_note']}).",
            markup=False,
        )
    if result.colocated is not None:
        _render_verdict(result, pct)
    a = result.analytic_choice
    if a is not None:
        out.print(
            f"The search's best, r = {a['r']}, m = {a['microbatches']}, B = {a['batch']} "
            f"({fmt_rate(a['throughput_per_gpu'])} tok/s/GPU predicted), does not hold the SLO "
            "in simulation; the best checked configuration that does is chosen instead.",
            markup=False,
        )
    check = result.chosen_check
    if check is not None and check["slo_status"] != "ok":
        out.print(
            "Warning: no checked configuration holds the SLO with its 95% interval below it; "
            + (
                "the chosen one straddles it (at limit)."
                if check["slo_status"] == "at limit"
                else "every one breaks it in simulation: relax the SLO or check more (--top)."
            ),
            markup=False,
        )
    out.print(
        f"Chosen: r = {c['r']} attention instances x {c['gpus_attention']} GPU(s) + an FFN group "
        f"of {c['gpus_ffn']} ({expert_layout(t.model, c['gpus_ffn'], c['expert_tp'])}), "
        f"B = {c['batch']}, m = {c['microbatches']}: "
        f"{fmt_rate(c['throughput_per_gpu'])} tok/s/GPU at {c['tpot_ms']:.1f} ms {pct} step time"
        + (f", {3600 * c['score']:,.0f} tokens per $" if t.objective == "cost" else "")
        + (
            ""
            if c["tokens_per_joule"] != c["tokens_per_joule"]
            else f", {c['tokens_per_joule']:.2f} tokens per joule at board power"
        )
        + ".",
        markup=False,
    )
    if result.recommendation == "colocated":
        col = result.colocated
        out.print(
            f"Recommendation: colocated decode ({col['architecture']}, "
            f"{_colocated_shape(t.model, col)}, m = {col['microbatches']}: "
            f"{fmt_rate(col['throughput_per_gpu'])} tok/s/GPU): AFD loses here"
            + ("." if t.mtp else "; --save-dir writes its vLLM launch file (colocated/vllm.sh)."),
            markup=False,
        )  # fmt: skip
    if result.launch_refusal is not None:
        out.print(f"Launch: {result.launch_refusal}.", markup=False)
    for path in files:
        out.print(f"wrote {path}", markup=False)


def _colocated_shape(model, col) -> str:
    """How a colocated configuration splits the model (data + expert parallel groups for
    MoE, tensor-parallel instances for dense)."""
    from afdplan.deploy.slo_search import expert_layout

    if model.is_moe:
        t = col["gpus_attention"]
        attention = "DP attention" if t == 1 else f"{col['r']} TP-{t} attention instances"
        per = "GPU" if t == 1 else "instance"
        layout = expert_layout(model, col["gpus_ffn"], col["expert_tp"])
        return (
            f"{attention} + the experts over a group of {col['gpus_ffn']} GPUs ({layout}), "
            f"B = {col['batch']}/{per}"
        )
    return f"TP {col['gpus_attention']} instances, B = {col['batch']}/instance"


def _render_band(result) -> None:
    """How far a plain-roofline answer may sit from measured kernels."""
    if not result.roofline_band:
        return
    from afdplan.deploy.result import verdict

    cases = "; ".join(
        f"under {b['anchor']}: "
        + (
            "nothing meets the SLO"
            if b["throughput_per_gpu"] is None
            else f"{fmt_rate(b['throughput_per_gpu'])} tok/s/GPU"
            + ("" if b["afd_over_colocated"] is None else f", {verdict(b['afd_over_colocated'])}")
        )
        for b in result.roofline_band
    )
    out.print(
        "No measured set covers this model and hardware: every number below is the plain "
        f"roofline's ({fmt_rate(result.chosen['throughput_per_gpu'])} tok/s/GPU chosen). With "
        "its kernels as far off the roofline as on the shipped measured sets, the answer "
        f"would be {cases}.",
        markup=False,
    )


def _render_verdict(result, pct: str) -> None:
    from afdplan.deploy.result import PARITY_BAND, verdict

    col, ratio = result.colocated, result.afd_over_colocated
    best_ratio = result.best_afd_over_colocated
    out.print(
        f"AFD vs colocated: {verdict(ratio)} with {result.runtime} ({ratio:.2f}x the objective "
        f"of the best colocated decode; parity within ±{PARITY_BAND:.0%}): "
        f"{col['architecture']}, {_colocated_shape(result.target.model, col)}, m = "
        f"{col['microbatches']}{' (two-batch overlap)' if col['microbatches'] == 2 else ''}: "
        f"{fmt_rate(col['throughput_per_gpu'])} tok/s/GPU at {col['tpot_ms']:.1f} ms {pct}"
        + (
            f"; the best AFD configuration without its rules reaches {best_ratio:.2f}x."
            if result.runtime_cost > 0
            else "."
        ),
        markup=False,
    )
    if result.margin:
        cases = "; ".join(
            f"{m['assumption']}: "
            + ("—" if m["afd_over_colocated"] is None else f"{m['afd_over_colocated']:.2f}x")
            for m in result.margin
        )
        verdicts = {m["verdict"] for m in result.margin}
        holds = (
            f"the verdict holds in every case ({verdicts.pop()})"
            if len(verdicts) == 1
            else "the verdict depends on them: " + ", ".join(sorted(verdicts))
        )
        out.print(f"How sure (the uncertain MoE terms): {cases} — {holds}.", markup=False)


def _render_frontier(frontier, model) -> None:
    from afdplan.deploy.result import thin_frontier
    from afdplan.deploy.slo_search import group_label

    table = OutTable("Frontier: tokens/s per GPU against tokens/s per user (a few points each)")
    for name in ("family", "tok/s/user", "tok/s/GPU", "r", "g_A", "g_F", "m", "B"):
        table.add_column(name, justify="left" if name == "family" else "right")
    for row in thin_frontier(frontier, 6).itertuples():
        table.add_row(
            row.family, f"{row.throughput_per_user:.1f}", fmt_rate(row.throughput_per_gpu),
            row.r, row.gpus_attention, group_label(model, row.gpus_ffn, row.expert_tp),
            row.microbatches, row.batch,
        )  # fmt: skip
    show(table)


def _hw(value: float, digits: int = 0) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"
