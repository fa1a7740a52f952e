"""``afdplan calibrate``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from afdplan.calibrate.build import Calibration
from afdplan.calibrate.pipeline import Sources
from afdplan.calibrate.pipeline import calibrate as run_calibration
from afdplan.cli.common import TABLE_STYLE, JsonOpt, app, out, parse_range, print_json
from afdplan.report.figures import plot_calibration
from afdplan.timing import coeffs_to_dict, write_coeffs_file, write_step_table


@app.command()
def calibrate(
    model: Annotated[
        str | None, typer.Option("--model", help="Model preset or HF config.json path.")
    ] = None,
    hardware: Annotated[
        str | None, typer.Option("--hardware", help="Hardware preset (roofline for any stage).")
    ] = None,
    gpus_attention: Annotated[
        int, typer.Option("--gpus-attention", help="GPUs per A instance.")
    ] = 1,
    gpus_ffn: Annotated[
        int | None, typer.Option("--gpus-ffn", help="GPUs per FFN instance [fewest that fit].")
    ] = None,
    mem_efficiency: Annotated[float | None, typer.Option("--mem-efficiency")] = None,
    compute_efficiency: Annotated[float | None, typer.Option("--compute-efficiency")] = None,
    link_efficiency: Annotated[float | None, typer.Option("--link-efficiency")] = None,
    vidur_mlp: Annotated[
        Path | None, typer.Option("--vidur-mlp", help="Vidur mlp.csv (FFN, attention GEMMs).")
    ] = None,
    send_recv: Annotated[
        Path | None, typer.Option("--send-recv", help="Vidur send_recv.csv (A↔F transfers).")
    ] = None,
    inter_node: Annotated[
        bool, typer.Option("--inter-node", help="Use send_recv's inter-node rows.")
    ] = False,
    table: Annotated[
        Path | None,
        typer.Option("--table", help="Generic table: op,tokens,kv_tokens,batch,seconds."),
    ] = None,
    system: Annotated[
        str | None,
        typer.Option(
            "--system", help="aiconfigurator-core system, e.g. h100_sxm (needs [measured])."
        ),
    ] = None,
    framework: Annotated[
        str, typer.Option("--framework", help="aiconfigurator framework.")
    ] = "vllm",
    ffn_range: Annotated[
        str | None,
        typer.Option("--ffn-range", help="Fit the FFN only on LO:HI tokens (r·B range)."),
    ] = None,
    attention_range: Annotated[
        str | None,
        typer.Option("--attention-range", help="Fit the attention kernel only on LO:HI KV tokens."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the coefficients (.toml/.json).")
    ] = None,
    table_out: Annotated[
        Path | None, typer.Option("--table-out", help="Write the measured rows for --tables.")
    ] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="PNG of measured vs fitted.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Name of the coefficient set.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Step-time coefficients from measurements and/or model + hardware specs."""
    result, rows = run_calibration(
        Sources(
            model=model,
            hardware=hardware,
            gpus_attention=gpus_attention,
            gpus_ffn=gpus_ffn,
            efficiencies={
                "mem_efficiency": mem_efficiency,
                "compute_efficiency": compute_efficiency,
                "link_efficiency": link_efficiency,
            },
            vidur_mlp=vidur_mlp,
            send_recv=send_recv,
            inter_node=inter_node,
            table=table,
            system=system,
            framework=framework,
            ffn_range=parse_range(ffn_range, "--ffn-range"),
            attention_range=parse_range(attention_range, "--attention-range"),
            name=name,
        )
    )
    fits = result.fits
    if output is not None:
        write_coeffs_file(result.times, output)
    if table_out is not None and rows is not None:
        write_step_table(rows, table_out)
    if plot is not None and fits:
        plot_calibration(rows, fits, plot)
    if as_json:
        print_json(
            {
                "coefficients": coeffs_to_dict(result.times),
                "sources": result.sources,
                "fits": {k: asdict(v) for k, v in fits.items()},
                "notes": list(result.notes),
            }
        )
        return
    render_calibration(result)


def render_calibration(result: Calibration) -> None:
    t = result.times
    table = Table(title=f"Coefficients: {t.name}", **TABLE_STYLE)
    for col in ("stage", "alpha", "gamma", "beta", "source"):
        table.add_column(col, justify="left" if col in ("stage", "source") else "right")
    table.add_row(
        "attention",
        f"{t.attention.alpha:.4g} s/KV tok",
        f"{t.attention.gamma:.4g} s/seq",
        f"{t.attention.beta:.4g} s",
        result.sources["attention"],
    )
    table.add_row(
        "ffn", f"{t.ffn.alpha:.4g} s/tok", "", f"{t.ffn.beta:.4g} s", result.sources["ffn"]
    )
    table.add_row(
        "comm", f"{t.comm.alpha:.4g} s/tok", "", f"{t.comm.beta:.4g} s", result.sources["comm"]
    )
    out.print(table)
    gpus = f"GPUs per instance A:F = {t.gpus_attention:g}:{t.gpus_ffn:g}"
    kv = (
        f", KV capacity {t.kv_capacity_tokens:,} tokens per A instance"
        if t.kv_capacity_tokens
        else ""
    )
    out.print(gpus + kv, highlight=False)
    for fit in result.fits.values():
        out.print(f"fit {fit.describe()}", highlight=False, markup=False)
    for note in result.notes:
        out.print(f"- {note}", highlight=False, markup=False)
