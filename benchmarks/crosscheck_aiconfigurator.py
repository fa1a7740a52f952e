"""Cross-check afdplan's AFD step model against NVIDIA AIConfigurator's (issue 8, item 6).

Run:  python benchmarks/crosscheck_aiconfigurator.py [--aiconfigurator PATH]

For a few DeepSeek-V3 bundles on H200 (fixed prompt and output lengths, as AIConfigurator
takes them), this runs ``aiconfigurator cli estimate --estimate-mode afd`` and prints its
per-layer attention, FFN and transfer times and its step time next to afdplan's: the
roofline anchored on the shipped measured set (what ``afdplan deploy`` uses) and the plain
roofline, both under AIConfigurator's own cycle model (``aic-optimistic``) and under
ping-pong. AIConfigurator is not a dependency: install it on its own (``pip install
aiconfigurator``, about 100 MB with its plotting stack); without it the script says so and
exits. Numbers it reports come from its measured kernel database, not from this project.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

from rich.console import Console
from rich.table import Table

from afdplan.bundle import Pipeline
from afdplan.calibrate.specs import load_hardware, load_model
from afdplan.deploy.anchor import resolve_anchor
from afdplan.deploy.runtime import aiconfigurator_command
from afdplan.deploy.search import bundle_times
from afdplan.theory.barrier import layered_times

ISL, OSL = 1155, 211  # the Azure conversation trace's mean prompt and output lengths
# (attention workers r, sequences per worker B, micro-batches m, attention TP g_A, FFN
# group g_F): whole 8-GPU nodes, as AIConfigurator counts them. The first four are TP-1
# attention ranks and one EP-8 FFN node; then TP-2 attention, and an EP-16 FFN group over
# two nodes (its expert all-to-all crosses the network).
BUNDLES = (
    (8, 128, 3, 1, 8),
    (16, 64, 3, 1, 8),
    (16, 128, 3, 1, 8),
    (24, 64, 4, 1, 8),
    (8, 128, 3, 2, 8),
    (16, 64, 3, 1, 16),
)
FIELDS = {
    "a_layer_ms": r"T_a_layer:\s+([\d.]+) ms",
    "f_layer_ms": r"T_f_layer:\s+([\d.]+) ms",
    "a2f_layer_ms": r"T_a2f_layer:\s+([\d.]+) ms",
    "step_ms": r"T_step:\s+([\d.]+) ms",
}


def theirs(exe: str, r: int, b: int, m: int, g_a: int, g_f: int) -> dict[str, float] | str:
    model, hw = load_model("deepseek-v3"), load_hardware("h200")
    row = {"r": r, "gpus_attention": g_a, "gpus_ffn": g_f, "microbatches": m, "batch": b}
    script = aiconfigurator_command(row, model, hw, ISL, OSL)
    args = " ".join(
        line.rstrip(" \\") for line in script.splitlines() if line.strip()[:1] not in "#"
    )
    argv = args.split()
    argv[0] = exe
    # The prefill phase it also estimates needs a layout that holds the weights.
    argv += ["--tp-size", "8", "--moe-ep-size", "8", "--moe-tp-size", "1"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    found = {k: re.search(p, res.stdout) for k, p in FIELDS.items()}
    if res.returncode != 0 or not all(found.values()):
        return (res.stderr.strip().splitlines() or ["no output"])[-1][:80]
    return {k: float(v.group(1)) for k, v in found.items()}  # type: ignore[union-attr]


def ours(r: int, b: int, m: int, g_a: int, g_f: int, anchored: bool, kind: str) -> dict[str, float]:
    model, hw = load_model("deepseek-v3"), load_hardware("h200")
    anchor = resolve_anchor(None, model, hw, hw) if anchored else None
    times, _ = bundle_times(model, hw, hw, g_a, g_f, r, anchor)
    pipe = Pipeline(kind, m, model.layers)
    lt = layered_times(pipe, times, b, r, ISL + OSL / 2, 0.0, 0.0)  # fixed lengths: no spread
    return {
        "a_layer_ms": 1e3 * float(lt.a_round),
        "f_layer_ms": 1e3 * float(lt.f),
        "a2f_layer_ms": 1e3 * float(lt.x),
        "step_ms": 1e3 * float(lt.step_time),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aiconfigurator", help="the aiconfigurator executable [on PATH]")
    args = parser.parse_args()
    exe = shutil.which(args.aiconfigurator or "aiconfigurator")
    console = Console()
    if args.aiconfigurator is not None and exe is None:
        print(f"error: {args.aiconfigurator}: not found (or not executable)", file=sys.stderr)
        raise SystemExit(2)
    if exe is None:
        console.print(
            "aiconfigurator is not installed (pip install aiconfigurator in a separate "
            "environment, then pass --aiconfigurator PATH); nothing to compare."
        )
        return
    table = Table(title=f"DeepSeek-V3 on H200, ISL {ISL}, OSL {OSL}; per layer in ms")
    for col in ("r", "B", "m", "g_A", "g_F", "source", "a", "f", "A→F", "step ms", "/ AIC"):
        table.add_column(col, justify="right")
    for r, b, m, g_a, g_f in BUNDLES:
        bundle = (str(r), str(b), str(m), str(g_a), str(g_f))
        ref = theirs(exe, r, b, m, g_a, g_f)
        if isinstance(ref, str):
            table.add_row(*bundle, "AIConfigurator", f"failed: {ref}")
            continue
        rows = [("AIConfigurator", ref)]
        for label, anchored, kind in (
            ("afdplan anchored, aic-optimistic", True, "aic-optimistic"),
            ("afdplan anchored, pingpong", True, "pingpong"),
            ("afdplan roofline, aic-optimistic", False, "aic-optimistic"),
        ):
            rows.append((label, ours(r, b, m, g_a, g_f, anchored, kind)))
        for label, v in rows:
            table.add_row(
                *bundle, label, f"{v['a_layer_ms']:.3f}", f"{v['f_layer_ms']:.3f}",
                f"{v['a2f_layer_ms']:.3f}", f"{v['step_ms']:.1f}",
                f"{v['step_ms'] / ref['step_ms']:.3f}",
            )  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
