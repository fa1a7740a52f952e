"""Small real inputs that ship with afdplan, and the one resolver for input files.

Every file option (``--trace``, ``--tables``, ``--vidur-mlp``, ``--send-recv``) takes a
path or the name of a shipped file, so README examples run on a fresh install anywhere.
Sources and licences are in ``SOURCES.md`` beside this file. This module imports nothing
heavy: ``afdplan --help`` must stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from afdplan.errors import InputError
from afdplan.presets import measured_sets


@dataclass(frozen=True)
class DataFile:
    """One shipped file: its path inside the ``afdplan`` package, what it is for, and
    where from."""

    relative: str
    kind: str  # trace | tables | vidur-mlp | send-recv
    description: str
    source: str


BUILTIN_DATA: dict[str, DataFile] = {
    "azure-conv-2023": DataFile(
        "data/traces/azure_conv_2023.csv",
        "trace",
        "Azure LLM inference trace 2023, conversation: 19,366 requests with arrival times",
        "Azure Public Dataset (Splitwise, ISCA 2024), CC-BY",
    ),
    "azure-code-2023": DataFile(
        "data/traces/azure_code_2023.csv",
        "trace",
        "Azure LLM inference trace 2023, code: 8,819 requests with arrival times",
        "Azure Public Dataset (Splitwise, ISCA 2024), CC-BY",
    ),
    "vidur-h100-llama2-70b": DataFile(
        "data/vidur/h100_llama2-70b_mlp.csv",
        "vidur-mlp",
        "Vidur profile: Llama-2-70B MLP-side ops per layer on H100 vs tokens, TP 1-8",
        "Vidur (Microsoft), MIT licence",
    ),
    "vidur-h100-dgx": DataFile(
        "data/vidur/h100_dgx_send_recv.csv",
        "send-recv",
        "Vidur profile: H100 DGX send/recv time vs bytes (NVLink and inter-node)",
        "Vidur (Microsoft), MIT licence",
    ),
}
# The measured sets' tables ship beside their coefficient sets (afdplan.presets).
BUILTIN_DATA.update(
    {
        name: DataFile(f"presets/coefficients/{name}.csv", "tables", m["description"], m["source"])
        for name, m in measured_sets().items()
        if "description" in m and "source" in m
    }
)
KIND_OPTIONS = {
    "trace": "--trace",
    "tables": "--tables",
    "vidur-mlp": "--vidur-mlp",
    "send-recv": "--send-recv",
}


def builtin_path(name: str) -> Path:
    """The installed path of a shipped file."""
    entry = BUILTIN_DATA[name]
    return Path(str(resources.files("afdplan").joinpath(entry.relative)))


def builtin_names(kind: str) -> list[str]:
    return sorted(name for name, entry in BUILTIN_DATA.items() if entry.kind == kind)


def resolve_input(value: str | Path, kind: str) -> Path:
    """A file the user named: an existing path, else a shipped file of ``kind`` by name.

    Errors are one line: a folder is not a file, and a missing file lists the shipped
    names that would have worked.
    """
    text = str(value)
    path = Path(text).expanduser()
    if path.is_dir():
        raise InputError(f"{text}: is a folder, not a {kind} file")
    if path.is_file():
        return path
    if BUILTIN_DATA.get(text) is not None and BUILTIN_DATA[text].kind == kind:
        return builtin_path(text)
    known = builtin_names(kind)
    hint = f"; built-in {kind} names: {', '.join(known)}" if known else ""
    raise InputError(f"{text}: no such file{hint}")
