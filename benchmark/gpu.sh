#!/usr/bin/env bash
# Everything to measure on a CUDA GPU, in one command of under 10 minutes (random weights of the real shapes: no hub):
#   1. gpu_check.py: the scorer against naive scoring on the device (fp32, bf16); the memory of the rollout and update
#      passes at flan-t5-large's shape (torch.cuda.max_memory_allocated) next to benchmark/memory.py's prediction;
#      what --grad-accum-minibatch auto picks on the device, and the measured peak of a pass of that size;
#   2. scoring_speed.py on the device, up to flan-t5-large's shape;
#   3. train_speed.py: glam_ppo.py at flan-t5-large's shape with the paper's batch (32 envs x 40 steps, minibatch 64).
# Results go to benchmark/gpu/ as JSON and markdown.
#   bash benchmark/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu.sh: no CUDA GPU here (torch.cuda.is_available() is False); these measurements need one" >&2
  exit 1
fi
OUT=benchmark/gpu
mkdir -p "$OUT"
python benchmark/gpu_check.py --out-dir "$OUT"
python benchmark/scoring_speed.py --device cuda --models tiny-t5 t5-small-shape t5-base-shape t5-large-shape smollm2-135m-shape \
  --out "$OUT/scoring_speed.json" | tee "$OUT/scoring_speed.md"
python benchmark/train_speed.py --models t5-large-shape --paper-batch --extra-flags "--gradient-checkpointing" \
  --out "$OUT/train_speed.json" | tee "$OUT/train_speed.md"
