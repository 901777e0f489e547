"""Pass sizes (--score-batch-size, --grad-accum-minibatch, --grad-accum-batch): `auto` halves a pass that runs out of
memory and keeps the size that fits, a number fixes the pass, and on CPU `auto` follows the rule the README states."""

import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig

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
    return g.GlamAgent(llm, tokenizer, envs.actions, score_batch_size="auto").eval(), short + long


def out_of_memory_above(most: int, calls: list):
    """A stand-in for a pass that runs out of memory with more than `most` prompts; `calls` gets every pass's size."""

    def run(original):
        def score_tokens(tokens, *args, **kwargs):
            calls.append(len(tokens.input_ids))
            if len(tokens.input_ids) > most:
                raise torch.OutOfMemoryError("CUDA out of memory (raised on purpose)")
            return original(tokens, *args, **kwargs)

        return score_tokens

    return run


def test_auto_scoring_halves_a_pass_that_runs_out_of_memory_and_keeps_the_size(monkeypatch):
    agent, prompts = agent_and_prompts()
    with torch.no_grad():
        expected = agent.score(prompts)
        calls = []
        monkeypatch.setattr(agent, "_score_tokens", out_of_memory_above(5, calls)(agent._score_tokens))
        torch.testing.assert_close(agent.score(prompts), expected, rtol=0, atol=1e-5)
        assert calls == [16, 8, 4, 4, 4, 4] and agent.score_size.fits == 4  # 16 fails, 8 fails, four passes of 4
        calls.clear()
        agent.score(prompts)
        assert calls == [4, 4, 4, 4]  # the size that fits is kept for the rest of the run


def test_a_fixed_pass_size_that_runs_out_of_memory_is_one_line_naming_the_flag(monkeypatch):
    agent, prompts = agent_and_prompts()
    agent.score_size.setting = 48  # pairs: 8 prompts of 6 actions
    monkeypatch.setattr(agent, "_score_tokens", out_of_memory_above(5, [])(agent._score_tokens))
    with torch.no_grad(), pytest.raises(g.UsageError, match=r"^--score-batch-size 48: a pass of 48 runs out of memory; give a smaller number"):
        agent.score(prompts)


TRAINING = ["--model", "tiny-t5", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "4", "--num-steps", "4", "--num-minibatches", "1",
            "--update-epochs", "2", "--total-timesteps", "32", "--learning-rate", "1e-3", "--score-batch-size", "1024"]


def test_auto_update_passes_halve_on_out_of_memory_and_make_the_update_of_that_fixed_size(tmp_path, monkeypatch, capsys):
    """16 transitions a minibatch, out of memory above 5: passes of 16 and 8 fail, then 4 fit; the run's weights are those
    of a run with --grad-accum-minibatch 4."""
    fixed = run_in_process(g, tmp_path / "fixed", [*TRAINING, "--grad-accum-minibatch", "4"], monkeypatch)
    calls, original = [], g.GlamAgent._score_tokens
    monkeypatch.setattr(g.GlamAgent, "_score_tokens", lambda self, tokens, *a, **k: out_of_memory_above(5, calls)(lambda *a, **k: original(self, *a, **k))(tokens, *a, **k))
    halved = run_in_process(g, tmp_path / "halved", [*TRAINING, "--grad-accum-minibatch", "auto"], monkeypatch)
    assert "--grad-accum-minibatch auto: 16 per pass ran out of memory; 8 from now on" in capsys.readouterr().out
    weights, expected = load_file(f"{halved}/checkpoint/model/model.safetensors"), load_file(f"{fixed}/checkpoint/model/model.safetensors")
    assert all(torch.equal(weights[name], expected[name]) for name in expected)


def smollm2_shaped(**sizes):
    return SimpleNamespace(config=LlamaConfig(hidden_size=576, num_hidden_layers=30, vocab_size=49152, **sizes))


def test_the_cpu_rule_sizes_passes_from_the_model_and_the_longest_prompt():
    """README: an update pass holds 100 bytes per token per hidden unit per layer, up to 2 GiB; on CUDA all in one."""
    update = g.PassSize("auto", "--grad-accum-minibatch", g.update_bytes_per_token(smollm2_shaped()))
    assert update.most(64, lambda: 300, CPU) == 2**31 // (100 * 576 * 30 * 300) == 4  # SmolLM2-135M, 300-token prompts
    assert update.most(64, lambda: 600, CPU) == 2 and update.most(64, lambda: 10**6, CPU) == 1
    assert update.most(64, lambda: 300, torch.device("cuda")) == 64
    tiny, _ = g.load_llm("tiny-t5")
    assert g.PassSize("auto", "--grad-accum-minibatch", g.update_bytes_per_token(tiny)).most(64, lambda: 400, CPU) == 64
    assert g.PassSize(8, "--grad-accum-minibatch", None).most(64, None, CPU) == 8
    assert g.PassSize(0, "--grad-accum-minibatch", None).most(64, None, CPU) == 64


def test_an_update_pass_scores_its_prompts_in_one_pass_whatever_the_scoring_size(monkeypatch):
    agent, prompts = agent_and_prompts()
    agent.score_size.setting = 6  # one prompt per scoring pass
    calls = []
    monkeypatch.setattr(agent, "_score_tokens", out_of_memory_above(100, calls)(agent._score_tokens))
    agent.get_action_and_value(prompts, torch.zeros(len(prompts), dtype=torch.long))
    with torch.no_grad():
        agent.score(prompts)
    assert calls == [16] + [1] * 16


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
