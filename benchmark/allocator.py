"""What glibc's malloc settings cost and save on the CPU: one glam_ppo.py command under several settings.

glibc hands every freed buffer above its mmap threshold back to the operating system and takes it back, page fault by
page fault, at the next allocation; the scripts raise the thresholds at start (`keep_freed_memory`). Each row runs the
same command in a fresh process, `--repeats` times, and reports the median wall time, the median system (kernel)
time and the largest resident memory, from the process's own rusage. A row with GLIBC_TUNABLES set (even empty) runs
with the scripts' own setting turned off: the environment's settings stand.

    python benchmark/allocator.py                      # the table of benchmark/README.md
    python benchmark/allocator.py --candidates         # settings that keep less memory
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import tyro

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = [
    "glam_ppo.py", "--model", "tiny-t5", "--env-id", "BabyAI-GoToLocal-v0", "--num-envs", "8", "--num-steps", "16",
    "--total-timesteps", "384", "--update-epochs", "4", "--num-minibatches", "2",
]
SETTINGS = {
    "glibc defaults": {"GLIBC_TUNABLES": ""},
    "MALLOC_MMAP_THRESHOLD_=2000000000": {"GLIBC_TUNABLES": "", "MALLOC_MMAP_THRESHOLD_": "2000000000"},
    "MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ at 2000000000": {
        "GLIBC_TUNABLES": "", "MALLOC_MMAP_THRESHOLD_": "2000000000", "MALLOC_TRIM_THRESHOLD_": "2000000000",
    },
    "the scripts' own (keep_freed_memory)": {},
}
# Settings that keep less memory, tried before choosing the scripts' own (--candidates).
CANDIDATES = {
    "MALLOC_MMAP_THRESHOLD_=67108864 (64 MB), MALLOC_TRIM_THRESHOLD_=2000000000": {
        "GLIBC_TUNABLES": "", "MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": "2000000000",
    },
    "MALLOC_MMAP_THRESHOLD_=2000000000, MALLOC_TRIM_THRESHOLD_=134217728 (128 MB)": {
        "GLIBC_TUNABLES": "", "MALLOC_MMAP_THRESHOLD_": "2000000000", "MALLOC_TRIM_THRESHOLD_": str(128 << 20),
    },
}


@dataclass
class Args:
    repeats: int = 3
    """runs of each setting (the median is reported)"""
    minibatches: int = 2
    """--num-minibatches of the command (8: minibatches of 16 transitions, where the gain is smaller)"""
    candidates: bool = False
    """run the settings that keep less memory (CANDIDATES) instead of the table's"""
    out: str | None = None
    """also write the rows as JSON here"""


def run_once(env: dict, minibatches: int) -> tuple[float, float, float]:
    """(wall s, system s, peak MiB) of one run of the command, one thread, in a scratch folder."""
    command = [sys.executable, os.path.join(REPO, COMMAND[0]), *COMMAND[1:-1], str(minibatches)]
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    environment.update(OMP_NUM_THREADS="1", **env)
    with tempfile.TemporaryDirectory() as folder, open(os.path.join(folder, "stderr"), "w+") as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=folder, env=environment, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        if status != 0:
            stderr.seek(0)
            sys.exit(f"allocator.py: error: the command failed: {stderr.read()[-2000:]}")
    return wall, usage.ru_stime, usage.ru_maxrss / 1024


def main(args: Args):
    rows = []
    print(f"{' '.join(COMMAND[:-1])} {args.minibatches}, one thread, {args.repeats} runs each")
    print(f"| glibc settings | wall s | system s | peak MiB |\n|---|---:|---:|---:|")
    for label, env in (CANDIDATES if args.candidates else SETTINGS).items():
        runs = [run_once(env, args.minibatches) for _ in range(args.repeats)]
        wall, system = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        peak = max(r[2] for r in runs)
        rows.append({"settings": label, "env": env, "wall_s": wall, "system_s": system, "peak_mib": peak, "runs": runs})
        print(f"| {label} | {wall:.1f} | {system:.1f} | {peak:,.0f} |", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"command": COMMAND[:-1] + [str(args.minibatches)], "repeats": args.repeats, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main(tyro.cli(Args))
