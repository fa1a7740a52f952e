"""Open-system simulation: requests arrive over time, wait, and are served by N bundles
(issue 12). The closed simulator (``afdplan.sim.engine``) refills a slot the instant it
frees, so a bundle is always full; here batches are partly empty at low load and requests
queue at high load, which is what a fleet is sized for.

Arrivals: a trace's timestamps (optionally scaled to a target rate), a Poisson process, or
a gamma renewal process with a given coefficient of variation (bursty for cv > 1). The
event loop is ``afdplan.sim.open_loop`` (compiled); ``afdplan.sim.open_reference`` is an
independent implementation the tests hold it to.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from afdplan.bundle import Pipeline
from afdplan.choices import ROUTERS
from afdplan.errors import InputError, check_positive, require
from afdplan.timing import LinearStepTimes, transfer_each_way, transfer_tokens
from afdplan.workload import EmpiricalWorkload, Workload

ARRIVALS = ("trace", "poisson", "gamma")
WARMUP_SHARE = 0.1  # requests arriving in the first 10% of the horizon are not measured


@dataclass(frozen=True)
class Arrivals:
    """``kind`` trace | poisson | gamma; ``rate`` requests/s (for a trace: rescales its
    timestamps; None keeps them); ``cv`` the gamma process's coefficient of variation."""

    kind: str = "poisson"
    rate: float | None = None
    cv: float = 1.0

    def __post_init__(self) -> None:
        require(
            self.kind in ARRIVALS,
            f"arrivals must be one of trace, poisson, gamma:cv=X; got {self.kind!r}",
        )
        if self.rate is not None:
            require(
                math.isfinite(self.rate) and self.rate > 0, f"--rate must be > 0, got {self.rate}"
            )
        require(self.kind == "trace" or self.rate is not None, f"{self.kind} arrivals need --rate")
        require(math.isfinite(self.cv) and self.cv > 0, f"gamma cv must be > 0, got {self.cv}")

    @classmethod
    def parse(cls, text: str, rate: float | None) -> Arrivals:
        """``trace``, ``poisson`` or ``gamma:cv=X``."""
        kind, _, params = text.partition(":")
        cv = 1.0
        if params:
            key, eq, value = params.partition("=")
            require(
                kind == "gamma" and key == "cv" and eq == "=",
                f"--arrivals {text!r}: only gamma takes a parameter, as gamma:cv=X",
            )
            try:
                cv = float(value)
            except ValueError as exc:
                raise InputError(f"--arrivals {text!r}: cv must be a number") from exc
        elif kind == "gamma":
            raise InputError("--arrivals gamma needs its coefficient of variation: gamma:cv=X")
        return cls(kind, rate, cv)

    @property
    def process(self) -> str:
        """The arrival process without its rate."""
        names = {"trace": "trace timestamps", "poisson": "Poisson"}
        return names.get(self.kind, f"gamma cv={self.cv:g}")

    def describe(self) -> str:
        return self.process + ("" if self.rate is None else f" at {self.rate:g} req/s")


def arrival_times(
    arrivals: Arrivals, workload: Workload, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrival seconds, prompt, decode) of ``n`` requests. A trace gives its own requests
    in order, repeated back to back when ``n`` exceeds its size."""
    require(n >= 1, f"--requests must be >= 1, got {n}")
    if arrivals.kind == "trace":
        require(
            isinstance(workload, EmpiricalWorkload) and workload.arrival is not None,
            "--arrivals trace needs a trace with an arrival-time column (arrived_at, "
            "timestamp, ...) and no missing values",
        )
        assert isinstance(workload, EmpiricalWorkload) and workload.arrival is not None
        require(
            workload.arrival_sorted,
            f"{workload.source}: arrival timestamps are not in order; sort the trace by "
            "arrival time for --arrivals trace",
        )
        # A trace shorter than the run is repeated back to back (its own mean gap apart).
        reps = -(-n // workload.size)
        base = workload.arrival.astype(np.float64) - workload.arrival[0]
        period = base[-1] + (base[-1] / max(workload.size - 1, 1) if workload.size > 1 else 1.0)
        times = (base[None, :] + period * np.arange(reps)[:, None]).ravel()[:n]
        prompt = np.tile(workload.prompt, reps)[:n].copy()
        decode = np.tile(workload.decode, reps)[:n].copy()
        if arrivals.rate is not None:
            require(period > 0, f"{workload.source}: all arrivals at one instant; cannot rescale")
            recorded = workload.size / period
            times = times * (recorded / arrivals.rate)
        return times, prompt, decode
    rate = float(arrivals.rate)  # type: ignore[arg-type]
    if arrivals.kind == "poisson":
        gaps = rng.exponential(1.0 / rate, n)
    else:
        shape = 1.0 / arrivals.cv**2
        gaps = rng.gamma(shape, 1.0 / (rate * shape), n)
    prompt, decode = workload.sample(rng, n)
    return np.cumsum(gaps), np.asarray(prompt, np.int64), np.asarray(decode, np.int64)


@dataclass(frozen=True)
class Fleet:
    """N identical bundles of r attention workers with B slots each, the step-time model
    (linear coefficients, seconds), the pipeline, and an optional KV cap per worker."""

    times: LinearStepTimes
    ratio: int
    batch: int
    bundles: int = 1
    pipeline: Pipeline = field(default_factory=Pipeline)
    kv_capacity_tokens: int | None = None
    router: str = "least-kv"

    def __post_init__(self) -> None:
        for label, value in (("ratio r", self.ratio), ("batch B", self.batch)):
            require(int(value) == value and value >= 1, f"{label} must be >= 1, got {value}")
        require(
            int(self.bundles) == self.bundles and self.bundles >= 1,
            f"--bundles must be >= 1, got {self.bundles}",
        )
        require(self.router in ROUTERS, f"--router must be one of {', '.join(ROUTERS)}")
        require(
            self.times.time_unit == "s",
            "open-system simulation needs step times in seconds (arrivals are in seconds)",
        )
        if self.kv_capacity_tokens is not None:
            require(self.kv_capacity_tokens >= 1, "KV capacity must be >= 1 token")

    @property
    def workers(self) -> int:
        return self.bundles * self.ratio

    @property
    def gpus(self) -> float:
        return self.bundles * (self.ratio * self.times.gpus_attention + self.times.gpus_ffn)

    @functools.cached_property
    def imbalance_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, φ) on a geometric grid (8 points an octave, 1 to 2^22 tokens): the
        expected busiest-expert-rank factor, interpolated by the compiled loop and by
        :meth:`ffn_time` alike."""
        tokens = 2.0 ** (np.arange(0, 8 * 22 + 1) / 8.0)
        return tokens, np.asarray(self.times.effective_tokens(tokens), np.float64) / tokens

    def ffn_time(self, tokens: float) -> float:
        """The FFN on a micro-batch of ``tokens`` at the expected busiest expert rank, as
        the compiled loop computes it (seconds)."""
        f = self.times.ffn
        return f.alpha * tokens * float(np.interp(tokens, *self.imbalance_grid)) + f.beta

    def coefficients(self) -> np.ndarray:
        """The linear coefficients the compiled loop reads; the transfer's are one
        direction of the round trip, on a worker's tokens stretched by the fan-in (a
        constant here: r is fixed), so the loop charges x = α_C'·b + β_C' each way."""
        t = self.times
        # (the loop itself puts all r·b tokens on the one link of an aggregate scope)
        fan_in = float(transfer_tokens("fan_in", 1.0, self.ratio, t.gpus_ffn))
        fan_in = fan_in if t.comm_scope == "fan_in" else 1.0
        c_alpha, c_beta = transfer_each_way(t.comm.alpha * fan_in), transfer_each_way(t.comm.beta)
        return np.array(
            [t.attention.alpha, t.attention.beta, t.attention.gamma, t.ffn.alpha, t.ffn.beta,
             c_alpha, c_beta],
            dtype=np.float64,
        )  # fmt: skip


@dataclass(frozen=True)
class OpenResult:
    """One open-system run. Times in seconds; ``measured`` marks the requests that
    arrived after the warm-up share of the horizon (the statistics use those)."""

    arrival: np.ndarray
    start: np.ndarray
    finish: np.ndarray
    prompt: np.ndarray
    decode: np.ndarray
    worker: np.ndarray
    events: dict[str, np.ndarray]  # time, in_system, queued, kv_tokens after each event
    steps: int
    busy: np.ndarray  # seconds each bundle spent stepping
    fleet: Fleet

    @property
    def measured(self) -> np.ndarray:
        """Requests that arrived after the warm-up: the larger of 10% of the arrival span
        and two mean residences (the system fills from empty), at most half the span."""
        t0, t1 = self.arrival[0], self.arrival[-1]
        span = t1 - t0
        residence = float(np.mean(self.finish - self.start))
        warm = min(max(WARMUP_SHARE * span, 2.0 * residence), 0.5 * span)
        return self.arrival >= t0 + warm

    @property
    def window_residences(self) -> float:
        """The measured window in mean residences: below ~10 the rates are biased low
        (the fleet was still filling)."""
        lo, hi = self.window()
        return (hi - lo) / max(float(np.mean(self.finish - self.start)), 1e-12)

    @property
    def wait(self) -> np.ndarray:
        return self.start - self.arrival

    @property
    def tpot(self) -> np.ndarray:
        return (self.finish - self.start) / self.decode

    @property
    def horizon(self) -> float:
        return float(self.finish.max() - self.arrival[0])

    def offered_rate(self) -> float:
        """Requests per second offered over the measured arrivals."""
        keep = self.measured
        t = self.arrival[keep]
        return (keep.sum() - 1) / (t[-1] - t[0]) if t[-1] > t[0] else math.inf

    def window(self) -> tuple[float, float]:
        """The measured window: from the first measured arrival to the last arrival."""
        t = self.arrival[self.measured]
        return float(t[0]), float(self.arrival[-1])

    def ttft(self, prefill: tuple[float, float]) -> np.ndarray:
        """TTFT estimate (seconds): the prefill t_P(P) = α_P·P + β_P, not queued (prefill
        instances are sized on their own), then the wait for a decode slot; the first
        token reaches the user when the first decode step begins."""
        alpha, beta = prefill
        return alpha * self.prompt + beta + self.wait

    def summary(
        self,
        tpot_slo_s: float | None = None,
        wait_slo_s: float | None = None,
        prefill: tuple[float, float] | None = None,
        ttft_slo_s: float | None = None,
    ) -> dict:
        """Statistics of the requests that arrived in the measured window. Rates count
        what finished (or, for tokens, was generated) inside the window, so a long drain
        after the last arrival does not dilute them. ``prefill`` (α_P s/token, β_P s)
        adds TTFT percentiles, and ``ttft_slo_s`` counts them against goodput."""
        require(ttft_slo_s is None or prefill is not None, "a TTFT SLO needs the prefill time")
        keep = self.measured
        wait, tpot = self.wait[keep], self.tpot[keep]
        lo, hi = self.window()
        span = max(hi - lo, 1e-12)
        ok = np.ones(self.arrival.size, dtype=bool)
        if tpot_slo_s is not None:
            ok &= self.tpot <= tpot_slo_s
        if wait_slo_s is not None:
            ok &= self.wait <= wait_slo_s
        ttft = None if prefill is None else self.ttft(prefill)
        if ttft_slo_s is not None:
            ok &= ttft <= ttft_slo_s
        done = (self.finish >= lo) & (self.finish <= hi)
        # tokens generated inside the window, spreading each request's D steps evenly
        overlap = np.clip(np.minimum(self.finish, hi) - np.maximum(self.start, lo), 0.0, None)
        length = np.maximum(self.finish - self.start, 1e-12)
        ev = self.events
        dt = np.diff(ev["time"])
        total = float(ev["time"][-1] - ev["time"][0]) or 1.0
        return {
            "requests": int(keep.sum()),
            "offered_rate": self.offered_rate(),
            "throughput_requests": float(done.sum() / span),
            "throughput_tokens": float((self.decode * overlap / length).sum() / span),
            "goodput": float((done & ok).sum() / span),
            "slo_attainment": float(ok[keep].mean()),
            **{f"wait_p{p}_s": float(np.percentile(wait, p)) for p in (50, 90, 99)},
            "wait_mean_s": float(wait.mean()),
            **{f"tpot_p{p}_s": float(np.percentile(tpot, p)) for p in (50, 90, 99)},
            "tpot_mean_s": float(tpot.mean()),
            "utilisation": float(self.busy.sum() / (self.fleet.bundles * self.horizon)),
            "mean_in_system": float((ev["in_system"][:-1] * dt).sum() / total),
            "mean_queued": float((ev["queued"][:-1] * dt).sum() / total),
            "mean_kv_tokens_per_worker": float(
                (ev["kv_tokens"][:-1] * dt).sum() / total / self.fleet.workers
            ),
            "steps": self.steps,
            "window_s": span,
            "window_residences": self.window_residences,
            **(
                {}
                if ttft is None
                else {f"ttft_p{p}_s": float(np.percentile(ttft[keep], p)) for p in (50, 90, 99)}
            ),
        }


def _candidates(rng: np.random.Generator, n: int, workers: int) -> np.ndarray:
    """Two distinct random workers per request (power-of-two choices)."""
    first = rng.integers(0, workers, n)
    if workers == 1:
        return np.column_stack([first, first])
    second = (first + rng.integers(1, workers, n)) % workers
    return np.column_stack([first, second]).astype(np.int64)


def simulate_open(
    workload: Workload,
    fleet: Fleet,
    arrivals: Arrivals,
    requests: int,
    seed: int = 0,
    reference: bool = False,
) -> OpenResult:
    """Run the fleet on ``requests`` arrivals; ``reference`` uses the plain implementation
    (slow; for tests)."""
    require(seed >= 0, f"--seed must be >= 0, got {seed}")
    rng = np.random.default_rng(seed)
    times, prompt, decode = arrival_times(arrivals, workload, requests, rng)
    cand = _candidates(rng, times.size, fleet.workers)
    cap = fleet.kv_capacity_tokens
    if cap is not None:
        need = prompt + decode
        worst = int(need.max())
        require(
            worst <= cap,
            f"a request needs {worst:,} KV tokens (P + D) but a worker holds {cap:,}; it "
            "could never be admitted",
        )
    check_positive("step time", float(fleet.times.attention_time(1, 1)))
    if reference:
        from afdplan.sim.open_reference import run_reference

        return run_reference(times, prompt, decode, cand, fleet)
    from afdplan.sim.open_loop import compiled_compose, loop

    n = times.size
    start, finish = np.full(n, np.nan), np.full(n, np.nan)
    worker = np.full(n, -1, np.int64)
    capacity = 2 * n + 64 + int(n * float(np.mean(decode)) / max(fleet.batch, 1))
    p = fleet.pipeline
    while True:
        ev = {
            "time": np.empty(capacity),
            "in_system": np.empty(capacity, np.int64),
            "queued": np.empty(capacity, np.int64),
            "kv_tokens": np.empty(capacity, np.int64),
        }
        events, steps, busy = loop(
            times, prompt, decode, ROUTERS.index(fleet.router), cand, fleet.bundles,
            fleet.ratio, fleet.batch, cap or 0, fleet.coefficients(), *fleet.imbalance_grid,
            fleet.times.comm_scope == "aggregate", compiled_compose(p), p.microbatches, p.layers,
            start, finish, worker, ev["time"], ev["in_system"], ev["queued"], ev["kv_tokens"],
        )  # fmt: skip
        if events <= capacity:
            break
        capacity = events
    events_out = {k: v[:events] for k, v in ev.items()}
    return OpenResult(
        times, start, finish, prompt, decode, worker, events_out, int(steps), busy, fleet
    )
