"""Cross-check afdplan's AFD step model against NVIDIA AIConfigurator on the same tables.

Run from anywhere (needs the ``measured`` extra; AIConfigurator itself is optional):

    python benchmarks/crosscheck_aiconfigurator.py
    python benchmarks/crosscheck_aiconfigurator.py --refresh --aiconfigurator-python aic/bin/python

AIConfigurator's own estimates are recorded in ``benchmarks/data/aiconfigurator_reference
.json`` by ``benchmarks/aic_reference.py`` (run with AIConfigurator's Python, 0.12.0;
``--refresh`` reruns it). Points: DeepSeek-V3 FP8 on H200 (vLLM tables, EP 8) and
Qwen3-235B-A22B-FP8 on GB200 (SGLang tables, EP 4); r = 8 to 32 attention ranks, B 32 to
256, m = 1 to 3, FFN micro-batches of 88 to 8,192 tokens; balanced routing and
AIConfigurator's default power-law routing (α 1.01 for DeepSeek, 1.2 for Qwen3); one
decode step at 1,025 KV tokens per sequence. Per point:

* **MoE read** — afdplan's routed-expert time per layer (the table at num_tokens = the
  micro-batch T, the same routing rows) over AIConfigurator's own ``generation_moe`` op at
  the same point, timed alone (its per-layer reading of the same table): the token axis,
  checked against the estimator's code path;
* **attention read** — afdplan's attention side per layer over AIConfigurator's (without
  its A-side combine);

and three step times, all under AIConfigurator's optimistic cycle model
(``--pipeline aic-optimistic``):

* **same terms** — afdplan's reading of the same aiconfigurator-core tables (attention,
  GEMMs, MoE at the group's micro-batch, at the same routing rows), with the terms
  AIConfigurator prices differently taken from AIConfigurator itself (its A-side combine;
  its router GEMM, vLLM MoE dispatch ops and FFN-node all-gather + reduce-scatter instead
  of afdplan's DeepEP dispatch and combine) and no expert-rank spread (its rows are
  perfectly even): this checks the tables and the cycle model;
* **afdplan** — afdplan as it prices the step: DeepEP's measured (or link-roofline)
  dispatch and combine, the busiest expert rank under balanced routing, its own A↔F
  transfers; the gap to AIConfigurator is the modelling difference, itemised;
* **pingpong** — afdplan's exact ping-pong closed form on its own terms (what ``deploy``
  and ``simulate`` run).

Colocated decode (data-parallel attention, the MoE on one node expert parallel or every
expert split over it, no two-batch overlap) is compared with AIConfigurator's
``static_gen`` estimate at three batches, and for DeepSeek-V3 split with MTP (one draft
token, 0.8 accepted a step; TPOT per token of progress in both).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "data" / "aiconfigurator_reference.json"
MODELS = {  # afdplan's model id, hardware preset and AIConfigurator's power-law α
    "deepseek-v3": ("deepseek-v3", "h200", 1.01),
    "qwen3-235b-a22b-fp8": ("Qwen/Qwen3-235B-A22B-FP8", "gb200", 1.2),
}
TOLERANCE = 0.10


@dataclass(frozen=True)
class Terms:
    """Per-layer times of one micro-batch (ms) and the step (ms)."""

    a: float
    x: float
    f: float
    y: float
    step: float


@lru_cache(maxsize=16)
def _tables(
    model_id: str,
    system: str,
    framework: str,
    hardware: str,
    g_f: int,
    routing: str,
    expert_tp: int = 1,
):
    """(linear coefficients, measured curves, the exchange-only curve) on a group of g_f,
    each expert split over ``expert_tp`` of them (1: EP g_f)."""
    from afdplan.calibrate.pipeline import Sources, calibrate
    from afdplan.timing import tables_from_frame
    from afdplan.timing.tables import Curve

    result, rows = calibrate(
        Sources(
            model=model_id,
            hardware=hardware,
            system=system,
            framework=framework,
            gpus_ffn=g_f,
            routing=routing,
            expert_tp=expert_tp,
        )
    )
    curves = tables_from_frame(rows[rows["op"] != "comm"], result.times, "crosscheck")
    ex = rows[rows["op"] == "exchange"]
    exchange = Curve.from_points(ex["tokens"], ex["seconds"]) if len(ex) > 1 else None
    return result.times, curves, exchange


def ours(point: dict) -> dict:
    """afdplan's readings of one AFD point (module doc)."""
    from afdplan.bundle import Pipeline
    from afdplan.calibrate.aiconfig import routed_experts_curve
    from afdplan.calibrate.roofline import link_comm, network_link
    from afdplan.calibrate.specs import load_hardware, load_model
    from afdplan.timing import Routing, transfer_each_way

    model_id, hardware, alpha = MODELS[point["model"]]
    routing = "balanced" if point["distribution"] == "balanced" else f"power-law:{alpha:g}"
    model, hw = load_model(model_id), load_hardware(hardware)
    r, B, m, g_f = point["r"], point["batch"], point["microbatches"], point["gpus_ffn"]
    linear, curves, exchange = _tables(
        model_id, point["system"], point["framework"], hardware, g_f, routing
    )
    L, b = model.layers, math.ceil(B / m)
    T = r * b
    ref = point["aiconfigurator"]
    ctx = point["isl"] + 1
    moe = routed_experts_curve(
        model, point["system"], point["framework"], g_f, Routing.parse(routing)
    )
    a = 1e3 * float(curves.attention_time(b, b * ctx)) / L
    ffn_even = 1e3 * float(curves.ffn(T)) / L
    own_exchange = 0.0 if exchange is None else 1e3 * float(exchange(T)) / L
    kernels = ffn_even - own_exchange
    f_full = 1e3 * float(curves.ffn_time(T)) / L  # the busiest expert rank, own exchange
    # A↔F transfers: over NVLink while the bundle fits one scale-up domain, else the
    # network port (the roofline's rule), fanned in at the FFN end.
    link = network_link(hw) if r + g_f > hw.scaleup_gpus else _nvlink()
    c_alpha, c_beta = link_comm(model, hw, link)
    x = 1e3 * transfer_each_way(c_alpha * b * max(1.0, r / g_f) + c_beta) / L
    aic_a_extra = ref["a_per_op_ms"].get("afd_a_side_combine", 0.0) / L
    aic_f_extra = _aic_exchange(ref) / L
    cycle, pingpong = Pipeline("aic-optimistic", m, L), Pipeline("pingpong", m, L)

    def step(p, a_, x_, f_, y_):
        return float(p.step_time(a_, a_, x_, f_, y_))

    same = (a + aic_a_extra, x, kernels + aic_f_extra, x)
    full = (a, x, f_full, x)
    # the routed experts alone: inside DeepSeek's overlap block, or a plain op (Qwen3)
    aic_moe = ref.get("f_inner_ms", {}).get("generation_moe") or ref["f_per_op_ms"].get(
        "generation_moe"
    )
    return {
        "same": Terms(*same, step(cycle, *same)),
        "afdplan": Terms(*full, step(cycle, *full)),
        "pingpong": Terms(*full, step(pingpong, *full)),
        "moe_read": None if aic_moe is None else float(moe(T)) / (aic_moe / L),
        "attention_read": a / (theirs(point).a - aic_a_extra),
        "phi": float(linear.experts.imbalance(T, g_f)) if linear.experts else 1.0,
        "exchange": own_exchange,
        "aic_exchange": aic_f_extra,
        "kernels": kernels,
        "tokens": T,
    }


def _aic_exchange(ref: dict) -> float:
    """ms per step of what AIConfigurator's FFN worker runs besides the routed and shared
    experts: its router GEMM, vLLM's MoE dispatch ops around the experts, and its AFD
    all-gather and reduce-scatter across the FFN node (afdplan: DeepEP's dispatch and
    combine)."""
    experts = ("generation_moe_overlap", "generation_moe")
    outer = sum(v for k, v in ref["f_per_op_ms"].items() if k not in experts)
    inner = sum(
        v
        for k, v in ref.get("f_inner_ms", {}).items()
        if k != "generation_moe" and not k.startswith("generation_shared")
    )
    return outer + inner


def _nvlink():
    from afdplan.calibrate.roofline import LINKS

    return LINKS["nvlink"]


def theirs(point: dict) -> Terms:
    ref = point["aiconfigurator"]
    L = _layers(point)
    a = sum(ref["a_per_op_ms"].values()) / L
    f = sum(ref["f_per_op_ms"].values()) / L
    comm = ref.get("comm_ms", {})
    x = comm.get("decode_afd_transfer_a2f", ref["t_a2f_layer"])
    y = comm.get("decode_afd_transfer_f2a", ref["t_f2a_layer"])
    return Terms(a, x, f, y, ref["t_step"])


def _layers(point: dict) -> int:
    from afdplan.calibrate.specs import load_model

    return load_model(MODELS[point["model"]][0]).layers


def colocated(point: dict) -> dict:
    """afdplan's colocated step (m = 1: no two-batch overlap) against static_gen's TPOT; a
    point with MTP is read on the linear fit (``Mtp`` scales linear step times), per token
    of progress as AIConfigurator's TPOT is."""
    if point.get("mtp"):
        return _colocated_mtp(point)
    from afdplan.bundle import Pipeline
    from afdplan.calibrate.specs import load_model
    from afdplan.deploy.slo_search import colocated_times

    model_id, hardware, alpha = MODELS[point["model"]]
    routing = "balanced" if point["distribution"] == "balanced" else f"power-law:{alpha:g}"
    g, B, split = point["group"], point["batch"], point.get("expert_tp", 1)
    linear, curves, exchange = _tables(
        model_id, point["system"], point["framework"], hardware, g, routing, split
    )
    model = load_model(model_id)
    L, ctx = model.layers, point["isl"] + 1
    col = colocated_times(linear, 10**9, "colocated")
    a = float(curves.attention_time(B, B * ctx)) / L
    f_even = float(curves.ffn(g * B)) - (0.0 if exchange is None else float(exchange(g * B)))
    phi = float(linear.experts.imbalance(g * B, g)) if linear.experts else 1.0
    f_kernels = f_even / L
    xy = float(col.comm_time(B, g)) / L
    p = Pipeline("pingpong", 1, L)
    even = 1e3 * float(p.colocated_step_time(a, a, 0.0, f_kernels, 0.0))
    full = 1e3 * float(p.colocated_step_time(a, a, xy / 2, f_kernels * phi, xy / 2))
    return {"kernels_only": even, "afdplan": full, "phi": phi}


def _colocated_mtp(point: dict) -> dict:
    from afdplan.bundle import Pipeline
    from afdplan.calibrate.specs import load_model
    from afdplan.deploy.slo_search import colocated_times
    from afdplan.timing import Mtp

    model_id, hardware, alpha = MODELS[point["model"]]
    routing = "balanced" if point["distribution"] == "balanced" else f"power-law:{alpha:g}"
    g, B, split = point["group"], point["batch"], point["expert_tp"]
    linear, _, _ = _tables(
        model_id, point["system"], point["framework"], hardware, g, routing, split
    )
    L, ctx = load_model(model_id).layers, point["isl"] + 1
    p = Pipeline("pingpong", 1, L)

    def step(times) -> float:
        col = colocated_times(times, 10**9, "colocated")
        a = float(col.attention_time(B, B * ctx)) / L
        xy = float(col.comm_time(B, g)) / L
        return 1e3 * float(p.colocated_step_time(a, a, xy / 2, float(col.ffn_time(g * B)) / L,
                                                 xy / 2))  # fmt: skip

    with_mtp = step(Mtp(*point["mtp"]).apply(linear))
    return {"kernels_only": math.nan, "afdplan": with_mtp, "phi": 1.0,
            "mtp_gain": with_mtp / step(linear)}  # fmt: skip


def refresh(python: str) -> None:
    """Rerun AIConfigurator (with its own interpreter) into the reference file."""
    exe = shutil.which(python)
    if exe is None:
        print(f"error: --aiconfigurator-python {python}: not found", file=sys.stderr)
        raise SystemExit(2)
    cmd = [exe, str(HERE / "aic_reference.py"), "-o", str(REFERENCE)]
    if subprocess.run(cmd).returncode != 0:
        print(f"error: {exe} could not run AIConfigurator (installed there?)", file=sys.stderr)
        raise SystemExit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refresh", action="store_true", help="rerun AIConfigurator first")
    parser.add_argument("--aiconfigurator-python", default="python", help="its interpreter")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    args = parser.parse_args()
    if args.refresh:
        refresh(args.aiconfigurator_python)
    from rich.console import Console
    from rich.table import Table

    data = json.loads(REFERENCE.read_text())
    console = Console()
    table = Table(title=f"afdplan against {data['meta']['tool']} (per layer ms; step ms)")
    for col in ("model", "routing", "r", "B", "m", "T", "MoE read", "attn read", "φ",
                "AIC step ms", "same terms", "afdplan", "pingpong"):  # fmt: skip
        table.add_column(col, justify="right")
    rows, worst = [], 0.0
    for point in data["points"]:
        if point["kind"] != "afd":
            continue
        if "aiconfigurator" not in point:
            table.add_row(point["model"], point["distribution"], str(point["r"]),
                          str(point["batch"]), str(point["microbatches"]), "",
                          f"AIC failed: {point['error'][:40]}")  # fmt: skip
            continue
        mine, ref = ours(point), theirs(point)
        same = mine["same"].step / ref.step
        worst = max(worst, abs(same - 1))
        rows.append({**{k: point[k] for k in ("model", "distribution", "r", "batch",
                                              "microbatches")},
                     "tokens": mine["tokens"], "aic_step_ms": ref.step,
                     "moe_read": mine["moe_read"], "attention_read": mine["attention_read"],
                     "same_terms_ratio": same, "afdplan_ratio": mine["afdplan"].step / ref.step,
                     "pingpong_ratio": mine["pingpong"].step / ref.step,
                     "f_ratio": mine["same"].f / ref.f, "phi": mine["phi"],
                     "exchange_ms": mine["exchange"],
                     "aic_exchange_ms": mine["aic_exchange"]})  # fmt: skip
        moe_read = "n/a" if mine["moe_read"] is None else f"{mine['moe_read']:.3f}"
        table.add_row(
            point["model"][:8], point["distribution"][:8], str(point["r"]), str(point["batch"]),
            str(point["microbatches"]), str(mine["tokens"]), moe_read,
            f"{mine['attention_read']:.3f}", f"{mine['phi']:.2f}", f"{ref.step:.1f}",
            f"{same:.3f}", f"{mine['afdplan'].step / ref.step:.3f}",
            f"{mine['pingpong'].step / ref.step:.3f}",
        )  # fmt: skip
    col_rows = []
    for point in data["points"]:
        if point["kind"] != "colocated" or "aiconfigurator" not in point:
            continue
        mine = colocated(point)
        tpot = point["aiconfigurator"]["tpot"]
        col_rows.append({**{k: point[k] for k in ("model", "distribution", "batch", "group")},
                         "expert_tp": point.get("expert_tp", 1), "mtp": point.get("mtp"),
                         "mtp_gain": mine.get("mtp_gain"),
                         "aic_tpot_ms": tpot, "kernels_only_ratio": mine["kernels_only"] / tpot,
                         "afdplan_ratio": mine["afdplan"] / tpot, "phi": mine["phi"]})  # fmt: skip
    if args.json:
        print(json.dumps({"afd": rows, "colocated": col_rows, "worst_same_terms": worst}))
        return
    console.print(table)
    ct = Table(title="Colocated decode against AIConfigurator static_gen (TPOT ms)")
    for col in ("model", "routing", "B/GPU", "group", "AIC", "kernels only", "afdplan", "φ"):
        ct.add_column(col, justify="right")
    for c in col_rows:
        group = f"{c['group']}" + (" TP" if c["expert_tp"] > 1 else " EP")
        group += "" if not c["mtp"] else f" MTP {c['mtp'][0]}:{c['mtp'][1]:g}"
        ct.add_row(c["model"][:11], c["distribution"][:8], str(c["batch"]), group,
                   f"{c['aic_tpot_ms']:.1f}", f"{c['kernels_only_ratio']:.3f}",
                   f"{c['afdplan_ratio']:.3f}", f"{c['phi']:.2f}")  # fmt: skip
    console.print(ct)
    ratios = np.array([r["same_terms_ratio"] for r in rows])
    console.print(
        f"same terms: {len(ratios)} points, ratio {ratios.min():.3f}-{ratios.max():.3f}, "
        f"{(np.abs(ratios - 1) <= TOLERANCE).sum()} within {TOLERANCE:.0%}"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent / "src"))
    main()
