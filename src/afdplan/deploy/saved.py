"""A deploy answer read back from its JSON (``afdplan deploy --json``): the bundle or
colocated group `capacity --deployment` replicates, with the step times deploy scored it
with. The reader of what ``DeployResult.to_dict`` writes; every field is checked where it
is read (one-line errors naming the file)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from afdplan.bundle import Pipeline
from afdplan.choices import Architecture
from afdplan.errors import InputError, require
from afdplan.timing import LinearStepTimes, coeffs_from_dict


@dataclass(frozen=True)
class SavedAnswer:
    """One unit of a deploy answer: r attention instances of B sequences each, its step
    times (seconds), its ping-pong pipeline, and whether it is a colocated group."""

    model: str
    times: LinearStepTimes
    pipeline: Pipeline
    ratio: int
    batch: int
    colocated: bool
    label: str  # how the output names the step times
    prices: tuple[float | None, float | None]  # public $/GPU-hour, attention and FFN side


def read_answer_file(path: Path) -> dict:
    """The parsed JSON of a deploy answer, or a one-line error."""
    what = f"--deployment {path}"
    require(path.is_file(), f"{what}: no such file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what}: not valid JSON") from exc
    require(
        isinstance(data, dict) and isinstance(data.get("chosen"), dict),
        f"{what}: not the JSON of `afdplan deploy --json` (no 'chosen' configuration)",
    )
    for key in ("attention_hw", "ffn_hw", "model", "chosen_step_times", "recommendation"):
        require(key in data, f"{what}: not the JSON of `afdplan deploy --json` (no {key!r})")
    return data


def load_answer(path: Path, architecture: Architecture = Architecture.recommended) -> SavedAnswer:
    """The unit ``architecture`` picks from the answer at ``path``: what deploy recommends
    (its best colocated group where AFD loses, else its chosen AFD bundle), or either one."""
    from afdplan.calibrate.specs import load_hardware

    what = f"--deployment {path}"
    data = read_answer_file(path)
    a_hw, f_hw = load_hardware(str(data["attention_hw"])), load_hardware(str(data["ffn_hw"]))
    if architecture == Architecture.recommended:
        architecture = Architecture(str(data["recommendation"]))
    colocated = architecture == Architecture.colocated
    if colocated:
        group = data.get("colocated") or {}
        require(
            isinstance(group.get("best"), dict) and isinstance(group.get("step_times"), dict),
            f"{what}: it holds no colocated group to size (deploy found none, or the file "
            "predates colocated step times: run deploy again)",
        )
        config, step_times = group["best"], group["step_times"]
    else:
        config, step_times = data["chosen"], data["chosen_step_times"]
    r, b, m = (_count(config, k, what) for k in ("r", "batch", "microbatches"))
    # the step times deploy scored it with: served dtypes, anchor, link and fan-in applied
    times = coeffs_from_dict(step_times, what)
    cap = times.kv_capacity_tokens
    require(cap is None or b <= cap, f"{what}: chosen batch {b:,} exceeds the KV capacity {cap:,}")
    require(times.layers is not None, f"{what}: its step times name no layer count")
    model = str(data["model"])
    if colocated:
        from afdplan.deploy.slo_search import colocated_hardware

        hw = colocated_hardware(str(config.get("architecture", "")), a_hw, f_hw)
        label = f"deploy: {model}, colocated groups of {hw.name}"
        prices = (hw.price_per_hour, hw.price_per_hour)
    else:
        label = f"deploy: {model} on {a_hw.name}" + (
            "" if a_hw.name == f_hw.name else f" + {f_hw.name}"
        )
        prices = (a_hw.price_per_hour, f_hw.price_per_hour)
    pipeline = Pipeline("pingpong", m, int(times.layers))  # type: ignore[arg-type]
    return SavedAnswer(model, times, pipeline, r, b, colocated, label, prices)


def _count(config: dict, key: str, what: str) -> int:
    """An integer >= 1 of the configuration (a fraction or a string is an error)."""
    value = config.get(key)
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    require(
        ok and value == int(value) and value >= 1,
        f"{what}: chosen {key} must be an integer >= 1, got {value!r}",
    )
    return int(value)
