"""`auto` pass sizes (--score-batch-size, --grad-accum-minibatch, --grad-accum-batch): the CPU's counter of tensor bytes
agrees with torch's MemTracker, and a pass of the size that auto picks does not exceed the memory it was given."""

import importlib
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.distributed._tools.mem_tracker import MemTracker

import glam_ppo as g
from script_runs import run_in_process

CPU = torch.device("cpu")


def agent_and_prompts(model: str = "tiny-t5"):
    """A tiny agent and 16 MixedTrainLocal prompts: the first steps' (short) and later ones (with history, longer)."""
    torch.manual_seed(0)
    llm, tokenizer = g.load_llm(model)
    envs = g.TextVecEnv("BabyAI-MixedTrainLocal-v0", 8, "canonical")
    short = envs.reset(seed=0)
    for step in range(3):
        long, *_ = envs.step([(step + k) % 3 for k in range(8)])
    return g.GlamAgent(llm, tokenizer, envs.actions).eval(), short + long


def update_pass(agent):
    def run(prompts):
        _, logprob, entropy, value = agent.get_action_and_value(prompts, torch.zeros(len(prompts), dtype=torch.long))
        (logprob.sum() + entropy.sum() + value.sum()).backward()
        agent.zero_grad(set_to_none=True)

    return run


def scoring_pass(agent):
    def run(prompts):
        with torch.no_grad():
            agent.score_pass(prompts)

    return run


def tracked_peak(agent, run, prompts) -> int:
    """The pass's peak above the weights, as torch's own MemTracker sees it: a measurement independent of ours."""
    tracker = MemTracker()
    tracker.track_external(agent)
    with tracker:
        run(prompts)
    weights = sum(t.numel() * t.element_size() for t in [*agent.parameters(), *agent.buffers()])
    return tracker.get_tracker_snapshot("peak")[CPU]["Total"] - weights


def longest(agent, prompts) -> str:
    return max(prompts, key=lambda prompt: len(agent.tokenizer(prompt).input_ids))


@pytest.mark.parametrize("model", ["tiny-t5", "tiny-causal"])
@pytest.mark.parametrize("kind", [update_pass, scoring_pass], ids=["update", "scoring"])
def test_cpu_counter_agrees_with_mem_tracker(model, kind):
    agent, prompts = agent_and_prompts(model)
    run = kind(agent)
    ours = g.peak_memory(lambda: run(prompts[8:]), CPU)
    assert ours == pytest.approx(tracked_peak(agent, run, prompts[8:]), rel=0.02)


@pytest.mark.parametrize("model", ["tiny-t5", "tiny-causal"])
@pytest.mark.parametrize("budget", [40e6, 80e6])
def test_auto_pass_fits_the_budget_in_as_few_passes_as_possible(model, budget):
    agent, prompts = agent_and_prompts(model)
    run, total = update_pass(agent), 64
    size = g.PassSizer(run, agent.prompt_lengths, lambda: budget, "--grad-accum-minibatch", "transition")(prompts, CPU, total)
    passes = math.ceil(total / size)
    assert 1 < passes < total  # the budget splits the minibatch, so the test says something
    worst = longest(agent, prompts)
    assert tracked_peak(agent, run, [worst] * size) <= budget
    # One pass fewer would not fit.
    assert tracked_peak(agent, run, [worst] * math.ceil(total / (passes - 1))) > budget
    # Passes of real, mixed prompts hold no more than the worst case.
    for start in range(0, len(prompts), size):
        assert tracked_peak(agent, run, prompts[start : start + size]) <= budget


def test_a_longer_prompt_is_measured_again():
    agent, prompts = agent_and_prompts()
    run, budget = update_pass(agent), 60e6
    sizer = g.PassSizer(run, agent.prompt_lengths, lambda: budget, "--grad-accum-minibatch", "transition")
    size_short = sizer(prompts[:8], CPU, total=64)
    size_long = sizer(prompts[8:], CPU, total=64)
    assert size_long < size_short
    assert tracked_peak(agent, run, [longest(agent, prompts)] * size_long) <= budget


def test_too_small_a_budget_is_one_clear_error():
    agent, prompts = agent_and_prompts()
    sizer = g.PassSizer(update_pass(agent), agent.prompt_lengths, lambda: 1e5, "--grad-accum-minibatch", "transition")
    with pytest.raises(g.UsageError, match=r"--grad-accum-minibatch auto: one transition of \d+ tokens needs .*--gradient-checkpointing"):
        sizer(prompts, CPU, total=64)


def test_probes_leave_the_random_state_as_it_was():
    agent, prompts = agent_and_prompts()
    agent.train()  # dropout draws random numbers in every pass
    sizer = g.PassSizer(update_pass(agent), agent.prompt_lengths, lambda: 60e6, "--grad-accum-minibatch", "transition")
    before = torch.get_rng_state()
    sizer(prompts, CPU, total=64)
    assert torch.equal(torch.get_rng_state(), before)


def test_auto_scoring_splits_a_large_batch_and_scores_alike():
    agent, prompts = agent_and_prompts()
    with torch.no_grad():
        expected = agent.score_pass(prompts)[1]
        agent.score_batch_size = "auto"
        agent.score_sizer.budget = lambda: 25e6  # a few prompts per pass
        scores = agent.score(prompts)
    assert 1 < agent.score_sizer.fits < len(prompts)
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-5)


def test_training_memory_to_come_is_adams_two_moments_and_the_gradients_until_they_exist():
    agent, prompts = agent_and_prompts()
    optimizer = torch.optim.Adam(agent.parameters())
    parameter_bytes = 4 * sum(p.numel() for p in agent.parameters())
    assert g.training_memory_to_come(optimizer) == 2 * parameter_bytes
    assert g.training_memory_to_come(optimizer, gradients=True) == 3 * parameter_bytes
    update_pass(agent)(prompts[:2])
    agent(prompts[:2])[1].sum().backward()
    optimizer.step()
    assert g.training_memory_to_come(optimizer) == 0 and g.training_memory_to_come(optimizer, gradients=True) == 0


@pytest.mark.parametrize("script", ["glam_ppo", "bc_finetune"])
def test_scoring_budget_leaves_room_for_the_training_state_from_the_first_rollout(script, tmp_path, monkeypatch):
    """The first scoring pass comes before any gradient or Adam moment exists: its budget must count them already."""
    module = importlib.import_module(script)
    monkeypatch.setattr(module, "free_memory", lambda device: 10e9)
    budgets, call = [], module.PassSizer.__call__

    def recording_call(self, *args, **kwargs):
        budgets.append((self.flag, self.budget()))
        return call(self, *args, **kwargs)

    monkeypatch.setattr(module.PassSizer, "__call__", recording_call)
    flags = ["--model", "tiny-t5", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "2"]
    flags += ["--num-steps", "2", "--total-timesteps", "4"] if script == "glam_ppo" else ["--num-transitions", "40", "--eval-episodes", "1"]
    run_in_process(module, tmp_path, flags, monkeypatch)
    llm, _ = module.load_llm("tiny-t5")
    trained = sum(p.numel() for p in llm.parameters()) + (sum(p.numel() for p in module.glam_head(64, 1).parameters()) if script == "glam_ppo" else 0)
    first_scoring_budget = next(budget for flag, budget in budgets if flag == "--score-batch-size")
    assert first_scoring_budget == pytest.approx(module.AUTO_MEMORY_MARGIN * 10e9 - 3 * 4 * trained)


def test_scoring_tokenizes_each_prompt_once_however_it_is_chunked(monkeypatch):
    agent, prompts = agent_and_prompts()
    agent.score_batch_size = "auto"
    agent.score_sizer.budget = lambda: 25e6  # a few prompts per pass
    with torch.no_grad():
        agent.score(prompts)  # measures the passes' memory first
        calls, tokenize = [], type(agent.tokenizer).__call__
        monkeypatch.setattr(type(agent.tokenizer), "__call__", lambda self, texts, **kwargs: calls.append(len(texts)) or tokenize(self, texts, **kwargs))
        chunked = agent.score(prompts)
        assert calls == [len(prompts)] and 1 < agent.score_sizer.fits < len(prompts)
        monkeypatch.setattr(type(agent.tokenizer), "__call__", tokenize)
        torch.testing.assert_close(chunked, agent.score_pass(prompts)[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("total, most", [(64, 7), (16, 5), (64, 64), (7, 1), (10, 3), (1, 4)])
def test_passes_are_as_few_as_fit_and_differ_by_at_most_one(total, most):
    """64 transitions where 7 fit: ten passes of 6 or 7, not nine of 7 and one of 1 (a statistic of one transition)."""
    passes = g.even_split(total, most)
    sizes = [len(range(total)[part]) for part in passes]
    assert sum(sizes) == total and [part.start for part in passes] == [0, *np.cumsum(sizes)[:-1]]
    assert len(passes) == math.ceil(total / most) and max(sizes) <= most and max(sizes) - min(sizes) <= 1


FRESH_BUFFER_FAULTS = """
import ctypes, resource, sys
sys.path.insert(0, {repo!r})
import glam_ppo
glam_ppo.keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p


def page_faults_of_a_fresh_buffer(size=200 << 20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = libc.malloc(size)
    ctypes.memset(buffer, 1, size)  # written, as a new tensor is
    libc.free(ctypes.c_void_p(buffer))
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


page_faults_of_a_fresh_buffer()
print(page_faults_of_a_fresh_buffer())
"""


@pytest.mark.parametrize("environment", [{}, {"GLIBC_TUNABLES": ""}], ids=["scripts-setting", "users-own"])
def test_a_freed_buffer_is_kept_for_the_next_one_unless_the_user_set_malloc(environment, repo):
    """glibc hands a freed 200 MB buffer back to the kernel and faults it in again, page by page, at the next one."""
    env = {name: value for name, value in os.environ.items() if name != "GLIBC_TUNABLES" and not name.startswith("MALLOC_")}
    result = subprocess.run([sys.executable, "-c", FRESH_BUFFER_FAULTS.format(repo=repo)], capture_output=True, text=True,
                            env={**env, **environment}, check=True)
    faults = int(result.stdout)
    kept = not environment and not torch.cuda.is_available()  # the scripts set malloc for CPU runs only
    assert faults < 2_000 if kept else faults > 20_000, faults
