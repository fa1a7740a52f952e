"""Anchor the roofline on measurements (measured tables where they exist).

The roofline knows how each coefficient scales with the instance sizes (weights and KV
split over g_A or g_F GPUs) but not how far real kernels fall short of peak; a measured
coefficient set knows the second at one pair of sizes. An anchor is the ratio
measured / roofline of each attention and FFN coefficient (α, β, γ) at the set's own
sizes, applied to the roofline at every size the search visits: "the kernels reach the
same share of the roofline at other group sizes". Transfers keep the roofline (the link
differs between sizes: NVLink or the network).

The shipped sets for DeepSeek-V3 on H200 and Llama-3-70B on H100 anchor those pairs by
default; ``--anchor none`` turns it off, ``--anchor SET`` names another set (a file or a
shipped name) measured for the same model and hardware.

Measured at every size where it can be. The shipped sets come from aiconfigurator-core's
tables, which hold the attention kernels at each tensor-parallel head split and the MoE
kernels at each expert-parallel size. With that package installed (the ``measured`` extra)
and the model served in the dtypes it was measured in, each side is instead fitted to the
tables at the very size the search visits, exactly as ``afdplan calibrate --system`` fits
them: measured kernels do not keep one share of the roofline (DeepSeek-V3 on H200: the MLA
module at TP 8 takes 3.6× the time the TP-1 ratio predicts, the EP-64 MoE layer 2.8×). A
size the tables lack falls back to the ratio, and the description says which sizes were
measured.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from afdplan.calibrate.measured_sets import MeasuredSource, shipped_sources, tables_installed
from afdplan.calibrate.roofline import derive
from afdplan.calibrate.specs import HardwareSpec, ModelSpec
from afdplan.errors import require
from afdplan.timing import AttentionLinear, Linear, LinearStepTimes, Routing


@dataclass(frozen=True)
class Anchor:
    """Multipliers on the roofline coefficients, valid on ``hardware``."""

    name: str
    hardware: str
    attention: tuple[float, float, float]  # α_A, β_A, γ_A
    ffn: tuple[float, float]  # α_F, β_F
    # where the set was measured, when other sizes can be read from the same tables
    measured: MeasuredSource | None = None

    def apply(
        self,
        times: LinearStepTimes,
        attention_hw: str,
        ffn_hw: str,
        sizes: tuple[int, int] | None = None,
        routing: Routing | None = None,
    ) -> LinearStepTimes:
        """``times`` with each side scaled where that side runs on the anchor's hardware:
        measured at ``sizes`` (g_A, g_F), ``routing``'s rows and the experts' split
        (``times.experts.expert_tp``) where the anchor's tables have them (kernels and
        expert exchange as ``calibrate --system`` reads them), else by the ratios, which
        scale the FFN kernels and leave the roofline's expert dispatch and combine alone
        (``times.exchange``: links, not kernels)."""
        a, f, x, experts = times.attention, times.ffn, times.exchange, times.experts
        # a split attention's all-reduce rides on links: a kernel ratio leaves it alone
        # (measured tables time it with the framework's own all-reduce)
        ar = times.reduce or Linear(0.0, 0.0)
        g_a, g_f = sizes if sizes is not None else (None, None)
        if attention_hw == self.hardware:
            fit = self.measured.attention(g_a) if self.measured and g_a else None
            if fit is not None:
                a = fit
            else:
                ka, kb, kg = self.attention
                a = AttentionLinear(
                    alpha=a.alpha * ka,
                    beta=(a.beta - ar.beta) * kb + ar.beta,
                    gamma=(a.gamma - ar.alpha) * kg + ar.alpha,
                )
        skewed = routing is not None and routing.kind == "power-law"
        if experts is not None and routing is not None:
            experts = replace(experts, routing=routing)
        if ffn_hw == self.hardware:
            rows = str(routing) if skewed else None
            split = experts.expert_tp if experts is not None else 1
            fit = self.measured.ffn(g_f, rows, split) if self.measured and g_f else None
            if fit is not None:
                f, x = fit
                if skewed and experts is not None:  # the rows time the busiest rank
                    experts = replace(experts, skew_in_fit=True)
            else:
                na, nb = (x.alpha, x.beta) if x is not None else (0.0, 0.0)
                f = Linear(
                    alpha=(f.alpha - na) * self.ffn[0] + na,
                    beta=(f.beta - nb) * self.ffn[1] + nb,
                )
        name = f"{times.name} anchored on {self.name}"
        return replace(times, attention=a, ffn=f, exchange=x, experts=experts, name=name)

    def describe(self, attention_sizes=(), ffn_sizes=()) -> str:
        """The ratios, and which of the given sizes each side reads from measured tables."""
        (aa, ab, ag), (fa, fb) = self.attention, self.ffn
        text = (
            f"{self.name} on {self.hardware}: attention α×{aa:.2f} β×{ab:.2f} γ×{ag:.2f}, "
            f"FFN α×{fa:.2f} β×{fb:.2f}"
        )
        if self.measured is None:
            return text
        src = self.measured
        att = sorted(g for g in set(attention_sizes) if src.attention(g) is not None)
        ffn = sorted(g for g in set(ffn_sizes) if src.ffn(g) is not None)
        sides = [
            f"{side} at {', '.join(map(str, sizes))} GPUs"
            for side, sizes in (("attention", att), ("FFN", ffn))
            if sizes
        ]
        return (
            f"{text}; measured {src.system} {src.framework} tables for "
            + (" and ".join(sides) if sides else "no size searched")
            + ", these ratios elsewhere"
        )


def anchor_from(
    measured: LinearStepTimes,
    model: ModelSpec,
    hw: HardwareSpec,
    source: MeasuredSource | None = None,
) -> Anchor:
    """The measured / roofline ratios at the measured set's own instance sizes (and the
    tables to read other sizes from, if ``source`` names them)."""
    g_a, g_f = int(measured.gpus_attention), int(measured.gpus_ffn)
    require(
        g_a == measured.gpus_attention and g_f == measured.gpus_ffn and g_a >= 1 and g_f >= 1,
        f"anchor {measured.name}: its GPUs per instance must be whole numbers",
    )
    require(measured.time_unit == "s", f"anchor {measured.name}: its times must be in seconds")
    roof = derive(model, hw, g_a, g_f).times

    def ratio(num: float, den: float) -> float:
        return num / den if den > 0 else 1.0

    ma, ra = measured.attention, roof.attention
    # The FFN ratio is of the kernels alone: the expert exchange rides on links.
    mf, rf = _kernels(measured), _kernels(roof)
    return Anchor(
        name=measured.name,
        hardware=hw.name,
        attention=(ratio(ma.alpha, ra.alpha), ratio(ma.beta, ra.beta), ratio(ma.gamma, ra.gamma)),
        ffn=(ratio(mf.alpha, rf.alpha), ratio(mf.beta, rf.beta)),
        measured=source,
    )


def _kernels(times: LinearStepTimes) -> Linear:
    """The FFN without its expert dispatch and combine."""
    x = times.exchange
    if x is None:
        return times.ffn
    return Linear(alpha=max(times.ffn.alpha - x.alpha, 0.0), beta=max(times.ffn.beta - x.beta, 0.0))


def resolve_anchor(
    spec: str | None,
    model: ModelSpec,
    attention_hw: HardwareSpec,
    ffn_hw: HardwareSpec,
    per_size: bool = True,
) -> Anchor | None:
    """``None`` → the shipped set for this model and hardware, if any; 'none' → no
    anchor; anything else: a coefficient set (name or file) measured on the attention
    hardware (or, failing that, the FFN hardware). ``per_size``: read every size from the
    shipped set's tables where they exist (only for the model in its measured dtypes)."""
    from afdplan.calibrate.resolve import resolve_coeffs

    if spec is not None and spec.lower() == "none":
        return None
    for hw in (attention_hw, ffn_hw):
        name = spec if spec is not None else _shipped_for(model, hw)
        if name is not None:
            source = shipped_sources().get(name) if per_size else None
            if source is not None and not tables_installed():
                source = None
            return anchor_from(resolve_coeffs(name), model, hw, source)
    return None


def _shipped_for(model: ModelSpec, hw: HardwareSpec) -> str | None:
    """The shipped coefficient set measured for this model on this hardware: the set's
    model preset, or any config of the same shapes and dtypes (a Hugging Face id of the
    same model must get the same answer as its preset name)."""
    for name, source in shipped_sources().items():
        if source.system in hw.aiconfigurator_systems and _same_model(model, source.model):
            return name
    return None


def _same_model(model: ModelSpec, preset: str) -> bool:
    from afdplan.calibrate.specs import load_model

    if model.name == preset:
        return True
    # redundant experts are a serving layout of the same model, not another model
    anonymous = {"name": "", "source": "", "architecture": "", "redundant_experts": 0}
    return replace(model, **anonymous) == replace(load_model(preset), **anonymous)


def borrowed_anchors(hardware: str) -> list[Anchor]:
    """Each shipped measured set's measured / roofline ratios, moved to ``hardware``: how a
    plain-roofline answer would change if this model's kernels fell as short of the
    roofline as the measured ones do (the uncertainty band of a roofline-only answer)."""
    from afdplan.calibrate.resolve import resolve_coeffs

    out = []
    for name, source in shipped_sources().items():
        model, hw = source.specs()
        anchor = anchor_from(resolve_coeffs(name), model, hw)
        out.append(replace(anchor, hardware=hardware, name=f"{name}'s ratios"))
    return out
