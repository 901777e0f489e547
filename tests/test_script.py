"""glam_ppo.py as users run it: a short training run, checkpoints, exact resume, Ctrl-C, and bad input."""

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
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import glam_ppo as g
import glam_ppo_multigpu
from script_runs import checkpoint_weights, only_run_dir, run_in_process, run_main_blocks, run_script, steps_write_infinity

SMALL = [
    "--model", "tiny-t5", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "4", "--num-steps", "8",
    "--num-minibatches", "2", "--learning-rate", "3e-4", "--save-interval", "1",
]


def run(cwd, *flags, check=True):
    return run_script("glam_ppo.py", cwd, *flags, check=check)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """glam_ppo.py's main in this process, each set of flags run once per module: flags -> run folder. The tests that
    share a run only read it."""
    made = {}

    def run_once(*flags):
        if flags not in made:
            with pytest.MonkeyPatch.context() as monkeypatch:
                made[flags] = run_in_process(g, tmp_path_factory.mktemp("run"), list(flags), monkeypatch)
        return made[flags]

    return run_once


def test_short_run_writes_tensorboard_scalars_and_a_checkpoint(tmp_path):
    result = run(tmp_path, *SMALL, "--num-steps", "16", "--update-epochs", "1", "--total-timesteps", "256")  # 4 updates
    run_dir = only_run_dir(tmp_path)
    assert "done: 256 frames" in result.stdout
    assert "Sampling rejected" not in result.stdout + result.stderr
    events = EventAccumulator(run_dir)
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in [
        "charts/episodic_return", "charts/episodic_length", "charts/success_rate", "charts/SPS", "charts/learning_rate",
        "losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/approx_kl", "losses/old_approx_kl",
        "losses/clipfrac", "losses/explained_variance", "probes/prompt_0/go forward",
    ]:
        assert tag in tags, tag
    assert len(events.Scalars("losses/approx_kl")) == 4
    probe = [events.Scalars(f"probes/prompt_0/{a}")[-1].value for a in g.action_names("canonical")]
    assert sum(probe) == pytest.approx(1.0, abs=1e-4)
    assert "hyperparameters/text_summary" in events.Tags()["tensors"]
    checkpoint = os.path.join(run_dir, "checkpoint")
    assert sorted(os.listdir(checkpoint)) == ["args.json", "envs.pkl", "heads.pt", "model", "trainer.pt"]
    assert json.load(open(os.path.join(checkpoint, "args.json")))["model"] == "tiny-t5"
    trainer = torch.load(os.path.join(checkpoint, "trainer.pt"), weights_only=False)
    assert trainer["global_step"] == 256 and trainer["iteration"] == 4
    # the saved model is an ordinary save_pretrained folder
    llm, _ = g.load_llm(os.path.join(checkpoint, "model"))
    assert llm.config.is_encoder_decoder


def test_resume_continues_exactly(runs, tmp_path):
    """The first half run in this process (a copy of the shared run), the resume in a fresh one: only what the
    checkpoint holds carries over."""
    straight, first = runs(*SMALL, "--total-timesteps", "64"), runs(*SMALL, "--total-timesteps", "32")
    split = tmp_path / "split"
    split_dir = str(split / "runs" / os.path.basename(first))
    shutil.copytree(first, split_dir)
    first_half = checkpoint_weights(split_dir)
    result = run(split, "--resume", split_dir, "--total-timesteps", "64")
    assert "done: 64 frames" in result.stdout
    resumed, reference = checkpoint_weights(split_dir), checkpoint_weights(straight)
    assert any(not torch.equal(first_half[k], resumed[k]) for k in resumed)  # the second update did train
    for name, weight in reference.items():
        torch.testing.assert_close(resumed[name], weight, rtol=0, atol=1e-6, msg=name)


def scalars(run_dir, tag):
    events = EventAccumulator(run_dir)
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


@pytest.mark.parametrize("script", [g, glam_ppo_multigpu], ids=lambda m: m.__name__)
def test_ctrl_c_during_a_rollout_resumes_as_the_straight_run(script, tmp_path, monkeypatch):
    # 3 updates, 72 steps per env; episodes time out at frame 100, in the second rollout's dropped part. One epoch per
    # update: the resume must still replay the minibatch shuffles' random stream.
    flags = [*SMALL, "--model", "tiny-causal", "--num-steps", "24", "--total-timesteps", "288", "--update-epochs", "1"]
    straight = run_in_process(script, tmp_path / "straight", flags, monkeypatch)

    env_steps, finished, step = [], [], script.TextVecEnv.step

    def step_then_ctrl_c(self, actions):
        env_steps.append(1)
        if len(env_steps) == 29:  # the 5th step of the second rollout, after episodes of it were logged
            os.kill(os.getpid(), signal.SIGINT)
        result = step(self, actions)
        finished.append(len(result[3]))
        return result

    monkeypatch.setattr(script.TextVecEnv, "step", step_then_ctrl_c)
    split = run_in_process(script, tmp_path / "split", flags, monkeypatch)
    monkeypatch.setattr(script.TextVecEnv, "step", step)
    # What was logged before the stop is on disk (the writer was closed, not left to its thread): the first update's
    # speed, and glam_ppo.py's episodes, each logged as it ends (glam_ppo_multigpu.py logs a rollout's after it).
    assert [step for step, _ in scalars(split, "charts/SPS")] == [96]
    if script is g:
        assert len(scalars(split, "charts/episodic_return")) == sum(finished) > 0
    trainer = torch.load(os.path.join(split, "checkpoint", "trainer.pt"), weights_only=False)
    assert (trainer["iteration"], trainer["global_step"]) == (1, 96)
    run_in_process(script, tmp_path / "split", ["--resume", split], monkeypatch)

    expected, resumed = checkpoint_weights(straight), checkpoint_weights(split)
    for name, weight in expected.items():
        torch.testing.assert_close(resumed[name], weight, rtol=0, atol=1e-6, msg=name)
    # The dropped partial rollout is replayed, and what it had logged is purged: the same curves, no step twice.
    episodes = scalars(straight, "charts/episodic_return")
    assert len(episodes) >= 4 and scalars(split, "charts/episodic_return") == episodes
    assert [step for step, _ in scalars(split, "charts/SPS")] == [96, 192, 288]


def test_ctrl_c_saves_a_checkpoint_that_resumes(repo, tmp_path):
    """SIGINT here, SIGTERM in test_sigterm_during_a_long_update_stops_within_seconds: one handler takes both."""
    process = subprocess.Popen(
        [sys.executable, os.path.join(repo, "glam_ppo.py"), *SMALL, "--total-timesteps", "32000"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 120
    while not glob.glob(str(tmp_path / "runs" / "*" / "checkpoint")) and time.time() < deadline:
        time.sleep(0.5)  # wait until the first update has been saved, then interrupt mid-run
    process.send_signal(signal.SIGINT)
    sent = time.time()
    stdout, stderr = process.communicate(timeout=120)
    assert time.time() - sent < 20  # the rollout stops after its current step, the update after its current minibatch
    assert process.returncode == 0, stderr[-3000:]
    assert "saved" in stdout and "--resume" in stdout
    run_dir = only_run_dir(tmp_path)
    trainer = torch.load(os.path.join(run_dir, "checkpoint", "trainer.pt"), weights_only=False)
    in_update = trainer["update"] is not None if "update" in trainer else False  # saved during an update: its rollout done
    assert 1 <= trainer["iteration"] < 1000 and trainer["global_step"] == 32 * (trainer["iteration"] + in_update)
    result = run(tmp_path, "--resume", run_dir, "--total-timesteps", str(32 * (trainer["iteration"] + 1)))
    assert f"done: {32 * (trainer['iteration'] + 1)} frames" in result.stdout


def test_a_stop_during_an_update_takes_effect_after_the_current_minibatch_and_resume_finishes_it(tmp_path, monkeypatch):
    """Ctrl-C during the 3rd minibatch of the first update (epoch 2 of 4, minibatch 1 of 2): no further optimizer step,
    the update's batch and position saved, and the resumed run ends with the weights of the uninterrupted one."""
    flags = [*SMALL, "--total-timesteps", "64", "--update-epochs", "4"]
    straight = run_in_process(g, tmp_path / "straight", flags, monkeypatch)
    steps, step = [], torch.optim.Adam.step

    def step_then_ctrl_c(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step_then_ctrl_c)
    split = run_in_process(g, tmp_path / "split", flags, monkeypatch)
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    assert len(steps) == 3  # the stop took effect after the minibatch it came in
    trainer = torch.load(os.path.join(split, "checkpoint", "trainer.pt"), weights_only=False)
    assert (trainer["iteration"], trainer["global_step"]) == (0, 32)
    assert (trainer["update"]["epoch"], trainer["update"]["start"]) == (1, 16) and len(trainer["update"]["batch"]["obs"]) == 32
    run_in_process(g, tmp_path / "split", ["--resume", split], monkeypatch)
    expected, resumed = checkpoint_weights(straight), checkpoint_weights(split)
    for name, weight in expected.items():
        assert torch.equal(resumed[name], weight), name
    assert [step for step, _ in scalars(split, "losses/approx_kl")] == [step for step, _ in scalars(straight, "losses/approx_kl")]


def test_sigterm_during_a_long_update_stops_within_seconds(repo, tmp_path):
    """The issue's measurement: 4 envs x 8 steps and 200 epochs make an update of about half a minute here, which the
    stop used to wait for (46.7 s from SIGTERM to exit); now the run saves after the minibatch under way. 2,000 epochs,
    so that a fast machine is still inside the update when the signal comes."""
    process = subprocess.Popen(
        [sys.executable, os.path.join(repo, "glam_ppo.py"), *SMALL, "--total-timesteps", "32", "--update-epochs", "2000"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TQDM_MININTERVAL": "0"},  # tqdm may otherwise hold the last step's "32/32" until the bar closes
    )
    seen = ""
    while "32/32" not in seen and process.poll() is None:  # the progress bar: the rollout is over, the update begins
        seen += process.stderr.read(1)
    time.sleep(3)
    process.send_signal(signal.SIGTERM)
    sent = time.time()
    stdout, stderr = process.communicate(timeout=120)
    assert time.time() - sent < 10 and process.returncode == 0, stderr[-3000:]
    trainer = torch.load(os.path.join(only_run_dir(tmp_path), "checkpoint", "trainer.pt"), weights_only=False)
    assert trainer["iteration"] == 0 and trainer["update"]["epoch"] < 2000


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls, compute_gae = [], g.compute_gae

    def gae_turning_nan(*args, **kwargs):
        advantages, returns = compute_gae(*args, **kwargs)
        calls.append(1)
        return (advantages * float("nan"), returns) if len(calls) == 2 else (advantages, returns)

    monkeypatch.setattr(g, "compute_gae", gae_turning_nan)
    previous_handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(FloatingPointError, match="non-finite loss at update 2.*last good checkpoint"):
            g.main(g.parse_args([*SMALL, "--total-timesteps", "96"]))
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    trainer = torch.load(glob.glob("runs/*/checkpoint/trainer.pt")[0], weights_only=False)
    assert trainer["iteration"] == 1


@pytest.mark.parametrize("script", [g, glam_ppo_multigpu], ids=lambda m: m.__name__)
def test_non_finite_weights_stop_before_acting_or_saving(script, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    steps_write_infinity(monkeypatch, torch.optim.Adam)
    previous_handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(FloatingPointError, match=r"non-finite weights at update 1 \(32 frames\); no checkpoint was written"):
            script.main(script.parse_args([*SMALL, "--total-timesteps", "64"]))
    finally:
        signal.signal(signal.SIGINT, previous_handlers[0])
        signal.signal(signal.SIGTERM, previous_handlers[1])
    assert not glob.glob("runs/*/checkpoint*")


def test_progress_bar_rate_counts_the_updates_too(tmp_path, monkeypatch):
    """The rate shown during a run is frames over all the time elapsed, not the burst of the last rollout steps."""
    shown, compute_gae, env_step = [], g.compute_gae, g.TextVecEnv.step

    def slow_step(self, actions):
        time.sleep(0.1)  # every step refreshes the bar
        return env_step(self, actions)

    def slow_update(*args, **kwargs):
        time.sleep(1.5)  # an update phase as long as the rollout (16 steps), as with a real model
        return compute_gae(*args, **kwargs)

    class RecordingBar(g.tqdm):
        def update(self, n=1):
            super().update(n)
            rate = self.format_dict["rate"] or self.n / self.format_dict["elapsed"]  # what format_meter displays
            shown.append((rate, self.n / (time.time() - self.start_t)))

    monkeypatch.setattr(g.TextVecEnv, "step", slow_step)
    monkeypatch.setattr(g, "compute_gae", slow_update)
    monkeypatch.setattr(g, "tqdm", RecordingBar)
    run_in_process(g, tmp_path, [*SMALL, "--num-steps", "16", "--total-timesteps", "128"], monkeypatch)
    displayed, overall = shown[-1]  # the second rollout's last step, after a 1.5 s update
    assert displayed < 1.2 * overall, (displayed, overall)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    args = g.parse_args([*SMALL, "--total-timesteps", "32"])
    llm, tokenizer = g.load_llm("tiny-t5")
    envs = g.TextVecEnv("BabyAI-MixedTrainLocal-v0", 2, "canonical")
    envs.reset(seed=0)
    envs.step([2, 1])
    agent = g.GlamAgent(llm, tokenizer, envs.actions)
    optimizer = torch.optim.Adam(agent.parameters())
    g.save_checkpoint(str(tmp_path), args, agent, optimizer, g.run_state(envs, global_step=32, iteration=1))

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(g.json, "dump", killed)
    with pytest.raises(KeyboardInterrupt):
        g.save_checkpoint(str(tmp_path), args, agent, optimizer, g.run_state(envs, global_step=64, iteration=2))
    found = g.checkpoint_folders(str(tmp_path))[0]
    assert found.endswith("checkpoint") and torch.load(os.path.join(found, "trainer.pt"), weights_only=False)["iteration"] == 1
    with open(os.path.join(found, "envs.pkl"), "rb") as f:
        restored = g.pickle.load(f)
    assert restored.prompts() == envs.prompts()
    assert restored.step([2, 2])[0] == envs.step([2, 2])[0]
    # killed between the two renames: only the previous checkpoint, renamed .previous, is there
    shutil.rmtree(found + ".previous", ignore_errors=True)
    os.rename(found, found + ".previous")
    assert g.checkpoint_folders(str(tmp_path)) == [found + ".previous"]


def test_bf16_checkpoint_trains_in_float32_at_the_papers_learning_rate(tmp_path, monkeypatch):
    torch.manual_seed(0)
    llm, tokenizer = g.load_llm("tiny-causal")
    llm.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")  # as most hub checkpoints are stored
    tokenizer.save_pretrained(tmp_path / "bf16")
    stored = {name: weight.float() for name, weight in llm.state_dict().items()}
    run_dir = run_in_process(g, tmp_path / "run", [*SMALL, "--model", str(tmp_path / "bf16"), "--learning-rate", "1e-6", "--total-timesteps", "32"], monkeypatch)
    trained = checkpoint_weights(run_dir)
    assert all(trained[name].dtype == torch.float32 for name in stored)
    moved = {name: (trained[name] != weight).float().mean().item() for name, weight in stored.items() if weight.dim() == 2}
    # bf16 weights of size 0.02 are 1.2e-4 apart: 8 Adam steps of 1e-6 would move none of them. The embedding moves
    # only in the rows of the words the prompts use.
    assert all(fraction > 0.5 for name, fraction in moved.items() if "embed" not in name), moved
    assert moved["model.embed_tokens.weight"] > 0.1, moved


WARNING_FREE = [["--model", "tiny-t5"], ["--model", "tiny-causal"], ["--model", "tiny-causal", "--lora-r", "4"]]


@pytest.fixture(scope="module")
def runs_with_warnings_as_errors(tmp_path_factory):
    """[exit code, stderr, what it left] of a run of each of WARNING_FREE, through glam_ppo.py's __main__ block, all in
    one process started with PYTHONWARNINGS turning deprecation and future warnings into errors (imports included: the
    first run makes them; a warning that a library gives once is an error in the first run that meets it)."""
    argvs = [[*SMALL, *flags, "--total-timesteps", "32", "--update-epochs", "1"] for flags in WARNING_FREE]
    env = {**os.environ, "PYTHONWARNINGS": "error::FutureWarning,error::DeprecationWarning"}
    return run_main_blocks("glam_ppo.py", tmp_path_factory.mktemp("warnings"), argvs, env=env)


@pytest.mark.parametrize("flags", WARNING_FREE)
def test_a_run_emits_no_deprecation_warning(flags, runs_with_warnings_as_errors):
    code, stderr, _ = runs_with_warnings_as_errors[WARNING_FREE.index(flags)]
    assert code == 0, stderr[-3000:]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--env-id", "BabyAI-GoToLocl-v0"], "valid ids: .*BabyAI-GoToLocal-v0"),
        (["--num-minibatches", "7"], "must divide the batch"),
        (["--total-timesteps", "10"], "less than one batch"),
        (["--grad-accum-minibatch", "-1"], "grad-accum-minibatch"),
        (["--load-embedding"], "add --no-pretrained"),
        (["--resume", "no/such/run"], "no checkpoint in 'no/such/run'"),
    ],
)
def test_bad_input_names_the_fix(flags, message):
    with pytest.raises(g.UsageError, match=message):
        g.parse_args(flags)


@pytest.mark.skipif(__import__("importlib").util.find_spec("wandb") is not None, reason="wandb is installed")
def test_track_without_wandb_says_how_to_install_it():
    with pytest.raises(g.UsageError, match="pip install wandb"):
        g.parse_args(["--track"])


def test_resume_with_different_settings_is_refused(runs):
    run_dir = runs(*SMALL, "--total-timesteps", "32")
    with pytest.raises(g.UsageError, match=r"--num-envs 8 \(run has 4\).*drop these flags"):
        g.parse_args(["--resume", run_dir, "--num-envs", "8"])
    assert g.parse_args(["--resume", run_dir, "--total-timesteps", "64"]).num_iterations == 2


COMMAND_LINE_ERRORS = [
    (["--model", "google/flan-t5-typo"], "cannot load model 'google/flan-t5-typo'.*tiny-t5"),
    (["--env-id", "Nope-v0"], "unknown env id 'Nope-v0'; valid ids"),
]
UNKNOWN_ACTION_SPACE = ["--action-space", "everything"]


@pytest.fixture(scope="module")
def command_line_errors(tmp_path_factory):
    """[exit code, stderr, what it left] of the command lines of the two tests below, through glam_ppo.py's __main__
    block, in one process: COMMAND_LINE_ERRORS's, then UNKNOWN_ACTION_SPACE."""
    argvs = [["--total-timesteps", "1280", *flags] for flags, _ in COMMAND_LINE_ERRORS] + [UNKNOWN_ACTION_SPACE]
    return run_main_blocks("glam_ppo.py", tmp_path_factory.mktemp("errors"), argvs)


@pytest.mark.parametrize("flags, message", COMMAND_LINE_ERRORS)
def test_command_line_errors_are_one_line_without_traceback(command_line_errors, flags, message):
    code, stderr, _ = command_line_errors[COMMAND_LINE_ERRORS.index((flags, message))]
    assert code != 0
    assert "Traceback" not in stderr
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("glam_ppo.py: error:")
    assert __import__("re").search(message, last_line)


def test_unknown_action_space_lists_the_choices(command_line_errors):
    code, stderr, _ = command_line_errors[-1]
    assert code != 0 and "canonical" in stderr and "augmented" in stderr


@pytest.mark.parametrize(
    "common, variant",
    [
        ([], ["--grad-accum-minibatch", "5"]),  # 16 = 4 + 4 + 4 + 4
        (["--norm-adv"], ["--grad-accum-minibatch", "5"]),  # advantages normalised over the minibatch, not each pass
        ([], ["--gradient-checkpointing"]),
    ],
    ids=["accumulation", "accumulation-norm-adv", "checkpointing"],
)
def test_accumulated_or_recomputed_update_is_the_same_update(runs, common, variant):
    """The same weights, and the same statistics logged (those of the whole minibatch, not of its last pass)."""
    whole = runs(*SMALL, "--total-timesteps", "32", *common)
    accumulated = runs(*SMALL, "--total-timesteps", "32", *common, *variant)
    reference = checkpoint_weights(whole)
    for name, weight in checkpoint_weights(accumulated).items():
        torch.testing.assert_close(weight, reference[name], rtol=0, atol=1e-5, msg=name)
    logged = {}
    for folder in (whole, accumulated):
        events = EventAccumulator(folder)
        events.Reload()
        logged[folder] = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"] if tag.startswith("losses/")}
    assert len(logged[whole]) == 7
    for tag, value in logged[whole].items():
        assert logged[accumulated][tag] == pytest.approx(value, rel=1e-4, abs=1e-9), tag


def test_lora_run_saves_an_adapter_and_resumes(tmp_path, monkeypatch, capsys):
    run_dir = run_in_process(g, tmp_path, [*SMALL, "--total-timesteps", "32", "--lora-r", "4"], monkeypatch)
    assert os.path.exists(os.path.join(run_dir, "checkpoint", "model", "adapter_model.safetensors"))
    capsys.readouterr()
    run_in_process(g, tmp_path, ["--resume", run_dir, "--total-timesteps", "64"], monkeypatch)
    assert "done: 64 frames" in capsys.readouterr().out


def test_decoder_only_model_with_action_heads_trains(tmp_path, monkeypatch, capsys):
    run_dir = run_in_process(g, tmp_path, [*SMALL, "--total-timesteps", "32", "--model", "tiny-causal", "--action-heads"], monkeypatch)
    assert "done: 32 frames" in capsys.readouterr().out
    heads = torch.load(os.path.join(run_dir, "checkpoint", "heads.pt"))
    assert heads["action_head"]["4.weight"].shape == (6, 1024)
