"""From what a user has (a model, a hardware name, measurement files) to one coefficients set.

The roofline of the model on the hardware is the base for every stage; each measurement
source adds rows of the generic table; the rows are fitted and the fits replace the
roofline stage by stage (``afdplan.calibrate.build.combine``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from afdplan.calibrate.aiconfig import choose_ffn_gpus, measured_tables
from afdplan.calibrate.build import Calibration, Window, combine, fit_table
from afdplan.calibrate.readers import read_generic, read_vidur_mlp, read_vidur_send_recv
from afdplan.calibrate.roofline import derive, min_ffn_gpus
from afdplan.calibrate.specs import load_hardware, load_model
from afdplan.errors import InputError
from afdplan.presets import system_hardware
from afdplan.timing.experts import Routing
from afdplan.timing.tables import validate_table


@dataclass(frozen=True)
class Sources:
    """Everything a calibration may draw on; every field is optional."""

    model: str | None = None  # preset name or config.json path
    hardware: str | None = None  # preset name (defaults from ``system``)
    gpus_attention: int = 1
    gpus_ffn: int | None = (
        None  # default: fewest that hold the FFN weights (power of 2 if measured)
    )
    efficiencies: dict[str, float | None] | None = None  # mem/compute/link_efficiency overrides
    vidur_mlp: Path | None = None
    send_recv: Path | None = None
    inter_node: bool = False
    table: Path | None = None
    system: str | None = None  # aiconfigurator-core system
    framework: str = "vllm"
    data_version: str | None = None  # aiconfigurator-core data version (default: current)
    ffn_range: Window = None
    attention_range: Window = None
    name: str | None = None
    routing: str | None = None  # balanced | power-law:ALPHA (the MoE rows read, and φ)
    expert_tp: int = 1  # GPUs each routed expert is split over (the FFN group's layout)


def calibrate(src: Sources) -> tuple[Calibration, pd.DataFrame | None]:
    """The coefficients (with fits and notes) and the measured rows, if any."""
    spec = load_model(src.model) if src.model is not None else None
    hardware = src.hardware or (system_hardware().get(src.system) if src.system else None)
    hw = load_hardware(hardware, **(src.efficiencies or {})) if hardware is not None else None
    routing = Routing.parse(src.routing)
    if src.routing is not None and (spec is None or not spec.is_moe):
        raise InputError("--routing applies to an MoE model's routed experts; give --model MOE")
    if src.data_version is not None and src.system is None:
        raise InputError("--data-version needs --system (it selects aiconfigurator-core data)")
    if spec is None and (src.vidur_mlp or src.send_recv or src.system):
        raise InputError("--vidur-mlp, --send-recv and --system need --model (layers, shapes)")
    gpus_ffn = src.gpus_ffn
    if gpus_ffn is None and spec is not None and hw is not None and (src.system or src.vidur_mlp):
        gpus_ffn = choose_ffn_gpus(spec, min_ffn_gpus(spec, hw))
    if src.expert_tp != 1 and spec is None:
        raise InputError("--expert-tp needs --model (the experts it splits)")
    base = (
        derive(spec, hw, src.gpus_attention, gpus_ffn, expert_tp=src.expert_tp)
        if spec and hw
        else None
    )
    notes: list[str] = list(base.notes) if base else []
    frames: list[pd.DataFrame] = []
    labels: dict[str, str] = {}

    def add(frame: pd.DataFrame, label: str, *what: str) -> None:
        frames.append(frame)
        notes.extend(f"measured: {note}" for note in what)
        for op in frame["op"].unique():
            labels[op] = f"{labels[op]} and {label}" if op in labels else label

    if src.vidur_mlp is not None:
        path = src.vidur_mlp
        add(
            read_vidur_mlp(path, spec.layers, src.gpus_attention, gpus_ffn or 1),
            f"Vidur {path.parent.parent.name}/{path.parent.name}/{path.name}",
            f"{path} (FFN at TP {gpus_ffn or 1}, attention GEMMs at TP {src.gpus_attention})",
        )
    if src.send_recv is not None:
        link = "inter" if src.inter_node else "intra"
        rows = read_vidur_send_recv(
            src.send_recv, spec.hidden * spec.act_bytes, 2 * spec.layers, not src.inter_node
        )
        add(
            rows,
            f"Vidur {src.send_recv.parent.name}/{src.send_recv.name} ({link}-node)",
            f"{src.send_recv} ({link}-node), 2 x {spec.layers} transfers",
        )
    if src.table is not None:
        add(read_generic(src.table), src.table.name, str(src.table))
    if src.system is not None:
        measured = measured_tables(
            spec,
            src.system,
            src.framework,
            src.gpus_attention,
            gpus_ffn or 1,
            src.data_version,
            routing,
            hw,
            src.expert_tp,
        )
        add(measured.rows, f"aiconfigurator-core {src.system} {src.framework}", *measured.notes)
    if not frames and base is None:
        raise InputError("nothing to calibrate: give --model and --hardware, and/or measurements")
    rows = validate_table(pd.concat(frames, ignore_index=True), "measurements") if frames else None
    fits = fit_table(rows, src.ffn_range, src.attention_range) if rows is not None else {}
    name = src.name or f"{spec.name if spec else 'measured'}@{src.system or hardware or 'custom'}"
    result = combine(fits, base.times if base else None, labels, name, tuple(notes))
    experts = result.times.experts
    if experts is not None and src.routing is not None:
        # Power-law rows time the busiest rank already: no further φ on top of their fit.
        skew = src.system is not None and routing.kind == "power-law"
        times = replace(result.times, experts=replace(experts, routing=routing, skew_in_fit=skew))
        result = replace(result, times=times)
    return result, rows
