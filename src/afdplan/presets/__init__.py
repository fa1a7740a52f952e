"""The one folder of shipped presets, and its loader.

* ``hardware.toml`` — accelerators (datasheet figures with sources); each names the
  aiconfigurator-core systems that are the same GPU (``aiconfigurator_systems``), so a
  system name works wherever a hardware name does.
* ``models.toml`` — model architectures (Hugging Face config fields).
* ``coefficients/NAME.toml`` — step-time coefficient sets; a measured set says under
  ``[measured]`` what it was calibrated from (model, aiconfigurator-core system,
  framework, FFN token range, transfer measurements) and ships its measured table beside
  it as ``coefficients/NAME.csv``.
* ``runtimes.toml`` — AFD runtime releases, each pinned to a commit (what it serves and
  accepts); ``schemas/NAME.toml`` — a runtime's config schema copied from its source.

New hardware is one table in ``hardware.toml``; a new measured set is two files in
``coefficients/`` (``scripts/regenerate_presets.sh`` rebuilds every measured set from its
``[measured]`` table). This module reads TOML only: the CLI's start-up stays fast.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources
from pathlib import Path

from afdplan.errors import InputError, require

_ROOT = resources.files("afdplan.presets")
_COEFFICIENTS = _ROOT / "coefficients"
_SCHEMAS = _ROOT / "schemas"

# What a coefficient set's [measured] table may say (and must: the first three).
MEASURED_KEYS = {
    "model": "model preset it was calibrated for",
    "system": "aiconfigurator-core system of its kernel tables",
    "framework": "aiconfigurator-core framework of its kernel tables",
    "ffn_range": "[lo, hi] FFN tokens fitted",
    "send_recv": "shipped send/recv measurements of the A-F transfers",
    "description": "what its shipped table holds",
    "source": "where its shipped table comes from, and its licence",
}
_MEASURED_REQUIRED = ("model", "system", "framework")


@lru_cache(maxsize=4)
def read_table(name: str) -> dict:
    """``hardware`` or ``models``: the shipped table, one entry per preset."""
    require(name in ("hardware", "models"), f"no preset table {name!r}")
    return tomllib.loads((_ROOT / f"{name}.toml").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def runtime_table() -> dict:
    """``runtimes.toml``: runtime → version → profile fields."""
    return tomllib.loads((_ROOT / "runtimes.toml").read_text(encoding="utf-8"))


@lru_cache(maxsize=4)
def runtime_schema(name: str) -> dict:
    """A pinned runtime config schema (``schemas/NAME.toml``)."""
    path = _SCHEMAS / f"{name}.toml"
    require(path.is_file(), f"no pinned runtime schema {name!r} in presets/schemas")
    return tomllib.loads(path.read_text(encoding="utf-8"))


def coefficient_names() -> list[str]:
    """Names of the shipped coefficient sets."""
    return sorted(p.name[:-5] for p in _COEFFICIENTS.iterdir() if p.name.endswith(".toml"))


@lru_cache(maxsize=16)
def coefficient_table(name: str) -> dict:
    """The parsed TOML of a shipped coefficient set (the caller checks the name)."""
    return tomllib.loads((_COEFFICIENTS / f"{name}.toml").read_text(encoding="utf-8"))


def check_measured(table: object, source: str) -> dict:
    """A coefficient set's ``[measured]`` table, its keys checked (one-line errors)."""
    require(isinstance(table, dict), f"{source}: [measured] must be a table")
    assert isinstance(table, dict)
    unknown = sorted(set(table) - set(MEASURED_KEYS))
    require(
        not unknown,
        f"{source}: unknown key(s) in [measured]: {', '.join(unknown)}; "
        f"known: {', '.join(MEASURED_KEYS)}",
    )
    missing = [k for k in _MEASURED_REQUIRED if k not in table]
    require(not missing, f"{source}: [measured] needs {', '.join(missing)}")
    window = table.get("ffn_range")
    if window is not None:
        ok = isinstance(window, list) and len(window) == 2 and 0 < window[0] < window[1]
        require(ok, f"{source}: [measured] ffn_range must be [lo, hi] with 0 < lo < hi")
    return table


def measured_sets() -> dict[str, dict]:
    """Shipped coefficient sets that were measured: name → their ``[measured]`` table
    plus ``gpus_ffn`` (the set's own FFN group) from ``[meta]``."""
    out = {}
    for name in coefficient_names():
        data = coefficient_table(name)
        if "measured" in data:
            entry = dict(check_measured(data["measured"], name))
            entry["gpus_ffn"] = int(data.get("meta", {}).get("gpus_ffn", 1))
            out[name] = entry
    return out


def measured_table_path(name: str) -> Path:
    """The installed path of a measured set's shipped table."""
    return Path(str(_COEFFICIENTS / f"{name}.csv"))


def hardware_aliases() -> dict[str, str]:
    """Short names (``aliases``: ``h100`` for the SXM part) and aiconfigurator-core
    system names → the hardware preset they mean."""
    out = dict(system_hardware())
    for preset, fields in read_table("hardware").items():
        for alias in fields.get("aliases", ()):
            require(alias not in out, f"hardware alias {alias} is claimed twice")
            out[alias] = preset
    return out


def system_hardware() -> dict[str, str]:
    """aiconfigurator-core system name → the hardware preset that is the same GPU."""
    out: dict[str, str] = {}
    for preset, fields in read_table("hardware").items():
        for system in fields.get("aiconfigurator_systems", ()):
            if system in out:
                raise InputError(f"hardware presets {out[system]} and {preset} both claim {system}")
            out[system] = preset
    return out
