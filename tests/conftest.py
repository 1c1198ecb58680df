"""Shared test settings.

Tests run torch on one thread: the suite is dominated by small ops (analytic oracles, tiny
networks) where a second intra-op thread costs more in hand-offs than it gains, and on a loaded
2-core CI machine two spinning threads per process made such ops 10–60× slower (measured).
"""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
