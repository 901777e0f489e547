"""Cost as the action space grows: scoring pairs per second and peak memory of one rollout pass, from 3 to 96 actions.

For each model and each number of admissible actions A (3: the first three canonical actions; 6: the canonical six;
more: the six, then the action-space study's useless three, then invented ones), the prompts of one rollout step
(real MixedTrainLocal prompts with a full history, listing the A actions as glam_ppo.py's prompts do) are scored by
scoring_speed.py's three schemes: (a) naive, one full forward pass per (prompt, action) pair; (b) the authors' scheme
(the encoder once per prompt, its output repeated per action, the decoder over minibatches of 3 pairs; decoder-only:
prompt + action in minibatches of 3 pairs); (c) ours, GlamAgent.score, every action of every prompt in one pass.
The three are checked to agree (to 1e-3, as in scoring_speed.py) before anything is timed. Beside them, the cost of
writing an action instead (zero_shot_eval.py --policy generate): the same prompts in one batched generate() call with a
KV cache, sampled, each reply made to be --generate-tokens tokens long (random weights would not stop at an action).

A scheme that runs one sequence per (prompt, action) pair, (a) everywhere and (b) on a decoder-only model, spends the
same time on a pair whatever the other actions are, so at more than --pair-sample actions it is run (and checked) on
the first --pair-sample actions only, with prompts still listing all A: its pairs per second and peak memory are
those of the whole pass, at a fraction of the CPU time.

Time is process CPU time on a CPU (one thread: robust to other processes sharing the machine), wall time on a GPU;
peak memory is `peak_memory`'s (torch.cuda.max_memory_allocated on a GPU; on a CPU, the peak of the live
bytes of the tensors that ops create), above what was allocated before the pass. The tiny models' word-level
tokenizer turns invented words into <unk>: the actions keep their number of tokens, which is all that speed sees.

Also the end-to-end training frames per second of glam_ppo.py (run in this process, tiny-t5) with --end-to-end
actions: --action-space restricted for 3, canonical for 6, else augmented with glam_ppo.USELESS_ACTIONS replaced by
the invented actions; read from its TensorBoard scalars after the first update, as train_speed.py does.

    OMP_NUM_THREADS=1 python benchmark/action_scaling.py --out benchmark/results/action_scaling_cpu.json \\
        --plot benchmark/action_scaling_cpu.png
    python benchmark/action_scaling.py --device cuda --num-prompts 32 --shape-prompts 32 --out action_scaling_gpu.json
    python benchmark/action_scaling.py --load benchmark/results/action_scaling_cpu.json --plot x.png   # table, plot again
"""

import glob
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import tyro
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import scoring_speed  # noqa: E402
import train_speed  # noqa: E402
import zero_shot_eval  # noqa: E402  (scoring_speed puts the checkout on the path)
from scoring_speed import glam_ppo  # noqa: E402

SCHEMES = ("naive", "authors", "ours")

# Invented action strings, after the action-space study's three (glam_ppo.USELESS_ACTIONS): plausible commands of one
# to four words, none of them a canonical action.
INVENTED_ACTIONS = (
    "sleep", "do nothing", "think",
    "jump", "wait", "look around", "turn around", "go back", "step left", "step right", "run forward", "crawl forward",
    "open", "close", "push", "pull", "look up", "look down", "crouch", "stand up", "sit down", "wave", "shout",
    "listen", "read the sign", "knock", "unlock", "lock", "search", "rest", "hide", "call for help", "put down",
    "throw", "catch", "kick", "climb", "dig", "eat", "drink", "sing", "dance", "clap", "whistle", "stretch",
    "lie down", "roll over", "spin", "hop", "skip", "back up", "slide left", "slide right", "peek", "point", "nod",
    "shrug", "smile", "count steps", "check the map", "open the door", "close the door", "pick up the key",
    "drop the key", "take the ball", "push the box", "kick the ball", "go left", "go right", "go backward",
    "move ahead", "rotate left", "rotate right", "take", "release", "switch", "grab", "let go", "press", "inspect",
    "examine", "remember", "forget", "plan", "pray", "yell", "whisper", "stop", "pause", "explore",
)
MAX_ACTIONS = 6 + len(INVENTED_ACTIONS)  # 96


@dataclass
class Args:
    models: tuple[Literal["tiny-t5", "tiny-causal", "t5-small-shape", "t5-base-shape", "t5-large-shape", "smollm2-135m-shape"], ...] = (
        "tiny-t5", "t5-small-shape", "smollm2-135m-shape",
    )
    """the models to measure (random weights; *-shape: a real model's shape)"""
    actions: tuple[int, ...] = (3, 6, 12, 24, 48, 96)
    """the numbers of admissible actions: 3, or 6 to 96"""
    num_prompts: int = 16
    """prompts of one rollout pass (envs of the rollout step) at the tiny models"""
    shape_prompts: int = 2
    """prompts of one rollout pass at the real models' shapes (CPU: few, for time)"""
    pair_sample: int = 6
    """one-sequence-per-pair schemes are run on the first this many actions (a multiple of 3: the authors' minibatch)"""
    repeats: int = 1
    """timed repetitions per scheme after the checked, memory-measured first run; the best is kept"""
    prompt_actions: Literal["offered", "canonical"] = "offered"
    """the actions the prompts list: the A offered ones (glam_ppo.py's prompts) or always the canonical six"""
    generate_tokens: int = 8
    """tokens of every reply when generation is timed (zero_shot_eval.py's --max-new-tokens default); 0: no generation"""
    fit_from: int = 12
    """the scaling exponent is fitted over the counts from this one up"""
    end_to_end: tuple[int, ...] = (6, 24, 96)
    """numbers of actions for glam_ppo.py's end-to-end training speed at tiny-t5 (empty: none)"""
    e2e_envs: int = 8
    """--num-envs of the end-to-end runs"""
    e2e_steps: int = 16
    """--num-steps of the end-to-end runs"""
    e2e_updates: int = 3
    """PPO updates per end-to-end run; the first is warm-up and not counted"""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """cpu or cuda"""
    threads: int = 1
    """torch CPU threads (also export OMP_NUM_THREADS=1 on a shared machine)"""
    out: str | None = None
    """write the rows, exponents and end-to-end speeds as JSON here"""
    plot: str | None = None
    """draw pairs/s and peak memory against the number of actions into this PNG"""
    load: str | None = None
    """measure nothing: print the tables and draw the plot from this JSON"""


def offered_actions(count: int) -> list[str]:
    """The admissible actions at `count`: the first three canonical, the canonical six, or the six and invented ones."""
    canonical = glam_ppo.action_names("canonical")
    if count == 3:
        return canonical[:3]
    if not 6 <= count <= MAX_ACTIONS:
        raise SystemExit(f"action_scaling.py: error: --actions {count}: choose 3, or 6 to {MAX_ACTIONS}")
    return canonical + list(INVENTED_ACTIONS[: count - 6])


def rollout_prompts(count: int, actions) -> list[str]:
    """scoring_speed.real_prompts's prompts (MixedTrainLocal after four random steps among the first three actions,
    so that most hold three observations and two actions), listing `actions`."""
    envs = glam_ppo.TextVecEnv("BabyAI-MixedTrainLocal-v0", count, "canonical", actions=actions)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(4):
        prompts, *_ = envs.step(rng.integers(0, 3, count))
    return prompts


def one_sequence_per_pair(scheme: str, agent) -> bool:
    return scheme == "naive" or (scheme == "authors" and not agent.is_encoder_decoder)


def run_timed(run, repeats: int, device: str) -> dict:
    """Best of `repeats` runs: process CPU time and wall time (the CPU's is the measure on a CPU, the wall's on a GPU)."""
    best = {"cpu_s": math.inf, "wall_s": math.inf}
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        cpu, wall = time.process_time(), time.perf_counter()
        run()
        if device == "cuda":
            torch.cuda.synchronize()
        best = {"cpu_s": min(best["cpu_s"], time.process_time() - cpu), "wall_s": min(best["wall_s"], time.perf_counter() - wall)}
    best["seconds"] = best["wall_s"] if device == "cuda" else best["cpu_s"]
    return best


def check_agreement(scores: dict, model: str, count: int, tolerance: float = 1e-3) -> dict:
    """scoring_speed.py's check: naive and authors against ours (on the actions each scored), to `tolerance`."""
    differences = {}
    for scheme in ("naive", "authors"):
        sampled = scores[scheme].shape[1]
        differences[scheme] = (scores[scheme] - scores["ours"][:, :sampled]).abs().max().item()
        if not differences[scheme] <= tolerance:
            raise SystemExit(f"action_scaling.py: error: {model}, {count} actions: {scheme} and ours differ by {differences[scheme]:.2e}")
    return differences


class CreatedTensorBytes(TorchDispatchMode):
    """The live bytes of the tensors created by ops while active, and their peak: the CPU allocator keeps no
    statistics. A tensor that shares its storage with an input (a view, an in-place op) is not new memory."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.sizes = {}  # storage address -> bytes, for the storages created and not yet freed

    def _freed(self, address: int):
        self.live -= self.sizes.pop(address)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in pytree.tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            address, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or address in inputs or address in self.sizes:
                continue
            self.sizes[address] = size
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._freed, address)
        return out


def peak_memory(run, device: torch.device) -> int:
    """Peak bytes allocated while `run()` runs, above what was allocated when it started."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    with CreatedTensorBytes() as counter:
        run()
    return counter.peak


@torch.no_grad()
def measure_count(name: str, llm, tokenizer, count: int, args: Args) -> list[dict]:
    """The three schemes' rows at `count` actions: each run once under the memory counter (also the warm-up and the
    scores checked), then timed."""
    device = torch.device(args.device)
    actions = offered_actions(count)
    num_prompts = args.num_prompts if name in glam_ppo.TINY_MODELS else args.shape_prompts
    prompts = rollout_prompts(num_prompts, actions if args.prompt_actions == "offered" else glam_ppo.action_names("canonical"))
    # ours: every pair of the rollout step in one pass
    agent = glam_ppo.GlamAgent(llm, tokenizer, actions, score_batch_size=num_prompts * count).to(device).eval()
    sample = glam_ppo.GlamAgent(llm, tokenizer, actions[: args.pair_sample]).to(device).eval() if count > args.pair_sample else agent
    scores, memory, scored_actions = {}, {}, {}
    for scheme in SCHEMES:
        runner = sample if one_sequence_per_pair(scheme, agent) else agent
        scored_actions[scheme] = len(runner.actions)
        memory[scheme] = peak_memory(lambda: scores.__setitem__(scheme, scoring_speed.SCHEMES[scheme](runner, prompts)), device)
    differences = check_agreement(scores, name, count)
    prompt_tokens = float(np.mean([len(tokenizer(p).input_ids) for p in prompts]))
    rows = []
    for scheme in SCHEMES:
        runner = sample if one_sequence_per_pair(scheme, agent) else agent
        timing = run_timed(lambda: scoring_speed.SCHEMES[scheme](runner, prompts), args.repeats, args.device)
        pairs = num_prompts * scored_actions[scheme]
        rows.append({
            "model": name, "actions": count, "scheme": scheme, "prompts": num_prompts, "prompt_tokens": prompt_tokens,
            "pairs_timed": pairs, "sampled": scored_actions[scheme] < count, **timing,
            "pairs_per_s": pairs / timing["seconds"], "seconds_per_prompt": timing["seconds"] * count / pairs,
            "peak_bytes": memory[scheme], "max_difference": differences.get(scheme, 0.0),
        })
    if args.generate_tokens:  # writing the action instead: --generate-tokens tokens per prompt, none of them a stop
        settings = zero_shot_eval.generation_settings(agent, args.generate_tokens, greedy=False)
        write = lambda: zero_shot_eval.generate_replies(agent, prompts, {**settings, "min_new_tokens": args.generate_tokens})  # noqa: E731
        peak = peak_memory(write, device)
        timing = run_timed(write, args.repeats, args.device)
        rows.append({
            "model": name, "actions": count, "scheme": "generate", "prompts": num_prompts, "prompt_tokens": prompt_tokens,
            "new_tokens": args.generate_tokens, **timing, "seconds_per_prompt": timing["seconds"] / num_prompts, "peak_bytes": peak,
        })
    return rows


def fit_exponent(counts, values) -> float:
    """The slope of log(value) against log(count): value grows as count ** slope."""
    return float(np.polyfit(np.log(counts), np.log(values), 1)[0])


def exponents(rows, fit_from: int) -> list[dict]:
    """Per model and scheme, how time per prompt and peak memory grow with the number of actions, fitted from
    `fit_from` up; and time's local exponent between the two largest counts, where the trend is heading."""
    found = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for scheme in SCHEMES:
            fitted = sorted((r for r in rows if r["model"] == model and r["scheme"] == scheme and r["actions"] >= fit_from), key=lambda r: r["actions"])
            if len(fitted) < 2:
                continue
            counts = [r["actions"] for r in fitted]
            found.append({
                "model": model, "scheme": scheme, "counts": counts,
                "time": fit_exponent(counts, [r["seconds_per_prompt"] for r in fitted]),
                "time_last": fit_exponent(counts[-2:], [r["seconds_per_prompt"] for r in fitted[-2:]]),
                "memory": fit_exponent(counts, [max(r["peak_bytes"], 1) for r in fitted]),
            })
    return found


def end_to_end(count: int, args: Args) -> dict:
    """glam_ppo.py's training frames per second at tiny-t5 with `count` actions, in this process: rollout and update
    speed from its TensorBoard scalars after the first update (wall clock), and frames per CPU second of the whole
    run (setup, warm-up and final checkpoint included)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    offered_actions(count)  # the range check
    frames_per_update = args.e2e_envs * args.e2e_steps
    argv = [
        "--model", "tiny-t5", "--action-space", {3: "restricted", 6: "canonical"}.get(count, "augmented"), "--num-envs", str(args.e2e_envs),
        "--num-steps", str(args.e2e_steps), "--total-timesteps", str(args.e2e_updates * frames_per_update),
        "--save-interval", "1000000", "--exp-name", f"action_scaling_{count}", *([] if args.device == "cuda" else ["--no-cuda"]),
    ]
    useless, cwd = glam_ppo.USELESS_ACTIONS, os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        try:
            glam_ppo.USELESS_ACTIONS = INVENTED_ACTIONS[: count - 6]
            os.chdir(folder)
            cpu, wall = time.process_time(), time.perf_counter()
            glam_ppo.main(glam_ppo.parse_args(argv))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            glam_ppo.USELESS_ACTIONS = useless
            os.chdir(cwd)
        (run_dir,) = glob.glob(os.path.join(folder, "runs", "*"))
        events = EventAccumulator(run_dir).Reload()
        rollout, update = train_speed.logged_speeds(events)
        # The probes' logged distribution names every action the run offered: the patch took.
        offered = [tag for tag in events.Tags()["scalars"] if tag.startswith("probes/prompt_0/")]
        if len(offered) != count:
            raise SystemExit(f"action_scaling.py: error: glam_ppo.py offered {len(offered)} actions, not {count}")
    frames = args.e2e_updates * frames_per_update
    return {
        "actions": count, "frames_per_update": frames_per_update, "updates": args.e2e_updates, "rollout": rollout, "update": update,
        "overall": 1 / (1 / rollout + 1 / update), "run_cpu_s": cpu, "run_wall_s": wall, "frames_per_cpu_s": frames / cpu,
    }


def rate(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def megabytes(value: float) -> str:
    return f"{value / 2**20:.1f}" if value < 10 * 2**20 else f"{value / 2**20:.0f}"


def format_tables(result: dict) -> str:
    rows, device = result["rows"], result["device"]
    clock = "process CPU time, 1 thread" if device == "cpu" else "wall time"
    memory = "created tensors' live bytes" if device == "cpu" else "torch.cuda.max_memory_allocated"
    lines = [
        f"pairs/s ({clock}) and peak MB of one rollout pass ({memory}) on {device}; * : run on the first {result['pair_sample']} actions",
        "| model | actions | prompts x tokens | (a) naive pairs/s | (b) authors | (c) ours | (c)/(a) | (c)/(b) | (a) naive MB | (b) authors MB | (c) ours MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model in dict.fromkeys(r["model"] for r in rows):
        for count in dict.fromkeys(r["actions"] for r in rows if r["model"] == model):
            by = {r["scheme"]: r for r in rows if r["model"] == model and r["actions"] == count}
            star = {s: "*" if by[s]["sampled"] else "" for s in SCHEMES}
            speed = [f"{rate(by[s]['pairs_per_s'])}{star[s]}" for s in SCHEMES]
            lines.append(
                f"| {model} | {count} | {by['ours']['prompts']} x {by['ours']['prompt_tokens']:.0f} | {' | '.join(speed)} | "
                f"{by['ours']['pairs_per_s'] / by['naive']['pairs_per_s']:.1f}x | {by['ours']['pairs_per_s'] / by['authors']['pairs_per_s']:.1f}x | "
                + " | ".join(f"{megabytes(by[s]['peak_bytes'])}{star[s]}" for s in SCHEMES) + " |"
            )
    fits = result["exponents"]
    if fits:
        counts = fits[0]["counts"]
        lines += [
            "",
            f"scaling exponents k (cost grows as actions ** k), fitted over {', '.join(map(str, counts))} actions",
            f"| model | scheme | time per prompt | time, {counts[-2]} to {counts[-1]} only | peak memory |",
            "|---|---|---:|---:|---:|",
        ]
        lines += [f"| {f['model']} | {SCHEME_STYLE[f['scheme']][1]} | {f['time']:.2f} | {f['time_last']:.2f} | {f['memory']:.2f} |" for f in fits]
    generated = [r for r in rows if r["scheme"] == "generate"]
    if generated:
        lines += [
            "",
            f"writing the action (one batched generate(), {generated[0]['new_tokens']} tokens per reply) beside scoring every "
            f"action packed, (c): seconds per step, one prompt ({clock})",
            "| model | actions | prompt tokens | (c) scoring s/step | generation s/step | generation / scoring | generation MB |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in generated:
            ours = next(o for o in rows if o["model"] == r["model"] and o["actions"] == r["actions"] and o["scheme"] == "ours")
            lines.append(
                f"| {r['model']} | {r['actions']} | {r['prompt_tokens']:.0f} | {ours['seconds_per_prompt']:.4f} | {r['seconds_per_prompt']:.4f} | "
                f"{r['seconds_per_prompt'] / ours['seconds_per_prompt']:.2f}x | {megabytes(r['peak_bytes'])} |"
            )
    if result["end_to_end"]:
        e2e = result["end_to_end"]
        lines += [
            "",
            f"glam_ppo.py at tiny-t5, {e2e[0]['frames_per_update']} frames per update: frames/s after the first update (wall), "
            "and frames per CPU second of the whole run",
            "| actions | rollout | update | overall | whole run, per CPU s |",
            "|---:|---:|---:|---:|---:|",
        ]
        lines += [f"| {r['actions']} | {r['rollout']:.1f} | {r['update']:.1f} | {r['overall']:.1f} | {r['frames_per_cpu_s']:.1f} |" for r in e2e]
    return "\n".join(lines)


SCHEME_STYLE = {"naive": ("tab:red", "(a) naive"), "authors": ("tab:orange", "(b) authors' scheme"), "ours": ("tab:blue", "(c) ours, packed"),
                "generate": ("tab:green", "writing the action (generate)")}


def draw(result: dict, path: str):
    """Pairs/s (top), peak memory (middle) and seconds per step of scoring and of writing the action (bottom) against
    the number of actions, one column per model, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    figure, axes = plt.subplots(3, len(models), figsize=(4.2 * len(models), 10.5), squeeze=False)
    for column, model in enumerate(models):
        for scheme in SCHEMES:
            mine = sorted((r for r in rows if r["model"] == model and r["scheme"] == scheme), key=lambda r: r["actions"])
            counts = [r["actions"] for r in mine]
            color, label = SCHEME_STYLE[scheme]
            axes[0, column].plot(counts, [r["pairs_per_s"] for r in mine], "o-", color=color, label=label)
            axes[1, column].plot(counts, [r["peak_bytes"] / 2**20 for r in mine], "o-", color=color, label=label)
        for scheme in ("ours", "generate"):
            mine = sorted((r for r in rows if r["model"] == model and r["scheme"] == scheme), key=lambda r: r["actions"])
            axes[2, column].plot([r["actions"] for r in mine], [r["seconds_per_prompt"] for r in mine], "o-", color=SCHEME_STYLE[scheme][0],
                                 label=SCHEME_STYLE[scheme][1])
        axes[0, column].set_title(f"{model} ({mine[0]['prompts']} prompts per pass)")
        for row in range(3):
            axes[row, column].set_xscale("log", base=2)
            axes[row, column].set_yscale("log")
            axes[row, column].set_xticks(counts, [str(c) for c in counts])
            axes[row, column].grid(True, which="both", alpha=0.3)
            axes[row, column].set_xlabel("admissible actions")
        axes[0, column].set_ylabel("pairs/s" + (" (per CPU second)" if result["device"] == "cpu" else ""))
        axes[1, column].set_ylabel("peak MB of one rollout pass")
        axes[2, column].set_ylabel("seconds per step (one prompt)")
    axes[0, 0].legend()
    axes[2, 0].legend()
    figure.suptitle(f"Scoring cost as the action space grows ({result['device']}, random weights)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def load_average() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime unavailable"


def measure_all(args: Args) -> dict:
    """Every model and count, the exponents and the end-to-end runs, with the load average before and after."""
    result = {"device": args.device, "args": vars(args), "pair_sample": args.pair_sample, "uptime_before": load_average(), "rows": []}
    for name in args.models:
        llm, tokenizer = scoring_speed.build_model(name)
        llm = llm.to(args.device).eval()
        for count in args.actions:
            result["rows"] += measure_count(name, llm, tokenizer, count, args)
            by = {r["scheme"]: r for r in result["rows"] if r["model"] == name and r["actions"] == count}
            print(f"{name}, {count} actions: " + ", ".join(f"{s} {rate(by[s]['pairs_per_s'])} pairs/s {megabytes(by[s]['peak_bytes'])} MB" for s in SCHEMES), flush=True)
    result["exponents"] = exponents(result["rows"], args.fit_from)
    result["end_to_end"] = []
    for count in args.end_to_end:
        result["end_to_end"].append(end_to_end(count, args))
        print(f"glam_ppo.py, tiny-t5, {count} actions: {result['end_to_end'][-1]['overall']:.1f} frames/s", flush=True)
    result["uptime_after"] = load_average()
    return result


def main(args: Args) -> dict:
    if args.load:
        with open(args.load) as f:
            result = json.load(f)
        result["exponents"] = exponents(result["rows"], result["args"]["fit_from"])  # as this version fits them
    else:
        if args.device not in ("cpu", "cuda") or (args.device == "cuda" and not torch.cuda.is_available()):
            raise SystemExit(f"action_scaling.py: error: --device {args.device}: choose cpu, or cuda where a GPU is visible")
        if args.pair_sample < 3 or args.pair_sample % 3:
            raise SystemExit("action_scaling.py: error: --pair-sample must be a positive multiple of 3 (the authors' minibatch)")
        if args.generate_tokens < 0:
            raise SystemExit("action_scaling.py: error: --generate-tokens must be at least 0 (0: generation not timed)")
        if args.e2e_updates < 2 and args.end_to_end:
            raise SystemExit("action_scaling.py: error: --e2e-updates must be at least 2 (the first is warm-up)")
        for count in (*args.actions, *args.end_to_end):
            offered_actions(count)
        threads = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        try:
            result = measure_all(args)
        finally:
            torch.set_num_threads(threads)  # for a caller in the same process (the tests)
    print(format_tables(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    if args.plot:
        draw(result, args.plot)
    return result


if __name__ == "__main__":
    if hasattr(glam_ppo, "keep_freed_memory"):
        glam_ppo.keep_freed_memory()  # as glam_ppo.py does at start
    main(tyro.cli(Args))
