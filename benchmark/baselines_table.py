"""The baselines' tables for benchmark/README.md, from their run folders: the final evaluation of each run (from its
results.json, once it has one) and the training success rate in windows of frames (from its episodes.csv, so that a
run still under way shows how far it has come).

    python benchmark/baselines_table.py runs/BabyAI-MixedTrainLocal-v0__baseline_*
"""

import csv
import json
import os
import re
import sys

WINDOW = 50_000


def describe_run(run_dir: str) -> tuple[str, int, dict | None, dict[int, tuple[int, int]], int]:
    """(baseline name, seed, results.json or None, window end -> (episodes, successes), frame of the last episode)."""
    name, seed = re.search(r"__baseline_(\w+?)__(\d+)__", os.path.basename(os.path.normpath(run_dir))).groups()
    results_path = os.path.join(run_dir, "results.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else None
    windows, last = {}, 0
    with open(os.path.join(run_dir, "episodes.csv")) as f:
        for row in csv.DictReader(f):
            end = (int(row["frames"]) - 1) // WINDOW * WINDOW + WINDOW
            episodes, successes = windows.get(end, (0, 0))
            windows[end] = (episodes + 1, successes + int(row["success"]))
            last = int(row["frames"])
    return name, int(seed), results, windows, last


def main(run_dirs: list[str]):
    runs = sorted(describe_run(run_dir) for run_dir in run_dirs)
    print("| baseline | seed | frames | frames/s | evaluation episodes | success (99% interval) | mean return |")
    print("|---|---|---|---|---|---|---|")
    for name, seed, results, windows, last in runs:
        if results is None:
            print(f"| {name} | {seed} | {last:,} (under way: last episode logged) | | | | |")
            continue
        print(f"| {name} | {seed} | {results['frames']:,} | {results['fps']:.0f} | {results['episodes']:,} | "
              f"{results['success_rate']:.3f} [{results['ci99_low']:.3f}, {results['ci99_high']:.3f}] | {results['mean_return']:.2f} |")
    print()
    print("| frames | " + " | ".join(f"{name} seed {seed}" for name, seed, *_ in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for end in sorted({end for *_, windows, _ in runs for end in windows}):
        cells = []
        for *_, windows, _ in runs:
            episodes, successes = windows.get(end, (0, 0))
            cells.append(f"{successes / episodes:.3f} ({episodes})" if episodes else "")
        print(f"| {end - WINDOW:,}-{end:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
