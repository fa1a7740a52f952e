"""Measurement readers: each returns rows of the generic table (``afdplan.timing.tables``).

Rows hold whole-model, per-decode-step seconds with columns ``op, tokens, kv_tokens,
batch, seconds``; ``op`` is ``attention`` (a decode-attention kernel over ``batch``
sequences holding ``kv_tokens``), ``attention_dense`` (per-sequence dense work on the
Attention side: norms, QKV/O projections, LM head; ``tokens`` = sequences), ``ffn`` or
``comm`` (``tokens``).

Vidur's ``mlp.csv`` (MIT, profiles of one transformer layer, times in ms): the FFN side is
``post_attention_layernorm + mlp_up_proj + mlp_act + mlp_down_proj + add`` (the FFN
worker's norm, gated MLP and residual add); the Attention side's dense part is
``input_layernorm + attn_pre_proj + attn_rope + attn_post_proj``. ``emb`` runs once per step
and is left out. Per-layer times are multiplied by the model's layer count; ``num_tokens``
is the batch. Vidur's ``send_recv.csv`` gives the time of one point-to-point transfer of
``size`` bytes; an A↔F step moves ``2·L`` such transfers of ``h·act_bytes`` bytes per token.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from afdplan.errors import require
from afdplan.tabular import read_table
from afdplan.timing.tables import TABLE_COLUMNS, validate_table

VIDUR_FFN_OPS = ("post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
VIDUR_ATTENTION_OPS = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj")


def _median_columns(frame: pd.DataFrame, ops: tuple[str, ...], path: Path) -> list[str]:
    cols = [f"time_stats.{op}.median" for op in ops]
    missing = [c for c in cols if c not in frame.columns]
    require(not missing, f"{path}: missing column(s) {', '.join(missing)} (not a Vidur mlp.csv?)")
    return cols


def read_vidur_mlp(
    path: str | Path, layers: int, tp_attention: int = 1, tp_ffn: int = 1
) -> pd.DataFrame:
    """FFN rows at TP ``tp_ffn`` and Attention-side dense rows at ``tp_attention``."""
    path = Path(path)
    require(layers >= 1, f"layers must be >= 1, got {layers}")
    frame = read_table(path)
    require(len(frame) > 0, f"{path}: no rows")
    for col in ("num_tokens", "num_tensor_parallel_workers"):
        require(col in frame.columns, f"{path}: missing column {col!r} (not a Vidur mlp.csv?)")
    tps = sorted(int(t) for t in frame["num_tensor_parallel_workers"].unique())
    rows = []
    for op, ops, tp in (
        ("ffn", VIDUR_FFN_OPS, tp_ffn),
        ("attention_dense", VIDUR_ATTENTION_OPS, tp_attention),
    ):
        require(tp in tps, f"{path}: no rows for {op} at TP {tp}; available: {tps}")
        part = frame[frame["num_tensor_parallel_workers"] == tp]
        ms = part[_median_columns(part, ops, path)].sum(axis=1).to_numpy(np.float64)
        tokens = part["num_tokens"].to_numpy(np.float64)
        rows.append(pd.DataFrame({"op": op, "tokens": tokens, "seconds": layers * ms / 1e3}))
    return pd.concat(rows, ignore_index=True).reindex(columns=list(TABLE_COLUMNS))


def read_vidur_send_recv(
    path: str | Path, bytes_per_token: float, transfers_per_step: int, intra_node: bool = True
) -> pd.DataFrame:
    """Communication rows: tokens = size / bytes_per_token, seconds = transfers × time."""
    path = Path(path)
    frame = read_table(path)
    col = "time_stats.send_recv.median"
    for need in (col, "size", "devices_per_node"):
        require(
            need in frame.columns, f"{path}: missing column {need!r} (not a Vidur send_recv.csv?)"
        )
    link = frame["devices_per_node"] >= 2 if intra_node else frame["devices_per_node"] == 1
    frame = frame[link]
    require(len(frame) > 0, f"{path}: no {'intra' if intra_node else 'inter'}-node rows")
    return pd.DataFrame(
        {
            "op": "comm",
            "tokens": frame["size"].to_numpy(np.float64) / bytes_per_token,
            "seconds": transfers_per_step * frame[col].to_numpy(np.float64) / 1e3,
        }
    ).reindex(columns=list(TABLE_COLUMNS))


def read_generic(path: str | Path) -> pd.DataFrame:
    """A generic-format table (``op, tokens, kv_tokens, batch, seconds``), validated."""
    path = Path(path)
    return validate_table(read_table(path), path.name)
