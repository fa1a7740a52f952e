"""``afdplan plan`` and ``afdplan presets``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from afdplan.calibrate.specs import hardware_names, load_hardware, load_model, model_names
from afdplan.cli.common import (
    TABLE_STYLE,
    CoeffsOpt,
    CommOpt,
    DecodeColOpt,
    DropInvalidOpt,
    JsonOpt,
    ModeOpt,
    PromptColOpt,
    TablesOpt,
    TraceOpt,
    WAttOpt,
    WFfnOpt,
    WorkloadOpt,
    app,
    fmt_rate,
    fmt_time,
    load_step_times,
    load_workload,
    out,
    print_json,
)
from afdplan.plan import PlanResult, make_plan
from afdplan.timing import DEFAULT_COEFFS, builtin_coeff_names, load_coeffs

STAGE_LETTER = {"attention": "A", "communication": "C", "ffn": "F", "serial": "A+C+F"}


@app.command()
def plan(
    trace: TraceOpt = None,
    workload: WorkloadOpt = None,
    coeffs: CoeffsOpt = DEFAULT_COEFFS,
    tables: TablesOpt = None,
    batch: Annotated[
        int | None,
        typer.Option("--batch", "-B", help="Sequences per Attention worker [largest that fits]."),
    ] = None,
    r_max: Annotated[int | None, typer.Option("--r-max", help="Largest r to evaluate.")] = None,
    mode: ModeOpt = "overlap",
    comm: CommOpt = None,
    w_attention: WAttOpt = 1.0,
    w_ffn: WFfnOpt = 1.0,
    prompt_col: PromptColOpt = None,
    decode_col: DecodeColOpt = None,
    drop_invalid: DropInvalidOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Recommend the A/F ratio r for a workload, step-time model and batch B."""
    wl = load_workload(trace, workload, prompt_col, decode_col, drop_invalid)
    linear, times = load_step_times(coeffs, comm, tables)
    result = make_plan(
        wl,
        linear,
        batch,
        mode=mode,
        r_max=r_max,
        w_attention=w_attention,
        w_ffn=w_ffn,
        curves=None if tables is None else times,
    )
    if as_json:
        print_json(result.to_dict())
    else:
        render_plan(result)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def render_plan(result: PlanResult) -> None:
    t, d, s = result.times, result.deployment, result.stats
    unit = t.time_unit
    out.print(f"[bold]Workload[/bold]  {result.workload}")
    se = f" ± {1.96 * s.theta_se:.1f} (95%)" if s.theta_se else ""
    out.print(
        f"  θ = {s.theta:,.1f} tokens/slot{se}   √v = {s.v**0.5:,.1f}   "
        f"μ_P + μ_D = {s.load_v1:,.1f} (v1)   μ_P = {s.mu_prefill:,.1f}   μ_D = {s.mu_decode:,.1f}"
    )
    cap = (
        f"   KV capacity {t.kv_capacity_tokens:,} tokens → B ≤ {result.max_feasible_batch}"
        if (t.kv_capacity_tokens)
        else ""
    )
    out.print(
        f"[bold]Deployment[/bold]  coeffs {t.name}   B = {d.batch}   mode {d.mode}   "
        f"comm {t.comm_scope}   weights A:F = {d.w_attention:g}:{d.w_ffn:g}{cap}"
    )
    if unit != "s":
        out.print(f"  times are in the set's own unit u = {unit!r}", highlight=False)
    if result.curves:
        out.print(f"  rows use the measured curves of {result.curves}", highlight=False)
    time_head = "ms" if unit == "s" else "u"
    rate_head = "tok/s" if unit == "s" else "tok/u"
    table = Table(
        title="Barrier-aware prediction per A/F ratio r (★ = recommended)",
        **TABLE_STYLE,
        pad_edge=False,
    )
    heads = (
        "r",
        escape(f"E[τ] {time_head}"),
        f"τ̄ {time_head}",
        f"{rate_head}/inst",
        f"{rate_head}/GPU",
        "idle A",
        "idle F",
        "bound",
    )
    for col in heads:
        table.add_column(col, justify="left" if col == "bound" else "right", no_wrap=True)
    best = result.recommended.point.r
    for row in result.rows:
        p = row.point
        table.add_row(
            f"{p.r}{'★' if p.r == best else ''}",
            fmt_time(p.cycle_time, unit),
            fmt_time(p.cycle_time_mean_field, unit),
            fmt_rate(row.throughput_per_instance),
            fmt_rate(result.throughput_per_gpu(row)),
            f"{p.idle_attention:.1%}",
            f"{p.idle_ffn:.1%}",
            STAGE_LETTER[p.binding],
            style="bold green" if p.r == best else None,
        )
    out.print(table)
    out.print(
        "E[τ]: expected step time with the barrier; τ̄: all workers at mean load.", highlight=False
    )
    bp = result.rule.breakpoints
    out.print(
        f"r* (θ, mean field) = {result.rule.r_star:.2f}  ({result.rule.regime}-bound; "
        + (
            f"r_A = {bp.r_attention:.2f}, r_C = {bp.r_comm:.2f}, r_peak = {bp.r_peak:.2f})"
            if bp.r_comm is not None
            else f"r_A = {bp.r_attention:.2f}, r_peak = {bp.r_peak:.2f}, aggregate comm: "
            f"r_AC = {_num(bp.r_attention_comm)}, r_peak,C = {_num(bp.r_peak_comm)}, "
            f"r_CF = {_num(bp.r_comm_ffn)})"
        ),
        highlight=False,
    )
    out.print(
        f"r* (v1, μ_P + μ_D)  = {result.rule_v1.r_star:.2f}  ({result.rule_v1.regime}-bound)",
        highlight=False,
    )
    rec = result.recommended
    per_gpu = result.recommended_per_gpu
    if per_gpu.point.r != best and (t.gpus_attention, t.gpus_ffn) != (d.w_attention, d.w_ffn):
        out.print(
            f"Per GPU ({t.gpus_attention:g} per A, {t.gpus_ffn:g} per FFN instance) r = "
            f"{per_gpu.point.r} is best: pass --w-attention {t.gpus_attention:g} --w-ffn "
            f"{t.gpus_ffn:g} to optimise for GPUs.",
            highlight=False,
        )
    per = "s" if unit == "s" else unit
    out.print(
        f"[bold green]Recommendation: r = {best}[/bold green] Attention instances per FFN "
        f"instance at B = {d.batch}: {fmt_rate(rec.throughput_per_instance)} tokens/{per} per "
        f"instance, {fmt_rate(result.throughput_per_gpu(rec))} per GPU; idle A "
        f"{rec.point.idle_attention:.1%}, idle F {rec.point.idle_ffn:.1%}."
    )


@app.command()
def presets() -> None:
    """List the built-in coefficient sets, models and hardware."""
    table = Table(title="Coefficient sets (--coeffs NAME)", **TABLE_STYLE)
    for col in ("name", "time unit", "GPUs A:F", "provenance"):
        table.add_column(col)
    for name in builtin_coeff_names():
        t = load_coeffs(name)
        table.add_row(name, t.time_unit, f"{t.gpus_attention:g}:{t.gpus_ffn:g}", t.provenance)
    out.print(table)
    models = Table(
        title="Models (--model NAME, or a config.json path)",
        **TABLE_STYLE,
    )
    for col in ("name", "layers", "hidden", "attention", "FFN", "source"):
        models.add_column(col)
    for name in model_names():
        m = load_model(name)
        attn = f"MLA {m.heads} heads" if m.is_mla else f"GQA {m.heads}/{m.kv_heads}"
        ffn = f"MoE {m.experts}x top-{m.top_k}" if m.is_moe else f"dense {m.intermediate}"
        models.add_row(name, str(m.layers), str(m.hidden), attn, ffn, m.source)
    out.print(models)
    hw = Table(title="Hardware (--hardware NAME)", **TABLE_STYLE)
    for col in ("name", "BF16 TFLOP/s", "HBM TB/s", "HBM GB", "link GB/s", "source"):
        hw.add_column(col)
    for name in hardware_names():
        h = load_hardware(name)
        hw.add_row(
            name,
            f"{h.flops_bf16 / 1e12:.0f}",
            f"{h.hbm_bandwidth / 1e12:.2f}",
            f"{h.hbm_bytes / 1e9:.0f}",
            f"{h.link_bandwidth / 1e9:.0f}",
            h.source,
        )
    out.print(hw)
