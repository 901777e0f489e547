"""Checkpoints survive what happens to files: a damaged newest checkpoint falls back to the one before it, a full
disk stops the run with one line and its last good checkpoint intact, and the copies of this code stay equal."""

import errno
import glob
import inspect
import json
import os
import shutil
import signal

import pytest
import torch

import bc_finetune
import glam_ppo as g
import glam_ppo_multigpu
from script_runs import main_in_process, only_run_dir, run_in_process

SMALL = [
    "--model", "tiny-t5", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "4", "--num-steps", "8",
    "--num-minibatches", "2", "--learning-rate", "3e-4",
]
DAMAGEABLE = ["heads.pt", "model/model.safetensors", "trainer.pt", "envs.pkl", "args.json", "manifest.json"]


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A run saved after each of its two updates: checkpoint/ (update 2) and checkpoint.previous/ (update 1); made in
    this process, as the resume that reads it below."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run_in_process(g, tmp_path_factory.mktemp("run"), [*SMALL, "--total-timesteps", "64", "--save-interval", "1"], monkeypatch)


def progress(checkpoint):
    with open(os.path.join(checkpoint, "manifest.json")) as f:
        return json.load(f)["progress"]


@pytest.mark.parametrize("damaged", DAMAGEABLE)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(two_checkpoints, tmp_path, damaged, capsys):
    run_dir = str(tmp_path / "run")
    shutil.copytree(two_checkpoints, run_dir)
    assert progress(g.find_checkpoint(run_dir))["iteration"] == 2
    path = os.path.join(run_dir, "checkpoint", damaged)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    found = g.find_checkpoint(run_dir)
    assert found == os.path.join(run_dir, "checkpoint.previous") and progress(found)["iteration"] == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"{run_dir}/checkpoint is damaged ({damaged}") and line.endswith("going back to the checkpoint before it")


def test_both_checkpoints_damaged_is_one_clear_error(two_checkpoints, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(two_checkpoints, run_dir)
    for name in ("checkpoint", "checkpoint.previous"):
        os.remove(os.path.join(run_dir, name, "heads.pt"))
    with pytest.raises(g.UsageError, match="no checkpoint written by glam_ppo.py"):
        g.find_checkpoint(run_dir)


def test_a_run_resumes_from_the_previous_checkpoint_when_the_newest_is_damaged(two_checkpoints, tmp_path, monkeypatch, capsys):
    run_dir = str(tmp_path / "run")
    shutil.copytree(two_checkpoints, run_dir)
    with open(os.path.join(run_dir, "checkpoint", "trainer.pt"), "r+b") as f:
        f.truncate(100)
    capsys.readouterr()
    main_in_process(g, tmp_path, ["--resume", run_dir, "--total-timesteps", "64"], monkeypatch)
    assert f"{run_dir}/checkpoint is damaged (trainer.pt is not the file that was saved)" in capsys.readouterr().err
    # Update 2 again: the new checkpoint is sealed, and the good one the run went back to stays the previous (the
    # damaged one is set aside as checkpoint.damaged, never kept in place of a good one).
    assert sorted(os.listdir(run_dir)).count("checkpoint.damaged") == 1
    assert progress(os.path.join(run_dir, "checkpoint"))["iteration"] == 2
    assert g.checkpoint_damage(os.path.join(run_dir, "checkpoint")) is None
    assert progress(os.path.join(run_dir, "checkpoint.previous"))["iteration"] == 1
    assert g.checkpoint_damage(os.path.join(run_dir, "checkpoint.previous")) is None


def test_a_full_disk_stops_the_run_with_its_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    saves, save = [], torch.save

    def save_on_a_full_disk(obj, path, *args, **kwargs):
        if "trainer.pt" in str(path):
            saves.append(path)
            if len(saves) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return save(obj, path, *args, **kwargs)

    monkeypatch.setattr(g.torch, "save", save_on_a_full_disk)
    previous_handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(g.UsageError) as error:
            g.main(g.parse_args([*SMALL, "--total-timesteps", "96", "--save-interval", "1"]))
    finally:
        signal.signal(signal.SIGINT, previous_handlers[0])
        signal.signal(signal.SIGTERM, previous_handlers[1])
    run_dir = os.path.relpath(only_run_dir(tmp_path), tmp_path)
    assert str(error.value) == (
        f"could not write a checkpoint in {run_dir} (No space left on device); the last good checkpoint is {run_dir}/checkpoint"
    )
    assert sorted(os.path.basename(path) for path in glob.glob(os.path.join(run_dir, "checkpoint*"))) == ["checkpoint"]
    assert g.checkpoint_damage(os.path.join(run_dir, "checkpoint")) is None
    assert progress(os.path.join(run_dir, "checkpoint"))["iteration"] == 1


@pytest.mark.parametrize("copy", [glam_ppo_multigpu, bc_finetune], ids=lambda m: m.__name__)
def test_checkpoint_code_is_the_same_in_every_training_script(copy):
    for name in ("file_sha256", "commit_checkpoint", "checkpoint_damage", "intact_checkpoint", "set_aside_damaged", "checkpoint_progress"):
        assert inspect.getsource(getattr(copy, name)) == inspect.getsource(getattr(g, name)), name
