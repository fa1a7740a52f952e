"""Where the shipped measured coefficient sets came from, so that other instance sizes can
be read from the same aiconfigurator-core tables.

``scripts/regenerate_presets.sh`` builds each shipped set with ``afdplan calibrate
--system …`` at one attention TP and one FFN group size; the tables hold the attention
kernels at every head split and the MoE kernels at every expert-parallel size, so a set
can be recalibrated at the sizes a user asks for (``plan --gpus-ffn 16``) or a search
visits (``afdplan.deploy.anchor``), with the same arguments. Needs the ``measured`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from importlib.util import find_spec
from typing import TYPE_CHECKING

from afdplan.errors import InputError
from afdplan.presets import measured_sets
from afdplan.timing import AttentionLinear, Linear, LinearStepTimes

if TYPE_CHECKING:  # pandas loads only when a calibration runs: `plan` must start fast
    import pandas as pd


@dataclass(frozen=True)
class MeasuredSource:
    """The arguments a shipped set was calibrated with (sizes aside)."""

    model: str
    system: str
    framework: str = "vllm"
    ffn_range: tuple[float, float] | None = None
    send_recv: str | None = "vidur-h100-dgx"  # the A↔F transfers' measurements
    gpus_ffn: int = 1  # the set's own FFN group (read when only the attention side is wanted)

    def calibrate(
        self, g_a: int, g_f: int, name: str, routing: str | None = None, expert_tp: int = 1
    ) -> tuple[LinearStepTimes, pd.DataFrame]:
        """The coefficients (named ``name``) and measured rows at attention TP ``g_a``,
        FFN group ``g_f`` with every expert split over ``expert_tp`` of it, and ``routing``
        (default balanced; a one-line error when the tables lack a size, a layout or a
        routing)."""
        times, rows = _calibrated(self, g_a, g_f, routing, expert_tp)
        return replace(times, name=name), rows

    def check_fits(self, g_f: int) -> None:
        """A one-line error unless a group of ``g_f`` GPUs holds the FFN weights (the
        kernel tables were measured at any size, whether the weights fit or not)."""
        from afdplan.calibrate.roofline import check_ffn_fits

        check_ffn_fits(*self.specs(), g_f)

    def specs(self):
        """(model, hardware) presets of the measured set."""
        from afdplan.calibrate.specs import load_hardware, load_model

        return load_model(self.model), load_hardware(self.system)

    def attention(self, g_a: int) -> AttentionLinear | None:
        """The attention fit at TP ``g_a``, or None where the tables lack that split."""
        try:
            times, _ = _calibrated(self, g_a, self.gpus_ffn)
        except InputError:
            return None
        return times.attention

    def ffn(
        self, g_f: int, routing: str | None = None, expert_tp: int = 1
    ) -> tuple[Linear, Linear | None] | None:
        """(the FFN fit, the part of it that is expert dispatch and combine) on a group of
        ``g_f`` GPUs at ``routing``'s rows, every expert split over ``expert_tp`` of them,
        or None where they were not measured."""
        try:
            times, _ = _calibrated(self, 1, g_f, routing, expert_tp)
        except InputError:
            return None
        return times.ffn, times.exchange


@lru_cache(maxsize=1)
def shipped_sources() -> dict[str, MeasuredSource]:
    """The shipped measured sets by name, as their ``[measured]`` tables describe them."""
    out = {}
    for name, entry in measured_sets().items():
        window = entry.get("ffn_range")
        out[name] = MeasuredSource(
            entry["model"],
            entry["system"],
            framework=entry["framework"],
            ffn_range=None if window is None else (window[0], window[1]),
            send_recv=entry.get("send_recv"),
            gpus_ffn=entry["gpus_ffn"],
        )
    return out


def tables_installed() -> bool:
    """Whether aiconfigurator-core (the ``measured`` extra) is importable."""
    return find_spec("aiconfigurator_core") is not None


@lru_cache(maxsize=256)
def _calibrated(
    source: MeasuredSource, g_a: int, g_f: int, routing: str | None = None, expert_tp: int = 1
) -> tuple[LinearStepTimes, pd.DataFrame]:
    from afdplan.calibrate.pipeline import Sources, calibrate
    from afdplan.data import resolve_input

    result, rows = calibrate(
        Sources(
            model=source.model,
            system=source.system,
            framework=source.framework,
            gpus_attention=g_a,
            gpus_ffn=g_f,
            send_recv=None
            if source.send_recv is None
            else resolve_input(source.send_recv, "send-recv"),
            ffn_range=source.ffn_range,
            routing=routing,
            expert_tp=expert_tp,
        )
    )
    for stage in ("attention", "ffn"):
        if stage not in result.fits:
            raise InputError(f"{source.system} tables: no {stage} fit at TP {g_a}, group {g_f}")
    return result.times, rows
