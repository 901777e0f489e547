#!/usr/bin/env bash
# The paper's baselines on BabyAI-MixedTrainLocal-v0 (benchmark/README.md, "The paper's baselines"): symbolic PPO
# (baselines/symbolic_ppo.py) and DRRN (baselines/drrn.py) for 1.5M frames each, 2 seeds each, one torch
# thread per run, all runs at once. Run it again to go on: every run resumes from its checkpoint (SIGTERM and Ctrl-C
# save one first); a run whose results.json has its frames is not run again. Each run ends with an evaluation on 1,000
# levels, and its results.json is copied to benchmark/results/baseline_<name>_<seed>.json; then the random policy on the
# same 1,000 levels, the table and the plot.
#   bash benchmark/baselines.sh
#   DRRN_FRAMES=3000000 bash benchmark/baselines.sh          # extends the DRRN runs
#   ONLY=drrn SEEDS=1 bash benchmark/baselines.sh            # one baseline, one seed
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
SEEDS=${SEEDS:-"1 2"}
ONLY=${ONLY:-"symbolic_ppo drrn"}
declare -A FRAMES=([symbolic_ppo]=${PPO_FRAMES:-1500000} [drrn]=${DRRN_FRAMES:-1500000})
ENV_ID=BabyAI-MixedTrainLocal-v0

train() {  # name seed: a new run, or the resumption of the run of that name and seed
  local name=$1 seed=$2 run_dir
  run_dir=$(ls -d runs/${ENV_ID}__baseline_${name}__${seed}__* 2>/dev/null | head -n 1 || true)
  if [ -z "$run_dir" ]; then
    OMP_NUM_THREADS=1 python "baselines/$name.py" --env-id "$ENV_ID" --seed "$seed" --total-timesteps "${FRAMES[$name]}" \
      --exp-name "baseline_$name"
    run_dir=$(ls -d runs/${ENV_ID}__baseline_${name}__${seed}__* | head -n 1)
  elif [ ! -f "$run_dir/results.json" ] || [ "$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['frames'])" "$run_dir/results.json")" -lt "${FRAMES[$name]}" ]; then
    OMP_NUM_THREADS=1 python "baselines/$name.py" --resume "$run_dir" --total-timesteps "${FRAMES[$name]}"
  fi
  if [ -f "$run_dir/results.json" ]; then
    cp "$run_dir/results.json" "benchmark/results/baseline_${name}_${seed}.json"
  fi  # else it was stopped: its checkpoint is saved, and running this script again goes on
}

for name in $ONLY; do
  for seed in $SEEDS; do
    train "$name" "$seed" > "runs/baseline_${name}_${seed}.log" 2>&1 &
  done
done
wait
OMP_NUM_THREADS=1 python zero_shot_eval.py --policy random --env-id "$ENV_ID" --episodes 1000 --seed 1000000000 --num-envs 32 \
  --output-dir benchmark/out/random_mixedtrainlocal  # the levels of the baselines' evaluation (seeds 10^9 + k)
cp benchmark/out/random_mixedtrainlocal/results.json benchmark/results/random_mixedtrainlocal.json
python benchmark/baselines_table.py runs/${ENV_ID}__baseline_*
python benchmark/plot.py --curves "symbolic PPO=runs/${ENV_ID}__baseline_symbolic_ppo__*" "DRRN=runs/${ENV_ID}__baseline_drrn__*" \
  --bin-frames 50000 --title "$ENV_ID: the paper's baselines" --out benchmark/baselines.png
