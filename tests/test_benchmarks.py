"""The evidence benchmarks run from any folder and keep their promises: every published
point cites its source and is either predicted or says what afdplan is missing; the
cross-check against AIConfigurator's recorded estimates stays within its band."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import ROOT


def _run(script: str, tmp_path) -> dict:
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the clone root
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


def test_published_points_are_predicted_or_say_what_is_missing(tmp_path):
    data = _run("published.py", tmp_path)
    assert len(data["points"]) >= 11
    for p in data["points"]:
        assert p["source"] and p["published"] > 0
        assert (p["afdplan"] is not None) != bool(p.get("cannot_express"))
    predicted = [p for p in data["points"] if p["afdplan"] is not None]
    assert predicted and all(p["ratio"] > 0 for p in predicted)


def test_crosscheck_same_terms_within_ten_percent(tmp_path, aic):
    data = _run("crosscheck_aiconfigurator.py", tmp_path)
    assert len(data["afd"]) == 48 and len(data["colocated"]) == 30
    assert data["worst_same_terms"] <= 0.10
    assert all(abs(p["moe_read"] - 1) < 0.03 for p in data["afd"])
    # colocated decode, the MoE expert parallel or split over the group: afdplan's step
    # within 12% of AIConfigurator's on DeepSeek-V3 (vLLM tables), 20% on Qwen3 (SGLang),
    # and on DeepSeek-V3 both find the split experts faster
    assert {p["expert_tp"] for p in data["colocated"]} == {1, 4, 8}
    plain = [p for p in data["colocated"] if not p["mtp"]]
    for p in plain:
        assert abs(p["afdplan_ratio"] - 1) < (0.12 if p["model"] == "deepseek-v3" else 0.20)
    by = {(p["model"], p["distribution"], p["batch"], p["expert_tp"]): p
          for p in plain}  # fmt: skip
    # MTP (one draft token, 0.8 accepted): per-token TPOT within 17% of AIConfigurator's,
    # and what MTP gains within 0.05 of what it gains there
    for p in (p for p in data["colocated"] if p["mtp"]):
        assert abs(p["afdplan_ratio"] - 1) < 0.17
        base = by[(p["model"], p["distribution"], p["batch"], p["expert_tp"])]
        theirs = p["aic_tpot_ms"] / base["aic_tpot_ms"]
        assert abs(p["mtp_gain"] - theirs) < 0.05
    for (model, routing, batch, split), p in by.items():
        if model == "deepseek-v3" and routing == "balanced" and split == 1:
            tp = by[(model, routing, batch, 8)]
            assert tp["aic_tpot_ms"] < p["aic_tpot_ms"]
            assert tp["afdplan_ratio"] * tp["aic_tpot_ms"] < p["afdplan_ratio"] * p["aic_tpot_ms"]
