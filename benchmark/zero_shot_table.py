"""The zero-shot rows' table for benchmark/README.md, from zero_shot_eval.py's results (output folders, or their
results.json copied to benchmark/results/): per row, success with its 99% interval, mean return, mean length, the
generation rows' invalid rate and new tokens per step, and the policy's seconds per step; then, with --replies N, the
first N steps' replies of each generation row's first episodes (from trajectories.jsonl, --save-trajectories, or from
the <part>_replies.jsonl that scoring_vs_generation.sh keeps beside a part's results file), quoted, with the action
each mapped to, the share of valid steps in that file, and up to N distinct replies that only start with the action
they were mapped to (the prefix rule's leniency).

A row may come in parts: runs of the same policy and settings on consecutive level ranges (`--seed first --episodes n`
plays levels first .. first + n - 1) are joined into one row over all their levels, so that a row too long for one
sitting is measured a range at a time.

    python benchmark/zero_shot_table.py benchmark/out/zero_shot_gotolocal_* --replies 6
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from zero_shot_eval import success_interval  # noqa: E402

LABELS = {"random": "random", "bot": "BabyAIBot", "llm": "scoring", "generate": "generation"}
PER_STEP = ("lm_seconds_per_step", "invalid_rate", "mean_new_tokens")  # joined weighted by steps, the rest by episodes
SETTINGS = ("model", "policy", "prompt_format", "greedy", "max_new_tokens", "num_observations")  # the same in every part


def row_label(results: dict) -> str:
    label = LABELS[results["policy"]]
    return f"{label}, {results['prompt_format']}" if results["prompt_format"] else label


ROW = ("env_id", "episodes", "success_rate", "ci99_low", "ci99_high", "mean_return", "mean_length", "lm_seconds_per_step")


def read(path: str) -> dict:
    """A results.json of one probe (or one line that says why the path is not one)."""
    file = os.path.join(path, "results.json") if os.path.isdir(path) else path
    try:
        with open(file) as f:
            results = json.load(f)
        if not isinstance(results, dict) or len(results.get("rows") or []) != 1 or not isinstance(results["rows"][0], dict):
            raise ValueError("it holds no row, or the rows of more than one probe")
        row = ROW + (("invalid_rate", "mean_new_tokens") if results.get("policy") == "generate" else ())
        missing = [key for key in ("policy", "prompt_format", "seed") if key not in results] + [key for key in row if key not in results["rows"][0]]
        if missing:
            raise ValueError("it has no " + ", ".join(missing) + ": written by an older zero_shot_eval.py?")
    except (OSError, ValueError) as error:  # (json's errors are ValueErrors)
        sys.exit(f"zero_shot_table: error: {file} is not the results.json of one zero_shot_eval.py probe: {error}")
    return results


def join(parts: list[dict]) -> dict:
    """One row from the parts of a row over consecutive level ranges (each a results.json with one row)."""
    if len(parts) == 1:
        return parts[0]
    parts = sorted(parts, key=lambda results: results["seed"])
    for before, after in zip(parts, parts[1:]):
        if before["seed"] + before["rows"][0]["episodes"] != after["seed"]:
            sys.exit(f"zero_shot_table: the parts of '{row_label(before)}' do not follow each other: levels from "
                     f"{before['seed']} ({before['rows'][0]['episodes']} of them), then from {after['seed']}")
    rows = [results["rows"][0] for results in parts]
    episodes = sum(row["episodes"] for row in rows)
    steps = [row["episodes"] * row["mean_length"] for row in rows]
    successes = round(sum(row["success_rate"] * row["episodes"] for row in rows))
    joined = {**rows[0], "episodes": episodes, "success_rate": successes / episodes}
    joined["ci99_low"], joined["ci99_high"] = success_interval(successes, episodes)
    for name in ("mean_return", "mean_length"):
        joined[name] = sum(row[name] * row["episodes"] for row in rows) / episodes
    for name in PER_STEP:
        if name in rows[0]:
            joined[name] = sum(row[name] * n for row, n in zip(rows, steps)) / sum(steps)
    return {**parts[0], "rows": [joined]}


def main(paths: list[str], replies: int):
    rows: dict[str, list] = {}  # the parts of each row, by its settings
    for path in paths:
        results = read(path)
        settings = json.dumps([results.get(key) for key in SETTINGS] + [results["rows"][0]["env_id"]])
        rows.setdefault(settings, []).append((results["seed"], path, results))
    runs = [(min(parts)[1], join([results for *_, results in parts])) for parts in rows.values()]  # replies: the first part's
    runs.sort(key=lambda run: (list(LABELS).index(run[1]["policy"]), run[1]["prompt_format"] == "chat"))
    print("| policy | episodes | success (99% interval) | mean return (20x) | mean length | invalid | new tokens | policy s/step |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for _, results in runs:
        row = results["rows"][0]
        generation = f"{row['invalid_rate']:.3f} | {row['mean_new_tokens']:.2f}" if "invalid_rate" in row else " | "
        print(f"| {row_label(results)} | {row['episodes']} | {row['success_rate']:.3f} [{row['ci99_low']:.3f}, "
              f"{row['ci99_high']:.3f}] | {row['mean_return']:.2f} | {row['mean_length']:.1f} | {generation} | "
              f"{row['lm_seconds_per_step']:.3g} |")
    for first_part, results in runs:
        # An output folder's trajectories, or the replies that scoring_vs_generation.sh keeps beside a part's results
        path = os.path.join(first_part, "trajectories.jsonl")
        if not os.path.isdir(first_part):
            path = first_part.removesuffix(".json") + "_replies.jsonl"
        if replies and results["policy"] == "generate" and os.path.exists(path):
            print(f"\n{row_label(results)}: the first {replies} steps of the first episodes, reply -> action (none: invalid)")
            with open(path) as f:
                episodes = [json.loads(line) for line in f]
            for episode in episodes[:2]:
                steps = zip(episode["replies"][:replies], episode["actions"][:replies])
                print(f"- level {episode['seed']}: " + "; ".join(f"{json.dumps(reply)} -> {action or 'none'}" for reply, action in steps))
            steps = [(reply, action) for episode in episodes for reply, action in zip(episode["replies"], episode["actions"])]
            valid = [(reply, action) for reply, action in steps if action]
            prefixed = [(reply, action) for reply, action in valid if reply.strip().lower() != action.lower()]
            print(f"valid in these {len(episodes)} episodes: {len(valid)} of {len(steps)} steps, {len(valid) - len(prefixed)} of them "
                  "exactly their action; replies that only start with it"
                  + "".join(f"; {json.dumps(reply)} -> {action}" for reply, action in list(dict(prefixed).items())[:replies]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="zero_shot_eval.py output folders, or results.json files (each of one probe)")
    parser.add_argument("--replies", type=int, default=0, help="quote this many steps' replies of each generation row")
    main(**vars(parser.parse_args()))
