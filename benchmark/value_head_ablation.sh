#!/usr/bin/env bash
# The value-head ablation (issue 22): tiny-t5 (a random 0.3M-parameter T5) learning BabyAI-GoToLocalS5N2-v0 with the
# value head on the decoder's first state (the paper) or on the mean of the encoder's final states, same seeds. Two
# runs at a time, one thread each (the 2-core CPU), then one plot of success rate against frames.
#   bash benchmark/value_head_ablation.sh                      # seeds 1 2, 16k frames each: about 40 min on 2 cores
#   SEEDS="1" FRAMES=4000 bash benchmark/value_head_ablation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"1 2"}
FRAMES=${FRAMES:-16000}
export OMP_NUM_THREADS=1
for seed in $SEEDS; do
  for input in decoder encoder; do
    # The paper's PPO settings but for the learning rate, which a small random model needs far larger.
    python glam_ppo.py --model tiny-t5 --env-id BabyAI-GoToLocalS5N2-v0 --learning-rate 3e-4 --total-timesteps "$FRAMES" \
      --seed "$seed" --value-head-input "$input" --exp-name "value_head_$input" > /dev/null 2>&1 &
  done
  wait
done
python benchmark/plot.py --curves "decoder (paper)=runs/BabyAI-GoToLocalS5N2-v0__value_head_decoder__*" \
  "encoder mean=runs/BabyAI-GoToLocalS5N2-v0__value_head_encoder__*" --random-baseline 0.33 \
  --title "tiny-t5 on BabyAI-GoToLocalS5N2-v0: where the value head reads" --out benchmark/value_head_ablation.png
