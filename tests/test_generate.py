"""zero_shot_eval.py --policy generate: the reply's mapping to an action, the no-op of an invalid one, generate() batched
as each prompt alone, the scoring rows' levels, the cost columns, and the flags it refuses."""

import csv
import json

import numpy as np
import pytest
import torch
import transformers

import glam_ppo
import zero_shot_eval as z
from script_runs import run_in_process, run_main_blocks

ACTIONS = glam_ppo.action_names("canonical")


def test_a_reply_maps_to_the_action_it_equals_or_starts_with_else_to_none():
    assert z.reply_action("go forward", ACTIONS) == 2
    assert z.reply_action("  Turn LEFT ", ACTIONS) == 0  # trimmed and lower-cased
    assert z.reply_action(" pick up the key", ACTIONS) == 3
    assert z.reply_action("toggle toggle", ACTIONS) == 5
    for invalid in ("", "go", "I go forward", "turn", "forward"):
        assert z.reply_action(invalid, ACTIONS) == -1, invalid
    assert z.reply_action("go forward now", ["go", "go forward"]) == 1  # the longest action it starts with


def evaluate(tmp_path, name, *flags):
    args = z.parse_args(["--env-id", "BabyAI-GoToLocalS5N2-v0", "--episodes", "3", "--num-envs", "2", "--save-trajectories",
                         *flags, "--output-dir", str(tmp_path / name)])
    rows = z.main(args)
    with open(tmp_path / name / "trajectories.jsonl") as f:
        return rows, [json.loads(line) for line in f]


@pytest.mark.parametrize("model", ["tiny-t5", "tiny-causal"])
def test_replies_become_their_actions_and_an_invalid_one_the_no_op(tmp_path, monkeypatch, model):
    """The model's generate() writes, in turn, an action, an action and more, and no action, each ended by </s>; a
    decoder-only one writes each after a space, since its prompt ends with `Action k:`."""
    replies = ["go forward", "turn right , then", "red ball"]
    load_agent, taken, calls = z.load_agent, [], [0]

    def scripted(agent):
        def generate(input_ids, attention_mask, **settings):
            assert settings["max_new_tokens"] == 5 and not settings["do_sample"]
            calls[0] += 1
            space = "" if agent.is_encoder_decoder else " "
            ids = agent.tokenizer(space + replies[calls[0] % 3] + " </s>", add_special_tokens=False).input_ids
            start = input_ids.new_zeros(len(input_ids), 1) if agent.is_encoder_decoder else input_ids
            return torch.cat([start, torch.tensor([ids] * len(input_ids))], 1)

        agent.llm.generate = generate
        return agent

    monkeypatch.setattr(z, "load_agent", lambda *args: scripted(load_agent(*args)))
    step = z.BabyAIText.step
    monkeypatch.setattr(z.BabyAIText, "step", lambda env, action: taken.append(min(int(action), z.NO_OP)) or step(env, action))
    rows, episodes = evaluate(tmp_path, "generate", "--model", model, "--policy", "generate", "--max-new-tokens", "5", "--greedy")
    expected = {"go forward": ("go forward", 2, 3), "turn right , then": ("turn right", 1, 5), "red ball": (None, z.NO_OP, 3)}
    for episode in episodes:
        assert len(episode["replies"]) == len(episode["actions"]) == episode["length"]
        for t, (reply, action) in enumerate(zip(episode["replies"], episode["actions"])):
            assert action == expected[reply][0]
            if t + 1 < episode["length"]:  # the next prompt's history holds the action taken, or the reply that names none
                k = min(t + 1, 2)
                assert f"Action {k - 1}: {action or reply} \n Observation {k}: " in episode["prompts"][t + 1]
    written = [expected[reply][2] for e in episodes for reply in e["replies"]]  # </s> included; 5 at most
    invalid = sum(reply == "red ball" for e in episodes for reply in e["replies"])
    assert rows[0]["invalid_rate"] == pytest.approx(invalid / len(written)) and 0 < invalid < len(written)
    assert taken.count(z.NO_OP) == invalid and {1, 2} <= set(taken)  # (an env whose episodes are over turns left: 0)
    assert rows[0]["mean_new_tokens"] == pytest.approx(np.mean(written))
    assert rows[0]["lm_seconds_per_step"] > 0


def test_an_invalid_reply_is_the_no_op_with_three_actions_too():
    envs = glam_ppo.TextVecEnv("BabyAI-GoToLocalS5N2-v0", 2, "restricted")
    envs.reset(seed=1)
    before = [(tuple(env.unwrapped.agent_pos), env.unwrapped.agent_dir) for env in envs.envs]
    z.step_replies(envs, np.array([0, 0]), {1: "pick up"})  # "pick up" is not offered: index 3 must not be minigrid's pick up
    after = [(tuple(env.unwrapped.agent_pos), env.unwrapped.agent_dir) for env in envs.envs]
    assert after[1] == before[1] and after[0] != before[0]
    assert envs.actions == ["turn left", "turn right", "go forward"]
    assert [list(h) for h in envs.action_histories] == [["turn left"], ["pick up"]]


@pytest.mark.parametrize("model", ["tiny-t5", "tiny-causal"])
def test_batched_generation_writes_what_each_prompt_alone_does(model):
    torch.manual_seed(0)
    llm, tokenizer = glam_ppo.build_tiny_model(model)
    agent = glam_ppo.GlamAgent(llm.eval(), tokenizer, ACTIONS).eval()
    envs = glam_ppo.TextVecEnv("BabyAI-GoToLocalS5N2-v0", 3, "canonical")
    envs.reset(seed=3)
    prompts = envs.prompts()[:1] + envs.step([0, 2, 1])[0][1:]  # one, two observations: lengths differ, padding counts
    settings = z.generation_settings(agent, 6, greedy=True)
    replies, written = z.generate_replies(agent, prompts, settings)
    assert replies == [tokenizer.decode(ids, skip_special_tokens=True).removeprefix("" if agent.is_encoder_decoder else " ") for ids in written]
    for prompt, ids in zip(prompts, written):
        tokens, _ = agent.tokenize_prompts([prompt])
        alone = llm.generate(**tokens, **settings)[0, 1 if agent.is_encoder_decoder else tokens.input_ids.shape[1] :].tolist()
        assert alone[: len(ids)] == ids and (len(ids) == 6 or ids[-1] == tokenizer.eos_token_id)
    sampled = z.generation_settings(agent, 6, greedy=False)
    assert (sampled["temperature"], sampled["top_k"], sampled["top_p"], sampled["do_sample"]) == (1.0, 0, 1.0, True)
    outputs = []
    # A checkpoint's generation_config, with settings that would narrow or reshape the distribution, changes nothing.
    for own in ({}, {"top_k": 1, "repetition_penalty": 50.0, "no_repeat_ngram_size": 1, "min_p": 0.5}):
        llm.generation_config = transformers.GenerationConfig(**vars(llm.generation_config) | own)
        for greedy in (True, False):
            torch.manual_seed(5)
            outputs.append(z.generate_replies(agent, prompts, z.generation_settings(agent, 6, greedy)))
    assert outputs[:2] == outputs[2:] and outputs[0][0] == replies
    # The checkpoint's own EOS ids stop a reply, for every probe's policy (each asks for the settings again)
    llm, _ = glam_ppo.build_tiny_model(model)
    llm.generation_config.eos_token_id = [tokenizer.eos_token_id, 7]
    agent = glam_ppo.GlamAgent(llm.eval(), tokenizer, ACTIONS).eval()
    assert all(7 in z.generation_settings(agent, 6, greedy=True)["eos_token_id"] for _ in range(2))


def test_generation_plays_the_scoring_rows_levels_and_both_report_their_cost(tmp_path):
    scoring, scored = evaluate(tmp_path, "llm", "--model", "tiny-causal")
    generating, generated = evaluate(tmp_path, "generate", "--model", "tiny-causal", "--policy", "generate", "--max-new-tokens", "3")
    assert [(e["seed"], e["prompts"][0]) for e in scored] == [(e["seed"], e["prompts"][0]) for e in generated]
    assert "invalid_rate" not in scoring[0] and scoring[0]["lm_seconds_per_step"] > 0
    assert 0 <= generating[0]["invalid_rate"] <= 1 and 1 <= generating[0]["mean_new_tokens"] <= 3
    with open(tmp_path / "generate" / "results.csv") as f:
        assert {"lm_seconds_per_step", "invalid_rate", "mean_new_tokens"} <= set(next(csv.DictReader(f)))
    record = json.loads((tmp_path / "generate" / "results.json").read_text())
    assert (record["policy"], record["max_new_tokens"], record["lm_seconds"]) == ("generate", 3, "process CPU time")


def test_bad_generation_flags_are_one_line(tmp_path, monkeypatch):
    npae = run_in_process(glam_ppo, tmp_path / "npae", [
        "--model", "tiny-t5", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "2", "--num-steps", "4", "--num-minibatches", "1",
        "--total-timesteps", "8", "--no-pretrained", "--action-heads",
    ], monkeypatch)
    base = ["--policy", "generate", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--episodes", "1", "--output-dir", "out"]
    results = run_main_blocks("zero_shot_eval.py", tmp_path / "cases", [[*base, "--model", "tiny-t5", "--max-new-tokens", "0"],
                                                                          [*base, "--model", npae]])
    messages = ["--max-new-tokens 0 must be at least 1", "chooses its actions with an action head (NPAE), not by writing them"]
    for (code, stderr, _), message in zip(results, messages):
        lines = stderr.strip().splitlines()
        assert code == 1 and len(lines) == 1 and lines[0].startswith("zero_shot_eval.py: error: ") and message in lines[0], stderr
