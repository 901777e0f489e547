"""The zero-shot rows' table for benchmark/README.md, from zero_shot_eval.py's output folders: per row, success with
its 99% interval, mean return, mean length, the generation rows' invalid rate and new tokens per step, and the
policy's seconds per step; then, with --replies N, the first N steps' replies of each generation row's first episodes
(from trajectories.jsonl, --save-trajectories), quoted, with the action each mapped to.

    python benchmark/zero_shot_table.py benchmark/out/zero_shot_gotolocal_* --replies 6
"""

import argparse
import json
import os


LABELS = {"random": "random", "bot": "BabyAIBot", "llm": "scoring", "generate": "generation"}


def row_label(results: dict) -> str:
    label = LABELS[results["policy"]]
    return f"{label}, {results['prompt_format']}" if results["prompt_format"] else label


def main(folders: list[str], replies: int):
    runs = [(folder, json.load(open(os.path.join(folder, "results.json")))) for folder in folders]
    runs.sort(key=lambda run: (list(LABELS).index(run[1]["policy"]), run[1]["prompt_format"] == "chat"))
    print("| policy | episodes | success (99% interval) | mean return (20x) | mean length | invalid | new tokens | policy s/step |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for _, results in runs:
        for row in results["rows"]:
            generation = f"{row['invalid_rate']:.3f} | {row['mean_new_tokens']:.2f}" if "invalid_rate" in row else " | "
            print(f"| {row_label(results)} | {row['episodes']} | {row['success_rate']:.3f} [{row['ci99_low']:.3f}, "
                  f"{row['ci99_high']:.3f}] | {row['mean_return']:.2f} | {row['mean_length']:.1f} | {generation} | "
                  f"{row['lm_seconds_per_step']:.2g} |")
    for folder, results in runs:
        path = os.path.join(folder, "trajectories.jsonl")
        if replies and results["policy"] == "generate" and os.path.exists(path):
            print(f"\n{row_label(results)}: the first {replies} steps of the first episodes, reply -> action (none: invalid)")
            with open(path) as f:
                for line, _ in zip(f, range(2)):
                    episode = json.loads(line)
                    steps = zip(episode["replies"][:replies], episode["actions"][:replies])
                    print(f"- level {episode['seed']}: " + "; ".join(f"{json.dumps(reply)} -> {action or 'none'}" for reply, action in steps))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="zero_shot_eval.py output folders (each with its results.json)")
    parser.add_argument("--replies", type=int, default=0, help="quote this many steps' replies of each generation row")
    main(**vars(parser.parse_args()))
