"""Shared fixtures: an in-process CLI runner. Every input a test needs ships with the
package or lives in ``tests/fixtures``; no test reads ../shared."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

# The same examples on every run: a property test that passes in CI passes again, and one
# that fails, fails again (set HYPOTHESIS_PROFILE=explore to search fresh examples).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run ``afdplan ARGS...`` in-process through the real entry point."""
    from afdplan.cli import main

    def run(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["afdplan", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def aic():
    """Tests that read aiconfigurator-core's tables (the [measured] extra) ask for this;
    everything else runs without the package."""
    return pytest.importorskip("aiconfigurator_core", reason="needs the [measured] extra")
