"""The validation report: Markdown and a self-contained HTML page with figures.

Input is the JSON that ``afdplan validate --json`` writes (``afdplan.study``); every
number in the report is read from it, so the report and the raw results cannot disagree.
"""

from __future__ import annotations

import base64
import html
import math
from functools import partial
from pathlib import Path

import numpy as np

from afdplan.errors import require

RULE_NAMES = {
    "v1": "v1 (μ_P+μ_D, mean field, linear fit)",
    "theta": "θ, mean field, linear fit",
    "barrier": "θ + barrier, linear fit",
    "curves": "θ + barrier, measured curves",
}
RULE_STYLE = {
    "v1": ("tab:red", ":"),
    "theta": ("tab:orange", "--"),
    "barrier": ("tab:green", "-"),
    "curves": ("tab:purple", "-."),
}
REQUIRED_KEYS = ("meta", "cases", "workloads", "results", "summary")


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend, imported when a figure is drawn
    (it costs a second of start-up that printing a summary does not need)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def check_results(data: object, source: str) -> dict:
    """The parsed results, or a one-line error if it is not a validation JSON."""
    require(isinstance(data, dict), f"{source}: not a validation results object")
    missing = [k for k in REQUIRED_KEYS if k not in data]  # type: ignore[operator]
    require(not missing, f"{source}: not validation results (missing {', '.join(missing)})")
    require(bool(data["results"]), f"{source}: no results to report")  # type: ignore[index]
    return data  # type: ignore[return-value]


# --------------------------------------------------------------------- figures


def _layout(n: int) -> tuple[int, int]:
    cols = min(4, n)
    return math.ceil(n / cols), cols


def _group_axes(results: list[dict], title: str):
    rows, cols = _layout(len(results))
    plt = _pyplot()
    # At least wide enough for the title and the legend row when there are few panels.
    width = max(4.2 * cols, 13.0)
    fig, axes = plt.subplots(rows, cols, figsize=(width, 3.2 * rows), squeeze=False)
    fig.suptitle(title, fontsize=11 if cols > 2 else 10)
    for ax in axes.flat[len(results) :]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _mark_rules(ax, res: dict) -> None:
    lo, hi = res["r_sim_band"]
    ax.axvspan(lo - 0.5, hi + 0.5, color="grey", alpha=0.15, lw=0)
    shown = set()
    for rule, key in (
        ("v1", "r_v1"),
        ("theta", "r_theta"),
        ("barrier", "r_barrier"),
        ("curves", "r_curves"),
    ):
        r = res.get(key)
        if r is None or (rule == "curves" and not res["honest"]) or (r, rule) in shown:
            continue
        colour, style = RULE_STYLE[rule]
        ax.axvline(r, color=colour, ls=style, lw=1.2)
        shown.add((r, rule))


def figure_throughput(
    results: list[dict], case: str, path: Path, objective: str = "instance"
) -> None:
    fig, axes = _group_axes(
        results,
        f"{case}: simulated throughput per {'GPU' if objective == 'gpu' else objective} vs r "
        "(band: indistinguishable from the optimum; lines: the rules' picks)",
    )
    for ax, res in zip(axes, results, strict=False):
        r = np.array([row["r"] for row in res["curve"]])
        y = np.array([row["throughput"] for row in res["curve"]])
        ci = np.nan_to_num(np.array([row["throughput_ci95"] for row in res["curve"]]))
        ax.errorbar(r, y, yerr=ci, fmt="o-", ms=3, lw=1, color="tab:blue", capsize=2)
        _mark_rules(ax, res)
        ax.set_title(f"{res['workload']}, B = {res['batch']}", fontsize=9)
        ax.set_xlabel("r")
        ax.set_ylabel(f"tokens / time / {'GPU' if objective == 'gpu' else objective}")
    _legend(fig)
    _save(fig, path)


def _legend(fig) -> None:
    plt = _pyplot()
    handles = [
        plt.Line2D([], [], color=c, ls=s, label=RULE_NAMES[k]) for k, (c, s) in RULE_STYLE.items()
    ]
    handles.append(
        plt.Rectangle((0, 0), 1, 1, color="grey", alpha=0.15, label="simulated optimum band")
    )
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8, frameon=False)


def _save(fig, path: Path) -> None:
    # Fixed margins in inches: tight_layout measured every label of every panel and took
    # about half of the report's time.
    w, h = fig.get_size_inches()
    fig.subplots_adjust(
        left=0.8 / w, right=1 - 0.2 / w, top=1 - 0.6 / h, bottom=0.9 / h, wspace=0.35, hspace=0.6
    )
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)


def figure_idle(results: list[dict], case: str, path: Path) -> None:
    fig, axes = _group_axes(results, f"{case}: idle fraction of the Attention and FFN devices vs r")
    for ax, res in zip(axes, results, strict=False):
        r = [row["r"] for row in res["curve"]]
        ax.plot(r, [row["idle_attention"] for row in res["curve"]], "o-", ms=3, label="Attention")
        ax.plot(r, [row["idle_ffn"] for row in res["curve"]], "s-", ms=3, label="FFN")
        _mark_rules(ax, res)
        ax.set_ylim(0, 1)
        ax.set_title(f"{res['workload']}, B = {res['batch']}", fontsize=9)
        ax.set_xlabel("r")
        ax.legend(fontsize=7)
    _save(fig, path)


def figure_tpot(results: list[dict], case: str, path: Path) -> None:
    fig, axes = _group_axes(results, f"{case}: time per output token vs r (p50 and p99)")
    for ax, res in zip(axes, results, strict=False):
        r = [row["r"] for row in res["curve"]]
        ax.plot(r, [row["tpot_p50_s"] for row in res["curve"]], "o-", ms=3, label="p50")
        ax.plot(r, [row["tpot_p99_s"] for row in res["curve"]], "^-", ms=3, label="p99")
        _mark_rules(ax, res)
        ax.set_title(f"{res['workload']}, B = {res['batch']}", fontsize=9)
        ax.set_xlabel("r")
        ax.legend(fontsize=7)
    _save(fig, path)


def figure_step_hist(results: list[dict], case: str, path: Path) -> None:
    fig, axes = _group_axes(
        results, f"{case}: distribution of step times at the recommended r (dashed: predicted E[τ])"
    )
    for ax, res in zip(axes, results, strict=False):
        hist = res.get("step_hist")
        if hist:
            edges = np.array(hist["edges"])
            ax.stairs(hist["counts"], edges, fill=True, alpha=0.6)
        ax.axvline(res["predicted_step_time_s"], color="k", ls="--", lw=1)
        ax.set_title(f"{res['workload']}, B = {res['batch']}, r = {res['r_barrier']}", fontsize=9)
        ax.set_xlabel("step time")
    _save(fig, path)


def figure_theta(workloads: list[dict], path: Path) -> None:
    names = [w["name"] for w in workloads]
    x = np.arange(len(names))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names)), 3.6))
    ax.bar(x - 0.2, [w["load_v1"] for w in workloads], 0.4, label="μ_P + μ_D (v1)")
    theta_err = [1.96 * (w["theta_se"] or 0.0) for w in workloads]
    ax.bar(
        x + 0.2, [w["theta"] for w in workloads], 0.4, yerr=theta_err, label="θ (renewal–reward)"
    )
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("KV tokens per slot")
    ax.set_title("Per-slot stationary load: θ vs v1's μ_P + μ_D")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)


# ---------------------------------------------------------------------- tables


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def summary_table(summary: list[dict], short: bool = False) -> list[list[str]]:
    """Per case kind and rule; ``short`` uses the rule keys instead of their names."""
    head = [
        "cases",
        "rule",
        "n",
        "max error",
        "mean error",
        "≤10%",
        "≤5%",
        "in band",
        "max regret",
        "mean regret",
    ]
    rows = [head]
    for s in summary:
        rows.append(
            [
                s["kind"],
                s["rule"] if short else RULE_NAMES[s["rule"]],
                str(s["n"]),
                _pct(s["max_error"]),
                _pct(s["mean_error"]),
                _pct(s["within_10pct"]),
                _pct(s["within_5pct"]),
                _pct(s["in_band"]),
                _pct(s["max_regret"]),
                _pct(s["mean_regret"]),
            ]
        )
    return rows


def detail_table(results: list[dict]) -> list[list[str]]:
    head = [
        "case",
        "workload",
        "B",
        "regime",
        "r* v1",
        "r* θ",
        "v1",
        "θ",
        "barrier",
        "curves",
        "sim (band)",
        "regret barrier",
        "regret curves",
    ]
    rows = [head]
    for r in results:
        rows.append(
            [
                r["case"],
                r["workload"],
                str(r["batch"]),
                r["regime"],
                f"{r['r_star_v1']:.2f}",
                f"{r['r_star']:.2f}",
                str(r["r_v1"]),
                str(r["r_theta"]),
                str(r["r_barrier"]),
                str(r["r_curves"]) if r["honest"] else "=",
                f"{r['r_sim']} ({r['r_sim_band'][0]}–{r['r_sim_band'][1]})",
                _pct(r["regret"]["barrier"]),
                _pct(r["regret"]["curves"]),
            ]
        )
    return rows


def baseline_table(results: list[dict]) -> list[list[str]]:
    head = ["case", "workload", "B", "at", "r", "throughput / optimum", "idle A", "idle F"]
    rows = [head]
    for r in results:
        for label, b in r["baselines"].items():
            rows.append(
                [
                    r["case"],
                    r["workload"],
                    str(r["batch"]),
                    label,
                    str(b["r"]),
                    _pct(b["throughput_ratio"]),
                    _pct(b["idle_attention"]),
                    _pct(b["idle_ffn"]),
                ]
            )
    return rows


def v1_vs_theta(results: list[dict]) -> list[list[str]]:
    """Results where v1's load μ_P + μ_D costs throughput and θ does not."""
    head = [
        "case",
        "workload",
        "B",
        "θ",
        "μ_P+μ_D",
        "r v1",
        "r θ",
        "r sim",
        "regret v1",
        "regret θ",
    ]
    rows = [head]
    for r in results:
        if r["regret"]["v1"] > r["regret"]["theta"] + 0.002 and r["band_errors"]["v1"] > 0:
            rows.append(
                [
                    r["case"],
                    r["workload"],
                    str(r["batch"]),
                    f"{r['theta']:.0f}",
                    f"{r['load_v1']:.0f}",
                    str(r["r_v1"]),
                    str(r["r_theta"]),
                    str(r["r_sim"]),
                    _pct(r["regret"]["v1"]),
                    _pct(r["regret"]["theta"]),
                ]
            )
    return rows


def _markdown_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(out)


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ---------------------------------------------------------------------- report


def write_report(data: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and the PNG figures into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = _per_pipeline(data)
    results = data["results"]
    objective = data["meta"].get("objective", "instance")
    figures: list[tuple[str, str]] = []  # (title, file)
    figure_theta(data["workloads"], out_dir / "theta.png")
    figures.append(("θ vs μ_P + μ_D per workload", "theta.png"))
    for i, case in enumerate(dict.fromkeys(r["case"] for r in results)):
        subset = [r for r in results if r["case"] == case]
        for kind, draw in (
            ("throughput", partial(figure_throughput, objective=objective)),
            ("idle", figure_idle),
            ("tpot", figure_tpot),
            ("steps", figure_step_hist),
        ):
            name = f"case{i}_{kind}.png"
            draw(subset, case, out_dir / name)
            figures.append((f"{case}: {kind}", name))
    sections = _sections(data)
    md = _render_markdown(data, sections, figures)
    (out_dir / "report.md").write_text(md)
    page = _render_html(data, sections, figures, out_dir)
    (out_dir / "report.html").write_text(page)
    return out_dir / "report.md", out_dir / "report.html"


def pipeline_label(result: dict) -> str:
    """``overlap``, ``serial`` or ``pingpong m=2`` (results from before pipelines: overlap)."""
    kind, m = result.get("pipeline", "overlap"), result.get("microbatches", 1)
    return kind if m == 1 else f"{kind} m={m}"


def _per_pipeline(data: dict) -> dict:
    """With several pipelines in one study, each (case, pipeline) reads as a case of its own
    in the tables and figures."""
    if len({pipeline_label(r) for r in data["results"]}) < 2:
        return data
    results = [dict(r, case=f"{r['case']} · {pipeline_label(r)}") for r in data["results"]]
    return dict(data, results=results)


def varies(deployments: list[dict]) -> bool:
    """Whether a study ran more than one pipeline (then r* by pipeline and FFN group is
    worth a table of its own)."""
    return len({pipeline_label(d) for d in deployments}) > 1


def deployment_rows(rows: list[dict]) -> list[list[str]]:
    """The ``deployments`` table of a study run over several pipelines."""
    head = [
        "case",
        "workload",
        "B",
        "g_F",
        "pipeline",
        "barrier",
        "curves",
        "sim (band)",
        "best",
        "regret curves",
        "binding",
        "FFN idle thy/sim",
        "step error",
        "closed form vs recurrence",
    ]
    table = [head]
    for row in rows:
        lo, hi = row["r_sim_band"]
        table.append(
            [
                row["case"],
                row["workload"],
                str(row["batch"]),
                f"{row['gpus_ffn']:g}",
                pipeline_label(row),
                str(row["r_barrier"]),
                str(row["r_curves"]),
                f"{row['r_sim']} ({lo}–{hi})",
                f"{row['best_objective']:,.0f}",
                _pct(row["regret_curves"]),
                row["binding"],
                f"{_pct(row['predicted_idle_ffn'])} / {_pct(row['simulated_idle_ffn'])}",
                f"{100 * row['step_time_error']:+.1f}%",
                "—" if row["closed_form_gap"] is None else f"{100 * row['closed_form_gap']:+.2f}%",
            ]
        )
    return table


def _sections(data: dict) -> list[tuple[str, str, list[list[str]] | None]]:
    """(title, text, table) blocks shared by both renderings."""
    misses = [r for r in data["results"] if r.get("diagnosis")]
    miss_rows = [["case", "workload", "B", "why"]] + [
        [r["case"], r["workload"], str(r["batch"]), r["diagnosis"]] for r in misses
    ]
    cases = [["case", "what it checks"]] + [[c["name"], c["description"]] for c in data["cases"]]
    skipped = data.get("skipped") or []
    skipped_text = (
        "Skipped: " + "; ".join(f"{s['case']} ({s['reason']})" for s in skipped) + "."
        if skipped
        else ""
    )
    v1_rows = v1_vs_theta(data["results"])
    infeasible = data.get("infeasible") or []
    extra = []
    if varies(data.get("deployments") or []):
        extra.append(
            (
                "How r* moves with the pipeline and the FFN group",
                "Per configuration: the barrier rule on the linear fit and on the measured "
                "curves, the simulated optimum (exact recurrence) with its band and the "
                "simulated objective there (tokens per time unit per instance or GPU), the "
                "throughput lost by following the curves rule, the stage that binds at the "
                "recommendation, the FFN's idle share predicted and simulated, the predicted "
                "step time's error against the simulation, and the closed form's mean step "
                "time against the exact recurrence's in the same simulation (ping-pong).",
                deployment_rows(data["deployments"]),
            )
        )
    if infeasible:
        extra.append(
            (
                "Not scored: B above the KV capacity",
                "afdplan plan refuses these B for memory (B·θ + 3σ above the case's KV "
                "capacity), so the study neither simulates nor scores them.",
                [["case", "workload", "B", "why"]]
                + [[i["case"], i["workload"], str(i["batch"]), i["reason"]] for i in infeasible],
            )
        )
    return [
        (
            "Setup",
            setup_text(data, skipped_text),
            cases,
        ),
        ("Summary", "Per case kind and rule.", summary_table(data["summary"])),
        *extra,
        (
            "Where v1's μ_P + μ_D errs and θ fixes it",
            "Configurations where v1's load costs throughput that the θ-based rule does not lose "
            "(v1 outside the optimum band)."
            if len(v1_rows) > 1
            else "No configuration in this run where v1 loses throughput that θ keeps.",
            v1_rows,
        ),
        (
            "Misses and why",
            "Where the recommended rule (θ + barrier on the linear fit) is outside "
            "the optimum band or loses more than the regret threshold; the cause is read off the "
            "simulation at its optimum."
            if misses
            else "No misses.",
            miss_rows if misses else None,
        ),
        ("All configurations", "", detail_table(data["results"])),
        ("Idle time at the recommendation vs fixed baselines", "", baseline_table(data["results"])),
    ]


def setup_text(data: dict, skipped_text: str) -> str:
    meta, grid = data["meta"], data["meta"]["grid"]
    pipelines = ", ".join(dict.fromkeys(pipeline_label(r) for r in data["results"]))
    return (
        f"{len(data['results'])} configurations (cases × workloads × B = {grid['batches']} × "
        f"pipelines: {pipelines}); objective: tokens/s per "
        f"{ {'gpu': 'GPU'}.get(meta.get('objective', 'instance'), 'instance') }; "
        f"{grid['seeds']} seeds per r, at least {grid['requests']:,} requests and "
        f"{grid['min_steps']:,} steps per simulation; {meta['simulations']:,} simulations in "
        f"{meta['runtime_s']:.0f} s. Error = |r_rule − r_sim| / r_sim against the simulated "
        "argmax; 'in band' = the rule's r is statistically indistinguishable from the "
        "optimum (paired per-seed difference within its 95% CI); regret = 1 − Θ(r_rule)/"
        "Θ(r_sim). A rule misses when it is outside the band or loses more than "
        f"{_pct(meta['miss_regret'])} throughput. {skipped_text}"
    )


def _render_markdown(data: dict, sections, figures) -> str:
    parts = ["# afdplan validation report", ""]
    for title, text, table in sections:
        parts += [f"## {title}", "", text, ""]
        if table is not None and len(table) > 1:
            parts += [_markdown_table(table), ""]
    parts += ["## Figures", ""]
    parts += [f"![{title}]({file})\n" for title, file in figures]
    return "\n".join(parts)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;
padding:3px 6px;text-align:left}th{background:#f3f3f3}img{max-width:100%}"""


def _render_html(data: dict, sections, figures, out_dir: Path) -> str:
    body = ["<h1>afdplan validation report</h1>"]
    for title, text, table in sections:
        body.append(f"<h2>{html.escape(title)}</h2><p>{html.escape(text)}</p>")
        if table is not None and len(table) > 1:
            body.append(_html_table(table))
    body.append("<h2>Figures</h2>")
    for title, file in figures:
        encoded = base64.b64encode((out_dir / file).read_bytes()).decode()
        body.append(
            f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' "
            f"src='data:image/png;base64,{encoded}'>"
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>afdplan validation</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>"
    )
