"""COBLA's relaxed problem (Li & Shi, ECCV 2018, eq. 8) solved by SQP with L-BFGS and a
non-monotone line search.

    min_m E(m)   s.t.   N_C(m) = a_C . m + c_C <= N_C,max,
                        N_M(m) = a_M . m + c_M <= N_M,max,   0 <= m <= 1,
                        N_l(m) = a_l . m + c_l <= N_l,max    for every extra budget l (e.g. latency),

with E given by an oracle (loss and gradient, possibly on a fresh sub-sample per iteration) and
the costs linear (`RankProblem.linear_rows`: compute, params, then `RankProblem.extra`). With
compute and params only the projection is the two-row BudgetPolytope, else the k-row LinearPolytope. The paper solves it with SQPlab (quasi-Newton,
Powell-damped BFGS, line search; Dai & Schittkowski's non-monotone SQP); this is the same
scheme written for large n:

* Variables: the masks not fixed by problem shrinking (`fixed`: -1 free, 0 / 1 fixed); fixed
  masks only shift the budgets (b_k = N_k,max - c_k - a_k . [fixed to 1]).
* Hessian: compact L-BFGS with Powell damping (lbfgs.py), O(n * history) per product.
  Without pairs (start, or after a reset) B = delta I with delta = ||g||_inf, so the first QP
  step is a projected gradient step of at most unit length (scale-free in the loss).
* Step: the QP  min_d g'd + 1/2 d'Bd  over the polytope (qp.py, exact projections from
  projection.py). The feasible set is convex and every iterate is feasible, so every point
  m + alpha d, alpha in [0, 1], is feasible: no merit function or penalty is needed.
* Line search: non-monotone Armijo (Grippo, Lampariello & Lucidi 1986): accept alpha when
  E(m + alpha d) <= max of the last `nonmonotone_window` losses + armijo_c alpha g.d,
  multiplying alpha by `backtrack` up to `max_backtracks` times. Iteration k evaluates E at
  m_k and at every trial point with the oracle's iteration index k (one sub-sample), so the
  curvature pair y = g_k(m_{k+1}) - g_k(m_k) compares gradients on one sub-sample; the next
  iteration starts with a fresh evaluation at m_{k+1} (index k + 1). With
  `deterministic=True` that evaluation is skipped and the accepted trial's value reused. With a
  `loss_oracle` (the same loss without the gradient, on the same sub-sample, cheaper: no backward
  pass), a step from a scaled-identity model (the first iteration, and the retries after a reset),
  whose length is a guess that often backtracks, tests its trial points by loss only; the accepted
  one is then evaluated with its gradient. The accepted points are the same. If no trial passes,
  the L-BFGS memory is dropped and the iteration retried along the projected gradient, then
  once more with a step backtrack^-max_backtracks times shorter; if that fails too the solver
  stops (zero step, reason "step norm").
* Start point: m0 if given, else all ones; fixed entries are set to their value. If that is
  infeasible it is replaced by the projection onto the feasible polytope of
  m0_ij * (1 + sigma_ij / sigma_i1): the projection subtracts a per-layer shift proportional to
  the layer's per-rank costs (mu_C a_C,i + mu_M a_M,i) and clips to [0, 1], so it keeps the
  top singular components of each layer at 1, truncates the tail to 0, and truncates
  expensive layers more -- a cost-aware water-filling start.

Stopping rules (time limit and KKT residual are checked at the start of an iteration, the
callback, the step norm and the allocation after its step):
* "KKT residual": ||m - P(m - g)||_inf <= kkt_tol at the start of an iteration (P: projection
  onto the feasible polytope over the free masks; zero exactly at a KKT point of eq. 8).
* "step norm": the accepted step has ||m_{k+1} - m_k||_inf <= step_tol * max(1, ||m_k||_inf)
  (includes the zero step after a failed line search).
* "allocation stable": the product of COBLA is the rounded allocation, which eq. 9 draws from
  the expected ranks s_i(m) = sum_j m_ij of each layer i. With
      delta_k = max_i |s_i(m_{k+1}) - s_i(m_k)| / tau_i,   tau_i = max(stable_tol, stable_rtol * K_i)
  (K_i: the layer's number of masks), the solver stops once delta_k <= 1 for `stable_iters`
  consecutive iterations (stable_iters = 0 disables the rule). delta_k is recorded as
  "allocation_change" in each history record. The product also carries the mask values (COBLA
  scales the kept components by m_ij), which can keep improving while the s_i stand still; given
  `product_loss` (m -> the loss of what m would be rounded to, e.g. on held-out data; evaluated
  at the start and after every step, recorded as "product_loss"), an iteration counts as stable
  only if also
      q_{k+1} >= (1 - stable_loss_rtol) * min(q_0, ..., q_k),   q_j = product_loss(m_j),
  i.e. it did not improve the best product loss so far by more than the fraction stable_loss_rtol.
* "max iterations": max_iter steps taken (a cap).
* "time limit": at the start of an iteration, the wall time so far (oracle included) plus the
  predicted duration of one more iteration reaches time_limit_s. The prediction is the mean
  duration of the iterations taken, or twice the start evaluation's time before the first
  (an iteration evaluates the oracle at least twice), so the limit is an upper bound on the
  solver's wall time up to one iteration's deviation from the mean.
* "callback": the callback returned True.
`converged` is True when a test on the iterates stopped the solver ("KKT residual", "step norm",
"allocation stable") and False when a cap did ("max iterations", "time limit", "callback").

A budget of +inf (a device without that budget) leaves its row unconstrained: it is replaced by
c_k + a_k . 1, the cost with every mask at 1, which no point of the box exceeds.

If the relaxed problem is infeasible (some b_k < 0: even with every free mask at 0 the cost exceeds a
budget) InfeasibleBudgetError, naming every such budget and its minimum, is raised before the oracle is
called.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgecomp.errors import VerificationError
from edgecomp.ranks.cobla.lbfgs import CompactLBFGS
from edgecomp.ranks.cobla.projection import LinearPolytope, polytope
from edgecomp.ranks.cobla.qp import solve_qp
from edgecomp.ranks.problem import RankProblem, infeasible_budget_error

Oracle = Callable[[np.ndarray, int], "tuple[float, np.ndarray]"]
"""(masks, iteration) -> (loss, gradient w.r.t. the masks). Trial points of one iteration share
the iteration index so a sub-sampling oracle can reuse its sub-sample for them."""

REASONS = ("step norm", "KKT residual", "allocation stable", "max iterations", "time limit", "callback")


@dataclass
class SQPOptions:
    """Settings of `solve_relaxed` (defaults follow the brief and SQPlab's usual choices)."""

    max_iter: int = 50
    step_tol: float = 1e-4  # relative inf-norm of the accepted step
    kkt_tol: float = 1e-5  # ||m - P(m - g)||_inf
    history: int = 10  # L-BFGS pairs
    nonmonotone_window: int = 5  # GLL reference: max of this many recent losses
    armijo_c: float = 1e-4
    backtrack: float = 0.5
    max_backtracks: int = 8
    damping: float = 0.2  # Powell damping threshold
    seed: int = 0  # not used by the (deterministic) solver; reported so the glue can seed sub-sampling
    time_limit_s: float | None = None
    qp_max_iter: int = 200  # inner iterations of the QP solver per SQP step
    qp_rtol: float = 1e-2  # QP stops when its projected-gradient residual drops by this factor
    deterministic: bool = False  # oracle is deterministic: reuse the accepted trial's (loss, grad)
    # "allocation stable": stop once max_i |s_i(m_{k+1}) - s_i(m_k)| <= tau_i for stable_iters steps in a row,
    # s_i = sum_j m_ij (layer i's expected rank), tau_i = max(stable_tol, stable_rtol * K_i) ranks.
    stable_tol: float = 0.5
    stable_rtol: float = 0.0
    stable_iters: int = 0  # 0: rule off (a plain optimizer); COBLA's glue turns it on (CoblaOptions)
    stable_loss_rtol: float = 0.0  # with product_loss: the relative improvement that still counts as a change

    def validate(self) -> None:
        checks = [
            (self.max_iter >= 0, "max_iter must be >= 0"),
            (self.step_tol >= 0, "step_tol must be >= 0"),
            (self.kkt_tol >= 0, "kkt_tol must be >= 0"),
            (self.history >= 1, "history must be >= 1"),
            (self.nonmonotone_window >= 1, "nonmonotone_window must be >= 1"),
            (0 < self.armijo_c < 1, "armijo_c must be in (0, 1)"),
            (0 < self.backtrack < 1, "backtrack must be in (0, 1)"),
            (self.max_backtracks >= 0, "max_backtracks must be >= 0"),
            (0 < self.damping < 1, "damping must be in (0, 1)"),
            (self.time_limit_s is None or self.time_limit_s > 0, "time_limit_s must be positive"),
            (self.qp_max_iter >= 1, "qp_max_iter must be >= 1"),
            (0 < self.qp_rtol < 1, "qp_rtol must be in (0, 1)"),
            (self.stable_tol >= 0 and self.stable_rtol >= 0, "stable_tol and stable_rtol must be >= 0"),
            (self.stable_iters == 0 or self.stable_tol > 0 or self.stable_rtol > 0,
             "stable_tol or stable_rtol must be positive when stable_iters > 0"),
            (self.stable_iters >= 0, "stable_iters must be >= 0"),
            (0 <= self.stable_loss_rtol < 1, "stable_loss_rtol must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SQPOptions: {message}")


@dataclass
class SQPResult:
    """Outcome of `solve_relaxed`.

    history: one record per iteration k with the state *after* its step -- "loss" (oracle loss
    at m_{k+1} on iteration k's sub-sample), "N_C", "N_M" (linear costs of m_{k+1}),
    "step_norm" (relative inf-norm of m_{k+1} - m_k), "N_extra" ({name: linear cost} of the extra
    budgets, only when the problem has some), "step_size" (alpha), "backtracks",
    "retries", "qp_iterations", "qp_converged", "damped", "pair_skipped", "lbfgs_pairs",
    "allocation_change" (delta_k of the "allocation stable" rule; <= 1 counts as stable) and
    "product_loss" (with product_loss) -- plus
    "kkt_residual" measured at m_k before the step and "solver_s", the iteration's wall time
    minus its oracle time. An iteration that stops on the KKT test records m_k with a zero
    step. timings: total_s, oracle_s (loss-only calls included), solver_s (= total - oracle), qp_s,
    oracle_calls, loss_only_calls, product_loss_calls, projection_fallbacks.
    """

    masks: np.ndarray  # full mask vector m_hat (fixed entries included)
    loss: float  # oracle loss at `masks` (last evaluation there)
    iterations: int  # steps taken
    converged: bool
    reason: str  # one of REASONS
    history: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    kkt_residual: float = float("nan")  # at the last iterate where it was computed
    start: str = "ones"  # "m0", "ones" or "projected" (see module docstring)
    seed: int = 0


class _Problem:
    """The relaxed problem over the free masks: polytope, costs, fixed values."""

    def __init__(self, problem: RankProblem, fixed: np.ndarray | None):
        A, consts = problem.linear_rows()
        n = problem.n_masks
        budgets = []
        for (name, _), budget, a, c in zip(problem.budget_rows(), problem.budgets, A, consts):
            if np.isnan(budget) or budget == -np.inf:
                raise ValueError(f"{name} budget must be a number or +inf, got {budget}")
            # No budget (+inf) leaves the row unconstrained: N(m) <= c + a . 1 holds for every m in the box.
            budgets.append(min(float(budget), float(c) + float(a.sum())))
        if fixed is None:
            fixed = np.full(n, -1, dtype=np.int64)
        fixed = np.asarray(fixed)
        if fixed.shape != (n,):
            raise ValueError(f"fixed must have shape ({n},), got {fixed.shape}")
        if not np.all(np.isin(fixed, (-1, 0, 1))):
            raise ValueError("fixed entries must be -1 (free), 0 or 1")
        self.n = n
        self.free = np.flatnonzero(fixed == -1)
        self.base = np.where(fixed == 1, 1.0, 0.0)  # masks with the free ones at 0
        self.A, self.consts = A, consts
        self.extra_names = [b.name for b in problem.extra]
        mins = np.array([float(c) + float(a @ self.base) for a, c in zip(A, consts)])
        self.P = polytope(A[:, self.free], np.array(budgets) - mins)
        if self.P.is_empty:
            raise infeasible_budget_error(
                problem, "the relaxed COBLA problem is infeasible: with every free mask at 0 the model still",
                minimums=mins)
        self.offsets = problem.offsets[:-1]
        self.n_layers = len(problem.layers)
        sigma_rel = []
        for layer in problem.layers:
            top = float(layer.sigma[0])
            sigma_rel.append(layer.sigma / top if top > 0 else np.zeros_like(layer.sigma))
        self.sigma_rel = np.concatenate(sigma_rel) if sigma_rel else np.zeros(0)

    def full(self, x: np.ndarray) -> np.ndarray:
        m = self.base.copy()
        m[self.free] = x
        return m

    def expected_ranks(self, m: np.ndarray) -> np.ndarray:
        """s_i = sum_j m_ij per layer: what eq. 9 rounds."""
        return np.add.reduceat(m, self.offsets) if self.n_layers and m.size else np.zeros(self.n_layers)

    def costs(self, m: np.ndarray) -> tuple[float, float]:
        return float(self.A[0] @ m) + float(self.consts[0]), float(self.A[1] @ m) + float(self.consts[1])

    def extra_costs(self, m: np.ndarray) -> dict:
        """{name: linear cost} of the extra budgets ({} without any)."""
        return {name: float(self.A[k] @ m) + float(self.consts[k]) for k, name in enumerate(self.extra_names, 2)}

    def start(self, m0: np.ndarray | None) -> tuple[np.ndarray, str]:
        if m0 is None:
            m0, label = np.ones(self.n), "ones"
        else:
            m0 = np.asarray(m0, dtype=np.float64)
            if m0.shape != (self.n,):
                raise ValueError(f"m0 must have shape ({self.n},), got {m0.shape}")
            if not np.all(np.isfinite(m0)) or m0.min() < 0 or m0.max() > 1:
                raise ValueError("m0 must be finite and within [0, 1]")
            label = "m0"
        x = m0[self.free].copy()
        if self.P.contains(x, rtol=1e-12):
            return x, label
        z = x * (1.0 + self.sigma_rel[self.free])
        return self.P.project(z), "projected"


def _kkt_residual(P: LinearPolytope, x: np.ndarray, g: np.ndarray) -> float:
    if x.size == 0:
        return 0.0
    mu = P.mu.copy()  # keep the QP's warm start
    r = float(np.max(np.abs(x - P.project(x - g))))
    P.mu = mu
    return r


def solve_relaxed(
    problem: RankProblem,
    oracle: Oracle,
    m0: np.ndarray | None = None,
    options: SQPOptions | None = None,
    fixed: np.ndarray | None = None,
    callback: Callable[[dict], bool | None] | None = None,
    loss_oracle: Callable[[np.ndarray, int], float] | None = None,
    product_loss: Callable[[np.ndarray], float] | None = None,
) -> SQPResult:
    """Solve COBLA's relaxed problem (eq. 8) by SQP; see the module docstring.

    callback(record) is called after every iteration with a copy of that iteration's history
    record plus "masks" (a copy of the current full mask vector); returning True stops the
    solver (reason "callback").
    """
    opts = options or SQPOptions()
    opts.validate()
    rp = _Problem(problem, fixed)
    P, free = rp.P, rp.free
    t_begin = time.perf_counter()
    clock = {"oracle": 0.0, "qp": 0.0, "calls": 0, "loss_calls": 0, "product_calls": 0}

    def evaluate(x: np.ndarray, iteration: int) -> tuple[float, np.ndarray, np.ndarray]:
        m = rp.full(x)
        t0 = time.perf_counter()
        loss, grad = oracle(m.copy(), iteration)
        clock["oracle"] += time.perf_counter() - t0
        clock["calls"] += 1
        grad = np.asarray(grad, dtype=np.float64).reshape(-1)
        if grad.shape != (rp.n,):
            raise VerificationError(f"oracle gradient has {grad.size} entries, expected {rp.n}")
        return float(loss), grad, m

    def evaluate_product(m: np.ndarray) -> float:
        t0 = time.perf_counter()
        value = float(product_loss(m.copy()))
        clock["oracle"] += time.perf_counter() - t0
        clock["product_calls"] += 1
        return value

    def evaluate_loss(x: np.ndarray, iteration: int) -> float:
        t0 = time.perf_counter()
        loss = loss_oracle(rp.full(x), iteration)
        clock["oracle"] += time.perf_counter() - t0
        clock["loss_calls"] += 1
        return float(loss)

    x, start_label = rp.start(m0)
    loss, grad, m = evaluate(x, 0)
    t_start_eval = time.perf_counter() - t_begin
    tau = np.maximum(np.maximum(opts.stable_tol, opts.stable_rtol * problem.max_ranks.astype(np.float64)), 1e-300)
    expected = rp.expected_ranks(m)
    stable_run = 0
    best_product = evaluate_product(m) if product_loss is not None else None
    if not (np.isfinite(loss) and np.all(np.isfinite(grad))):
        raise VerificationError("the oracle returned a non-finite loss or gradient at the start point")

    B = CompactLBFGS(free.size, opts.history, opts.damping)
    window: deque[float] = deque([loss], maxlen=opts.nonmonotone_window)
    history: list[dict] = []
    reason, converged, kkt = "max iterations", False, float("nan")
    iterations = 0

    for k in range(opts.max_iter):
        t_iter, oracle_before = time.perf_counter(), clock["oracle"]
        if opts.time_limit_s is not None:
            predicted = (t_iter - t_begin - t_start_eval) / k if k else 2.0 * t_start_eval
            if t_iter - t_begin + predicted >= opts.time_limit_s:
                reason = "time limit"
                break
        if k > 0 and not opts.deterministic:
            loss, grad, m = evaluate(x, k)
            if not (np.isfinite(loss) and np.all(np.isfinite(grad))):
                raise VerificationError(f"the oracle returned a non-finite loss or gradient at iteration {k}")
            window.append(loss)
        g = grad[free]
        n_c, n_m = rp.costs(m)
        kkt = _kkt_residual(P, x, g)
        record = {"iteration": k, "loss": loss, "N_C": n_c, "N_M": n_m, "kkt_residual": kkt}
        if rp.extra_names:
            record["N_extra"] = rp.extra_costs(m)
        if kkt <= opts.kkt_tol:
            reason, converged = "KKT residual", True
            record.update(step_norm=0.0, step_size=0.0, backtracks=0, qp_iterations=0,
                          solver_s=time.perf_counter() - t_iter - (clock["oracle"] - oracle_before))
            history.append(record)
            break

        step = _line_search_step(rp, B, x, g, k, window, opts, evaluate, clock,
                                 evaluate_loss if loss_oracle is not None else None)
        x_new, alpha, trial = step["x"], step["alpha"], step["trial"]
        s = x_new - x
        step_norm = float(np.max(np.abs(s))) / max(1.0, float(np.max(np.abs(x)))) if s.size else 0.0
        update = {"skipped": True, "damped": False}
        if trial is not None:
            t_loss, t_grad, t_m = trial
            update = B.update(s, t_grad[free] - g)
            x, m = x_new, t_m
            loss = t_loss
            if opts.deterministic:
                grad = t_grad
                window.append(loss)
        iterations += 1
        n_c, n_m = rp.costs(m)
        new_expected = rp.expected_ranks(m)
        change = float(np.max(np.abs(new_expected - expected) / tau)) if tau.size else 0.0
        expected = new_expected
        stable = change <= 1.0
        if best_product is not None:
            q = evaluate_product(m)
            record["product_loss"] = q
            stable = stable and not q < (1.0 - opts.stable_loss_rtol) * best_product
            best_product = min(best_product, q)
        stable_run = stable_run + 1 if stable else 0
        if rp.extra_names:
            record["N_extra"] = rp.extra_costs(m)
        record.update(
            loss=loss, N_C=n_c, N_M=n_m, step_norm=step_norm, step_size=alpha,
            backtracks=step["backtracks"], retries=step["retries"], qp_iterations=step["qp_iterations"],
            qp_converged=step["qp_converged"], damped=bool(update["damped"]),
            pair_skipped=bool(update["skipped"]), lbfgs_pairs=B.k, allocation_change=change,
            solver_s=time.perf_counter() - t_iter - (clock["oracle"] - oracle_before),
        )
        history.append(record)
        if callback is not None and callback({**record, "masks": m.copy()}):
            reason = "callback"
            break
        if step_norm <= opts.step_tol:
            reason, converged = "step norm", True
            break
        if opts.stable_iters and stable_run >= opts.stable_iters:
            reason, converged = "allocation stable", True
            break

    total = time.perf_counter() - t_begin
    timings = {
        "total_s": total,
        "oracle_s": clock["oracle"],
        "solver_s": total - clock["oracle"],
        "qp_s": clock["qp"],
        "oracle_calls": clock["calls"],
        "loss_only_calls": clock["loss_calls"],
        "product_loss_calls": clock["product_calls"],
        "projection_fallbacks": P.fallbacks,
    }
    return SQPResult(masks=m.copy(), loss=float(loss), iterations=iterations, converged=converged,
                     reason=reason, history=history, timings=timings, kkt_residual=kkt,
                     start=start_label, seed=opts.seed)


def _line_search_step(rp, B, x, g, k, window, opts, evaluate, clock, evaluate_loss=None) -> dict:
    """QP direction + non-monotone Armijo backtracking, with the two documented retries."""
    P = rp.P
    reference = max(window)
    scale = max(float(np.max(np.abs(g))), 1e-300)
    total_backtracks, qp_iters, qp_ok = 0, 0, True
    for retry in range(3):
        if retry == 1 or (retry == 0 and B.k == 0):
            B.reset(delta=scale)
        elif retry == 2:
            B.reset(delta=scale / opts.backtrack ** max(opts.max_backtracks, 1))
        t0 = time.perf_counter()
        qp = solve_qp(g, B, x, P, max_iter=opts.qp_max_iter, rtol=opts.qp_rtol)
        clock["qp"] += time.perf_counter() - t0
        qp_iters += qp.iterations
        qp_ok = qp_ok and qp.converged
        d = qp.x - x
        gd = float(g @ d)
        if gd >= 0.0 or not np.any(d):
            continue  # no descent direction from this model; retry with a reset one
        alpha = 1.0
        loss_first = evaluate_loss is not None and B.k == 0  # a guessed step length: test by loss only
        for bt in range(opts.max_backtracks + 1):
            x_try = np.clip(x + alpha * d, 0.0, 1.0)
            if loss_first and not evaluate_loss(x_try, k) <= reference + opts.armijo_c * alpha * gd:
                alpha *= opts.backtrack
                continue  # (a nan loss fails the test too)
            t_loss, t_grad, t_m = evaluate(x_try, k)
            if np.isfinite(t_loss) and np.all(np.isfinite(t_grad)) and \
                    t_loss <= reference + opts.armijo_c * alpha * gd:
                return {"x": x_try, "alpha": alpha, "trial": (t_loss, t_grad, t_m),
                        "backtracks": total_backtracks + bt, "retries": retry,
                        "qp_iterations": qp_iters, "qp_converged": qp_ok}
            alpha *= opts.backtrack
        total_backtracks += opts.max_backtracks + 1
    return {"x": x, "alpha": 0.0, "trial": None, "backtracks": total_backtracks, "retries": 2,
            "qp_iterations": qp_iters, "qp_converged": qp_ok}
