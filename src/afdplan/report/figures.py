"""Matplotlib figures (Agg backend: files only, no screen)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from afdplan.calibrate.fit import Fit


def plot_calibration(frame: pd.DataFrame, fits: dict[str, Fit], path: str | Path) -> None:
    """Measured points against each fitted line, one panel per stage (log x: shows knees)."""
    stages = [s for s in ("attention", "attention_dense", "ffn", "comm") if s in fits]
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 4), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        rows = frame[frame["op"] == stage]
        fit = fits[stage]
        if stage == "attention":
            for b, group in rows.groupby("batch"):
                x = group["kv_tokens"].to_numpy(float)
                order = np.argsort(x)
                line = ax.plot(x[order], group["seconds"].to_numpy(float)[order] * 1e3, "o", ms=3)
                pred = fit.coef["alpha"] * x + fit.coef.get("gamma", 0.0) * b + fit.coef["beta"]
                ax.plot(x[order], pred[order] * 1e3, "-", color=line[0].get_color(), lw=1)
            ax.set_xlabel("KV tokens in the batch (points: one colour per B)")
        else:
            x = rows["tokens"].to_numpy(float)
            order = np.argsort(x)
            ax.plot(
                x[order], rows["seconds"].to_numpy(float)[order] * 1e3, "o", ms=3, label="measured"
            )
            grid = np.geomspace(max(x.min(), 1.0), x.max(), 200)
            ax.plot(grid, (fit.coef["alpha"] * grid + fit.coef["beta"]) * 1e3, "-", label="fit")
            ax.set_xlabel("tokens")
            ax.legend()
        if fit.holds_from is not None:
            ax.axvline(fit.holds_from, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("ms per decode step")
        ax.set_title(f"{stage}: R²={fit.r2:.3f}, max err {fit.max_rel_residual:.0%}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_frontier(frontier: pd.DataFrame, chosen: dict, title: str, path: str | Path) -> None:
    """Tokens/s per GPU against tokens/s per user, one frontier per family (AFD,
    colocated), with the chosen configuration marked."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for family, part in frontier.groupby("family", sort=False):
        part = part.sort_values("throughput_per_user")
        ax.step(part.throughput_per_user, part.throughput_per_gpu, where="post", label=family)
    ax.plot(
        [chosen["throughput_per_user"]],
        [chosen["throughput_per_gpu"]],
        "k*",
        markersize=12,
        label=f"chosen: r={chosen['r']}, B={chosen['batch']}, m={chosen['microbatches']}",
    )
    ax.set_xscale("log")
    ax.set_xlabel("tokens/s per user (1 / mean step time)")
    ax.set_ylabel("tokens/s per GPU")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_queue(result, title: str, path: str | Path) -> None:
    """Requests queued and in the system, and KV tokens per worker, over time (seconds
    since the first arrival) of one open-system run."""
    ev = result.events
    t = ev["time"] - ev["time"][0]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    top.step(t, ev["in_system"], where="post", label="in the system", lw=0.8)
    top.step(t, ev["queued"], where="post", label="waiting", lw=0.8)
    top.set_ylabel("requests")
    top.legend(fontsize=8)
    top.set_title(title, fontsize=10)
    bottom.step(t, ev["kv_tokens"] / result.fleet.workers, where="post", lw=0.8)
    if result.fleet.kv_capacity_tokens:
        bottom.axhline(result.fleet.kv_capacity_tokens, color="k", ls="--", lw=0.8, label="KV cap")
        bottom.legend(fontsize=8)
    bottom.set_ylabel("KV tokens per worker")
    bottom.set_xlabel("seconds")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
