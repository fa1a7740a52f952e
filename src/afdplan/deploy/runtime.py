"""Runtime topology rules and launch files.

vLLM's AFD plugin (github.com/vllm-project/afd-plugin, targets vLLM 0.19.1) is configured
through ``--additional-config '{"afd": {...}}'`` on two ``vllm serve`` commands, one per
role, with the worker classes ``afd_plugin.v1.worker.AFDAttentionWorker`` and
``AFDFFNWorker``. Its ``p2pconnector`` needs ``num_attention_servers`` ≥
``num_ffn_servers`` and a multiple of it; dual-batch overlap (DBO) with CUDA graphs is
limited to two micro-batches. Files are templates: hosts, ports and the model path are
shell variables the operator sets.

SGLang's AFD plugin (sgl-afd-plugin, enabled by ``SGLANG_AFD_PLUGIN_ENABLED=1``) runs one
SGLang world over all nodes with data-parallel attention on every rank
(``--enable-dp-attention``, ``--dp-size`` = ``--tp-size`` = all GPUs) and gives each
launch, i.e. each node, a role with ``--afd-role attn|ffn``; it needs a DeepEP-class
``--moe-a2a-backend`` and refuses EPLB. So attention and FFN each take whole nodes, and the
attention runs TP 1.

FastAFD (github.com/hao-ai-lab/FastAFD) launches through its per-model preset scripts,
configured by environment: ``AFD_TOTAL_NODES`` nodes, of which exactly one (the last, or
``AFD_MLP_NODE``) runs the MLP with EP over its GPUs and the rest run attention ranks;
``PER_ATTN_GPU_BSZ`` requests per attention GPU; ``AFD_NUM_MB`` micro-batches (2 in every
published preset). So r fills whole nodes (trays on GB200) and g_F is one node.

AIConfigurator's ``cli estimate --estimate-mode afd`` counts whole nodes on each side, so
the matching command rounds the attention GPUs up to whole nodes and says so.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

from afdplan.calibrate.specs import HardwareSpec, ModelSpec
from afdplan.choices import Runtime

VLLM_AFD_MICROBATCHES = (1, 2)
VLLM_VERSION = "0.19.1"
FASTAFD_MICROBATCHES = 2


def violation(runtime: str, r: int, g_a: int, g_f: int, m: int, per_node: int) -> str | None:
    """Why ``runtime`` cannot launch this bundle, or None when it can (``per_node``: GPUs
    per node or tray of the hardware)."""
    attention, ffn = r * g_a, g_f
    if runtime == Runtime.vllm_afd:
        if m not in VLLM_AFD_MICROBATCHES:
            return f"vllm-afd runs 1 or 2 micro-batches (DBO), not {m}"
        if attention < ffn or attention % ffn:
            return (
                f"vllm-afd needs attention ranks ({attention}) >= FFN ranks ({ffn}) and a "
                "multiple of them"
            )
    elif runtime == Runtime.sglang:
        # --afd-role is set per node and every rank is a data-parallel attention slot.
        if m != 1:
            return f"sglang's AFD plugin steps the FFN in lockstep with attention (m = 1), not {m}"
        if g_a != 1:
            return f"sglang's AFD plugin runs data-parallel attention (TP 1), not TP {g_a}"
        if attention % per_node or ffn % per_node:
            return (
                f"sglang assigns roles per node: {attention} + {ffn} GPUs are not whole "
                f"{per_node}-GPU nodes"
            )
    elif runtime == Runtime.fastafd:
        if m != FASTAFD_MICROBATCHES:
            return f"FastAFD's presets run {FASTAFD_MICROBATCHES} micro-batches, not {m}"
        if ffn != per_node:
            return f"FastAFD runs the FFN (MLP) on exactly one {per_node}-GPU node, not {ffn} GPUs"
        if attention % per_node:
            return (
                f"FastAFD fills whole {per_node}-GPU nodes with attention; {attention} GPUs do not"
            )
    return None


def hf_id(model: ModelSpec) -> str:
    """The model's Hugging Face id where its source names one (presets and cached
    configs), else its name."""
    first = model.source.split(" ")[0] if model.source else ""
    return first if "/" in first and not first.endswith(".json") else model.name


def aiconfigurator_system(hw: HardwareSpec) -> str:
    """The aiconfigurator-core system name of ``hw`` (its own name where it has none)."""
    return hw.aiconfigurator_systems[0] if hw.aiconfigurator_systems else hw.name


def afd_config(role: str, r: int, g_a: int, g_f: int) -> str:
    """The plugin's ``additional_config`` as one JSON line; host and port are shell
    variables filled in when the script runs."""
    return json.dumps(
        {
            "afd": {
                "enabled": True,
                "role": role,
                "connector": "p2pconnector",
                "host": "${FFN_HOST}",
                "port": 0,
                "num_attention_servers": r * g_a,
                "num_ffn_servers": g_f,
            }
        }
    ).replace('"port": 0', '"port": ${AFD_PORT}')


def _serve(worker: str, args: list[str], config: str) -> str:
    return (
        f"AFD_CONFIG=$(cat <<EOF\n{config}\nEOF\n)\n"
        + " \\\n  ".join(
            [
                'vllm serve "$MODEL_PATH"',
                f"--worker-cls afd_plugin.v1.worker.{worker}",
                *args,
                '--additional-config "$AFD_CONFIG"',
            ]
        )
        + "\n"
    )


def vllm_afd_files(row: dict, model: ModelSpec) -> dict[str, str]:
    """File name → text of the vLLM afd-plugin launch templates for one bundle."""
    r, g_a, g_f, m, b = (
        int(row[k]) for k in ("r", "gpus_attention", "gpus_ffn", "microbatches", "batch")
    )
    header = (
        "#!/usr/bin/env bash\n"
        f"# afdplan deploy: {r} attention instances x TP{g_a} + FFN group of {g_f} GPUs, "
        f"B = {b}, m = {m}.\n"
        f"# vLLM {VLLM_VERSION} with vllm-project/afd-plugin; set the variables below.\n"
        "set -euo pipefail\n"
        'MODEL_PATH="${MODEL_PATH:?path or HF id of ' + hf_id(model) + '}"\n'
        'FFN_HOST="${FFN_HOST:?address of the first FFN node}"\n'
        'AFD_PORT="${AFD_PORT:-6239}"\n'
        "export VLLM_PLUGINS=afd\n"
        "unset VLLM_USE_V2_MODEL_RUNNER\n"
    )
    ep = ["--enable-expert-parallel"] if model.is_moe else []
    ffn_parallel = (
        [f"--data-parallel-size {g_f}", "--tensor-parallel-size 1"]
        if model.is_moe
        else ["--data-parallel-size 1", f"--tensor-parallel-size {g_f}"]
    )
    dbo = (
        ["--enable-dbo", "--dbo-decode-token-threshold 2", "--dbo-prefill-token-threshold 12"]
        if m == 2
        else []
    )
    ffn = (
        header
        + 'API_PORT="${API_PORT:-18001}"\n'
        + _serve(
            "AFDFFNWorker",
            [*ffn_parallel, *ep, '--port "$API_PORT"'],
            afd_config("ffn", r, g_a, g_f),
        )
    )
    attention = (
        header
        + 'API_PORT="${API_PORT:-18000}"\n'
        + _serve(
            "AFDAttentionWorker",
            [
                f"--data-parallel-size {r}",
                f"--tensor-parallel-size {g_a}",
                *ep,
                f"--max-num-seqs {b}",
                *dbo,
                '--port "$API_PORT"',
            ],
            afd_config("attention", r, g_a, g_f),
        )
    )
    return {"vllm-afd/ffn.sh": ffn, "vllm-afd/attention.sh": attention}


def aiconfigurator_command(
    row: dict, model: ModelSpec, hw: HardwareSpec, isl: float, osl: float
) -> str:
    """The matching single-point AIConfigurator AFD estimate (nodes rounded up)."""
    r, g_a, g_f, m, b = (
        int(row[k]) for k in ("r", "gpus_attention", "gpus_ffn", "microbatches", "batch")
    )
    per_node = hw.gpus_per_node
    a_nodes = math.ceil(r * g_a / per_node)
    f_nodes = math.ceil(g_f / per_node)
    notes = []
    if a_nodes * per_node != r * g_a:
        notes.append(
            f"# AIConfigurator counts whole {per_node}-GPU nodes: {r * g_a} attention GPUs "
            f"round up to {a_nodes} node(s) (r = {a_nodes * per_node // g_a})."
        )
    if f_nodes * per_node != g_f:
        notes.append(
            f"# The FFN group of {g_f} GPUs rounds up to {f_nodes} node(s); EP stays {g_f}."
        )
    args = [
        "aiconfigurator", "cli", "estimate",
        "--model", hf_id(model),
        "--estimate-mode", "afd",
        "--system", aiconfigurator_system(hw),
        "--backend", "vllm",
        "--isl", str(max(1, round(isl))),
        "--osl", str(max(1, round(osl))),
        "--n-a-nodes", str(a_nodes),
        "--n-f-nodes", str(f_nodes),
        "--a-tp-size", str(g_a),
        "--a-batch-size", str(b),
        "--f-moe-ep-size", str(g_f),
        "--num-microbatches", str(m),
        "--pipeline-model", "optimistic",
    ]  # fmt: skip
    body = " \\\n  ".join(
        shlex.join(args[i : i + 2]) if i else shlex.join(args[:3]) for i in _pairs(args)
    )
    return "#!/usr/bin/env bash\n" + "".join(n + "\n" for n in notes) + body + "\n"


def _pairs(args: list[str]) -> list[int]:
    """Start indices: the 3-word command, then each flag with its value."""
    return [0, *range(3, len(args), 2)]


def sglang_files(row: dict, model: ModelSpec, hw: HardwareSpec) -> dict[str, str]:
    """One script for every node; the node's rank picks its role."""
    r, g_f, b = (int(row[k]) for k in ("r", "gpus_ffn", "batch"))
    per_node = hw.gpus_per_node
    attention_nodes, ffn_nodes = r // per_node, g_f // per_node
    nodes, world = attention_nodes + ffn_nodes, r + g_f
    text = (
        "#!/usr/bin/env bash\n"
        f"# afdplan deploy: {r} data-parallel attention ranks on {attention_nodes} node(s) "
        f"(node ranks 0-{attention_nodes - 1}) + an FFN group of {g_f} GPUs on {ffn_nodes} "
        f"node(s); B = {b} sequences per attention rank.\n"
        "# SGLang with sgl-afd-plugin. Run on every node with its NODE_RANK, node 0 first.\n"
        "# Cap running requests at B per attention rank with SGLang's --max-running-requests\n"
        "# (check whether your SGLang version counts it per data-parallel rank or in total).\n"
        "set -euo pipefail\n"
        'MODEL_PATH="${MODEL_PATH:?path or HF id of ' + hf_id(model) + '}"\n'
        'NODE_RANK="${NODE_RANK:?0 to ' + str(nodes - 1) + '}"\n'
        'DIST_INIT_ADDR="${DIST_INIT_ADDR:?host:port of node 0}"\n'
        'PORT="${PORT:-30000}"\n'
        "export SGLANG_AFD_PLUGIN_ENABLED=1\n"
        f"if (( NODE_RANK < {attention_nodes} )); then ROLE=attn; else ROLE=ffn; fi\n"
        + " \\\n  ".join(
            [
                'sglang serve --model-path "$MODEL_PATH" --host 0.0.0.0 --port "$PORT"',
                f"--tp-size {world} --dp-size {world} --enable-dp-attention",
                f'--nnodes {nodes} --node-rank "$NODE_RANK" --dist-init-addr "$DIST_INIT_ADDR"',
                "--moe-a2a-backend deepep",
                '--afd-role "$ROLE"',
            ]
        )
        + "\n"
    )
    return {"sglang/node.sh": text}


def fastafd_files(row: dict, model: ModelSpec, hw: HardwareSpec) -> dict[str, str]:
    """The environment of FastAFD's preset scripts for this bundle."""
    r, g_a, m, b = (int(row[k]) for k in ("r", "gpus_attention", "microbatches", "batch"))
    per_node = hw.gpus_per_node
    nodes = r * g_a // per_node + 1
    text = (
        "#!/usr/bin/env bash\n"
        f"# afdplan deploy: {r} attention ranks (TP {g_a}) on {nodes - 1} node(s) + one "
        f"{per_node}-GPU MLP node; B = {b} per attention GPU, m = {m}.\n"
        "# FastAFD ships presets for Qwen3-235B-A22B-FP8, MiniMax-M2.5-FP8 and\n"
        "# Qwen3-30B-A3B under scripts/experiments/afd/; for another model adapt one.\n"
        "set -euo pipefail\n"
        'FASTAFD_DIR="${FASTAFD_DIR:?path of a FastAFD checkout}"\n'
        'PRESET="${PRESET:?a preset under scripts/experiments/afd/}"\n'
        'export MODEL_PATH="${MODEL_PATH:?local snapshot of ' + hf_id(model) + '}"\n'
        f"export AFD_TOTAL_NODES={nodes}\n"
        f"export AFD_GPUS_PER_NODE={per_node}\n"
        f"export AFD_NUM_MB={m}\n"
        f"export PER_ATTN_GPU_BSZ={b}\n"
        f"export AFD_ATTN_TP_SIZE={g_a}\n"
        "# optional: AFD_NODE_LIST=host0,...  AFD_MLP_NODE=<the MLP host>\n"
        'exec bash "$FASTAFD_DIR/$PRESET"\n'
    )
    return {"fastafd/launch.sh": text}


def write_launch_files(
    folder: Path,
    runtime: str,
    row: dict,
    model: ModelSpec,
    hw: HardwareSpec,
    isl: float,
    osl: float,
) -> list[Path]:
    """Write the chosen bundle's launch templates and AIConfigurator command; return paths."""
    files = {"aiconfigurator.sh": aiconfigurator_command(row, model, hw, isl, osl)}
    if runtime == Runtime.vllm_afd:
        files |= vllm_afd_files(row, model)
    elif runtime == Runtime.sglang:
        files |= sglang_files(row, model, hw)
    elif runtime == Runtime.fastafd:
        files |= fastafd_files(row, model, hw)
    written = []
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
        written.append(path)
    return written
