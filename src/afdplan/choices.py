"""Named choices and defaults shared by the library and the CLI.

This module imports nothing heavy: the CLI builds its ``--help`` from it without loading
numpy. The library checks values against the same names, so a choice has one spelling.
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """How the stages of a decode step combine (DESIGN.md §1)."""

    overlap = "overlap"  # τ = max of the stages (the paper's pipelining)
    serial = "serial"  # τ = t_A + t_C + t_F (t_C: the round trip)


class PipelineKind(StrEnum):
    """How stage times combine into a step (DESIGN.md §8; afdplan.bundle.pipeline)."""

    overlap = "overlap"  # the paper's: τ = max of the stages
    serial = "serial"  # τ = t_A + t_C + t_F (t_C: the round trip)
    pingpong = "pingpong"  # m micro-batches through every layer (what AFD runtimes run)
    aic_optimistic = "aic-optimistic"  # AIConfigurator's AFD cycle models
    aic_conservative = "aic-conservative"


class Architecture(StrEnum):
    """Which of a deployment's answers ``capacity --deployment`` sizes."""

    recommended = "recommended"  # what deploy recommends: colocated where AFD loses
    afd = "afd"  # the chosen AFD bundle
    colocated = "colocated"  # the best colocated group deploy compared it with


class PrefillLayout(StrEnum):
    """How a prefill instance splits its work over its GPUs (``calibrate.prefill``)."""

    tp = "tp"  # attention and experts tensor / expert parallel: one batch of prompts
    dp = "dp"  # data-parallel attention ranks, each its own prompts; experts over all


class Objective(StrEnum):
    """What a recommendation maximises: tokens/s per GPU, per dollar, or per instance."""

    gpu = "gpu"
    cost = "cost"
    instance = "instance"  # the paper's r·B / ((r + 1)·τ)


class Framework(StrEnum):
    """Serving frameworks aiconfigurator-core measured its kernel tables under."""

    vllm = "vllm"
    sglang = "sglang"
    trtllm = "trtllm"


class StudyGrid(StrEnum):
    """What ``afdplan validate`` studies."""

    paper = "paper"  # the paper's rule across workloads, B and step-time sources
    deployment = "deployment"  # r* under serial and ping-pong m = 2, 3 and FFN groups


class Runtime(StrEnum):
    """AFD runtimes ``afdplan deploy`` writes launch files for (their topology rules apply)."""

    vllm_afd = "vllm-afd"  # vllm-project/afd-plugin
    sglang = "sglang"  # SGLang with its AFD plugin (sgl-afd-plugin)
    fastafd = "fastafd"  # FastAFD (profile pinned to linsj20/FastAFD)
    none = "none"  # no runtime rules, no launch files


class Router(StrEnum):
    """How an open-system run assigns an arriving request to an attention worker."""

    round_robin = "round-robin"
    least_kv = "least-kv"  # fewest KV tokens reserved and queued
    power_of_two = "power-of-two"  # the less loaded of two random workers


class Dtype(StrEnum):
    """Weight or KV-cache element types (bytes in ``afdplan.calibrate.specs.DTYPE_BYTES``)."""

    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"
    fp8 = "fp8"
    int8 = "int8"
    fp4 = "fp4"


class Percentile(StrEnum):
    """The percentile an SLO names."""

    p50 = "p50"
    p90 = "p90"
    p99 = "p99"


class CommScope(StrEnum):
    """What one A↔F transfer carries (DESIGN.md §3)."""

    per_worker = "per_worker"  # B tokens per Attention worker, its own link (v1)
    aggregate = "aggregate"  # all r·B tokens on one link
    # B tokens per Attention worker, but the g_F FFN ports receive all r·B: a transfer
    # takes as long as the busier end, B·max(1, r/g_F) tokens' worth
    fan_in = "fan_in"


class Order(StrEnum):
    """How the simulator draws requests from a workload."""

    iid = "iid"  # resample
    replay = "replay"  # a trace in arrival order


class Warmup(StrEnum):
    stationary = "stationary"
    cold = "cold"


class Backend(StrEnum):
    """joblib backends for sweeps (dask and ray need their extras)."""

    loky = "loky"
    threading = "threading"
    dask = "dask"
    ray = "ray"


PIPELINES: tuple[str, ...] = tuple(p.value for p in PipelineKind)
COMM_SCOPES: tuple[str, ...] = tuple(c.value for c in CommScope)
ORDERS: tuple[str, ...] = tuple(o.value for o in Order)
WARMUPS: tuple[str, ...] = tuple(w.value for w in Warmup)
ROUTERS: tuple[str, ...] = tuple(r.value for r in Router)

DEFAULT_COEFFS = "deepseek-v3-h200"
DEFAULT_WORKLOAD = (
    "lognormal:prefill_median=1024,prefill_sigma=0.8,prefill_max=16384,"
    "decode_median=128,decode_sigma=0.9,decode_max=2048"
)
