"""Runtime topology rules and launch files, for the release a profile pins
(``afdplan.deploy.profiles``; the facts below cite the source at that commit).

vLLM's AFD plugin (vllm-project/afd-plugin) is configured through ``--additional-config
'{"afd": {...}}'`` on one ``vllm serve`` per role; the plugin picks the role's worker
itself. Its ``P2pNcclAFDConnector`` numbers FFN ranks first and needs
``num_attention_ranks`` (attention DP x TP) >= ``num_ffn_ranks`` and a multiple of it;
CUDA graphs run ``FULL_DECODE_ONLY`` and dual-batch overlap (DBO) with graphs is limited
to two micro-batches, set on both roles as its recipes do. A role wider than a node is
launched as vLLM's multi-node data parallelism: one ``vllm serve`` per node, the first
with the API server, the rest ``--headless`` from their start rank (vLLM
docs/serving/data_parallel_deployment.md).

SGLang's AFD plugin (``SGLANG_AFD_PLUGIN_ENABLED=1``) runs one SGLang world over all nodes
with data-parallel attention on every rank (it requires ``--enable-dp-attention``, a DP
size above one and more than one node) and gives each launch, i.e. each node, a role
with ``--afd-role attn|ffn``; it accepts only the round-robin, total-requests and
total-tokens load balancers.

FastAFD launches through its per-model preset scripts, configured by environment:
``AFD_TOTAL_NODES`` trays of which the FFN (MLP) takes ``AFD_MLP_EP_SIZE`` GPUs on whole
trays and attention the rest, ``PER_ATTN_GPU_BSZ`` requests per attention DP lane (what
afdplan calls B, whatever the lane's TP), ``AFD_NUM_MB`` = 2, and the workload's
``PROMPT_LEN``/``MAX_TOKENS``/``MINISGL_MAX_SEQ_LEN``.

AIConfigurator's ``cli estimate --estimate-mode afd`` counts whole nodes on each side, so
the matching command rounds the attention GPUs up to whole nodes and says so.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

from afdplan.calibrate.specs import HardwareSpec, ModelSpec
from afdplan.deploy.profiles import RuntimeProfile
from afdplan.errors import require
from afdplan.timing import Mtp

AFD_PORT = 6239  # the plugin's recipes use it for the connector's rendezvous
SEQ_LEN_MARGIN = 64  # FastAFD's presets: MINISGL_MAX_SEQ_LEN = PROMPT_LEN + 64
GRAPH_BUCKETS = (8, 16, 32, 48, 64)  # FastAFD's default decode-graph batches


def _exports(profile: RuntimeProfile) -> str:
    """The environment the release's launch needs, as ``export`` lines."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in profile.env.items())


def violation(
    profile: RuntimeProfile | None,
    r: int,
    g_a: int,
    g_f: int,
    m: int,
    per_node: int,
    expert_tp: int = 1,
) -> str | None:
    """Why the release ``profile`` pins cannot launch this bundle, or None when it can
    (``per_node``: GPUs per node or tray of the hardware; ``expert_tp``: the GPUs each FFN
    expert is split over; None profile: no rules)."""
    if profile is None:
        return None
    attention, ffn, name = r * g_a, g_f, profile.label
    if m not in profile.microbatches:
        return f"{name} runs {' or '.join(map(str, profile.microbatches))} micro-batches, not {m}"
    if profile.attention_tp is not None and g_a not in profile.attention_tp:
        return f"{name} runs attention TP {', '.join(map(str, profile.attention_tp))}, not {g_a}"
    if profile.ffn_ep is not None and ffn not in profile.ffn_ep:
        return f"{name} runs FFN groups of {', '.join(map(str, profile.ffn_ep))} GPUs, not {ffn}"
    if profile.ffn_expert_tp is not None and expert_tp not in profile.ffn_expert_tp:
        allowed = ", ".join(map(str, profile.ffn_expert_tp))
        return f"{name} splits an FFN expert over {allowed} GPU(s), not {expert_tp}"
    if profile.runtime == "vllm-afd":
        if attention < ffn or attention % ffn:
            return (
                f"{name} needs attention ranks ({attention}) >= FFN ranks ({ffn}) and a "
                "multiple of them"
            )
        if g_a > per_node or per_node % g_a:
            return f"{name} keeps a TP group inside one {per_node}-GPU node: TP {g_a} does not fit"
    elif profile.runtime in ("sglang", "fastafd"):
        # roles are given per node (SGLang) or per tray (FastAFD)
        if attention % per_node or ffn % per_node:
            return (
                f"{name} assigns roles per {per_node}-GPU node: {attention} attention + "
                f"{ffn} FFN GPUs are not whole nodes"
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


def afd_section(role: str, r: int, g_a: int, g_f: int) -> dict:
    """The plugin's ``{"afd": {...}}`` section for one role: the keys of its ``AFDConfig``
    (the pinned schema checks them); the host is filled in by the script."""
    return {
        "afd": {
            "role": role,
            "connector": "P2pNcclAFDConnector",
            "host": "AFD_HOST",
            "port": AFD_PORT,
            "num_attention_ranks": r * g_a,
            "num_ffn_ranks": g_f,
        }
    }


def _vllm_role(
    role: str, dp: int, tp: int, per_node: int, args: list[str], section: dict | None
) -> str:
    """One role's script: ``vllm serve`` on each of its nodes (NODE_RANK picks the node);
    ``section``: the AFD plugin's config (None: plain vLLM, colocated decode)."""
    local = per_node // tp  # DP ranks per node
    nodes = math.ceil(dp / local)
    lines = []
    if section is not None:
        config = json.dumps(section).replace('"AFD_HOST"', '"${AFD_HOST}"')
        lines.append(f'AFD_CONFIG="$(cat <<EOF\n{config}\nEOF\n)"')
    serve = ['vllm serve "$MODEL_PATH"', f"--data-parallel-size {dp}",
             f"--tensor-parallel-size {tp}", *args]  # fmt: skip
    if nodes > 1:
        lines += [
            f'NODE_RANK="${{NODE_RANK:?0 to {nodes - 1}: this {role} node (0 runs the API '
            'server; start it first)}"',
            'DP_HEAD="${DP_HEAD:?address of node 0 of this role}"',
            'DP_RPC_PORT="${DP_RPC_PORT:-13345}"',
            f"START=$(( NODE_RANK * {local} ))",
            f"LOCAL=$(( {dp} - START < {local} ? {dp} - START : {local} ))",
            "HEADLESS=()",
            '(( NODE_RANK == 0 )) || HEADLESS=(--headless --data-parallel-start-rank "$START")',
        ]
        serve += ['--data-parallel-size-local "$LOCAL"', '--data-parallel-address "$DP_HEAD"',
                  '--data-parallel-rpc-port "$DP_RPC_PORT"', '"${HEADLESS[@]}"']  # fmt: skip
    if section is not None:
        serve.append('--additional-config "$AFD_CONFIG"')
    return "".join(line + "\n" for line in lines) + " \\\n  ".join(serve) + "\n"


def vllm_afd_files(
    row: dict, model: ModelSpec, hw: HardwareSpec, profile: RuntimeProfile
) -> dict[str, str]:
    """File name → text of the vLLM afd-plugin launch scripts for one bundle, one per role;
    a role wider than a node runs its script once per node with NODE_RANK set."""
    r, g_a, g_f, m, b = (
        int(row[k]) for k in ("r", "gpus_attention", "gpus_ffn", "microbatches", "batch")
    )
    per_node = hw.gpus_per_node
    pin = f"{profile.repository}/tree/{profile.commit}"
    common = _decode_flags(b, m)
    files = {}
    for role, dp, tp, port in (("attention", r, g_a, 18000), ("ffn", g_f, 1, 18001)):
        nodes = math.ceil(dp * tp / per_node)
        header = (
            "#!/usr/bin/env bash\n"
            f"# afdplan deploy: {r} attention instances x TP{g_a} + an FFN group of {g_f} "
            f"GPUs (EP), B = {b}, m = {m}. This is the {role} role: {dp * tp} GPUs on "
            f"{nodes} node(s).\n"
            f"# Targets {profile.label}: {pin} with {profile.engine}.\n"
            "# Send requests to the attention role's node 0 only.\n"
            "set -euo pipefail\n"
            'MODEL_PATH="${MODEL_PATH:?path or HF id of ' + hf_id(model) + '}"\n'
            'AFD_HOST="${AFD_HOST:?address of FFN node 0 (rank 0 of the AFD P2P world)}"\n'
            f'API_PORT="${{API_PORT:-{port}}}"\n'
            + _exports(profile)
        )
        files[f"vllm-afd/{role}.sh"] = header + _vllm_role(
            role, dp, tp, per_node, [*common, '--port "$API_PORT"'],
            afd_section(role, r, g_a, g_f),
        )  # fmt: skip
    return files


def _decode_flags(b: int, m: int) -> list[str]:
    """Expert parallelism, B sequences per rank, decode CUDA graphs at B, and DBO for two
    micro-batches (the afd-plugin's recipes set these on both roles)."""
    flags = [
        "--enable-expert-parallel",
        f"--max-num-seqs {b}",
        f"--max-cudagraph-capture-size {b}",
        "--compilation-config '"
        + json.dumps({"cudagraph_mode": "FULL_DECODE_ONLY", "cudagraph_capture_sizes": [b]})
        + "'",
    ]
    if m == 2:
        flags += ["--enable-dbo", "--dbo-decode-token-threshold 2",
                  "--dbo-prefill-token-threshold 12"]  # fmt: skip
    return flags


def colocated_files(row: dict, model: ModelSpec, hw: HardwareSpec) -> dict[str, str]:
    """Plain vLLM for the colocated decode the search compared against. An MoE model: one
    group of G GPUs, data-parallel attention on each with the MoE over all (expert
    parallel, or without --enable-expert-parallel every expert split over the group),
    multi-node data parallelism past one node. A dense model: one tensor-parallel instance
    of t GPUs (run as many as the GPUs allow; they are independent). B sequences per GPU
    or instance, DBO when m = 2."""
    g, t, m, b, split = (
        int(row[k]) for k in ("gpus_ffn", "gpus_attention", "microbatches", "batch", "expert_tp")
    )
    require(
        split in (1, g),
        f"plain vLLM runs an MoE expert parallel or split over the whole group, not experts "
        f"split over {split} of {g} GPUs",
    )
    flags = _decode_flags(b, m)
    if model.is_moe:
        nodes = math.ceil(g / hw.gpus_per_node)
        attention = "data-parallel attention" if t == 1 else f"{g // t} TP-{t} attention ranks"
        moe = "expert-parallel MoE"
        if split > 1:  # vLLM splits every expert over the group unless told expert parallel
            flags = [f for f in flags if f != "--enable-expert-parallel"]
            moe = f"every expert split over the {g} GPUs"
        what = (
            f"{g} GPUs on {nodes} node(s) as one group: {attention}, {moe}, "
            f"B = {b} per {'GPU' if t == 1 else 'rank'}"
        )
        body = _vllm_role("colocated", g // t, t, hw.gpus_per_node,
                          [*flags, '--port "$API_PORT"'], None)  # fmt: skip
    else:
        what = f"one tensor-parallel instance of {t} GPU(s), B = {b}; replicate it per {t} GPUs"
        flags = [f for f in flags if f != "--enable-expert-parallel"]
        body = " \\\n  ".join(['vllm serve "$MODEL_PATH"', f"--tensor-parallel-size {t}",
                                *flags, '--port "$API_PORT"']) + "\n"  # fmt: skip
    header = (
        "#!/usr/bin/env bash\n"
        f"# afdplan deploy: colocated decode, {what}, m = {m}.\n"
        "# Plain vLLM (no AFD plugin); multi-node flags as in vLLM's data-parallel\n"
        "# deployment guide. Send requests to node 0.\n"
        "set -euo pipefail\n"
        'MODEL_PATH="${MODEL_PATH:?path or HF id of ' + hf_id(model) + '}"\n'
        'API_PORT="${API_PORT:-8000}"\n'
    )
    return {"colocated/vllm.sh": header + body}


def aiconfigurator_command(
    row: dict, model: ModelSpec, hw: HardwareSpec, isl: float, osl: float, mtp: Mtp | None = None
) -> str:
    """The matching single-point AIConfigurator AFD estimate (nodes rounded up; with
    ``mtp``, its ``--nextn`` and ``--nextn-accepted``)."""
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
    split = int(row.get("expert_tp", 1))
    if split > 1:
        notes.append(
            f"# AIConfigurator's AFD estimate takes an expert-parallel FFN group only "
            f"(--f-moe-ep-size): this prices EP {g_f}, not the experts split over {split}."
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
    if mtp is not None:
        args += ["--nextn", str(mtp.depth), "--nextn-accepted", f"{mtp.accepted:g}"]
    body = " \\\n  ".join(
        shlex.join(args[i : i + 2]) if i else shlex.join(args[:3]) for i in _pairs(args)
    )
    return "#!/usr/bin/env bash\n" + "".join(n + "\n" for n in notes) + body + "\n"


def _pairs(args: list[str]) -> list[int]:
    """Start indices: the 3-word command, then each flag with its value."""
    return [0, *range(3, len(args), 2)]


def sglang_files(
    row: dict, model: ModelSpec, hw: HardwareSpec, profile: RuntimeProfile
) -> dict[str, str]:
    """One script for every node; the node's rank picks its role (``--afd-role`` is per
    launch, and every launch joins one SGLang world of DP-attention ranks)."""
    r, g_f, b = (int(row[k]) for k in ("r", "gpus_ffn", "batch"))
    per_node = hw.gpus_per_node
    attention_nodes, ffn_nodes = r // per_node, g_f // per_node
    nodes, world = attention_nodes + ffn_nodes, r + g_f
    text = (
        "#!/usr/bin/env bash\n"
        f"# afdplan deploy: {r} data-parallel attention ranks on {attention_nodes} node(s) "
        f"(node ranks 0-{attention_nodes - 1}) + an FFN group of {g_f} GPUs on {ffn_nodes} "
        f"node(s); B = {b} sequences per attention rank.\n"
        f"# Targets {profile.label}: {profile.repository}/tree/{profile.commit}.\n"
        "# Run on every node with its NODE_RANK, node 0 first. Cap running requests at B per\n"
        "# attention rank with --max-running-requests (per DP rank or in total: check your\n"
        "# SGLang version).\n"
        "set -euo pipefail\n"
        'MODEL_PATH="${MODEL_PATH:?path or HF id of ' + hf_id(model) + '}"\n'
        'NODE_RANK="${NODE_RANK:?0 to ' + str(nodes - 1) + '}"\n'
        'DIST_INIT_ADDR="${DIST_INIT_ADDR:?host:port of node 0}"\n'
        'PORT="${PORT:-30000}"\n'
        + _exports(profile)
        + f"if (( NODE_RANK < {attention_nodes} )); then ROLE=attn; else ROLE=ffn; fi\n"
        + " \\\n  ".join(
            [
                'sglang serve --model-path "$MODEL_PATH" --host 0.0.0.0 --port "$PORT"',
                f"--tp-size {world} --dp-size {world} --enable-dp-attention",
                f'--nnodes {nodes} --node-rank "$NODE_RANK" --dist-init-addr "$DIST_INIT_ADDR"',
                "--load-balance-method round_robin",
                '--afd-role "$ROLE"',
            ]
        )
        + "\n"
    )
    return {"sglang/node.sh": text}


def fastafd_files(
    row: dict,
    model: ModelSpec,
    hw: HardwareSpec,
    profile: RuntimeProfile,
    isl: float,
    osl: float,
) -> dict[str, str]:
    """The environment of FastAFD's preset script for this bundle and workload."""
    r, g_a, g_f, m, b = (
        int(row[k]) for k in ("r", "gpus_attention", "gpus_ffn", "microbatches", "batch")
    )
    per_node = hw.gpus_per_node
    attention_trays, ffn_trays = r * g_a // per_node, g_f // per_node
    prompt, output = max(1, round(isl)), max(1, round(osl))
    graphs = sorted({*GRAPH_BUCKETS, math.ceil(b / m)})
    preset = profile.presets.get(model.architecture, "")
    text = (
        "#!/usr/bin/env bash\n"
        f"# afdplan deploy: {r} attention DP lanes x TP{g_a} on {attention_trays} tray(s) + an "
        f"FFN (MLP) group of EP {g_f} on {ffn_trays} tray(s); B = {b} per lane, m = {m}.\n"
        f"# Targets {profile.label}: {profile.repository}/tree/{profile.commit}.\n"
        f"# Workload: {prompt}-token prompts, {output} output tokens (the plan's means);\n"
        "# PROMPT_BASE_FILE must hold prompts at least PROMPT_LEN tokens long.\n"
        "set -euo pipefail\n"
        'FASTAFD_DIR="${FASTAFD_DIR:?path of a FastAFD checkout at ' + profile.commit[:8] + '}"\n'
        f'PRESET="${{PRESET:-{preset}}}"\n'
        'export MODEL_PATH="${MODEL_PATH:?local snapshot of ' + hf_id(model) + '}"\n'
        f"export AFD_TOTAL_NODES={attention_trays + ffn_trays}\n"
        f"export AFD_GPUS_PER_NODE={per_node}\n"
        f"export AFD_NUM_MB={m}\n"
        f"export PER_ATTN_GPU_BSZ={b}\n"
        f"export AFD_ATTN_TP_SIZE={g_a}\n"
        f"export AFD_MLP_EP_SIZE={g_f}\n"
        f"export PROMPT_LEN={prompt}\n"
        f"export MAX_TOKENS={output}\n"
        f"export MINISGL_MAX_SEQ_LEN={prompt + output + SEQ_LEN_MARGIN}\n"
        f"export VLLM_MAX_MODEL_LEN={prompt + output + SEQ_LEN_MARGIN}\n"
        f"export AFD_DECODE_GRAPH_BS={','.join(map(str, graphs))}\n"
        "# optional: AFD_NODE_LIST=host0,...  (attention trays first, FFN trays last)\n"
        'exec bash "$FASTAFD_DIR/$PRESET"\n'
    )
    return {"fastafd/launch.sh": text}


def write_launch_files(
    folder: Path,
    profile: RuntimeProfile | None,
    row: dict,
    model: ModelSpec,
    hw: HardwareSpec,
    isl: float,
    osl: float,
    colocated: tuple[dict, HardwareSpec] | None = None,
    mtp: Mtp | None = None,
) -> list[Path]:
    """Write the AIConfigurator command for the chosen bundle and, when ``profile``'s
    release serves the model, its launch scripts; with ``colocated`` (the colocated
    configuration and its GPU, when it is the recommendation) its vLLM script too; with
    ``mtp`` the AIConfigurator command alone (``DeployResult.launch_refusal`` says why).
    Return the paths written."""
    files = {"aiconfigurator.sh": aiconfigurator_command(row, model, hw, isl, osl, mtp)}
    if mtp is not None:
        profile, colocated = None, None
    if colocated is not None:
        files |= colocated_files(colocated[0], model, colocated[1])
    if profile is not None and profile.refusal(model.architecture, model.is_moe) is None:
        if profile.runtime == "vllm-afd":
            files |= vllm_afd_files(row, model, hw, profile)
        elif profile.runtime == "sglang":
            files |= sglang_files(row, model, hw, profile)
        elif profile.runtime == "fastafd":
            files |= fastafd_files(row, model, hw, profile, isl, osl)
    written = []
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
        written.append(path)
    return written
