"""benchmark/scoring_speed.py and train_speed.py: the three scoring schemes agree, and the tables are built from runs."""

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmark"))
import plot  # noqa: E402
import scoring_speed  # noqa: E402
import train_speed  # noqa: E402


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
    rows = train_speed.main(train_speed.Args(models=("tiny-causal",), updates=2, env_id="BabyAI-GoToLocalS5N2-v0"))
    assert rows[0]["rollout"] > 0 and rows[0]["update"] > 0 and rows[0]["overall"] < min(rows[0]["rollout"], rows[0]["update"])
