"""The presets folder: hardware, models and coefficient sets as data, one loader."""

from __future__ import annotations

from importlib import resources
from importlib.util import find_spec

import pytest

from afdplan.calibrate.measured_sets import shipped_sources
from afdplan.calibrate.specs import HARDWARE_FIELDS, hardware_names, load_hardware
from afdplan.data import builtin_path, resolve_input
from afdplan.errors import InputError
from afdplan.presets import coefficient_names, measured_sets, system_hardware
from afdplan.timing import load_coeffs


def test_every_preset_loads_and_systems_map_to_presets():
    for name in hardware_names():
        hw = load_hardware(name)
        for system in hw.aiconfigurator_systems:
            assert load_hardware(system).name == name
    assert system_hardware()["h200_sxm"] == "h200"
    assert system_hardware()["gb200"] == system_hardware()["gb200_nvl72"] == "gb200"
    for name in coefficient_names():
        load_coeffs(name)


@pytest.mark.skipif(find_spec("aiconfigurator_core") is None, reason="needs the measured extra")
def test_claimed_systems_exist_in_aiconfigurator_core():
    shipped = resources.files("aiconfigurator_core") / "systems"
    known = {p.name[:-5] for p in shipped.iterdir() if p.name.endswith(".yaml")}
    # gb200_nvl72 is the name older aiconfigurator releases used for gb200
    assert set(system_hardware()) - {"gb200_nvl72"} <= known


def test_measured_sets_describe_themselves():
    sets = measured_sets()
    assert set(sets) == {"deepseek-v3-h200", "llama3-70b-h100"}
    ds = shipped_sources()["deepseek-v3-h200"]
    assert (ds.model, ds.system, ds.framework, ds.gpus_ffn) == (
        "deepseek-v3",
        "h200_sxm",
        "vllm",
        8,
    )
    assert ds.ffn_range == (256, 16384)
    # the table ships beside the set and resolves by the set's name
    assert resolve_input("deepseek-v3-h200", "tables") == builtin_path("deepseek-v3-h200")
    assert builtin_path("deepseek-v3-h200").is_file()


def test_hardware_from_a_file(tmp_path):
    h200 = load_hardware("h200")
    flat = tmp_path / "my-gpu.toml"
    flat.write_text(
        "flops_bf16 = 989e12\nflops_fp8 = 1979e12\nhbm_bandwidth = 4.8e12\n"
        "hbm_bytes = 141e9\nlink_bandwidth = 450e9\nlink_latency = 8e-6\n"
    )
    mine = load_hardware(str(flat))
    assert mine.name == "my-gpu" and mine.hbm_bandwidth == h200.hbm_bandwidth
    table = tmp_path / "t.toml"
    table.write_text("[pcie-box]\n" + flat.read_text() + "scaleup_gpus = 1\n")
    assert load_hardware(str(table)).scaleup_gpus == 1
    assert set(HARDWARE_FIELDS) >= {"flops_bf16", "scaleup_gpus", "aiconfigurator_systems"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("flops_bf16 = 1e12\n", "hardware needs flops_fp8"),
        ("[x]\nflops_bf16 = 1e12\nwarp = 3\n", "unknown hardware key(s) warp; known:"),
        ("flops_bf16 = 'fast'\n", "flops_bf16 must be a number"),
        ("flops_bf16 = -1.0\n", "flops_bf16 must be > 0"),
        ("flops_bf16 = [\n", "not valid TOML"),
    ],
)
def test_bad_hardware_files(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    full = text
    if "must be" in message:
        full += (
            "flops_fp8 = 1e12\nhbm_bandwidth = 1e12\nhbm_bytes = 1e9\n"
            "link_bandwidth = 1e9\nlink_latency = 1e-6\n"
        )
    path.write_text(full)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_hardware(str(path))
    with pytest.raises(InputError, match="no such hardware file"):
        load_hardware(str(tmp_path / "missing.toml"))


@pytest.mark.skipif(find_spec("aiconfigurator_core") is None, reason="needs the measured extra")
def test_every_aiconfigurator_system_is_hardware():
    # Systems without a preset are derived from their YAML: the scale-up domain is one
    # GPU on a PCIe-only host, the rack on an NVL72 system.
    from afdplan.calibrate.specs import aiconfigurator_systems

    for system in aiconfigurator_systems():
        assert load_hardware(system).hbm_bandwidth > 0
    rtx = load_hardware("rtx_pro_6000_server")
    assert rtx.scaleup_gpus == 1 and rtx.link_bandwidth == 64e9 and "PCIe only" in rtx.source
    assert rtx.hbm_bandwidth == 1.792e12 and rtx.board_power_w == 600
    gb300 = load_hardware("gb300")
    assert gb300.scaleup_gpus == 72 and gb300.network_bandwidth == 100e9
    assert load_hardware("h200_sxm").name == "h200"  # a preset wins over the derivation
    with pytest.raises(InputError, match="rtx_pro_6000_server"):
        load_hardware("no-such-gpu")


def test_presets_prints_hardware_as_toml_that_loads_back(tmp_path, cli):
    from dataclasses import asdict

    res = cli("presets", "--hardware", "gb200")
    assert res.code == 0
    path = tmp_path / "mine.toml"
    path.write_text(res.out.replace("[gb200]", "[my-gb200]"))
    mine, ref = asdict(load_hardware(str(path))), asdict(load_hardware("gb200"))
    assert mine.pop("name") == "my-gb200" and ref.pop("name") == "gb200"
    assert mine == ref


def test_short_aliases_and_did_you_mean():
    assert load_hardware("h100").name == "h100-sxm" and load_hardware("A100").name == "a100-80g"
    with pytest.raises(InputError, match=r"unknown hardware 'h1000'; known: .*h100,"):
        load_hardware("h1000")  # a short list is given whole
    # a long list names the closest five, not all of them
    from afdplan.errors import unknown_name

    names = [f"org/model-{i}" for i in range(40)] + ["meta-llama/Meta-Llama-3.1-70B"]
    message = str(unknown_name("model", "meta-llama/Llama-3.1-70B", names))
    assert "did you mean meta-llama/Meta-Llama-3.1-70B" in message and "(41 known)" in message
    assert message.count("org/model") <= 4
    assert str(unknown_name("x", "b", ["a", "c"])) == "unknown x 'b'; known: a, c"
