"""Action scoring, value head placement, scoring rules, action heads and GAE (reference sections 5-6)."""

import re

import pytest
import torch
from torch.distributed._tools.mem_tracker import MemTracker
from transformers import T5Config, T5ForConditionalGeneration

import glam_ppo as g
import offline_models


@pytest.fixture(scope="module")
def prompts():
    envs = g.TextVecEnv("BabyAI-MixedTrainLocal-v0", 5, "canonical")
    prompts = envs.reset(seed=4)
    for actions in ([2, 0, 1, 2, 2], [2, 2, 2, 1, 0], [1, 2, 0, 2, 2]):
        step_prompts, *_ = envs.step(actions)
        prompts += step_prompts
    return prompts  # prompts of 1 to 3 observations, so lengths differ and padding matters


MODELS = [*g.TINY_MODELS, *offline_models.TOKENIZERS]  # word-level T5 and Llama; Llamas with byte-level and Metaspace BPE


@pytest.fixture(scope="module", params=MODELS)
def agent(request):
    llm, tokenizer = offline_models.build(request.param)
    return g.GlamAgent(llm, tokenizer, g.action_names("augmented"), score_batch_size=16).eval()


def naive_scores(agent, prompts):
    """One full forward pass per (prompt, action) pair, no padding, no cache. Decoder-only: the tokens of the joint
    text `prompt + action` (then </s>) after those of the prompt, which must be a prefix of them."""
    llm, tokenizer = agent.llm, agent.tokenizer
    scores = torch.zeros(len(prompts), len(agent.actions))
    for b, prompt in enumerate(prompts):
        for a, action in enumerate(agent.actions):
            if agent.is_encoder_decoder:
                labels = torch.tensor([tokenizer(action).input_ids])
                decoder_input_ids = llm.prepare_decoder_input_ids_from_labels(labels=labels)
                logits = llm(input_ids=torch.tensor([tokenizer(prompt).input_ids]), decoder_input_ids=decoder_input_ids).logits
                scores[b, a] = logits.log_softmax(-1).gather(2, labels[..., None]).sum()
            else:
                prompt_ids = tokenizer(prompt.removesuffix(" ")).input_ids
                joint_ids = tokenizer(prompt + action).input_ids + [tokenizer.eos_token_id]
                assert joint_ids[: len(prompt_ids)] == prompt_ids
                # The logits of the last positions only: those of the prompt's last token and the action's tokens.
                kept = len(joint_ids) - len(prompt_ids) + 1
                logprobs = llm(input_ids=torch.tensor([joint_ids]), logits_to_keep=kept).logits.log_softmax(-1)[0]
                first = len(joint_ids) - kept
                scores[b, a] = sum(logprobs[k - 1 - first, joint_ids[k]] for k in range(len(prompt_ids), len(joint_ids)))
    return scores


@torch.no_grad()
def test_score_equals_naive_per_pair_computation(agent, prompts):
    scores = agent.score(prompts)  # 20 prompts x 9 actions in chunks of 16 pairs: 1 prompt per chunk
    assert scores.shape == (len(prompts), 9)
    torch.testing.assert_close(scores, naive_scores(agent, prompts), atol=1e-5, rtol=0)
    agent.score_batch_size = 1000  # all pairs at once: same result
    torch.testing.assert_close(agent.score(prompts), scores, atol=1e-5, rtol=0)
    agent.score_batch_size = 16


@torch.no_grad()
def test_value_head_reads_decoder_start_or_last_prompt_token(agent, prompts):
    _, values = agent(prompts)
    tokenizer = agent.tokenizer
    for prompt, value in zip(prompts[:4], values):
        input_ids = torch.tensor([tokenizer(prompt if agent.is_encoder_decoder else prompt.removesuffix(" ")).input_ids])
        if agent.is_encoder_decoder:
            start = agent.llm.config.decoder_start_token_id
            decoder_input_ids = torch.tensor([[start, 5, 6]])  # later decoder tokens must not matter
            out = agent.llm(input_ids=input_ids, decoder_input_ids=decoder_input_ids, output_hidden_states=True)
            hidden = out.decoder_hidden_states[-1][0, 0]
        else:
            hidden = agent.llm(input_ids=input_ids, output_hidden_states=True).hidden_states[-1][0, -1]
        assert value.item() == pytest.approx(agent.value_head(hidden).item(), abs=1e-5)


def test_value_head_shape_matches_the_paper(agent):
    sizes = [layer.out_features for layer in agent.value_head if isinstance(layer, torch.nn.Linear)]
    assert sizes == [1024, 1024, 1]
    assert sum(isinstance(layer, torch.nn.Sigmoid) for layer in agent.value_head) == 2


@torch.no_grad()
def test_scoring_rules(agent, prompts):
    scores = agent.score(prompts[:6])
    token_counts = agent.action_mask.sum(-1)
    word_counts = torch.tensor([len(a.split()) for a in agent.actions], dtype=torch.float)
    for rule, expected in [("sum", scores), ("token-mean", scores / token_counts), ("word-mean", scores / word_counts)]:
        agent.scoring = rule
        torch.testing.assert_close(agent(prompts[:6])[0], expected)
    agent.scoring = "legacy-paper"
    legacy_probs = agent(prompts[:6])[0].softmax(-1)
    # softmax(P / max P) keeps every action between e^0 and e^1: the best one can never pass e / (e + n - 1)
    assert (legacy_probs.max(-1).values <= torch.e / (torch.e + len(agent.actions) - 1) + 1e-6).all()
    agent.scoring = "sum"


def test_get_action_and_value_samples_and_evaluates(agent, prompts):
    torch.manual_seed(0)
    with torch.no_grad():
        action, logprob, entropy, value = agent.get_action_and_value(prompts[:4])
        logits, _ = agent(prompts[:4])
    assert action.shape == logprob.shape == entropy.shape == value.shape == (4,)
    torch.testing.assert_close(logprob, logits.log_softmax(-1).gather(1, action[:, None]).squeeze(1))
    given = torch.tensor([0, 1, 2, 3])
    _, logprob_given, _, _ = agent.get_action_and_value(prompts[:4], given)
    assert logprob_given.requires_grad  # the update differentiates through the same path
    logprob_given.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.llm.parameters())
    if agent.is_encoder_decoder:  # the action tokens reach the encoder through the cached cross-attention
        encoder = [p for name, p in agent.llm.named_parameters() if name.startswith("encoder.block")]
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder)
    agent.zero_grad()


@pytest.mark.parametrize("kind", g.TINY_MODELS)
def test_action_heads_replace_scoring_without_a_vocabulary_projection(kind, prompts):
    torch.manual_seed(0)
    llm, tokenizer = g.load_llm(kind)
    agent = g.GlamAgent(llm, tokenizer, g.action_names("canonical"), action_heads=True).eval()
    projections = []
    llm.get_output_embeddings().register_forward_hook(lambda *_: projections.append(1))
    with torch.no_grad():
        logits, values = agent(prompts[:3])
        assert not projections  # NPAE reads the decoder state only: no logits over the vocabulary, no cache
        scoring_agent = g.GlamAgent(llm, tokenizer, g.action_names("canonical")).eval()
        scoring_agent.value_head = agent.value_head
        hidden = torch.stack([scoring_agent._packed_pass(scoring_agent.tokenize_prompts([p])[0])[0][0] for p in prompts[:3]])
    assert logits.shape == (3, 6)
    torch.testing.assert_close(logits, agent.action_head(hidden), atol=1e-5, rtol=0)
    torch.testing.assert_close(values, agent.value_head(hidden).squeeze(-1), atol=1e-5, rtol=0)


def test_decoder_only_actions_are_the_joint_texts_tokens():
    """Tokenised alone after `Action k: `, a byte-level BPE would give `t`,`ur`,`n`,`Ġleft` after a lone `Ġ`."""
    llm, tokenizer = offline_models.build("byte-level-bpe")
    agent = g.GlamAgent(llm, tokenizer, g.action_names("canonical"))
    turn_left = agent.action_ids[0][agent.action_mask[0].bool()].tolist()
    assert tokenizer.convert_ids_to_tokens(turn_left) == ["Ġturn", "Ġleft", "<|endoftext|>"]
    prompt = g.build_prompt("go to the red ball", agent.actions, [["You see a wall 2 steps forward"]], [])
    prompt_ids = agent.tokenize_prompts([prompt])[0].input_ids[0].tolist()
    assert prompt_ids + turn_left[:-1] == tokenizer(prompt + "turn left").input_ids


def test_a_tokenizer_that_merges_prompt_and_action_is_refused():
    tokenizer = offline_models.merging_bpe()
    with pytest.raises(g.UsageError, match="merges the end of the prompt .* no split .* is exact"):
        g.GlamAgent(offline_models.tiny_llama(tokenizer), tokenizer, g.action_names("canonical"))


@pytest.mark.parametrize("template, fix", [(None, "use a model whose tokenizer has one"), ("{{ messages[0]['content'] }}", "--prompt-format chat")])
def test_a_raw_decoder_only_tokenizer_without_eos_is_refused_naming_the_eos(template, fix):
    llm, tokenizer = g.load_llm("tiny-causal")
    tokenizer.eos_token, tokenizer.chat_template = None, template
    with pytest.raises(g.UsageError, match=f"no EOS token.*{re.escape(fix)}"):
        g.GlamAgent(llm, tokenizer, g.action_names("canonical"))


def test_a_tokenizer_that_appends_eos_to_every_text_is_refused_naming_the_eos():
    from tokenizers import processors

    llm, tokenizer = g.load_llm("tiny-causal")
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 3), ("</s>", 1)])
    with pytest.raises(g.UsageError, match="appends its EOS token '</s>' to every text"):
        g.GlamAgent(llm, tokenizer, g.action_names("canonical"))


def test_an_attention_implementation_without_4d_masks_is_refused():
    llm, tokenizer = g.load_llm("tiny-causal")
    llm.config._attn_implementation = "flash_attention_2"
    with pytest.raises(g.UsageError, match="cannot take the block mask.*'sdpa'"):
        g.GlamAgent(llm, tokenizer, g.action_names("canonical"))


@torch.no_grad()
def test_heads_run_in_float32_under_bf16_autocast(agent, prompts):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, values = agent(prompts[:4])
        hidden, _ = agent._hidden_and_scores(prompts[:4])
    assert logits.dtype == values.dtype == torch.float32
    # bf16 values would be 0.125 apart at the returns of 16-20 that the value loss is clipped to 0.2 around
    torch.testing.assert_close(values, agent.value_head(hidden.float()).squeeze(-1), rtol=0, atol=0)


def test_matmul_precision_is_tf32_on_cuda_unless_turned_off():
    try:
        g.configure_matmul_precision(torch.device("cuda"), tf32=True)
        assert torch.get_float32_matmul_precision() == "high"
        g.configure_matmul_precision(torch.device("cuda"), tf32=False)
        assert torch.get_float32_matmul_precision() == "highest"
        g.configure_matmul_precision(torch.device("cpu"), tf32=True)  # CPU matmuls are left as they are
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision("highest")


@pytest.mark.parametrize("kind", g.TINY_MODELS)
@torch.no_grad()
def test_packed_scoring_equals_naive_with_sdpa_attention(kind, prompts):
    llm, tokenizer = offline_models.build(kind)
    llm.set_attn_implementation("sdpa")  # boolean masks, where eager attention takes additive ones
    agent = g.GlamAgent(llm, tokenizer, g.action_names("augmented")).eval()
    torch.testing.assert_close(agent.score(prompts), naive_scores(agent, prompts), atol=1e-5, rtol=0)


def peak_memory(function, model) -> dict:
    """Peak bytes by kind ('Activation', 'Temp', 'Total', ...) on the CPU while function() runs, from torch's MemTracker."""
    tracker = MemTracker()
    tracker.track_external(model)
    with tracker:
        function()
    return {getattr(kind, "value", kind): size for kind, size in tracker.get_tracker_snapshot("peak")[torch.device("cpu")].items()}


def wider_t5(seed: int = 0):
    """T5 wide enough that the prompt's states, not the weights, dominate memory; tiny-t5's tokenizer."""
    _, tokenizer = g.load_llm("tiny-t5")
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tokenizer), d_model=256, d_ff=512, d_kv=64, num_heads=4, num_layers=4,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, attn_implementation="eager")
    return T5ForConditionalGeneration(config).eval(), tokenizer


def test_rollout_memory_does_not_grow_with_the_number_of_actions(prompts):
    """Packed scoring reads the prompt's states once: no copy of cross-attention keys and values per action."""
    llm, tokenizer = wider_t5()
    peaks = {}
    for action_space in ("restricted", "augmented"):  # 3 and 9 actions
        agent = g.GlamAgent(llm, tokenizer, g.action_names(action_space))
        with torch.no_grad():
            peaks[action_space] = peak_memory(lambda: agent.score(prompts), agent)["Total"]
    assert peaks["augmented"] < 1.15 * peaks["restricted"], peaks


@pytest.mark.parametrize("lora", [0, 4], ids=["full", "lora"])
@pytest.mark.parametrize("kind", g.TINY_MODELS)
def test_gradient_checkpointing_gives_the_same_gradients_with_less_memory(kind, lora, prompts):
    from peft import LoraConfig, get_peft_model

    results = []
    for checkpointing in (False, True):
        llm, tokenizer = offline_models.build(kind)
        if lora:
            task_type = "SEQ_2_SEQ_LM" if kind == "tiny-t5" else "CAUSAL_LM"
            llm = get_peft_model(llm, LoraConfig(r=lora, lora_alpha=2 * lora, target_modules="all-linear", task_type=task_type))
        if checkpointing:
            g.checkpoint_activations(llm)
        agent = g.GlamAgent(llm, tokenizer, g.action_names("canonical")).eval()  # eval mode, as GLAM trains
        taken = torch.arange(len(prompts)) % 6

        def update_pass():
            _, logprob, entropy, value = agent.get_action_and_value(prompts, taken)
            (logprob.sum() + entropy.sum() + value.sum()).backward()

        # MemTracker hooks every parameter's gradient, which LoRA's frozen weights do not have: memory is measured
        # on full fine-tuning.
        peak = update_pass() if lora else peak_memory(update_pass, agent)["Activation"]
        results.append((peak, {name: p.grad for name, p in agent.named_parameters() if p.requires_grad}))
    (plain_peak, plain), (checkpointed_peak, checkpointed) = results
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    if not lora:
        assert checkpointed_peak < 0.7 * plain_peak, (checkpointed_peak, plain_peak)


def reference_gae(rewards, values, dones, next_value, next_done, gamma, lam):
    """Straight from the definition: A_t = sum_k (gamma lam)^k delta_{t+k}, stopping at the episode's end."""
    steps, envs = rewards.shape
    all_values = torch.cat([values, next_value[None]])
    all_dones = torch.cat([dones, next_done[None]])
    advantages = torch.zeros_like(rewards)
    for env in range(envs):
        for t in range(steps):
            total, discount = 0.0, 1.0
            for k in range(t, steps):
                alive = 1.0 - all_dones[k + 1, env]
                delta = rewards[k, env] + gamma * all_values[k + 1, env] * alive - all_values[k, env]
                total += discount * delta
                if alive == 0:
                    break
                discount *= gamma * lam
            advantages[t, env] = total
    return advantages


def test_gae_matches_the_definition():
    torch.manual_seed(0)
    rewards, values = torch.rand(7, 3), torch.rand(7, 3)
    dones = (torch.rand(7, 3) < 0.3).float()
    next_value, next_done = torch.rand(3), torch.tensor([0.0, 1.0, 0.0])
    advantages, returns = g.compute_gae(rewards, values, dones, next_value, next_done, 0.99, 0.95)
    torch.testing.assert_close(advantages, reference_gae(rewards, values, dones, next_value, next_done, 0.99, 0.95))
    torch.testing.assert_close(returns, advantages + values)


def test_legacy_paper_rule_survives_scores_whose_probabilities_underflow():
    """exp(score) is 0 in float32 below about -104: P / max P was 0 / 0 there, and Categorical raised."""
    llm, tokenizer = g.load_llm("tiny-t5")
    agent = g.GlamAgent(llm, tokenizer, g.action_names("restricted"), scoring="legacy-paper")
    scores = torch.tensor([[-120.0, -130.0, -104.5], [-0.5, -2.0, -3.0]])
    logits = agent.policy_logits(scores)
    probs = scores.double().exp()  # float64 holds these probabilities
    torch.testing.assert_close(logits, (probs / probs.max(-1, keepdim=True).values).float())
    assert torch.distributions.Categorical(logits=logits).sample().shape == (2,)
