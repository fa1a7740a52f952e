"""The open system's fleet (N identical bundles) and the result of one run: the types
both implementations of the model (the compiled loop and the plain reference) share."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from afdplan.bundle import Bundle, Pipeline
from afdplan.choices import ROUTERS
from afdplan.errors import require
from afdplan.sim.open.prefill import PrefillRun
from afdplan.timing import LinearStepTimes, transfer_each_way, transfer_tokens

WARMUP_SHARE = 0.1  # requests arriving in the first 10% of the horizon are not measured
MAX_SLOTS = 50_000_000  # bundles·r·B: the loop keeps a few arrays of this size


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
    # ordinary decode: each bundle is a colocated group, r data-parallel attention
    # instances whose GPUs also run the FFN (``Bundle.colocated``)
    colocated: bool = False

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
        slots = self.bundles * self.ratio * self.batch
        require(
            slots <= MAX_SLOTS,
            f"{self.bundles:,} bundles × r = {self.ratio:,} × B = {self.batch:,} is {slots:,} "
            f"slots; the open system simulates at most {MAX_SLOTS:,}",
        )

    @property
    def router_code(self) -> int:
        """The router as the compiled loop reads it (its index in ``ROUTERS``)."""
        return ROUTERS.index(self.router)

    @property
    def workers(self) -> int:
        return self.bundles * self.ratio

    @property
    def gpus(self) -> float:
        return self.bundles * self.bundle.gpus

    @property
    def bundle(self) -> Bundle:
        """One of the N identical bundles."""
        t = self.times
        return Bundle(
            self.ratio, self.batch, t.gpus_attention, t.gpus_ffn, self.pipeline, self.colocated
        )

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
        f = self.times.ffn_stage
        return f.alpha * tokens * float(np.interp(tokens, *self.imbalance_grid)) + f.beta

    def coefficients(self) -> np.ndarray:
        """The linear coefficients the compiled loop reads; the transfer's are one
        direction of the round trip, on a worker's tokens stretched by the fan-in (a
        constant here: r is fixed), so the loop charges x = α_C'·b + β_C' each way."""
        t = self.times
        # (the loop itself puts all r·b tokens on the one link of an aggregate scope)
        fan_in = float(transfer_tokens("fan_in", 1.0, self.ratio, t.gpus_ffn))
        fan_in = fan_in if t.comm_scope == "fan_in" else 1.0
        c_alpha, c_beta = t.comm.alpha * fan_in, t.comm.beta
        if t.exchange_overlap:  # a worker's b tokens carry the exchange of all r·b
            assert t.exchange is not None
            share = 1.0 if t.comm_scope == "aggregate" else float(self.ratio)
            c_alpha, c_beta = c_alpha + t.exchange.alpha * share, c_beta + t.exchange.beta
        c_alpha, c_beta = transfer_each_way(c_alpha), transfer_each_way(c_beta)
        f = t.ffn_stage
        return np.array(
            [t.attention.alpha, t.attention.beta, t.attention.gamma, f.alpha, f.beta,
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
    # with a prefill pool in front: when each request (in this decode-arrival order)
    # reached the pool, and the pool's run; ``arrival`` is then its arrival at decode
    origin: np.ndarray | None = None
    prefill: PrefillRun | None = None
    prefill_instances: int = 0

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

    def window_average(self, series: str, lo: float, hi: float) -> float:
        """Time average of an event series (``in_system``, ``queued``, ``kv_tokens``: the
        value after each event holds until the next) over [lo, hi] seconds."""
        t, v = self.events["time"], self.events[series].astype(np.float64)
        edges = np.clip(np.append(t[1:], max(t[-1], hi)), lo, hi)
        starts = np.clip(t, lo, hi)
        return float((v * (edges - starts)).sum() / max(hi - lo, 1e-12))

    def value_at(self, series: str, when: float) -> float:
        """An event series' value at ``when`` seconds (after the events up to then)."""
        t = self.events["time"]
        i = int(np.searchsorted(t, when, side="right")) - 1
        return float(self.events[series][max(i, 0)])

    def stability(self) -> dict:
        """Whether the fleet keeps up with what it is offered over the measured window:
        the requests in the system grow over the window by more than a stationary queue
        fluctuates. A stationary system ends the window holding about what it held at its
        start; one that falls behind gains (λ − λ_done)·window. The growth is compared
        with the larger of 3·√(arrivals in the window) (counting noise) and a quarter of
        the arrivals' mean holding, L̄ from the window's first half (a queue's own swing).
        Returns {"stable", "because", "growth"}."""
        lo, hi = self.window()
        mid = 0.5 * (lo + hi)
        arrivals = int(((self.arrival >= lo) & (self.arrival <= hi)).sum())
        growth = self.value_at("in_system", hi) - self.value_at("in_system", lo)
        first_half = self.window_average("in_system", lo, mid)
        second_half = self.window_average("in_system", mid, hi)
        allowed = max(3.0 * math.sqrt(max(arrivals, 1)), 0.25 * first_half)
        because = []
        if growth > allowed and second_half > first_half + 0.5 * allowed:
            because.append(
                f"the requests in the system grew by {growth:,.0f} over the window "
                f"({first_half:,.0f} on average in its first half, {second_half:,.0f} in "
                "its second): the fleet falls behind what it is offered"
            )
        return {"stable": not because, "because": "; ".join(because), "growth": growth}

    def window(self) -> tuple[float, float]:
        """The measured window: from the first measured arrival to the last arrival."""
        t = self.arrival[self.measured]
        return float(t[0]), float(self.arrival[-1])

    def ttft(self, prefill: tuple[float, float] | None = None) -> np.ndarray:
        """TTFT (seconds) until the first decode step begins. With a simulated prefill pool:
        its queue, its batch, the KV transfer and the wait for a decode slot, all from the
        run. Else the estimate t_P(P) = α_P·P + β_P (``prefill``), not queued, plus the
        wait for a decode slot."""
        if self.origin is not None:
            return self.start - self.origin
        require(prefill is not None, "TTFT needs the prefill time or a prefill pool")
        alpha, beta = prefill  # type: ignore[misc]
        return alpha * self.prompt + beta + self.wait

    def prefill_summary(self) -> dict:
        """The prefill pool's figures over the measured window (empty without one)."""
        if self.prefill is None or self.origin is None:
            return {}
        keep = self.measured
        run, origin = self.prefill, self.origin
        wait = (run.begin - origin)[keep]
        stage = (run.ready - origin)[keep]
        lo, hi = float(origin.min()), float(run.done.max())
        return {
            **{f"prefill_wait_p{p}_s": float(np.percentile(wait, p)) for p in (50, 99)},
            **{f"prefill_stage_p{p}_s": float(np.percentile(stage, p)) for p in (50, 99)},
            "prefill_utilisation": run.utilisation(self.prefill_instances, hi - lo),
        }

    def _within(self, tpot_slo_s, wait_slo_s, prefill, ttft_slo_s):
        """(which requests meet every given limit, their TTFTs or None)."""
        simulated = self.origin is not None
        require(
            ttft_slo_s is None or prefill is not None or simulated,
            "a TTFT SLO needs the prefill time or a prefill pool",
        )
        ok = np.ones(self.arrival.size, dtype=bool)
        if tpot_slo_s is not None:
            ok &= self.tpot <= tpot_slo_s
        if wait_slo_s is not None:
            ok &= self.wait <= wait_slo_s
        ttft = self.ttft(prefill) if simulated or prefill is not None else None
        if ttft_slo_s is not None:
            ok &= ttft <= ttft_slo_s
        return ok, ttft

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
        keep = self.measured
        wait, tpot = self.wait[keep], self.tpot[keep]
        lo, hi = self.window()
        span = max(hi - lo, 1e-12)
        ok, ttft = self._within(tpot_slo_s, wait_slo_s, prefill, ttft_slo_s)
        done = (self.finish >= lo) & (self.finish <= hi)
        # tokens generated inside the window, spreading each request's D steps evenly
        overlap = np.clip(np.minimum(self.finish, hi) - np.maximum(self.start, lo), 0.0, None)
        length = np.maximum(self.finish - self.start, 1e-12)
        in_system = self.window_average("in_system", lo, hi)
        stability = self.stability()
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
            "residence_mean_s": float(np.mean((self.finish - self.arrival)[keep])),
            "mean_in_system": in_system,
            "mean_queued": self.window_average("queued", lo, hi),
            "mean_kv_tokens_per_worker": self.window_average("kv_tokens", lo, hi)
            / self.fleet.workers,
            "stable": stability["stable"],
            "unstable_because": stability["because"],
            "in_system_growth": stability["growth"],
            "steps": self.steps,
            "window_s": span,
            "window_residences": self.window_residences,
            **(
                {}
                if ttft is None
                else {f"ttft_p{p}_s": float(np.percentile(ttft[keep], p)) for p in (50, 90, 99)}
            ),
            **self.prefill_summary(),
        }
