"""``afdplan calibrate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from afdplan.choices import Framework
from afdplan.cli.common import (
    ExpertTpOpt,
    JsonOpt,
    OutputOpt,
    OutTable,
    RoutingOpt,
    TablesOpt,
    app,
    out,
    parse_range,
    prepare_output_dir,
    prepare_output_file,
    print_json,
    show,
)

_EFF_HELP = "Achievable share of the peak, in (0, 1] [preset's]."


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
    expert_tp: ExpertTpOpt = 1,
    mem_efficiency: Annotated[
        float | None, typer.Option("--mem-efficiency", help=_EFF_HELP)
    ] = None,
    compute_efficiency: Annotated[
        float | None, typer.Option("--compute-efficiency", help=_EFF_HELP)
    ] = None,
    link_efficiency: Annotated[
        float | None, typer.Option("--link-efficiency", help=_EFF_HELP)
    ] = None,
    vidur_mlp: Annotated[
        str | None,
        typer.Option("--vidur-mlp", help="Vidur mlp.csv (FFN, attention GEMMs) or a shipped name."),
    ] = None,
    send_recv: Annotated[
        str | None,
        typer.Option("--send-recv", help="Vidur send_recv.csv (A↔F transfers) or a shipped name."),
    ] = None,
    inter_node: Annotated[
        bool, typer.Option("--inter-node", help="Use send_recv's inter-node rows.")
    ] = False,
    tables: TablesOpt = None,
    system: Annotated[
        str | None,
        typer.Option(
            "--system", help="aiconfigurator-core system, e.g. h100_sxm (needs [measured])."
        ),
    ] = None,
    framework: Annotated[
        Framework,
        typer.Option("--framework", help="Framework whose aiconfigurator-core tables to read."),
    ] = Framework.vllm,
    data_version: Annotated[
        str | None,
        typer.Option(
            "--data-version",
            help="aiconfigurator-core data version of that framework, or current | previous | "
            "next [current]; a table the version lacks comes from the newest older one.",
        ),
    ] = None,
    ffn_range: Annotated[
        str | None,
        typer.Option("--ffn-range", help="Fit the FFN only on LO:HI tokens (r·B range)."),
    ] = None,
    routing: RoutingOpt = None,
    attention_range: Annotated[
        str | None,
        typer.Option("--attention-range", help="Fit the attention kernel only on LO:HI KV tokens."),
    ] = None,
    output: OutputOpt = None,
    save_dir: Annotated[
        Path | None,
        typer.Option(
            "--save-dir",
            help="Folder for coefficients.toml, the measured rows (table.csv, usable with "
            "--tables) and fit.png (measured vs fitted).",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Name of the coefficient set.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Step-time coefficients from measurements and/or model + hardware specs."""
    from afdplan.calibrate.pipeline import Sources
    from afdplan.calibrate.pipeline import calibrate as run_calibration
    from afdplan.data import resolve_input

    output = prepare_output_file(output, "--output", (".toml", ".json"))
    save_dir = prepare_output_dir(save_dir)
    result, rows = run_calibration(
        Sources(
            model=model,
            hardware=hardware,
            gpus_attention=gpus_attention,
            gpus_ffn=gpus_ffn,
            expert_tp=expert_tp,
            efficiencies={
                "mem_efficiency": mem_efficiency,
                "compute_efficiency": compute_efficiency,
                "link_efficiency": link_efficiency,
            },
            vidur_mlp=None if vidur_mlp is None else resolve_input(vidur_mlp, "vidur-mlp"),
            send_recv=None if send_recv is None else resolve_input(send_recv, "send-recv"),
            inter_node=inter_node,
            table=None if tables is None else resolve_input(tables, "tables"),
            system=system,
            framework=framework.value,
            data_version=data_version,
            ffn_range=parse_range(ffn_range, "--ffn-range"),
            attention_range=parse_range(attention_range, "--attention-range"),
            name=name,
            routing=routing,
        )
    )
    fits = result.fits
    from afdplan.timing import coeffs_to_dict, write_coeffs_file, write_step_table

    files = []
    if output is not None:
        write_coeffs_file(result.times, output)
        files.append(output)
    if save_dir is not None:
        write_coeffs_file(result.times, save_dir / "coefficients.toml")
        files.append(save_dir / "coefficients.toml")
        if rows is not None:
            write_step_table(rows, save_dir / "table.csv")
            files.append(save_dir / "table.csv")
        if fits:
            from afdplan.report.figures import plot_calibration

            plot_calibration(rows, fits, save_dir / "fit.png")
            files.append(save_dir / "fit.png")
    if as_json:
        from dataclasses import asdict

        print_json(
            {
                "coefficients": coeffs_to_dict(result.times),
                "sources": result.sources,
                "fits": {k: asdict(v) for k, v in fits.items()},
                "notes": list(result.notes),
                "files": [str(f) for f in files],
            }
        )
        return
    render_calibration(result)
    for path in files:
        out.print(f"wrote {path}", highlight=False, markup=False)


def render_calibration(result) -> None:
    t = result.times
    table = OutTable(title=f"Coefficients: {t.name}")
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
    show(table)
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
