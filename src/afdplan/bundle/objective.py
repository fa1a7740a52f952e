"""What a recommendation maximises (DESIGN.md §1, §8): tokens/s per GPU, per dollar, or per
instance, as instance weights w_A, w_F in Θ_w = r·B / ((r·w_A + w_F)·τ)."""

from __future__ import annotations

from afdplan.choices import Objective
from afdplan.errors import check_positive, require


def objective_weights(
    objective: str,
    gpus_attention: float,
    gpus_ffn: float,
    price_attention: float | None = None,
    price_ffn: float | None = None,
) -> tuple[float, float]:
    """(w_A, w_F) for ``objective``: GPUs per instance (``gpu``), dollars per hour per
    instance (``cost``: GPUs × price per GPU-hour of each side's hardware), or one per
    instance (``instance``, the paper's r·B/((r + 1)·τ))."""
    check_positive("GPUs per Attention instance", gpus_attention)
    check_positive("GPUs per FFN instance", gpus_ffn)
    if objective == Objective.gpu:
        return float(gpus_attention), float(gpus_ffn)
    if objective == Objective.instance:
        return 1.0, 1.0
    require(
        objective == Objective.cost,
        f"objective must be one of {', '.join(o.value for o in Objective)}, got {objective!r}",
    )
    require(
        price_attention is not None and price_ffn is not None,
        "--objective cost needs --price-attention and --price-ffn ($ per GPU-hour)",
    )
    return (
        gpus_attention * check_positive("--price-attention", price_attention),
        gpus_ffn * check_positive("--price-ffn", price_ffn),
    )


def weighted_rate(tokens, time, ratio, w_attention: float, w_ffn: float):
    """Θ_w = tokens / ((r·w_A + w_F)·time): the objective of DESIGN.md §1 (vectorised).

    With (w_A, w_F) = (1, 1) it is the paper's per-instance rate, with GPUs per instance
    the rate per GPU, with dollars per hour the rate per dollar.
    """
    return tokens / ((ratio * w_attention + w_ffn) * time)
