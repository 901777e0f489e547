"""Tiny decoder-only models with the tokenizers real checkpoints use, built offline over BabyAI-Text text:
a byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM2) and a SentencePiece-style Metaspace BPE (Llama 2, Mistral)."""

import re

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import glam_ppo as g


def babyai_text_corpus() -> list[str]:
    """Prompts of every level kind with actions taken, the action strings, and the words of the vocabulary."""
    texts = [" ".join(sorted(set(re.findall(r"\w+|[^\w\s]+", g.VOCABULARY_TEXT))))]  # the tiny models' words
    for action_space in ("canonical", "augmented"):
        envs = g.TextVecEnv("BabyAI-MixedTrainLocal-v0", 8, action_space)
        texts += envs.reset(seed=0)
        for step in range(6):
            prompts, *_ = envs.step([(step + k) % len(envs.actions) for k in range(8)])
            texts += [prompt + envs.actions[step % len(envs.actions)] for prompt in prompts]
    return texts


def byte_level_bpe(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(babyai_text_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>", bos_token="<|endoftext|>")


def metaspace_bpe(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    core.train_from_iterator(babyai_text_corpus(), trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"]))
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", core.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>")


def merging_bpe() -> PreTrainedTokenizerFast:
    """A byte-level BPE without the whitespace split, trained to merge the prompt's `: ` into one token with the
    action's first letter: no split of `prompt + action` into prompt tokens and action tokens is exact."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator([": turn left, : turn right, : go forward, : pick up, : drop, : toggle"] * 50, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def tiny_llama(tokenizer) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id, attn_implementation="eager",
    )
    return LlamaForCausalLM(config)


TOKENIZERS = {"byte-level-bpe": byte_level_bpe, "metaspace-bpe": metaspace_bpe}


def build(kind: str, seed: int = 0):
    """(model, tokenizer): glam_ppo's tiny models by name, or a tiny Llama with one of TOKENIZERS."""
    torch.manual_seed(seed)
    if kind in g.TINY_MODELS:
        return g.load_llm(kind)
    tokenizer = TOKENIZERS[kind]()
    return tiny_llama(tokenizer), tokenizer
