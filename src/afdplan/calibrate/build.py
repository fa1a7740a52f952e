"""Put measurements and first principles together into one coefficients set.

Each stage comes from the best source given: a fit of measured rows where there are any,
else the roofline derivation of the model on the hardware. The Attention side combines a
kernel fit (α_A, and its own γ, β) with a fit of its per-sequence dense work
(``attention_dense`` rows: projections, norms, LM head), which adds to γ_A and β_A.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from afdplan.calibrate.fit import Fit, fit_attention, fit_linear
from afdplan.errors import require
from afdplan.timing import AttentionLinear, Linear, LinearStepTimes


@dataclass(frozen=True)
class Calibration:
    """Coefficients, the fits behind them, and one line per source or derivation step."""

    times: LinearStepTimes
    fits: dict[str, Fit]
    notes: tuple[str, ...]
    sources: dict[str, str]  # stage → where its coefficients came from


Window = tuple[float, float] | None


def _within(rows: pd.DataFrame, column: str, window: Window) -> pd.DataFrame:
    if window is None:
        return rows
    return rows[(rows[column] >= window[0]) & (rows[column] <= window[1])]


def fit_table(
    frame: pd.DataFrame, ffn_range: Window = None, attention_range: Window = None
) -> dict[str, Fit]:
    """Fits for every stage present in a validated generic table.

    ``ffn_range`` (tokens) and ``attention_range`` (KV tokens) restrict those fits to the
    operating range a deployment will see, away from knees it never reaches.
    """
    fits: dict[str, Fit] = {}
    by_op = {op: rows for op, rows in frame.groupby("op")}
    if "attention" in by_op:
        rows = _within(by_op["attention"], "kv_tokens", attention_range)
        fits["attention"] = fit_attention(rows["kv_tokens"], rows["batch"], rows["seconds"])
    if "attention_dense" in by_op:
        rows = by_op["attention_dense"]
        fits["attention_dense"] = fit_linear("attention_dense", rows["tokens"], rows["seconds"])
    if "ffn" in by_op:
        rows = _within(by_op["ffn"], "tokens", ffn_range)
        fits["ffn"] = fit_linear("ffn", rows["tokens"], rows["seconds"])
    if "comm" in by_op:
        rows = by_op["comm"]
        fits["comm"] = fit_linear("comm", rows["tokens"], rows["seconds"])
    if "exchange" in by_op:
        rows = _within(by_op["exchange"], "tokens", ffn_range)
        fits["exchange"] = fit_linear("exchange", rows["tokens"], rows["seconds"])
    return fits


# A fit that explains little is refused, never used silently: below this R², or above
# this median relative error, the stage falls back to the roofline (or the run stops).
MIN_R2 = 0.5
MAX_MEDIAN_ERROR = 0.25


def poor_fit(fit: Fit) -> str | None:
    """Why ``fit`` must not be used, or None if it may."""
    if not fit.r2 >= MIN_R2:  # also NaN
        return f"R² = {fit.r2:.2f} < {MIN_R2}"
    if fit.median_rel_residual > MAX_MEDIAN_ERROR:
        return f"median error {fit.median_rel_residual:.0%} > {MAX_MEDIAN_ERROR:.0%}"
    return None


def combine(
    fits: dict[str, Fit],
    base: LinearStepTimes | None,
    labels: dict[str, str],
    name: str,
    notes: tuple[str, ...] = (),
) -> Calibration:
    """Coefficients from ``fits`` where present, ``base`` (roofline) elsewhere.

    ``labels`` names the measurement behind each fitted op (for the provenance). A fit
    that explains little (:func:`poor_fit`) is refused and said so in the notes; the
    stage then comes from ``base``, or the calibration stops if there is none.
    """
    sources: dict[str, str] = {}
    refused = {op: why for op, fit in fits.items() if (why := poor_fit(fit)) is not None}
    fits = {op: fit for op, fit in fits.items() if op not in refused}
    notes = (
        *notes,
        *(
            f"REFUSED the {op} fit ({why}): the roofline is used instead"
            for op, why in refused.items()
        ),
    )

    def need_base(stage: str) -> LinearStepTimes:
        why = "; ".join(f"the {op} fit was refused: {r}" for op, r in refused.items())
        require(
            base is not None,
            f"no usable measurements for {stage}{f' ({why})' if why else ''}: give --model "
            "and --hardware (roofline) for it",
        )
        return base  # type: ignore[return-value]

    kernel, dense = fits.get("attention"), fits.get("attention_dense")
    if kernel is None and dense is None:
        attention = need_base("attention").attention
        sources["attention"] = "roofline"
    else:
        alpha = kernel.coef["alpha"] if kernel else need_base("attention").attention.alpha
        gamma = (kernel.coef.get("gamma", 0.0) if kernel else 0.0) + (
            dense.coef["alpha"] if dense else 0.0
        )
        beta = (kernel.coef["beta"] if kernel else 0.0) + (dense.coef["beta"] if dense else 0.0)
        attention = AttentionLinear(alpha=alpha, beta=beta, gamma=gamma)
        parts = [
            f"{what} fit of {labels.get(op, 'measurements')}"
            for what, op, f in (
                ("kernel", "attention", kernel),
                ("dense", "attention_dense", dense),
            )
            if f is not None
        ]
        sources["attention"] = " + ".join(parts) + ("" if kernel else "; alpha from roofline")
    stage_lines: dict[str, Linear] = {}
    for stage in ("ffn", "comm"):
        if stage in fits:
            stage_lines[stage] = Linear(fits[stage].coef["alpha"], fits[stage].coef["beta"])
            sources[stage] = f"fit of {labels.get(stage, 'measurements')}"
        else:
            stage_lines[stage] = getattr(need_base(stage), stage)
            sources[stage] = "roofline"
    template = base or LinearStepTimes(attention, stage_lines["ffn"], stage_lines["comm"])
    provenance = "; ".join(f"{stage}: {src}" for stage, src in sources.items())
    if base is not None and "roofline" in sources.values():
        provenance += f" [{base.provenance}]"
    exchange = template.exchange
    if "exchange" in fits:  # measured within the ffn rows; what colocated decode overlaps
        exchange = Linear(fits["exchange"].coef["alpha"], fits["exchange"].coef["beta"])
    times = replace(
        template,
        attention=attention,
        ffn=stage_lines["ffn"],
        comm=stage_lines["comm"],
        name=name,
        provenance=provenance,
        exchange=exchange,
    )
    return Calibration(times, fits, notes, sources)
