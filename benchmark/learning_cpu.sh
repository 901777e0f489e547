#!/usr/bin/env bash
# PPO learning from scratch on a CPU: tiny-t5 (a random 0.3M-parameter T5) on BabyAI-GoToLocalS5N2-v0, where a
# uniformly random policy succeeds in about a third of the episodes. Seeds run one after another; then the plot.
#   bash benchmark/learning_cpu.sh                 # seeds 1 2 3, 64k frames each (about an hour per seed on 2 cores)
#   SEEDS="1" FRAMES=20000 bash benchmark/learning_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"1 2 3"}
FRAMES=${FRAMES:-64000}
for seed in $SEEDS; do
  # The paper's PPO settings but for the learning rate, which a small random model needs far larger.
  python glam_ppo.py --model tiny-t5 --env-id BabyAI-GoToLocalS5N2-v0 --learning-rate 3e-4 \
    --total-timesteps "$FRAMES" --seed "$seed" --exp-name learning_cpu
done
python benchmark/plot.py --curves "GLAM PPO, tiny-t5=runs/BabyAI-GoToLocalS5N2-v0__learning_cpu__*" \
  --random-baseline 0.33 --title "tiny-t5 on BabyAI-GoToLocalS5N2-v0, CPU" --out benchmark/learning_cpu.png
