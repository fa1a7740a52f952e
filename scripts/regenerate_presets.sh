#!/usr/bin/env bash
# Rebuild the measured built-in coefficient sets and their shipped measured tables from
# their sources. Needs the aiconfigurator-core extra (pip install -e ".[measured]"); the
# NVLink transfers come from Vidur's profile shipped with afdplan. The paper's set is
# copied from the paper and is not rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
presets=src/afdplan/timing/presets
tables=src/afdplan/data/measured
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

afdplan calibrate --model llama3-70b --system h100_sxm --gpus-ffn 2 --ffn-range 1:4096 \
  --send-recv vidur-h100-dgx --name llama3-70b-h100 --save-dir "$work/llama"
afdplan calibrate --model deepseek-v3 --system h200_sxm --gpus-ffn 8 --ffn-range 256:16384 \
  --send-recv vidur-h100-dgx --name deepseek-v3-h200 --save-dir "$work/ds"
# The shipped tables hold the kernel measurements only (comm stays on the linear fit).
for pair in "llama:llama3-70b-h100" "ds:deepseek-v3-h200"; do
  src=${pair%%:*}; name=${pair#*:}
  # Each set names its shipped table under [meta], after its time unit.
  sed "s/^time_unit = \"s\"\$/&\ncurves = \"$name\"/" "$work/$src/coefficients.toml" \
    > "$presets/$name.toml"
  grep -v '^comm,' "$work/$src/table.csv" > "$tables/$name.csv"
done
