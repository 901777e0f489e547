"""glam_ppo_multigpu.py under torchrun on CPU (gloo): a short run, 1 rank = 2 ranks, resume across rank counts, stops
during an update, and pass sizes that every rank agrees on."""

import glob
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import glam_ppo
import glam_ppo_multigpu
import zero_shot_eval
from script_runs import TORCHRUN, checkpoint_weights, only_run_dir, run_in_process, run_script

SMALL = [
    "--model", "tiny-t5", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "4", "--num-steps", "8",
    "--num-minibatches", "2", "--learning-rate", "3e-4",
]


def launch(cwd, ranks, *flags, check=True):
    """The script on `ranks` processes through torchrun, or as a plain process for ranks=0."""
    return run_script("glam_ppo_multigpu.py", cwd, *flags, processes=ranks, check=check)


def max_difference(a, b):
    # A checkpoint gathered from FSDP shards leaves out the aliases of tied weights (T5's embeddings), which
    # from_pretrained ties again; every tensor it holds is compared.
    common = a.keys() & b.keys()
    assert len(common) > 20 and all(name in common or "embed_tokens" in name or "lm_head" in name for name in a.keys() | b.keys())
    return max((a[name] - b[name]).abs().max().item() for name in common)


SHARDINGS = {"all-reduce": [], "fsdp": ["--fsdp"]}


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    """The script on one process (this one: no torchrun), 32 and 64 frames: {frames: run folder}. Read, never written."""
    runs = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for frames in (32, 64):
            cwd = tmp_path_factory.mktemp(f"one_rank_{frames}")
            runs[frames] = run_in_process(glam_ppo_multigpu, cwd, [*SMALL, "--total-timesteps", str(frames)], monkeypatch)
    return runs


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """sharding -> (run folder, stdout) of the script on 2 gloo ranks for 32 frames, launched once per module. Tests
    that write into the run (a resume) copy it first."""
    runs = {}

    def run(sharding):
        if sharding not in runs:
            cwd = tmp_path_factory.mktemp(f"two_ranks_{sharding}")
            result = launch(cwd, 2, *SMALL, "--total-timesteps", "32", *SHARDINGS[sharding])
            runs[sharding] = only_run_dir(cwd), result.stdout
        return runs[sharding]

    return run


@pytest.mark.parametrize("sharding", SHARDINGS)
def test_two_ranks_make_the_same_update_as_one(one_rank, two_ranks, sharding):
    two, stdout = two_ranks(sharding)
    assert "done: 32 frames on 2 process(es)" in stdout
    one = one_rank[32]
    difference = max_difference(checkpoint_weights(one), checkpoint_weights(two))
    print(f"largest parameter difference, 1 rank vs 2 ranks {sharding}: {difference:.2e}")
    assert difference < 1e-5
    assert max_difference(checkpoint_weights(one), {k: torch.zeros_like(v) for k, v in checkpoint_weights(one).items()}) > 0
    events = EventAccumulator(two)
    events.Reload()
    for tag in ("charts/SPS", "losses/approx_kl", "losses/value_loss", "charts/rollout_SPS", "probes/prompt_0/go forward"):
        assert tag in events.Tags()["scalars"], tag
    one_events = EventAccumulator(one)
    one_events.Reload()
    assert abs(events.Scalars("losses/approx_kl")[0].value - one_events.Scalars("losses/approx_kl")[0].value) < 1e-5


@pytest.mark.parametrize("sharding", SHARDINGS)
def test_resume_on_another_number_of_ranks_continues_the_run(one_rank, two_ranks, tmp_path, sharding):
    split_dir = str(tmp_path / "split" / "runs" / os.path.basename(two_ranks(sharding)[0]))
    shutil.copytree(two_ranks(sharding)[0], split_dir)
    result = launch(tmp_path / "split", 0, "--resume", split_dir, "--total-timesteps", "64")
    assert "done: 64 frames on 1 process(es)" in result.stdout
    straight_dir = one_rank[64]
    # The same envs in the same states (the prompts hold the last actions): envs and the sampling stream were handed
    # over exactly.
    assert saved_envs(split_dir).prompts() == saved_envs(straight_dir).prompts()
    # Weights agree to float noise: summing gradients in another order moves them by 1e-7 per update, which Adam
    # can enlarge where a gradient is almost zero (3e-5 here after 16 steps of lr 3e-4, also without any resume).
    assert max_difference(checkpoint_weights(straight_dir), checkpoint_weights(split_dir)) < 1e-4


def saved_envs(run_dir):
    class ScriptUnpickler(pickle.Unpickler):
        def find_class(self, module, name):  # the script pickled its classes as __main__'s
            return getattr(glam_ppo_multigpu, name) if module == "__main__" else super().find_class(module, name)

    with open(os.path.join(run_dir, "checkpoint", "envs.pkl"), "rb") as f:
        return ScriptUnpickler(f).load()


def test_checkpoint_is_evaluated_and_continued_by_the_single_gpu_scripts(two_ranks, tmp_path, monkeypatch):
    run_dir, _ = two_ranks("fsdp")  # gathered from shards
    rows = zero_shot_eval.main(zero_shot_eval.parse_args(
        ["--model", run_dir, "--env-id", "BabyAI-GoToLocalS5N2-v0", "--episodes", "2", "--output-dir", str(tmp_path / "eval")]
    ))
    assert rows[0]["episodes"] == 2
    ppo_run = run_in_process(glam_ppo, tmp_path / "ppo", ["--init-from", run_dir, *SMALL[2:], "--total-timesteps", "32"], monkeypatch)
    with pytest.raises(glam_ppo_multigpu.UsageError, match="flags that glam_ppo_multigpu.py does not know .*; continue a run of glam_ppo.py with glam_ppo.py --resume"):
        run_in_process(glam_ppo_multigpu, tmp_path / "ppo", ["--resume", ppo_run, "--total-timesteps", "64"], monkeypatch)


def test_ctrl_c_stops_every_rank_and_saves(repo, tmp_path):
    command = [*TORCHRUN, "--nproc_per_node", "2", os.path.join(repo, "glam_ppo_multigpu.py"), *SMALL, "--save-interval", "1", "--total-timesteps", "32000"]
    # A new session, so that the SIGINT reaches torchrun and both ranks at once, as a terminal's Ctrl-C does.
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not glob.glob(str(tmp_path / "runs" / "*" / "checkpoint")) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    sent = time.time()
    stdout, stderr = process.communicate(timeout=120)
    assert time.time() - sent < 30  # the rollout stops after its current step, the update after its current minibatch
    assert "saved" in stdout and "--resume" in stdout, stderr[-3000:]
    trainer = torch.load(os.path.join(only_run_dir(tmp_path), "checkpoint", "trainer.pt"), weights_only=False)
    in_update = "update" in trainer  # saved during an update: its rollout done
    assert 1 <= trainer["iteration"] < 1000 and trainer["global_step"] == 32 * (trainer["iteration"] + in_update)


# Runs glam_ppo_multigpu.py's own __main__ block under torchrun, after `patch` (which may ask RANK) has changed the script.
PATCHED_RUN = """
import json, os, signal, sys
import torch
sys.path.insert(0, {repo!r})
import glam_ppo_multigpu as script
{patch}
source = open(script.__file__).read()
main_block = source[source.index('if __name__ == "__main__":'):]
exec(compile(main_block, script.__file__, "exec"), {{**vars(script), "__name__": "__main__"}})
"""


def launch_patched(repo, cwd, patch, *flags, check=True):
    (cwd / "runner.py").write_text(PATCHED_RUN.format(repo=repo, patch=patch))
    result = subprocess.run([*TORCHRUN, "--nproc_per_node", "2", str(cwd / "runner.py"), *flags], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert not check or result.returncode == 0, result.stderr[-3000:]
    return result


# Rank 1's update passes give a non-finite log-probability.
ONE_RANK_NON_FINITE = """
if os.environ["RANK"] == "1":
    get_action_and_value = script.GlamAgent.get_action_and_value

    def non_finite_when_evaluating(self, prompts, action=None):
        action, logprob, entropy, value = get_action_and_value(self, prompts, action)
        return action, logprob * float("nan"), entropy, value

    script.GlamAgent.get_action_and_value = non_finite_when_evaluating
"""


def test_a_non_finite_loss_on_one_rank_stops_every_rank_with_one_line(repo, tmp_path):
    result = launch_patched(repo, tmp_path, ONE_RANK_NON_FINITE, *SMALL, "--total-timesteps", "32", check=False)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("glam_ppo_multigpu.py: error:")]
    assert ours == ["glam_ppo_multigpu.py: error: non-finite loss at update 1 (32 frames); no checkpoint was written. "
                    "Try a lower --learning-rate, or without --bf16."], result.stderr[-3000:]
    assert "glam_ppo_multigpu.py\", line" not in result.stderr and "Connection closed" not in result.stderr


# Rank 1 is sent SIGTERM during its third pass of the update, the first minibatch of the second epoch (one pass per
# minibatch: 8 transitions per rank).
SIGTERM_IN_AN_UPDATE = """
if os.environ["RANK"] == "1":
    ppo_loss, passes = script.ppo_loss, []

    def ppo_loss_then_sigterm(*args):
        passes.append(1)
        if len(passes) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return ppo_loss(*args)

    script.ppo_loss = ppo_loss_then_sigterm
"""


@pytest.fixture(scope="module")
def stopped_in_an_update(repo, tmp_path_factory):
    """(run folder, stdout) of two_ranks' all-reduce run, stopped by SIGTERM on rank 1 during its update. Copied before use."""
    cwd = tmp_path_factory.mktemp("stopped")
    result = launch_patched(repo, cwd, SIGTERM_IN_AN_UPDATE, *SMALL, "--total-timesteps", "32")
    return only_run_dir(cwd), result.stdout


def test_a_stop_during_an_update_saves_after_the_minibatch_and_resumes_as_the_straight_run(stopped_in_an_update, two_ranks, tmp_path):
    stopped, stdout = stopped_in_an_update
    assert "saved" in stdout and "--resume" in stdout
    trainer = torch.load(os.path.join(stopped, "checkpoint", "trainer.pt"), weights_only=False)
    # Both ranks stopped after the minibatch of the signal: the next is the second of epoch 1 (16 transitions on).
    assert (trainer["iteration"], trainer["global_step"], trainer["update"]["epoch"], trainer["update"]["start"]) == (0, 32, 1, 16)
    run_dir = str(tmp_path / "runs" / os.path.basename(stopped))
    shutil.copytree(stopped, run_dir)
    # And a newest checkpoint that does not load: every rank goes on from the one before it, which one line says once.
    shutil.copytree(os.path.join(run_dir, "checkpoint"), os.path.join(run_dir, "checkpoint.previous"))
    weights = os.path.join(run_dir, "checkpoint", "model", "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    result = launch(tmp_path, 2, "--resume", run_dir)
    assert "done: 32 frames on 2 process(es)" in result.stdout
    (line,) = [line for line in result.stderr.splitlines() if "does not load" in line]
    assert line.startswith(f"{run_dir}/checkpoint does not load (") and line.endswith(f"going on from {run_dir}/checkpoint.previous")
    # The damaged one went where saves begin, so that the good one stays as checkpoint.previous.
    assert sorted(name for name in os.listdir(run_dir) if name.startswith("checkpoint")) == ["checkpoint", "checkpoint.previous"]
    assert "update" in torch.load(os.path.join(run_dir, "checkpoint.previous", "trainer.pt"), weights_only=False)
    straight, resumed = checkpoint_weights(two_ranks("all-reduce")[0]), checkpoint_weights(run_dir)
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[name], resumed[name]) for name in straight)


def test_an_update_stopped_on_two_ranks_is_finished_on_one(stopped_in_an_update, one_rank, tmp_path, monkeypatch):
    run_dir = str(tmp_path / "runs" / os.path.basename(stopped_in_an_update[0]))
    shutil.copytree(stopped_in_an_update[0], run_dir)
    run_in_process(glam_ppo_multigpu, tmp_path, ["--resume", run_dir], monkeypatch)
    assert max_difference(checkpoint_weights(one_rank[32]), checkpoint_weights(run_dir)) < 1e-5


# On rank 1, every scoring pass of more than 1 prompt and every update pass of more than 4 transitions runs out of
# memory; every rank writes down the passes it made.
ONE_RANK_OUT_OF_MEMORY = """
score_tokens, passes = script.GlamAgent._score_tokens, []

def score_tokens_on_a_small_gpu(self, tokens, packed=None):
    rows, update = len(tokens.input_ids), torch.is_grad_enabled()
    if os.environ["RANK"] == "1" and rows > (4 if update else 1):
        raise torch.OutOfMemoryError("CUDA out of memory (raised on purpose)")
    passes.append([update, rows])
    return score_tokens(self, tokens, packed)

script.GlamAgent._score_tokens = score_tokens_on_a_small_gpu
main = script.main

def main_then_write_passes(args):
    main(args)
    with open(f"passes_{os.environ['RANK']}.json", "w") as f:
        json.dump(passes, f)

script.main = main_then_write_passes
"""


def test_ranks_agree_on_a_pass_size_halved_on_one_of_them(repo, tmp_path):
    result = launch_patched(repo, tmp_path, ONE_RANK_OUT_OF_MEMORY, *SMALL, "--total-timesteps", "32")
    assert "done: 32 frames on 2 process(es)" in result.stdout
    assert re.search(r"--score-batch-size auto: \d+ per pass ran out of memory; \d+ from now on", result.stdout)
    assert "--grad-accum-minibatch auto: 8 per pass ran out of memory; 4 from now on" in result.stdout
    passes = [json.loads((tmp_path / f"passes_{rank}.json").read_text()) for rank in (0, 1)]
    scoring, updates = ([[rows for update, rows in ranks_passes if update == kind] for ranks_passes in passes] for kind in (False, True))
    # Rank 0 made its first step's and its first minibatch's passes whole, before the ranks next met; then the halves.
    assert scoring[0][0] == 2 and set(scoring[0][1:]) == set(scoring[1]) == {1}
    assert updates[0] == [8] + [4] * 14 and updates[1] == [4] * 16


def test_under_fsdp_auto_follows_the_rule_and_never_halves():
    size = glam_ppo_multigpu.CollectivePassSize(glam_ppo_multigpu.PassSize("auto", "--grad-accum-minibatch", lambda tokens: tokens << 20))
    made, cuda = [], torch.device("cuda")  # no pass runs: the rule is what a rank on a GPU follows

    def out_of_memory(most):
        made.append(most)
        raise torch.OutOfMemoryError("CUDA out of memory (raised on purpose)")

    assert size.run(lambda most: most, 64, lambda: 512, cuda) == glam_ppo_multigpu.CPU_PASS_BYTES // (512 << 20)
    with pytest.raises(torch.OutOfMemoryError):
        size.run(out_of_memory, 64, lambda: 512, cuda)
    assert made == [4] and size.fits is None
