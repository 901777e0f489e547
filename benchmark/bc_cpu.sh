#!/usr/bin/env bash
# Behavioural cloning of BabyAIBot on a CPU: tiny-t5 (a random 0.3M-parameter T5) on BabyAI-GoToLocalS5N2-v0, where
# a uniformly random policy succeeds in about a third of the episodes (benchmark/README.md). Then the plots.
#   bash benchmark/bc_cpu.sh                         # 20k transitions, evaluated every 4k on 100 episodes
set -euo pipefail
cd "$(dirname "$0")/.."
TRANSITIONS=${TRANSITIONS:-20000}
# The paper's settings but for the learning rate, which a small random model takes larger (as for PPO).
python bc_finetune.py --model tiny-t5 --env-id BabyAI-GoToLocalS5N2-v0 --learning-rate 1e-3 \
  --num-transitions "$TRANSITIONS" --eval-every 4000 --eval-episodes 100 --exp-name bc_cpu
python benchmark/plot.py --curves "BC of BabyAIBot, tiny-t5=runs/BabyAI-GoToLocalS5N2-v0__bc_cpu__*" \
  --tag charts/success_rate --bin-frames 1 --xlabel "training transitions" --random-baseline 0.33 --title "Behavioural cloning, tiny-t5, GoToLocalS5N2, CPU" \
  --out benchmark/bc_cpu_success.png
python benchmark/plot.py --curves "BC of BabyAIBot, tiny-t5=runs/BabyAI-GoToLocalS5N2-v0__bc_cpu__*" \
  --tag charts/action_accuracy --bin-frames 1 --xlabel "training transitions" --title "Held-out action accuracy, tiny-t5, GoToLocalS5N2, CPU" \
  --out benchmark/bc_cpu_accuracy.png
