"""benchmark/action_scaling.py: the action sets, the three schemes agreeing on invented actions, and a run end to end."""

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmark"))
import action_scaling  # noqa: E402
from action_scaling import glam_ppo, scoring_speed  # noqa: E402


def test_action_sets_grow_from_the_canonical_ones():
    canonical = glam_ppo.action_names("canonical")
    assert action_scaling.offered_actions(3) == glam_ppo.action_names("restricted")
    assert action_scaling.offered_actions(6) == canonical
    assert action_scaling.offered_actions(9) == glam_ppo.action_names("augmented")  # the action-space study's
    everything = action_scaling.offered_actions(96)
    assert len(set(everything)) == 96 and everything[:6] == canonical
    for count in (4, 97):
        with pytest.raises(SystemExit, match="choose 3, or 6 to 96"):
            action_scaling.offered_actions(count)
    with pytest.raises(SystemExit, match="--device cuda:0: choose cpu, or cuda"):  # glam_ppo.py's runs take no index
        action_scaling.main(action_scaling.Args(device="cuda:0"))


@pytest.mark.parametrize("name", ["tiny-t5", "tiny-causal"])
def test_the_three_schemes_agree_on_invented_actions(name):
    llm, tokenizer = scoring_speed.build_model(name)
    actions = action_scaling.offered_actions(24)
    agent = glam_ppo.GlamAgent(llm.eval(), tokenizer, actions).eval()
    sample = glam_ppo.GlamAgent(llm, tokenizer, actions[:6]).eval()
    prompts = action_scaling.rollout_prompts(2, actions)
    assert all(", look down \n" in p and "check the map" not in p for p in prompts)  # the prompts list the 24
    with torch.no_grad():
        scores = {"ours": scoring_speed.ours_scores(agent, prompts), "authors": scoring_speed.authors_scores(agent, prompts),
                  "naive": scoring_speed.naive_scores(sample, prompts)}
    differences = action_scaling.check_agreement(scores, name, 24, tolerance=1e-4)
    assert scores["naive"].shape == (2, 6) and scores["authors"].shape == (2, 24)
    assert max(differences.values()) <= 1e-4
    scores["authors"][1, 20] += 0.01
    with pytest.raises(SystemExit, match="authors and ours differ by 1.00e-02"):
        action_scaling.check_agreement(scores, name, 24, tolerance=1e-4)


def test_a_tiny_run_writes_the_table_rows_exponents_and_end_to_end_speed(tmp_path):
    out, plot = tmp_path / "scaling.json", tmp_path / "scaling.png"
    args = action_scaling.Args(
        models=("tiny-t5",), actions=(3, 6), num_prompts=2, pair_sample=3, repeats=1, fit_from=3, end_to_end=(12,),
        e2e_envs=2, e2e_steps=2, e2e_updates=2, device="cpu", out=str(out), plot=str(plot),
    )
    useless = glam_ppo.USELESS_ACTIONS
    action_scaling.main(args)
    assert glam_ppo.USELESS_ACTIONS == useless
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["actions"], r["scheme"]) for r in rows] == [(c, s) for c in (3, 6) for s in ("naive", "authors", "ours", "generate")]
    for row in [r for r in rows if r["scheme"] == "generate"]:  # writing the action: 8 tokens per prompt, timed beside scoring
        assert row["new_tokens"] == 8 and row["prompts"] == 2 and row["seconds_per_prompt"] > 0 and row["peak_bytes"] > 0
    rows = [r for r in rows if r["scheme"] != "generate"]
    for row in rows:
        assert row["model"] == "tiny-t5" and row["prompts"] == 2 and row["prompt_tokens"] > 0
        assert row["pairs_per_s"] > 0 and row["peak_bytes"] > 0 and row["max_difference"] <= 1e-3
        assert row["seconds_per_prompt"] == pytest.approx(row["actions"] / row["pairs_per_s"])
    # at 6 actions the one-sequence-per-pair scheme runs on the first 3; the others on all 6
    assert {r["scheme"]: (r["sampled"], r["pairs_timed"]) for r in rows if r["actions"] == 6} == {
        "naive": (True, 6), "authors": (False, 12), "ours": (False, 12)
    }
    assert {f["scheme"] for f in result["exponents"]} == {"naive", "authors", "ours"}
    (e2e,) = result["end_to_end"]
    assert e2e["actions"] == 12 and e2e["overall"] > 0 and e2e["frames_per_cpu_s"] > 0
    assert "load average" in result["uptime_before"] and plot.stat().st_size > 0
    table = action_scaling.format_tables(result)
    assert "| tiny-t5 | 6 | 2 x" in table and "| 12 |" in table and "generation / scoring" in table
    assert action_scaling.main(action_scaling.Args(load=str(out))) == result  # the table and plot again, from the JSON
