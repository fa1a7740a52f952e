"""Shared fixtures: the shared data folder and an in-process CLI runner."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def shared_data(relative: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    path = DATA_DIR / relative
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (CI provides ../shared/data)")
    return path


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
