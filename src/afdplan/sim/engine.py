"""The rA–1F bundle simulator (DESIGN.md §5): occupancy → stage times → metrics.

Per step t the simulator takes every Attention worker's exact KV load T_i(t) (from
``afdplan.sim.schedule``), its attention time t_A(n_i, T_i), the barrier max_i t_A, the
communication time and the FFN time on the Σ n_i tokens, and combines them as

    overlap:  τ_t = max{ max_i t_A,i , t_C , t_F }
    serial:   τ_t = max_i t_A,i + t_C + t_F        (t_C: the round trip)

(DESIGN.md §1). Optional multiplicative noise multiplies every stage time by an
independent mean-one log-normal factor exp(σZ − σ²/2).

Warm-up: with i.i.d. requests and no KV cap the run starts in the renewal equilibrium,
so nothing is discarded. Trace replay and KV-capped runs start cold (every slot fresh or
empty) and discard ``warmup_steps``, by default ⌈4·E[D²]/E[D]⌉ — four mean lifetimes of
the request a slot serves at a random step.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from afdplan.bundle import weighted_rate
from afdplan.errors import require
from afdplan.sim.config import SimConfig
from afdplan.sim.results import SimResult, SimSummary
from afdplan.sim.schedule import Occupancy, iid_plan, kv_limited_occupancy, replay_plan
from afdplan.timing import (
    StepTimes,
    gpus_per_instance,
    routed_experts,
    state_tokens,
    transfer_each_way,
)
from afdplan.workload import Workload
from afdplan.workload.sources import as_empirical

WARMUP_LIFETIMES = 4.0


def measured_steps(workload: Workload, config: SimConfig) -> int:
    """Steps in the measured window: ``steps``, or enough to serve ~``requests`` requests."""
    if config.steps is not None:
        return int(config.steps)
    mean_decode = workload.moments().decode
    return max(1, math.ceil(config.requests * mean_decode / config.slots))


def resolve_warmup(workload: Workload, config: SimConfig) -> tuple[str, int]:
    """(warm-up kind actually used, steps discarded before the window)."""
    cold_only = config.order == "replay" or config.kv_capacity_tokens is not None
    require(
        not (cold_only and config.warmup == "stationary"),
        "a stationary start needs i.i.d. requests and no KV cap; use the cold warm-up",
    )
    kind = config.warmup or ("cold" if cold_only else "stationary")
    if kind == "stationary":
        return "stationary", int(config.warmup_steps or 0)
    if config.warmup_steps is not None:
        return "cold", int(config.warmup_steps)
    return "cold", math.ceil(WARMUP_LIFETIMES * workload.moments().residual_decode)


def build_occupancy(
    workload: Workload, config: SimConfig, total_steps: int, stationary: bool, state: int = 0
) -> Occupancy:
    """Lay out requests over ``total_steps`` steps as the config asks (``state``: tokens a
    hybrid model's recurrent state reserves per request under a KV cap)."""
    rng = np.random.default_rng(config.seed)
    r, b = config.ratio, config.batch
    replay = config.order == "replay"
    first = 0
    if replay:
        trace = as_empirical(workload)
        first = int(rng.integers(trace.size))
    m = config.microbatches if config.pipeline.layered else 1
    if config.kv_capacity_tokens is not None:
        cap = int(config.kv_capacity_tokens)
        return kv_limited_occupancy(
            workload, r, b, total_steps, cap, rng, replay, first, microbatches=m, state=state
        )
    if replay:
        plan = replay_plan(as_empirical(workload), r * b, total_steps, first)
    else:
        plan = iid_plan(workload, r * b, total_steps, rng, stationary=stationary)
    return plan.occupancy(r, b, total_steps, m)


def _imbalance(rng: np.random.Generator, times: StepTimes, tokens: np.ndarray):
    """φ of every micro-batch in ``tokens``: the busiest expert rank's load drawn afresh
    each step (None for a dense FFN: no expert barrier)."""
    experts, g_f = routed_experts(times)
    return None if experts is None else experts.draw_imbalance(rng, tokens, g_f)


def _noise(rng: np.random.Generator, sigma: float, shape: tuple[int, ...]) -> np.ndarray | float:
    if sigma <= 0:
        return 1.0
    return np.exp(sigma * rng.standard_normal(shape) - 0.5 * sigma * sigma)


def simulate(workload: Workload, times: StepTimes, config: SimConfig) -> SimResult:
    """Run one configuration and measure it over its window."""
    return simulate_with_cycles(workload, times, config)[0]


def simulate_with_cycles(
    workload: Workload, times: StepTimes, config: SimConfig
) -> tuple[SimResult, np.ndarray]:
    """``simulate``, also returning the cycle time of every measured step (time units)."""
    steps = measured_steps(workload, config)
    warmup, discard = resolve_warmup(workload, config)
    total = discard + steps
    occ = build_occupancy(
        workload, config, total, warmup == "stationary", state_tokens(times)
    )
    return _measure(occ, times, config, warmup, discard)


def measure(
    occ: Occupancy, times: StepTimes, config: SimConfig, warmup: str, discard: int
) -> SimResult:
    """Stage times, cycle times and every reported metric from an occupancy."""
    return _measure(occ, times, config, warmup, discard)[0]


def _layered_stages(occ: Occupancy, times: StepTimes, config: SimConfig, noise_rng, route_rng):
    """Per-layer micro-batch service times for a layered pipeline (DESIGN.md §8):
    a (S, r, m), x (S, r, m) per-worker links or (S, m) one aggregate link, f and y (S, m),
    plus the FFN tokens per step.

    Each micro-batch's own sequences and KV tokens: full slots split in order (i.i.d. and
    replay), or the requests that joined each micro-batch under a KV cap.
    """
    pipe = config.pipeline
    L = pipe.layers
    r, total = occ.ratio, occ.steps
    if occ.microbatch_loads is None:  # one micro-batch: the worker's own load
        require(pipe.microbatches == 1, "the occupancy has no micro-batch loads")
        loads = occ.loads.T[:, :, None]
        seqs = occ.active_counts().T[:, :, None].astype(np.float64)
    else:
        loads = np.moveaxis(occ.microbatch_loads, 2, 0)  # (S, r, m)
        if occ.microbatch_active is not None:  # partly empty batches (KV cap)
            seqs = np.moveaxis(occ.microbatch_active, 2, 0).astype(np.float64)
        else:  # full slots, split in order
            seqs = np.broadcast_to(pipe.split(occ.batch).astype(np.float64), loads.shape)
    noise_a = _noise(noise_rng, config.noise, (r, total))
    a = np.asarray(times.attention_time(seqs, loads), dtype=np.float64) / L
    a = a * (noise_a.T[:, :, None] if np.ndim(noise_a) else noise_a)
    per_group = seqs.sum(axis=1)  # (S, m) tokens of micro-batch j over all workers
    f = times.ffn_time(per_group, _imbalance(route_rng, times, per_group))
    f = np.asarray(f, dtype=np.float64) / L
    f = f * np.reshape(_noise(noise_rng, config.noise, (total,)), (-1, 1))
    comm_noise = np.reshape(_noise(noise_rng, config.noise, (total,)), (-1, 1))
    if times.comm_scope == "aggregate":
        x = transfer_each_way(np.asarray(times.comm_time(per_group, 1), dtype=np.float64))
        x = x / L * comm_noise
        y = x
    else:
        x = transfer_each_way(np.asarray(times.comm_time(seqs, r), dtype=np.float64)) / L
        x = x * comm_noise[:, :, None]
        y = x.max(axis=1)  # every worker's return transfer starts when the FFN is done
    if occ.active is not None:
        # Partly empty batches (KV cap): work that is not there costs nothing, so a worker
        # spends no attention on a micro-batch it has no sequences in, and a micro-batch
        # empty on every worker has no FFN call or transfers (zero-time tasks in the
        # recurrence).
        a = np.where(seqs > 0, a, 0.0)
        f = np.where(per_group > 0, f, 0.0)
        x = np.where(per_group > 0, x, 0.0) if x.ndim == 2 else np.where(seqs > 0, x, 0.0)
        y = np.where(per_group > 0, y, 0.0)
    return a, x, f, y, seqs.sum(axis=(1, 2))


def _measure(
    occ: Occupancy, times: StepTimes, config: SimConfig, warmup: str, discard: int
) -> tuple[SimResult, np.ndarray]:
    r, b = occ.ratio, occ.batch
    total = occ.steps
    # A separate stream for noise keeps the request draws identical with and without it.
    noise_rng = np.random.default_rng([config.seed, 1])
    route_rng = np.random.default_rng([config.seed, 2])  # expert-rank loads, likewise apart
    pipe = config.pipeline
    closed_gap = None
    if pipe.layered:
        a, x, f, y, tokens = _layered_stages(occ, times, config, noise_rng, route_rng)
        L = pipe.layers
        cycle = closed = pipe.closed_step_times(a, x, f, y)
        exact = pipe.exact_step_times(a, x, f, y) if config.exact else None
        if exact is not None:
            cycle = exact
            closed_gap = float(closed[discard:].mean() / cycle[discard:].mean() - 1)
        t_att = (a.sum(axis=2) * L).T  # (r, S) busy attention per worker per step
        t_ffn = f.sum(axis=1) * L
        t_link = (x.sum(axis=2).max(axis=1) if x.ndim == 3 else x.sum(axis=1)) * L
        stage_share = np.vstack([t_att.max(axis=0), t_link, t_ffn])
        return _results(
            occ,
            config,
            warmup,
            discard,
            times,
            cycle,
            t_att,
            t_ffn,
            stage_share,
            tokens,
            closed_gap,
        )
    if occ.active is None:
        t_att = times.attention_time(b, occ.loads)
        tokens = np.full(total, r * b, dtype=np.int64)
        t_comm = np.broadcast_to(np.asarray(times.comm_time(b, r), dtype=np.float64), (total,))
    else:
        t_att = times.attention_time(occ.active, occ.loads)
        tokens = occ.active.sum(axis=0)
        widest = occ.active.max(axis=0)
        t_comm = (
            times.comm_time(tokens, 1)
            if times.comm_scope == "aggregate"
            else times.comm_time(widest, r)
        )
    t_ffn = np.asarray(times.ffn_time(tokens, _imbalance(route_rng, times, tokens)), np.float64)
    t_att = np.asarray(t_att, dtype=np.float64) * _noise(noise_rng, config.noise, (r, total))
    t_ffn = t_ffn * _noise(noise_rng, config.noise, (total,))
    t_comm = np.asarray(t_comm, dtype=np.float64) * _noise(noise_rng, config.noise, (total,))
    t_att_max = t_att.max(axis=0)
    stage_share = np.vstack([t_att_max, t_comm, t_ffn])
    cycle = pipe.whole_step(t_att_max, t_comm, t_ffn)
    return _results(
        occ, config, warmup, discard, times, cycle, t_att, t_ffn, stage_share, tokens, None
    )


def _results(
    occ: Occupancy,
    config: SimConfig,
    warmup: str,
    discard: int,
    times: StepTimes,
    cycle: np.ndarray,
    t_att: np.ndarray,
    t_ffn: np.ndarray,
    stage_share: np.ndarray,
    tokens: np.ndarray,
    closed_gap: float | None,
) -> tuple[SimResult, np.ndarray]:
    """Every reported metric from the per-step times: cycle (S,), busy attention per
    worker (r, S), busy FFN (S,), the (3, S) stage loads that name the binding stage.
    (Long because it is one call that fills SimResult's 30 fields; split, they would
    only scatter.)"""
    r, total = occ.ratio, occ.steps
    window = slice(discard, total)
    cyc = cycle[window]
    busy_time = float(cyc.sum())
    produced = int(tokens[window].sum())
    g_a, g_f = gpus_per_instance(times)
    bound = np.bincount(stage_share[:, window].argmax(axis=0), minlength=3) / cyc.size

    clock = np.concatenate([[0.0], np.cumsum(cycle)])
    inside = (occ.start >= discard) & (occ.end <= total)
    tpot = (clock[occ.end[inside]] - clock[occ.start[inside]]) / occ.decode[inside]
    completed = int(((occ.end > discard) & (occ.end <= total)).sum())
    tpot_q = np.percentile(tpot, [50, 90, 99]) if tpot.size else np.full(3, math.nan)
    step_q = np.percentile(cyc, [50, 90, 99])
    loads = occ.loads[:, window]
    result = SimResult(
        ratio=r,
        batch=occ.batch,
        mode=config.mode,
        order=config.order,
        warmup=warmup,
        warmup_steps=discard,
        steps=total - discard,
        seed=config.seed,
        throughput_per_instance=weighted_rate(produced, busy_time, r, 1.0, 1.0),
        throughput_per_gpu=weighted_rate(produced, busy_time, r, g_a, g_f),
        mean_step_time_s=float(cyc.mean()),
        step_time_p50_s=float(step_q[0]),
        step_time_p90_s=float(step_q[1]),
        step_time_p99_s=float(step_q[2]),
        idle_attention=1.0 - float(t_att[:, window].mean(axis=0).sum()) / busy_time,
        idle_ffn=1.0 - float(t_ffn[window].sum()) / busy_time,
        tpot_mean_s=float(tpot.mean()) if tpot.size else math.nan,
        tpot_p50_s=float(tpot_q[0]),
        tpot_p90_s=float(tpot_q[1]),
        tpot_p99_s=float(tpot_q[2]),
        share_attention_bound=float(bound[0]),
        share_comm_bound=float(bound[1]),
        share_ffn_bound=float(bound[2]),
        requests_completed=completed,
        tokens_generated=produced,
        mean_load_per_worker=float(loads.mean()),
        std_load_per_worker=float(loads.std()),
        kv=occ.kv,
        microbatches=config.microbatches,
        closed_form_gap=closed_gap,
    )
    return result, cyc


def simulate_seeds(
    workload: Workload, times: StepTimes, config: SimConfig, seeds: list[int]
) -> SimSummary:
    """The same configuration under several seeds."""
    require(len(seeds) >= 1, "need at least one seed")
    return SimSummary(tuple(simulate(workload, times, replace(config, seed=s)) for s in seeds))
