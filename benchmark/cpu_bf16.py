"""Whether --bf16 pays on this CPU: the process CPU time of one SmolLM2-sized linear layer (2400 tokens, 576 -> 1536),
float32 against bfloat16 autocast, one thread, and the CPU's bf16 instructions. Autocast runs bf16 matmuls natively
only on CPUs with AVX512-BF16 or AMX; elsewhere they are slower than float32.

    python benchmark/cpu_bf16.py
"""

import re
import time

import torch


def seconds_per_pass(layer: torch.nn.Linear, inputs: torch.Tensor, bf16: bool, repeats: int = 5) -> float:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        layer(inputs)  # warm-up
        start = time.process_time()
        for _ in range(repeats):
            layer(inputs)
        return (time.process_time() - start) / repeats


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.manual_seed(0)
    layer, inputs = torch.nn.Linear(576, 1536), torch.randn(2400, 576)
    fp32, bf16 = seconds_per_pass(layer, inputs, False), seconds_per_pass(layer, inputs, True)
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    found = sorted(set(re.findall(r"\b(avx512_bf16|amx_bf16|avx512f|avx2)\b", flags)))
    print(f"CPU bf16-related flags: {', '.join(found) or 'none'}; float32 {fp32:.3f} s, bf16 autocast {bf16:.3f} s "
          f"({bf16 / fp32:.1f}x float32's time)")
