"""Checkpoints survive what happens to files: a newest checkpoint that does not load gives way to the one before it,
and a full disk stops the run with one line and its last good checkpoint intact."""

import errno
import glob
import json
import os
import shutil
import signal

import pytest
import torch

import glam_ppo as g
from script_runs import checkpoint_weights, main_in_process, only_run_dir, run_in_process

SMALL = [
    "--model", "tiny-t5", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "4", "--num-steps", "8",
    "--num-minibatches", "2", "--learning-rate", "3e-4",
]
DAMAGEABLE = ["model/model.safetensors", "trainer.pt"]  # safetensors' own error, torch.load's (heads.pt, envs.pkl: the same path)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A run saved after each of its two updates: checkpoint/ (update 2) and checkpoint.previous/ (update 1); made in
    this process, as the resumes below."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run_in_process(g, tmp_path_factory.mktemp("run"), [*SMALL, "--total-timesteps", "64", "--save-interval", "1"], monkeypatch)


def iteration(checkpoint):
    return torch.load(os.path.join(checkpoint, "trainer.pt"), weights_only=False)["iteration"]


@pytest.mark.parametrize("damaged", DAMAGEABLE)
def test_a_truncated_file_in_the_newest_checkpoint_gives_way_to_the_previous_one(two_checkpoints, tmp_path, damaged, monkeypatch, capsys):
    run_dir = str(tmp_path / "run")
    shutil.copytree(two_checkpoints, run_dir)
    path = os.path.join(run_dir, "checkpoint", damaged)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    capsys.readouterr()
    main_in_process(g, tmp_path, ["--resume", run_dir, "--total-timesteps", "64"], monkeypatch)
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "does not load" in line]
    assert line.startswith(f"{run_dir}/checkpoint does not load (") and line.endswith(f"going on from {run_dir}/checkpoint.previous")
    # From update 1 the run made update 2 again: the weights that the damaged checkpoint held. The damaged one went where
    # saves begin, so that the save kept the good one as checkpoint.previous.
    expected, resumed = checkpoint_weights(two_checkpoints), checkpoint_weights(run_dir)
    assert all(torch.equal(resumed[name], weight) for name, weight in expected.items())
    assert iteration(os.path.join(run_dir, "checkpoint")) == 2 and iteration(os.path.join(run_dir, "checkpoint.previous")) == 1


def test_a_save_killed_between_its_two_renames_resumes_from_the_previous(two_checkpoints, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(two_checkpoints, run_dir)
    shutil.rmtree(os.path.join(run_dir, "checkpoint"))
    assert g.checkpoint_folders(run_dir) == [os.path.join(run_dir, "checkpoint.previous")]
    assert g.parse_args(["--resume", run_dir, "--total-timesteps", "96"]).num_envs == 4


def test_an_unreadable_args_json_is_read_from_the_previous_checkpoint(two_checkpoints, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(two_checkpoints, run_dir)
    with open(os.path.join(run_dir, "checkpoint", "args.json"), "w") as f:
        f.write('{"model": "tiny')
    assert g.saved_args(run_dir) == json.load(open(os.path.join(run_dir, "checkpoint.previous", "args.json")))


def test_no_checkpoint_that_loads_is_one_clear_error(two_checkpoints, tmp_path, monkeypatch):
    run_dir = str(tmp_path / "run")
    shutil.copytree(two_checkpoints, run_dir)
    for name in ("checkpoint", "checkpoint.previous"):
        os.remove(os.path.join(run_dir, name, "heads.pt"))
    with pytest.raises(g.UsageError, match=rf"^cannot resume {run_dir}: {run_dir}/checkpoint.previous does not load \("):
        main_in_process(g, tmp_path, ["--resume", run_dir, "--total-timesteps", "96"], monkeypatch)


FULL_DISK = {  # what a write to a full disk raises: Python's own files, and torch.save (its zip writer in C++)
    "oserror": (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "No space left on device"),
    "torch-save": (RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 640 vs 534"), "[enforce fail at inline_container.cc:603]"),
}


@pytest.mark.parametrize("raised", FULL_DISK)
def test_a_full_disk_stops_the_run_with_its_last_good_checkpoint(tmp_path, monkeypatch, raised):
    monkeypatch.chdir(tmp_path)
    saves, save = [], torch.save
    error, reason = FULL_DISK[raised]

    def save_on_a_full_disk(obj, path, *args, **kwargs):
        if "trainer.pt" in str(path):
            saves.append(path)
            if len(saves) == 2:
                raise error
        return save(obj, path, *args, **kwargs)

    monkeypatch.setattr(g.torch, "save", save_on_a_full_disk)
    previous_handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(g.UsageError) as stopped:
            g.main(g.parse_args([*SMALL, "--total-timesteps", "64", "--save-interval", "1"]))
    finally:
        signal.signal(signal.SIGINT, previous_handlers[0])
        signal.signal(signal.SIGTERM, previous_handlers[1])
    run_dir = os.path.relpath(only_run_dir(tmp_path), tmp_path)
    assert str(stopped.value).startswith(f"could not write a checkpoint in {run_dir} ({reason}")
    assert str(stopped.value).endswith(f"); the last good checkpoint is {run_dir}/checkpoint")
    assert sorted(os.path.basename(path) for path in glob.glob(os.path.join(run_dir, "checkpoint*"))) == ["checkpoint"]
    assert iteration(os.path.join(run_dir, "checkpoint")) == 1
