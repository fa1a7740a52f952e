"""Record NVIDIA AIConfigurator's own step estimates for the cross-check grid.

Run with AIConfigurator's Python (it is not an afdplan dependency; install it in its own
environment: ``python -m venv aic && aic/bin/pip install aiconfigurator==0.12.0``):

    aic/bin/python benchmarks/aic_reference.py -o benchmarks/data/aiconfigurator_reference.json

It imports nothing from afdplan (the grid is data in this file), calls
``aiconfigurator.cli.api.cli_estimate`` — ``mode="afd"`` for AFD bundles and
``mode="static_gen"`` for colocated decode steps, the MoE expert parallel or every expert
split over the group, and split with MTP (``nextn``) — and writes, per point, the
per-layer times AIConfigurator reports (attention, FFN, each transfer direction), its step
time, and the per-operation breakdown of the FFN and attention workers (per step, ms).
Each point is
taken at one context length (``osl = 2``: one decode step at ``isl + 1`` KV tokens) so a
comparison needs no averaging over the decode trace. Routing: AIConfigurator's models pick
``power_law`` (α 1.01 for DeepSeek, 1.2 for other MoE models) unless told otherwise; the
grid asks for ``balanced`` and for that default explicitly.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings

# (name, HF id, system, framework, GPUs per node, FFN groups of whole nodes)
MODELS = (
    ("deepseek-v3", "deepseek-ai/DeepSeek-V3", "h200_sxm", "vllm", 8),
    ("qwen3-235b-a22b-fp8", "Qwen/Qwen3-235B-A22B-FP8", "gb200", "sglang", 4),
)
# (attention nodes, sequences per attention rank B, micro-batches m): r = nodes × GPUs per
# node attention ranks (TP 1); the FFN batch per micro-batch is r·⌈B/m⌉, 64 to 8,192 tokens.
AFD_GRID = (
    (1, 32, 1),
    (1, 32, 3),
    (1, 64, 2),
    (1, 128, 1),
    (1, 128, 3),
    (1, 256, 2),
    (2, 64, 1),
    (2, 128, 2),
    (2, 256, 3),
    (4, 64, 3),
    (4, 128, 1),
    (4, 256, 1),
)
ISL = 1024
# colocated decode (attention data-parallel over the group): B, and the MoE expert
# parallel (moe_ep = group) or every expert split over the group (moe_tp = group)
COLOCATED_GRID = (16, 64, 128)
COLOCATED_LAYOUTS = ("ep", "tp")
# MTP (draft depth, mean accepted drafts a step) on the split-experts colocated points of
# the models that carry MTP layers (DeepSeek-V3: num_nextn_predict_layers = 1)
COLOCATED_MTP = {"deepseek-v3": (1, 0.8)}


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)


def _with_routing(distribution: str):
    """Make AIConfigurator build its model configs with ``distribution`` routing."""
    import aiconfigurator.cli.api as api

    build = api._build_model_config

    def patched(*args, **kwargs):
        config = build(*args, **kwargs)
        config.workload_distribution = distribution
        return config

    api._build_model_config = patched
    return lambda: setattr(api, "_build_model_config", build)


_INNER: dict[str, float] = {}


def _record_inner_ops() -> None:
    """Also time, one by one, the operations AIConfigurator runs inside an overlap block
    (the routed experts beside the shared ones): the per-op report gives only their max."""
    from aiconfigurator.sdk import operations
    from aiconfigurator.sdk.inference_session import AFDInferenceSession
    from aiconfigurator_core.sdk.engine import _evaluate_single_op

    total = AFDInferenceSession._sum_latency

    def patched(self, ops_iter, **kwargs):
        ops = list(ops_iter)
        out = total(self, ops, **kwargs)
        if not kwargs.get("is_context"):
            for op in ops:
                if isinstance(op, operations.OverlapOp):
                    for inner in [*op._group_a, *op._group_b]:
                        value = _evaluate_single_op(
                            self._database, inner, is_context=False,
                            batch_size=kwargs["batch_size"], s=kwargs["seq_len"],
                            x=kwargs["batch_size"],
                        )  # fmt: skip
                        _INNER[inner._name] = float(value)
        return out

    AFDInferenceSession._sum_latency = patched


def afd_point(hf: str, system: str, framework: str, per_node: int, nodes: int, b: int, m: int):
    from aiconfigurator.cli.api import cli_estimate

    _INNER.clear()
    result = cli_estimate(
        hf, system, mode="afd", backend_name=framework, isl=ISL, osl=2,
        n_a_nodes=nodes, n_f_nodes=1, a_tp_size=1, a_batch_size=b, f_moe_ep_size=per_node,
        num_microbatches=m, pipeline_model="optimistic", afd_combined_with_pd=False,
    )  # fmt: skip
    raw = result.raw
    keys = ("t_a_layer", "t_f_layer", "t_a2f_layer", "t_f2a_layer", "t_step")
    ops = result.per_ops_data
    return {
        **{k: float(raw[k]) for k in keys},
        "b_micro_total": int(raw["b_micro_total"]),
        # the per-layer fields above are rounded to 1 µs; these are not
        "a_per_op_ms": {k: float(v) for k, v in ops["decode_a_worker"].items()},
        "f_per_op_ms": {k: float(v) for k, v in ops["decode_f_worker"].items()},
        "comm_ms": {k: float(v) for k, v in ops["comm"].items()},
        # per step, ms: the operations inside the FFN worker's overlap block, one by one
        "f_inner_ms": dict(_INNER),
        "layers": int(raw.get("num_layers") or 0),
    }


def colocated_point(
    hf: str, system: str, framework: str, per_node: int, b: int, split: int, mtp=None
):
    from aiconfigurator.cli.api import cli_estimate

    extra = {} if mtp is None else {"nextn": mtp[0], "nextn_accepted": mtp[1]}
    result = cli_estimate(
        hf, system, mode="static_gen", backend_name=framework, isl=ISL, osl=2,
        batch_size=b, tp_size=1, attention_dp_size=per_node, moe_tp_size=split,
        moe_ep_size=per_node // split, **extra,
    )  # fmt: skip
    ops = result.per_ops_data or {"generation": result.summary.get_generation_latency_dict()}
    return {"tpot": float(result.tpot), "per_op_ms": _flat(ops)}


def _flat(ops) -> dict:
    if not isinstance(ops, dict):
        return {}
    out = {}
    for k, v in ops.items():
        if isinstance(v, dict):
            out.update({f"{k}/{kk}": vv for kk, vv in _flat(v).items()})
        elif isinstance(v, int | float):
            out[k] = float(v)
    return out


def _attempt(point: dict, estimate, *args) -> dict:
    """``point`` with AIConfigurator's estimate, or the error it raised (recorded: the
    comparison then says why the point is absent)."""
    try:
        point["aiconfigurator"] = estimate(*args)
    except Exception as exc:
        point["error"] = f"{type(exc).__name__}: {exc}"[:300]
    return point


def model_points(name, hf, system, framework, per_node, distribution) -> list[dict]:
    """Every AFD and colocated point of one model under one routing."""
    common = {"model": name, "system": system, "framework": framework,
              "distribution": distribution, "isl": ISL}  # fmt: skip
    points = []
    for nodes, b, m in AFD_GRID:
        point = {"kind": "afd", **common, "r": nodes * per_node, "batch": b, "microbatches": m,
                 "gpus_ffn": per_node}  # fmt: skip
        points.append(_attempt(point, afd_point, hf, system, framework, per_node, nodes, b, m))
        print(f"{name} {distribution} r={point['r']} B={b} m={m}", file=sys.stderr)
    for layout in COLOCATED_LAYOUTS:
        split = 1 if layout == "ep" else per_node
        for b in COLOCATED_GRID:
            point = {"kind": "colocated", **common, "batch": b, "group": per_node,
                     "expert_tp": split}  # fmt: skip
            points.append(
                _attempt(point, colocated_point, hf, system, framework, per_node, b, split)
            )
    mtp = COLOCATED_MTP.get(name)
    for b in COLOCATED_GRID if mtp is not None else ():
        point = {"kind": "colocated", **common, "batch": b, "group": per_node,
                 "expert_tp": per_node, "mtp": list(mtp)}  # fmt: skip
        points.append(
            _attempt(point, colocated_point, hf, system, framework, per_node, b, per_node, mtp)
        )
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, help="JSON file to write")
    args = parser.parse_args()
    _quiet()
    _record_inner_ops()
    import aiconfigurator

    points, started = [], time.time()
    for name, hf, system, framework, per_node in MODELS:
        # AIConfigurator's default routing is power_law (α 1.01 DeepSeek, 1.2 others)
        for distribution in ("balanced", "power_law"):
            restore = _with_routing(distribution)
            try:
                points += model_points(name, hf, system, framework, per_node, distribution)
            finally:
                restore()
    meta = {
        "tool": f"aiconfigurator {getattr(aiconfigurator, '__version__', '0.12.0')}",
        "seconds": round(time.time() - started, 1),
        "note": "per-layer times in ms; per-op times per decode step in ms",
    }
    with open(args.output, "w") as handle:
        json.dump({"meta": meta, "points": points}, handle, indent=1)


if __name__ == "__main__":
    main()
