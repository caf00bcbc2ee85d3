#!/usr/bin/env bash
# The GPU figures of issue 10 in one short device run (about 5 minutes on an H100/H200), each report
# written to $OUT (or ./device-out): full-size sampler FLOP/s share and peak memory at batch 1/4/8/16 with
# the 10-hour-book projection, the full pipeline eager vs CUDA graphs, and the 8 GB profile (AE bf16,
# 576 latents) with its peak memory. Random weights: no download. Usage: bash bench/device_check.sh
set -euo pipefail
out="${OUT:-device-out}"
mkdir -p "$out"
py="${PYTHON:-python}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" || true
"$py" bench/bench_gpu_efficiency.py --device cuda > "$out/gpu_efficiency.json"
"$py" bench/bench_full_pipeline.py --device cuda --repeats 2 > "$out/full_pipeline.json"
"$py" bench/bench_full_pipeline.py --device cuda --repeats 2 --ae-dtype bfloat16 --frames 576 > "$out/profile_8gb.json"
cat "$out"/*.json
