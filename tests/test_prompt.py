"""The prompt, byte-exact (reference section 4), and the number of observations it holds (--num-observations)."""

import json
import os
import pickle

import pytest
import torch

import glam_ppo as g
import zero_shot_eval
from script_runs import run_in_process

ACTIONS = ["turn left", "turn right", "go forward", "pick up", "drop", "toggle"]


def test_first_step_prompt():
    prompt = g.build_prompt("go to the red ball", ACTIONS, [["You see a wall 2 steps forward", "You see a red ball 1 step left"]], [])
    assert prompt == (
        "Possible action of the agent: turn left, turn right, go forward, pick up, drop, toggle \n"
        " Goal of the agent: go to the red ball \n"
        " Observation 0: You see a wall 2 steps forward, You see a red ball 1 step left, \n"
        " Action 0: "
    )


def test_three_observations_two_actions():
    prompt = g.build_prompt("go to the red ball", ACTIONS[:3], [["a"], ["b", "c"], []], ["turn left", "go forward"])
    assert prompt == (
        "Possible action of the agent: turn left, turn right, go forward \n"
        " Goal of the agent: go to the red ball \n"
        " Observation 0: a, \n Action 0: turn left \n"
        " Observation 1: b, c, \n Action 1: go forward \n"
        " Observation 2: \n Action 2: "
    )



def observations_and_actions(prompt: str) -> tuple[int, int]:
    """How many `Observation i:` lines a prompt holds, and how many of its `Action i:` lines name an action."""
    lines = prompt.split(" \n ")
    observations = sum(line.startswith("Observation ") for line in lines)
    taken = sum(line.startswith("Action ") and not line.endswith(": ") for line in lines)
    return observations, taken


@pytest.mark.parametrize("count", [1, 2, 3, 6, 9])
def test_the_prompt_holds_the_last_n_observations_and_the_actions_between_them(count):
    envs = g.TextVecEnv("BabyAI-GoToLocalS5N2-v0", 1, "canonical", num_observations=count)
    envs.reset(seed=1)
    sentences, taken = [], []
    for step in range(12):  # turning in place never ends an episode of 12 steps
        sentences.append(envs.obs_histories[0][-1])
        (prompt,) = envs.prompts()
        kept = min(step + 1, count)
        assert observations_and_actions(prompt) == (kept, kept - 1)
        assert prompt == g.build_prompt(envs.missions[0], ACTIONS, sentences[-kept:], taken[-(kept - 1):] if kept > 1 else [])
        envs.step([step % 2])
        taken.append(ACTIONS[step % 2])


def test_three_observations_are_the_default_byte_for_byte():
    default, three = g.TextVecEnv("BabyAI-MixedTrainLocal-v0", 2, "canonical"), g.TextVecEnv("BabyAI-MixedTrainLocal-v0", 2, "canonical", num_observations=3)
    assert default.reset(seed=4) == three.reset(seed=4)
    for actions in ([2, 1], [0, 2], [2, 2], [1, 0]):
        assert default.step(actions)[0] == three.step(actions)[0]


def test_a_run_keeps_its_number_of_observations_and_zero_shot_eval_reads_it_back(tmp_path, monkeypatch):
    flags = ["--model", "tiny-t5", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "2", "--num-steps", "4",
             "--num-minibatches", "1", "--update-epochs", "1", "--total-timesteps", "8", "--num-observations", "2"]
    run_dir = run_in_process(g, tmp_path, flags, monkeypatch)
    assert json.load(open(os.path.join(run_dir, "checkpoint", "args.json")))["num_observations"] == 2
    resumed = g.parse_args(["--resume", run_dir, "--total-timesteps", "16"])
    assert resumed.num_observations == 2
    with open(os.path.join(run_dir, "checkpoint", "envs.pkl"), "rb") as f:
        envs = pickle.load(f)
    assert {history.maxlen for history in envs.obs_histories} == {2}
    with pytest.raises(g.UsageError, match="--num-observations"):
        g.parse_args(["--resume", run_dir, "--total-timesteps", "16", "--num-observations", "3"])
    evaluation = zero_shot_eval.parse_args(["--model", run_dir, "--env-id", "BabyAI-GoToLocalS5N2-v0"])
    zero_shot_eval.load_agent(evaluation, g.action_names("canonical"), torch.device("cpu"))
    assert evaluation.num_observations == 2
    assert zero_shot_eval.parse_args(["--model", run_dir, "--num-observations", "6"]).num_observations == 6
