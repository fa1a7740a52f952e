"""Check the chosen bundles by simulation.

Each configuration runs in the trace-driven simulator with the exact per-layer ping-pong
recurrence of DESIGN §8, the same roofline step times the search used, the KV cap of its
attention instances, requests in arrival order (a trace) or drawn i.i.d. (a law), and
several seeds; the predicted throughput and step-time percentile sit beside the simulated
ones with 95% CIs, and so does the per-request TPOT, which the search cannot predict.
"""

from __future__ import annotations

from collections.abc import Callable

from afdplan.deploy.result import DeployResult
from afdplan.deploy.slo_search import bundle_times
from afdplan.sim import SimConfig, simulate_seeds
from afdplan.workload import EmpiricalWorkload, Workload

# Decode steps of the measured window per seed: enough for the step-time p99 to rest on
# thousands of steps, and for many requests to start and finish inside it.
WINDOW_STEPS = 3000
# the configuration's counts each checked row repeats
SHAPE = ("r", "batch", "microbatches", "gpus_attention", "gpus_ffn", "expert_tp")


def _interval(estimate: dict) -> tuple[float, float]:
    """A mean's 95% CI (the mean itself with one seed)."""
    half = estimate["half_width"]
    half = 0.0 if half != half else half
    return estimate["mean"] - half, estimate["mean"] + half


def slo_status(step_q: dict, tpot_q: dict, slo_ms: float) -> str:
    """``ok`` when both simulated quantiles' 95% intervals lie at or below the SLO,
    ``breaks`` when either lies wholly above it, ``at limit`` when one straddles it."""
    bounds = [_interval(q) for q in (step_q, tpot_q)]
    if any(lo > slo_ms for lo, _ in bounds):
        return "breaks"
    if all(hi <= slo_ms for _, hi in bounds):
        return "ok"
    return "at limit"


def verify(
    result: DeployResult,
    workload: Workload,
    top: int = 5,
    seeds: int = 3,
    steps: int = WINDOW_STEPS,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Simulate the ``top`` launchable configurations under seeds ``seed``, ``seed`` + 1, …;
    one dict each (times in ms)."""
    t = result.target
    rows = result.top(top).to_dict(orient="records")
    order = "replay" if isinstance(workload, EmpiricalWorkload) else "iid"
    out = []
    for i, row in enumerate(rows):
        g_a, g_f, r, split = (
            int(row[k]) for k in ("gpus_attention", "gpus_ffn", "r", "expert_tp")
        )
        times, _ = bundle_times(
            t.model, t.attention_hw, t.ffn_hw, g_a, g_f, r, t.anchor, t.moe, split, t.mtp
        )
        config = SimConfig(
            ratio=r,
            batch=int(row["batch"]),
            steps=steps,
            mode="pingpong",
            microbatches=int(row["microbatches"]),
            layers=t.model.layers,
            exact=True,
            order=order,
            kv_capacity_tokens=times.kv_capacity_tokens,
        )
        summary = simulate_seeds(workload, times, config, list(range(seed, seed + seeds)))
        out.append(_checked(row, summary, t.slo, seeds, steps))
        if progress is not None:
            progress(i + 1, len(rows))
    return out


def _checked(row: dict, summary, slo, seeds: int, steps: int) -> dict:
    """One configuration's prediction beside its simulation (95% CIs over the seeds)."""
    pct = slo.percentile

    def ci(metric: str, scale: float = 1.0) -> dict:
        e = summary.estimate(metric)
        return {"mean": e.mean * scale, "half_width": e.half_width * scale, "n": e.n}

    step_q = ci(f"step_time_p{pct}_s", 1e3)
    tpot_q = ci(f"tpot_p{pct}_s", 1e3)
    return {
        **{k: int(row[k]) for k in SHAPE},
        "predicted_throughput_per_gpu": row["throughput_per_gpu"],
        "simulated_throughput_per_gpu": ci("throughput_per_gpu"),
        "predicted_step_time_ms": row["tpot_ms"],
        "simulated_step_time_ms": step_q,
        "simulated_tpot_ms": tpot_q,
        "percentile": pct,
        "closed_form_gap": summary.runs[0].closed_form_gap,
        "slo_status": slo_status(step_q, tpot_q, slo.tpot_ms),
        "seeds": seeds,
        "steps": steps,
    }
