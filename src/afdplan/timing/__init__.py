"""Timing: step-time models for Attention, FFN and communication (DESIGN.md §1, §6)."""

from afdplan.timing.linear import (
    COMM_SCOPES,
    DEFAULT_COEFFS,
    AttentionLinear,
    CommScope,
    Linear,
    LinearStepTimes,
    builtin_coeff_names,
    coeffs_from_dict,
    coeffs_to_dict,
    load_coeffs,
    read_coeffs_file,
    write_coeffs_file,
)

__all__ = [
    "COMM_SCOPES",
    "DEFAULT_COEFFS",
    "AttentionLinear",
    "CommScope",
    "Linear",
    "LinearStepTimes",
    "builtin_coeff_names",
    "coeffs_from_dict",
    "coeffs_to_dict",
    "load_coeffs",
    "read_coeffs_file",
    "write_coeffs_file",
]
