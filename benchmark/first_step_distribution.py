"""The policy's action distribution on the first prompt of a few levels, with the tokens each action is scored on.

    python benchmark/first_step_distribution.py --model <file.gguf or folder> --env-id BabyAI-GoToLocal-v0 --levels 3
    python benchmark/first_step_distribution.py --model <file.gguf or folder> --prompt-format chat

Level k is `reset(seed=--seed + k)`, as in zero_shot_eval.py. Run with PYTHONPATH set to another checkout to compare
versions of the scorer on the same prompts.
"""

import json
import os
import sys
from dataclasses import dataclass
from typing import Literal

import torch
import tyro

if not any(os.path.exists(os.path.join(path, "zero_shot_eval.py")) for path in sys.path if path):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout, unless PYTHONPATH names one
import zero_shot_eval as z  # noqa: E402


@dataclass
class Args:
    model: str
    """what zero_shot_eval.py --model takes"""
    env_id: str = "BabyAI-GoToLocal-v0"
    """the level"""
    levels: int = 3
    """how many levels: the first prompt of each"""
    seed: int = 1
    """level k is reset(seed=seed + k)"""
    prompt_format: Literal["raw", "chat"] = "raw"
    """what zero_shot_eval.py --prompt-format takes"""
    out: str | None = None
    """also write the distributions here as JSON"""


def main(args: Args) -> dict:
    if args.levels < 1:
        sys.exit(f"first_step_distribution.py: error: --levels {args.levels} must be at least 1")
    envs = z.TextVecEnv(args.env_id, 1, "canonical")
    prompts = []
    for level in range(args.levels):
        envs.start_episode(0, args.seed + level)
        prompts.append(envs.prompts()[0])
    llm, tokenizer = z.load_llm(args.model)
    agent = z.GlamAgent(llm.eval(), tokenizer, envs.actions, prompt_format=args.prompt_format)
    with torch.no_grad():
        probs = agent(prompts)[0].softmax(-1)
    tokens = {action: tokenizer.convert_ids_to_tokens(ids[mask.bool()].tolist()) for action, ids, mask in zip(envs.actions, agent.action_ids, agent.action_mask)}
    result = {
        "model": z.model_source(args.model), "prompt_format": args.prompt_format, "env_id": args.env_id,
        "levels": [args.seed + level for level in range(args.levels)],
        "action_tokens": tokens, "prompt_ends_with": [repr(agent.model_text(prompt)[-40:]) for prompt in prompts],
        "probabilities": [dict(zip(envs.actions, [round(p, 4) for p in row.tolist()])) for row in probs],
    }
    print("scored tokens:", json.dumps(tokens, ensure_ascii=False))
    print("| level | " + " | ".join(envs.actions) + " |")
    print("|---" * (len(envs.actions) + 1) + "|")
    for level, row in zip(result["levels"], probs.tolist()):
        print(f"| {level} | " + " | ".join(f"{p:.3f}" for p in row) + " |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2, ensure_ascii=False)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
