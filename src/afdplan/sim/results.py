"""What a simulation reports, and confidence intervals over seeds."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from afdplan.sim.schedule import KvStats


@dataclass(frozen=True)
class SimResult:
    """One run over its measured window (times in the step-time model's unit)."""

    ratio: int
    batch: int
    mode: str
    order: str
    warmup: str
    warmup_steps: int  # simulated before the window and discarded
    steps: int  # steps in the measured window
    seed: int
    throughput_per_instance: float  # tokens / (instances·time), r Attention + 1 FFN
    throughput_per_gpu: float  # tokens / ((r·g_A + g_F)·time)
    mean_step_time_s: float
    step_time_p50_s: float
    step_time_p90_s: float
    step_time_p99_s: float
    idle_attention: float  # 1 − mean Attention busy time / cycle time
    idle_ffn: float
    tpot_mean_s: float  # over requests that started and finished inside the window
    tpot_p50_s: float
    tpot_p90_s: float
    tpot_p99_s: float
    share_attention_bound: float  # share of steps whose cycle the stage set
    share_comm_bound: float
    share_ffn_bound: float
    requests_completed: int  # finished inside the window
    tokens_generated: int  # inside the window
    mean_load_per_worker: float  # KV tokens
    std_load_per_worker: float
    kv: KvStats | None = None
    microbatches: int = 1
    # ping-pong: mean step time of the closed form over the exact recurrence's, minus one
    closed_form_gap: float | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["kv"] = None if self.kv is None else asdict(self.kv)
        return out


# Scalar metrics that get a confidence interval over seeds.
SUMMARY_METRICS: tuple[str, ...] = tuple(
    f.name
    for f in fields(SimResult)
    if f.name
    not in (
        "ratio",
        "batch",
        "mode",
        "order",
        "warmup",
        "warmup_steps",
        "steps",
        "seed",
        "kv",
        "microbatches",
        "closed_form_gap",
    )
)


@dataclass(frozen=True)
class Estimate:
    """Mean over seeds with a 95% Student-t half-width (NaN for one seed)."""

    mean: float
    half_width: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Estimate:
        arr = np.asarray(values, dtype=np.float64)
        n = int(arr.size)
        if n < 2:
            return cls(float(arr.mean()), math.nan, n)
        sem = float(arr.std(ddof=1) / math.sqrt(n))
        # Student-t quantile from scipy.special: scipy.stats costs seconds to import.
        from scipy.special import stdtrit

        return cls(float(arr.mean()), float(stdtrit(n - 1, 0.975) * sem), n)


def estimate_over(runs: tuple[SimResult, ...], metric: str) -> Estimate:
    """``metric`` of several runs (seeds) as a mean with its 95% CI."""
    return Estimate.of([getattr(run, metric) for run in runs])


@dataclass(frozen=True)
class SimSummary:
    """Several seeds of one configuration."""

    runs: tuple[SimResult, ...]

    def estimate(self, metric: str) -> Estimate:
        return estimate_over(self.runs, metric)

    def to_dict(self) -> dict:
        first = self.runs[0]
        return {
            "ratio": first.ratio,
            "batch": first.batch,
            "pipeline": first.mode,
            "microbatches": first.microbatches,
            "closed_form_gap": first.closed_form_gap,
            "order": first.order,
            "warmup": first.warmup,
            "steps": first.steps,
            "seeds": [run.seed for run in self.runs],
            **{m: asdict(self.estimate(m)) for m in SUMMARY_METRICS},
            "runs": [run.to_dict() for run in self.runs],
        }
