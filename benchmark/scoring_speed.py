"""Scoring throughput: (prompt, action) pairs scored per second by three schemes, same model, same prompts.

  (a) naive:   one full forward pass per (prompt, action) pair;
  (b) authors: the encoder once per prompt, its output repeated for every action, the whole decoder run on
               minibatches of 3 pairs (flowersteam/Grounding_LLMs_with_online_RL through lamorel); for a
               decoder-only model, prompt + action in minibatches of 3 pairs;
  (c) ours:    glam_ppo.py's GlamAgent.score (one pass per prompt: its actions packed into one sequence).

Models have random weights with the shapes of the real ones (no download), and glam_ppo.py's word-level BabyAI-Text
tokenizer; prompts are real BabyAI-Text prompts of MixedTrainLocal with a full history. The three schemes' scores
are checked against each other before anything is timed.

    python benchmark/scoring_speed.py                                   # every model, CPU
    python benchmark/scoring_speed.py --models tiny-t5 t5-small-shape --device cuda
"""

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import glam_ppo  # noqa: E402

# Shapes of the real models (config.json of google/flan-t5-small, base, large, HuggingFaceTB/SmolLM2-135M).
SHAPES = {
    "t5-small-shape": dict(d_model=512, d_ff=1024, d_kv=64, num_heads=6, num_layers=8, feed_forward_proj="gated-gelu", vocab_size=32128),
    "t5-base-shape": dict(d_model=768, d_ff=2048, d_kv=64, num_heads=12, num_layers=12, feed_forward_proj="gated-gelu", vocab_size=32128),
    "t5-large-shape": dict(d_model=1024, d_ff=2816, d_kv=64, num_heads=16, num_layers=24, feed_forward_proj="gated-gelu", vocab_size=32128),
    "smollm2-135m-shape": dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        vocab_size=49152, tie_word_embeddings=True,
    ),
}
MODELS = ("tiny-t5", "tiny-causal", *(shape for shape in SHAPES if shape != "t5-large-shape"))  # the default: sizes a CPU runs


@dataclass
class Args:
    models: tuple[Literal["tiny-t5", "tiny-causal", "t5-small-shape", "t5-base-shape", "t5-large-shape", "smollm2-135m-shape"], ...] = MODELS
    """the models to measure"""
    num_prompts: int = 16
    """prompts scored per measurement (each with 6 actions)"""
    repeats: int = 3
    """timed repetitions per scheme; the best is kept"""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """cpu or cuda"""
    out: str | None = None
    """also write the table as JSON here"""


def build_model(name: str):
    """(model in eval mode, tokenizer): glam_ppo's tiny models, or random weights in a real model's shape."""
    torch.manual_seed(0)
    if name in glam_ppo.TINY_MODELS:
        return glam_ppo.build_tiny_model(name)
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    _, tokenizer = glam_ppo.build_tiny_model("tiny-t5" if name.startswith("t5") else "tiny-causal")
    if name.startswith("t5"):
        return T5ForConditionalGeneration(T5Config(**SHAPES[name], decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)), tokenizer
    return LlamaForCausalLM(LlamaConfig(**SHAPES[name], pad_token_id=0, eos_token_id=1, bos_token_id=3)), tokenizer


def real_prompts(count: int) -> list[str]:
    """MixedTrainLocal prompts after four random steps, so that most hold three observations and two actions."""
    envs = glam_ppo.TextVecEnv("BabyAI-MixedTrainLocal-v0", count, "canonical")
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(4):
        prompts, *_ = envs.step(rng.integers(0, 3, count))
    return prompts


def action_tokens(agent, index: int) -> torch.Tensor:
    return agent.action_ids[index, : int(agent.action_mask[index].sum())]


def naive_scores(agent, prompts) -> torch.Tensor:
    """(a): one full forward pass per pair."""
    llm = agent.llm
    scores = torch.zeros(len(prompts), len(agent.actions))
    for p, prompt in enumerate(prompts):
        prompt_ids = agent.tokenize_prompts([prompt])[0].input_ids  # decoder-only: the action's tokens start at the space
        for a in range(len(agent.actions)):
            target = action_tokens(agent, a)[None]
            if agent.is_encoder_decoder:
                logits = llm(input_ids=prompt_ids, decoder_input_ids=llm.prepare_decoder_input_ids_from_labels(labels=target)).logits
            else:
                logits = llm(input_ids=torch.cat([prompt_ids, target], 1)).logits[:, prompt_ids.shape[1] - 1 : -1]
            scores[p, a] = logits.float().log_softmax(-1).gather(2, target[..., None]).sum().cpu()
    return scores


def authors_scores(agent, prompts, pairs_per_pass: int = 3) -> torch.Tensor:
    """(b): the encoder once per prompt, its output repeated per action, the decoder over minibatches of 3 pairs."""
    llm, tokenizer, device = agent.llm, agent.tokenizer, agent.device
    num_actions = len(agent.actions)
    pairs = [(p, a) for p in range(len(prompts)) for a in range(num_actions)]
    targets = agent.action_ids.repeat(len(prompts), 1)
    target_mask = agent.action_mask.repeat(len(prompts), 1)
    if agent.is_encoder_decoder:
        decoder_input_ids = llm.prepare_decoder_input_ids_from_labels(labels=targets.masked_fill(target_mask == 0, -100))
        tokens, _ = agent.tokenize_prompts(prompts)
        encoded = llm.get_encoder()(**tokens).last_hidden_state.repeat_interleave(num_actions, 0)
        prompt_mask = tokens.attention_mask.repeat_interleave(num_actions, 0)
    else:
        prompt_ids = [agent.tokenize_prompts([prompt])[0].input_ids[0].tolist() for prompt in prompts]
        sequences = [prompt_ids[p] + action_tokens(agent, a).tolist() for p, a in pairs]
    scores = []
    for start in range(0, len(pairs), pairs_per_pass):
        batch = slice(start, start + pairs_per_pass)
        if agent.is_encoder_decoder:
            logits = llm(encoder_outputs=(encoded[batch],), attention_mask=prompt_mask[batch], decoder_input_ids=decoder_input_ids[batch]).logits
            logprobs = logits.float().log_softmax(-1).gather(2, targets[batch, :, None]).squeeze(2)
            scores.append((logprobs * target_mask[batch]).sum(-1))
        else:
            chunk = sequences[batch]
            width = max(map(len, chunk))
            ids = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in chunk], device=device)
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in chunk], device=device)
            logprobs = llm(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
            for row, (p, a) in enumerate(pairs[batch]):
                target = action_tokens(agent, a)
                end = len(chunk[row])
                scores.append(logprobs[row, end - len(target) - 1 : end - 1].gather(1, target[:, None]).sum()[None])
    return torch.cat(scores).view(len(prompts), num_actions).cpu()


def ours_scores(agent, prompts) -> torch.Tensor:
    """(c): GlamAgent.score."""
    return agent.score(prompts).cpu()


SCHEMES = {"naive": naive_scores, "authors": authors_scores, "ours": ours_scores}


def pairs_per_second(scheme, agent, prompts, repeats: int, device: str) -> float:
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        scheme(agent, prompts)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return len(prompts) * len(agent.actions) / best


@torch.no_grad()
def measure(name: str, args: Args) -> dict:
    llm, tokenizer = build_model(name)
    agent = glam_ppo.GlamAgent(llm.eval(), tokenizer, glam_ppo.action_names("canonical")).to(args.device).eval()
    prompts = real_prompts(args.num_prompts)
    results = {name: SCHEMES[name](agent, prompts) for name in SCHEMES}  # also the warm-up
    for scheme in ("naive", "authors"):
        difference = (results[scheme] - results["ours"]).abs().max().item()
        if difference > 1e-3:
            raise SystemExit(f"scoring_speed.py: error: {name}: {scheme} and ours differ by {difference:.2e}")
    speed = {scheme: pairs_per_second(SCHEMES[scheme], agent, prompts, args.repeats, args.device) for scheme in SCHEMES}
    parameters = sum(p.numel() for p in llm.parameters())
    prompt_tokens = float(np.mean([len(tokenizer(p).input_ids) for p in prompts]))
    return {"model": name, "parameters": parameters, "prompt_tokens": prompt_tokens, **speed,
            "ours/naive": speed["ours"] / speed["naive"], "ours/authors": speed["ours"] / speed["authors"]}


def format_table(rows, device: str) -> str:
    lines = [
        f"pairs/s on {device} (6 actions, mean prompt length in tokens)",
        "| model | params | prompt | (a) naive | (b) authors | (c) ours | (c)/(a) | (c)/(b) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['parameters'] / 1e6:.1f}M | {r['prompt_tokens']:.0f} | {r['naive']:.0f} | {r['authors']:.0f} | "
            f"{r['ours']:.0f} | {r['ours/naive']:.1f}x | {r['ours/authors']:.1f}x |"
        )
    return "\n".join(lines)


def main(args: Args) -> list[dict]:
    rows = []
    for name in args.models:
        rows.append(measure(name, args))
        print(f"{name}: naive {rows[-1]['naive']:.0f}, authors {rows[-1]['authors']:.0f}, ours {rows[-1]['ours']:.0f} pairs/s", flush=True)
    table = format_table(rows, args.device)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": args.device, "bars": ["naive", "authors", "ours"], "unit": "pairs/s", "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
