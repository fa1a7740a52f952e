"""Timing: step-time models for Attention, FFN and communication (DESIGN.md §1, §6)."""

from afdplan.timing.experts import Experts, Routing
from afdplan.timing.linear import (
    COMM_SCOPES,
    DEFAULT_COEFFS,
    AttentionLinear,
    Linear,
    LinearStepTimes,
    builtin_coeff_names,
    coeffs_from_dict,
    coeffs_to_dict,
    load_coeffs,
    read_coeffs_file,
    transfer_each_way,
    transfer_tokens,
    write_coeffs_file,
)
from afdplan.timing.mtp import Mtp
from afdplan.timing.prefill import PrefillTimes
from afdplan.timing.protocol import StepTimes, gpus_per_instance, routed_experts, state_tokens
from afdplan.timing.tables import (
    AttentionTable,
    Curve,
    TableStepTimes,
    read_step_table,
    tables_from_frame,
    write_step_table,
)

__all__ = [
    "COMM_SCOPES",
    "DEFAULT_COEFFS",
    "AttentionLinear",
    "AttentionTable",
    "Curve",
    "Experts",
    "Linear",
    "LinearStepTimes",
    "Mtp",
    "PrefillTimes",
    "Routing",
    "StepTimes",
    "TableStepTimes",
    "builtin_coeff_names",
    "coeffs_from_dict",
    "coeffs_to_dict",
    "gpus_per_instance",
    "load_coeffs",
    "read_coeffs_file",
    "read_step_table",
    "routed_experts",
    "state_tokens",
    "tables_from_frame",
    "transfer_each_way",
    "transfer_tokens",
    "write_coeffs_file",
    "write_step_table",
]
