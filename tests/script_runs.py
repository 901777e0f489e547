"""Running the top-level scripts as users do, and reading what their runs wrote (shared by the script tests)."""

import csv
import glob
import json
import os
import signal
import subprocess
import sys

import torch
from safetensors.torch import load_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def run_script(script, cwd, *flags, processes=0, check=True, env=None):
    """`python <script> flags` in cwd, or under torchrun with that many processes; the run must succeed if check."""
    launcher = [sys.executable] if processes == 0 else [*TORCHRUN, "--nproc_per_node", str(processes)]
    os.makedirs(cwd, exist_ok=True)
    result = subprocess.run(
        [*launcher, os.path.join(REPO, script), *flags], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


# Runs a script's `if __name__ == "__main__":` block once per command line, in one process, each in a folder of its own
# (case0, case1, ...); writes [exit code, stderr, what the folder holds afterwards] per command line to results.json.
MAIN_BLOCKS = """
import contextlib, io, json, os, runpy, sys, traceback
script, argvs, top = sys.argv[1], json.loads(sys.argv[2]), os.getcwd()
results = []
for case, argv in enumerate(argvs):
    folder = os.path.join(top, f"case{case}")
    os.makedirs(folder)
    os.chdir(folder)
    sys.argv = [script, *argv]
    stderr, code = io.StringIO(), 0
    with contextlib.redirect_stderr(stderr):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exit:  # as the interpreter ends: an int is the code; a message is printed, code 1
            if isinstance(exit.code, int) or exit.code is None:
                code = exit.code or 0
            else:
                print(exit.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = -1
    results.append([code, stderr.getvalue(), sorted(os.listdir(folder))])
    os.chdir(top)
with open("results.json", "w") as f:
    json.dump(results, f)
"""


def run_main_blocks(script, cwd, argvs, env=None):
    """[exit code, stderr, files and folders it left] of `python <script> argv` for each argv, all run in one process
    (with environment env) through the script's own __main__ block: one launch instead of one per command line."""
    os.makedirs(cwd, exist_ok=True)
    runner = os.path.join(cwd, "main_blocks.py")
    with open(runner, "w") as f:
        f.write(MAIN_BLOCKS)
    result = subprocess.run(
        [sys.executable, runner, os.path.join(REPO, script), json.dumps(argvs)], cwd=cwd, capture_output=True, text=True, timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(cwd, "results.json")) as f:
        return json.load(f)


def main_in_process(script, cwd, flags, monkeypatch):
    """What script.main returns on flags, run in cwd, with the signal handlers it installs put back afterwards."""
    os.makedirs(cwd, exist_ok=True)
    monkeypatch.chdir(cwd)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        return script.main(script.parse_args(flags))
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)


def run_in_process(script, cwd, flags, monkeypatch):
    """script.main on flags, in cwd (as main_in_process): the run folder it made."""
    main_in_process(script, cwd, flags, monkeypatch)
    return only_run_dir(cwd)


def only_run_dir(cwd):
    (run_dir,) = glob.glob(os.path.join(cwd, "runs", "*"))
    return run_dir


def checkpoint_weights(run_dir):
    """The model's tensors and the value head's, from runs/<run>/checkpoint."""
    state = load_file(os.path.join(run_dir, "checkpoint", "model", "model.safetensors"))
    value_head = torch.load(os.path.join(run_dir, "checkpoint", "heads.pt"))["value_head"]
    state.update({f"value_head.{name}": value for name, value in value_head.items()})
    return state


def steps_write_infinity(monkeypatch, optimizer_class):
    """What an overflowing update would do: every step of `optimizer_class` leaves an infinite weight."""
    step = optimizer_class.step

    def step_to_infinity(self, *args, **kwargs):
        result = step(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("inf"))
        return result

    monkeypatch.setattr(optimizer_class, "step", step_to_infinity)


def baseline_weights(run_dir):
    """A baselines/ run's network weights, from runs/<run>/checkpoint/model.pt."""
    return torch.load(os.path.join(run_dir, "checkpoint", "model.pt"))


def episode_rows(run_dir):
    """A baselines/ run's episodes.csv, header first."""
    with open(os.path.join(run_dir, "episodes.csv")) as f:
        return list(csv.reader(f))
