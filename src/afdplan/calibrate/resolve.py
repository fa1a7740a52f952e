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
    link: str | None = None,
    expert_tp: int = 1,
) -> LinearStepTimes:
    """A coefficient set: built-in name, JSON/TOML file, or ``roofline:MODEL@HARDWARE``
    (``roofline:MODEL@ATTENTION_HW+FFN_HW`` for a heterogeneous pair); ``expert_tp``: the
    GPUs each routed expert is split over in the FFN group (a roofline derives it; a
    fitted set must have been fitted so).

    ``gpus_attention``/``gpus_ffn`` set the GPUs per instance: a roofline set is derived
    for them (attention TP, FFN group size); a fitted set keeps its step times and only
    counts the GPUs differently, and a set with measured curves (kernel times at its own
    sizes) refuses other sizes.
    ``dtypes`` (weights, FFN-side weights, KV cache; None keeps the model's) serve a
    roofline model in other element types; a measured set keeps the dtypes it was
    measured in. ``link`` (``calibrate.roofline.LINKS`` or ``GBPSgbps@USus``) carries the
    A↔F transfers instead of the set's own (a roofline picks NVLink within a machine).
    """
    require(bool(spec.strip()), "--coeffs is empty; give a set name, a file or roofline:MODEL@HW")
    if spec.startswith("roofline:"):
        from afdplan.calibrate.roofline import check_ffn_fits, derive, parse_link
        from afdplan.calibrate.specs import load_hardware, load_model, served_as

        model, at, hardware = spec.removeprefix("roofline:").partition("@")
        attention_hw, plus, ffn_hw = hardware.partition("+")
        if not (at and model and attention_hw) or (plus and not ffn_hw):
            raise InputError(
                f"--coeffs {spec!r}: use roofline:MODEL@HARDWARE or "
                "roofline:MODEL@ATTENTION_HW+FFN_HW"
            )
        spec_model = served_as(load_model(model), *dtypes)
        side_hw = load_hardware(attention_hw)
        other_hw = load_hardware(ffn_hw) if plus else None
        if gpus_ffn is not None:
            check_ffn_fits(spec_model, other_hw or side_hw, gpus_ffn)
        chosen = None if link is None else parse_link(link)
        times = derive(
            spec_model,
            side_hw,
            gpus_attention or 1,
            gpus_ffn,
            other_hw,
            link=chosen,
            expert_tp=expert_tp,
        ).times
        if chosen is not None:
            times = replace(times, name=f"{times.name} over {chosen.name}")
    else:
        require(
            dtypes == (None, None, None),
            "--weight-dtype, --ffn-dtype and --kv-dtype apply to roofline:MODEL@HW "
            f"coefficients; {spec!r} keeps the dtypes it was measured in "
            "(afdplan deploy rescales a measured anchor)",
        )
        times = load_coeffs(spec)
        own = 1 if times.experts is None else times.experts.expert_tp
        require(
            expert_tp == own,
            f"--expert-tp {expert_tp}: {times.name} was fitted with every expert split over "
            f"{own} GPU(s); use roofline:MODEL@HW, a shipped measured set (read again from its "
            "tables) or calibrate that layout (afdplan calibrate --system ... --expert-tp)",
        )
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
                    "install the measured extra (the shipped sets are then read at any "
                    "measured size), calibrate that size (afdplan calibrate --system ... "
                    f"{option} {value}) or use roofline:MODEL@HW",
                )
                times = replace(times, **{name: float(value)})
        if link is not None:
            times = over_link(times, spec, link)
    return times if comm is None else _with_scope(times, comm)


def over_link(times: LinearStepTimes, spec: str, link: str) -> LinearStepTimes:
    """A shipped measured set's step times with its A↔F transfers over ``link`` (the
    transfer model needs the model's hidden size and layers, which the shipped sets'
    sources name; any other set is refused)."""
    from afdplan.calibrate.measured_sets import shipped_sources
    from afdplan.calibrate.roofline import link_comm, parse_link
    from afdplan.timing import Linear

    chosen = parse_link(link)
    source = shipped_sources().get(spec)
    require(
        source is not None,
        f"--link: {spec!r} does not say which model it times (the transfers need its hidden "
        f"size and layers); give roofline:MODEL@HW or one of {', '.join(shipped_sources())}",
    )
    alpha, beta = link_comm(*source.specs(), chosen)
    return replace(
        times,
        name=f"{times.name} over {chosen.name}",
        comm=Linear(alpha=alpha, beta=beta),
        provenance=f"{times.provenance}; comm: {chosen.name} link",
    )


def _with_scope(times: LinearStepTimes, comm: str) -> LinearStepTimes:
    comm = str(comm).replace("-", "_")
    require(comm in COMM_SCOPES, f"--comm must be one of {', '.join(COMM_SCOPES)}, got {comm!r}")
    return times.with_comm_scope(comm)


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
    link: str | None = None,
    routing: str | None = None,
    expert_tp: int = 1,
) -> tuple[LinearStepTimes, StepTimes]:
    """(the linear coefficients, the same overlaid by measured tables where given).

    A shipped measured set asked for other instance sizes, or for a routing whose rows
    its tables hold (``power-law:ALPHA``), is recalibrated from the aiconfigurator-core
    tables it came from (``calibrate.measured_sets``); the step times then carry that
    calibration's own measured curves. Any other set takes ``routing`` as the spread
    over its expert ranks (``LinearStepTimes.with_routing``).
    """
    other = _at_other_sizes(spec, gpus, dtypes, routing, expert_tp)
    if other is None:
        linear = resolve_coeffs(spec, comm, *gpus, dtypes, link, expert_tp)
        if routing is not None:
            linear = linear.with_routing(routing)
        return linear, linear if tables is None else read_tables(tables, linear)
    linear, rows = other
    if link is not None:
        linear = over_link(linear, spec, link)
    if comm is not None:
        linear = _with_scope(linear, comm)
    if tables is not None:
        return linear, read_tables(tables, linear)
    from afdplan.timing import tables_from_frame

    kernels = rows[rows["op"] != "comm"]  # the transfers stay on their fit, as shipped
    return linear, tables_from_frame(kernels, linear, f"{linear.name} (measured tables)")


def _at_other_sizes(
    spec: str,
    gpus: tuple[int | None, int | None],
    dtypes: tuple,
    routing: str | None = None,
    expert_tp: int = 1,
) -> tuple[LinearStepTimes, object] | None:
    """A shipped measured set recalibrated at the asked sizes, split experts or skewed
    routing, or None where that does not apply (another set, its own sizes and layout and
    balanced routing, other dtypes, or no tables installed: a skewed routing or split
    experts then need the tables)."""
    from afdplan.calibrate.measured_sets import shipped_sources, tables_installed
    from afdplan.timing import Routing

    source = shipped_sources().get(spec)
    skewed = routing is not None and Routing.parse(routing).kind == "power-law"
    split = expert_tp != 1
    if source is None or dtypes != (None, None, None):
        return None
    if gpus == (None, None) and not skewed and not split:
        return None
    own = load_coeffs(spec)
    g_a = int(gpus[0]) if gpus[0] is not None else int(own.gpus_attention)
    g_f = int(gpus[1]) if gpus[1] is not None else int(own.gpus_ffn)
    for value, option in ((g_a, "--gpus-attention"), (g_f, "--gpus-ffn")):
        require(value >= 1, f"{option} must be >= 1, got {value}")
    for wanted, option in ((skewed, f"--routing {routing}"), (split, f"--expert-tp {expert_tp}")):
        require(
            not wanted or tables_installed(),
            f"{option}: {spec} reads it from the aiconfigurator-core tables it came from; "
            "install the measured extra (pip install 'afdplan[measured]')",
        )
    if not (skewed or split) and (
        (g_a, g_f) == (own.gpus_attention, own.gpus_ffn) or not tables_installed()
    ):
        return None
    source.check_fits(g_f)
    label = (
        f"{spec} at TP {g_a}, FFN group {g_f}"
        + (f" (every expert over {expert_tp})" if split else "")
        + (f", {routing} routing" if skewed else "")
    )
    rows = str(Routing.parse(routing)) if skewed else None
    return source.calibrate(g_a, g_f, label, rows, expert_tp)
