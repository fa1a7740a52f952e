"""From a request rate to a fleet of AFD bundles.

``size_fleet`` finds the smallest number of identical bundles that meets the SLOs (a
percentile of per-request TPOT, and of the wait before the first decode step) at a given
rate, by open-system simulation (``afdplan.sim.open``), starting from the closed-form
saturation bound of ``afdplan.theory.queueing``. ``goodput_curve`` sweeps the rate
offered to one bundle and finds its knee. ``predict`` is the closed form printed beside
every simulated figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np

from afdplan.bundle import Pipeline
from afdplan.choices import Router
from afdplan.errors import InputError, check_positive, require
from afdplan.normal import expected_max_normal
from afdplan.sim.open import (
    WARMUP_SHARE,
    Arrivals,
    Fleet,
    OpenResult,
    PrefillPool,
    serve,
    simulate_open,
)
from afdplan.theory.barrier import layered_times
from afdplan.theory.queueing import allen_cunneen_wait, balanced_queue
from afdplan.timing import PrefillTimes
from afdplan.workload import Workload

DEFAULT_MAX_BUNDLES = 4096
CURVE_RESIDENCES = 25
# A sizing run spans at least this many mean residences (up to MAX_SIZING_REQUESTS), so
# its measured window sees the fleet past filling and a queue that grows shows it.
SIZING_RESIDENCES = 15
MAX_SIZING_REQUESTS = 2_000_000
CURVE_SHARES = (0.1, 0.25, 0.4, 0.55, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25)
# A prefill pool is sized so that its stage (queue, batch, KV transfer) takes at most this
# share of the TTFT SLO at its percentile; the decode fleet's admission wait gets the rest.
PREFILL_TTFT_SHARE = 0.8
# ... and so that it keeps up: the offered rate at most this share of the pool's saturation
# rate (every forward a full batch). Not its busy time: an idle instance takes whatever is
# waiting, so a pool with room to spare still computes nearly all the time, on small
# batches, and a busy-time cap buys instances that only shrink its batches.
PREFILL_MAX_LOAD = 0.95
# A rate this far past what the largest fleet allowed saturates at (closed form) is refused
# without simulating: the closed form lands within 1.3% of the simulated saturation.
SATURATION_MARGIN = 1.05


@dataclass(frozen=True)
class Slos:
    """Per-request TPOT and wait (seconds) at their percentiles; None: not constrained."""

    tpot_s: float | None = None
    tpot_percentile: int = 99
    wait_s: float | None = None
    wait_percentile: int = 99
    ttft_s: float | None = None
    ttft_percentile: int = 99
    prefill: tuple[float, float] | None = None  # α_P seconds per prompt token, β_P seconds
    prefill_pool: bool = False  # a prefill pool is simulated: TTFT comes from the run

    def __post_init__(self) -> None:
        for label, value in (
            ("--tpot-ms", self.tpot_s),
            ("--wait-ms", self.wait_s),
            ("--ttft-ms", self.ttft_s),
        ):
            if value is not None:
                check_positive(label, value)
        require(
            self.tpot_s is not None or self.wait_s is not None or self.ttft_s is not None,
            "give an SLO: --tpot-ms, --wait-ms and/or --ttft-ms",
        )
        require(
            self.ttft_s is None or self.prefill is not None or self.prefill_pool,
            "--ttft-ms needs the prefill: a pool (--prefill-hw) or its time (--prefill-alpha "
            "s/token, --prefill-beta s)",
        )
        require(
            not (self.prefill is not None and self.prefill_pool),
            "--prefill-alpha/--prefill-beta estimate a prefill that --prefill-hw simulates: "
            "give one or the other",
        )
        if self.prefill is not None:
            for label, value in zip(
                ("--prefill-alpha", "--prefill-beta"), self.prefill, strict=True
            ):
                require(math.isfinite(value) and value >= 0, f"{label} must be >= 0, got {value}")

    def met(self, summary: dict) -> bool:
        ok = True
        if self.tpot_s is not None:
            ok &= summary[f"tpot_p{self.tpot_percentile}_s"] <= self.tpot_s
        if self.wait_s is not None:
            ok &= summary[f"wait_p{self.wait_percentile}_s"] <= self.wait_s
        if self.ttft_s is not None:
            ok &= summary[f"ttft_p{self.ttft_percentile}_s"] <= self.ttft_s
        return bool(ok)

    def summary(self, result: OpenResult) -> dict:
        """The run's summary, goodput counted against every per-request limit."""
        return result.summary(self.tpot_s, self.wait_s, self.prefill, self.ttft_s)


@dataclass(frozen=True)
class Prediction:
    """Closed-form figures for a fleet at one rate (seconds, requests/s)."""

    rate: float
    saturation_rate: float  # the whole fleet's
    batch_effective: float  # slots per worker the KV cache allows
    occupancy: float  # ρ, share of busy slots (1 at or above saturation)
    step_time_s: float  # E[τ] at that occupancy: the mean TPOT
    wait_mean_s: float  # half a step + the queue's mean wait; inf at or above saturation
    # the queue behind it (``afdplan.theory.queueing``): "per-worker" (Allen–Cunneen G/G/B
    # fed every W-th arrival: round-robin), "token-balanced" (the renewal count of a
    # least-KV or power-of-two worker) or "pooled" (G/G/(W·B_eff) where the KV cache binds)
    wait_model: str = ""


def _moments(workload: Workload) -> tuple[float, float, float]:
    """(E[D], Var(D), E[P + D]) of the workload's requests."""
    m = workload.moments()
    return m.decode, max(m.decode2 - m.decode**2, 0.0), m.prompt + m.decode


def effective_batch(fleet: Fleet, workload: Workload) -> float:
    """Slots per worker: B, or what the KV cap holds when each request reserves P + D (+ a
    hybrid model's state tokens)."""
    if fleet.kv_capacity_tokens is None:
        return float(fleet.batch)
    footprint = _moments(workload)[2] + fleet.times.state_tokens
    return min(float(fleet.batch), fleet.kv_capacity_tokens / footprint)


def step_time_at(fleet: Fleet, workload: Workload, per_worker: float) -> float:
    """E[τ] with ``per_worker`` sequences on each worker (barrier over its r workers)."""
    s = workload.stats()
    p = running_pipeline(fleet.pipeline, per_worker)
    batch = max(per_worker, float(p.microbatches) * 1e-3)
    spread = expected_max_normal(fleet.ratio) if fleet.ratio > 1 else 0.0
    lt = layered_times(
        p, fleet.times, batch, fleet.ratio, s.theta, s.v, spread, colocated=fleet.colocated
    )
    return float(lt.step_time)


def running_pipeline(pipeline: Pipeline, per_worker: float) -> Pipeline:
    """The pipeline as it runs with ``per_worker`` sequences on each worker: a micro-batch
    without sequences is not run (as in the simulators), so fewer than one sequence per
    micro-batch runs min(m, ⌈per_worker⌉) of them."""
    m = min(pipeline.microbatches, max(1, math.ceil(per_worker - 1e-9)))
    return pipeline if m == pipeline.microbatches else replace(pipeline, microbatches=m)


def saturation_rate(fleet: Fleet, workload: Workload) -> float:
    """λ_max = bundles·r·B_eff / (E[D]·E[τ at full batch]), requests/s."""
    b = effective_batch(fleet, workload)
    mean_d = _moments(workload)[0]
    return fleet.bundles * fleet.ratio * b / (mean_d * step_time_at(fleet, workload, b))


def predict(fleet: Fleet, workload: Workload, rate: float, ca2: float = 1.0) -> Prediction:
    """ρ from the fixed point ρ = λ_w·E[D]·τ(ρ)/B_eff, then the queue the router makes
    (``afdplan.theory.queueing``): per worker for round-robin, token-balanced for the
    pooling routers (pooled where the KV cache binds)."""
    check_positive("rate", rate)
    mean_d, var_d, _ = _moments(workload)
    b = effective_batch(fleet, workload)
    lam_w = rate / fleet.workers
    saturation = saturation_rate(fleet, workload)
    if rate >= saturation:
        tau = step_time_at(fleet, workload, b)
        return Prediction(rate, saturation, b, 1.0, tau, math.inf, _wait_model(fleet, b))
    rho = 0.5
    for _ in range(200):
        new = lam_w * mean_d * step_time_at(fleet, workload, rho * b) / b
        new = min(new, 1.0)
        if abs(new - rho) < 1e-10:
            break
        rho = 0.5 * (rho + new)
    tau = step_time_at(fleet, workload, rho * b)
    servers = max(1, math.floor(b))
    service, cs2 = mean_d * tau, var_d / mean_d**2
    model = _wait_model(fleet, b)
    if model == "per-worker":
        queue = allen_cunneen_wait(servers, lam_w, service, ca2 / fleet.workers, cs2)
    else:
        pooled = allen_cunneen_wait(servers * fleet.workers, rate, service, ca2, cs2)
        queue = pooled
        if model == "token-balanced":
            busy = min(rho * b, servers * (1 - 1e-12))
            cv2 = workload.moments().footprint_cv2
            waiting = balanced_queue(servers, busy, cv2) * fleet.workers
            # with near-equal footprints the count barely spreads: the pooled queue's own
            # fluctuations are then what waits
            queue = max(pooled, waiting / rate)
    # Admission happens at step boundaries: an arrival first waits out the current step.
    return Prediction(rate, saturation, b, rho, tau, queue + tau / 2, model)


def _wait_model(fleet: Fleet, batch_effective: float) -> str:
    if fleet.router == Router.round_robin:
        return "per-worker"
    return "pooled" if batch_effective < fleet.batch else "token-balanced"


@dataclass(frozen=True)
class Probe:
    """One simulated fleet size."""

    bundles: int
    summary: dict
    prediction: Prediction
    meets: bool  # keeps up with the offered rate and meets every SLO

    @property
    def stable(self) -> bool:
        return bool(self.summary["stable"])

    def to_dict(self) -> dict:
        return {
            "bundles": self.bundles,
            "meets_slos": self.meets,
            "stable": self.stable,
            "unstable_because": self.summary["unstable_because"],
            "simulated": self.summary,
            "predicted": asdict(self.prediction),
        }


@dataclass(frozen=True)
class Sizing:
    rate: float
    bundles: int
    gpus: float  # the decode bundles'
    cost_per_hour: float | None  # the decode bundles'
    probes: tuple[Probe, ...]
    chosen: Probe
    result: OpenResult  # the chosen fleet's run (queue over time)
    prefill: PrefillPool | None = None

    @property
    def total_gpus(self) -> float:
        return self.gpus + (0 if self.prefill is None else self.prefill.gpus)

    @property
    def total_cost_per_hour(self) -> float | None:
        if self.prefill is None:
            return self.cost_per_hour
        if self.cost_per_hour is None or self.prefill.cost_per_hour is None:
            return None
        return self.cost_per_hour + self.prefill.cost_per_hour

    def to_dict(self) -> dict:
        pool = self.prefill
        return {
            "rate": self.rate,
            "bundles": self.bundles,
            "gpus": self.gpus,
            "cost_per_hour": self.cost_per_hour,
            "prefill": None
            if pool is None
            else {
                "instances": pool.instances,
                "gpus_per_instance": pool.times.gpus,
                "gpus": pool.gpus,
                "hardware": pool.hardware,
                "max_batch_tokens": pool.times.max_batch_tokens,
                "cost_per_hour": pool.cost_per_hour,
                "step_times": pool.times.name,
            },
            "total_gpus": self.total_gpus,
            "total_cost_per_hour": self.total_cost_per_hour,
            "goodput": self.chosen.summary["goodput"],
            "chosen": self.chosen.to_dict(),
            "rows": [p.to_dict() for p in self.probes],
        }


def prefill_saturation(times: PrefillTimes, prompt: np.ndarray) -> float:
    """Requests/s one prefill instance serves when every forward is full: as many prompts
    of the mean length as ``max_batch_tokens`` holds (at least one), over the forward's
    time at those tokens and the mean causal pairs."""
    mean = float(np.mean(prompt))
    count = max(1.0, times.max_batch_tokens / mean)
    pairs = count * float(np.mean(prompt * (prompt + 1.0) / 2.0))
    return count / float(times.forward(count * mean, pairs))


def size_prefill(
    workload: Workload,
    arrivals: Arrivals,
    template: PrefillPool,
    slos: Slos,
    requests: int,
    seed: int = 0,
    max_instances: int = DEFAULT_MAX_BUNDLES,
) -> PrefillPool:
    """The fewest prefill instances (like ``template``) whose stage — queue, batch and KV
    transfer — stays within ``PREFILL_TTFT_SHARE`` of the TTFT SLO at its percentile over
    the measured arrivals, offered at most ``PREFILL_MAX_LOAD`` of their saturation rate
    (``prefill_saturation``). Starts at that bound, doubles, then bisects (the stage shrinks
    as instances are added). Uses the same arrivals as the decode runs (same seed)."""
    require(slos.ttft_s is not None, "sizing a prefill pool needs --ttft-ms")
    assert slos.ttft_s is not None
    times, prompt, _ = arrivals.draw(workload, requests, np.random.default_rng(seed))
    keep = times >= times[0] + WARMUP_SHARE * (times[-1] - times[0])
    budget = PREFILL_TTFT_SHARE * slos.ttft_s
    alone = float(template.times.forward(prompt.max(), prompt.max() * (prompt.max() + 1) / 2))
    require(
        alone + float(template.times.transfer(prompt.max())) <= budget,
        f"the longest prompt ({prompt.max():,.0f} tokens) alone takes {1e3 * alone:.0f} ms to "
        f"prefill on {template.times.gpus} x {template.hardware or 'GPU'}, beyond "
        f"{PREFILL_TTFT_SHARE:.0%} of the TTFT SLO; no number of instances meets it (more "
        "GPUs per instance: --prefill-gpus)",
    )
    horizon = float(times[-1] - times[0]) or 1.0
    least = len(times) / horizon / (PREFILL_MAX_LOAD * prefill_saturation(template.times, prompt))

    def meets(n: int) -> bool:
        pool = replace(template, instances=n)
        stage = (serve(times, prompt, pool).ready - times)[keep]
        return bool(n >= least and np.percentile(stage, slos.ttft_percentile) <= budget)

    n = min(max(1, math.ceil(least)), max_instances)
    lo = 0
    while not meets(n):
        lo = n
        require(n < max_instances, f"no prefill pool of up to {max_instances} instances meets "
                                   "its share of the TTFT SLO")  # fmt: skip
        n = min(2 * n, max_instances)
    hi = n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if meets(mid):
            hi = mid
        else:
            lo = mid
    return replace(template, instances=hi)


def size_fleet(
    workload: Workload,
    fleet: Fleet,
    arrivals: Arrivals,
    slos: Slos,
    requests: int,
    seed: int = 0,
    max_bundles: int = DEFAULT_MAX_BUNDLES,
    price_per_bundle_hour: float | None = None,
    progress: Callable[[int], None] | None = None,
    prefill: PrefillPool | None = None,
    size_prefill_pool: bool = False,
) -> Sizing:
    """The fewest bundles (like ``fleet``) meeting ``slos`` at ``arrivals.rate``.

    Starts at the saturation bound ⌈λ / λ_max(1 bundle)⌉, doubles until the SLOs hold,
    then bisects (goodput grows with the fleet). Refuses when even ``max_bundles`` do
    not meet the SLOs, naming the best it saw. With ``prefill`` the requests pass that
    prefill pool first (its instance count sized first by :func:`size_prefill` when
    ``size_prefill_pool``), and TTFT is simulated end to end.
    """
    require(max_bundles >= 1, f"--max-bundles must be >= 1, got {max_bundles}")
    one = replace(fleet, bundles=1)
    rate = _rate(arrivals, workload)
    floor = _unloaded_tpot(one, workload)
    if slos.tpot_s is not None and floor > slos.tpot_s:
        raise InputError(
            f"even an idle bundle's step takes {1e3 * floor:.1f} ms > the TPOT SLO of "
            f"{1e3 * slos.tpot_s:g} ms; no number of bundles can meet it"
        )
    per_bundle = saturation_rate(one, workload)
    # past the closed-form saturation of the largest fleet allowed (with a margin beyond
    # its 1-2% error against the simulator) no fleet keeps up: no need to simulate it
    require(
        rate <= SATURATION_MARGIN * max_bundles * per_bundle,
        f"no fleet of up to {max_bundles} bundles keeps up with {rate:g} req/s: one bundle "
        f"saturates at {per_bundle:.4g} req/s (closed form), so it takes at least "
        f"{math.ceil(rate / per_bundle)} (raise --max-bundles)",
    )
    ca2 = None
    probes: dict[int, tuple[Probe, OpenResult]] = {}
    residence = _moments(workload)[0] * step_time_at(one, workload, effective_batch(one, workload))
    requests = max(
        requests, min(math.ceil(SIZING_RESIDENCES * rate * residence), MAX_SIZING_REQUESTS)
    )

    if prefill is not None and size_prefill_pool:
        prefill = size_prefill(workload, arrivals, prefill, slos, requests, seed)

    def probe(n: int) -> Probe:
        nonlocal ca2
        if n not in probes:
            f = replace(fleet, bundles=n)
            run = simulate_open(workload, f, arrivals, requests, seed, prefill=prefill)
            ca2 = arrivals.ca2(run.arrival) if ca2 is None else ca2
            summary = slos.summary(run)
            prediction = predict(f, workload, rate, ca2)
            if prediction.saturation_rate < rate and summary["stable"]:
                summary["stable"] = False
                summary["unstable_because"] = (
                    f"its closed-form saturation rate {prediction.saturation_rate:.4g} req/s "
                    f"is below the offered {rate:.4g}"
                )
            # whatever the SLOs, a fleet that falls behind its offered rate is no answer
            meets = summary["stable"] and slos.met(summary)
            probes[n] = (Probe(n, summary, prediction, meets), run)
            if progress is not None:
                progress(len(probes))
        return probes[n][0]

    start = min(max(1, math.ceil(rate / per_bundle)), max_bundles)
    lo, n = 0, start
    while not probe(n).meets:
        lo = n
        if n >= max_bundles:
            best = max(probes.values(), key=lambda pr: pr[0].summary["slo_attainment"])[0]
            raise InputError(
                f"no fleet of up to {max_bundles} bundles meets the SLOs at {rate:g} req/s; "
                f"at {best.bundles} bundles {best.summary['slo_attainment']:.1%} of requests "
                "meet them (raise --max-bundles or relax the SLOs)"
            )
        n = min(2 * n, max_bundles)
    hi = n
    if lo == 0 and hi > 1 and not probe(hi - 1).meets:
        lo = hi - 1  # the saturation bound was tight: one fewer fails
    while hi - lo > 1:  # bisect: goodput grows with the fleet
        mid = (lo + hi) // 2
        if probe(mid).meets:
            hi = mid
        else:
            lo = mid
    chosen, run = probes[hi]
    gpus = hi * fleet.bundle.gpus
    cost = None if price_per_bundle_hour is None else hi * price_per_bundle_hour
    ordered = tuple(probes[k][0] for k in sorted(probes))
    return Sizing(rate, hi, gpus, cost, ordered, chosen, run, prefill)


def goodput_curve(
    workload: Workload,
    fleet: Fleet,
    arrivals: Arrivals,
    slos: Slos,
    requests: int,
    seed: int = 0,
    shares: tuple[float, ...] = CURVE_SHARES,
) -> list[dict]:
    """Goodput of one bundle at rates that are ``shares`` of its saturation rate."""
    one = replace(fleet, bundles=1)
    lam = saturation_rate(one, workload)
    residence = _moments(workload)[0] * step_time_at(one, workload, effective_batch(one, workload))
    rows = []
    for share in shares:
        rate = share * lam
        arr = replace(arrivals, rate=rate)
        # a window of ~25 mean residences, so the filling from empty does not bias it
        n = max(requests, math.ceil(CURVE_RESIDENCES * rate * residence))
        run = simulate_open(workload, one, arr, n, seed)
        summary = slos.summary(run)
        pred = predict(one, workload, rate, arr.ca2(run.arrival))
        rows.append(
            {
                "share_of_saturation": share,
                "arrivals": arrivals.process,
                "rate": rate,
                "goodput": summary["goodput"],
                "stable": summary["stable"],
                "throughput_requests": summary["throughput_requests"],
                "slo_attainment": summary["slo_attainment"],
                f"tpot_p{slos.tpot_percentile}_s": summary[f"tpot_p{slos.tpot_percentile}_s"],
                f"wait_p{slos.wait_percentile}_s": summary[f"wait_p{slos.wait_percentile}_s"],
                "wait_mean_s": summary["wait_mean_s"],
                "tpot_mean_s": summary["tpot_mean_s"],
                "predicted_wait_mean_s": pred.wait_mean_s,
                "predicted_tpot_mean_s": pred.step_time_s,
                "requests": n,
            }
        )
    # the knee: the most goodput a bundle sustains (a rate it falls behind is no knee)
    kept = [row for row in rows if row["stable"]]
    best = max(kept, key=lambda row: row["goodput"]) if kept else None
    for row in rows:
        row["knee"] = row is best
    return rows


def size_fleets(
    workload: Workload,
    fleet: Fleet,
    arrivals: list[Arrivals],
    slos: Slos,
    requests: int,
    seed: int = 0,
    max_bundles: int = DEFAULT_MAX_BUNDLES,
    price_per_bundle_hour: float | None = None,
    n_jobs: int | None = None,
    backend: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    prefill: PrefillPool | None = None,
    size_prefill_pool: bool = False,
) -> list[Sizing]:
    """:func:`size_fleet` for several rates, farmed out through joblib (``n_jobs``: -1
    every core, None: one process unless the work repays a pool; ``backend``: loky,
    threading, dask or ray, connected by the caller)."""
    from afdplan.sim.sweep import auto_jobs, parallel_map

    if n_jobs is None:
        n_jobs = (
            -1
            if backend in ("dask", "ray")
            else auto_jobs(4 * requests * len(arrivals), len(arrivals))
        )
    calls = [
        (workload, fleet, arr, slos, requests, seed, max_bundles, price_per_bundle_hour, None,
         prefill, size_prefill_pool)
        for arr in arrivals
    ]  # fmt: skip
    return parallel_map(size_fleet, calls, n_jobs, backend, progress)


def _rate(arrivals: Arrivals, workload: Workload) -> float:
    if arrivals.rate is not None:
        return float(arrivals.rate)
    arrival = getattr(workload, "arrival", None)
    require(arrival is not None, "a rate is needed: give --rate")
    return float((arrival.size - 1) / (arrival[-1] - arrival[0]))


def _unloaded_tpot(fleet: Fleet, workload: Workload) -> float:
    """The step time with a single sequence in the bundle (the smallest TPOT there is)."""
    s = workload.stats()
    lt = layered_times(
        running_pipeline(fleet.pipeline, 1.0), fleet.times, 1.0, 1, s.theta, 0, 0,
        colocated=fleet.colocated,
    )  # fmt: skip
    return float(lt.step_time)
