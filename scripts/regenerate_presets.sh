#!/usr/bin/env bash
# Rebuild every measured coefficient set and its shipped measured table from the sources
# its own [measured] table names (model, aiconfigurator-core system and framework, FFN
# token range, transfer measurements) and its [meta] FFN group. Needs the
# aiconfigurator-core extra (pip install -e ".[measured]"). Sets without [measured] (the
# paper's, copied from the paper) are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
presets=src/afdplan/presets/coefficients
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for file in "$presets"/*.toml; do
  name=$(basename "$file" .toml)
  # One line of shell words per set: its calibrate arguments, read from its own TOML.
  args=$(python - "$file" <<'PY'
import shlex, sys, tomllib
data = tomllib.load(open(sys.argv[1], "rb"))
m = data.get("measured")
if m is None:
    sys.exit(0)
out = ["--model", m["model"], "--system", m["system"], "--framework", m["framework"],
       "--gpus-ffn", str(int(data["meta"]["gpus_ffn"]))]
if "ffn_range" in m:
    out += ["--ffn-range", f"{m['ffn_range'][0]}:{m['ffn_range'][1]}"]
if "send_recv" in m:
    out += ["--send-recv", m["send_recv"]]
print(shlex.join(out))
PY
)
  [ -n "$args" ] || continue
  # The [measured] table is kept as it is: it is the input, not an output.
  measured=$(sed -n '/^# What this set was calibrated from/,$p' "$file")
  eval "afdplan calibrate $args --name $name --save-dir $work/$name"
  # The shipped table holds the kernel measurements only (comm stays on the linear fit),
  # and the set names it under [meta], after its time unit.
  sed "s/^time_unit = \"s\"\$/&\ncurves = \"$name\"/" "$work/$name/coefficients.toml" > "$file"
  printf '\n%s\n' "$measured" >> "$file"
  grep -v '^comm,' "$work/$name/table.csv" > "$presets/$name.csv"
done
