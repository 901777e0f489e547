"""Success rate against frames from TensorBoard runs, one curve per method (mean and spread over its seeds); or
speed bars from a JSON of scoring_speed.py or train_speed.py.

    python benchmark/plot.py --curves "GLAM=runs/BabyAI-MixedTrainLocal-v0__glam_ppo__*" "NPAE=runs/*npae*" \
        --out benchmark/mixed.png
    python benchmark/plot.py --bars benchmark/scoring_speed_cpu.json --out benchmark/scoring_speed_cpu.png
"""

import glob
import json
import os
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


@dataclass
class Args:
    curves: tuple[str, ...] = ()
    """one `label=glob` per curve; every run folder the glob matches is one seed"""
    bars: str | None = None
    """a JSON written by scoring_speed.py or train_speed.py: its speeds as grouped bars, instead of curves"""
    out: str = "benchmark/learning.png"
    """the PNG to write"""
    tag: str = "charts/success_rate"
    """the TensorBoard scalar to plot"""
    bin_frames: int = 4000
    """episodes are averaged in bins of this many frames"""
    title: str = ""
    """the figure's title"""
    random_baseline: float | None = None
    """draw a dashed line at this success rate (a uniformly random policy's, say)"""
    xlabel: str = "frames"
    """the x axis's label (bc_finetune.py's steps are training transitions)"""


def binned_curve(run_dir: str, tag: str, bin_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres, mean of the tag's values in each bin) for one run."""
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        raise SystemExit(f"plot.py: error: {run_dir} has no scalar {tag!r}")
    scalars = events.Scalars(tag)
    steps = np.array([s.step for s in scalars])
    values = np.array([s.value for s in scalars])
    bins = steps // bin_frames
    centres = np.unique(bins)
    return (centres + 0.5) * bin_frames, np.array([values[bins == b].mean() for b in centres])


def plot_bars(args: Args):
    """One group of bars per model, one bar per scheme or phase, on a log scale (speeds span orders of magnitude)."""
    with open(args.bars) as f:
        record = json.load(f)
    rows, keys = record["rows"], record["bars"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    width = 0.8 / len(keys)
    positions = np.arange(len(rows))
    for index, key in enumerate(keys):
        values = [row[key] for row in rows]
        bars = ax.bar(positions + (index - (len(keys) - 1) / 2) * width, values, width, label=key)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(positions, [row["model"] for row in rows], rotation=15)
    ax.set_yscale("log")
    ax.set_ylabel(record["unit"])
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    ax.set_title(args.title)
    return fig


def plot_curves(args: Args):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for curve in args.curves:
        label, _, pattern = curve.partition("=")
        run_dirs = sorted(d for d in glob.glob(pattern) if os.path.isdir(d))
        if not pattern or not run_dirs:
            raise SystemExit(f"plot.py: error: no run folder matches {curve!r} (expected label=glob)")
        per_seed = [binned_curve(d, args.tag, args.bin_frames) for d in run_dirs]
        length = min(len(frames) for frames, _ in per_seed)
        frames = per_seed[0][0][:length]
        values = np.stack([v[:length] for _, v in per_seed])
        line, = ax.plot(frames, values.mean(0), label=f"{label} ({len(run_dirs)} seed{'s' if len(run_dirs) > 1 else ''})")
        if len(run_dirs) > 1:
            ax.fill_between(frames, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
    if args.random_baseline is not None:
        ax.axhline(args.random_baseline, color="grey", linestyle="--", label="random policy")
    ax.set_xlabel(args.xlabel)
    ax.set_ylabel(args.tag.split("/")[-1].replace("_", " "))
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(args.title)
    return fig


def main(args: Args):
    if bool(args.curves) == bool(args.bars):
        raise SystemExit("plot.py: error: give either --curves label=glob ... or --bars file.json")
    fig = plot_bars(args) if args.bars else plot_curves(args)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(tyro.cli(Args))
