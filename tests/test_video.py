"""glam_ppo.py's episode videos: one frame per step plus the outcome's, of one size, each captioned with the goal and
the action chosen with its probability under the policy it was sampled from; decodable; and recording leaves a
training run exactly as it is without. (zero_shot_eval.py's and bc_finetune.py's: in their own test files.)"""

import glob
import json
import os
import sys

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import glam_ppo as g
from script_runs import checkpoint_weights, only_run_dir, run_in_process

LEVEL = "BabyAI-GoToLocalS5N2-v0"
SMALL = ["--model", "tiny-t5", "--env-id", LEVEL, "--num-envs", "4", "--num-steps", "8", "--num-minibatches", "2", "--learning-rate", "3e-4"]


@pytest.fixture(scope="module")
def recorded():
    torch.manual_seed(0)
    llm, tokenizer = g.load_llm("tiny-t5")
    env = g.TextVecEnv(LEVEL, 1, "canonical", final_frames=True)
    agent = g.GlamAgent(llm, tokenizer, env.actions).eval()
    frames, episode = g.record_episode(agent, env, level_seed=3, autocast=torch.autocast("cpu", enabled=False))
    return agent, frames, episode


def decoded_mp4(path):
    frames = imageio_ffmpeg.read_frames(path)
    meta = next(frames)
    width, height = meta["size"]
    return [np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in frames]


def test_one_frame_per_step_and_one_for_the_outcome_all_of_one_size(recorded):
    _, frames, episode = recorded
    assert len(frames) == episode["length"] + 1
    (shape,) = {frame.shape for frame in frames}
    assert shape[0] % 16 == 0 and shape[1] % 16 == 0 and all(frame.dtype == np.uint8 for frame in frames)


def test_each_caption_is_the_action_sampled_and_its_probability_under_the_policy(recorded):
    """Replayed with the policy's own distribution and the recording's generator, each frame is the level captioned with
    the goal and `action (p = probability)`; the last, with the outcome."""
    agent, frames, episode = recorded
    replay, generator = g.TextVecEnv(LEVEL, 1, "canonical", final_frames=True), torch.Generator().manual_seed(3)
    replay.start_episode(0, 3)
    goal = replay.missions[0]
    for frame in frames[:-1]:
        with torch.no_grad():
            probs = agent(replay.prompts())[0][0].softmax(-1)
        action = int(torch.multinomial(probs, 1, generator=generator))
        assert np.array_equal(frame, g.caption(replay.frame(0), goal, f"{replay.actions[action]} (p = {probs[action]:.2f})"))
        *_, finished = replay.step([action])
    assert finished and finished[0]["length"] == episode["length"] and finished[0]["return"] == pytest.approx(episode["return"])
    assert replay.missions[0] != goal  # the env went on to its next episode, whose goal the last frame must not show
    assert np.array_equal(frames[-1], g.caption(finished[0]["frame"], goal, "success" if episode["success"] else "failure"))


def test_a_long_goal_is_wrapped_inside_a_one_room_frame():
    level = np.zeros((256, 256, 3), dtype=np.uint8)
    goal = "go to the red box after you pick up the blue ball"
    frame = Image.fromarray(g.caption(level, goal, "turn left (p = 0.17)"))
    band = np.asarray(frame)[256:]
    assert frame.size == (256, 320) and (band[:, -4:] == 255).all()  # nothing drawn at the band's right edge


@pytest.mark.parametrize("video_format", ["mp4", "gif"])
def test_a_written_video_decodes_to_its_frames(recorded, tmp_path, video_format):
    _, frames, _ = recorded
    path = str(tmp_path / f"episode.{video_format}")
    g.write_video(frames, path)
    if video_format == "mp4":
        decoded = decoded_mp4(path)
        assert len(decoded) == len(frames)
        assert np.abs(decoded[1].astype(int) - frames[1].astype(int)).mean() < 8  # H.264 is lossy
    else:
        with Image.open(path) as gif:  # identical frames in a row are one frame of their summed durations
            durations = []
            for index in range(gif.n_frames):
                gif.seek(index)
                durations.append(gif.info["duration"])
            assert sum(durations) == len(frames) * 1000 // g.VIDEO_FPS and gif.size == frames[0].shape[1::-1]


def fake_wandb(folder, monkeypatch):
    """A `wandb` module, first on the import path, that writes what is logged to wandb_log.jsonl (the real one needs an
    account)."""
    (folder / "wandb").mkdir(parents=True)
    (folder / "wandb" / "__init__.py").write_text(
        "import json\n"
        "def init(**kwargs): pass\n"
        "class Video:\n"
        "    def __init__(self, path): self.path = path\n"
        "def log(data):\n"
        "    with open('wandb_log.jsonl', 'a') as f:\n"
        "        f.write(json.dumps({k: v.path for k, v in data.items()}) + '\\n')\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "wandb", raising=False)


def test_recording_leaves_the_training_run_as_it_is(tmp_path, monkeypatch):
    """Also: with --track, each video goes to Weights and Biases."""
    plain, recording = tmp_path / "plain", tmp_path / "recording"
    run_in_process(g, plain, [*SMALL, "--total-timesteps", "64"], monkeypatch)
    fake_wandb(tmp_path / "fake", monkeypatch)
    try:
        run_in_process(g, recording, [*SMALL, "--total-timesteps", "64", "--capture-video", "--video-interval", "1", "--track"], monkeypatch)
    finally:
        sys.modules.pop("wandb", None)  # the fake, imported by the run
    expected, recorded_run = checkpoint_weights(only_run_dir(plain)), checkpoint_weights(only_run_dir(recording))
    for name in expected:
        assert torch.equal(recorded_run[name], expected[name]), name
    logged = []  # every scalar but the timings: losses, KL, the probe prompts' action distributions
    for run_dir in (only_run_dir(plain), only_run_dir(recording)):
        events = EventAccumulator(run_dir, size_guidance={"scalars": 0}).Reload()
        tags = [tag for tag in events.Tags()["scalars"] if "SPS" not in tag]
        logged.append({tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in tags})
    assert logged[0] == logged[1] and len(logged[0]) > 10
    videos = sorted(glob.glob(str(recording / "videos" / "*" / "*.mp4")))
    assert [os.path.basename(path).split("__")[0] for path in videos] == ["update1", "update2"]
    for path in videos:
        assert len(decoded_mp4(path)) >= 2
    logged = [json.loads(line)["videos/episode"] for line in (recording / "wandb_log.jsonl").read_text().splitlines()]
    assert [os.path.join(recording, path) for path in logged] == videos
