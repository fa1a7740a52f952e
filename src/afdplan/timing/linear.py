"""Linear step-time models and the coefficients file (DESIGN.md §1).

    t_A(B, T) = α_A·T + γ_A·B + β_A      T = KV tokens held by one Attention worker
    t_F(n)    = α_F·n + β_F              n = r·B tokens in the aggregated FFN batch
    t_C(n)    = α_C·n + β_C              n = B (per worker, v1), r·B (aggregate),
                                         or B·max(1, r/g_F) (fan-in at the FFN end)

t_C is the round trip: both directions (A→F and F→A) of every layer, as the roofline
(2·L transfers) and the Vidur send/recv fit (2·L transfers) define it. A pipeline that
runs the two directions as separate stages charges t_C/2 to each (``transfer_each_way``).

Times are in seconds. A file may give its coefficients in ``ms`` or ``us``
(``time_unit``); they are converted to seconds on load. The paper's own calibration uses
an unnamed unit, ``time_unit = "arbitrary"``, kept as is (r* does not depend on it).

The coefficients file (JSON or TOML) is the contract with calibration::

    [meta]                  # optional: name, time_unit, provenance, gpus, kv_capacity_tokens,
                            #   state_tokens (KV tokens a sequence's recurrent state takes),
                            #   curves (a measured table beside the file or a shipped name)
    [attention]  alpha = …  # seconds per KV token      beta = …  (seconds)
                 gamma = …  # seconds per sequence in the batch (optional, default 0)
    [ffn]        alpha = …  # seconds per token         beta = …
    [comm]       alpha = …  # seconds per token         beta = …
                 scope = "per_worker" | "aggregate" | "fan_in"   (optional, default per_worker)
    [exchange]   alpha = …  beta = …  # optional: the part of [ffn] that is the expert
                                      #   dispatch and combine inside the FFN group
                 overlap = false      #   true: it runs on the links beside the experts
                                      #   of other micro-batches (see ``exchange_overlap``)
    [experts]    experts = E  top_k = k  # optional, MoE: the FFN waits for its busiest
                 routing = "balanced" | "power-law:ALPHA"   skew_in_fit = false
                 expert_tp = 1        #   expert rank (``afdplan.timing.experts``); the
                                      #   GPUs each expert is split over (default 1)
                 verify = 1           #   tokens run per token asked (k + 1 under MTP)

With ``[experts]``, t_F(n) is read at n·φ(n), φ the busiest expert rank's load against the
mean over the g_F ranks of the FFN instance (DESIGN.md §10).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from afdplan.choices import COMM_SCOPES, DEFAULT_COEFFS, CommScope
from afdplan.errors import InputError, check_nonnegative, require, unknown_name
from afdplan.presets import check_measured, coefficient_names, coefficient_table
from afdplan.timing.experts import Experts, Routing


@dataclass(frozen=True)
class Linear:
    """time = alpha·x + beta (alpha in time per unit of x, beta in time)."""

    alpha: float
    beta: float

    def __call__(self, x: np.ndarray | float) -> np.ndarray | float:
        return self.alpha * x + self.beta


@dataclass(frozen=True)
class AttentionLinear:
    """t_A = alpha·T + gamma·B + beta for B sequences holding T KV tokens in total."""

    alpha: float
    beta: float
    gamma: float = 0.0

    def __call__(self, batch: np.ndarray | float, kv_tokens: np.ndarray | float):
        return self.alpha * kv_tokens + self.gamma * batch + self.beta


@dataclass(frozen=True)
class LinearStepTimes:
    """A complete linear step-time model of one rA–1F bundle.

    ``gpus_attention``/``gpus_ffn`` record how many GPUs one instance of each kind
    holds for the deployment the coefficients were measured on (for tokens/s per GPU);
    ``kv_capacity_tokens`` is the KV cache one Attention instance can hold, if known;
    ``state_tokens`` the cache every sequence holds whatever its length (a hybrid model's
    recurrent state, in KV tokens of the same pool), which its reservation adds to P + D.
    """

    attention: AttentionLinear
    ffn: Linear
    comm: Linear
    comm_scope: CommScope = "per_worker"
    name: str = "custom"
    time_unit: str = "s"
    provenance: str = ""
    gpus_attention: float = 1.0
    gpus_ffn: float = 1.0
    kv_capacity_tokens: int | None = None
    state_tokens: int = 0
    curves: str | None = None  # measured table of the same deployment (path or shipped name)
    layers: int | None = None  # transformer layers L (the layered pipelines need it)
    # The part of ``ffn`` that is communication inside the FFN group (seconds per token of
    # the micro-batch, seconds): an MoE group's expert dispatch and combine, a dense
    # tensor-parallel group's all-reduce. Colocated decode overlaps it with compute, an
    # anchor leaves it unscaled.
    exchange: Linear | None = None
    # The exchange runs on the FFN group's links beside the experts of the other
    # micro-batches (vLLM's dual-batch overlap; Step-3's NVLS collectives, which use no
    # SMs), not in series with its own: the FFN stage is the kernels alone and each
    # transfer stage carries half the exchange of the worker's share, r·B tokens a
    # round trip. Neutral with one micro-batch (the stages run in series anyway).
    exchange_overlap: bool = False
    experts: Experts | None = None  # MoE: the FFN waits for its busiest expert rank
    # The part of ``attention`` (γ per sequence, β) that is a split attention's
    # tensor-parallel all-reduce: an anchor scales the kernels and leaves it alone. Not
    # written to files (it stays inside [attention]).
    reduce: Linear | None = None

    def __post_init__(self) -> None:
        for stage, coeffs in (
            ("attention", self.attention),
            ("ffn", self.ffn),
            ("comm", self.comm),
            ("exchange", self.exchange or Linear(0.0, 0.0)),
        ):
            for key, value in asdict(coeffs).items():
                check_nonnegative(f"{stage}.{key}", value)
        require(
            type(self.state_tokens) is int and self.state_tokens >= 0,
            f"state_tokens must be an integer >= 0, got {self.state_tokens!r}",
        )
        require(self.ffn.alpha > 0, "ffn.alpha must be > 0 (the FFN time must grow with tokens)")
        require(
            self.comm_scope in COMM_SCOPES, f"comm scope must be one of {', '.join(COMM_SCOPES)}"
        )
        require(
            not self.exchange_overlap or self.exchange is not None,
            "exchange overlap needs the FFN's exchange ([exchange])",
        )

    # The three stage times, vectorised; the simulator calls these too.
    def attention_time(self, batch: np.ndarray | float, kv_tokens: np.ndarray | float):
        """Seconds for one Attention worker: ``batch`` sequences, ``kv_tokens`` KV tokens."""
        return self.attention(batch, kv_tokens)

    def ffn_time(self, tokens: np.ndarray | float, imbalance=None):
        """Seconds for the FFN instance on a micro-batch of ``tokens`` (r·B/m): the
        busiest expert rank's, at ``tokens``·φ (``imbalance`` φ, by default its expected
        value; 1 without ``experts``); without the exchange when it overlaps."""
        return self.ffn_stage(self.effective_tokens(tokens, imbalance))

    @property
    def ffn_stage(self) -> Linear:
        """The FFN stage's line: ``ffn``, less its exchange when that overlaps (the
        transfers carry it, :meth:`overlapped_exchange`)."""
        if not self.exchange_overlap:
            return self.ffn
        assert self.exchange is not None
        return Linear(self.ffn.alpha - self.exchange.alpha, self.ffn.beta - self.exchange.beta)

    def effective_tokens(self, tokens, imbalance=None):
        """``tokens``·φ: the batch an evenly loaded group would run in the time its
        busiest expert rank takes (DESIGN.md §10)."""
        if self.experts is None:
            return tokens
        if imbalance is None:
            imbalance = self.experts.imbalance(tokens, self.gpus_ffn)
        return np.asarray(tokens, dtype=np.float64) * imbalance

    def with_routing(self, routing: Routing | str) -> LinearStepTimes:
        """The same step times under another routing (a roofline or an evenly measured
        fit: φ changes; a fit measured at a skewed routing's busiest rank is refused)."""
        routing = Routing.parse(routing)
        require(self.experts is not None, f"{self.name} has no routed experts (--routing)")
        assert self.experts is not None
        if routing == self.experts.routing:
            return self
        require(
            not self.experts.skew_in_fit,
            f"{self.name} was measured at {self.experts.routing} routing; for {routing} "
            "recalibrate it (afdplan calibrate --system ... --routing)",
        )
        return replace(self, experts=replace(self.experts, routing=routing))

    def comm_time(self, batch: np.ndarray | float, ratio: np.ndarray | float):
        """Seconds of the A↔F round trip for ``ratio`` workers of ``batch`` tokens each
        (with the FFN's exchange of their ratio·batch tokens when it overlaps)."""
        moved = self.comm(transfer_tokens(self.comm_scope, batch, ratio, self.gpus_ffn))
        return moved + self.overlapped_exchange(batch, ratio)

    def overlapped_exchange(self, batch, ratio):
        """The exchange the transfers carry (``exchange_overlap``), else 0: on the
        ``ratio``·``batch`` tokens of a micro-batch."""
        if not self.exchange_overlap:
            return 0.0
        assert self.exchange is not None
        return self.exchange(np.asarray(batch, dtype=np.float64) * ratio)

    def with_comm_scope(self, scope: str) -> LinearStepTimes:
        return replace(self, comm_scope=scope)  # type: ignore[arg-type]


def transfer_tokens(scope: str, batch, ratio, gpus_ffn: float):
    """Tokens' worth of one A↔F transfer under ``scope`` (``CommScope``): a worker's
    ``batch`` on its own link (``per_worker``), the r·B of all ``ratio`` workers on one
    link (``aggregate``), or a worker's batch stretched by the fan-in at the FFN end, where
    ``gpus_ffn`` ports receive every worker's tokens (``fan_in``: B·max(1, r/g_F))."""
    if scope == "aggregate":
        return batch * ratio
    if scope == "fan_in":
        return batch * np.maximum(1.0, np.asarray(ratio, dtype=np.float64) / gpus_ffn)
    return batch


def transfer_each_way(round_trip):
    """One direction of a round trip t_C: the layered pipelines and the simulator run A→F
    and F→A as separate stages, each carrying one vector per token (DESIGN.md §10)."""
    return 0.5 * round_trip


# ---------------------------------------------------------------------------- files

_SECTION_KEYS = {
    "attention": ("alpha", "beta", "gamma"),
    "ffn": ("alpha", "beta"),
    "comm": ("alpha", "beta", "scope"),
}
_OPTIONAL_SECTIONS = {
    "exchange": ("alpha", "beta", "overlap"),
    "experts": ("experts", "top_k", "routing", "skew_in_fit", "expert_tp", "verify"),
}
_META_KEYS = (
    "name",
    "time_unit",
    "provenance",
    "gpus_attention",
    "gpus_ffn",
    "kv_capacity_tokens",
    "state_tokens",
    "curves",
    "layers",
)
# Seconds per unit; "arbitrary" is an unnamed unit that is kept (the paper's Table 2).
TIME_UNITS: dict[str, float | None] = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "arbitrary": None}


def coeffs_from_dict(data: dict, source: str = "coefficients") -> LinearStepTimes:
    """Validate a parsed coefficients file and build the model (one-line errors)."""
    require(isinstance(data, dict), f"{source}: top level must be a table/object")
    unknown = set(data) - {*_SECTION_KEYS, *_OPTIONAL_SECTIONS, "meta", "measured"}
    require(
        not unknown,
        f"{source}: unknown section(s) {', '.join(sorted(unknown))}; "
        f"known: meta, {', '.join([*_SECTION_KEYS, *_OPTIONAL_SECTIONS])}, measured",
    )
    if "measured" in data:  # what the set was calibrated from: checked, not a step time
        check_measured(data["measured"], source)
    values: dict[str, dict] = {}
    for section, keys in _SECTION_KEYS.items():
        require(section in data, f"{source}: missing section [{section}]")
        body = _section(data, section, keys, source)
        for key in ("alpha", "beta"):
            require(key in body, f"{source}: [{section}] needs {key}")
        values[section] = {
            k: _number(f"{source}: {section}.{k}", v) for k, v in body.items() if k != "scope"
        }
    meta = _section(data, "meta", tuple(_META_KEYS), source)
    unit = str(meta.get("time_unit", "s"))
    require(
        unit in TIME_UNITS,
        f"{source}: unknown time_unit {unit!r}; known: {', '.join(TIME_UNITS)}",
    )
    scale = TIME_UNITS[unit]
    if scale is not None and scale != 1.0:
        values = {
            stage: {k: v * scale if k in ("alpha", "beta", "gamma") else v for k, v in body.items()}
            for stage, body in values.items()
        }
        unit = "s"
    layers = meta.get("layers")
    require(
        layers is None or (type(layers) is int and layers >= 1),
        f"{source}: meta.layers must be an integer >= 1, got {layers!r}",
    )
    curves = meta.get("curves")
    require(
        curves is None or (isinstance(curves, str) and curves.strip() != ""),
        f"{source}: meta.curves must be a table path or a shipped table name",
    )
    if curves is not None and not Path(curves).is_absolute() and Path(source).is_file():
        beside = Path(source).parent / curves
        curves = str(beside) if beside.exists() else curves
    scope = str(data["comm"].get("scope", "per_worker"))
    require(scope in COMM_SCOPES, f"{source}: comm.scope must be one of {', '.join(COMM_SCOPES)}")
    kv = meta.get("kv_capacity_tokens")
    state = meta.get("state_tokens", 0)
    require(
        type(state) is int and state >= 0,
        f"{source}: meta.state_tokens must be an integer >= 0, got {state!r}",
    )
    exchange, experts, overlap = _optional_sections(data, source, scale)
    return LinearStepTimes(
        attention=AttentionLinear(**values["attention"]),
        ffn=Linear(**values["ffn"]),
        comm=Linear(**values["comm"]),
        comm_scope=scope,  # type: ignore[arg-type]
        name=str(meta.get("name", source)),
        time_unit=unit,
        provenance=str(meta.get("provenance", "")),
        gpus_attention=_number(f"{source}: meta.gpus_attention", meta.get("gpus_attention", 1.0)),
        gpus_ffn=_number(f"{source}: meta.gpus_ffn", meta.get("gpus_ffn", 1.0)),
        kv_capacity_tokens=None
        if kv is None
        else int(_number(f"{source}: meta.kv_capacity_tokens", kv)),
        state_tokens=state,
        curves=curves,
        layers=None if layers is None else int(_number(f"{source}: meta.layers", layers)),
        exchange=exchange,
        exchange_overlap=overlap,
        experts=experts,
    )


def _optional_sections(
    data: dict, source: str, scale: float | None
) -> tuple[Linear | None, Experts | None, bool]:
    """``[exchange]`` (in the file's time unit; whether it overlaps) and ``[experts]``,
    each validated."""
    for section, keys in _OPTIONAL_SECTIONS.items():
        _section(data, section, keys, source)
    exchange, overlap = None, False
    if "exchange" in data:
        body = data["exchange"]
        for key in ("alpha", "beta"):
            require(key in body, f"{source}: [exchange] needs {key}")
        k = 1.0 if scale is None else scale
        exchange = Linear(
            alpha=_number(f"{source}: exchange.alpha", body["alpha"]) * k,
            beta=_number(f"{source}: exchange.beta", body["beta"]) * k,
        )
        overlap = body.get("overlap", False)
        require(isinstance(overlap, bool), f"{source}: exchange.overlap must be true or false")
    experts = None
    if "experts" in data:
        body = data["experts"]
        for key in ("experts", "top_k"):
            require(
                type(body.get(key)) is int,
                f"{source}: experts.{key} must be an integer, got {body.get(key)!r}",
            )
        skew = body.get("skew_in_fit", False)
        require(isinstance(skew, bool), f"{source}: experts.skew_in_fit must be true or false")
        counts = {key: body.get(key, 1) for key in ("expert_tp", "verify")}
        for key, value in counts.items():
            require(
                type(value) is int and value >= 1,
                f"{source}: experts.{key} must be an integer >= 1, got {value!r}",
            )
        experts = Experts(
            body["experts"], body["top_k"], Routing.parse(body.get("routing")), skew, **counts
        )
    return exchange, experts, overlap


def _section(data: dict, section: str, keys: tuple[str, ...], source: str) -> dict:
    """A file section (empty when absent): a table with only ``keys``, else one line."""
    body = data.get(section, {})
    require(isinstance(body, dict), f"{source}: [{section}] must be a table")
    extra = set(body) - set(keys)
    require(
        not extra,
        f"{source}: unknown key(s) in [{section}]: {', '.join(sorted(extra))}; "
        f"known: {', '.join(keys)}",
    )
    return body


def _number(name: str, value: object) -> float:
    require(
        isinstance(value, int | float) and not isinstance(value, bool),
        f"{name} must be a number, got {value!r}",
    )
    return check_nonnegative(name, value)  # type: ignore[arg-type]


def coeffs_to_dict(model: LinearStepTimes) -> dict:
    """The coefficients-file representation of ``model`` (inverse of coeffs_from_dict)."""
    meta: dict = {
        "name": model.name,
        "time_unit": model.time_unit,
        "provenance": model.provenance,
        "gpus_attention": model.gpus_attention,
        "gpus_ffn": model.gpus_ffn,
    }
    if model.kv_capacity_tokens is not None:
        meta["kv_capacity_tokens"] = model.kv_capacity_tokens
    if model.state_tokens:
        meta["state_tokens"] = model.state_tokens
    if model.curves is not None:
        meta["curves"] = model.curves
    if model.layers is not None:
        meta["layers"] = model.layers
    out = {
        "meta": meta,
        "attention": asdict(model.attention),
        "ffn": asdict(model.ffn),
        "comm": {**asdict(model.comm), "scope": model.comm_scope},
    }
    if model.exchange is not None:
        out["exchange"] = asdict(model.exchange)
        if model.exchange_overlap:
            out["exchange"]["overlap"] = True
    if model.experts is not None:
        e = model.experts
        out["experts"] = {
            "experts": int(e.experts),
            "top_k": int(e.top_k),
            "routing": str(e.routing),
            "skew_in_fit": e.skew_in_fit,
        }
        for key in ("expert_tp", "verify"):
            if getattr(e, key) > 1:
                out["experts"][key] = int(getattr(e, key))
    return out


def read_coeffs_file(path: str | Path) -> LinearStepTimes:
    """Load a JSON or TOML coefficients file."""
    path = Path(path)
    require(path.is_file(), f"{path}: no such coefficients file")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise InputError(f"{path}: cannot parse coefficients: {str(exc).splitlines()[0]}") from exc
    return coeffs_from_dict(data, source=str(path))


def write_coeffs_file(model: LinearStepTimes, path: str | Path) -> None:
    """Write ``model`` as JSON (``.json``) or TOML (anything else)."""
    path = Path(path)
    data = coeffs_to_dict(model)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(data, indent=2) + "\n")
    else:
        path.write_text(to_toml(data))


def to_toml(data: dict) -> str:
    """A minimal TOML writer for flat tables of strings, numbers and bools."""
    lines: list[str] = []
    for section, body in data.items():
        lines.append(f"[{section}]")
        for key, value in body.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(float(value)) if isinstance(value, float) else str(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


# ------------------------------------------------------------------------- presets


def builtin_coeff_names() -> list[str]:
    """Names of the shipped coefficient sets (``afdplan/presets/coefficients``)."""
    return coefficient_names()


def load_coeffs(name_or_path: str | Path | None = None) -> LinearStepTimes:
    """A built-in set by name, or a JSON/TOML file by path; ``None`` is the default set."""
    name = str(name_or_path) if name_or_path is not None else DEFAULT_COEFFS
    path = Path(name)
    if path.suffix.lower() in (".json", ".toml") or path.exists():
        return read_coeffs_file(path)
    if name not in builtin_coeff_names():
        raise unknown_name("coefficient set", name, builtin_coeff_names())
    return coeffs_from_dict(coefficient_table(name), source=name)
