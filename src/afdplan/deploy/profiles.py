"""Runtime profiles pinned to releases, and the config schemas their launch files obey.

A profile (``presets/runtimes.toml``) says what one release of an AFD runtime accepts,
read from its source at a named commit: the model classes it serves, its micro-batch and
parallel sizes, the environment its launch needs, and (vLLM's afd-plugin) the schema of
its ``--additional-config`` section, kept as data in ``presets/schemas/`` so that a test
fails when the files written here drift from what the runtime parses.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from afdplan.errors import InputError, require, unknown_name
from afdplan.presets import runtime_schema, runtime_table

_PROFILE_KEYS = {
    "repository", "ref", "commit", "engine", "architectures", "microbatches",
    "attention_tp", "ffn_ep", "ffn_expert_tp", "config_schema", "env", "presets", "evidence",
    "moe_only",
}  # fmt: skip


@dataclass(frozen=True)
class RuntimeProfile:
    """One release of one runtime (``commit`` empty: not pinned to any source)."""

    runtime: str
    version: str
    repository: str
    ref: str
    commit: str
    engine: str
    architectures: tuple[str, ...]  # empty: the runtime names no list (any it can load)
    microbatches: tuple[int, ...]
    attention_tp: tuple[int, ...] | None = None  # None: any size
    ffn_ep: tuple[int, ...] | None = None
    ffn_expert_tp: tuple[int, ...] | None = None  # GPUs an FFN expert may be split over
    config_schema: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    presets: dict[str, str] = field(default_factory=dict)
    evidence: str = ""
    moe_only: bool = True  # every AFD runtime here dispatches experts to the FFN side

    @property
    def pinned(self) -> bool:
        return bool(self.commit)

    @property
    def label(self) -> str:
        """``vllm-afd 0.19.1rc1 (afd-plugin@2f4f4627)``: what files and answers name."""
        if not self.pinned:
            return f"{self.runtime} (unpinned profile)"
        where = self.repository.rstrip("/").rsplit("/", 1)[-1]
        return f"{self.runtime} {self.version} ({where}@{self.commit[:8]})"

    def refusal(self, architecture: str, is_moe: bool) -> str | None:
        """Why this release cannot serve a model of ``architecture``, or None when it can
        (or, naming no model list, when nothing says it cannot)."""
        if self.moe_only and not is_moe:
            return f"{self.label} disaggregates MoE models only; this model is dense"
        if not self.architectures:
            return None
        if not architecture:
            return (
                f"{self.label} serves {', '.join(self.architectures)}; the model's config "
                "names no architecture"
            )
        if architecture not in self.architectures:
            return f"{self.label} serves {', '.join(self.architectures)}, not {architecture}"
        return None

    def to_dict(self) -> dict:
        return {
            "runtime": self.runtime,
            "version": self.version,
            "repository": self.repository,
            "ref": self.ref,
            "commit": self.commit,
            "engine": self.engine,
        }


def _ints(value: object, where: str) -> tuple[int, ...]:
    ok = isinstance(value, list) and all(type(v) is int and v >= 1 for v in value)
    require(ok, f"{where}: must be a list of integers >= 1")
    assert isinstance(value, list)
    return tuple(value)


def _profile(runtime: str, version: str, raw: dict) -> RuntimeProfile:
    where = f"runtimes.toml [{runtime}.{version}]"
    unknown = sorted(set(raw) - _PROFILE_KEYS)
    require(not unknown, f"{where}: unknown key(s) {', '.join(unknown)}")
    commit = str(raw.get("commit", ""))
    require(
        commit == "" or (len(commit) == 40 and all(c in "0123456789abcdef" for c in commit)),
        f"{where}: commit must be 40 hex digits",
    )
    optional = {
        k: _ints(raw[k], f"{where} {k}")
        for k in ("attention_tp", "ffn_ep", "ffn_expert_tp")
        if k in raw
    }
    return RuntimeProfile(
        runtime=runtime,
        version=version,
        repository=str(raw["repository"]),
        ref=str(raw.get("ref", "")),
        commit=commit,
        engine=str(raw.get("engine", "")),
        architectures=tuple(raw.get("architectures", ())),
        microbatches=_ints(raw["microbatches"], f"{where} microbatches"),
        config_schema=raw.get("config_schema"),
        env=dict(raw.get("env", {})),
        presets=dict(raw.get("presets", {})),
        evidence=str(raw.get("evidence", "")),
        moe_only=bool(raw.get("moe_only", True)),
        **optional,
    )


def profiles(runtime: str) -> dict[str, RuntimeProfile]:
    """Version → profile of ``runtime``, the default first."""
    table = runtime_table()
    if runtime not in table:
        raise unknown_name("runtime", runtime, table)
    return {v: _profile(runtime, v, raw) for v, raw in table[runtime].items()}


def profile(runtime: str, version: str | None = None) -> RuntimeProfile:
    """The profile of ``runtime`` at ``version`` (None: its default, the first listed)."""
    kept = profiles(runtime)
    if version is None:
        return next(iter(kept.values()))
    if version not in kept:
        raise unknown_name(f"{runtime} version", version, kept)
    return kept[version]


def serving(architecture: str, is_moe: bool) -> list[str]:
    """Labels of the pinned profiles that serve ``architecture``."""
    return [
        p.label
        for runtime in runtime_table()
        for p in profiles(runtime).values()
        if p.pinned and p.architectures and p.refusal(architecture, is_moe) is None
    ]


# --- the pinned config schema ---------------------------------------------------------

_TYPES = {"str": str, "int": int, "bool": bool, "table": dict}


def config_problems(section: dict, schema_name: str) -> list[str]:
    """What the runtime would reject in ``section`` (the ``{"afd": {...}}`` value), judged
    by the pinned schema ``schema_name``; empty when it parses and validates."""
    schema = runtime_schema(schema_name)
    fields, aliases = schema["fields"], schema.get("aliases", {})
    problems: list[str] = []
    seen: dict[str, object] = {}
    for key, value in section.items():
        name = aliases.get(key, key)
        if name not in fields:
            problems.append(f"unknown AFD config field {key!r}")
            continue
        if name in seen:
            problems.append(f"{name!r} given twice (alias and canonical key)")
        seen[name] = value
        spec = fields[name]
        kind = _TYPES[spec["type"]]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems.append(f"{name} must be {spec['type']}, got {value!r}")
            continue
        if "choices" in spec and value not in spec["choices"]:
            problems.append(f"{name} must be one of {spec['choices']}, got {value!r}")
        if kind is int and not spec.get("min", value) <= value <= spec.get("max", value):
            problems.append(f"{name} out of range: {value}")
        if kind is str and value == "":
            problems.append(f"{name} must be non-empty")
    values = {k: seen.get(k, spec.get("default")) for k, spec in fields.items()}
    rules = schema.get("rules", {})
    if rules.get("p2p_ranks_divide") and values["connector"] == "P2pNcclAFDConnector":
        a, f = values["num_attention_ranks"], values["num_ffn_ranks"]
        if isinstance(a, int) and isinstance(f, int) and f >= 1 and (a < f or a % f):
            problems.append(
                f"P2P needs num_attention_ranks ({a}) a multiple of num_ffn_ranks ({f})"
            )
    if rules.get("async_needs_cam_async") and values["async_dp"]:
        if values["connector"] != "CAMAsyncAFDConnector":
            problems.append("async_dp needs connector CAMAsyncAFDConnector")
    return problems


def schema_from_source(text: str, class_name: str = "AFDConfig") -> dict[str, dict]:
    """The fields (type and default) of the dataclass ``class_name`` in a Python source:
    how the pinned schema is checked against, or regenerated from, the runtime's own
    ``config.py`` (read with ``ast``; nothing is imported or run)."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            out = {}
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    kind = ast.unparse(stmt.annotation)
                    default = ast.literal_eval(stmt.value) if stmt.value is not None else None
                    out[stmt.target.id] = {"annotation": kind, "default": default}
            return out
    raise InputError(f"no class {class_name} in the source given")
