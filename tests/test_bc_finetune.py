"""bc_finetune.py: the bot's demonstrations, the masked cloning loss, a short run end to end, resume (and from the
checkpoint before a damaged one), pass sizes that halve on out-of-memory, videos that leave the cloning as it is, bad input."""

import errno
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import bc_finetune as bc
import glam_ppo
import offline_models
import zero_shot_eval
from script_runs import checkpoint_weights, main_in_process, only_run_dir, run_in_process, run_main_blocks, run_script, steps_write_infinity

SMALL = [
    "--model", "tiny-t5", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "4", "--batch-size", "32",
    "--learning-rate", "1e-3", "--eval-episodes", "4",
]


def run(cwd, *flags, check=True):
    return run_script("bc_finetune.py", cwd, *flags, check=check)


def test_demonstrations_are_the_prompts_glam_ppo_builds_for_the_same_episode():
    episodes = bc.generate_demos("BabyAI-MixedTrainLocal-v0", "canonical", 3, 150, seed=7, num_observations=3)
    assert sum(len(episode["actions"]) for episode in episodes) == 150
    assert all(episode["success"] for episode in episodes[:-1])  # the bot solves its levels; the last may be cut
    replay = glam_ppo.TextVecEnv("BabyAI-MixedTrainLocal-v0", 1, "canonical")
    for episode in episodes:
        replay.start_episode(0, episode["seed"])
        for prompt, action in zip(episode["prompts"], episode["actions"]):
            assert replay.prompts()[0] == prompt
            _, _, dones, _ = replay.step([replay.actions.index(action)])
        assert dones[0] or episode is episodes[-1]
    seeds = [episode["seed"] for episode in episodes]
    assert len(set(seeds)) == len(seeds) and min(seeds) == 7  # levels seed, seed + 1, ...; episodes still running are left out


@pytest.mark.parametrize("kind", [*bc.TINY_MODELS, *offline_models.TOKENIZERS])
def test_cloning_loss_is_minus_the_scorers_log_likelihood_with_padding_masked(kind):
    envs = bc.TextVecEnv("BabyAI-MixedTrainLocal-v0", 4, "augmented")  # actions of 1 to 3 tokens: padded targets
    prompts = envs.reset(seed=3)
    for actions in ([2, 1, 0, 2], [0, 2, 2, 1]):
        prompts += envs.step(actions)[0]  # prompts of different lengths: padded inputs
    llm, tokenizer = offline_models.build(kind)
    agent = bc.GlamAgent(llm, tokenizer, envs.actions).eval()
    labels = torch.tensor([index % len(envs.actions) for index in range(len(prompts))])
    assert len(set(agent.action_mask[labels].sum(-1).tolist())) > 1
    with torch.no_grad():
        scores = agent.score(prompts)
        nll, num_tokens = bc.action_nll(agent, prompts, labels)
        one_by_one = [bc.action_nll(agent, [prompt], label[None])[0] for prompt, label in zip(prompts, labels)]
    expected = -scores[torch.arange(len(prompts)), labels]
    torch.testing.assert_close(torch.stack(one_by_one), expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(nll, expected.sum(), rtol=0, atol=1e-3)
    assert num_tokens == int(agent.action_mask[labels].sum())


@pytest.mark.parametrize("kind", bc.TINY_MODELS)
def test_gradient_checkpointing_gives_the_same_cloning_gradient(kind):
    envs = bc.TextVecEnv("BabyAI-MixedTrainLocal-v0", 4, "augmented")
    prompts = envs.reset(seed=3) + envs.step([2, 1, 0, 2])[0]
    labels = torch.arange(len(prompts)) % len(envs.actions)
    gradients = []
    for checkpointing in (False, True):
        llm, tokenizer = offline_models.build(kind)
        if checkpointing:
            bc.checkpoint_activations(llm)
        agent = bc.GlamAgent(llm, tokenizer, envs.actions).train()  # dropout on, as while cloning: replayed identically
        torch.manual_seed(1)
        bc.action_nll(agent, prompts, labels)[0].backward()
        gradients.append({name: p.grad for name, p in agent.llm.named_parameters()})
    for name, grad in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_reading_demonstrations_checks_every_line(tmp_path):
    actions = bc.action_names("canonical")
    good = {"prompts": ["p1", "p2"], "actions": ["turn left", "go forward"]}
    path = tmp_path / "demos.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    assert len(bc.read_demos(str(path), actions)) == 2
    for lines, message in [
        ([good, "not json"], ":2 is not a trajectory"),
        ([good, {"prompts": ["p"]}], ":2 is not a trajectory"),
        ([good, {"prompts": ["p"], "actions": ["fly"]}], r":2 actions \['fly'\] are not among"),
        ([good, {"prompts": ["p", "q"], "actions": ["drop"]}], ":2 has a different number"),
        ([good], "at least 2"),
    ]:
        path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
        with pytest.raises(bc.UsageError, match=message):
            bc.read_demos(str(path), actions)
    with pytest.raises(bc.UsageError, match="cannot read demonstrations"):
        bc.read_demos(str(tmp_path / "missing.jsonl"), actions)


def test_short_run_lowers_the_loss_and_its_checkpoint_evaluates_and_starts_ppo(tmp_path, monkeypatch, capsys):
    run_dir = run_in_process(bc, tmp_path, [*SMALL, "--num-transitions", "800", "--batch-size", "16", "--eval-every", "100000"], monkeypatch)
    stdout = capsys.readouterr().out
    assert "done: " in stdout and os.path.exists(os.path.join(run_dir, "demos.jsonl"))
    events = EventAccumulator(run_dir)
    events.Reload()
    losses = [event.value for event in events.Scalars("losses/bc_loss")]
    num_training = sum(len(json.loads(line)["actions"]) for line in open(os.path.join(run_dir, "demos.jsonl"))) - json.loads(
        stdout.split(" held-out")[0].split(" and ")[-1]
    )
    assert num_training < 800 and len(losses) == -(-num_training // 16)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    accuracy = [event.value for event in events.Scalars("charts/action_accuracy")]
    assert len(accuracy) == 2 and accuracy[1] > 0.4
    for tag in ("charts/success_rate", "charts/episodic_return", "charts/episodic_length", "charts/learning_rate", "charts/SPS"):
        assert tag in events.Tags()["scalars"], tag
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoint"))) == ["args.json", "heads.pt", "model", "trainer.pt"]
    with pytest.raises(bc.UsageError, match=f"{run_dir} has made all its {len(losses)} optimizer steps: nothing to resume"):
        main_in_process(bc, tmp_path, ["--resume", run_dir], monkeypatch)

    rows = zero_shot_eval.main(zero_shot_eval.parse_args(["--model", run_dir, "--env-id", "BabyAI-GoToLocalS5N2-v0",
                                                          "--episodes", "4", "--num-envs", "4", "--output-dir", str(tmp_path / "eval")]))
    assert rows[0]["episodes"] == 4

    # PPO with a zero learning rate leaves the cloned weights as they were: it started from them
    ppo_dir = run_in_process(glam_ppo, tmp_path / "ppo", [
        "--init-from", run_dir, "--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "4", "--num-steps", "8",
        "--num-minibatches", "2", "--total-timesteps", "32", "--learning-rate", "0",
    ], monkeypatch)
    cloned, continued = checkpoint_weights(run_dir), checkpoint_weights(ppo_dir)
    assert cloned.keys() == continued.keys()
    assert all(torch.equal(cloned[name], continued[name]) for name in cloned)


def test_fewer_evaluation_episodes_than_envs(tmp_path, monkeypatch, capsys):
    run_in_process(bc, tmp_path, [*SMALL, "--num-transitions", "64", "--num-envs", "2", "--eval-episodes", "1"], monkeypatch)
    stdout = capsys.readouterr().out
    assert "(99% interval, 1 episodes)" in stdout and "done: " in stdout


def test_trajectories_saved_by_zero_shot_eval_are_demonstrations(tmp_path, monkeypatch, capsys):
    zero_shot_eval.main(zero_shot_eval.parse_args([
        "--policy", "bot", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--episodes", "6", "--num-envs", "3",
        "--save-trajectories", "--output-dir", str(tmp_path / "eval"),
    ]))
    capsys.readouterr()
    run_in_process(bc, tmp_path, [*SMALL, "--demos", str(tmp_path / "eval" / "trajectories.jsonl"), "--holdout-fraction", "0.2"], monkeypatch)
    stdout = capsys.readouterr().out
    assert "held-out transitions from" in stdout and "done: " in stdout


INTERRUPTED = [*SMALL, "--num-transitions", "480", "--eval-every", "96", "--eval-episodes", "1", "--num-envs", "1"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """The uninterrupted run that the interrupted and resumed ones must end as, run once, in this process."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run_in_process(bc, tmp_path_factory.mktemp("straight"), INTERRUPTED, monkeypatch)


def test_ctrl_c_saves_and_resume_ends_where_the_straight_run_ends(repo, tmp_path, straight_run, monkeypatch):
    """SIGINT here, SIGTERM in the tests below: one handler takes both."""
    flags, split = INTERRUPTED, tmp_path / "split"
    split.mkdir()
    process = subprocess.Popen(
        [sys.executable, os.path.join(repo, "bc_finetune.py"), *flags], cwd=split, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not glob.glob(str(split / "runs" / "*" / "checkpoint")) and time.time() < deadline:
        time.sleep(0.2)  # the first checkpoint is written at step 3 of 15; interrupt after it
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    run_dir = only_run_dir(split)
    stopped_at = torch.load(os.path.join(run_dir, "checkpoint", "trainer.pt"), weights_only=False)["step"]
    assert f"checkpoint at step {stopped_at}; continue with" in stdout and 3 <= stopped_at < 15
    main_in_process(bc, split, ["--resume", run_dir], monkeypatch)  # the stop is the subprocess's; the resume, in this one
    expected, resumed = checkpoint_weights(straight_run), checkpoint_weights(run_dir)
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=0, atol=1e-6)


def test_a_truncated_newest_checkpoint_resumes_from_the_previous_one(straight_run, tmp_path, monkeypatch, capsys):
    """The straight run's last two checkpoints (steps 12 and 15), the newest's weights cut in half: --resume says so in
    one line, goes on from step 12 and ends as the straight run did."""
    run_dir = str(tmp_path / "run")
    shutil.copytree(straight_run, run_dir)
    weights = os.path.join(run_dir, "checkpoint", "model", "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    capsys.readouterr()
    main_in_process(bc, tmp_path, ["--resume", run_dir], monkeypatch)
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "does not load" in line]
    assert line.startswith(f"{run_dir}/checkpoint does not load (") and line.endswith(f"going on from {run_dir}/checkpoint.previous")
    assert torch.load(os.path.join(run_dir, "checkpoint", "trainer.pt"), weights_only=False)["step"] == 15
    expected, resumed = checkpoint_weights(straight_run), checkpoint_weights(run_dir)
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=0, atol=1e-6)


THREE_STEPS = [*SMALL, "--num-transitions", "96", "--num-envs", "2", "--eval-episodes", "2", "--eval-every", "100000"]


@pytest.fixture(scope="module")
def passes_of_eight(tmp_path_factory):
    """A run of three steps whose batches of 32 are cloned in passes of 8 transitions."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run_in_process(bc, tmp_path_factory.mktemp("eight"), [*THREE_STEPS, "--grad-accum-batch", "8"], monkeypatch)


def test_auto_passes_halve_on_out_of_memory_and_clone_as_a_run_of_that_size(passes_of_eight, tmp_path, monkeypatch, capsys):
    """A pass of more than 8 transitions runs out of memory once it has run (its dropout masks drawn): auto goes from 32
    to 16 to 8 at the first step, keeps 8, and the run ends with the weights of the run in passes of 8."""
    action_nll = bc.action_nll

    def out_of_memory_above_eight(agent, prompts, action_indices):
        result = action_nll(agent, prompts, action_indices)
        if len(prompts) > 8:
            raise torch.OutOfMemoryError("CUDA out of memory (raised by the test)")
        return result

    monkeypatch.setattr(bc, "action_nll", out_of_memory_above_eight)
    run_dir = run_in_process(bc, tmp_path, [*THREE_STEPS, "--grad-accum-batch", "auto"], monkeypatch)
    halvings = [line for line in capsys.readouterr().out.splitlines() if "ran out of memory" in line]
    assert halvings == ["--grad-accum-batch auto: 32 per pass ran out of memory; 16 from now on",
                        "--grad-accum-batch auto: 16 per pass ran out of memory; 8 from now on"]
    expected, halved = checkpoint_weights(passes_of_eight), checkpoint_weights(run_dir)
    for name in expected:
        torch.testing.assert_close(halved[name], expected[name], rtol=0, atol=0)


def test_recording_leaves_the_cloning_as_it_is(passes_of_eight, tmp_path, monkeypatch):
    flags = [*THREE_STEPS, "--grad-accum-batch", "8", "--capture-video", "--video-interval", "2", "--video-format", "gif"]
    run_dir = run_in_process(bc, tmp_path, flags, monkeypatch)
    expected, recorded = checkpoint_weights(passes_of_eight), checkpoint_weights(run_dir)
    for name in expected:
        torch.testing.assert_close(recorded[name], expected[name], rtol=0, atol=0)
    (video,) = glob.glob(str(tmp_path / "videos" / "*" / "*.gif"))
    assert os.path.basename(video).startswith("step2__seed")
    with Image.open(video) as gif:
        assert gif.n_frames >= 2  # a frame per step, then the outcome's
    events = EventAccumulator(run_dir)
    events.Reload()
    assert events.Tags()["images"] == []  # videos go to videos/ and W&B, not TensorBoard


def test_a_full_disk_stops_the_run_with_its_last_good_checkpoint(tmp_path, monkeypatch):
    saves, save = [], torch.save

    def save_on_a_full_disk(obj, path, *args, **kwargs):
        if "trainer.pt" in str(path):
            saves.append(path)
            if len(saves) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return save(obj, path, *args, **kwargs)

    monkeypatch.setattr(bc.torch, "save", save_on_a_full_disk)
    with pytest.raises(bc.UsageError) as error:
        main_in_process(bc, tmp_path, [*THREE_STEPS, "--eval-every", "32"], monkeypatch)
    run_dir = os.path.relpath(only_run_dir(tmp_path), tmp_path)
    assert str(error.value) == f"could not write a checkpoint in {run_dir} (No space left on device); the last good checkpoint is {run_dir}/checkpoint"
    assert sorted(os.listdir(run_dir)).count("checkpoint.tmp") == 0
    assert torch.load(os.path.join(run_dir, "checkpoint", "trainer.pt"), weights_only=False)["step"] == 1


@pytest.mark.parametrize("folder, flags", [("runs", []), ("videos", ["--capture-video"])], ids=["run", "video"])
def test_a_folder_that_cannot_be_made_is_one_line_before_any_work(tmp_path, monkeypatch, folder, flags):
    (tmp_path / folder).write_text("")
    with pytest.raises(bc.UsageError, match=f"cannot make the {folder[:-1]} folder {folder}/.*: Not a directory"):
        main_in_process(bc, tmp_path, [*SMALL, "--num-transitions", "64", *flags], monkeypatch)


BAD_INPUT = [
    (["--env-id", "BabyAI-Nope-v0"], "unknown env id 'BabyAI-Nope-v0'"),
    (["--demos", "missing.jsonl"], "cannot read demonstrations 'missing.jsonl'"),
    (["--action-space", "restricted"], "need all six actions"),
    (["--model", "./no-such-model"], "cannot load model './no-such-model'"),
    (["--holdout-fraction", "1.5"], "--holdout-fraction 1.5 must be in (0, 1)"),
    (["--resume", "runs/nothing"], "no checkpoint in 'runs/nothing'"),
]


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory):
    """[exit code, stderr, what it left in its folder] of each command line of BAD_INPUT, through bc_finetune.py's
    __main__ block, all in one process."""
    argvs = [[*SMALL, "--num-transitions", "64", *flags] for flags, _ in BAD_INPUT]
    return run_main_blocks("bc_finetune.py", tmp_path_factory.mktemp("bad_input"), argvs)


@pytest.mark.parametrize("flags, message", BAD_INPUT)
def test_bad_input_gets_a_one_line_error(bad_input_results, flags, message):
    code, stderr, left = bad_input_results[BAD_INPUT.index((flags, message))]
    assert code == 1 and message in stderr
    assert "Traceback" not in stderr
    assert "runs" not in left or flags[0] == "--model"  # the run folder is made before the model loads


def test_non_finite_weights_stop_before_evaluating_or_saving(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    steps_write_infinity(monkeypatch, torch.optim.AdamW)
    previous_handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(FloatingPointError, match="non-finite weights at step 1; no checkpoint was written"):
            bc.main(bc.parse_args([*SMALL, "--num-transitions", "64"]))
    finally:
        signal.signal(signal.SIGINT, previous_handlers[0])
        signal.signal(signal.SIGTERM, previous_handlers[1])
    assert not glob.glob("runs/*/checkpoint*")


def interrupt_once(repo, cwd, flags, ready: str):
    """bc_finetune.py run with `flags` in cwd, sent SIGTERM one second after the path pattern `ready` exists:
    (seconds from the signal to the exit, stdout, stderr)."""
    process = subprocess.Popen(
        [sys.executable, os.path.join(repo, "bc_finetune.py"), *flags], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not glob.glob(str(cwd / ready)) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    sent = time.time()
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("still running 60 s after SIGTERM")
    assert process.returncode == 0, stderr[-3000:]
    return time.time() - sent, stdout, stderr


def test_a_stop_while_making_demonstrations_keeps_them_for_demos(repo, tmp_path):
    """400,000 transitions take minutes to make: the stop is seen within seconds, and the finished episodes are kept."""
    elapsed, stdout, _ = interrupt_once(repo, tmp_path, [*SMALL, "--num-transitions", "400000"], "runs/*/events.*")
    assert elapsed < 10
    partial = os.path.join(os.path.relpath(only_run_dir(tmp_path), tmp_path), "demos.partial.jsonl")
    made = sum(len(episode["actions"]) for episode in bc.read_demos(str(tmp_path / partial), bc.action_names("canonical")))
    assert 0 < made < 400_000 and f"the {made} transitions made are in {partial} (train on them with --demos {partial})" in stdout
    assert not glob.glob(str(tmp_path / "runs" / "*" / "checkpoint"))


def test_a_stop_during_an_evaluation_abandons_it_and_saves(repo, tmp_path):
    """The first evaluation, of 5,000 episodes, is abandoned within seconds; the run saves its step and can resume."""
    flags = [*SMALL, "--num-transitions", "64", "--eval-episodes", "5000"]
    elapsed, stdout, _ = interrupt_once(repo, tmp_path, flags, "runs/*/demos.jsonl")
    assert elapsed < 10
    run_dir = only_run_dir(tmp_path)
    assert f"saved {os.path.relpath(run_dir, tmp_path)}/checkpoint at step 0; continue with" in stdout
    events = EventAccumulator(run_dir)
    events.Reload()
    assert "charts/success_rate" not in events.Tags()["scalars"]  # nothing of the abandoned evaluation is logged
