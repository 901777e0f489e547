"""The scripts share no code: each holds its own copy of the functions it takes from glam_ppo.py (the env, the prompt,
loading, scoring, pass sizes, checkpoints, videos); so do the paper's baselines in baselines/. These tests keep every copy identical to glam_ppo.py's, in source and in
behaviour, and keep each script free of definitions it never uses.

After changing a shared function in glam_ppo.py, copy it into the other scripts with `python tests/test_copies.py` (or into
some: `python tests/test_copies.py bc_finetune drrn`)."""

import ast
import glob
import importlib
import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # for `python tests/test_copies.py`
import bc_finetune  # noqa: E402
import glam_ppo  # noqa: E402
import glam_ppo_multigpu  # noqa: E402
import zero_shot_eval  # noqa: E402

LLM_COPIES = [zero_shot_eval, bc_finetune, glam_ppo_multigpu]
BASELINES = [importlib.import_module(f"baselines.{os.path.basename(path)[:-3]}") for path in sorted(glob.glob(os.path.join(ROOT, "baselines", "*.py")))]
SCRIPTS = [glam_ppo, *LLM_COPIES, *BASELINES]
COPIES = SCRIPTS[1:]
# Names that each script defines for its own job, which may differ from glam_ppo.py's definitions of the same name.
OWN = {"Args", "ARG_RANGES", "main", "parse_args", "finish_args", "RESUMABLE_CHANGES", "save_checkpoint", "StopRequest",
       "load_policy_model", "open_logs", "load_run", "restore_run", "record_video"}


def definitions(path: str) -> dict[str, str]:
    """Each top-level function, class and constant of a script: name -> its source, decorators included."""
    source = open(path, encoding="utf-8").read()
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found[node.name] = node
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = node
    lines = source.splitlines()
    return {
        name: "\n".join(lines[min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1 : node.end_lineno])
        for name, node in found.items()
    }


def reference_definitions(copy) -> dict[str, str]:
    """glam_ppo.py's definitions; a baseline may also copy zero_shot_eval.py's (its success interval), and the later
    baselines copy the first one's (the evaluation and its results file)."""
    reference = definitions(glam_ppo.__file__)
    if copy not in BASELINES:
        return reference
    first = {} if copy is BASELINES[0] else definitions(BASELINES[0].__file__)
    return {**first, **definitions(zero_shot_eval.__file__), **reference}


@pytest.mark.parametrize("copy", COPIES, ids=lambda m: m.__name__)
def test_every_copied_definition_is_verbatim(copy):
    reference, copied = reference_definitions(copy), definitions(copy.__file__)
    shared = sorted(set(reference) & set(copied) - OWN)
    assert len(shared) > (40 if copy in LLM_COPIES else 3)
    for name in shared:
        assert copied[name] == reference[name], f"{copy.__name__}.{name} differs from the definition it copies: python tests/test_copies.py"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda m: m.__name__)
def test_a_script_defines_only_what_it_uses(script):
    tree = ast.parse(open(script.__file__, encoding="utf-8").read())
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    unused = [name for name in definitions(script.__file__) if name not in used]
    assert unused == [], f"{script.__name__} defines {unused} and never uses them"


@pytest.mark.parametrize("copy", LLM_COPIES, ids=lambda m: m.__name__)
def test_copies_give_the_same_outputs(copy):
    rng = np.random.default_rng(0)
    for _ in range(50):
        image = np.stack([rng.integers(0, 11, (7, 7)), rng.integers(0, 6, (7, 7)), rng.integers(0, 3, (7, 7))], -1)
        assert copy.describe(image) == glam_ppo.describe(image)
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
    assert copy.VOCABULARY_TEXT == glam_ppo.VOCABULARY_TEXT


if __name__ == "__main__":  # copy glam_ppo.py's version of every shared definition into the other scripts (or those named)
    for copy in [copy for copy in COPIES if copy.__name__.split(".")[-1] in sys.argv[1:] or len(sys.argv) == 1]:
        reference = reference_definitions(copy)
        source, copied = open(copy.__file__, encoding="utf-8").read(), definitions(copy.__file__)
        stale = [name for name in set(reference) & set(copied) - OWN if copied[name] != reference[name]]
        for name in stale:
            source = source.replace(copied[name], reference[name], 1)
        open(copy.__file__, "w", encoding="utf-8").write(source)
        print(f"{copy.__name__}: {', '.join(sorted(stale)) or 'nothing'} copied from glam_ppo.py", file=sys.stderr)
