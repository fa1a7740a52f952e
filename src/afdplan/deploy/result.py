"""The deploy answer: configurations, frontier, the chosen bundle, AFD vs colocated."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from afdplan.bundle import KV_SIGMAS, bundle_cost
from afdplan.choices import Runtime
from afdplan.deploy.profiles import RuntimeProfile, profile, serving
from afdplan.deploy.runtime import violation
from afdplan.deploy.slo_search import (
    ROW_COLUMNS,
    Target,
    _Collector,
    _pareto,
    search_afd,
    search_colocated,
)
from afdplan.errors import InputError

# a frontier point: its family and rates, then the row columns that name its configuration
FRONTIER_COLUMNS = (
    "family",
    "throughput_per_user",
    "throughput_per_gpu",
    *ROW_COLUMNS[: ROW_COLUMNS.index("batch") + 1],
)


@dataclass(frozen=True)
class DeployResult:
    """``configs``: each configuration's best B, best objective first, with
    ``runtime_ok``/``runtime_note``; ``frontier``: the Pareto points of tokens/s per GPU
    against tokens/s per user, one frontier per ``family`` (afd, colocated)."""

    target: Target
    configs: pd.DataFrame
    frontier: pd.DataFrame
    chosen: dict
    best_unconstrained: dict
    colocated: dict | None
    verification: list[dict] = field(default_factory=list)
    margin: list[dict] = field(default_factory=list)  # ``verdict_margin``
    # the search's own pick when simulation overruled it (None: it stands or was not checked)
    analytic_choice: dict | None = None
    profile: RuntimeProfile | None = None  # the runtime release whose rules applied (None: none)
    # a plain-roofline answer re-searched under each shipped set's measured/roofline ratios
    roofline_band: list[dict] = field(default_factory=list)

    @property
    def runtime(self) -> str:
        """The runtime whose rules applied (``none`` without a profile)."""
        return Runtime.none.value if self.profile is None else self.profile.runtime

    def search_again(self, target: Target) -> DeployResult:
        """The same search, under the same runtime release, for a changed ``target``
        (the verdict's margin and the roofline band ask what another assumption gives)."""
        version = None if self.profile is None else self.profile.version
        return search(target, self.runtime, version)

    @property
    def recommendation(self) -> str:
        """``colocated`` when AFD loses to the best colocated decode (then that is what to
        launch), else ``afd``."""
        ratio = self.afd_over_colocated
        return "colocated" if ratio is not None and verdict(ratio) == "AFD loses" else "afd"

    @property
    def provenance(self) -> str:
        """Where the chosen bundle's step times come from, per side when the two differ:
        ``measured tables at this size``, ``anchored roofline`` (measured ratios carried to
        this size) or ``plain roofline`` (no measured set on that side's hardware)."""
        t, anchor = self.target, self.target.anchor
        g_a, g_f = int(self.chosen["gpus_attention"]), int(self.chosen["gpus_ffn"])

        def side(hw: str, measured) -> str:
            if anchor is None or anchor.hardware != hw:
                return "plain roofline"
            return "measured tables at this size" if measured() else "anchored roofline"

        src = None if anchor is None else anchor.measured
        attention = side(t.attention_hw.name, lambda: src and src.attention(g_a) is not None)
        split = int(self.chosen["expert_tp"])
        ffn = side(t.ffn_hw.name, lambda: src and src.ffn(g_f, None, split) is not None)
        return attention if attention == ffn else f"attention: {attention}; FFN: {ffn}"

    def with_band(self) -> DeployResult:
        """For a plain-roofline answer on one kind of GPU, the answer again under each
        shipped measured set's ratios (``roofline_band``); others unchanged."""
        t = self.target
        if t.anchor is not None or t.heterogeneous:
            return self
        from afdplan.deploy.anchor import borrowed_anchors

        band = []
        for anchor in borrowed_anchors(t.attention_hw.name):
            try:
                other = self.search_again(replace(t, anchor=anchor))
            except InputError:  # nothing meets the SLO with kernels that slow
                band.append({"anchor": anchor.name, "throughput_per_gpu": None,
                             "afd_over_colocated": None})  # fmt: skip
                continue
            band.append(
                {
                    "anchor": anchor.name,
                    "throughput_per_gpu": float(other.chosen["throughput_per_gpu"]),
                    "afd_over_colocated": other.afd_over_colocated,
                }
            )
        return replace(self, roofline_band=band)

    @property
    def launch_refusal(self) -> str | None:
        """Why no launch files are written for this model (the runtime release does not
        serve it, with the pinned releases that do), or None."""
        if self.target.mtp is not None:
            return (
                "--mtp: no runtime launch files (the pinned AFD runtimes' GPU recipes run no "
                "speculative decoding; plain vLLM takes --speculative-config '{\"method\": "
                f"\"deepseek_mtp\", \"num_speculative_tokens\": {self.target.mtp.depth}}}' for "
                "DeepSeek-style MTP layers); aiconfigurator.sh carries the MTP"
            )
        if self.profile is None:
            return None
        model = self.target.model
        why = self.profile.refusal(model.architecture, model.is_moe)
        if why is None:
            return None
        others = [label for label in serving(model.architecture, model.is_moe)
                  if label != self.profile.label]  # fmt: skip
        hint = (
            f"; {', '.join(others)} serve{'s' if len(others) == 1 else ''} it"
            if others
            else "; no pinned AFD runtime profile serves it"
        )
        return f"{why}: no launch files{hint}"

    def anchor_text(self) -> str | None:
        """The anchor's ratios and which searched sizes came from measured tables."""
        anchor = self.target.anchor
        if anchor is None:
            return None
        afd = self.configs[self.configs["architecture"] == "afd"]
        return anchor.describe(
            afd["gpus_attention"].astype(int).tolist(), afd["gpus_ffn"].astype(int).tolist()
        )

    @property
    def runtime_cost(self) -> float:
        """Share of the objective the runtime's topology rules give up."""
        return 1.0 - self.chosen["score"] / self.best_unconstrained["score"]

    @property
    def afd_over_colocated(self) -> float | None:
        """AFD's best objective over colocated decode's (same GPUs, workload and SLO)."""
        if self.colocated is None:
            return None
        return self.chosen["score"] / self.colocated["score"]

    @property
    def best_afd_over_colocated(self) -> float | None:
        """The same ratio for the best AFD configuration without the runtime's rules."""
        if self.colocated is None:
            return None
        return self.best_unconstrained["score"] / self.colocated["score"]

    def top(self, n: int) -> pd.DataFrame:
        """The n best AFD configurations the runtime can launch."""
        afd = self.configs[(self.configs.architecture == "afd") & self.configs.runtime_ok]
        return afd.head(n)

    def chosen_times(self) -> dict:
        """The chosen bundle's step times as a coefficients file holds them (with the FFN
        fan-in and the link it crosses), so `capacity --deployment` sizes exactly the bundle
        this search chose: the served dtypes and every anchor already applied."""
        from afdplan.deploy.slo_search import bundle_times
        from afdplan.timing import coeffs_to_dict

        t, c = self.target, self.chosen
        times, _ = bundle_times(
            t.model,
            t.attention_hw,
            t.ffn_hw,
            int(c["gpus_attention"]),
            int(c["gpus_ffn"]),
            int(c["r"]),
            t.anchor,
            t.moe,
            int(c["expert_tp"]),
            t.mtp,
        )
        return coeffs_to_dict(times)

    def colocated_times(self) -> dict | None:
        """The best colocated group's step times as a coefficients file holds them, so
        `capacity --deployment` can size the colocated fleet this search compared with."""
        from afdplan.deploy.slo_search import colocated_group_times, colocated_hardware
        from afdplan.timing import coeffs_to_dict

        c, t = self.colocated, self.target
        if c is None:
            return None
        hw = colocated_hardware(str(c["architecture"]), t.attention_hw, t.ffn_hw)
        times = colocated_group_times(
            t, hw, int(c["gpus_ffn"]), int(c["gpus_attention"]), int(c["expert_tp"])
        )
        return None if times is None else coeffs_to_dict(times)

    def with_verification(self, rows: list[dict]) -> DeployResult:
        """The answer after simulation: the chosen bundle is the best checked one whose
        simulated step and TPOT quantiles lie at or below the SLO with their 95% intervals
        (``ok``); failing that, the best ``at limit``; the search's pick when every checked
        one breaks the SLO (then ``verified`` says so). ``analytic_choice`` keeps the
        search's pick when simulation overruled it."""
        if not rows:
            return replace(self, verification=rows)
        top = self.top(len(rows))
        order = [i for status in ("ok", "at limit") for i, v in enumerate(rows)
                 if v["slo_status"] == status]  # fmt: skip
        if not order or order[0] == 0:
            return replace(self, verification=rows)
        pick = _plain(top.iloc[order[0]])
        return replace(self, verification=rows, chosen=pick, analytic_choice=self.chosen)

    @property
    def chosen_check(self) -> dict | None:
        """The simulation of the chosen bundle (None when unchecked)."""
        key = ("r", "batch", "microbatches", "gpus_attention", "gpus_ffn")
        return next(
            (v for v in self.verification if all(v[k] == self.chosen[k] for k in key)), None
        )

    def with_margin(self) -> DeployResult:
        """The same answer with the verdict tried against the uncertain MoE terms."""
        return replace(self, margin=verdict_margin(self))

    def to_dict(self, files: list[str] | None = None) -> dict:
        t = self.target
        chosen = dict(self.chosen)
        if self.verification:
            chosen["simulated"] = self.chosen_check
            chosen["slo_status"] = (self.chosen_check or {}).get("slo_status")
        return {
            "model": t.model.name,
            "attention_hw": t.attention_hw.name,
            "ffn_hw": t.ffn_hw.name,
            "slo": {
                "tpot_ms": t.slo.tpot_ms,
                "percentile": t.slo.percentile,
                "quantity": "step time (per-request TPOT is simulated)",
            },
            "objective": t.objective,
            "network": {
                "gbps_per_gpu": t.attention_hw.network_bandwidth * 8 / 1e9,
                "latency_us": t.attention_hw.network_latency * 1e6,
            },
            "anchor": None if t.anchor is None else t.anchor.name,
            "anchor_ratios": self.anchor_text(),
            "recommendation": self.recommendation,
            "provenance": self.provenance,
            "roofline_band": self.roofline_band,
            "runtime": self.runtime,
            "runtime_profile": None if self.profile is None else self.profile.to_dict(),
            "launch_refusal": self.launch_refusal,
            "kv_sigmas": KV_SIGMAS,
            "theta": t.stats.theta,
            "v": t.stats.v,
            "chosen": chosen,
            "analytic_choice": self.analytic_choice,
            "chosen_step_times": self.chosen_times(),
            "best_unconstrained": self.best_unconstrained,
            "runtime_cost": self.runtime_cost,
            "moe": None if not t.model.is_moe else t.moe.describe(),
            "colocated": None
            if self.colocated is None
            else {
                "best": self.colocated,
                "step_times": self.colocated_times(),
                "afd_over_colocated": self.afd_over_colocated,
                "verdict": verdict(self.afd_over_colocated),
                "parity_band": PARITY_BAND,
                "margin": self.margin,
                "best_afd_over_colocated": self.best_afd_over_colocated,
            },
            "frontier": thin_frontier(self.frontier, 40).to_dict(orient="records"),
            "top": self.top(10).to_dict(orient="records"),
            "verification": self.verification,
            "files": files or [],
        }


def thin_frontier(frontier: pd.DataFrame, per_family: int) -> pd.DataFrame:
    """At most ``per_family`` points of each frontier, evenly spread in log tokens/s per
    user, always keeping both ends."""
    parts = []
    for _, part in frontier.groupby("family", sort=False):
        part = part.sort_values("throughput_per_user")
        if len(part) > per_family:
            x = np.log(part.throughput_per_user.to_numpy())
            targets = np.linspace(x[0], x[-1], per_family)
            keep = np.unique(np.searchsorted(x, targets).clip(0, len(part) - 1))
            part = part.iloc[keep]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _plain(row: pd.Series | dict) -> dict:
    """A row with Python scalars (JSON-ready)."""
    items = row.items() if isinstance(row, dict) else row.to_dict().items()
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in items}


def search(
    target: Target, runtime: str = Runtime.none, version: str | None = None
) -> DeployResult:
    """Search AFD bundles (and colocated decode) for ``target``; choose the best that
    ``runtime`` at release ``version`` (None: its default profile) can launch."""
    rules = None if runtime == Runtime.none else profile(runtime, version)
    out = _Collector()
    search_afd(target, out)
    afd_rows = len(out.rows)
    if target.space.colocated:
        search_colocated(target, out)
    if afd_rows == 0:
        raise InputError(_no_config_message(target, out))
    configs = pd.DataFrame(out.rows, columns=list(ROW_COLUMNS))
    notes = [
        violation(
            rules,
            int(r.r),
            int(r.gpus_attention),
            int(r.gpus_ffn),
            int(r.microbatches),
            target.attention_hw.gpus_per_node,
            int(r.expert_tp),
        )
        if r.architecture == "afd"
        else None
        for r in configs.itertuples()
    ]
    configs["tokens_per_joule"] = _tokens_per_joule(target, configs)
    configs["runtime_ok"] = [n is None for n in notes]
    configs["runtime_note"] = [n or "" for n in notes]
    frontier = _frontier(out, configs, runtime)
    configs = configs.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    afd = configs[configs.architecture == "afd"]
    allowed = afd[afd.runtime_ok]
    if allowed.empty:
        best = afd.iloc[0]
        raise InputError(
            f"no configuration that {runtime} can launch meets the SLO; the best without its "
            f"rules is r = {best.r}, g_A = {best.gpus_attention}, g_F = {best.gpus_ffn}, "
            f"m = {best.microbatches} ({afd.iloc[0].runtime_note})"
        )
    colocated = configs[configs.architecture != "afd"]
    return DeployResult(
        target=target,
        profile=rules,
        configs=configs,
        frontier=frontier,
        chosen=_plain(allowed.iloc[0]),
        best_unconstrained=_plain(afd.iloc[0]),
        colocated=None if colocated.empty else _plain(colocated.iloc[0]),
    )


# Within this share of colocated decode's objective the two are at parity: the step model's
# own uncertainty (the cross-check against AIConfigurator, the published measurements) is
# larger than that.
PARITY_BAND = 0.05
# The uncertain terms a verdict is tried against: how tokens pick experts (aiconfigurator-
# core measures power-law routing at α 1.01, its DeepSeek default, and 1.2, its default for
# other MoE models), and a factor of two either way on the expert dispatch and combine.
ROUTINGS_TRIED = ("balanced", "power-law:1.01", "power-law:1.2")
EXCHANGE_SCALES_TRIED = (0.5, 2.0)


def verdict(ratio: float) -> str:
    """AFD's objective over colocated decode's, in words."""
    if ratio > 1 + PARITY_BAND:
        return "AFD pays"
    if ratio < 1 - PARITY_BAND:
        return "AFD loses"
    return "parity"


def verdict_margin(result: DeployResult) -> list[dict]:
    """The verdict's dependence on the uncertain MoE terms: AFD over colocated (both
    searched afresh, the runtime's rules applied) under each other routing of
    ``ROUTINGS_TRIED``, with the expert exchange scaled by each of
    ``EXCHANGE_SCALES_TRIED``, and with the AFD FFN's exchange overlapped with its other
    micro-batches' experts or not (whichever was not asked); the searched case first."""
    t = result.target
    if result.colocated is None or not t.model.is_moe:
        return []
    asked = t.moe
    cases = [asked]
    cases += [replace(asked, routing=r) for r in ROUTINGS_TRIED if r != str(asked.routing)]
    scales = (asked.exchange_scale * k for k in EXCHANGE_SCALES_TRIED)
    cases += [replace(asked, exchange_scale=s) for s in scales]
    cases.append(replace(asked, exchange_overlap=not asked.exchange_overlap))
    rows = []
    for moe in cases:
        if moe == asked:
            ratio = result.afd_over_colocated
        else:
            try:
                ratio = result.search_again(replace(t, moe=moe)).afd_over_colocated
            except InputError:  # e.g. nothing meets the SLO under a dearer assumption
                ratio = None
        rows.append(
            {
                "assumption": moe.describe(),
                "afd_over_colocated": ratio,
                "verdict": "nothing meets the SLO" if ratio is None else verdict(ratio),
            }
        )
    return rows


def _tokens_per_joule(target: Target, configs: pd.DataFrame) -> pd.Series:
    """Tokens per joule at the GPUs' board power (NaN where a preset has no figure)."""
    power = {h.name: h.board_power_w for h in (target.attention_hw, target.ffn_hw)}
    p_a = power[target.attention_hw.name] or math.nan
    p_f = power[target.ffn_hw.name] or math.nan
    afd = configs.architecture == "afd"
    colocated_hw = configs.architecture.str.removeprefix("colocated@")
    watts = np.where(
        afd,
        bundle_cost(configs.r, configs.gpus_attention, configs.gpus_ffn, p_a, p_f),
        configs.gpus * colocated_hw.map(lambda name: power.get(name) or math.nan),
    )
    return configs.throughput_per_bundle / watts


def _frontier(out: _Collector, configs: pd.DataFrame, runtime: str) -> pd.DataFrame:
    """One frontier per family: every AFD configuration, the ones ``runtime`` can launch
    (when it has rules), and colocated decode."""
    points = np.vstack(out.frontier)
    row = points[:, 2].astype(int)
    is_afd = configs.architecture.to_numpy()[row] == "afd"
    families = [("afd", is_afd), ("colocated", ~is_afd)]
    if runtime != Runtime.none:
        families.insert(1, (f"afd ({runtime})", is_afd & configs.runtime_ok.to_numpy()[row]))
    frames = []
    for name, mask in families:
        chosen = _pareto(points[mask])
        if chosen.size == 0:
            continue
        rows = configs.iloc[chosen[:, 2].astype(int)]
        frames.append(
            pd.DataFrame(
                {
                    "family": name,
                    "throughput_per_user": chosen[:, 0],
                    "throughput_per_gpu": chosen[:, 1],
                    "architecture": rows.architecture.to_numpy(),
                    "gpus_attention": rows.gpus_attention.to_numpy(),
                    "gpus_ffn": rows.gpus_ffn.to_numpy(),
                    "expert_tp": rows.expert_tp.to_numpy(),
                    "microbatches": rows.microbatches.to_numpy(),
                    "r": rows.r.to_numpy(),
                    "batch": chosen[:, 3].astype(int),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[list(FRONTIER_COLUMNS)]


def _no_config_message(target: Target, out: _Collector) -> str:
    slo = target.slo
    head = f"no AFD configuration meets p{slo.percentile} step time <= {slo.tpot_ms:g} ms"
    if out.closest is None:
        return head + " (no configuration fits the weights and one request's KV cache)"
    tau, where = out.closest
    return (
        f"{head}; the closest is r = {where['r']}, g_A = {where['gpus_attention']}, "
        f"g_F = {where['gpus_ffn']}, m = {where['microbatches']}, B = {where['batch']} at "
        f"{1e3 * tau:.1f} ms"
    )
