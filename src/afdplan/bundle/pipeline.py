"""How one decode step runs: the ONE place stage times combine into a step time (DESIGN §8).

Five pipelines, by name:

* ``overlap`` — the paper's: τ = max{t_A, t_C, t_F} (stages of consecutive steps overlap
  perfectly; fixed costs paid once; one micro-batch).
* ``serial`` — τ = t_A + t_C + t_F (no overlap at all; one micro-batch; t_C is the
  round trip, both directions).
* ``pingpong`` — what AFD runtimes run (vLLM afd-plugin DBO and FastAFD: m = 2; Step-3
  and MegaScale-Infer: m = 3): every Attention worker splits its B sequences into m
  micro-batches, and micro-batch j crosses A → link → FFN → link → A once per layer, so
  the attention of one micro-batch hides behind the FFN of another. Each micro-batch pays
  the fixed costs again and the FFN sees r·B/m tokens.
* ``aic-optimistic`` / ``aic-conservative`` — AIConfigurator's AFD cycle models, offered by
  name so users can compare: τ = (a + x + f + y) + t_cyc·(m·L − 1) with t_cyc =
  max(a, f, x + y) (optimistic) or max(a + x, f + y) (conservative); the optimistic cycle
  falls back to the conservative one when m < 2 + (x + y)/max(a, f), too few micro-batches
  to hide the transfers (AIConfigurator 0.12, ``sdk/inference_session.py``,
  ``AFDInferenceSession._pipeline_tcycle``).

Per-layer service times of one micro-batch (seconds): ``a`` attention on one worker, ``x``
the A→F transfer, ``f`` the FFN group, ``y`` the F→A transfer (x and y each half the
round trip t_C: every direction is counted once). For ``pingpong`` the exact
model is the FIFO recurrence of DESIGN §8 (:func:`recurrence`, the simulator's ground
truth); with equal times everywhere it has the closed form

    τ = S + (m − 1)·s_max + (L − 1)·max(m·s_max, S),   S = a + x + f + y,
    s_max = max(a, x, f, y)

(:func:`pingpong_closed_form`). With r workers of random loads the attention resource is
bound by the busiest worker's m tasks and a micro-batch's round trip by its slowest
worker, so the barrier version uses a_round = E[max_i a_ij] in S and
a_busy = E[max_i Σ_j a_ij]/m in s_max (both equal a without variance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from afdplan.choices import PIPELINES, PipelineKind
from afdplan.errors import require
from afdplan.normal import excess_integral, expected_max_normal


@dataclass(frozen=True)
class StageLine:
    """A time that is a line in r: slope·r + intercept (time units)."""

    stage: str
    slope: float
    intercept: float

    def at(self, r):
        return self.slope * r + self.intercept

    def __add__(self, other: StageLine) -> StageLine:
        return StageLine(self.stage, self.slope + other.slope, self.intercept + other.intercept)

    def scaled(self, k: float, stage: str | None = None) -> StageLine:
        return StageLine(stage or self.stage, k * self.slope, k * self.intercept)


@dataclass(frozen=True)
class Pipeline:
    """How stages combine: ``kind``, ``microbatches`` m, and the model's ``layers`` L.

    ``Pipeline(kind, m, L)`` builds the class registered for ``kind`` (one per
    ``PipelineKind`` member, below); each owns everything that differs between kinds: how
    per-layer micro-batch times compose into a step (:meth:`compose`, plain arithmetic that
    numpy broadcasts and numba compiles), the lines whose envelope is the mean-field step
    (:meth:`cycle_lines`), what binds (:meth:`binding`), and its exact per-step model
    (:meth:`exact_step_times`). ``overlap`` and ``serial`` run one micro-batch per step.
    """

    kind: str = "overlap"
    microbatches: int = 1
    layers: int = 1
    layered: ClassVar[bool] = True

    def __new__(cls, kind: str = "overlap", microbatches: int = 1, layers: int = 1):
        if cls is Pipeline:
            require(kind in _KINDS, f"pipeline must be one of {', '.join(PIPELINES)}, got {kind!r}")
            cls = _KINDS[kind]
        return object.__new__(cls)

    def __post_init__(self) -> None:
        require(
            _KINDS.get(self.kind) is type(self),
            f"pipeline must be one of {', '.join(PIPELINES)}, got {self.kind!r}",
        )
        require(
            isinstance(self.microbatches, int | np.integer) and self.microbatches >= 1,
            f"micro-batches m must be an integer >= 1, got {self.microbatches}",
        )
        require(
            isinstance(self.layers, int | np.integer) and self.layers >= 1,
            f"layers L must be an integer >= 1, got {self.layers}",
        )
        require(
            self.layered or self.microbatches == 1,
            f"the {self.kind} pipeline runs one micro-batch per step; "
            "use --pipeline pingpong (or aic-*) for m > 1",
        )

    def describe(self) -> str:
        if not self.layered:
            return self.kind
        return f"{self.kind} m={self.microbatches} L={self.layers}"

    def split(self, batch: int) -> np.ndarray:
        """Sequences per micro-batch: a worker's slots p = 0..B−1 go to micro-batch
        ⌊p·m/B⌋, so the sizes differ by at most one."""
        m = self.microbatches
        require(m <= batch, f"micro-batches m = {m} exceed the batch B = {batch}")
        return np.bincount(np.arange(batch) * m // batch, minlength=m)

    # ------------------------------------------------------------- kind-specific

    @staticmethod
    def compose(m, layers, a_round, a_busy, x, f, y):  # pragma: no cover - abstract
        """Step time from one micro-batch's per-layer times (any shapes that broadcast).

        ``a_round``: the attention time that sets a micro-batch's round trip (the slowest
        worker's); ``a_busy``: the busiest worker's attention per micro-batch (its m tasks
        per layer over m). Without variance both are the same a. For ``overlap`` and
        ``serial`` the per-layer times are the whole-step stage times over L. Plain
        arithmetic and ``np.maximum`` only: numba compiles it for the open-system loop.
        """
        raise NotImplementedError

    def cycle_lines(
        self, whole: dict[str, StageLine], per_layer: dict[str, StageLine] | None
    ) -> list[StageLine]:
        """Lines in r whose upper envelope is the mean-field step time (candidates for
        the optimum where no envelope is exact).

        ``whole``: whole-step stage times (keys attention, communication, ffn) for overlap
        and serial; ``per_layer``: one micro-batch's per-layer times (keys a, x, f, y) for
        the layered pipelines. Each line is named after what binds when it is on top.
        """
        raise NotImplementedError  # pragma: no cover - abstract

    def regime_switches(self, per_layer: dict[str, StageLine]) -> list[tuple[StageLine, ...]]:
        """Pairs of per-layer lines whose crossing switches the step-time formula."""
        return []

    def binding(self, a_round: float, a_busy: float, x: float, f: float) -> str:
        """What sets a layered step: the busiest resource (per direction of the link)."""
        work = {"attention": a_busy, "communication": x, "ffn": f}
        return max(work, key=work.__getitem__)

    def closed_step_times(self, a: np.ndarray, x: np.ndarray, f: np.ndarray, y: np.ndarray):
        """τ per step from per-worker, per-micro-batch times (shapes as :func:`recurrence`):
        this kind's closed form on the slowest worker's round trip, the busiest worker's
        load and the largest transfer and FFN call."""
        a_round = a.max(axis=(1, 2))
        a_busy = a.mean(axis=2).max(axis=1)
        x_max = x.max(axis=(1, 2)) if x.ndim == 3 else x.max(axis=1)
        return self.step_time(a_round, a_busy, x_max, f.max(axis=1), y.max(axis=1))

    def exact_step_times(self, a: np.ndarray, x: np.ndarray, f: np.ndarray, y: np.ndarray):
        """τ per step from an exact model finer than the closed form (DESIGN §8), or None
        where the closed form is this kind's whole model."""
        return None

    # ----------------------------------------------------------------- common

    @property
    def code(self) -> int:
        """The kind as an integer (its index in ``PIPELINES``)."""
        return PIPELINES.index(self.kind)

    def step_time(self, a_round, a_busy, x, f, y):
        """:meth:`compose` at this pipeline's m and L."""
        return self.compose(self.microbatches, self.layers, a_round, a_busy, x, f, y)

    def colocated_step_time(self, a_round, a_busy, x, f, y):
        """Step time when attention and FFN share the same GPUs (ordinary decode: data-
        parallel attention, expert-parallel MoE), for the AFD-vs-colocated comparison.

        Compute (attention then FFN) is one resource and the exchange another; with m
        micro-batches (two-batch overlap for m = 2) the exchange of one micro-batch hides
        behind the compute of another: the closed form of DESIGN §8 on those two
        resources. m = 1 gives L·(a + x + f + y), the same as AFD's serial step.
        """
        return colocated_compose(self.microbatches, self.layers, a_round, a_busy, x, f, y)


class _WholeStep(Pipeline):
    """One micro-batch a step: the per-layer inputs are the whole-step times over L."""

    layered: ClassVar[bool] = False

    def whole_step(self, attention, comm, ffn):
        """τ per step from whole-step stage times (the slowest worker's attention; ``comm``
        the round trip)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def expected_step(self, mu: float, sigma: float, r: int, comm: float, ffn: float):
        """(E[τ], τ at the mean load, what binds) with r workers' attention
        N(μ, σ²) i.i.d. (DESIGN §4)."""
        raise NotImplementedError  # pragma: no cover - abstract


class Overlap(_WholeStep):
    """The paper's: τ = max{t_A, t_C, t_F} (stages of consecutive steps overlap perfectly)."""

    @staticmethod
    def compose(m, layers, a_round, a_busy, x, f, y):
        # t_C is one stage, both directions: x + y, as in the whole-step form.
        return layers * np.maximum(np.maximum(a_round, f), x + y)

    def whole_step(self, attention, comm, ffn):
        return np.vstack([attention, comm, ffn]).max(axis=0)

    def cycle_lines(self, whole, per_layer):
        return list(whole.values())

    def expected_step(self, mu, sigma, r, comm, ffn):
        stages = {"attention": mu, "communication": comm, "ffn": ffn}
        g = max(comm, ffn)
        expected = g + sigma * excess_integral((g - mu) / sigma, r) if sigma > 0 else max(g, mu)
        return expected, max(stages.values()), max(stages, key=stages.__getitem__)


class Serial(_WholeStep):
    """τ = t_A + t_C + t_F: no overlap at all (t_C the round trip, both directions)."""

    @staticmethod
    def compose(m, layers, a_round, a_busy, x, f, y):
        return layers * (a_round + x + f + y)

    def whole_step(self, attention, comm, ffn):
        return attention + comm + ffn

    def cycle_lines(self, whole, per_layer):
        a, c, f = whole["attention"], whole["communication"], whole["ffn"]
        return [(a + c + f).scaled(1, "serial")]

    def expected_step(self, mu, sigma, r, comm, ffn):
        mean_field = mu + comm + ffn
        expected = mean_field + (sigma * expected_max_normal(r) if sigma > 0 else 0.0)
        return expected, mean_field, "serial"


class PingPong(Pipeline):
    """m micro-batches cross A → link → FFN → link → A once per layer (vLLM afd-plugin DBO
    and FastAFD: m = 2; Step-3 and MegaScale-Infer: m = 3): the exact FIFO recurrence,
    and its closed form τ = S + (m − 1)·s_max + (L − 1)·max(m·s_max, S)."""

    @staticmethod
    def compose(m, layers, a_round, a_busy, x, f, y):
        s_round = a_round + x + f + y
        s_max = np.maximum(np.maximum(a_busy, x), np.maximum(f, y))
        return s_round + (m - 1) * s_max + (layers - 1) * np.maximum(m * s_max, s_round)

    def cycle_lines(self, whole, per_layer):
        assert per_layer is not None
        m, L = self.microbatches, self.layers
        a, x, f, y = (per_layer[k] for k in ("a", "x", "f", "y"))
        round_trip = a + x + f + y
        names = {"a": "attention", "x": "communication", "f": "ffn", "y": "communication"}
        lines = []
        for key, s in per_layer.items():
            busy = round_trip + s.scaled(m - 1) + s.scaled((L - 1) * m)
            lines.append(busy.scaled(1, names[key]))
            fill = round_trip + s.scaled(m - 1) + round_trip.scaled(L - 1)
            lines.append(fill.scaled(1, "round-trip"))
        return lines

    def binding(self, a_round, a_busy, x, f):
        """The busiest resource, or the round trip of one micro-batch when there are too
        few micro-batches to hide it (DESIGN.md §8)."""
        binding = super().binding(a_round, a_busy, x, f)
        work = {"attention": a_busy, "communication": x, "ffn": f}
        if a_round + 2 * x + f > self.microbatches * work[binding]:
            return "round-trip"
        return binding

    def exact_step_times(self, a, x, f, y):
        """The FIFO recurrence of DESIGN §8 (:func:`recurrence`)."""
        return recurrence(a, x, f, y, self.layers)


class _AIConfigurator(Pipeline):
    """AIConfigurator's AFD cycle models, offered by name so users can compare:
    τ = (a + x + f + y) + t_cyc·(m·L − 1) (AIConfigurator 0.12, ``sdk/inference_session.py``,
    ``AFDInferenceSession._pipeline_tcycle``)."""

    def cycle_lines(self, whole, per_layer):
        assert per_layer is not None
        m, L = self.microbatches, self.layers
        a, x, f, y = (per_layer[k] for k in ("a", "x", "f", "y"))
        round_trip = a + x + f + y
        lines = []
        for name, options in self._cycles(a, x, f, y).items():
            for t_cyc in options:
                lines.append((round_trip + t_cyc.scaled(m * L - 1)).scaled(1, name))
        return lines

    @staticmethod
    def _cycles(a, x, f, y) -> dict[str, list[StageLine]]:
        return {"attention": [a + x], "ffn": [f + y]}


class AicConservative(_AIConfigurator):
    """t_cyc = max(a + x, f + y)."""

    @staticmethod
    def compose(m, layers, a_round, a_busy, x, f, y):
        cycle = np.maximum(a_busy + x, f + y)
        return a_round + f + x + y + cycle * (m * layers - 1)


class AicOptimistic(_AIConfigurator):
    """t_cyc = max(a, f, x + y), falling back to the conservative max(a + x, f + y) when
    m < 2 + (x + y)/max(a, f): too few micro-batches to hide the transfers."""

    @staticmethod
    def compose(m, layers, a_round, a_busy, x, f, y):
        conservative = np.maximum(a_busy + x, f + y)
        compute = np.maximum(a_busy, f)
        optimistic = np.maximum(compute, x + y)
        hidden = m * compute >= 2 * compute + x + y  # enough micro-batches to hide x + y
        cycle = hidden * optimistic + (1 - hidden) * conservative
        return a_round + f + x + y + cycle * (m * layers - 1)

    @staticmethod
    def _cycles(a, x, f, y):
        # Its own cycles, and the conservative ones it falls back to (their corners are
        # candidates; the step time itself comes from ``step_time``).
        return {"attention": [a, a + x], "ffn": [f, f + y], "communication": [x + y]}

    def regime_switches(self, per_layer):
        """The optimistic cycle holds while (m − 2)·max(a, f) ≥ x + y."""
        a, x, f, y = (per_layer[k] for k in ("a", "x", "f", "y"))
        k = self.microbatches - 2
        return [(a.scaled(k), x + y), (f.scaled(k), x + y)]


# One class per PipelineKind member: a new pipeline is a class here and a member there.
_KINDS: dict[str, type[Pipeline]] = {
    PipelineKind.overlap.value: Overlap,
    PipelineKind.serial.value: Serial,
    PipelineKind.pingpong.value: PingPong,
    PipelineKind.aic_optimistic.value: AicOptimistic,
    PipelineKind.aic_conservative.value: AicConservative,
}
assert set(_KINDS) == set(PIPELINES), "every PipelineKind needs its class"
LAYERED = tuple(kind for kind, cls in _KINDS.items() if cls.layered)


def colocated_compose(m, layers, a_round, a_busy, x, f, y):
    """:meth:`Pipeline.colocated_step_time` as a plain function (numba compiles it for the
    open-system loop): ping-pong on two resources, compute a + f and the exchange x + y,
    i.e. ``PingPong.compose(m, L, a_round + f, a_busy + f, x + y, 0, 0)`` written out."""
    compute, exchange = a_round + f, x + y
    s_round = compute + exchange  # summed as PingPong.compose sums it: the same bits
    s_max = np.maximum(a_busy + f, exchange)
    return s_round + (m - 1) * s_max + (layers - 1) * np.maximum(m * s_max, s_round)


def pingpong_closed_form(a_round, a_busy, x, f, y, m: int, layers: int):
    """τ = S + (m − 1)·s_max + (L − 1)·max(m·s_max, S) (DESIGN §8), vectorised."""
    return PingPong.compose(m, layers, a_round, a_busy, x, f, y)


def recurrence(
    a: np.ndarray, x: np.ndarray, f: np.ndarray, y: np.ndarray, layers: int
) -> np.ndarray:
    """The exact ping-pong step time of DESIGN §8, vectorised over steps.

    ``a``: (S, r, m) per-layer attention time of worker i's micro-batch j. ``x``: (S, r, m)
    per-worker A→F links, or (S, m) one aggregate link that starts when the micro-batch's
    slowest worker is done. ``f``, ``y``: (S, m) FFN group and F→A link (every worker's
    return transfer starts when the FFN is done and takes the same time, so one resource
    stands for them). Each resource serves its tasks FIFO in the order (layer 1: j = 1..m),
    (layer 2: j = 1..m), …; a task starts when its resource is free and its input is
    there. Returns τ per step: when the last micro-batch of the last layer is back.
    O(L·m·r) per step.
    """
    steps = a.shape[0]
    out = np.empty(steps)
    # Micro-batch-major copies, walked in chunks of steps that stay in cache.
    a = np.ascontiguousarray(np.moveaxis(a, 2, 0))
    x = np.ascontiguousarray(np.moveaxis(x, -1, 0))
    f = np.ascontiguousarray(f.T)
    y = np.ascontiguousarray(y.T)
    for lo in range(0, steps, _CHUNK):
        hi = min(lo + _CHUNK, steps)
        out[lo:hi] = _recurrence_chunk(a[:, lo:hi], x[:, lo:hi], f[:, lo:hi], y[:, lo:hi], layers)
    return out


_CHUNK = 4096


def _recurrence_chunk(a, x, f, y, layers: int) -> np.ndarray:
    m, steps, r = a.shape
    per_worker_links = x.ndim == 3
    a_free = np.zeros((steps, r))
    x_free = np.zeros((steps, r)) if per_worker_links else np.zeros(steps)
    f_free = np.zeros(steps)
    y_free = np.zeros(steps)
    back = np.zeros((m, steps))  # when micro-batch j returned from the previous layer
    for _ in range(layers):
        for j in range(m):
            np.maximum(a_free, back[j][:, None], out=a_free)
            a_free += a[j]
            if per_worker_links:
                np.maximum(x_free, a_free, out=x_free)
                x_free += x[j]
                arrive = x_free.max(axis=1)  # the barrier: the FFN needs every worker's part
            else:
                x_free = np.maximum(x_free, a_free.max(axis=1)) + x[j]
                arrive = x_free
            np.maximum(f_free, arrive, out=f_free)
            f_free += f[j]
            np.maximum(y_free, f_free, out=y_free)
            y_free += y[j]
            back[j] = y_free
    return y_free
