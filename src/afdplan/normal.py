"""The standard normal distribution and Gauss–Legendre quadrature, numpy only.

scipy.special and scipy.integrate cost more start-up time than all of ``afdplan plan``
is allowed (it must start within a few times a bare ``import numpy``), and the planner
needs only Φ, log Φ and smooth one-dimensional integrals. Φ comes from ``math.erfc``, which keeps
full relative precision in both tails; the quadrature is composite Gauss–Legendre on
short panels, exact to rounding for the analytic integrands of DESIGN.md §4.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from afdplan.errors import require

_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_erfc = np.frompyfunc(math.erfc, 1, 1)
# 1 − 1e-9 quantile of N(0, 1) (scipy.special.ndtri(1 - 1e-9); tested against scipy).
Z_1E9 = 5.997807019601637


def cdf(x: float) -> float:
    """Φ(x)."""
    return 0.5 * math.erfc(-x / _SQRT2)


def sf(x: float) -> float:
    """1 − Φ(x), accurate far into the upper tail."""
    return 0.5 * math.erfc(x / _SQRT2)


def pdf(x: float) -> float:
    return math.exp(-0.5 * x * x - _LOG_SQRT_2PI)


def ppf(p: float) -> float:
    """Φ⁻¹(p) for 0 < p < 1, to 1e-12 (bisection on :func:`cdf`/:func:`sf`; tested
    against scipy.special.ndtri)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"ppf needs 0 < p < 1, got {p}")
    # Work in the tail that keeps precision: sf for the upper half.
    upper = p > 0.5
    target = 1.0 - p if upper else p
    lo, hi = -40.0, 0.0  # Φ(x) = target has its root in x ≤ 0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if cdf(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    x = 0.5 * (lo + hi)
    return -x if upper else x


def log_cdf(x: float) -> float:
    """log Φ(x) with full relative precision for every finite x."""
    if x > -1.0:
        return math.log1p(-sf(x))
    if x > -37.0:
        return math.log(cdf(x))
    # Mills ratio asymptotics where erfc underflows: Φ(x) = φ(x)/|x|·(1 − 1/x² + 3/x⁴ …).
    return -0.5 * x * x - _LOG_SQRT_2PI - math.log(-x) + math.log1p(_mills_series(1.0 / (x * x)))


def _mills_series(inv2):
    """Σ (−1)^k (2k−1)!! / x^{2k} for k = 1..4 (error below 1e-14 relative at |x| ≥ 37)."""
    return inv2 * (-1.0 + inv2 * (3.0 + inv2 * (-15.0 + inv2 * 105.0)))


def cdf_array(x: np.ndarray) -> np.ndarray:
    """Φ elementwise."""
    return 0.5 * _erfc(-np.asarray(x, dtype=np.float64) / _SQRT2).astype(np.float64)


def log_cdf_array(x: np.ndarray) -> np.ndarray:
    """log Φ elementwise, the same three regimes as :func:`log_cdf`."""
    x = np.asarray(x, dtype=np.float64)
    upper = x > -1.0
    # Q(x) for the upper branch, Φ(x) for the lower one: one erfc call per element.
    tail = 0.5 * _erfc(np.where(upper, x, -x) / _SQRT2).astype(np.float64)
    far = x <= -37.0
    with np.errstate(divide="ignore"):
        out = np.where(upper, np.log1p(-tail), np.log(np.where(far, 1.0, tail)))
    if far.any():
        xf = x[far]
        series = _mills_series(1.0 / (xf * xf))
        out[far] = -0.5 * xf * xf - _LOG_SQRT_2PI - np.log(-xf) + np.log1p(series)
    return out


# 16-point Gauss–Legendre rule on [−1, 1] (numpy.polynomial.legendre.leggauss(16), tested
# equal; written out because importing numpy.polynomial costs start-up time).
_HALF_NODES = (
    0.09501250983763744,
    0.2816035507792589,
    0.45801677765722737,
    0.6178762444026438,
    0.755404408355003,
    0.8656312023878318,
    0.9445750230732326,
    0.9894009349916499,
)
_HALF_WEIGHTS = (
    0.18945061045506864,
    0.18260341504492364,
    0.16915651939500265,
    0.1495959888165767,
    0.12462897125553407,
    0.0951585116824926,
    0.062253523938647456,
    0.027152459411754176,
)
_NODES = np.array([-x for x in reversed(_HALF_NODES)] + list(_HALF_NODES))
_WEIGHTS = np.array(list(reversed(_HALF_WEIGHTS)) + list(_HALF_WEIGHTS))


def integrate(
    fn: Callable[[np.ndarray], np.ndarray], lo: float, hi: float, panel: float = 0.25
) -> float:
    """∫_lo^hi fn(x) dx by 16-point Gauss–Legendre on panels at most ``panel`` wide.

    ``fn`` takes an array. For integrands analytic in a strip around [lo, hi] whose
    features are wider than a panel (all of §4's are), the error is at rounding level.
    """
    if hi <= lo:
        return 0.0
    n = max(1, math.ceil((hi - lo) / panel))
    edges = np.linspace(lo, hi, n + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[:-1] + edges[1:])
    x = (mid[:, None] + half[:, None] * _NODES[None, :]).ravel()
    values = np.asarray(fn(x), dtype=np.float64).reshape(n, _NODES.size)
    return float(np.sum(half * (values @ _WEIGHTS)))


# Below this z, 1 − Φ(x)^r equals 1 to double precision for any r ≥ 1 (Φ(−10) ≈ 7.6e-24).
_Z_FLOOR = -10.0
# Above this z, r·Q(x) is negligible next to the other terms for r < 1e12 (Q(12) ≈ 1.8e-33).
_Z_CEIL = 12.0


def _one_minus_phi_pow(x: np.ndarray, r: int) -> np.ndarray:
    return -np.expm1(r * log_cdf_array(x))


def excess_integral(z0: float, r: int) -> float:
    """∫_{z0}^{∞} (1 − Φ(x)^r) dx, ≥ 0, for integer r ≥ 1."""
    require(r >= 1, f"r must be >= 1, got {r}")
    if z0 >= _Z_CEIL:
        # 1 − Φ^r ≈ r·Q(x) there, and ∫_{z0}^{∞} Q = φ(z0) − z0·Q(z0).
        return r * max(pdf(z0) - z0 * sf(z0), 0.0)
    lead = max(_Z_FLOOR - z0, 0.0)  # the stretch where the integrand is exactly 1
    lo = max(z0, _Z_FLOOR)
    return lead + integrate(lambda x: _one_minus_phi_pow(x, r), lo, _Z_CEIL)


@functools.lru_cache(maxsize=4096)
def expected_max_normal(r: int) -> float:
    """E[max of r i.i.d. standard normals] = ∫_0^∞(1 − Φ^r) − ∫_{−∞}^0 Φ^r."""
    # Below −10, Φ^r < 1e-23: the rest of the lower integral is under 1e-24.
    below = integrate(lambda x: np.exp(r * log_cdf_array(x)), _Z_FLOOR, 0.0)
    return excess_integral(0.0, r) - below
