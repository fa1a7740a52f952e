"""From what a user types to step times: ``NAME | FILE | roofline:MODEL@HW`` (+ tables).

The CLI only parses options; this is where a coefficient spec becomes a
:class:`~afdplan.timing.LinearStepTimes` and a measured table becomes curves, so every
command resolves them the same way.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from afdplan.choices import COMM_SCOPES
from afdplan.data import resolve_input
from afdplan.errors import InputError, require
from afdplan.timing import LinearStepTimes, StepTimes, TableStepTimes, load_coeffs
from afdplan.timing.tables import read_step_table


def resolve_coeffs(
    spec: str,
    comm: str | None = None,
    gpus_attention: int | None = None,
    gpus_ffn: int | None = None,
    dtypes: tuple[str | None, str | None, str | None] = (None, None, None),
) -> LinearStepTimes:
    """A coefficient set: built-in name, JSON/TOML file, or ``roofline:MODEL@HARDWARE``
    (``roofline:MODEL@ATTENTION_HW+FFN_HW`` for a heterogeneous pair).

    ``gpus_attention``/``gpus_ffn`` set the GPUs per instance: a roofline set is derived
    for them (attention TP, FFN group size); a fitted set keeps its step times and only
    counts the GPUs differently, and a set with measured curves (kernel times at its own
    sizes) refuses other sizes.
    ``dtypes`` (weights, FFN-side weights, KV cache; None keeps the model's) serve a
    roofline model in other element types; a measured set keeps the dtypes it was
    measured in.
    """
    require(bool(spec.strip()), "--coeffs is empty; give a set name, a file or roofline:MODEL@HW")
    if spec.startswith("roofline:"):
        from afdplan.calibrate.roofline import derive
        from afdplan.calibrate.specs import load_hardware, load_model, served_as

        model, at, hardware = spec.removeprefix("roofline:").partition("@")
        attention_hw, plus, ffn_hw = hardware.partition("+")
        if not (at and model and attention_hw) or (plus and not ffn_hw):
            raise InputError(
                f"--coeffs {spec!r}: use roofline:MODEL@HARDWARE or "
                "roofline:MODEL@ATTENTION_HW+FFN_HW"
            )
        times = derive(
            served_as(load_model(model), *dtypes),
            load_hardware(attention_hw),
            gpus_attention or 1,
            gpus_ffn,
            load_hardware(ffn_hw) if plus else None,
        ).times
    else:
        require(
            dtypes == (None, None, None),
            "--weight-dtype, --ffn-dtype and --kv-dtype apply to roofline:MODEL@HW "
            f"coefficients; {spec!r} keeps the dtypes it was measured in "
            "(afdplan deploy rescales a measured anchor)",
        )
        times = load_coeffs(spec)
        for name, value in (("gpus_attention", gpus_attention), ("gpus_ffn", gpus_ffn)):
            if value is not None:
                option = f"--{name.replace('_', '-')}"
                require(value >= 1, f"{option} must be >= 1, got {value}")
                measured = getattr(times, name)
                # Measured curves hold kernel times at the set's own TP/EP sizes: counting
                # other sizes against them would give a silently wrong per-GPU number.
                require(
                    times.curves is None or value == measured,
                    f"{times.name} was measured with {measured:g} "
                    f"{'FFN' if name == 'gpus_ffn' else 'attention'} GPUs; for {value} "
                    "calibrate that size (afdplan calibrate --system ... "
                    f"{option} {value}) or use roofline:MODEL@HW",
                )
                times = replace(times, **{name: float(value)})
    if comm is not None:
        comm = str(comm).replace("-", "_")
        require(
            comm in COMM_SCOPES, f"--comm must be one of {', '.join(COMM_SCOPES)}, got {comm!r}"
        )
        times = times.with_comm_scope(comm)
    return times


def read_tables(value: str | Path, fallback: LinearStepTimes) -> TableStepTimes:
    """Measured curves from a table file or a shipped table name (``afdplan presets``)."""
    return read_step_table(resolve_input(value, "tables"), fallback)


def set_curves(times: LinearStepTimes) -> TableStepTimes | None:
    """The measured curves a coefficient set names in ``[meta] curves``, if any."""
    return None if times.curves is None else read_tables(times.curves, times)


def resolve_step_times(
    spec: str,
    comm: str | None,
    tables: str | Path | None,
    gpus: tuple[int | None, int | None] = (None, None),
    dtypes: tuple[str | None, str | None, str | None] = (None, None, None),
) -> tuple[LinearStepTimes, StepTimes]:
    """(the linear coefficients, the same overlaid by measured tables where given)."""
    linear = resolve_coeffs(spec, comm, *gpus, dtypes)
    return linear, linear if tables is None else read_tables(tables, linear)
