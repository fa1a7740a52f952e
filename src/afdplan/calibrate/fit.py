"""Least-squares fits of the linear step-time models, with their quality (DESIGN.md §6).

Coefficients are constrained to be ≥ 0 (non-negative least squares): a negative
intercept fitted through a roofline knee would predict negative times at small batches,
and coefficient files reject negative values. Quality: R², RMSE, the largest and median
relative residual, and *where the fit holds* — the smallest value of the main regressor
above which the median relative error is within ``tolerance`` (over at least a tenth of
the points), with the 90th percentile there for the spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize

from afdplan.errors import require

MIN_POINTS = 3


@dataclass(frozen=True)
class Fit:
    """A fitted stage: ``time = Σ coef[k]·regressor[k]`` (seconds), plus fit quality."""

    stage: str
    coef: dict[str, float]  # alpha, beta (and gamma for attention)
    r2: float
    rmse_s: float
    max_rel_residual: float
    median_rel_residual: float
    n_points: int
    x_name: str  # the main regressor: "tokens" or "kv_tokens"
    x_min: float
    x_max: float
    holds_from: float | None  # main regressor value above which the fit holds (None: nowhere)
    tolerance: float
    median_rel_residual_where_holds: float | None
    p90_rel_residual_where_holds: float | None

    def describe(self) -> str:
        coefs = ", ".join(f"{k} = {v:.4g}" for k, v in self.coef.items())
        where = (
            f"holds (median error <= {self.tolerance:.0%}) for {self.x_name} >= "
            f"{self.holds_from:,.0f}: median {self.median_rel_residual_where_holds:.1%}, "
            f"90th percentile {self.p90_rel_residual_where_holds:.1%} there"
            if self.holds_from is not None
            else f"median error above {self.tolerance:.0%} everywhere"
        )
        return (
            f"{self.stage}: {coefs}; R² = {self.r2:.4f}, RMSE = {self.rmse_s:.3g} s, "
            f"max |rel. residual| = {self.max_rel_residual:.1%}, "
            f"median {self.median_rel_residual:.1%}; "
            f"{self.x_name} {self.x_min:,.0f}..{self.x_max:,.0f}; {where}"
        )


def _check(y: np.ndarray, stage: str, *xs: np.ndarray) -> None:
    require(
        y.size >= MIN_POINTS, f"{stage}: too few points to fit ({y.size}; need >= {MIN_POINTS})"
    )
    for arr in (y, *xs):
        require(
            bool(np.isfinite(arr).all()), f"{stage}: measurements contain NaN or infinite values"
        )
    require(bool((y > 0).all()), f"{stage}: measured times must be > 0")
    for x in xs:
        require(bool((x >= 0).all()), f"{stage}: regressors must be >= 0")


def _holds_from(
    x: np.ndarray, rel: np.ndarray, tolerance: float
) -> tuple[float | None, float | None, float | None]:
    """(x from which the median |rel| of the tail is ≤ tolerance, that median, its p90)."""
    order = np.argsort(x)
    xs, errs = x[order], np.abs(rel[order])
    least = max(MIN_POINTS, int(np.ceil(0.1 * xs.size)))
    for i in range(xs.size - least + 1):
        if i > 0 and xs[i] == xs[i - 1]:
            continue
        tail = errs[i:]
        if np.median(tail) <= tolerance:
            return float(xs[i]), float(np.median(tail)), float(np.quantile(tail, 0.9))
    return None, None, None


def _fit(
    stage: str,
    design: np.ndarray,
    names: list[str],
    y: np.ndarray,
    x_main: np.ndarray,
    x_name: str,
    tolerance: float,
) -> Fit:
    require(
        np.linalg.matrix_rank(design) == design.shape[1],
        f"{stage}: measurements do not vary enough to fit {', '.join(names)}",
    )
    # Scale columns so NNLS is well conditioned, then undo.
    scale = np.abs(design).max(axis=0)
    coef, _ = optimize.nnls(design / scale, y)
    coef = coef / scale
    pred = design @ coef
    resid = y - pred
    ss_tot = float(((y - y.mean()) ** 2).sum())
    rel = resid / y
    holds, med_there, p90_there = _holds_from(x_main, rel, tolerance)
    return Fit(
        stage=stage,
        coef=dict(zip(names, map(float, coef), strict=True)),
        r2=1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else 1.0,
        rmse_s=float(np.sqrt((resid**2).mean())),
        max_rel_residual=float(np.abs(rel).max()),
        median_rel_residual=float(np.median(np.abs(rel))),
        n_points=int(y.size),
        x_name=x_name,
        x_min=float(x_main.min()),
        x_max=float(x_main.max()),
        holds_from=holds,
        tolerance=tolerance,
        median_rel_residual_where_holds=med_there,
        p90_rel_residual_where_holds=p90_there,
    )


def fit_linear(stage: str, tokens: np.ndarray, seconds: np.ndarray, tolerance: float = 0.05) -> Fit:
    """time = alpha·tokens + beta."""
    x = np.asarray(tokens, dtype=np.float64)
    y = np.asarray(seconds, dtype=np.float64)
    _check(y, stage, x)
    design = np.column_stack([x, np.ones_like(x)])
    return _fit(stage, design, ["alpha", "beta"], y, x, "tokens", tolerance)


def fit_attention(
    kv_tokens: np.ndarray,
    batch: np.ndarray,
    seconds: np.ndarray,
    tolerance: float = 0.05,
    with_gamma: bool = True,
) -> Fit:
    """time = alpha·T + gamma·B + beta (T = KV tokens in the batch, B = sequences)."""
    t = np.asarray(kv_tokens, dtype=np.float64)
    b = np.asarray(batch, dtype=np.float64)
    y = np.asarray(seconds, dtype=np.float64)
    _check(y, "attention", t, b)
    if with_gamma:
        design = np.column_stack([t, b, np.ones_like(t)])
        names = ["alpha", "gamma", "beta"]
    else:
        design = np.column_stack([t, np.ones_like(t)])
        names = ["alpha", "beta"]
    return _fit("attention", design, names, y, t, "kv_tokens", tolerance)
