"""On a GPU: the scorer against naive scoring on the device (fp32 and bf16), the memory that GLAM's passes really
take at flan-t5-large's shape next to what benchmark/memory.py predicts for them, and the pass size that
--grad-accum-minibatch auto settles on there (halving on out-of-memory) with the peak of such a pass. benchmark/gpu.sh runs it.

    python benchmark/gpu_check.py --out-dir benchmark/gpu                 # writes gpu_check.json and gpu_check.md
    python benchmark/gpu_check.py --device cpu --memory-shape flan-t5-small --num-prompts 4   # the same checks on a CPU

Memory: torch.cuda.max_memory_allocated during one pass less what was allocated before it (the weights) and less the
gradients (the planner counts them with the weights), per prompt for the rollout pass (32 prompts, no gradients) and per transition for the update pass
(8 transitions, forward and backward), with and without --gradient-checkpointing, fp32 and bf16 autocast. On a CPU
the same numbers come from MemTracker on real tensors. Random weights of the real shapes: no download.
"""

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Literal

import torch
import tyro

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import memory  # noqa: E402
import scoring_speed  # noqa: E402

glam_ppo = memory.glam_ppo


@dataclass
class Args:
    device: Literal["cuda", "cpu"] = "cuda"
    """where to run: cuda, or cpu for a dry run of the same checks"""
    equivalence_models: tuple[Literal[("tiny-t5", "tiny-causal", *scoring_speed.SHAPES)], ...] = ("tiny-t5", "tiny-causal", "t5-small-shape")
    """the models whose scores are compared with naive scoring (names of benchmark/scoring_speed.py)"""
    memory_shape: memory.ShapeName = "flan-t5-large"
    """the model shape whose passes are measured (a name of benchmark/memory.py)"""
    num_prompts: int = 32
    """prompts in the rollout pass (the paper's 32 envs)"""
    micro: int = 8
    """transitions in the update pass (as benchmark/memory.py measures it)"""
    planner_json: str = os.path.join(HERE, "memory.json")
    """benchmark/memory.py's results to compare with; the shape is planned afresh if they lack it"""
    out_dir: str = os.path.join(HERE, "gpu")
    """where gpu_check.json and gpu_check.md are written"""
    minibatch: int = 64
    """the minibatch that --grad-accum-minibatch auto splits (the paper's 64)"""
    only: tuple[Literal["equivalence", "memory", "auto"], ...] = ("equivalence", "memory", "auto")
    """the checks to run now (gpu.sh runs the equivalence first, the rest last); results merge into gpu_check.json"""
    auto_budget_gb: float | None = None
    """CUDA: the memory this process may take while auto finds its pass size (default: the whole GPU)"""


@torch.no_grad()
def equivalence(device: str, models: tuple[str, ...]) -> list[dict]:
    """Largest difference between GlamAgent.score and one full forward pass per pair, fp32 and under bf16 autocast."""
    rows = []
    prompts = scoring_speed.real_prompts(3)
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 comparison in full precision
    for name in models:
        torch.manual_seed(0)
        llm, tokenizer = scoring_speed.build_model(name)
        agent = glam_ppo.GlamAgent(llm.eval(), tokenizer, glam_ppo.action_names("augmented")).to(device).eval()
        reference = scoring_speed.naive_scores(agent, prompts)
        row = {"model": name, "fp32": (agent.score(prompts).cpu() - reference).abs().max().item()}
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            row["bf16"] = (agent.score(prompts).float().cpu() - reference).abs().max().item()
        rows.append(row)
        if row["fp32"] > 1e-3:
            raise SystemExit(f"gpu_check.py: error: {name}: packed scoring differs from naive scoring by {row['fp32']:.2e} in fp32")
    return rows


def measured_peak(agent, prompts, update: bool, bf16: bool, device: str) -> int:
    """Bytes that one pass allocates at its peak beyond what was allocated before it."""
    if device != "cuda":
        return memory.activations(memory.peak_memory(agent, prompts, update=update, bf16=bf16))
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    memory.run_pass(agent, prompts, update=update, bf16=bf16, device_type="cuda")
    torch.cuda.synchronize()
    # The planner counts gradients with the weights, not with the activations.
    gradients = sum(4 * p.numel() for p in agent.parameters() if p.requires_grad) if update else 0
    return torch.cuda.max_memory_allocated() - before - gradients


def memory_rows(args: Args) -> list[dict]:
    prompts = memory.real_prompts(args.num_prompts)
    rows = []
    for update, checkpointing in ((False, False), (True, False), (True, True)):
        torch.manual_seed(0)
        llm, tokenizer = memory.build_model(args.memory_shape)
        if checkpointing:
            glam_ppo.checkpoint_activations(llm)
        agent = glam_ppo.GlamAgent(llm, tokenizer, glam_ppo.action_names("canonical")).to(args.device).eval()
        for precision in ("fp32", "bf16"):
            batch = prompts[: args.micro] if update else prompts
            peak = measured_peak(agent, batch, update, precision == "bf16", args.device)
            kind = "rollout" if not update else f"update_{precision}{'_ckpt' if checkpointing else ''}"
            name = f"rollout_{precision}" if not update else kind
            rows.append({"pass": name, "gb_per_unit": peak / len(batch) / 1e9})
        del agent, llm
        if args.device == "cuda":
            torch.cuda.empty_cache()
    return rows


def auto_row(args: Args) -> dict:
    """The pass size that --grad-accum-minibatch auto settles on at the shape for a minibatch of copies of the longest
    prompt (the worst case): on CUDA by halving on out-of-memory errors (--auto-budget-gb caps what this process may
    take, as a smaller GPU would), on a CPU by the rule; and the peak of the last pass, against the budget."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    llm, tokenizer = memory.build_model(args.memory_shape)
    agent = glam_ppo.GlamAgent(llm, tokenizer, glam_ppo.action_names("canonical")).to(device).eval()
    budget = (torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else glam_ppo.CPU_PASS_BYTES) / 1e9
    if args.auto_budget_gb is not None and device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(args.auto_budget_gb * 1e9 / torch.cuda.get_device_properties(device).total_memory)
        budget = args.auto_budget_gb
    prompts = memory.real_prompts(args.num_prompts)
    longest = max(prompts, key=lambda prompt: len(tokenizer(prompt).input_ids))
    batch, tried = [longest] * args.minibatch, []

    def minibatch(most):
        tried.append(most)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for part in glam_ppo.even_split(len(batch), most):
            memory.run_pass(agent, batch[part], update=True, bf16=False, device_type=args.device)
        return torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None  # (a CPU dry run measures no peak)

    size = glam_ppo.PassSize("auto", "--grad-accum-minibatch", glam_ppo.update_bytes_per_token(llm))
    peak = size.run(minibatch, len(batch), lambda: len(tokenizer(longest).input_ids), device)
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(1.0)
    return {"budget_gb": budget, "tried": tried, "pass_size": tried[-1], "passes": -(-args.minibatch // tried[-1]), "peak_gb": peak}


def planned(args: Args) -> dict:
    if os.path.exists(args.planner_json):
        with open(args.planner_json) as f:
            for result in json.load(f)["results"]:
                if result["shape"] == args.memory_shape:
                    return result
    return memory.plan_shape(args.memory_shape, memory.Args(shapes=[args.memory_shape], num_envs=args.num_prompts, micro=args.micro))


def main(args: Args) -> dict:
    if args.num_prompts < 1 or args.micro < 1 or args.minibatch < 1:
        sys.exit("gpu_check.py: error: --num-prompts, --micro and --minibatch must be at least 1")
    if args.auto_budget_gb is not None and not 0 < args.auto_budget_gb < float("inf"):
        sys.exit(f"gpu_check.py: error: --auto-budget-gb {args.auto_budget_gb} must be a positive number")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check.py: error: no CUDA GPU here (torch.cuda.is_available() is False); use --device cpu for a dry run")
    start = time.time()
    path = os.path.join(args.out_dir, "gpu_check.json")
    report = {}
    if os.path.exists(path) and set(args.only) != {"equivalence", "memory", "auto"}:  # the checks of an earlier call stay
        with open(path) as f:
            report = json.load(f)
    report.update({"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "shape": args.memory_shape})
    if "equivalence" in args.only:
        report["equivalence"] = equivalence(args.device, args.equivalence_models)
    if "memory" in args.only:
        plan = planned(args)
        report["memory"] = [
            {**row, "planned_gb_per_unit": plan[f"{row['pass']}_gb_per_{'prompt' if row['pass'].startswith('rollout') else 'transition'}"]}
            for row in memory_rows(args)
        ]
    if "auto" in args.only:
        report["auto"] = auto_row(args)
    report["seconds"] = report.get("seconds", 0) + time.time() - start
    lines = [f"# GPU check on {report['device']}", ""]
    if "equivalence" in report:
        lines += [
            "Largest |score difference| against one full forward pass per (prompt, action) pair (nats):", "",
            "| model | fp32 (TF32 off) | bf16 autocast |", "|---|---:|---:|",
            *[f"| {row['model']} | {row['fp32']:.1e} | {row['bf16']:.1e} |" for row in report["equivalence"]], "",
        ]
    if "memory" in report:
        lines += [
            f"Memory of one pass at {args.memory_shape}'s shape, GB per prompt (rollout, {args.num_prompts} prompts) or per "
            f"transition (update, {args.micro} transitions): measured, and predicted by benchmark/memory.py:", "",
            "| pass | measured | predicted | predicted / measured |", "|---|---:|---:|---:|",
            *[f"| {row['pass']} | {row['gb_per_unit']:.3f} | {row['planned_gb_per_unit']:.3f} | "
              f"{row['planned_gb_per_unit'] / row['gb_per_unit']:.2f} |" for row in report["memory"]], "",
        ]
    if "auto" in report:
        auto = report["auto"]
        lines.append(
            f"--grad-accum-minibatch auto at {args.memory_shape}'s shape: a minibatch of {args.minibatch} copies of the longest prompt "
            f"tried in passes of {', '.join(map(str, auto['tried']))}, kept {auto['passes']} passes of {auto['pass_size']}"
            + (f", which peaked at {auto['peak_gb']:.2f} GB of {auto['budget_gb']:.2f} GB" if auto["peak_gb"] is not None else "") + "."
        )
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "gpu_check.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out_dir, "gpu_check.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main(tyro.cli(Args))
