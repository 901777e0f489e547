"""Memory and FLOPs of GLAM's passes at real model shapes, computed on CPU with fake tensors (no weights, no compute).

    python benchmark/memory.py                                    # every shape: takes a while (a minute or so each)
    python benchmark/memory.py --shapes flan-t5-large --out benchmark/memory_flan-t5-large.json
    python benchmark/memory.py --tables-from benchmark/memory.json   # the tables again, from saved measurements

glam_ppo.py's own GlamAgent runs on real MixedTrainLocal prompts (three observations, two actions; token counts of
the word-level tokenizer of tiny-t5 / tiny-causal) with a randomly initialised model of the named shape, built under
torch's FakeTensorMode: every tensor has its real shape, dtype and size, and none holds data. MemTracker
(torch.distributed._tools.mem_tracker) records the peak of live tensors, FlopCounterMode the FLOPs. Per shape:

- static: what stays on the GPU through an update: fp32 weights, fp32 gradients and Adam's two fp32 moments (16 bytes
  per trained parameter; LoRA: 4 bytes per frozen one). FSDP over 8 GPUs divides it by 8.
- rollout: peak activations of scoring `--num-envs` prompts without gradients, per prompt.
- update: peak activations of one forward and backward pass of `--micro` transitions, per transition, with and without
  --gradient-checkpointing, in fp32 and under --bf16 autocast, full fine-tuning and LoRA r=16.
- FLOPs per frame: one rollout pass per frame plus `update_epochs` (4) forward and backward passes per transition.
  The H100 throughput printed from them is a prediction at the stated utilisation, not a measurement.
"""

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
import tyro
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import glam_ppo  # noqa: E402

T5_COMMON = dict(vocab_size=32128, feed_forward_proj="gated-gelu", tie_word_embeddings=False, d_kv=64)
LLAMA_COMMON = dict(vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192)
SHAPES = {
    "flan-t5-small": ("t5", dict(d_model=512, d_ff=1024, num_heads=6, num_layers=8, **T5_COMMON)),
    "flan-t5-base": ("t5", dict(d_model=768, d_ff=2048, num_heads=12, num_layers=12, **T5_COMMON)),
    "flan-t5-large": ("t5", dict(d_model=1024, d_ff=2816, num_heads=16, num_layers=24, **T5_COMMON)),
    "flan-t5-xl": ("t5", dict(d_model=2048, d_ff=5120, num_heads=32, num_layers=24, **T5_COMMON)),
    "flan-t5-xxl": ("t5", dict(d_model=4096, d_ff=10240, num_heads=64, num_layers=24, **T5_COMMON)),
    "llama-1b": ("llama", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                               num_key_value_heads=8, tie_word_embeddings=True, **LLAMA_COMMON)),
    "llama-8b": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                               num_key_value_heads=8, tie_word_embeddings=False, **LLAMA_COMMON)),
}
# For the tests' dry runs only, not among the default --shapes: T5's layers, flan-t5's vocabulary and its output layer
# (the rollout pass's logits), at a size whose real-tensor passes take a second on a CPU.
DRY_RUN_SHAPES = {"t5-mini": ("t5", dict(d_model=128, d_ff=256, num_heads=2, num_layers=1, **T5_COMMON))}
ShapeName = Literal[tuple(SHAPES) + tuple(DRY_RUN_SHAPES)]
GPU_SIZES_GB = (24, 40, 80)
H100_BF16_DENSE_TFLOPS, H100_TF32_DENSE_TFLOPS = 989.0, 494.0  # NVIDIA's H100 SXM datasheet, dense


@dataclass
class Args:
    shapes: list[ShapeName] = field(default_factory=lambda: list(SHAPES))
    """model shapes to plan for"""
    num_envs: int = 32
    """prompts in one rollout pass (the paper's 32 envs)"""
    minibatch: int = 64
    """transitions per minibatch (the paper's 64), the pass size that --grad-accum-minibatch 0 runs at once"""
    micro: int = 8
    """transitions in the measured update pass (activations scale with it)"""
    update_epochs: int = 4
    """PPO epochs: update passes per transition"""
    utilisation: float = 0.4
    """fraction of the H100's dense peak assumed for the throughput prediction"""
    margin: float = 0.9
    """fraction of a GPU's memory a plan may use (the rest: the allocator's fragmentation, the optimizer's temporaries)"""
    out: str | None = None
    """also write the results here as JSON"""
    tables_from: str | None = None
    """print the tables from the results that --out saved (with this run's --margin), measuring nothing"""


def real_prompts(count: int) -> list[str]:
    """MixedTrainLocal prompts after four steps, so that most hold three observations and two actions."""
    envs = glam_ppo.TextVecEnv("BabyAI-MixedTrainLocal-v0", count, "canonical")
    envs.reset(seed=0)
    for step in range(4):
        prompts, *_ = envs.step([(step + k) % 3 for k in range(count)])
    return prompts


def build_model(shape: str):
    """A randomly initialised model of the shape (under FakeTensorMode: no memory, no compute) and a tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    family, sizes = {**SHAPES, **DRY_RUN_SHAPES}[shape]
    _, tokenizer = glam_ppo.build_tiny_model("tiny-t5" if family == "t5" else "tiny-causal")
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if family == "t5":
        return T5ForConditionalGeneration(T5Config(decoder_start_token_id=tokenizer.pad_token_id, **ids, **sizes)), tokenizer
    return LlamaForCausalLM(LlamaConfig(bos_token_id=tokenizer.bos_token_id, **ids, **sizes)), tokenizer


def run_pass(agent, prompts, *, update: bool, bf16: bool, device_type: str = "cpu"):
    """One rollout pass (no gradients) or one update pass (with backward) of the agent on the prompts."""
    autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16)
    validate = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)  # its checks read values, which fake tensors lack
    try:
        if update:
            with autocast:
                _, logprob, entropy, value = agent.get_action_and_value(prompts, torch.zeros(len(prompts), dtype=torch.long, device=agent.device))
            (logprob.float().sum() + entropy.float().sum() + value.sum()).backward()
            agent.zero_grad(set_to_none=True)
        else:
            with torch.no_grad(), autocast:
                agent(prompts)
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate)


def peak_memory(agent, prompts, *, update: bool, bf16: bool) -> dict:
    """Peak bytes on the CPU by kind ('Activation', 'Temp', 'Parameter', ...) during one pass."""
    tracker = MemTracker()
    tracker.track_external(agent)
    with tracker:
        run_pass(agent, prompts, update=update, bf16=bf16)
    return {getattr(kind, "value", kind): size for kind, size in tracker.get_tracker_snapshot("peak")[torch.device("cpu")].items()}


def count_flops(agent, prompts, *, update: bool) -> int:
    # A pass of its own: FlopCounterMode holds tensors that activation checkpointing would free, so it would inflate
    # a peak measured alongside.
    with FlopCounterMode(display=False) as flops:
        run_pass(agent, prompts, update=update, bf16=False)
    return flops.get_total_flops()


def activations(peak: dict) -> int:
    return peak["Activation"] + peak["Temp"]


def plan_shape(shape: str, args: Args) -> dict:
    """Every measurement for one shape, in GB (10^9 bytes) and FLOPs."""
    prompts = real_prompts(args.num_envs)
    start = time.time()
    _, tokenizer = glam_ppo.build_tiny_model("tiny-t5" if {**SHAPES, **DRY_RUN_SHAPES}[shape][0] == "t5" else "tiny-causal")
    result = {"shape": shape, "prompt_tokens_mean": sum(len(ids) for ids in tokenizer(prompts).input_ids) / len(prompts)}
    with FakeTensorMode(allow_non_fake_inputs=True):
        llm, tokenizer = build_model(shape)
        agent = glam_ppo.GlamAgent(llm, tokenizer, glam_ppo.action_names("canonical")).eval()
        parameters = sum(p.numel() for p in agent.parameters())
        result["parameters"] = parameters
        for precision in ("fp32", "bf16"):
            peak = peak_memory(agent, prompts, update=False, bf16=precision == "bf16")
            result[f"rollout_{precision}_gb_per_prompt"] = activations(peak) / len(prompts) / 1e9
        result["rollout_flops_per_prompt"] = count_flops(agent, prompts, update=False) / len(prompts)
        micro_prompts = prompts[: args.micro]
        for precision in ("fp32", "bf16"):
            for checkpointing in (False, True):
                llm, tokenizer = build_model(shape)
                if checkpointing:
                    glam_ppo.checkpoint_activations(llm)
                agent = glam_ppo.GlamAgent(llm, tokenizer, glam_ppo.action_names("canonical")).eval()
                peak = peak_memory(agent, micro_prompts, update=True, bf16=precision == "bf16")
                result[f"update_{precision}{'_ckpt' if checkpointing else ''}_gb_per_transition"] = activations(peak) / args.micro / 1e9
                if precision == "fp32":  # the same FLOPs under autocast
                    flops = count_flops(agent, micro_prompts, update=True) / args.micro
                    result[f"update{'_ckpt' if checkpointing else ''}_flops_per_transition"] = flops
        # LoRA r=16 on every linear layer but the output one (peft's "all-linear") trains r x (in + out) weights per
        # layer, plus the heads. Its activations are taken as full fine-tuning's: the frozen layers' inputs are kept for
        # the backward all the same.
        output_layer = llm.get_output_embeddings()
        lora = sum(16 * (m.in_features + m.out_features) for m in llm.modules() if isinstance(m, torch.nn.Linear) and m is not output_layer)
        trained = lora + sum(p.numel() for name, p in agent.named_parameters() if not name.startswith("llm."))
        result["lora_trained_parameters"] = trained
    gb = 1e9
    result["static_full_gb"] = 16 * parameters / gb
    result["static_lora_gb"] = (4 * (parameters - trained) + 16 * trained) / gb
    result["static_full_fsdp8_gb"] = result["static_full_gb"] / 8
    result["flops_per_frame"] = result["rollout_flops_per_prompt"] + args.update_epochs * result["update_flops_per_transition"]
    for name, peak_tflops in (("fp32", H100_TF32_DENSE_TFLOPS), ("bf16", H100_BF16_DENSE_TFLOPS)):
        result[f"predicted_h100_frames_per_s_{name}"] = args.utilisation * peak_tflops * 1e12 / result["flops_per_frame"]
    result["seconds"] = time.time() - start
    return result


def largest_pass(static_gb: float, per_unit_gb: float, gpu_gb: float, margin: float) -> int:
    return max(0, int((margin * gpu_gb - static_gb) // per_unit_gb))


def auto_passes(static_gb: float, per_unit_gb: float, gpu_gb: float, margin: float, minibatch: int) -> tuple[int, int] | None:
    """(passes, transitions per pass) that --grad-accum-minibatch auto ends with on CUDA: the whole minibatch, halved
    until a pass fits; None if one transition does not fit."""
    fits, most = largest_pass(static_gb, per_unit_gb, gpu_gb, margin), minibatch
    if fits < 1:
        return None
    while most > fits:
        most //= 2
    passes = -(-minibatch // most)
    return passes, -(-minibatch // passes)


def format_tables(results: list[dict], args: Args) -> str:
    lines = [
        f"Memory in GB (10^9 bytes) at the paper's batch ({args.num_envs} prompts per rollout pass, minibatch {args.minibatch}); "
        f"fake tensors on CPU, update measured on {args.micro} transitions.",
        "",
        "| shape | params | prompt tokens | static: full / LoRA-16 (its activations as full's) / full FSDP-8 | rollout per prompt: fp32 / bf16 | "
        "update per transition: fp32 / fp32+ckpt / bf16 / bf16+ckpt |",
        "|---|---:|---:|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['shape']} | {r['parameters'] / 1e6:,.0f}M | {r['prompt_tokens_mean']:.0f} | "
            f"{r['static_full_gb']:.1f} / {r['static_lora_gb']:.1f} / {r['static_full_fsdp8_gb']:.1f} | "
            f"{r['rollout_fp32_gb_per_prompt']:.3f} / {r['rollout_bf16_gb_per_prompt']:.3f} | "
            f"{r['update_fp32_gb_per_transition']:.3f} / {r['update_fp32_ckpt_gb_per_transition']:.3f} / "
            f"{r['update_bf16_gb_per_transition']:.3f} / {r['update_bf16_ckpt_gb_per_transition']:.3f} |"
        )
    lines += [
        "",
        f"Largest update pass (transitions) that fits a GPU, using {args.margin:.0%} of it: full fine-tuning, fp32 / "
        "fp32 + --gradient-checkpointing / bf16 + --gradient-checkpointing; and with --fsdp over 8 GPUs, bf16 + checkpointing. "
        f"A minibatch of {args.minibatch} in one pass needs the first number to reach {args.minibatch}; otherwise "
        "--grad-accum-minibatch N splits it into passes of N.",
        "",
        "| shape | " + " | ".join(f"{size} GB" for size in GPU_SIZES_GB) + " | 8 x 80 GB, FSDP |",
        "|---|" + "---|" * (len(GPU_SIZES_GB) + 1),
    ]
    for r in results:
        cells = []
        for size in GPU_SIZES_GB:
            fits = [largest_pass(r["static_full_gb"], r[f"update_{name}_gb_per_transition"], size, args.margin)
                    for name in ("fp32", "fp32_ckpt", "bf16_ckpt")]
            cells.append(" / ".join(map(str, fits)))
        fsdp = largest_pass(r["static_full_fsdp8_gb"], r["update_bf16_ckpt_gb_per_transition"], 80, args.margin)
        lines.append(f"| {r['shape']} | " + " | ".join(cells) + f" | {fsdp} |")
    lines += [
        "",
        f"At glam_ppo.py's defaults (fp32, no checkpointing, --grad-accum-minibatch auto): the passes that auto halves a minibatch "
        f"of {args.minibatch} into on one GPU, and the predicted peak (static + a pass's activations); - where one transition "
        "does not fit.",
        "",
        "| shape | " + " | ".join(f"{size} GB" for size in GPU_SIZES_GB) + " |",
        "|---|" + "---|" * len(GPU_SIZES_GB),
    ]
    for r in results:
        cells = []
        for size in GPU_SIZES_GB:
            plan = auto_passes(r["static_full_gb"], r["update_fp32_gb_per_transition"], size, args.margin, args.minibatch)
            peak = plan and r["static_full_gb"] + plan[1] * r["update_fp32_gb_per_transition"]
            cells.append(f"{plan[0]} x {plan[1]}: {peak:.1f} GB" if plan else "-")
        lines.append(f"| {r['shape']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"FLOPs per frame (one rollout pass, {args.update_epochs} update passes; --gradient-checkpointing adds one forward pass of the blocks) and the H100 throughput they predict at "
        f"{args.utilisation:.0%} of the dense peak ({H100_TF32_DENSE_TFLOPS:.0f} TFLOP/s TF32, {H100_BF16_DENSE_TFLOPS:.0f} bf16). "
        "Predictions, not measurements.",
        "",
        "| shape | GFLOP per frame | predicted H100 frames/s, fp32 (TF32) | bf16 |",
        "|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['shape']} | {r['flops_per_frame'] / 1e9:,.0f} | {r['predicted_h100_frames_per_s_fp32']:.0f} | "
            f"{r['predicted_h100_frames_per_s_bf16']:.0f} |"
        )
    return "\n".join(lines)


def main(args: Args) -> list[dict]:
    for flag in ("num_envs", "minibatch", "micro", "update_epochs"):
        if getattr(args, flag) < 1:
            sys.exit(f"memory.py: error: --{flag.replace('_', '-')} {getattr(args, flag)} must be at least 1")
    for flag in ("utilisation", "margin"):
        if not 0 < getattr(args, flag) <= 1:
            sys.exit(f"memory.py: error: --{flag} {getattr(args, flag)} must be in (0, 1]")
    if args.tables_from:
        try:
            with open(args.tables_from) as f:
                saved = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            sys.exit(f"memory.py: error: --tables-from {args.tables_from}: {error}")
        measured = {name: value for name, value in saved["args"].items() if name not in ("margin", "out", "tables_from")}
        print(format_tables(saved["results"], Args(**{**vars(args), **measured})))
        return saved["results"]
    results = []
    for shape in args.shapes:
        results.append(plan_shape(shape, args))
        print(f"{shape}: measured in {results[-1]['seconds']:.0f} s", file=sys.stderr)
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"args": vars(args), "results": results}, f, indent=2)
    print(format_tables(results, args))
    return results


if __name__ == "__main__":
    main(tyro.cli(Args))
