"""End-to-end training speed of glam_ppo.py (or glam_ppo_multigpu.py): frames per second of the rollout, of the PPO update, and overall.

Each model trains for a few updates in a subprocess, exactly as a user runs glam_ppo.py; the speeds are read back
from its TensorBoard scalars (charts/rollout_SPS, charts/update_SPS, charts/SPS), the first update left out as
warm-up. Models with a real model's shape get random weights and are saved with save_pretrained first (no download).

    python benchmark/train_speed.py                                              # CPU-sized batch, tiny models
    python benchmark/train_speed.py --models t5-small-shape t5-base-shape --paper-batch --out benchmark/train_speed_gpu.json
    python benchmark/train_speed.py --models tiny-t5 --nproc 2                   # glam_ppo_multigpu.py on 2 processes
"""

import glob
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Literal

import numpy as np
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import scoring_speed  # noqa: E402


@dataclass
class Args:
    models: tuple[Literal["tiny-t5", "tiny-causal", "t5-small-shape", "t5-base-shape", "t5-large-shape", "smollm2-135m-shape"], ...] = ("tiny-t5", "tiny-causal")
    """the models to train"""
    env_id: str = "BabyAI-MixedTrainLocal-v0"
    """the level"""
    paper_batch: bool = False
    """the paper's batch (32 envs x 40 steps, 20 minibatches, 4 epochs) instead of a CPU-sized one (8 x 16, 4, 4)"""
    updates: int = 3
    """PPO updates per model; the first is warm-up and not counted"""
    nproc: int = 0
    """0: glam_ppo.py; N: glam_ppo_multigpu.py on N processes through torchrun"""
    extra_flags: str = ""
    """more glam_ppo.py flags, e.g. "--bf16" or "--score-batch-size 256" """
    out: str | None = None
    """also write the table as JSON here"""


def batch_flags(paper_batch: bool) -> list[str]:
    envs, steps, minibatches = (32, 40, 20) if paper_batch else (8, 16, 4)
    return ["--num-envs", str(envs), "--num-steps", str(steps), "--num-minibatches", str(minibatches)], envs * steps


def model_flag(name: str, folder: str) -> str:
    """glam_ppo.py's --model for this name: the tiny models by name, the others saved with save_pretrained."""
    if name in ("tiny-t5", "tiny-causal"):
        return name
    path = os.path.join(folder, name)
    llm, tokenizer = scoring_speed.build_model(name)
    llm.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def logged_speeds(events: EventAccumulator) -> tuple[float, float]:
    """A run's rollout and update frames/s, each the mean over its updates after the first (the warm-up)."""
    return tuple(float(np.mean([event.value for event in events.Scalars(tag)[1:]])) for tag in ("charts/rollout_SPS", "charts/update_SPS"))


def measure(name: str, args: Args, folder: str) -> dict:
    flags, frames_per_update = batch_flags(args.paper_batch)
    run_root = os.path.join(folder, f"runs_{name}")
    os.makedirs(run_root)
    launcher = [sys.executable, os.path.join(REPO, "glam_ppo.py")]
    if args.nproc:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
                    os.path.join(REPO, "glam_ppo_multigpu.py")]
    command = [
        *launcher, "--model", model_flag(name, folder), "--env-id", args.env_id,
        *flags, "--total-timesteps", str(args.updates * frames_per_update), "--save-interval", "1000000", *args.extra_flags.split(),
    ]
    result = subprocess.run(command, cwd=run_root, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"train_speed.py: error: {name}: {os.path.basename(launcher[-1])} failed:\n{result.stderr[-2000:]}")
    (run_dir,) = glob.glob(os.path.join(run_root, "runs", "*"))
    rollout, update = logged_speeds(EventAccumulator(run_dir).Reload())
    return {"model": name if not args.nproc else f"{name}, {args.nproc} process(es)", "frames_per_update": frames_per_update, "rollout": rollout, "update": update,
            "overall": 1 / (1 / rollout + 1 / update)}


def format_table(rows, paper_batch: bool) -> str:
    batch = "paper batch, 32 envs x 40 steps" if paper_batch else "CPU batch, 8 envs x 16 steps"
    lines = [f"frames/s ({batch}; mean over updates 2+)", "| model | rollout | update | overall |", "|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['rollout']:.1f} | {r['update']:.1f} | {r['overall']:.1f} |" for r in rows]
    return "\n".join(lines)


def main(args: Args) -> list[dict]:
    if args.updates < 2:
        raise SystemExit("train_speed.py: error: --updates must be at least 2 (the first is warm-up)")
    with tempfile.TemporaryDirectory() as folder:
        rows = []
        for name in args.models:
            rows.append(measure(name, args, folder))
            print(f"{name}: rollout {rows[-1]['rollout']:.1f}, update {rows[-1]['update']:.1f}, overall {rows[-1]['overall']:.1f} frames/s", flush=True)
    print(format_table(rows, args.paper_batch))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"paper_batch": args.paper_batch, "bars": ["rollout", "update", "overall"], "unit": "frames/s", "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
