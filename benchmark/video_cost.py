"""What recording adds to an episode of glam_ppo.py or bc_finetune.py: captioning its frames and encoding them, for a
64-step GoToLocal episode.

    python benchmark/video_cost.py
"""

import os
import sys
import tempfile
import time
from dataclasses import dataclass

import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import glam_ppo  # noqa: E402


@dataclass
class Args:
    steps: int = 64
    """steps of the episode (GoToLocal's limit is 64)"""
    env_id: str = "BabyAI-GoToLocal-v0"
    """the level drawn"""


def main(args: Args) -> dict:
    if args.steps < 1:
        sys.exit(f"video_cost.py: error: --steps {args.steps} must be at least 1")
    env = glam_ppo.TextVecEnv(args.env_id, 1, "canonical")
    env.start_episode(0, 1)
    start, frames = time.perf_counter(), []
    for step in range(args.steps):
        frames.append(glam_ppo.caption(env.frame(0), env.missions[0], f"{env.actions[step % 6]} (p = 0.17)"))
        env.step([step % 3])
    seconds = {"draw": time.perf_counter() - start}
    with tempfile.TemporaryDirectory() as folder:
        for video_format in ("mp4", "gif"):
            start = time.perf_counter()
            glam_ppo.write_video(frames, os.path.join(folder, f"episode.{video_format}"))
            seconds[video_format] = time.perf_counter() - start
    print(f"{args.steps} frames: drawing {seconds['draw']:.2f} s, MP4 encoding {seconds['mp4']:.2f} s, GIF encoding {seconds['gif']:.2f} s")
    return seconds


if __name__ == "__main__":
    main(tyro.cli(Args))
