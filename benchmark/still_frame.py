"""One frame of a recorded MP4 as a PNG (the README's still).

    python benchmark/still_frame.py --video videos/<run>/<episode>.mp4 --frame 3 --out docs/video_still.png
"""

import os
import sys
from dataclasses import dataclass

import imageio_ffmpeg
import numpy as np
import tyro
from PIL import Image


@dataclass
class Args:
    video: str
    """an MP4 written with --capture-video"""
    frame: int = 0
    """which frame (0: the first step)"""
    out: str = "still.png"
    """the PNG to write"""


def main(args: Args):
    if not os.path.isfile(args.video):
        sys.exit(f"still_frame.py: error: --video {args.video}: no such file")
    frames = imageio_ffmpeg.read_frames(args.video)
    width, height = next(frames)["size"]
    for index, frame in enumerate(frames):
        if index == args.frame:
            Image.fromarray(np.frombuffer(frame, np.uint8).reshape(height, width, 3)).save(args.out)
            return
    sys.exit(f"still_frame.py: error: --frame {args.frame}: the video has {index + 1} frames")


if __name__ == "__main__":
    main(tyro.cli(Args))
