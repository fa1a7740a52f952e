"""Bad-input corpus: every command, every kind of mistake.

Each case must end with exit code 2, exactly one line on stderr that starts with
``error:`` and names the problem, no traceback and no Python warning. ``{bad}`` in an
argument is the folder of bad files made below; ``{tmp}`` a fresh scratch folder.
"""

from __future__ import annotations

import json

import pytest

PLAN = ["plan"]
SIM = ["simulate", "-r", "2", "-B", "4", "--requests", "200"]
PAPER = ["--coeffs", "paper-v1-dsv3-910c"]
OPEN = ["simulate", "--arrivals", "poisson", "--rate", "4", "-r", "2", "-B", "4"]
DEPLOY = ["deploy", "--gpus-ffn", "8", "-m", "2", "--no-verify", "--runtime", "none"]
GOOD_TRACE = "num_prefill_tokens,num_decode_tokens\n100,10\n200,20\n"
COEFFS = (
    "[attention]\nalpha=1e-8\nbeta=1e-3\n"
    "[ffn]\nalpha=1e-6\nbeta=1e-2\n"
    "[comm]\nalpha=1e-7\nbeta=1e-4\n"
)


def _deployment(**chosen) -> str:
    """A minimal ``afdplan deploy --json`` with the given chosen fields."""
    from afdplan.timing import coeffs_to_dict, load_coeffs

    base = {"r": 4, "batch": 32, "microbatches": 2, **chosen}
    return json.dumps(
        {
            "model": "deepseek-v3",
            "attention_hw": "h200",
            "ffn_hw": "h200",
            "chosen": base,
            "chosen_step_times": coeffs_to_dict(load_coeffs("deepseek-v3-h200")),
            "recommendation": "afd",
        }
    )


TIMESTAMPS = "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,3\n{},20,4\n2,10,3\n"

BAD_FILES = {
    "dep_frac.json": _deployment(r=3.5),
    "dep_huge.json": _deployment(batch=10**12),
    "dep_text.json": _deployment(microbatches="two"),
    "dep_null.json": json.dumps({"chosen": None}),
    "ts_inf.csv": TIMESTAMPS.format("inf"),
    "ts_minf.csv": TIMESTAMPS.format("-inf"),
    "ts_nan.csv": TIMESTAMPS.format("nan"),
    "ts_equal.csv": "arrived_at,num_prefill_tokens,num_decode_tokens\n1,10,3\n1,20,4\n",
    "empty.csv": "num_prefill_tokens,num_decode_tokens\n",
    "zero.csv": "",
    "nan.csv": "num_prefill_tokens,num_decode_tokens\n5,nan\n",
    "neg.csv": "num_prefill_tokens,num_decode_tokens\n5,0\n",
    "negp.csv": "num_prefill_tokens,num_decode_tokens\n-5,3\n",
    "cols.csv": "a,b\n5,1\n",
    "frac.csv": "num_prefill_tokens,num_decode_tokens\n5.5,3\n",
    "huge.csv": "num_prefill_tokens,num_decode_tokens\n1e300,3\n",
    "big.csv": "num_prefill_tokens,num_decode_tokens\n5,1e30\n",
    "text.csv": "num_prefill_tokens,num_decode_tokens\nfive,3\n",
    "ragged.csv": 'num_prefill_tokens,num_decode_tokens\n5,3\n"unclosed,4\n',
    "bools.jsonl": '{"prompt_tokens": true, "output_tokens": 3}\n',
    "bools2.jsonl": '{"prompt_tokens": 5, "output_tokens": false}\n',
    "bad.jsonl": "{not json\n",
    "trace.txt": GOOD_TRACE,
    "bad.parquet": "this is not parquet",
    "unsorted.csv": "arrived_at,num_prefill_tokens,num_decode_tokens\n2.0,10,3\n1.0,20,4\n",
    "good.csv": GOOD_TRACE,
    "good.toml": COEFFS,
    "neg.toml": COEFFS.replace("alpha=1e-8", "alpha=-1"),
    "meta.toml": "[meta]\ncolour = 'blue'\n" + COEFFS,
    "unit.toml": "[meta]\ntime_unit = 'minutes'\n" + COEFFS,
    "nosection.toml": COEFFS.split("[comm]")[0],
    "syntax.toml": "[attention\nalpha=1\n",
    "section.toml": COEFFS + "[gpu]\nname='x'\n",
    "key.toml": COEFFS.replace("beta=1e-2", "beta=1e-2\ndelta=3"),
    "string.toml": COEFFS.replace("alpha=1e-6", "alpha='fast'"),
    "zeroffn.toml": COEFFS.replace("alpha=1e-6", "alpha=0"),
    "scope.toml": COEFFS + "scope = 'global'\n",
    "curves.toml": "[meta]\ncurves = 'no-such-table.csv'\n" + COEFFS,
    "bad.json": "{",
    "nan.toml": COEFFS.replace("beta=1e-3", "beta=nan"),
    "ops.csv": "op,tokens,kv_tokens,batch,seconds\nmlp,1,,,0.1\nmlp,2,,,0.2\n",
    "negsec.csv": "op,tokens,kv_tokens,batch,seconds\nffn,1,,,-0.1\nffn,2,,,0.2\n",
    "onepoint.csv": "op,tokens,kv_tokens,batch,seconds\nffn,1,,,0.1\n",
    "topk.toml": COEFFS + "[experts]\nexperts = 8\ntop_k = 9\n",
    "experts.toml": COEFFS + "[experts]\nexperts = 8.5\ntop_k = 2\n",
    "routing.toml": COEFFS + "[experts]\nexperts = 8\ntop_k = 2\nrouting = 'zipf'\n",
    "exchange.toml": COEFFS + "[exchange]\nalpha = -1\nbeta = 0\n",
    "broken_config.json": "{",
    "partial_config.json": json.dumps({"hidden_size": 4096}),
    "not_results.json": json.dumps({"a": 1}),
    "a_file": "x",
}

CASES: list[tuple[list[str], str]] = [
    # ---------------------------------------------------------------- plan: options
    ([*PLAN, "--batch", "0"], "--batch must be an integer >= 1"),
    ([*PLAN, "--batch", "-4"], "--batch must be an integer >= 1"),
    ([*PLAN, "--batch", "x"], "not an integer"),
    ([*PLAN, "--batch", "1,2"], "takes one value here"),
    ([*PLAN, "--ratio", "0"], "--ratio must be an integer >= 1"),
    ([*PLAN, "--ratio", "5-2"], "needs integers 1 <= a <= b"),
    ([*PLAN, "--ratio", ","], "empty list"),
    ([*PLAN, "--ratio", "1-10000000"], "above the largest allowed value"),
    ([*PLAN, "--mode", "fast"], "Invalid value for '--mode'"),
    ([*PLAN, "--comm", "global"], "Invalid value for '--comm'"),
    ([*PLAN, "--w-ffn", "0"], "w_ffn must be > 0"),
    ([*PLAN, "--w-attention", "nan"], "w_attention must be a finite number"),
    ([*PLAN, "--w-ffn", "abc"], "Invalid value for '--w-ffn'"),
    ([*PLAN, "--nonsense"], "No such option: --nonsense"),
    ([*PLAN, "--batch", "100000"], "does not fit the KV cache"),
    # ---------------------------------------------------------------- expert routing
    ([*PLAN, "--routing", "zipf"], "unknown routing 'zipf'; known: balanced, power-law:ALPHA"),
    ([*PLAN, "--routing", "power-law:0"], "needs a finite ALPHA > 0, got 0.0"),
    ([*PLAN, "--routing", "power-law:-1.2"], "needs a finite ALPHA > 0, got -1.2"),
    ([*PLAN, "--routing", "power-law:nan"], "needs a finite ALPHA > 0"),
    ([*PLAN, "--routing", "power-law:x"], "ALPHA must be a number"),
    ([*PLAN, "--routing", "power-law:3"], "no power-law:3 routing rows for deepseek-v3 at EP 8"),
    ([*PLAN, *PAPER, "--routing", "power-law:1.2"], "has no routed experts (--routing)"),
    ([*SIM, "--routing", "power-law:0"], "needs a finite ALPHA > 0"),
    (["sweep", "--routing", "uniform"], "unknown routing 'uniform'"),
    (
        ["calibrate", "--model", "llama3-70b", "--hardware", "h100-sxm", "--routing", "balanced"],
        "--routing applies to an MoE model's routed experts",
    ),
    ([*PLAN, "--coeffs", "{bad}/topk.toml"], "experts.top_k = 9 exceeds the 8 experts"),
    ([*PLAN, "--coeffs", "{bad}/experts.toml"], "experts.experts must be an integer"),
    ([*PLAN, "--coeffs", "{bad}/routing.toml"], "unknown routing 'zipf'"),
    ([*PLAN, "--coeffs", "{bad}/exchange.toml"], "exchange.alpha must be >= 0"),
    # ---------------------------------------------------------------- pipelines, objectives
    ([*PLAN, "--pipeline", "warp"], "Invalid value for '--pipeline'"),
    ([*PLAN, "--pipeline", "pingpong", "-m", "0"], "micro-batches m must be an integer >= 1"),
    ([*PLAN, "--pipeline", "pingpong", "-m", "9", "-B", "4"], "exceed the batch B = 4"),
    ([*PLAN, "-m", "2"], "runs one micro-batch per step"),
    ([*PLAN, "--pipeline", "serial", "--mode", "overlap"], "not both"),
    ([*PLAN, "--pipeline", "pingpong", "--coeffs", "{bad}/good.toml"], "pass --layers L"),
    ([*PLAN, "--pipeline", "pingpong", "--layers", "0"], "layers L must be an integer >= 1"),
    ([*PLAN, "--objective", "cost"], "needs --price-attention and --price-ffn"),
    ([*PLAN, "--objective", "cost", "--price-attention", "2", "--price-ffn", "-1"], "> 0"),
    ([*PLAN, "--price-ffn", "2"], "with --objective cost only"),
    ([*PLAN, "--objective", "tokens"], "Invalid value for '--objective'"),
    ([*PLAN, "--ffn-dtype", "fp4"], "keeps the dtypes it was measured in"),
    ([*PLAN, "--kv-dtype", "fp9"], "Invalid value for '--kv-dtype'"),
    ([*PLAN, "--link", "warp"], "unknown link 'warp'; known: nvlink, ib-ndr, ib-xdr"),
    ([*PLAN, "--link", "0gbps@5us"], "the bandwidth must be > 0"),
    ([*PLAN, "--coeffs", "paper-v1-dsv3-910c", "--link", "ib-ndr"], "does not say which model"),
    ([*PLAN, "--gpus-ffn", "0"], "--gpus-ffn must be >= 1"),
    ([*PLAN, "--gpus-ffn", "4"], "--gpus-ffn 4: the FFN weights of deepseek-v3 need at least 6"),
    (
        [*PLAN, "--coeffs", "roofline:deepseek-v3@h200", "--gpus-ffn", "4"],
        "--gpus-ffn 4: the FFN weights of deepseek-v3 need at least 6 x h200",
    ),
    ([*PLAN, "--gpus-ffn", "12"], "does not divide the 256 experts of deepseek-v3"),
    (
        [*PLAN, "--coeffs", "roofline:qwen3-235b-a22b@gb200", "--gpus-ffn", "3"],
        "does not divide the 128 experts",
    ),
    (["simulate", "--pipeline", "pingpong", "-m", "5", "-B", "4", "-r", "2"], "exceed the batch"),
    (["sweep", "--pipeline", "aic-optimistic", "-m", "0"], "micro-batches m must be"),
    # ---------------------------------------------------------------- coefficient sets
    ([*PLAN, "--coeffs", "nope"], "unknown coefficient set 'nope'; known:"),
    ([*PLAN, "--coeffs", ""], "--coeffs is empty"),
    ([*PLAN, "--coeffs", "roofline:llama3-70b"], "use roofline:MODEL@HARDWARE"),
    ([*PLAN, "--coeffs", "roofline:nope@h100-sxm"], "unknown model 'nope'; known:"),
    ([*PLAN, "--coeffs", "roofline:llama3-70b@tpu9"], "unknown hardware 'tpu9'; known:"),
    ([*PLAN, "--coeffs", "roofline:llama3-70b@h20+"], "roofline:MODEL@ATTENTION_HW+FFN_HW"),
    ([*PLAN, "--coeffs", "roofline:llama3-70b@h20+tpu9"], "unknown hardware 'tpu9'; known:"),
    ([*PLAN, "--coeffs", "{bad}/neg.toml"], "attention.alpha must be >= 0"),
    ([*PLAN, "--coeffs", "{bad}/meta.toml"], "unknown key(s) in [meta]: colour; known:"),
    ([*PLAN, "--coeffs", "{bad}/unit.toml"], "unknown time_unit 'minutes'; known: s, ms, us"),
    ([*PLAN, "--coeffs", "{bad}/nosection.toml"], "missing section [comm]"),
    ([*PLAN, "--coeffs", "{bad}/syntax.toml"], "cannot parse coefficients"),
    ([*PLAN, "--coeffs", "{bad}/section.toml"], "unknown section(s) gpu; known:"),
    ([*PLAN, "--coeffs", "{bad}/key.toml"], "unknown key(s) in [ffn]: delta; known: alpha, beta"),
    ([*PLAN, "--coeffs", "{bad}/string.toml"], "ffn.alpha must be a number"),
    ([*PLAN, "--coeffs", "{bad}/zeroffn.toml"], "ffn.alpha must be > 0"),
    ([*PLAN, "--coeffs", "{bad}/scope.toml"], "comm.scope must be one of"),
    ([*PLAN, "--coeffs", "{bad}/curves.toml"], "no-such-table.csv: no such file"),
    ([*PLAN, "--coeffs", "{bad}/bad.json"], "cannot parse coefficients"),
    ([*PLAN, "--coeffs", "{bad}/nan.toml"], "attention.beta must be a finite number"),
    ([*PLAN, "--coeffs", "{bad}/missing.toml"], "no such coefficients file"),
    ([*PLAN, "--tables", "nope"], "nope: no such file; built-in tables names:"),
    ([*PLAN, "--tables", "{bad}/ops.csv"], "unknown op(s) mlp; known:"),
    ([*PLAN, "--tables", "{bad}/negsec.csv"], "negative 'seconds'"),
    ([*PLAN, "--tables", "{bad}/onepoint.csv"], "at least 2 distinct points"),
    ([*PLAN, "--tables", "{bad}"], "is a folder, not a tables file"),
    # ---------------------------------------------------------------- workload specs
    ([*PLAN, "--workload", ""], "--workload is empty"),
    ([*PLAN, "--workload", "geometric:prefill=1,decode_mean=nan"], "finite"),
    (
        [*PLAN, "--workload", "geometric:prefill=100,decode_mean=50,p=0.1"],
        "give decode_mean or p, not both",
    ),
    ([*PLAN, "--workload", "foo:x=1"], "unknown workload kind 'foo'; known:"),
    (
        [*PLAN, "--workload", "fixed:prefill=10,prefill_lo=1,prefill_hi=5,decode=3"],
        "one prompt law, got prefill and prefill_lo",
    ),
    ([*PLAN, "--workload", "geometric"], "needs KIND:params"),
    ([*PLAN, "--workload", "geometric:prefill=100"], "missing decode_mean"),
    ([*PLAN, "--workload", "fixed:prefill=-5,decode=10"], "must be >= 0"),
    ([*PLAN, "--workload", "fixed:prefill=10,decode=0"], "decode must be >= 1"),
    ([*PLAN, "--workload", "fixed:prefill=1e30,decode=10"], "at most"),
    ([*PLAN, "--workload", "fixed:prefill=10,decode=1e30"], "at most"),
    ([*PLAN, "--workload", "geometric:prefill=100,decode_mean=1e30"], "at most"),
    (
        [*PLAN, "--workload", "lognormal:prefill=100,decode_median=100,decode_sigma=1e30"],
        "too heavy",
    ),
    ([*PLAN, "--workload", "uniform:prefill=100,decode_lo=10,decode_hi=5"], "lo <= hi"),
    ([*PLAN, "--workload", "mix:abc"], "needs WEIGHT*SPEC"),
    ([*PLAN, "--workload", "mix:-1*fixed:prefill=1,decode=1"], "weight"),
    ([*PLAN, "--workload", "geometric:prefill=100,decode_mean=50,bogus=1"], "unknown parameter"),
    ([*PLAN, "--workload", "geometric:prefill=100,decode_mean=fifty"], "must be a number"),
    ([*PLAN, "--workload", "trace:"], "needs a path"),
    ([*PLAN, "--workload", "geometric:prefill=100,p=1.5"], "p"),
    # ---------------------------------------------------------------- traces
    ([*PLAN, "--trace", "missing.csv"], "missing.csv: no such file; built-in trace names:"),
    ([*PLAN, "--trace", "{bad}"], "is a folder, not a trace file"),
    ([*PLAN, "--trace", "{bad}/good.csv", "--workload", "fixed:prefill=1,decode=1"], "either"),
    ([*PLAN, "--trace", "{bad}/empty.csv"], "trace has no requests"),
    ([*PLAN, "--trace", "{bad}/zero.csv"], "file is empty"),
    ([*PLAN, "--trace", "{bad}/nan.csv"], "missing, NaN or not numbers"),
    ([*PLAN, "--trace", "{bad}/text.csv"], "missing, NaN or not numbers"),
    ([*PLAN, "--trace", "{bad}/neg.csv"], "decode length < 1"),
    ([*PLAN, "--trace", "{bad}/negp.csv"], "prompt length < 0"),
    ([*PLAN, "--trace", "{bad}/cols.csv"], "no prompt/decode length columns"),
    ([*PLAN, "--trace", "{bad}/frac.csv"], "not whole token counts"),
    ([*PLAN, "--trace", "{bad}/huge.csv"], "above the largest supported length"),
    ([*PLAN, "--trace", "{bad}/big.csv"], "above the largest supported length"),
    ([*PLAN, "--trace", "{bad}/bools.jsonl"], "true/false"),
    ([*PLAN, "--trace", "{bad}/bools2.jsonl"], "true/false"),
    ([*PLAN, "--trace", "{bad}/bad.jsonl"], "cannot read as jsonl"),
    ([*PLAN, "--trace", "{bad}/trace.txt"], "unknown file type '.txt'"),
    ([*PLAN, "--trace", "{bad}/bad.parquet"], "cannot read as parquet"),
    ([*PLAN, "--trace", "{bad}/ragged.csv"], "cannot read as csv"),
    ([*PLAN, "--trace", "{bad}/good.csv", "--prompt-col", "nope"], "column 'nope'"),
    ([*PLAN, "--trace", "{bad}/good.csv", "--decode-col", "x"], "column 'x'"),
    # ---------------------------------------------------------------- simulate
    (["simulate", "-r", "0", "-B", "4"], "--ratio must be an integer >= 1"),
    (["simulate", "-r", "2", "-B", "0"], "--batch must be an integer >= 1"),
    ([*SIM[:5], "--steps", "0"], "steps must be >= 1"),
    ([*SIM, "--steps", "5"], "give --requests or --steps, not both"),
    ([*SIM, "--kv-capacity", "0"], "KV capacity must be >= 1"),
    ([*SIM, "--kv-capacity", "lots"], "integer or 'auto'"),
    ([*SIM, "--seeds", "0"], "--seeds must be >= 1"),
    ([*SIM, "--seed", "-1"], "seed must be an integer >= 0"),
    ([*SIM, "--order", "replay"], "needs a trace"),
    ([*SIM, "--order", "sideways"], "Invalid value for '--order'"),
    ([*SIM, "--warmup", "hot"], "Invalid value for '--warmup'"),
    ([*SIM, "--warmup-steps", "-1"], "warmup steps must be >= 0"),
    ([*SIM, "--noise", "-1"], "noise must be >= 0"),
    ([*SIM, *PAPER, "--kv-capacity", "auto"], "has no kv_capacity_tokens"),
    (["simulate", "-r", "2", "-B", "100000"], "--overcommit"),
    (["simulate", "--trace", "{bad}/empty.csv", "-r", "1", "-B", "1"], "no requests"),
    # ---------------------------------------------------------------- sweep
    (["sweep", "--ratio", "0-3"], "needs integers 1 <= a <= b"),
    (["sweep", "--ratio", "5-2"], "needs integers 1 <= a <= b"),
    (["sweep", "--batch", "x"], "not an integer"),
    (["sweep", "--batch", ","], "empty list"),
    (["sweep", "--scheduler", "tcp://h:1"], "needs --backend dask or ray"),
    (["sweep", "--jobs", "0"], "--jobs must be >= 1 or -1"),
    (["sweep", "--backend", "bogus"], "Invalid value for '--backend'"),
    (["sweep", "-o", "{tmp}/rows.xlsx"], "unknown file type '.xlsx'"),
    (["sweep", "-o", "{bad}"], "is a folder; give a file name"),
    (["sweep", "-o", "{bad}/a_file/rows.csv"], "is a file, not a folder"),
    (["sweep", "--trace", "nope.csv"], "no such file"),
    (["sweep", "--batch", "100000", "--ratio", "1"], "does not fit the KV cache"),
    # ---------------------------------------------------------------- calibrate
    (["calibrate", "--model", "nope", "--hardware", "h100-sxm"], "unknown model 'nope'; known:"),
    (
        ["calibrate", "--model", "llama3-70b", "--hardware", "tpu9"],
        "unknown hardware 'tpu9'; known:",
    ),
    (["calibrate"], "nothing to calibrate"),
    (
        ["calibrate", "--model", "llama3-70b", "--hardware", "h100-sxm", "--data-version", "1"],
        "--data-version needs --system",
    ),
    (
        ["calibrate", "--model", "llama3-70b", "--system", "h100_sxm", "--framework", "tgi"],
        "Invalid value for '--framework'",
    ),
    (
        ["calibrate", "--model", "llama2-70b", "--hardware", "h100-sxm", "--vidur-mlp", "x.csv"],
        "x.csv: no such file; built-in vidur-mlp names:",
    ),
    (["calibrate", "--send-recv", "vidur-h100-dgx"], "need --model"),
    (
        ["calibrate", "--model", "llama3-70b", "--hardware", "h100-sxm", "--ffn-range", "5:1"],
        "LO:HI",
    ),
    (
        ["calibrate", "--model", "llama3-70b", "--hardware", "h100-sxm", "--ffn-range", "abc"],
        "LO:HI",
    ),
    (
        ["calibrate", "--model", "llama3-70b", "--hardware", "h100-sxm", "--mem-efficiency", "1.5"],
        "mem_efficiency must be in (0, 1]",
    ),
    (
        [
            "calibrate",
            "--model",
            "llama3-70b",
            "--hardware",
            "h100-sxm",
            "--compute-efficiency",
            "0",
        ],
        "compute_efficiency must be > 0",
    ),
    (["calibrate", "--model", "{bad}/broken_config.json", "--hardware", "h100-sxm"], "not valid"),
    (
        ["calibrate", "--model", "{bad}/partial_config.json", "--hardware", "h100-sxm"],
        "missing required field",
    ),
    (
        ["calibrate", "--model", "llama3-70b", "--hardware", "h100-sxm", "-o", "{tmp}/c.yaml"],
        "unknown file type '.yaml'",
    ),
    (
        ["calibrate", "--model", "llama3-70b", "--hardware", "h100-sxm", "--tables", "nope"],
        "nope: no such file",
    ),
    (
        [
            "calibrate",
            "--model",
            "llama3-70b",
            "--hardware",
            "h100-sxm",
            "--save-dir",
            "{bad}/a_file",
        ],
        "is a file, not a folder",
    ),
    # ---------------------------------------------------------------- validate and report
    (["validate", "--quick", "--jobs", "0"], "--jobs must be >= 1 or -1"),
    (["validate", "--quick", "-o", "{tmp}/v.txt"], "unknown file type '.txt'"),
    (["validate", "--quick", "--trace", "missing.csv"], "no such file"),
    (["validate", "--quick", "--grid", "deployment", "--pipeline", "serial"], "runs serial"),
    (["validate", "--quick", "--grid", "deployment", "-m", "2"], "runs serial"),
    (["validate", "--quick", "--objective", "cost"], "not per dollar"),
    (["validate", "--quick", "--grid", "huge"], "Invalid value for '--grid'"),
    (["validate", "--quick", "--scheduler", "tcp://x:1"], "--scheduler needs --backend"),
    (["validate", "--quick", "-o", "{bad}"], "is a folder; give a file name"),
    (["validate", "--quick", "--save-dir", "{bad}/a_file"], "is a file, not a folder"),
    (["report", "{bad}/missing.json"], "no such file"),
    (["report", "{bad}"], "is a folder"),
    (["report", "{bad}/bad.json"], "not valid JSON"),
    (["report", "{bad}/not_results.json"], "not validation results"),
    (["presets", "--bogus"], "No such option"),
    # open system and capacity
    (["capacity", "--rate", "0", "--tpot-ms", "80", "-r", "4", "-B", "16"], "--rate must be > 0"),
    (["capacity", "--rate", "nan", "--tpot-ms", "80"], "--rate must be > 0"),
    (["capacity", "--rate", "fast", "--tpot-ms", "80"], "is not a number or a multiple"),
    (["capacity", "--rate", "5"], "give an SLO: --tpot-ms, --wait-ms and/or --ttft-ms"),
    (["capacity", "--rate", "5", "--tpot-ms", "-1"], "--tpot-ms must be > 0"),
    (
        ["capacity", "--rate", "5", "--tpot-ms", "10", "-r", "4", "-B", "16"],
        "even an idle bundle's step takes",
    ),
    (
        [
            "capacity",
            "--rate",
            "1e5",
            "--wait-ms",
            "100",
            "-r",
            "2",
            "-B",
            "4",
            "--max-bundles",
            "2",
            "--requests",
            "3000",
            "--no-curve",
        ],
        "no fleet of up to 2 bundles keeps up with 100000 req/s",
    ),
    (
        ["capacity", "--rate", "10x", "--workload", "fixed:prefill=10,decode=5", "--tpot-ms", "80"],
        "a multiple needs a trace with arrival timestamps",
    ),
    (["capacity", "--deployment", "{bad}/missing.json", "--tpot-ms", "80"], "no such file"),
    (["capacity", "--deployment", "{bad}/bad.json", "--tpot-ms", "80"], "not valid JSON"),
    (["capacity", "--deployment", "{bad}/not_results.json", "--tpot-ms", "80"], "not the JSON of"),
    (["capacity", "--rate", "5", "--tpot-ms", "80", "--max-bundles", "0"], "--max-bundles"),
    (["capacity", "--rate", "5", "--ttft-ms", "500"], "--ttft-ms needs the prefill"),
    (
        ["capacity", "--rate", "5", "--tpot-ms", "80", "--prefill-alpha", "-1"],
        "--prefill-alpha must be >= 0",
    ),
    (["capacity", "--rate", "5", "--tpot-ms", "80", "--jobs", "0"], "--jobs must be >= 1"),
    (["capacity", "--rate", "5", "--tpot-ms", "80", "--router", "random"], "Invalid value"),
    ([*OPEN, "--bundles", "0"], "--bundles must be >= 1"),
    (["simulate", "--arrivals", "poisson", "-r", "2", "-B", "4"], "poisson arrivals need --rate"),
    ([*OPEN, "--arrivals", "trace", "--workload", "fixed:prefill=10,decode=5"], "arrival-time"),
    ([*OPEN, "--arrivals", "gamma"], "gamma:cv=X"),
    ([*OPEN, "--arrivals", "gamma:cv=-1"], "gamma cv must be > 0"),
    ([*OPEN, "--arrivals", "gamma:k=2"], "only gamma takes a parameter, as gamma:cv=X"),
    ([*OPEN, "--arrivals", "burst"], "arrivals must be one of trace, poisson, gamma:cv=X"),
    ([*OPEN, "--arrivals", "poisson:cv=2"], "only gamma takes a parameter"),
    ([*OPEN, "--order", "replay"], "--order: not applied to the open system"),
    ([*OPEN, "--link", "ib-ndr"], "--link: not applied to the open system"),
    ([*OPEN, "--weight-dtype", "fp8"], "--weight-dtype: not applied to the open system"),
    ([*OPEN, "--requests", "0"], "--requests must be >= 1, got 0"),
    ([*OPEN, "--arrivals", "gamma:cv=1e200"], "gamma cv must be <= 100"),
    (
        [*OPEN, "--arrivals", "trace", "--trace", "{bad}/ts_inf.csv"],
        "not a finite time at data row 2 (inf)",
    ),
    (
        [*OPEN, "--arrivals", "trace", "--trace", "{bad}/ts_minf.csv"],
        "not a finite time at data row 2 (-inf)",
    ),
    (
        [*OPEN, "--arrivals", "trace", "--trace", "{bad}/ts_nan.csv"],
        "not a finite time at data row 2",
    ),
    (
        [*OPEN, "--trace", "{bad}/ts_equal.csv", "--rate", "2x"],
        "every arrival of the trace is at one instant",
    ),
    (
        ["capacity", "--deployment", "{bad}/dep_frac.json", "--rate", "5", "--tpot-ms", "80"],
        "chosen r must be an integer >= 1, got 3.5",
    ),
    (
        ["capacity", "--deployment", "{bad}/dep_huge.json", "--rate", "5", "--tpot-ms", "80"],
        "exceeds the KV capacity",
    ),
    (
        ["capacity", "--deployment", "{bad}/dep_text.json", "--rate", "5", "--tpot-ms", "80"],
        "chosen microbatches must be an integer",
    ),
    (
        ["capacity", "--deployment", "{bad}/dep_null.json", "--rate", "5", "--tpot-ms", "80"],
        "no 'chosen' configuration",
    ),
    (
        ["capacity", "--rate", "5", "--tpot-ms", "80", "--architecture", "colocated"],
        "--architecture picks one of a deployment's answers; give --deployment",
    ),
    (
        [
            "capacity", "--deployment", "{bad}/dep_text.json", "--rate", "5", "--tpot-ms",
            "80", "--architecture", "colocated",
        ],
        "holds no colocated group to size",
    ),
    (
        [
            "capacity", "--deployment", "{bad}/dep_text.json", "--rate", "5", "--tpot-ms",
            "80", "--architecture", "both",
        ],
        "'both' is not one of",
    ),
    (
        [
            "capacity",
            "--deployment",
            "{bad}/dep_frac.json",
            "--rate",
            "5",
            "--tpot-ms",
            "80",
            "-m",
            "2",
        ],
        "-m: --deployment fixes",
    ),
    (
        [
            "capacity",
            "--deployment",
            "{bad}/dep_frac.json",
            "--rate",
            "5",
            "--tpot-ms",
            "80",
            "--coeffs",
            "x",
        ],
        "--coeffs: --deployment fixes",
    ),
    (
        [
            "capacity",
            "--rate",
            "5",
            "--tpot-ms",
            "80",
            "--price-attention",
            "-1",
            "--price-ffn",
            "2",
        ],
        "--price-attention must be > 0",
    ),
    (["simulate", "-r", "2", "-B", "4", "--bundles", "3"], "--bundles: open-system option"),
    (["simulate", "-r", "2", "-B", "4", "--router", "round-robin"], "--router: open-system option"),
    ([*OPEN, "--rate", "1,2"], "--rate takes one value here"),
    ([*OPEN, "--trace", "{bad}/unsorted.csv", "--arrivals", "trace"], "not in order"),
    # deploy (fast: one FFN group, one m, no simulation)
    ([*DEPLOY, "--tpot-ms", "0"], "--tpot-ms must be > 0"),
    ([*DEPLOY, "--tpot-ms", "nan"], "--tpot-ms"),
    ([*DEPLOY, "--tpot-ms", "1"], "no AFD configuration meets p99 step time <= 1 ms; the closest"),
    ([*DEPLOY, "--tpot-percentile", "p95"], "Invalid value for '--tpot-percentile'"),
    ([*DEPLOY, "--model", "gpt-7"], "unknown model 'gpt-7'; known:"),
    ([*DEPLOY, "--model", "acme/NoSuchModel-1B"], "unknown Hugging Face model"),
    ([*DEPLOY, "--model", "{bad}/bad.json"], "not valid JSON"),
    ([*DEPLOY, "--attention-hw", "h300"], "unknown hardware 'h300'; known:"),
    ([*DEPLOY, "--ffn-hw", "tpu"], "unknown hardware 'tpu'; known:"),
    ([*DEPLOY, "--runtime", "trtllm"], "Invalid value for '--runtime'"),
    ([*DEPLOY, "--runtime", "vllm-afd", "--runtime-version", "0.9"], "unknown vllm-afd version"),
    ([*DEPLOY, "--runtime-version", "0.19.1rc1"], "--runtime none has no releases"),
    ([*DEPLOY, "--redundant-experts", "-1"], "--redundant-experts must be >= 0"),
    ([*DEPLOY, "--max-batch-per-rank", "0"], "--max-batch-per-rank must be >= 1"),
    ([*DEPLOY, "--gpus", "1"], "--gpus must be >= 2"),
    ([*DEPLOY, "--gpus-ffn", "0"], "--gpus-ffn must be an integer >= 1"),
    ([*DEPLOY, "--gpus-ffn", "7"], "does not divide the 256 experts"),
    ([*DEPLOY, "--network", "nvlink"], "--network: nvlink is the scale-up domain itself"),
    ([*DEPLOY, "--network", "warp"], "unknown link 'warp'"),
    ([*DEPLOY, "--microbatches", "x"], "--microbatches: 'x' is not an integer"),
    ([*DEPLOY, "--objective", "cost", "--attention-hw", "h20"], "no public price for h20"),
    ([*DEPLOY, "--top", "0"], "--top must be >= 1"),
    ([*DEPLOY, "--seeds", "0"], "--seeds must be >= 1"),
    ([*DEPLOY, "--trace", "{bad}/empty.csv"], "no requests"),
    ([*DEPLOY, "--save-dir", "{bad}/a_file"], "is a file, not a folder"),
    ([*DEPLOY, "--gpus-ffn", "4"], "the FFN weights of deepseek-v3 need at least 6 x h200"),
    (
        [*DEPLOY, "--runtime", "vllm-afd", "-m", "3", "--tpot-ms", "100"],
        "no configuration that vllm-afd can launch meets the SLO",
    ),
]


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    for name, text in BAD_FILES.items():
        (folder / name).write_text(text)
    return folder


def test_corpus_is_large_and_distinct():
    assert len(CASES) >= 80
    keys = [tuple(args) for args, _ in CASES]
    assert len(keys) == len(set(keys))
    commands = {args[0] for args, _ in CASES}
    assert commands >= {
        "plan",
        "simulate",
        "sweep",
        "calibrate",
        "validate",
        "report",
        "presets",
        "deploy",
    }


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_exit_2(cli, bad_dir, tmp_path, args, message):
    argv = [a.replace("{bad}", str(bad_dir)).replace("{tmp}", str(tmp_path)) for a in args]
    res = cli(*argv)
    assert res.code == 2, (res.code, res.err, res.out[-300:])
    assert res.err.startswith("error: "), res.err
    assert res.err.strip().count("\n") == 0, res.err
    assert message in res.err, res.err
    assert "Traceback" not in res.err and "Warning" not in res.err
    assert "internal error" not in res.err
