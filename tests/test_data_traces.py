"""θ and v of the real Azure traces shipped with the package."""

from __future__ import annotations

import pytest

from afdplan.data import builtin_path
from afdplan.workload import read_trace


@pytest.mark.parametrize(
    "name, theta, v, load_v1, theta_se",
    [
        # Independent numpy check of ΣD·P + D(D−1)/2 over ΣD etc. (DESIGN.md §2).
        ("azure-conv-2023", 1226.479, 508_196.98, 1365.823, 3.99),
        # Code: a few long-prompt, long-decode requests dominate, so θ̂ is 2% uncertain.
        ("azure-code-2023", 2130.426, 3_808_832.6, 2075.731, 43.9),
    ],
)
def test_azure_theta(name, theta, v, load_v1, theta_se):
    w = read_trace(builtin_path(name))
    s = w.stats()
    assert s.theta == pytest.approx(theta, rel=1e-6)
    assert s.load_v1 == pytest.approx(load_v1, rel=1e-6)
    assert s.v == pytest.approx(v, rel=1e-6)
    assert s.theta_se == pytest.approx(theta_se, rel=0.01)
    assert w.arrival is not None


def test_plan_on_azure_json(cli):
    res = cli(
        "plan",
        "--trace",
        "azure-conv-2023",
        "--coeffs",
        "paper-v1-dsv3-910c",
        "--batch",
        "64",
        "--json",
    )
    assert res.code == 0, res.err
    data = res.json()
    assert data["theta"] == pytest.approx(1226.479, rel=1e-6)
    assert data["r_star"] < data["r_star_v1"]  # θ < μ_P + μ_D on conversations
