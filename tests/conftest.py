"""Shared test fixtures."""

import pytest
import torch

from sshd_server import sshd  # noqa: F401  (a fixture for every test folder)


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models gain nothing from intra-op threads, and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
