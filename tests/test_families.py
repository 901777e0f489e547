"""Every model family users load is scored exactly or refused before any work starts (issues 18 and 27).

Each family is built tiny and offline, written with save_pretrained and loaded from that folder as `--model <folder>`
loads it; the prompts (up to about 420 tokens) are far longer than the 16-token sliding windows under test."""

import pytest
import torch
import transformers as t

import glam_ppo as g
import model_families
from test_agent import naive_scores


def real_prompts():
    envs = g.TextVecEnv("BabyAI-MixedTrainLocal-v0", 3, "canonical")
    prompts = envs.reset(seed=4)
    for actions in ([2, 0, 1], [2, 2, 2]):
        step_prompts, *_ = envs.step(actions)
    return prompts[:1] + step_prompts  # one, then three observations: lengths differ, so padding matters


@pytest.fixture(scope="module")
def long_prompts():
    return real_prompts()


def naive_hidden(agent, prompt):
    """The value head's input from one plain forward pass: the decoder's state at its start token, or the prompt's last
    token's final state (the prompt read without its trailing space, which belongs to the action)."""
    llm, tokenizer = agent.llm, agent.tokenizer
    if agent.is_encoder_decoder:
        start = torch.tensor([[llm.config.decoder_start_token_id]])
        out = llm(input_ids=torch.tensor([tokenizer(prompt).input_ids]), decoder_input_ids=start, output_hidden_states=True)
        return out.decoder_hidden_states[-1][0, 0]
    input_ids = torch.tensor([tokenizer(prompt.removesuffix(" ")).input_ids])
    return llm(input_ids=input_ids, output_hidden_states=True, logits_to_keep=1).hidden_states[-1][0, -1]


def scoring_errors(folder, prompts, attn_implementation=None):
    """(max score error, max value-head-input error, packed or not) of an agent over a model loaded from `folder`,
    against one pass per (prompt, action) pair."""
    llm, tokenizer = g.load_llm(folder, attn_implementation=attn_implementation)
    agent = g.GlamAgent(llm.eval(), tokenizer, g.action_names("canonical")).eval()
    with torch.no_grad():
        hidden, scores = agent._hidden_and_scores(prompts)
        score_error = (scores - naive_scores(agent, prompts)).abs().max().item()
        hidden_error = max((hidden[b] - naive_hidden(agent, prompt)).abs().max().item() for b, prompt in enumerate(prompts))
    return score_error, hidden_error, agent.packed


@pytest.mark.parametrize("family", model_families.FAMILIES)
def test_family_is_scored_exactly(family, smollm2, long_prompts, tmp_path):
    folder = model_families.save_family(family, tmp_path / family, smollm2)
    score_error, hidden_error, _ = scoring_errors(folder, long_prompts)
    assert score_error < 1e-4 and hidden_error < 1e-4, (score_error, hidden_error)


@pytest.mark.parametrize("family", ["t5", "mistral", "gemma3", "bloom"])
def test_family_is_scored_exactly_with_eager_attention(family, smollm2, long_prompts, tmp_path):
    """Eager attention takes an additive mask where SDPA takes booleans: the windows and blocks must survive both."""
    folder = model_families.save_family(family, tmp_path / family, smollm2)
    score_error, hidden_error, _ = scoring_errors(folder, long_prompts, attn_implementation="eager")
    assert score_error < 1e-4 and hidden_error < 1e-4, (score_error, hidden_error)


@pytest.mark.parametrize("family", model_families.REFUSED)
def test_a_family_with_absolute_decoder_positions_is_refused_in_one_line(family, smollm2, tmp_path):
    """BART, mBART, Pegasus and Marian number their decoder positions across the packed blocks: the check finds it."""
    llm, tokenizer = g.load_llm(model_families.save_family(family, tmp_path / family, smollm2))
    with pytest.raises(g.UsageError, match=rf"^model family '{family}' is not among those tested, .*--action-heads$"):
        g.GlamAgent(llm, tokenizer, g.action_names("canonical"))


def tiny_decoder_only(config_class, smollm2, **sizes):
    ids = dict(pad_token_id=smollm2.pad_token_id, eos_token_id=smollm2.eos_token_id, bos_token_id=smollm2.bos_token_id)
    torch.manual_seed(0)
    return t.AutoModelForCausalLM.from_config(config_class(vocab_size=len(smollm2), **ids, **sizes)).eval()


def test_an_untested_family_that_packs_exactly_is_accepted_after_the_check(smollm2, long_prompts, monkeypatch):
    llm = tiny_decoder_only(t.Olmo2Config, smollm2, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    checks = []
    monkeypatch.setattr(g, "check_packed_scoring", lambda agent, check=g.check_packed_scoring: checks.append(check(agent)))
    agent = g.GlamAgent(llm, smollm2, g.action_names("canonical")).eval()
    assert checks == [None]
    with torch.no_grad():
        torch.testing.assert_close(agent.score(long_prompts), naive_scores(agent, long_prompts), atol=1e-4, rtol=0)


@pytest.mark.parametrize("window", [16, 256])
def test_an_untested_family_that_packs_wrong_is_refused_in_one_line(smollm2, window):
    """GPT-Neo's local layers keep a window that no config field of the known kinds describes; the real checkpoints'
    256 tokens are longer than short prompts, not than the check's long one."""
    llm = tiny_decoder_only(
        t.GPTNeoConfig, smollm2, hidden_size=64, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]],
        window_size=window,
    )
    with pytest.raises(g.UsageError, match=r"^model family .gpt_neo. is not among those tested, .* \(by up to 0\.\d+\), .*--action-heads$"):
        g.GlamAgent(llm, smollm2, g.action_names("canonical"))


def test_a_tested_family_wrongly_packed_would_be_caught_by_the_check(smollm2, monkeypatch):
    """The check is what stands between a future architecture and silent wrong scores: without the sliding window in
    its mask, Mistral would fail it."""
    llm = tiny_decoder_only(t.MistralConfig, smollm2, **model_families.SIZE, sliding_window=model_families.WINDOW)
    monkeypatch.setattr(g, "TESTED_FAMILIES", set())
    g.GlamAgent(llm, smollm2, g.action_names("canonical"))  # the window handled: passes
    monkeypatch.setattr(g.GlamAgent, "_layer_masks", lambda self, allowed, positions: self._attention_mask(allowed))
    with pytest.raises(g.UsageError, match="model family 'mistral' is not among those tested"):
        g.GlamAgent(llm, smollm2, g.action_names("canonical"))


def test_recurrent_layers_are_refused_in_one_line(smollm2):
    llm = tiny_decoder_only(t.MambaConfig, smollm2, hidden_size=64, num_hidden_layers=2)
    with pytest.raises(g.UsageError, match="^model family 'mamba' has linear_attention layers, whose state runs along"):
        g.GlamAgent(llm, smollm2, g.action_names("canonical"))


def test_a_user_trains_an_alibi_family_from_its_folder(smollm2, tmp_path, monkeypatch, capsys):
    """The whole path a user takes, on the family scored one pair per sequence: `glam_ppo.py --model <folder>` trains,
    its gradients flowing through `_pair_pass`, and saves (glam_ppo.py's main, in this process)."""
    from script_runs import run_in_process

    folder = model_families.save_family("bloom", tmp_path / "bloom", smollm2)
    flags = ["--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "2", "--num-steps", "4", "--num-minibatches", "2", "--update-epochs", "1"]
    run_dir = run_in_process(g, tmp_path / "run", ["--model", folder, *flags, "--total-timesteps", "8", "--learning-rate", "1e-3"], monkeypatch)
    assert "done: 8 frames" in capsys.readouterr().out
    trained, _ = g.load_llm(f"{run_dir}/checkpoint/model")
    untrained, _ = g.load_llm(folder)
    assert any((a - b).abs().max() > 0 for a, b in zip(trained.parameters(), untrained.parameters()))


if __name__ == "__main__":
    # The README's table of model families: python tests/test_families.py
    import sys
    import tempfile

    torch.set_num_threads(1)
    tokenizer, prompts = model_families.smollm2_tokenizer(), real_prompts()
    print("| family | scoring | max error: scores, value head input |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for family in model_families.FAMILIES:
            score_error, hidden_error, packed = scoring_errors(model_families.save_family(family, f"{folder}/{family}", tokenizer), prompts)
            kind = "packed" if packed else "one sequence per pair (ALiBi)"
            print(f"| {family} | exact, {kind} | {score_error:.1e}, {hidden_error:.1e} |")
        for family in model_families.REFUSED:
            llm, family_tokenizer = g.load_llm(model_families.save_family(family, f"{folder}/{family}", tokenizer))
            try:
                g.GlamAgent(llm, family_tokenizer, g.action_names("canonical"))
                print(f"| {family} | exact, packed | (the check's 1e-3) |")
            except g.UsageError as error:
                print(f"| {family} | refused: {error} | |")
    untested = {
        "olmo2 (untested: checked when built)": lambda: tiny_decoder_only(
            t.Olmo2Config, tokenizer, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
        "gpt_neo (untested: checked when built)": lambda: tiny_decoder_only(
            t.GPTNeoConfig, tokenizer, hidden_size=64, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]], window_size=16),
        "mamba": lambda: tiny_decoder_only(t.MambaConfig, tokenizer, hidden_size=64, num_hidden_layers=2),
    }
    for name, build in untested.items():
        try:
            g.GlamAgent(build(), tokenizer, g.action_names("canonical"))
            print(f"| {name} | exact, packed | (the check's 1e-3) |")
        except g.UsageError as error:
            print(f"| {name} | refused: {error} | |")
    sys.exit(0)
