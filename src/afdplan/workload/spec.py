"""Parse workload specs given on the command line.

Grammar (the kind names the decode-length law; the prompt law is set by ``prefill*`` keys)::

    geometric:prefill=512,decode_mean=256        E[D] = 256 (or p=<stop probability>)
    fixed:prefill=512,decode=256
    lognormal:prefill=512,decode_median=200,decode_sigma=1.0[,decode_max=8192]
    uniform:prefill=512,decode_lo=16,decode_hi=512
    trace:PATH                                   a CSV / JSONL / Parquet trace
    mix:0.7*geometric:prefill=100,decode_mean=50 + 0.3*fixed:prefill=2000,decode=20

Prompt keys: ``prefill=N`` (fixed), ``prefill_median=..,prefill_sigma=..[,prefill_max=..]``
(lognormal) or ``prefill_lo=..,prefill_hi=..`` (uniform).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from afdplan.errors import InputError, require
from afdplan.workload import laws
from afdplan.workload.sources import IndependentWorkload, MixtureWorkload, Workload
from afdplan.workload.traces import read_trace

PROMPT_KEYS = (
    "prefill",
    "prefill_median",
    "prefill_sigma",
    "prefill_max",
    "prefill_lo",
    "prefill_hi",
)


def parse_workload(spec: str) -> Workload:
    """The workload a spec string describes (see the module docstring)."""
    spec = spec.strip()
    kind, sep, rest = spec.partition(":")
    require(bool(sep), f"workload spec {spec!r} needs KIND:params; kinds: {', '.join(KINDS)}")
    kind = kind.strip().lower()
    if kind == "trace":
        require(bool(rest.strip()), "trace workload needs a path: trace:PATH")
        return read_trace(rest.strip())
    if kind == "mix":
        return _parse_mixture(rest)
    if kind not in DECODE_LAWS:
        raise InputError(f"unknown workload kind {kind!r}; known: {', '.join(KINDS)}")
    keys, decode_law = DECODE_LAWS[kind]
    params = _parse_params(rest, allowed=(*keys, *PROMPT_KEYS), kind=kind)
    return IndependentWorkload(prompt=_prompt_law(params), decode=decode_law(params))


def _parse_mixture(rest: str) -> MixtureWorkload:
    components, weights = [], []
    for part in rest.split("+"):
        weight, star, sub = part.partition("*")
        require(bool(star), f"mixture component {part.strip()!r} needs WEIGHT*SPEC")
        weights.append(_number("mixture weight", weight))
        components.append(parse_workload(sub))
    return MixtureWorkload(tuple(components), tuple(weights))


def _parse_params(text: str, allowed: tuple[str, ...], kind: str) -> dict[str, float]:
    params: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        require(bool(eq), f"workload parameter {item!r} needs key=value")
        require(
            key in allowed,
            f"unknown parameter {key!r} for {kind} workload; allowed: {', '.join(allowed)}",
        )
        params[key] = _number(key, value)
    return params


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise InputError(f"{name} must be a number, got {text.strip()!r}") from exc
    require(math.isfinite(value), f"{name} must be finite, got {text.strip()!r}")
    return value


def _need(params: dict[str, float], *keys: str) -> list[float]:
    missing = [k for k in keys if k not in params]
    require(not missing, f"workload spec is missing {', '.join(missing)}")
    return [params[k] for k in keys]


def _prompt_law(params: dict[str, float]) -> laws.LengthLaw:
    given = [k for k in ("prefill", "prefill_median", "prefill_lo") if k in params]
    require(len(given) <= 1, f"workload spec: one prompt law, got {' and '.join(given)}")
    if "prefill" in params:
        return laws.fixed(params["prefill"])
    if "prefill_median" in params:
        median, sigma = _need(params, "prefill_median", "prefill_sigma")
        return laws.lognormal(median, sigma, maximum=params.get("prefill_max"))
    if "prefill_lo" in params:
        lo, hi = _need(params, "prefill_lo", "prefill_hi")
        return laws.uniform(lo, hi)
    raise InputError(
        "workload spec needs prefill=N (or prefill_median/prefill_sigma, prefill_lo/prefill_hi)"
    )


def _geometric(params: dict[str, float]) -> laws.LengthLaw:
    require(
        not ("p" in params and "decode_mean" in params),
        "geometric workload: give decode_mean or p, not both",
    )
    if "p" in params:
        return laws.Geometric(p=params["p"])
    (mean,) = _need(params, "decode_mean")
    return laws.Geometric.from_mean(mean)


def _fixed(params: dict[str, float]) -> laws.LengthLaw:
    (value,) = _need(params, "decode")
    require(value >= 1, f"decode must be >= 1, got {value:g}")
    return laws.fixed(value)


def _lognormal(params: dict[str, float]) -> laws.LengthLaw:
    median, sigma = _need(params, "decode_median", "decode_sigma")
    return laws.lognormal(median, sigma, maximum=params.get("decode_max"))


def _uniform(params: dict[str, float]) -> laws.LengthLaw:
    lo, hi = _need(params, "decode_lo", "decode_hi")
    require(lo >= 1, f"decode_lo must be >= 1, got {lo:g}")
    return laws.uniform(lo, hi)


# The decode-length law of each kind: its keys and its parser (a new law is one entry).
DECODE_LAWS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, float]], laws.LengthLaw]]] = {
    "geometric": (("decode_mean", "p"), _geometric),
    "fixed": (("decode",), _fixed),
    "lognormal": (("decode_median", "decode_sigma", "decode_max"), _lognormal),
    "uniform": (("decode_lo", "decode_hi"), _uniform),
}
KINDS = (*DECODE_LAWS, "trace", "mix")
