import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import glam_ppo  # noqa: E402

glam_ppo.keep_freed_memory()  # as the scripts do at start, for the tests that run them in this process


@pytest.fixture(scope="session")
def repo():
    return REPO
