#!/usr/bin/env bash
# Everything to measure on a CUDA GPU, in one command of under 9 minutes (random weights of the real shapes, and the
# SmolLM2 GGUF that benchmark/gpu_carry.sh split in two for the learning step: no hub):
#   0. a GPU, or one line that says there is none; the wheels that benchmark/gpu_wheels.sh put in .whl/ (carried with
#      the tree) installed into /tmp/site, and the packages checked against what they require; the GGUF joined from
#      /tmp/gguf/part1 (run 1 left it there) and .carry/gguf2/part, and checked against its SHA-256;
#   1. gpu_check.py --only equivalence: the scorer against naive scoring on the device (fp32, bf16);
#   2. gpu_learning.py: glam_ppo.py on GoToLocal from SmolLM2-135M-Instruct, then its randomly initialised twin, the
#      same seed, settings and frames (about 5 minutes; LEARNING=0 leaves it out, as where the GGUF did not travel);
#   3. train_speed.py: glam_ppo.py at flan-t5-large's shape with the paper's batch (32 envs x 40 steps, minibatch 64);
#   4. scoring_speed.py on the device, up to flan-t5-large's shape;
#   5. gpu_check.py --only memory auto: the memory of the rollout and update passes at flan-t5-large's shape next to
#      benchmark/memory.py's prediction, and the pass sizes that --grad-accum-minibatch auto halves to there.
# Each step gets what is left of the 9 minutes; one that runs out is cut and the summary says so. Results (8 files:
# gpu_check.json and .md, learning.json and .png, train_speed.json, scoring_speed.json, gpu.log with every step's
# output, summary.md) go to $OUT when it is set (the device tool hands that folder back), else to benchmark/gpu/, and
# the last lines printed are the summary (gpu_summary.py). The two device calls, after gpu_wheels.sh and gpu_carry.sh
# here: benchmark/README.md, GPU day.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
budget=${BUDGET:-540}
export PYTHONUNBUFFERED=1
if ! python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu.sh: error: no CUDA GPU here (torch.cuda.is_available() is False); these measurements need one" >&2
  exit 1
fi
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 - <<'EOF' || exit 1
# What the project imports, and what the carried wheels require, at versions that meet their requirements.
import sys
from importlib import metadata
from packaging.requirements import Requirement
problems = []
CARRIED = ("transformers", "minigrid", "pygame-ce", "gymnasium", "farama-notifications", "tyro", "docstring-parser", "typeguard", "gguf")
for name in (*CARRIED, "torch", "tensorboard", "psutil", "pillow", "tqdm", "numpy", "packaging"):
    try:
        metadata.version(name)
        # The requirements of the carried wheels; the image's own packages are its own affair.
        for spec in (metadata.requires(name) or []) if name in CARRIED else []:
            requirement = Requirement(spec)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            try:
                found = metadata.version(requirement.name)
            except metadata.PackageNotFoundError:
                found = None
            if found is None or not requirement.specifier.contains(found, prereleases=True):
                problems.append(f"{name} needs {requirement}: {found or 'not installed'}")
    except metadata.PackageNotFoundError:
        problems.append(f"{name}: not installed (run benchmark/gpu_wheels.sh here and carry .whl)")
if problems:
    sys.exit("gpu.sh: error: " + "; ".join(problems))
print("packages:", ", ".join(f"{n} {metadata.version(n)}" for n in ("torch", "transformers", "minigrid", "tyro")))
EOF
OUT=${OUT:-benchmark/gpu}
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
: > "$LOG"
GGUF=/tmp/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
if [ "${LEARNING:-1}" = 1 ] && [ ! -f "$GGUF" ]; then
  if [ ! -f /tmp/gguf/part1 ] || [ ! -f .carry/gguf2/part ]; then
    echo "gpu.sh: error: the GGUF's part 1 is not on this machine (run 1 went to another one); LEARNING=0 bash benchmark/gpu.sh measures the rest" >&2
    exit 1
  fi
  cat /tmp/gguf/part1 .carry/gguf2/part > "$GGUF"
  if [ "$(sha256sum "$GGUF" | cut -d' ' -f1)" != "$(cat .carry/gguf2/sha256)" ]; then
    echo "gpu.sh: error: the joined GGUF's SHA-256 is not the one gpu_carry.sh recorded; LEARNING=0 bash benchmark/gpu.sh measures the rest" >&2
    exit 1
  fi
fi

step() {  # step NAME COMMAND...: runs with what is left of the budget, its output also in $OUT/gpu.log
  local name=$1 left=$((budget - (SECONDS - start)))
  shift
  if [ "$left" -lt 20 ]; then
    echo "gpu.sh: $name skipped: the ${budget} s budget is spent" | tee -a "$LOG"
    return
  fi
  echo "== $name (up to ${left} s)" | tee -a "$LOG"
  timeout --signal=INT --kill-after=10 "$left" "$@" 2>&1 | tee -a "$LOG"
  local status=${PIPESTATUS[0]}
  [ "$status" -eq 0 ] || echo "gpu.sh: $name stopped (exit $status) after $((SECONDS - start)) s" | tee -a "$LOG"
}

step equivalence python3 benchmark/gpu_check.py --only equivalence --out-dir "$OUT"
if [ "${LEARNING:-1}" = 1 ]; then
  step learning python3 benchmark/gpu_learning.py --model "$GGUF" --seconds 140 --out-dir /tmp/learning
  cp /tmp/learning/learning.json /tmp/learning/learning.png "$OUT/" 2>/dev/null || true
fi
step train_speed python3 benchmark/train_speed.py --models t5-large-shape --paper-batch --updates 2 \
  --extra-flags=--gradient-checkpointing --out "$OUT/train_speed.json"
step scoring_speed python3 benchmark/scoring_speed.py --device cuda \
  --models tiny-t5 t5-small-shape t5-base-shape t5-large-shape smollm2-135m-shape --out "$OUT/scoring_speed.json"
step memory python3 benchmark/gpu_check.py --only memory auto --out-dir "$OUT"
echo "== summary ($((SECONDS - start)) s in all)"
python3 benchmark/gpu_summary.py "$OUT" | tee "$OUT/summary.md"
