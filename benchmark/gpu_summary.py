"""One table from what benchmark/gpu.sh measured: scorer equivalence on the device, the learning step (a pretrained
LLM against its randomly initialised twin), measured memory against the planner, what auto keeps, scoring pairs/s by
model shape, and training frames/s at flan-t5-large's shape against the goal.

    python benchmark/gpu_summary.py benchmark/gpu        # the folder gpu.sh wrote ($OUT on the device)
"""

import json
import os
import sys

GOAL_FRAMES_PER_SECOND = 50


def load(folder: str, name: str):
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def not_measured(step: str) -> str:
    return f"| {step}.py | not measured (see gpu.log) | |"


def summary(folder: str) -> str:
    rows = ["| measurement | result | reference |", "|---|---|---|"]
    check = load(folder, "gpu_check.json") or {}
    if "equivalence" not in check:
        rows.append(not_measured("gpu_check"))
    for row in check.get("equivalence", []):
        rows.append(f"| scores vs one pass per pair, {row['model']} | fp32 {row['fp32']:.1e}, bf16 {row['bf16']:.1e} nats | fp32 under 1e-3 |")
    learning = load(folder, "learning.json")
    if learning is None:
        rows.append(not_measured("gpu_learning"))
    else:
        speed = learning["frames_per_second"]
        rows.append(f"| learning, {learning['env_id']}, {learning['frames']} frames each | pretrained {learning['pretrained'][-1]['success']:.2f}, "
                    f"random init {learning['random'][-1]['success']:.2f} in the last window | zero-shot {learning['zero_shot_success']:.2f}; "
                    f"frames/s {speed['pretrained']:.1f} / {speed['random']:.1f} |")
    for row in check.get("memory", []):
        ratio = row["planned_gb_per_unit"] / row["gb_per_unit"]
        rows.append(f"| peak memory, {row['pass']} at {check['shape']} | {row['gb_per_unit']:.3f} GB per unit | "
                    f"planner {row['planned_gb_per_unit']:.3f} ({ratio:.2f}x) |")
    if "auto" in check:
        auto = check["auto"]
        peak = f", peak {auto['peak_gb']:.2f} GB" if auto["peak_gb"] is not None else ""
        rows.append(f"| --grad-accum-minibatch auto at {check['shape']} | {auto['passes']} passes of {auto['pass_size']}{peak} | "
                    f"of {auto['budget_gb']:.2f} GB |")
    speed = load(folder, "scoring_speed.json")
    if speed is None:
        rows.append(not_measured("scoring_speed"))
    else:
        for row in speed["rows"]:
            rows.append(f"| scoring, {row['model']} | {row['ours']:,.0f} pairs/s | naive {row['naive']:,.0f}, authors' {row['authors']:,.0f} |")
    training = load(folder, "train_speed.json")
    if training is None:
        rows.append(not_measured("train_speed"))
    else:
        for row in training["rows"]:
            batch = "paper batch" if training["paper_batch"] else "CPU batch"
            rows.append(f"| training, {row['model']}, {batch} | {row['overall']:.1f} frames/s (rollout {row['rollout']:.1f}, "
                        f"update {row['update']:.1f}) | goal {GOAL_FRAMES_PER_SECOND} |")
    device = check.get("device") or (speed or {}).get("device", "the device")
    text = f"GPU measurements on {device}\n\n" + "\n".join(rows)
    if learning is not None:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import gpu_learning

        text += "\n\n" + gpu_learning.table(learning)
    return text


if __name__ == "__main__":
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("gpu_summary.py: error: give the folder that benchmark/gpu.sh wrote its results to")
    print(summary(sys.argv[1]))
