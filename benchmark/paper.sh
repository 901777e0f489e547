#!/usr/bin/env bash
# The paper's experiments (Carta et al., ICML 2023, reference sections 6-8) as commands for GPU machines.
# Each line is one run, with the paper's PPO settings and 1.5M frames; 2 seeds each (the paper has 2 to 4). Run them as they are, one after another:
#   bash benchmark/paper.sh                 # prints the commands
#   bash benchmark/paper.sh | bash          # runs them all on this machine
# or as a SLURM array, one run per task (see the example at the bottom).
#
# Approximate targets (reference section 8): MixedTrainLocal with Flan-T5 large about 0.8 success after 250k frames
# and 0.9 after 600k; NPAE-Flan-T5 under 0.2 after 1.5M.
set -euo pipefail
SEEDS=${SEEDS:-"1 2"}
for seed in $SEEDS; do
  # Main result, figure 2: GFlan-T5 large vs NPAE-Flan-T5 on the multi-task level.
  echo "python glam_ppo.py --model flan-t5-large --env-id BabyAI-MixedTrainLocal-v0 --seed $seed --exp-name gflan_t5_large"
  echo "python glam_ppo.py --model flan-t5-large --no-pretrained --load-embedding --action-heads --env-id BabyAI-MixedTrainLocal-v0 --seed $seed --exp-name npae_flan_t5_large"
  # Model sizes.
  for size in small base; do
    echo "python glam_ppo.py --model flan-t5-$size --env-id BabyAI-MixedTrainLocal-v0 --seed $seed --exp-name gflan_t5_$size"
  done
  # Action-space study on GoToLocal: 3 actions, 6 actions, 6 + 3 useless ones.
  for space in restricted canonical augmented; do
    echo "python glam_ppo.py --model flan-t5-large --env-id BabyAI-GoToLocal-v0 --action-space $space --seed $seed --exp-name actions_$space"
  done
  # Distractor study: GoToLocal with 4, 8 and 16 distractors.
  for level in GoToLocalS8N4 GoToLocal GoToLocalS8N16; do
    echo "python glam_ppo.py --model flan-t5-large --env-id BabyAI-$level-v0 --seed $seed --exp-name distractors_$level"
  done
  # Prompt-length study: 1, 3 (the default), 6 and 9 observations in the prompt.
  for count in 1 6 9; do
    echo "python glam_ppo.py --model flan-t5-large --env-id BabyAI-MixedTrainLocal-v0 --num-observations $count --seed $seed --exp-name observations_$count"
  done
  # Behavioural cloning of the bot, then generalisation tests of every agent.
  echo "python bc_finetune.py --model flan-t5-large --env-id BabyAI-MixedTrainLocal-v0 --num-transitions 400000 --seed $seed --exp-name bc_bot"
done
echo "# afterwards, for each run: python zero_shot_eval.py --model runs/<run> --suite generalisation"
echo "# and the curves: python benchmark/plot.py --curves 'GFlan-T5 large=runs/*gflan_t5_large*' 'NPAE=runs/*npae*' --random-baseline 0.2 --out benchmark/mixed.png"

# SLURM, one run per array task (the commands above, numbered from 1):
#   bash benchmark/paper.sh | grep -v '^#' > runs.txt
#   sbatch --array=1-$(wc -l < runs.txt) --gpus=1 --cpus-per-task=16 --time=48:00:00 \
#     --wrap 'eval "$(sed -n ${SLURM_ARRAY_TASK_ID}p runs.txt)"'
# A multi-GPU run through glam_ppo_multigpu.py under srun is documented in the README.
