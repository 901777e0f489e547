"""Episode videos: one frame per step plus the outcome's, decodable, of one size; bars drawn from the distribution the
action was sampled from; and recording leaves a training run exactly as it is without."""

import glob
import inspect
import json
import os
import sys

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import bc_finetune
import glam_ppo as g
import zero_shot_eval
from script_runs import checkpoint_weights, main_in_process, only_run_dir, run_in_process

LEVEL = "BabyAI-GoToLocalS5N2-v0"
SMALL = ["--model", "tiny-t5", "--env-id", LEVEL, "--num-envs", "4", "--num-steps", "8", "--num-minibatches", "2", "--learning-rate", "3e-4"]


@pytest.fixture(scope="module")
def recorded():
    torch.manual_seed(0)
    llm, tokenizer = g.load_llm("tiny-t5")
    env = g.TextVecEnv(LEVEL, 1, "canonical", final_frames=True)
    agent = g.GlamAgent(llm, tokenizer, env.actions).eval()
    video, episode = g.record_episode(agent, env, level_seed=3, autocast=torch.autocast("cpu", enabled=False))
    return agent, video, episode


def decoded_mp4(path):
    frames = imageio_ffmpeg.read_frames(path)
    meta = next(frames)
    width, height = meta["size"]
    return [np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in frames]


def test_one_frame_per_step_and_one_for_the_outcome_all_of_one_size(recorded):
    _, video, episode = recorded
    assert len(video.frames) == episode["length"] + 1 == len(video.probs) + 1
    assert {frame.shape for frame in video.frames} == {(g.VIDEO_SIZE[1], g.VIDEO_SIZE[0], 3)}
    assert all(frame.dtype == np.uint8 for frame in video.frames)


def test_the_bars_are_the_distribution_each_action_was_sampled_from(recorded):
    agent, video, episode = recorded
    replay = g.TextVecEnv(LEVEL, 1, "canonical")
    replay.start_episode(0, 3)
    for probs, chosen in zip(video.probs, video.chosen):
        with torch.no_grad():
            expected = agent(replay.prompts())[0][0].softmax(-1)
        np.testing.assert_allclose(probs, expected.numpy(), rtol=0, atol=1e-6)
        *_, finished = replay.step([chosen])
    # The chosen actions replay the recorded episode to its end.
    assert finished and finished[0]["length"] == episode["length"] and finished[0]["return"] == pytest.approx(episode["return"])


@pytest.mark.parametrize("video_format", ["mp4", "gif"])
def test_a_written_video_decodes_to_its_frames(recorded, tmp_path, video_format):
    _, video, _ = recorded
    path = str(tmp_path / f"episode.{video_format}")
    g.write_video(video.frames, path)
    if video_format == "mp4":
        frames = decoded_mp4(path)
        assert len(frames) == len(video.frames)
        assert np.abs(frames[1].astype(int) - video.frames[1].astype(int)).mean() < 8  # H.264 is lossy
    else:
        with Image.open(path) as gif:
            assert gif.n_frames == len(video.frames) and gif.size == g.VIDEO_SIZE


def test_zero_shot_policies_return_the_distribution_they_draw_from():
    torch.manual_seed(0)
    llm, tokenizer = g.load_llm("tiny-t5")
    envs = zero_shot_eval.TextVecEnv(LEVEL, 3, "canonical")
    prompts = envs.reset(seed=0)
    agent = zero_shot_eval.GlamAgent(llm, tokenizer, envs.actions).eval()
    args = zero_shot_eval.parse_args(["--model", "tiny-t5"])
    actions, probs = zero_shot_eval.Policy(args, 6, agent).act([0, 1, 2], prompts)
    with torch.no_grad():
        np.testing.assert_allclose(probs, agent(prompts)[0].softmax(-1).numpy(), rtol=0, atol=1e-6)
    assert len(actions) == 3
    args.policy = "random"
    assert np.allclose(zero_shot_eval.Policy(args, 6).act([0, 1], prompts[:2])[1], 1 / 6)
    args.policy = "bot"
    bot = zero_shot_eval.Policy(args, 6)
    for index, env in enumerate(envs.envs):
        bot.start(index, env)
    actions, probs = bot.act([0, 1, 2], prompts)
    assert (probs == np.eye(6)[actions]).all()


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
        torch.testing.assert_close(recorded_run[name], expected[name], rtol=0, atol=0)
    logged = []  # every scalar but the timings: losses, KL, the probe prompts' action distributions
    for run_dir in (only_run_dir(plain), only_run_dir(recording)):
        events = EventAccumulator(run_dir, size_guidance={"images": 0, "scalars": 0}).Reload()
        tags = [tag for tag in events.Tags()["scalars"] if "SPS" not in tag]
        logged.append({tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in tags})
    assert logged[0] == logged[1] and len(logged[0]) > 10
    videos = sorted(glob.glob(str(recording / "videos" / "*" / "*.mp4")))
    assert [os.path.basename(path).split("__")[0] for path in videos] == ["update1", "update2"]
    images = events.Images("videos/episode")
    assert len(images) == 2 and (images[0].width, images[0].height) == g.VIDEO_SIZE
    for path in videos:
        assert len(decoded_mp4(path)) >= 2
    logged = [json.loads(line)["videos/episode"] for line in (recording / "wandb_log.jsonl").read_text().splitlines()]
    assert [os.path.join(recording, path) for path in logged] == videos


def test_bc_recording_leaves_the_cloning_as_it_is(tmp_path, monkeypatch):
    flags = ["--model", "tiny-t5", "--env-id", LEVEL, "--num-transitions", "96", "--num-envs", "2", "--eval-episodes", "2", "--batch-size", "32"]
    run_in_process(bc_finetune, tmp_path / "plain", flags, monkeypatch)
    run_in_process(bc_finetune, tmp_path / "recording", [*flags, "--capture-video", "--video-interval", "2", "--video-format", "gif"], monkeypatch)
    expected, recorded_run = checkpoint_weights(only_run_dir(tmp_path / "plain")), checkpoint_weights(only_run_dir(tmp_path / "recording"))
    for name in expected:
        torch.testing.assert_close(recorded_run[name], expected[name], rtol=0, atol=0)
    assert [os.path.basename(path).split("__")[0] for path in glob.glob(str(tmp_path / "recording" / "videos" / "*" / "*.gif"))] == ["step2"]


def test_zero_shot_records_the_first_episodes_of_each_probe_and_plays_them_unchanged(tmp_path, monkeypatch, capsys):
    flags = ["--model", "tiny-t5", "--env-id", LEVEL, "--episodes", "3", "--num-envs", "2", "--suite", "none", "--probes", "no-change", "invented-nouns"]
    main_in_process(zero_shot_eval, tmp_path / "plain", [*flags, "--output-dir", "out"], monkeypatch)
    plain = capsys.readouterr().out
    main_in_process(zero_shot_eval, tmp_path / "recording", [*flags, "--output-dir", "out", "--capture-video", "--video-episodes", "2"], monkeypatch)
    recording = capsys.readouterr().out
    assert plain.splitlines()[-4:-1] == recording.splitlines()[-4:-1]  # the same table
    with open(tmp_path / "recording" / "out" / "results.json") as f:
        assert len(json.load(f)["rows"]) == 2
    names = sorted(os.path.basename(path).rsplit("__", 1)[0] for path in glob.glob(str(tmp_path / "recording" / "videos" / "out" / "*.mp4")))
    assert names == [f"{probe}__{LEVEL}__seed{seed}" for probe in ("invented-nouns", "no-change") for seed in (1, 2)]


def test_video_code_is_the_same_in_every_script():
    names = {"EpisodeVideo", "check_video_output", "gif_bytes", "write_video"}
    for copy in (bc_finetune, zero_shot_eval):
        for name in names | ({"record_episode", "log_video"} if copy is bc_finetune else set()):
            assert inspect.getsource(getattr(copy, name)) == inspect.getsource(getattr(g, name)), (copy.__name__, name)
