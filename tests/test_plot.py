"""benchmark/plot.py: curves from TensorBoard runs."""

import os
import sys

import pytest
from torch.utils.tensorboard import SummaryWriter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmark"))
import plot  # noqa: E402


def fake_run(folder, successes):
    writer = SummaryWriter(folder)
    for step, success in successes:
        writer.add_scalar("charts/success_rate", success, step)
    writer.close()


def test_bins_average_episodes_and_seeds_make_one_curve(tmp_path):
    fake_run(tmp_path / "a_seed1", [(100, 0.0), (900, 1.0), (1500, 1.0)])
    fake_run(tmp_path / "a_seed2", [(200, 1.0), (1100, 1.0), (1900, 0.0)])
    frames, values = plot.binned_curve(str(tmp_path / "a_seed1"), "charts/success_rate", 1000)
    assert frames.tolist() == [500, 1500] and values.tolist() == [0.5, 1.0]
    out = tmp_path / "curve.png"
    plot.main(plot.Args(curves=(f"A={tmp_path}/a_*",), out=str(out), bin_frames=1000, random_baseline=0.3))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_glob_matching_nothing_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no run folder matches"):
        plot.main(plot.Args(curves=(f"A={tmp_path}/nothing_*",), out=str(tmp_path / "x.png")))
