"""gpu.sh's learning step: does a pretrained LLM learn faster with GLAM than the same architecture from scratch?

glam_ppo.py on BabyAI-GoToLocal-v0 twice, with the same seed, settings and frames: first from SmolLM2-135M-Instruct's
pretrained weights, then at random initialisation (--no-pretrained, the paper's no-pretraining control). The pretrained
run gets --seconds of wall time and is stopped by SIGTERM (it saves after the step or minibatch under way); the random
twin then runs exactly the updates the pretrained run completed. Success is read from each run's TensorBoard
(charts/success_rate, one value per finished episode) in windows of --window frames, up to the frames both reached.

The settings, for so short a run (the paper's are tuned for 1.5M frames): the learning rate 1e-5, ten times the
paper's 1e-6, which moves a 135M-parameter model within a few thousand frames and stays well below the rates at which
full fine-tuning diverges; full fine-tuning, as the paper; --bf16 autocast (the weights, Adam and heads stay float32);
32 envs x 8 steps, so that a 2.5-minute run makes tens of updates, each of 4 epochs of 4 minibatches of 64.

    python benchmark/gpu_learning.py --model /tmp/gguf/SmolLM2-135M-Instruct.Q4_1.gguf --out-dir benchmark/gpu
    python benchmark/gpu_learning.py --model tiny-causal --updates 2 --num-envs 4 --no-bf16 --out-dir /tmp/l   # a CPU run
"""

import glob
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import torch
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZERO_SHOT = 0.14  # SmolLM2-135M-Instruct's zero-shot success on GoToLocal, raw prompt, --bf16, 50 levels (benchmark/README.md)


@dataclass
class Args:
    model: str = "/tmp/gguf/SmolLM2-135M-Instruct.Q4_1.gguf"
    """the pretrained model (what glam_ppo.py's --model takes)"""
    seconds: float = 150.0
    """wall time of the pretrained run; the random twin runs the same updates"""
    updates: int = 0
    """a number of updates for the pretrained run instead of --seconds (0: by --seconds)"""
    env_id: str = "BabyAI-GoToLocal-v0"
    """the level"""
    num_envs: int = 32
    """parallel envs"""
    num_steps: int = 8
    """steps per env per update"""
    learning_rate: float = 1e-5
    """Adam's learning rate (the paper's 1e-6 is tuned for 1.5M frames)"""
    bf16: bool = True
    """bfloat16 autocast for the LLM's passes"""
    seed: int = 1
    """the seed of both runs"""
    window: int = 2048
    """frames per success window"""
    out_dir: str = os.path.join(REPO, "benchmark", "gpu")
    """where learning.json and the runs go"""


def flags(args: Args, run: str) -> list[str]:
    return [
        "--model", args.model, "--env-id", args.env_id, "--num-envs", str(args.num_envs), "--num-steps", str(args.num_steps),
        "--num-minibatches", str(max(1, args.num_envs * args.num_steps // 64)), "--learning-rate", str(args.learning_rate),
        # A checkpoint only at the end or at the stop (it counts the updates made): a save per update would cost seconds.
        "--seed", str(args.seed), "--save-interval", "100000", "--exp-name", run, *(["--bf16"] if args.bf16 else []),
    ]


def train(args: Args, run: str, extra: list[str], seconds: float | None) -> str:
    """glam_ppo.py in a subprocess, in out_dir, stopped by SIGTERM after `seconds` (None: to its end); its run folder."""
    process = subprocess.Popen([sys.executable, os.path.join(REPO, "glam_ppo.py"), *flags(args, run), *extra], cwd=args.out_dir)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        process.wait()
    if process.returncode != 0:
        sys.exit(f"gpu_learning.py: error: the {run} run failed (exit {process.returncode})")
    (run_dir,) = glob.glob(os.path.join(args.out_dir, "runs", f"*__{run}__*"))
    return run_dir


def updates_done(run_dir: str) -> int:
    return torch.load(os.path.join(run_dir, "checkpoint", "trainer.pt"), map_location="cpu", weights_only=False)["iteration"]


def scalars(run_dir: str, tag: str, frames: int) -> list:
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    events.Reload()
    return [event for event in events.Scalars(tag) if event.step <= frames] if tag in events.Tags()["scalars"] else []


def curve(run_dir: str, frames: int, window: int) -> list[dict]:
    """Success in windows of frames, from the episodes that ended by `frames`."""
    windows = {}
    for event in scalars(run_dir, "charts/success_rate", frames):
        windows.setdefault((event.step - 1) // window, []).append(event.value)
    return [{"frames": (k + 1) * window, "episodes": len(v), "success": sum(v) / len(v)} for k, v in sorted(windows.items())]


def main(args: Args) -> dict:
    if args.seconds <= 0 or args.window < 1 or args.updates < 0:
        sys.exit("gpu_learning.py: error: --seconds must be positive, --window at least 1 and --updates at least 0")
    os.makedirs(args.out_dir, exist_ok=True)
    batch = args.num_envs * args.num_steps
    limit = ["--total-timesteps", str((args.updates or 1000) * batch)]
    pretrained_dir = train(args, "pretrained", limit, None if args.updates else args.seconds)
    updates = updates_done(pretrained_dir)
    if updates == 0:
        sys.exit(f"gpu_learning.py: error: the pretrained run finished no update in {args.seconds:.0f} s")
    frames = updates * batch
    random_dir = train(args, "random", ["--no-pretrained", "--total-timesteps", str(frames)], None)
    report = {
        "model": args.model, "env_id": args.env_id, "updates": updates, "frames": frames, "zero_shot_success": ZERO_SHOT,
        "settings": flags(args, "<run>")[2:],
        "pretrained": curve(pretrained_dir, frames, args.window), "random": curve(random_dir, frames, args.window),
        # charts/SPS at the last update: frames over the run's time since its model loaded
        "frames_per_second": {run: scalars(folder, "charts/SPS", frames)[-1].value for run, folder in (("pretrained", pretrained_dir), ("random", random_dir))},
    }
    with open(os.path.join(args.out_dir, "learning.json"), "w") as f:
        json.dump(report, f, indent=2)
    plot(report, os.path.join(args.out_dir, "learning.png"))
    print(table(report))
    return report


def plot(report: dict, path: str):
    """The two learning curves, and the zero-shot start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for run, label in (("pretrained", "SmolLM2-135M-Instruct, pretrained"), ("random", "same architecture, random init")):
        axes.plot([row["frames"] for row in report[run]], [row["success"] for row in report[run]], marker="o", label=label)
    axes.axhline(report["zero_shot_success"], color="grey", linestyle="--", label="zero-shot start (50 levels)")
    axes.set(xlabel="frames", ylabel="success rate per window", ylim=(0, 1), title=f"GLAM on {report['env_id']}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def table(report: dict) -> str:
    """The two runs' success windows side by side, with the zero-shot start."""
    rows = {row["frames"]: [row, None] for row in report["pretrained"]}
    for row in report["random"]:
        rows.setdefault(row["frames"], [None, None])[1] = row
    cell = lambda row: f"{row['success']:.2f} ({row['episodes']})" if row else "-"  # noqa: E731
    speed = report["frames_per_second"]
    lines = [
        f"GLAM on {report['env_id']}, {report['frames']} frames ({report['updates']} updates) each; success (episodes) per window; "
        f"zero-shot start {report['zero_shot_success']:.2f}; frames/s: pretrained {speed['pretrained']:.1f}, random {speed['random']:.1f}",
        "", "| frames | pretrained | random init |", "|---:|---:|---:|",
    ]
    lines += [f"| {frames} | {cell(pre)} | {cell(rand)} |" for frames, (pre, rand) in sorted(rows.items())]
    return "\n".join(lines)


if __name__ == "__main__":
    main(tyro.cli(Args))
