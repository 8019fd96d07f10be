"""A device without a memory (or MAC) budget leaves that budget unconstrained, in every method.

The shipped Jetson Orin Nano profile has no memory budget. No shipped profile lacks a MAC budget
(they derive one from the latency budget), so a custom profile file without either a MAC or a
latency budget covers that case.
"""

import math

import numpy as np
import pytest
import yaml

from edgecomp.compression.cobla import CoblaOptions
from edgecomp.compression.methods import METHODS, LCOptions
from edgecomp.compression.run import CompressRequest, run_compress
from edgecomp.profiles import load_profile
from edgecomp.ranks.cobla import SQPOptions, solve_relaxed
from edgecomp.ranks.problem import LayerSpectrum, RankProblem

FAST_COBLA = CoblaOptions(max_iter=2, sample=64, draws=2, batch_size=64)
FAST_LC = LCOptions(n_mu=2, steps_per_mu=3)


@pytest.fixture(scope="module")
def npz_data(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "d.npz"
    np.savez(path, x=rng.random((160, 1, 28, 28), dtype=np.float32), y=rng.integers(0, 10, 160))
    return f"npz:{path}"


@pytest.fixture(scope="module")
def no_mac_budget_profile(tmp_path_factory):
    """An x86 host edited to drop its latency (hence MAC) budget and to cap weight memory at 8 KB."""
    profile = load_profile("x86-host").to_dict()
    profile.update(name="no-mac-budget", aliases=[])
    profile["budgets"].update(latency_ms=None, mac_budget=None, memory_budget="8KB")
    path = tmp_path_factory.mktemp("profiles") / "no-mac-budget.yaml"
    path.write_text(yaml.safe_dump(profile))
    return load_profile(str(path))


def _compress(tmp_path, profile, method, data, **budgets) -> dict:
    request = CompressRequest(model="zoo:tiny_cnn", outdir=str(tmp_path / method), profile=profile, method=method,
                              data=data, cobla=FAST_COBLA, lc=FAST_LC, progress=False, **budgets)
    return run_compress(request, log=lambda _: None)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_a_device_without_memory_budget(method, npz_data, tmp_path, single_thread):
    jetson = load_profile("jetson")
    assert jetson.memory_budget_bytes is None
    report = _compress(tmp_path, jetson, method, npz_data, mac_budget="0.5")
    assert math.isinf(report["memory_budget"]) and report["memory_budget_source"] == "none"
    if report["budgets_enforced"]:
        assert report["macs"] <= report["mac_budget"] and report["within_budgets"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_a_device_without_mac_budget(method, npz_data, tmp_path, no_mac_budget_profile, single_thread):
    report = _compress(tmp_path, no_mac_budget_profile, method, npz_data)
    assert math.isinf(report["mac_budget"]) and report["mac_budget_source"] == "none"
    assert report["memory_budget"] == 8000
    if report["budgets_enforced"]:
        assert report["memory_bytes"] <= 8000 and report["within_budgets"]


def test_relaxed_problem_with_an_infinite_budget_matches_a_budget_nobody_reaches():
    """+inf leaves its row out of COBLA's relaxed problem: same answer as a budget above every cost."""
    rng = np.random.default_rng(3)
    layers = [LayerSpectrum(f"l{i}", np.sort(rng.random(12))[::-1] + 0.1, 10.0 + i, 5.0, 200.0, 90.0)
              for i in range(3)]

    def oracle(m, _k):  # a convex quadratic that wants every mask on
        return float(np.sum((m - 1.0) ** 2)), 2.0 * (m - 1.0)

    options = SQPOptions(max_iter=30, deterministic=True)
    free = solve_relaxed(RankProblem(tuple(layers), 300.0, math.inf), oracle, options=options)
    capped = solve_relaxed(RankProblem(tuple(layers), 300.0, 1e12), oracle, options=options)
    np.testing.assert_allclose(free.masks, capped.masks, atol=1e-9)
    a_c = np.concatenate([np.full(12, layer.compute_per_rank) for layer in layers])
    assert a_c @ free.masks <= 300.0 + 1e-6  # the finite budget still binds
    with pytest.raises(ValueError, match="MAC budget"):
        solve_relaxed(RankProblem(tuple(layers), float("nan"), math.inf), oracle, options=options)
