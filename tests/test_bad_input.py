"""Every bad input, in every script, ends in one line on stderr that names the flag: no traceback, no file written.

The table holds every numeric flag of every script at 0, -1, nan, inf and past its upper bound, wherever that value
is outside the flag's range, plus the other bad inputs that users have met. Each script runs its whole table in one
process, through its own `if __name__ == "__main__":` block, so that the exit code and stderr are what a user sees.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys
import typing

import pytest

import bc_finetune
import glam_ppo
import glam_ppo_multigpu
import zero_shot_eval
from script_runs import REPO, TORCHRUN, run_script

SCRIPTS = {"glam_ppo.py": glam_ppo, "glam_ppo_multigpu.py": glam_ppo_multigpu, "bc_finetune.py": bc_finetune, "zero_shot_eval.py": zero_shot_eval}
BASE = {name: ["--model", "tiny-t5"] for name in SCRIPTS}
BASE["zero_shot_eval.py"] += ["--suite", "none", "--probes", "no-change"]

# Runs each case of a table through the script's __main__ block; writes [exit code, stderr, files written] per case to
# results_<rank>.json (rank 0 without torchrun). The ranks of a torchrun share the folder, so that each lists it only
# once every rank has finished the case, and none starts the next before every rank has listed it. They meet through
# marker files in the folder argv[3]. (A run folder made before a model fails to load stays, empty.)
RUNNER = """
import contextlib, io, json, os, runpy, sys, time, traceback, warnings
warnings.simplefilter("ignore")
script, cases, meeting = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
rank, ranks = os.environ.get("RANK", "0"), int(os.environ.get("WORLD_SIZE", "1"))


def all_ranks_reach(point):
    open(os.path.join(meeting, f"{point}.{rank}"), "w").close()
    deadline = time.time() + 300
    while sum(name.startswith(f"{point}.") for name in os.listdir(meeting)) < ranks and time.time() < deadline:
        time.sleep(0.01)


results = []
for case, argv in enumerate(cases):
    sys.argv = [script, *argv]
    stderr, code = io.StringIO(), 0
    with contextlib.redirect_stderr(stderr):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (print(exit.code, file=sys.stderr) or 1)
        except BaseException:
            traceback.print_exc()
            code = -1
    all_ranks_reach(f"{case}-done")
    files = [os.path.join(folder, name) for folder, _, names in os.walk(".") for name in names]
    results.append([code, stderr.getvalue(), sorted(path for path in files if not os.path.basename(path).startswith("results_"))])
    all_ranks_reach(f"{case}-listed")
with open(f"results_{os.environ.get('RANK', '0')}.json", "w") as f:
    json.dump(results, f)
"""


CANNOT_CHAT = "--prompt-format chat: an encoder-decoder model reads the prompt in its encoder, not in a chat; drop the flag"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def out_of_range(interval: str, is_int: bool) -> list[str]:
    """The values among 0, -1, nan, inf and just past the upper bound that the interval excludes."""
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    candidates = [0, -1] + ([] if is_int else [math.nan, math.inf]) + ([] if high == math.inf else [high + 1 if is_int else high + 0.5])
    outside = []
    for value in candidates:
        above = low < value if interval[0] == "(" else low <= value
        below = value < high if interval[-1] == ")" else value <= high
        if not (math.isfinite(value) and above and below):
            outside.append(str(int(value)) if is_int else str(value))
    return outside


def numeric_fields(module) -> dict[str, bool]:
    """The user-facing numeric flags of a script's Args: name -> is an int."""
    fields = {}
    for field in dataclasses.fields(module.Args):
        hint = typing.get_type_hints(module.Args, include_extras=True)[field.name]
        if "Suppress" in str(hint):
            continue
        types = set(typing.get_args(hint)) | {hint}
        if int in types or float in types:
            fields[field.name] = float not in types
    return fields


def table(script: str) -> list[tuple[list[str], str]]:
    """(argv, what the one line must contain) for every bad input of the script."""
    module = SCRIPTS[script]
    cases = []
    for name, interval in module.ARG_RANGES.items():
        for value in out_of_range(interval, numeric_fields(module)[name]):
            cases.append(([flag(name), value], f"{flag(name)} {value}"))
    cases.append((["--model", "./no-such-model"], "cannot load model './no-such-model'"))  # found after parsing: still no folder
    if script != "glam_ppo_multigpu.py":  # refused once the ranks have built the agent: its own torchrun below
        cases.append((["--prompt-format", "chat"], CANNOT_CHAT))
    if script != "zero_shot_eval.py":
        cases += [
            (["--exp-name", "a/b"], "--exp-name 'a/b'"),
            (["--resume", "runs/nothing"], "no checkpoint in 'runs/nothing'"),
            (["--env-id", "BabyAI-Nope-v0"], "unknown env id 'BabyAI-Nope-v0'"),
        ]
    if script in ("glam_ppo.py", "glam_ppo_multigpu.py"):
        cases += [
            (["--num-probe-prompts", "99", "--num-envs", "32"], "--num-probe-prompts 99 must be at most --num-envs 32"),
            (["--num-minibatches", "7"], "--num-minibatches 7 must divide"),
            (["--total-timesteps", "100"], "--total-timesteps 100 is less than one batch"),
        ]
    if script == "glam_ppo_multigpu.py":  # run on 2 ranks
        cases.append((["--num-envs", "3", "--num-minibatches", "1"], "must both be divisible by the 2 processes"))
    if script != "glam_ppo_multigpu.py":  # `videos` is a file in the test's folder
        cases.append((["--capture-video"], "cannot make the video folder videos/"))
    if script == "zero_shot_eval.py":
        cases += [
            (["--probes"], "--probes names no probe"),
            (["--probes", "nope"], "unknown probe nope"),
            (["--policy", "bot", "--prompt-format", "chat"], "--prompt-format is how a model reads the prompt, and --policy bot reads none"),
            (["--output-dir", "a_file/results"], "cannot make --output-dir a_file/results: Not a directory"),
            # /proc exists and is writable by root, yet no folder can be made in it: found before any model is loaded
            (["--output-dir", "/proc/nope/out"], "cannot make --output-dir /proc/nope/out: No such file or directory"),
        ]
    return cases


def test_every_numeric_flag_has_a_range():
    for script, module in SCRIPTS.items():
        assert set(numeric_fields(module)) == set(module.ARG_RANGES), script


@pytest.mark.parametrize("script", SCRIPTS)
def test_bad_input_is_one_line_naming_the_flag(tmp_path, tmp_path_factory, monkeypatch, script):
    """glam_ppo_multigpu.py's table runs under torchrun with 2 gloo ranks: rank 0 says it, rank 1 says nothing."""
    for name in ("a_file", "videos"):
        (tmp_path / name).write_text("")
    (tmp_path / "runner.py").write_text(RUNNER)
    monkeypatch.chdir(tmp_path)  # the table names paths in it
    cases = table(script)
    argvs = [[*BASE[script], *argv] for argv, _ in cases]
    ranks = 2 if script == "glam_ppo_multigpu.py" else 1
    launcher = [*TORCHRUN, "--nproc_per_node", "2"] if ranks == 2 else [sys.executable]
    process = subprocess.run(
        [*launcher, str(tmp_path / "runner.py"), os.path.join(REPO, script), json.dumps(argvs), str(tmp_path_factory.mktemp("meeting"))],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    results = [json.loads((tmp_path / f"results_{rank}.json").read_text()) for rank in range(ranks)]
    for case, (argv, expected) in enumerate(cases):
        code, stderr, files = results[0][case]
        lines = stderr.strip().splitlines()
        assert code not in (0, -1) and "Traceback" not in stderr, (argv, stderr)
        assert len(lines) == 1 and lines[0].startswith(f"{script}: error: ") and expected in lines[0], (argv, stderr)
        assert files == ["./a_file", "./runner.py", "./videos"], (argv, files)  # no file written
        for other_rank in results[1:]:
            assert other_rank[case][0] not in (0, -1) and other_rank[case][1] == "", (argv, other_rank[case])


def test_a_run_folder_under_a_file_is_refused(tmp_path):
    (tmp_path / "runs").write_text("")
    result = run_script("glam_ppo.py", tmp_path, "--model", "tiny-t5", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("glam_ppo.py: error: cannot make the run folder runs/BabyAI-MixedTrainLocal-v0__glam_ppo__1__")
    assert result.stderr.strip().endswith(": Not a directory")


def test_under_torchrun_one_rank_says_it_once_and_every_rank_fails(tmp_path):
    """A refusal that every rank meets as it builds the agent, in real processes (the table's run in one process each)."""
    result = run_script("glam_ppo_multigpu.py", tmp_path, "--model", "tiny-t5", "--prompt-format", "chat", processes=2, check=False)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("glam_ppo_multigpu.py: error:")]
    assert ours == [f"glam_ppo_multigpu.py: error: {CANNOT_CHAT}"], result.stderr[-3000:]
    # torchrun reports a failed worker with a traceback of its own launcher; none comes from the script.
    assert "glam_ppo_multigpu.py\", line" not in result.stderr
    assert [os.path.join(folder, name) for folder, _, names in os.walk(tmp_path) for name in names] == []  # no file written (a run folder made first stays empty)


@pytest.mark.parametrize("module", [glam_ppo, glam_ppo_multigpu], ids=lambda m: m.__name__)
def test_defaults_adapt_to_the_flags_a_user_sets(module, tmp_path, monkeypatch):
    """A default never makes a valid setting of another flag an error; a pair of flags both typed is checked."""
    monkeypatch.chdir(tmp_path)
    args = module.parse_args(["--model", "tiny-t5", "--num-envs", "2"])  # 3 probes by default, 2 envs
    assert (args.num_probe_prompts, args.num_minibatches, args.minibatch_size) == (2, 20, 4)
    args = module.parse_args(["--model", "tiny-t5", "--num-envs", "4", "--num-steps", "8"])  # 32 transitions: not 20 x
    assert (args.num_minibatches, args.minibatch_size) == (16, 2)
    assert module.parse_args(["--model", "tiny-t5", "--num-probe-prompts", "40"]).num_probe_prompts == 32
    assert module.parse_args(["--model", "tiny-t5"]).num_minibatches == 20  # the paper's 64 transitions
    with pytest.raises(module.UsageError, match="--num-probe-prompts 5 must be at most --num-envs 2"):
        module.parse_args(["--model", "tiny-t5", "--num-envs=2", "--num-probe-prompts", "5"])
