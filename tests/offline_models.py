"""Tiny decoder-only models with the tokenizers real checkpoints use, built offline over BabyAI-Text text:
a byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM2) and a SentencePiece-style Metaspace BPE (Llama 2, Mistral); and a
tiny Llama as a quantized GGUF file, as llama.cpp's users hold their models."""

import json
import re

import gguf
import numpy as np
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


def write_tiny_gguf(path: str, hidden: int = 64, ffn: int = 128, heads: int = 4, kv_heads: int = 2, layers: int = 2):
    """A 2-layer Llama with the byte-level BPE, its matrices in Q4_1 as SmolLM2-135M-Instruct's GGUF has them (72 kB)."""
    bpe = json.loads(byte_level_bpe()._tokenizer.to_str())["model"]
    tokens = sorted(bpe["vocab"], key=bpe["vocab"].get)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges([" ".join(merge) for merge in bpe["merges"]])
    writer.add_token_types([gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * (len(tokens) - 1))  # <|endoftext|> is 0
    writer.add_bos_token_id(0), writer.add_eos_token_id(0), writer.add_pad_token_id(0)
    writer.add_vocab_size(len(tokens)), writer.add_context_length(2048), writer.add_block_count(layers)
    writer.add_embedding_length(hidden), writer.add_feed_forward_length(ffn), writer.add_rope_dimension_count(hidden // heads)
    writer.add_head_count(heads), writer.add_head_count_kv(kv_heads), writer.add_layer_norm_rms_eps(1e-5)
    rng = np.random.default_rng(0)

    def add_matrix(name: str, rows: int, cols: int):
        weight = rng.normal(0, 0.05, (rows, cols)).astype(np.float32)
        writer.add_tensor(name, gguf.quants.quantize(weight, gguf.GGMLQuantizationType.Q4_1), raw_dtype=gguf.GGMLQuantizationType.Q4_1)

    add_matrix("token_embd.weight", len(tokens), hidden)  # tied to the output, as SmolLM2's
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    kv = hidden * kv_heads // heads
    for block in range(layers):
        writer.add_tensor(f"blk.{block}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{block}.ffn_norm.weight", np.ones(hidden, np.float32))
        for name, rows, cols in [("attn_q", hidden, hidden), ("attn_k", kv, hidden), ("attn_v", kv, hidden), ("attn_output", hidden, hidden),
                                 ("ffn_gate", ffn, hidden), ("ffn_up", ffn, hidden), ("ffn_down", hidden, ffn)]:
            add_matrix(f"blk.{block}.{name}.weight", rows, cols)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
