"""Anchor the roofline on measurements (issue 9: measured tables where they exist).

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
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from afdplan.calibrate.roofline import derive
from afdplan.calibrate.specs import HardwareSpec, ModelSpec
from afdplan.errors import require
from afdplan.timing import AttentionLinear, Linear, LinearStepTimes

# (model preset, hardware preset) → the shipped coefficient set measured for them.
SHIPPED = {
    ("deepseek-v3", "h200"): "deepseek-v3-h200",
    ("llama3-70b", "h100-sxm"): "llama3-70b-h100",
}


@dataclass(frozen=True)
class Anchor:
    """Multipliers on the roofline coefficients, valid on ``hardware``."""

    name: str
    hardware: str
    attention: tuple[float, float, float]  # α_A, β_A, γ_A
    ffn: tuple[float, float]  # α_F, β_F

    def apply(
        self,
        times: LinearStepTimes,
        attention_hw: str,
        ffn_hw: str,
        ffn_network: tuple[float, float] = (0.0, 0.0),
    ) -> LinearStepTimes:
        """``times`` with each side scaled where that side runs on the anchor's hardware.
        ``ffn_network``: the (α, β) of the FFN time that is network, not kernels (the
        expert all-to-all between nodes), which the kernels' ratios must not scale."""
        a, f = times.attention, times.ffn
        if attention_hw == self.hardware:
            ka, kb, kg = self.attention
            a = AttentionLinear(alpha=a.alpha * ka, beta=a.beta * kb, gamma=a.gamma * kg)
        if ffn_hw == self.hardware:
            na, nb = ffn_network
            f = Linear(
                alpha=(f.alpha - na) * self.ffn[0] + na, beta=(f.beta - nb) * self.ffn[1] + nb
            )
        return replace(times, attention=a, ffn=f, name=f"{times.name} anchored on {self.name}")

    def describe(self) -> str:
        (aa, ab, ag), (fa, fb) = self.attention, self.ffn
        return (
            f"{self.name} on {self.hardware}: attention α×{aa:.2f} β×{ab:.2f} γ×{ag:.2f}, "
            f"FFN α×{fa:.2f} β×{fb:.2f}"
        )


def anchor_from(measured: LinearStepTimes, model: ModelSpec, hw: HardwareSpec) -> Anchor:
    """The measured / roofline ratios at the measured set's own instance sizes."""
    g_a, g_f = int(measured.gpus_attention), int(measured.gpus_ffn)
    require(
        g_a == measured.gpus_attention and g_f == measured.gpus_ffn and g_a >= 1 and g_f >= 1,
        f"anchor {measured.name}: its GPUs per instance must be whole numbers",
    )
    require(measured.time_unit == "s", f"anchor {measured.name}: its times must be in seconds")
    roof = derive(model, hw, g_a, g_f).times

    def ratio(num: float, den: float) -> float:
        return num / den if den > 0 else 1.0

    ma, ra, mf, rf = measured.attention, roof.attention, measured.ffn, roof.ffn
    return Anchor(
        name=measured.name,
        hardware=hw.name,
        attention=(ratio(ma.alpha, ra.alpha), ratio(ma.beta, ra.beta), ratio(ma.gamma, ra.gamma)),
        ffn=(ratio(mf.alpha, rf.alpha), ratio(mf.beta, rf.beta)),
    )


def resolve_anchor(
    spec: str | None, model: ModelSpec, attention_hw: HardwareSpec, ffn_hw: HardwareSpec
) -> Anchor | None:
    """``None`` → the shipped set for this model and hardware, if any; 'none' → no
    anchor; anything else: a coefficient set (name or file) measured on the attention
    hardware (or, failing that, the FFN hardware)."""
    from afdplan.calibrate.resolve import resolve_coeffs

    if spec is not None and spec.lower() == "none":
        return None
    for hw in (attention_hw, ffn_hw):
        name = spec if spec is not None else SHIPPED.get((model.name, hw.name))
        if name is not None:
            return anchor_from(resolve_coeffs(name), model, hw)
    return None
