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


@pytest.fixture(autouse=True)
def private_latency_cache(tmp_path_factory, monkeypatch):
    """Every test (and every CLI subprocess it starts) caches per-layer latencies in a folder of its own,
    never in the user's ~/.cache/edgecomp; a test may still set EDGECOMP_CACHE_DIR itself."""
    monkeypatch.setenv("EDGECOMP_CACHE_DIR", str(tmp_path_factory.mktemp("latency-cache")))
