"""--value-head-input: the value head reads the decoder's first state (the paper) or the mean of the encoder's final
states over the prompt's tokens (the ablation); runs with either train and resume, and evaluation reads it back."""

import json
import os

import pytest
import torch

import glam_ppo as g
import glam_ppo_multigpu
import zero_shot_eval
from script_runs import checkpoint_weights, only_run_dir, run_in_process

SMALL = [
    "--model", "tiny-t5", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "4", "--num-steps", "8",
    "--num-minibatches", "2", "--learning-rate", "3e-4", "--save-interval", "1",
]


def prompts_of_several_lengths():
    envs = g.TextVecEnv("BabyAI-MixedTrainLocal-v0", 3, "canonical")
    envs.reset(seed=3)
    envs.step([2, 1, 2])
    return envs.prompts() + [g.build_prompt("go to the red ball", envs.actions, [["You see a wall 1 step forward"]], [])]


@pytest.mark.parametrize("value_head_input", ["decoder", "encoder"])
@pytest.mark.parametrize("score_batch_size", [1024, 6])  # all prompts in one pass, or one prompt per pass
def test_the_value_head_reads_what_the_flag_says(value_head_input, score_batch_size):
    torch.manual_seed(0)
    llm, tokenizer = g.load_llm("tiny-t5")
    prompts = prompts_of_several_lengths()
    agent = g.GlamAgent(llm.eval(), tokenizer, g.action_names("canonical"), score_batch_size=score_batch_size,
                        value_head_input=value_head_input)
    tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        encoded = llm.get_encoder()(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        if value_head_input == "encoder":
            mask = tokens.attention_mask.unsqueeze(-1).float()
            expected = (encoded * mask).sum(1) / mask.sum(1)
        else:
            start = torch.zeros(len(prompts), 1, dtype=torch.long)  # T5's decoder start token
            expected = llm.get_decoder()(
                input_ids=start, encoder_hidden_states=encoded, encoder_attention_mask=tokens.attention_mask
            ).last_hidden_state[:, 0]
        hidden, _ = agent._hidden_and_scores(prompts)
        pair_hidden, _ = agent._score_tokens(agent.tokenize_prompts(prompts)[0], packed=False)
        values = agent.get_value(prompts)
    torch.testing.assert_close(hidden, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(pair_hidden, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(values, agent.value_head(expected).squeeze(-1), atol=1e-5, rtol=0)


def test_the_two_placements_give_different_values():
    torch.manual_seed(0)
    llm, tokenizer = g.load_llm("tiny-t5")
    prompts = prompts_of_several_lengths()
    agents = [g.GlamAgent(llm.eval(), tokenizer, g.action_names("canonical"), value_head_input=where) for where in ("decoder", "encoder")]
    agents[1].value_head.load_state_dict(agents[0].value_head.state_dict())
    with torch.no_grad():
        decoder_values, encoder_values = (agent.get_value(prompts) for agent in agents)
        assert not torch.allclose(decoder_values, encoder_values)
        torch.testing.assert_close(agents[0].score(prompts), agents[1].score(prompts), atol=0, rtol=0)  # the policy is the same


@pytest.mark.parametrize("flags, says", [
    (["--model", "tiny-causal"], "a decoder-only model has no encoder"),
    (["--model", "tiny-t5", "--action-heads"], "with --action-heads both heads read one state"),
])
def test_a_setting_without_an_encoder_state_to_read_is_refused_in_one_line(tmp_path, monkeypatch, flags, says):
    with pytest.raises(g.UsageError, match=says) as refused:
        run_in_process(g, tmp_path, [*SMALL, *flags, "--value-head-input", "encoder", "--total-timesteps", "32"], monkeypatch)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("script", [g, glam_ppo_multigpu], ids=lambda m: m.__name__)
def test_an_encoder_value_head_run_trains_resumes_and_is_read_back(script, tmp_path, monkeypatch):
    flags = [*SMALL, "--value-head-input", "encoder"]
    straight = run_in_process(script, tmp_path / "straight", [*flags, "--total-timesteps", "64"], monkeypatch)
    split = run_in_process(script, tmp_path / "split", [*flags, "--total-timesteps", "32"], monkeypatch)
    first_half = checkpoint_weights(split)
    with pytest.raises(script.UsageError, match="--value-head-input decoder"):  # a resumed run keeps its value head's input
        script.parse_args(["--resume", split, "--total-timesteps", "64", "--value-head-input", "decoder"])
    run_in_process(script, tmp_path / "split", ["--resume", split, "--total-timesteps", "64"], monkeypatch)
    resumed, reference = checkpoint_weights(split), checkpoint_weights(straight)
    assert any(not torch.equal(first_half[name], resumed[name]) for name in resumed)
    for name, weight in reference.items():
        torch.testing.assert_close(resumed[name], weight, rtol=0, atol=1e-6, msg=name)
    assert json.load(open(os.path.join(split, "checkpoint", "args.json")))["value_head_input"] == "encoder"
    monkeypatch.chdir(tmp_path)
    evaluation_args = zero_shot_eval.parse_args(["--model", split, "--env-id", "BabyAI-GoToLocalS5N2-v0"])
    assert zero_shot_eval.load_agent(evaluation_args, g.action_names("canonical"), torch.device("cpu")).value_head_input == "encoder"
