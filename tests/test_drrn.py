"""baselines/drrn.py, the paper's DRRN baseline: a short run, exact resume after a stop or with more frames, bad flags,
the batched Q values, and the prompt it reads."""

import json
import os
import signal

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import glam_ppo
from baselines import drrn
from script_runs import baseline_weights, episode_rows, main_in_process, only_run_dir, run_main_blocks

# 4 envs x 2 steps per iteration: 8 iterations of 8 frames; episodes of GoToLocalS5N2 end within 64 steps
SMALL = ["--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "4", "--train-frequency", "2", "--batch-size", "8", "--save-interval", "3",
         "--eval-episodes", "2", "--window-frames", "24"]


def run(cwd, monkeypatch, *flags):
    main_in_process(drrn, cwd, [*SMALL, *flags], monkeypatch)
    return only_run_dir(cwd)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run(tmp_path_factory.mktemp("straight"), monkeypatch, "--total-timesteps", "64")


def test_short_run_logs_checkpoints_and_writes_results(straight):
    events = EventAccumulator(straight)
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"charts/episodic_return", "charts/episodic_length", "charts/success_rate", "charts/SPS", "losses/td_loss", "losses/q_values"} <= tags
    rates = [event.value for event in events.Scalars("charts/success_rate")]
    assert set(rates) <= {0.0, 1.0} and len(rates) == len(episode_rows(straight)) - 1 > 0
    assert len(events.Scalars("losses/td_loss")) == 8  # one gradient step per iteration, from the first (8 transitions)
    assert sorted(os.listdir(os.path.join(straight, "checkpoint"))) == ["args.json", "model.pt", "trainer.pt"]
    assert os.path.isdir(os.path.join(straight, "checkpoint.previous"))
    trainer = torch.load(os.path.join(straight, "checkpoint", "trainer.pt"), weights_only=False)
    assert (trainer["global_step"], trainer["iteration"]) == (64, 8) and trainer["replay"].filled == 16
    assert episode_rows(straight)[0] == ["frames", "return", "length", "success"]
    results = json.load(open(os.path.join(straight, "results.json")))
    assert (results["env_id"], results["frames"], results["episodes"], results["seed"]) == ("BabyAI-GoToLocalS5N2-v0", 64, 2, 1)
    assert results["ci99_low"] <= results["success_rate"] <= results["ci99_high"] and results["fps"] > 0
    assert [window["frames"] for window in results["windows"]] == [24, 48, 64]
    assert sum(window["episodes"] for window in results["windows"]) == len(episode_rows(straight)) - 1
    assert {"mean_return", "mean_length", "command"} <= set(results)


def test_a_stopped_run_resumes_as_the_straight_run(straight, tmp_path, monkeypatch):
    calls, step = [], drrn.TextVecEnv.step

    def step_then_ctrl_c(self, actions):
        calls.append(1)
        if len(calls) == 9:  # in the 5th iteration: the stop saves after it
            os.kill(os.getpid(), signal.SIGINT)
        return step(self, actions)

    monkeypatch.setattr(drrn.TextVecEnv, "step", step_then_ctrl_c)
    split = run(tmp_path, monkeypatch, "--total-timesteps", "64")
    monkeypatch.setattr(drrn.TextVecEnv, "step", step)
    trainer = torch.load(os.path.join(split, "checkpoint", "trainer.pt"), weights_only=False)
    assert (trainer["iteration"], trainer["global_step"]) == (5, 40) and not os.path.exists(os.path.join(split, "results.json"))
    with open(os.path.join(split, "episodes.csv"), "a") as f:
        f.write("4")  # what a hard kill may leave of a row written after the checkpoint: its frame count cut short
    main_in_process(drrn, tmp_path, ["--resume", split], monkeypatch)
    expected, resumed = baseline_weights(straight), baseline_weights(split)
    assert all(torch.equal(resumed[name], weight) for name, weight in expected.items())
    assert episode_rows(split) == episode_rows(straight)


def test_a_run_stopped_in_its_last_iteration_resumes_into_the_evaluation(straight, tmp_path, monkeypatch):
    calls, step = [], drrn.TextVecEnv.step

    def step_then_sigterm(self, actions):
        calls.append(1)
        if len(calls) == 15:  # in the 8th, last iteration: the stop saves after it, before the evaluation
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, actions)

    monkeypatch.setattr(drrn.TextVecEnv, "step", step_then_sigterm)
    split = run(tmp_path, monkeypatch, "--total-timesteps", "64")
    monkeypatch.setattr(drrn.TextVecEnv, "step", step)
    results = os.path.join(split, "results.json")
    assert torch.load(os.path.join(split, "checkpoint", "trainer.pt"), weights_only=False)["iteration"] == 8
    assert not os.path.exists(results)
    main_in_process(drrn, tmp_path, ["--resume", split], monkeypatch)
    expected = json.load(open(os.path.join(straight, "results.json")))
    assert {k: v for k, v in json.load(open(results)).items() if k not in ("fps", "command")} == {
        k: v for k, v in expected.items() if k not in ("fps", "command")}
    with pytest.raises(drrn.UsageError, match="has its results.json"):  # a finished run is refused
        main_in_process(drrn, tmp_path, ["--resume", split], monkeypatch)


def test_more_frames_on_resume_give_the_straight_run(straight, tmp_path, monkeypatch):
    split = run(tmp_path, monkeypatch, "--total-timesteps", "32")
    half = baseline_weights(split)
    main_in_process(drrn, tmp_path, ["--resume", split, "--total-timesteps", "64"], monkeypatch)
    expected, resumed = baseline_weights(straight), baseline_weights(split)
    assert any(not torch.equal(half[name], resumed[name]) for name in half)
    assert all(torch.equal(resumed[name], weight) for name, weight in expected.items())
    assert episode_rows(split) == episode_rows(straight)


def test_bad_flags_are_refused_in_one_line(tmp_path):
    cases = [["--num-envs", "0"], ["--num-observations", "0"], ["--batch-size", "0"], ["--env-id", "BabyAI-Nope-v0"],
             ["--resume", "missing"], ["--gamma", "nan"], ["--total-timesteps", "10"], ["--learning-rate", "-1"],
             ["--buffer-size", "1000000000000"]]
    for argv, (code, stderr, files) in zip(cases, run_main_blocks("baselines/drrn.py", tmp_path, cases)):
        assert code == 1 and "Traceback" not in stderr, (argv, stderr)
        assert stderr.startswith("drrn.py: error: ") and len(stderr.strip().splitlines()) == 1, (argv, stderr)
        assert argv[0] in stderr or "missing" in stderr or "Nope" in stderr, (argv, stderr)
        assert files == [], argv


def test_batched_q_values_equal_one_pass_per_prompt_and_action():
    torch.manual_seed(0)
    vocabulary = drrn.word_vocabulary()
    envs = drrn.TextVecEnv("BabyAI-MixedTrainLocal-v0", 5, "canonical")
    envs.reset(seed=3)
    prompts = envs.step([2, 1, 0, 2, 2])[0]
    network, tokens = drrn.DRRN(len(vocabulary)), [drrn.tokenize(prompt, vocabulary) for prompt in prompts]
    actions = [drrn.tokenize(action, vocabulary) for action in envs.actions]
    assert len({len(t) for t in tokens}) > 1 and len({len(a) for a in actions}) > 1  # the padding is exercised
    batched = network(drrn.padded(tokens, "cpu"), drrn.padded(actions, "cpu"))

    def last_state(rnn, sequence):  # torch's own GRU over the unpadded sequence
        return rnn(network.embedding(torch.as_tensor(sequence, dtype=torch.long))[None])[1][0, 0]

    single = torch.stack([
        torch.stack([
            network.act_scorer(torch.relu(network.hidden(torch.cat([last_state(network.obs_encoder, t), last_state(network.act_encoder, a)])))).squeeze()
            for a in actions
        ]) for t in tokens
    ])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)


def test_the_drrn_reads_the_glam_prompt():
    vocabulary, ours, theirs = drrn.word_vocabulary(), drrn.TextVecEnv("BabyAI-MixedTrainLocal-v0", 4, "canonical"), glam_ppo.TextVecEnv("BabyAI-MixedTrainLocal-v0", 4, "canonical")
    assert ours.reset(seed=7) == theirs.reset(seed=7)
    rng = np.random.default_rng(0)
    for _ in range(30):
        actions = rng.integers(0, 6, 4)
        prompts, _, _, _ = ours.step(actions)
        assert prompts == theirs.step(actions)[0]
        for prompt in prompts:
            tokens = drrn.tokenize(prompt, vocabulary)
            assert 1 not in tokens and len(tokens) == len(prompt.replace(",", " , ").replace(":", " : ").split())  # no unknown word
    assert prompts[0].startswith("Possible action of the agent: turn left, turn right, go forward, pick up, drop, toggle \n Goal of the agent: ")
