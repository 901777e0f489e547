"""Rollout activations per prompt and update activations per transition of the glam_ppo.py that PYTHONPATH names, at a
model shape of benchmark/memory.py (fake tensors, fp32, no checkpointing): to compare two versions of the scorer.

    python benchmark/memory_before_after.py --shape flan-t5-large                       # this checkout
    git worktree add /tmp/before 7c57678
    PYTHONPATH=/tmp/before python benchmark/memory_before_after.py --shape flan-t5-large  # the scorer before packing
"""

import json
import os
import sys
from dataclasses import dataclass

import tyro
from torch._subclasses.fake_tensor import FakeTensorMode

if not any(os.path.exists(os.path.join(path, "glam_ppo.py")) for path in sys.path if path):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout, unless PYTHONPATH names one
import glam_ppo  # noqa: E402  (imported before memory.py, which would otherwise import this checkout's)

sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))
import memory  # noqa: E402

memory.glam_ppo = glam_ppo


@dataclass
class Args:
    shape: memory.ShapeName = "flan-t5-large"
    """a model shape of benchmark/memory.py"""
    num_prompts: int = 32
    """prompts in the rollout pass"""
    micro: int = 8
    """transitions in the update pass"""


def main(args: Args) -> dict:
    if args.num_prompts < 1 or args.micro < 1:
        sys.exit("memory_before_after.py: error: --num-prompts and --micro must be at least 1")
    prompts = memory.real_prompts(args.num_prompts)
    with FakeTensorMode(allow_non_fake_inputs=True):
        llm, tokenizer = memory.build_model(args.shape)
        agent = glam_ppo.GlamAgent(llm, tokenizer, glam_ppo.action_names("canonical")).eval()
        rollout = memory.activations(memory.peak_memory(agent, prompts, update=False, bf16=False))
        update = memory.activations(memory.peak_memory(agent, prompts[: args.micro], update=True, bf16=False))
    result = {
        "glam_ppo": os.path.abspath(glam_ppo.__file__), "shape": args.shape,
        "rollout_gb_per_prompt": rollout / len(prompts) / 1e9, "update_gb_per_transition": update / args.micro / 1e9,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
