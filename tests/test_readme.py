"""Every command in the README runs as written on a fresh install.

The ``bash`` blocks of README.md are read in order and every ``afdplan`` command in them
is run in one scratch folder, so later commands see the files earlier ones wrote (as a
user pasting them one by one would). Long commands run a fast variant: fewer requests,
seeds and ratios, the quick validation grid; what they exercise stays the same. The
benchmark scripts run with tiny sizes in a subprocess.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def readme_commands() -> list[str]:
    """The shell commands of the README's bash blocks, continuations joined, comments cut."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    return commands


def _set(args: list[str], option: str, value: str) -> list[str]:
    if option in args:
        args = list(args)
        args[args.index(option) + 1] = value
        return args
    return [*args, option, value]


def fast_variant(args: list[str]) -> list[str]:
    """The same command with small sizes (what a slow command is made to do in a test)."""
    command = args[0]
    if command in ("simulate", "sweep") and "--steps" not in args:
        args = _set(args, "--requests", "1500")
    if command == "simulate" and "--seeds" in args:
        args = _set(args, "--seeds", "2")
    if command == "sweep":
        args = _set(_set(_set(args, "--ratio", "2-3"), "--seeds", "1"), "--batch", "64")
        args = _set(args, "--jobs", "1")
    if command == "deploy":
        args = _set(_set(_set(args, "--gpus-ffn", "8,16"), "--top", "1"), "--seeds", "1")
    if command == "capacity":
        rate = "50" if "--deployment" in args else "1x"
        args = _set(_set(args, "--requests", "3000"), "--rate", rate)
        args = [*args, "--no-curve"] if "--no-curve" not in args else args
    if command == "simulate" and "--arrivals" in args:
        args = _set(args, "--requests", "3000")
    if command == "validate" and "--quick" not in args:
        args = [*args, "--quick"]
    return args


def test_readme_has_the_three_first_commands():
    first = readme_commands()[:3]
    assert first == ['pip install -e ".[test,measured]"', "afdplan plan", "python -m pytest"]


def test_every_readme_command_is_covered():
    for command in readme_commands():
        head = command.split()[0]
        assert head in ("pip", "afdplan", "python"), command
        if head == "python":
            assert command == "python -m pytest" or command.startswith("python benchmarks/")


@pytest.mark.slow
def test_readme_afdplan_commands_run_in_order(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    commands = [c for c in readme_commands() if c.startswith("afdplan ")]
    assert len(commands) >= 15
    for command in commands:
        words = shlex.split(command)
        target = None
        if ">" in words:  # a redirect: the command's stdout goes to a file
            target = tmp_path / words[words.index(">") + 1]
            words = words[: words.index(">")]
        args = fast_variant(words[1:])
        res = cli(*args)
        assert res.code == 0, f"{command}\n{res.err}"
        if target is not None:
            target.write_text(res.out)
        if "--json" in args:
            res.json()  # valid JSON on stdout, nothing else
    assert (tmp_path / "out" / "validation.json").is_file()
    assert (tmp_path / "out" / "report" / "report.html").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, args",
    [
        ("bench_sim.py", ["--requests", "3000", "--repeats", "1", "--baseline-repeats", "1"]),
        ("bench_cli.py", ["--repeats", "1"]),
        ("bench_deploy.py", ["--repeats", "1", "--top", "1", "--seeds", "1"]),
        ("bench_open.py", ["--repeats", "1", "--requests", "3000"]),
    ],
)
def test_benchmarks_run_without_shared_data(script, args, tmp_path):
    command = f"python benchmarks/{script}"
    assert command in readme_commands()
    env = {**os.environ, "COLUMNS": "200"}
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "median" in res.stdout


@pytest.mark.slow
def test_crosscheck_runs_from_the_recorded_estimates(tmp_path, aic):
    """The cross-check compares against AIConfigurator's recorded estimates, so the README
    command runs without AIConfigurator, from any folder; rerunning it through a wrong
    interpreter is a one-line error."""
    script = ROOT / "benchmarks" / "crosscheck_aiconfigurator.py"
    assert f"python benchmarks/{script.name}" in readme_commands()
    res = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "same terms: 48 points" in res.stdout
    bad = subprocess.run(
        [sys.executable, str(script), "--refresh", "--aiconfigurator-python", "/no/such/python"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not found" in bad.stderr
