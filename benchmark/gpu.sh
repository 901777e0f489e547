#!/usr/bin/env bash
# Everything to measure on a CUDA GPU, in one command of under 7 minutes (random weights of the real shapes: no hub):
#   0. a GPU, or one line that says there is none; the wheels that benchmark/gpu_wheels.sh put in .whl/ (carried with
#      the tree) installed into /tmp/site, and the packages checked against what they require;
#   1. gpu_check.py: the scorer against naive scoring on the device (fp32, bf16); the memory of the rollout and update
#      passes at flan-t5-large's shape (torch.cuda.max_memory_allocated) next to benchmark/memory.py's prediction;
#      what --grad-accum-minibatch auto picks on the device, and the measured peak of a pass of that size;
#   2. scoring_speed.py on the device, up to flan-t5-large's shape;
#   3. train_speed.py: glam_ppo.py at flan-t5-large's shape with the paper's batch (32 envs x 40 steps, minibatch 64).
# Each step gets what is left of the 7 minutes; one that runs out is cut and the summary says so. Results (JSON,
# markdown and each step's log: 8 files) go to $OUT when it is set (the device tool hands that folder back), else to
# benchmark/gpu/, and the last lines printed are the summary table (gpu_summary.py).
#   bash benchmark/gpu_wheels.sh                                               # here, once: the wheels (25 MiB)
#   run(command="bash benchmark/gpu.sh", carry=[".whl"], timeout_s=480)         # on the device
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
budget=420
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
CARRIED = ("transformers", "minigrid", "pygame-ce", "gymnasium", "farama-notifications", "tyro", "docstring-parser", "typeguard")
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

step() {  # step NAME COMMAND...: runs with what is left of the budget, its output also in $OUT/NAME.log
  local name=$1 left=$((budget - (SECONDS - start)))
  shift
  if [ "$left" -lt 20 ]; then
    echo "gpu.sh: $name skipped: the ${budget} s budget is spent" | tee "$OUT/$name.log"
    return
  fi
  echo "== $name (up to ${left} s)"
  timeout --signal=INT --kill-after=10 "$left" "$@" 2>&1 | tee "$OUT/$name.log"
  local status=${PIPESTATUS[0]}
  [ "$status" -eq 0 ] || echo "gpu.sh: $name stopped (exit $status) after $((SECONDS - start)) s" | tee -a "$OUT/$name.log"
}

step gpu_check python3 benchmark/gpu_check.py --out-dir "$OUT"
step scoring_speed python3 benchmark/scoring_speed.py --device cuda \
  --models tiny-t5 t5-small-shape t5-base-shape t5-large-shape smollm2-135m-shape --out "$OUT/scoring_speed.json"
step train_speed python3 benchmark/train_speed.py --models t5-large-shape --paper-batch --updates 2 \
  --extra-flags=--gradient-checkpointing --out "$OUT/train_speed.json"
echo "== summary ($((SECONDS - start)) s in all)"
python3 benchmark/gpu_summary.py "$OUT" | tee "$OUT/summary.md"
