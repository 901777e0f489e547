"""The scripts share no code: each holds its own copy of the env, prompt, loading and scoring parts of glam_ppo.py.
These tests keep the copies identical, in source and in behaviour."""

import numpy as np
import pytest
import torch

import bc_finetune
import glam_ppo
import glam_ppo_multigpu
import zero_shot_eval

COPIES = [zero_shot_eval, bc_finetune, glam_ppo_multigpu]
SHARED_START, SHARED_END = "class UsageError", "def compute_gae"


def shared_section(module) -> str:
    source = open(module.__file__, encoding="utf-8").read()
    start = source.index(SHARED_START)
    end = source.index(SHARED_END) if SHARED_END in source else source.index("\n\n\n# ----", source.index("class GlamAgent"))
    return source[start:end].rstrip()


@pytest.mark.parametrize("copy", COPIES, ids=lambda m: m.__name__)
def test_shared_section_is_a_verbatim_copy(copy):
    assert shared_section(copy) == shared_section(glam_ppo)


@pytest.mark.parametrize("copy", COPIES, ids=lambda m: m.__name__)
def test_copies_give_the_same_outputs(copy):
    rng = np.random.default_rng(0)
    for _ in range(50):
        image = np.stack([rng.integers(0, 11, (7, 7)), rng.integers(0, 6, (7, 7)), rng.integers(0, 3, (7, 7))], -1)
        for language in ("english", "french"):
            assert copy.describe(image, language) == glam_ppo.describe(image, language)
    envs = glam_ppo.TextVecEnv("BabyAI-MixedTrainLocal-v0", 3, "augmented")
    copied_envs = copy.TextVecEnv("BabyAI-MixedTrainLocal-v0", 3, "augmented")
    assert envs.reset(seed=5) == copied_envs.reset(seed=5)
    for actions in ([2, 1, 0], [3, 2, 2], [2, 7, 1]):
        assert envs.step(actions)[0] == copied_envs.step(actions)[0]
    prompts = envs.prompts()
    torch.manual_seed(0)
    llm, tokenizer = glam_ppo.load_llm("tiny-t5")
    with torch.no_grad():
        expected = glam_ppo.GlamAgent(llm.eval(), tokenizer, envs.actions).score(prompts)
        copied = copy.GlamAgent(llm.eval(), tokenizer, envs.actions).score(prompts)
    torch.testing.assert_close(copied, expected, rtol=0, atol=0)
    assert copy.babyai_text_vocabulary() == glam_ppo.babyai_text_vocabulary()
