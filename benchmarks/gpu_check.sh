#!/usr/bin/env bash
# The GPU check of the performance issue, in one go on one H100/H200 (estimated at 6-7 minutes; not yet run on a
# GPU; docs/performance.md "GPU"): ViT-B inference side by side with plain timm and the bf16 matmul peak
# (`asit perf --compare`: clips/s, fraction of the measured peak = MFU of inference), then ViT-B inference and the
# ASiT pretraining step at the paper's 40 clips per GPU (steps/s, peak memory, where the step's time goes), fp32 and
# bf16, and the bf16 step once more with trainer.compile's regional torch.compile (--compile). JSON into
# benchmarks/results/ named after the GPU.
#
#   benchmarks/gpu_check.sh                    # on the GPU machine, from the repository root, after scripts/setup.sh
#   DEVICE=cpu MODEL=vit-tiny BATCH=2 REPEATS=1 benchmarks/gpu_check.sh   # a quick dry run of the same commands
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-vit-base}
BATCH=${BATCH:-40}
REPEATS=${REPEATS:-5}
OUT=${OUT:-benchmarks/results}
ASIT=${ASIT:-.venv/bin/asit}
if [[ $DEVICE == cuda* ]]; then
  NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9\n' '-' | tr -s '-')
else
  NAME=$DEVICE
fi
mkdir -p "$OUT"
"$ASIT" perf --compare --models "$MODEL" --padding step --device "$DEVICE" --batch "$BATCH" --repeats "$REPEATS" \
  --out "$OUT/perf-compare-$NAME.json"
"$ASIT" perf --models "$MODEL" --precisions fp32 bf16 --benches inference pretrain --padding step --device "$DEVICE" \
  --batch "$BATCH" --train-batch "$BATCH" --repeats "$REPEATS" --out "$OUT/perf-$NAME.json"
"$ASIT" perf --models "$MODEL" --precisions bf16 --benches pretrain --compile --device "$DEVICE" \
  --train-batch "$BATCH" --repeats "$REPEATS" --out "$OUT/perf-compile-$NAME.json"
echo "gpu_check: wrote $OUT/perf-compare-$NAME.json, $OUT/perf-$NAME.json and $OUT/perf-compile-$NAME.json"
