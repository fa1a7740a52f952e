#!/usr/bin/env bash
# Rebuild the measured built-in coefficient sets from their sources. Needs the
# aiconfigurator-core extra (pip install -e ".[measured]") and Vidur's profiles in
# ../shared/data. The paper's set is copied from the paper and is not rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data/profiles/vidur
out=src/afdplan/timing/presets
nvlink="$data/network/h100_dgx/send_recv.csv"   # H100 DGX NVLink; H200 uses the same NVLink 4

afdplan calibrate --model llama3-70b --system h100_sxm --gpus-ffn 2 --ffn-range 1:4096 \
  --send-recv "$nvlink" --name llama3-70b-h100 -o "$out/llama3-70b-h100.toml"
afdplan calibrate --model deepseek-v3 --system h200_sxm --gpus-ffn 8 --ffn-range 256:16384 \
  --send-recv "$nvlink" --name deepseek-v3-h200 -o "$out/deepseek-v3-h200.toml"
