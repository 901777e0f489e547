"""baselines/symbolic_ppo.py: a short run, exact resume (after an extension and after SIGTERM), bad flags, and the
recurrence (one pass over a sequence = step-by-step acting)."""

import json
import os
import signal

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from baselines import symbolic_ppo as sp
from script_runs import baseline_weights, episode_rows, only_run_dir, run_in_process, run_main_blocks

SCRIPT = os.path.join("baselines", "symbolic_ppo.py")
# 4 envs x 8 steps = 32 frames per update; sequences of 4 frames, 4 of them per minibatch: 2 minibatches per epoch
SMALL = [
    "--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "4", "--num-steps", "8", "--recurrence", "4", "--num-minibatches", "2",
    "--update-epochs", "2", "--eval-episodes", "6", "--window-frames", "40", "--save-interval", "1",
]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run_in_process(sp, tmp_path_factory.mktemp("straight"), [*SMALL, "--total-timesteps", "96"], monkeypatch)


def test_short_run_logs_checkpoints_and_evaluates(straight, capfd):
    events = EventAccumulator(straight)
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ["charts/episodic_return", "charts/episodic_length", "charts/success_rate", "charts/learning_rate", "charts/SPS",
                "losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac"]:
        assert tag in tags, tag
    assert len(events.Scalars("losses/approx_kl")) == 3
    assert {event.value for event in events.Scalars("charts/success_rate")} <= {0.0, 1.0}  # each episode, as glam_ppo.py logs it
    assert sorted(os.listdir(os.path.join(straight, "checkpoint"))) == ["args.json", "model.pt", "trainer.pt"]
    trainer = torch.load(os.path.join(straight, "checkpoint", "trainer.pt"), weights_only=False)
    assert trainer["global_step"] == 96 and trainer["iteration"] == 3 and trainer["memory"].shape == (4, 256)
    results = json.load(open(os.path.join(straight, "results.json")))
    for field in ["env_id", "frames", "episodes", "success_rate", "ci99_low", "ci99_high", "mean_return", "mean_length", "fps", "command", "seed", "windows"]:
        assert field in results, field
    assert results["frames"] == 96 and results["episodes"] == 6 and results["ci99_low"] <= results["success_rate"] <= results["ci99_high"]
    rows = episode_rows(straight)
    assert rows[0] == ["frames", "return", "length", "success"] and len(rows) > 1
    assert [w["frames"] for w in results["windows"]] == [40, 80, 96]
    assert sum(w["episodes"] for w in results["windows"]) == len(rows) - 1
    assert "Sampling rejected" not in capfd.readouterr().out


def test_resumed_runs_equal_the_straight_run(straight, tmp_path, monkeypatch):
    split = run_in_process(sp, tmp_path / "split", [*SMALL, "--total-timesteps", "32"], monkeypatch)
    first = baseline_weights(split)
    run_in_process(sp, tmp_path / "split", ["--resume", split, "--total-timesteps", "96"], monkeypatch)
    resumed, reference = baseline_weights(split), baseline_weights(straight)
    assert any(not torch.equal(first[k], resumed[k]) for k in resumed)  # the resumed updates did train
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    assert episode_rows(split) == episode_rows(straight)

    # a finished run whose results.json is gone: --resume runs the evaluation again; with results.json it is refused
    expected = json.load(open(os.path.join(split, "results.json")))
    os.remove(os.path.join(split, "results.json"))
    run_in_process(sp, tmp_path / "split", ["--resume", split], monkeypatch)
    rerun = json.load(open(os.path.join(split, "results.json")))
    assert {k: v for k, v in rerun.items() if k != "command"} == {k: v for k, v in expected.items() if k != "command"}
    with pytest.raises(sp.UsageError, match="has its results.json"):
        run_in_process(sp, tmp_path / "split", ["--resume", split], monkeypatch)

    # SIGTERM in the second rollout: the checkpoint is the run before that rollout, and the resume replays it
    step, calls = sp.SymbolicVecEnv.step, []

    def step_then_stop(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 13:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(sp.SymbolicVecEnv, "step", step_then_stop)
    stopped = run_in_process(sp, tmp_path / "stopped", [*SMALL, "--total-timesteps", "96"], monkeypatch)
    assert torch.load(os.path.join(stopped, "checkpoint", "trainer.pt"), weights_only=False)["global_step"] == 32
    assert not os.path.exists(os.path.join(stopped, "results.json"))
    monkeypatch.setattr(sp.SymbolicVecEnv, "step", step)
    run_in_process(sp, tmp_path / "stopped", ["--resume", stopped], monkeypatch)
    assert all(torch.equal(baseline_weights(stopped)[k], reference[k]) for k in reference)
    assert episode_rows(stopped) == episode_rows(straight)


def test_bad_flags_are_one_line_and_exit_2(tmp_path):
    cases = [
        (["--num-envs", "0"], "--num-envs 0"),
        (["--num-steps", "40", "--recurrence", "7"], "--recurrence 7 must divide --num-steps 40"),
        (["--num-minibatches", "3"], "--num-minibatches 3 must cut the rollout of --num-envs x --num-steps = 2560 frames"),
        (["--num-minibatches", "256"], "into minibatches of whole sequences of --recurrence 20 frames"),
        (["--env-id", "BabyAI-Nope-v0"], "unknown env id 'BabyAI-Nope-v0'"),
        (["--resume", "runs/nothing"], "no checkpoint in 'runs/nothing'"),
    ]
    results = run_main_blocks(SCRIPT, tmp_path, [argv for argv, _ in cases])
    for (argv, expected), (code, stderr, _) in zip(cases, results):
        assert code == 1, (argv, stderr)
        assert len(stderr.strip().splitlines()) == 1 and expected in stderr, (argv, stderr)


def test_one_pass_over_a_sequence_equals_acting_step_by_step():
    torch.manual_seed(0)
    agent, steps, batch = sp.Agent(), 6, 3
    images = torch.stack([torch.randint(0, 11, (steps, batch, 7, 7)), torch.randint(0, 6, (steps, batch, 7, 7)),
                          torch.randint(0, 3, (steps, batch, 7, 7))], -1).to(torch.uint8)
    instrs = torch.stack([torch.as_tensor(sp.instruction_ids(m)) for m in ["go to the red ball", "pick up a key", "open the door"]])
    instrs = instrs.expand(steps, -1, -1).clone()
    memory = torch.randn(batch, agent.memory_size)
    masks = torch.ones(steps, batch)
    masks[0, 1] = masks[2, 0] = masks[4, 2] = masks[5, 0] = 0  # episode starts, the first step's included
    with torch.no_grad():
        logits, values, final = agent(images, instrs, memory, masks)
        step_logits, step_values, carried = [], [], memory
        for t in range(steps):
            logit, value, carried = agent(images[t : t + 1], instrs[t : t + 1], carried, masks[t : t + 1])
            step_logits.append(logit[0])
            step_values.append(value[0])
        unmasked = agent(images, instrs, memory, torch.ones(steps, batch))[0]
    torch.testing.assert_close(logits, torch.stack(step_logits), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(values, torch.stack(step_values), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(final, carried, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(unmasked[2:, 0], logits[2:, 0], atol=1e-4)  # the masks do reset the memory
