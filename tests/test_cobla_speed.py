"""COBLA's cost controls: the "allocation stable" stop, deduplicated and screened rounding, the time
budget (SQP and rounding), and --threads / --time-budget on the command line."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgecomp.cli import main
from edgecomp.compression.cobla import CoblaOptions, round_on_heldout
from edgecomp.errors import UserInputError
from edgecomp.ranks.cobla import SQPOptions, round_ranks, solve_relaxed
from edgecomp.ranks.problem import LayerSpectrum, RankProblem


def _problem(n_layers=4, k=12, frac=0.45, seed=0) -> RankProblem:
    rng = np.random.default_rng(seed)
    layers = [LayerSpectrum(f"l{i}", np.sort(rng.exponential(1.0, k))[::-1], 100.0 * (i + 1), 10.0 * (i + 1),
                            original_compute=100.0 * (i + 1) * k * 2, original_params=10.0 * (i + 1) * k * 2)
              for i in range(n_layers)]
    probe = RankProblem(layers, 1.0, 1.0)
    a_c, a_m, c_c, c_m = probe.linear_costs()
    return probe.with_budgets(c_c + frac * a_c.sum(), c_m + frac * a_m.sum())


def _noisy_quadratic(problem: RankProblem, noise: float):
    """E(m) = 1/2 ||m - t_k||^2 with t_k = t + noise * (a fresh draw per iteration): the expected ranks
    settle within about noise * sqrt(K_i) of the optimum's, so a tolerance above that is met."""
    target = np.random.default_rng(1).uniform(0.0, 1.0, problem.n_masks)

    def oracle(m, k):
        t = target + noise * np.random.default_rng([2, k]).normal(size=m.size)
        return 0.5 * float((m - t) @ (m - t)), m - t

    return oracle


def test_allocation_stable_stops_when_expected_ranks_settle():
    problem = _problem()
    oracle = _noisy_quadratic(problem, noise=0.01)
    opts = SQPOptions(max_iter=60, step_tol=0.0, stable_tol=0.5, stable_iters=3)
    res = solve_relaxed(problem, oracle, m0=np.zeros(problem.n_masks), options=opts)
    assert (res.reason, res.converged) == ("allocation stable", True)
    changes = [h["allocation_change"] for h in res.history]
    assert all(c <= 1.0 for c in changes[-3:])
    first = next(j for j in range(2, len(changes)) if all(c <= 1.0 for c in changes[j - 2 : j + 1]))
    assert res.iterations == first + 1 < 60  # stopped at the first run of 3 stable iterations
    assert max(changes) > 1.0  # it moved the allocation before settling (the rule had work to do)
    # the rule's tolerance matters: far below the noise it never triggers
    tight = solve_relaxed(problem, oracle, m0=np.zeros(problem.n_masks),
                          options=SQPOptions(max_iter=15, step_tol=0.0, stable_tol=1e-6, stable_iters=3))
    assert tight.reason == "max iterations"
    off = solve_relaxed(problem, oracle, m0=np.zeros(problem.n_masks),
                        options=SQPOptions(max_iter=15, step_tol=0.0, stable_iters=0))
    assert off.reason == "max iterations" and off.iterations == 15


def test_product_loss_keeps_the_solver_going_while_the_product_improves():
    """The target moves mass within each layer, so the expected ranks settle early; the product's loss
    (here the relaxed loss plus the part no rank choice removes) keeps improving for a while longer."""
    problem = _problem(frac=0.5)
    n = problem.n_masks
    start, target = np.zeros(n), np.zeros(n)
    for lo in problem.offsets[:-1]:
        start[lo : lo + 4] = 1.0  # 4 ranks on the first components ...
        target[lo + 4 : lo + 8] = 1.0  # ... where the loss wants them on the next ones
    a = np.random.default_rng(5).normal(size=(n, n))
    H = a @ a.T / n + 0.01 * np.eye(n)

    def loss(m):
        return 0.5 * float((m - target) @ H @ (m - target))

    def product_loss(m):
        return 1.0 + loss(m)

    def oracle(m, k):
        return loss(m), H @ (m - target)

    opts = SQPOptions(max_iter=60, step_tol=0.0, stable_tol=0.5, stable_iters=3, stable_loss_rtol=0.01)
    ranks_only = solve_relaxed(problem, oracle, m0=start, options=opts)
    both = solve_relaxed(problem, oracle, m0=start, options=opts, product_loss=product_loss)
    assert ranks_only.reason == both.reason == "allocation stable"
    assert ranks_only.iterations < both.iterations < 60
    assert loss(both.masks) < 0.5 * loss(ranks_only.masks)
    q = [product_loss(start)] + [h["product_loss"] for h in both.history]
    improving = [q[k + 1] < 0.99 * min(q[: k + 1]) for k in range(len(q) - 1)]
    assert improving[both.iterations - 4] and not any(improving[-3:])  # stopped after 3 without improvement
    assert both.timings["product_loss_calls"] == both.iterations + 1


def test_allocation_change_is_relative_to_the_per_layer_tolerance():
    problem = _problem()
    oracle = _noisy_quadratic(problem, noise=0.01)
    m0 = np.zeros(problem.n_masks)
    absolute = solve_relaxed(problem, oracle, m0=m0, options=SQPOptions(max_iter=2, stable_tol=0.5))
    relative = solve_relaxed(problem, oracle, m0=m0, options=SQPOptions(max_iter=2, stable_tol=0.1, stable_rtol=0.25))
    # tau_i = max(0.1, 0.25 * 12) = 3 ranks: the same step reads 6x smaller than against 0.5
    a, r = absolute.history[0]["allocation_change"], relative.history[0]["allocation_change"]
    assert a == pytest.approx(6.0 * r)
    with pytest.raises(ValueError):
        SQPOptions(stable_tol=0.0, stable_rtol=0.0, stable_iters=2).validate()


def test_loss_only_trials_take_the_same_steps_with_fewer_gradients():
    """From a scaled-identity model the first step overshoots; testing its trial points by loss only
    changes no accepted point, and spends one gradient per iteration."""
    problem = _problem(frac=0.7)
    target = np.random.default_rng(4).uniform(0.5, 0.9, problem.n_masks)
    gradients = []

    def loss(m, k):
        return float(np.sum(np.sqrt(1.0 + (4.0 * (m - target)) ** 2)))

    def oracle(m, k):
        gradients.append(k)
        r = 4.0 * (m - target)
        return loss(m, k), 4.0 * r / np.sqrt(1.0 + r * r)

    opts = SQPOptions(max_iter=6, deterministic=True)
    plain = solve_relaxed(problem, oracle, options=opts)
    plain_calls, gradients[:] = len(gradients), []
    cheap = solve_relaxed(problem, oracle, options=opts, loss_oracle=loss)
    assert plain.history[0]["backtracks"] > 0
    np.testing.assert_array_equal(cheap.masks, plain.masks)
    assert [h["loss"] for h in cheap.history] == [h["loss"] for h in plain.history]
    assert len(gradients) == plain_calls - plain.history[0]["backtracks"]
    assert cheap.timings["loss_only_calls"] == plain.history[0]["backtracks"] + 1


def _dup_heavy_masks(problem: RankProblem) -> np.ndarray:
    """Expected ranks with small fractional parts: most draws repeat the floor rounding."""
    masks = np.zeros(problem.n_masks)
    for i, lo in enumerate(problem.offsets[:-1]):
        masks[lo : lo + 4] = 1.0
        masks[lo + 4] = 0.15 if i < 2 else 0.0
    return masks


def test_rounding_scores_each_distinct_candidate_once_and_screens_to_finalists():
    problem = _problem(frac=0.6)
    masks = _dup_heavy_masks(problem)
    screened, scored = [], []

    def screen_fn(ranks):
        screened.append(tuple(ranks))
        return float(np.sum(ranks * np.arange(1, ranks.size + 1)) % 7)

    def loss_fn(ranks):
        scored.append(tuple(ranks))
        return -float(ranks.sum())

    sel = round_ranks(problem, masks, draws=16, seed=0, loss_fn=loss_fn, screen_fn=screen_fn, finalists=2)
    info = sel.info
    assert len(screened) == len(set(screened)) == info["candidates_distinct"] == len(info["candidates"])
    assert info["draws_duplicate"] == info["draws_feasible"] + 1 - info["candidates_distinct"] > 0
    assert 2 < info["candidates_distinct"]
    assert info["candidates_screened"] == info["candidates_distinct"] and info["candidates_full_loss"] == 2
    by_screen = sorted(info["candidates"], key=lambda c: (c["screen_loss"], -c["kept_energy"]))
    assert set(scored) == {tuple(c["ranks"]) for c in by_screen[:2]}  # only the two best screened go on
    assert tuple(sel.ranks) == min(scored, key=lambda r: -sum(r)) and info["criterion"] == "loss"
    assert problem.feasible(sel.ranks) and not info["deadline_hit"]


class _FakeOracle:
    """evaluate(m, idx) = mean over idx of w_idx * (1 + ||m||^2): the held-out loss of a candidate."""

    def __init__(self, n_data: int, delay: float = 0.0):
        self.w = np.random.default_rng(3).uniform(0.5, 1.5, n_data)
        self.calls: list[tuple[tuple, int]] = []
        self.delay = delay

    def evaluate(self, m, idx, grad=False):
        time.sleep(self.delay)
        self.calls.append((tuple(np.round(m, 12)), len(idx)))
        return float(np.mean(self.w[idx]) * (1.0 + float(m @ m))), None


def test_heldout_rounding_reuses_the_screening_subset_for_the_finalists():
    problem = _problem(frac=0.6)
    masks = _dup_heavy_masks(problem)
    heldout = np.arange(100, 300)
    oracle = _FakeOracle(400)
    options = CoblaOptions(draws=16, screen=50, finalists=2)
    sel = round_on_heldout(problem, oracle, masks, heldout, options)
    sizes = [n for _, n in oracle.calls]
    distinct = sel.info["candidates_distinct"]
    assert distinct > 2 and sizes.count(50) == distinct and sizes.count(150) == 2 and len(sizes) == distinct + 2
    masks_seen = [m for m, n in oracle.calls if n == 50]
    assert len(set(masks_seen)) == distinct  # each distinct candidate once
    for c in sel.info["candidates"]:  # a finalist's loss is its mean over the whole held-out set
        if "loss" in c:
            from edgecomp.compression.cobla import built_masks
            from edgecomp.ranks.cobla import kept_components

            ranks = np.array(c["ranks"])
            m = built_masks(problem, masks, ranks, kept_components(problem, masks, ranks))
            assert c["loss"] == pytest.approx(np.mean(oracle.w[heldout]) * (1.0 + m @ m), rel=1e-12)


def test_deadline_during_rounding_keeps_the_best_scored_candidate():
    problem = _problem(frac=0.6)
    masks = _dup_heavy_masks(problem)
    oracle = _FakeOracle(400, delay=0.03)
    options = CoblaOptions(draws=16, screen=0)
    sel = round_on_heldout(problem, oracle, masks, np.arange(200), options, deadline=time.perf_counter() + 0.05)
    info = sel.info
    assert info["deadline_hit"] and problem.feasible(sel.ranks)
    assert 1 <= info["candidates_full_loss"] < info["candidates_distinct"]
    scored = [c for c in info["candidates"] if "loss" in c]
    assert list(sel.ranks) == min(scored, key=lambda c: c["loss"])["ranks"]
    # past the deadline already: the floor rounding, feasible and never evaluated
    late = round_ranks(problem, masks, draws=8, loss_fn=lambda r: 0.0, deadline=time.perf_counter() - 1.0)
    assert late.info["chosen"].startswith("floor") and late.info["deadline_hit"]
    assert late.info["candidates_full_loss"] == 0 and problem.feasible(late.ranks)


def _tiny_data(n=160):
    from edgecomp.data import ArrayDataset

    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    y = (x[:, 0, :14].mean(axis=(1, 2)) > x[:, 0, 14:].mean(axis=(1, 2))).astype(np.int64)
    return ArrayDataset(x, y, name="synthetic", num_classes=10)


def test_time_budget_cut_during_rounding_returns_feasible_ranks(monkeypatch, single_thread):
    """A fake clock: a held-out evaluation costs 1 s, a gradient 0.01 s. With a 1.5 s budget the SQP
    (2 iterations) finishes, and rounding is cut after two candidates."""
    from edgecomp.compression import oracle as oracle_module
    from edgecomp.compression.methods import Budgets, compress
    from edgecomp.graph import analyze_model
    from edgecomp.models import get_zoo_model

    clock = [1000.0]
    real_evaluate = oracle_module.MaskLossOracle.evaluate

    def evaluate(self, m, indices, grad):
        clock[0] += 0.01 if grad else 1.0
        return real_evaluate(self, m, indices, grad)

    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(oracle_module.MaskLossOracle, "evaluate", evaluate)
    torch.manual_seed(0)
    model = get_zoo_model("fmnist_cnn").eval()
    cost = analyze_model(model, (1, 1, 28, 28), "spatial")
    budgets = Budgets(0.4 * cost.total_macs, 0.4 * cost.total_params * 4, "fp32")
    result = compress(model, (1, 1, 28, 28), budgets, method="cobla", data=_tiny_data(),
                      cobla=CoblaOptions(max_iter=2, sample=16, draws=16, batch_size=64, time_limit_s=1.5))
    info = result.selection.info
    assert info["time_budget"]["hit"] and info["time_budget"]["stage"] == "rounding"
    assert info["sqp_reason"] == "max iterations" and info["deadline_hit"]
    assert info["candidates_full_loss"] == 2 < info["candidates_distinct"]
    assert result.macs <= budgets.macs and result.params <= budgets.params


def test_time_budget_cut_during_sqp_still_rounds_and_the_report_says_so(tmp_path, single_thread):
    import json

    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.random((96, 1, 28, 28), dtype=np.float32), y=rng.integers(0, 10, 96))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compress", "zoo:tiny_cnn", "--mac-budget", "0.5", "--memory-budget", "0.5",
                                       "--data", f"npz:{data}", "--sample", "16", "--draws", "2",
                                       "--time-budget", "0.0001", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "note: the time budget of 0.0001 s cut COBLA short during the SQP" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["time_budget"]["hit"] and report["time_budget"]["stage"] == "sqp"
    assert report["selection_info"]["sqp_reason"] == "time limit" and report["within_budgets"]


@pytest.mark.parametrize("command", ["compress", "export"])
@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_cli_time_budget_must_be_positive(command, value, tmp_path):
    args = [command, "zoo:tiny_cnn", "--device", "jetson-orin-nano", "--time-budget", value, "-o", str(tmp_path / "o")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "--time-budget" in result.output and not (tmp_path / "o").exists()


def test_api_time_budget_is_checked_up_front():
    import edgecomp

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    for bad in (0, -1.0, float("inf"), "10", True):
        with pytest.raises(UserInputError, match="time_budget_s"):
            edgecomp.compress(model, input_shape=(1, 4), mac_budget=0.5, time_budget_s=bad)
        with pytest.raises(UserInputError, match="time_budget_s"):
            edgecomp.export(model, device="jetson-orin-nano", input_shape=(1, 4), time_budget_s=bad)
    with pytest.raises(UserInputError, match="time budget"):
        CoblaOptions(time_limit_s=0)


def test_threads_are_set_by_the_cli_only(tmp_path):
    from edgecomp.compression.methods import Budgets, compress
    from edgecomp.models import get_zoo_model

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        compress(get_zoo_model("tiny_cnn").eval(), (1, 1, 28, 28), Budgets(1e6, 1e6, "fp32"), method="pos-cvx")
        assert torch.get_num_threads() == 2  # the library leaves them alone
        result = CliRunner().invoke(main, ["compress", "zoo:no-such-model", "--mac-budget", "0.5", "--threads", "1",
                                           "-o", str(tmp_path / "out")])
        assert result.exit_code == 2 and torch.get_num_threads() == 1
        bad = CliRunner().invoke(main, ["export", "--device", "jetson", "--threads", "0", "-o", str(tmp_path / "x")])
        assert bad.exit_code == 2 and "--threads" in bad.output
    finally:
        torch.set_num_threads(before)


def test_only_the_cli_sets_torch_threads():
    """A library that sets threads at import or in a call overrides notebooks and multi-process runs."""
    import edgecomp
    import edgecomp.exporters
    import edgecomp.runtime

    setters = []
    for package in (edgecomp, edgecomp.exporters, edgecomp.runtime):
        root = Path(package.__file__).resolve().parent
        setters += [f"{package.__name__}/{path.relative_to(root).as_posix()}" for path in root.rglob("*.py")
                    if "set_num_threads(" in path.read_text(encoding="utf-8")]
    assert setters and all(path.startswith("edgecomp/cli/") for path in setters), setters
