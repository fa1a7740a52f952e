"""The cluster backends the README promises, end to end on a local cluster: a sweep and a
capacity run through Dask (a local cluster, and a real scheduler with workers on
localhost reached by --scheduler) and through Ray (``ray.init`` locally) give the same
numbers as the default process pool. Each run is its own ``afdplan`` process, so its
cluster ends with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

AFDPLAN = str(Path(sys.executable).with_name("afdplan"))
SWEEP = ["sweep", "--trace", "azure-conv-2023", "--batch", "64", "--ratio", "3-5",
         "--seeds", "2", "--requests", "2000", "--json"]  # fmt: skip
CAPACITY = ["capacity", "--trace", "azure-conv-2023", "--rate", "1x", "--tpot-ms", "80",
            "-r", "8", "-B", "64", "--requests", "2000", "--no-curve", "--json"]  # fmt: skip


def _run(args: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    res = subprocess.run([AFDPLAN, *args], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


def _numbers(data: dict, command: str) -> object:
    """What must not depend on where the simulations ran."""
    if command == "sweep":
        return data["rows"], data["optima"]
    return [{k: v for k, v in row.items() if "runtime" not in k} for row in data["rows"]]


@pytest.fixture(scope="module")
def default_results():
    return {name: _numbers(_run(args), name) for name, args in (("sweep", SWEEP),
                                                               ("capacity", CAPACITY))}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sweep", "capacity"])
def test_dask_local_cluster_matches_the_default_backend(command, default_results):
    pytest.importorskip("distributed", reason="needs the [dask] extra")
    args = SWEEP if command == "sweep" else CAPACITY
    assert _numbers(_run([*args, "--backend", "dask"]), command) == default_results[command]


@pytest.mark.slow
def test_dask_scheduler_with_workers_on_localhost(default_results):
    distributed = pytest.importorskip("distributed", reason="needs the [dask] extra")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:  # fmt: skip
        data = _run([*SWEEP, "--backend", "dask", "--scheduler", cluster.scheduler_address])
    assert _numbers(data, "sweep") == default_results["sweep"]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sweep", "capacity"])
def test_ray_matches_the_default_backend(command, default_results):
    pytest.importorskip("ray", reason="needs the [ray] extra")
    args = SWEEP if command == "sweep" else CAPACITY
    assert _numbers(_run([*args, "--backend", "ray"]), command) == default_results[command]
