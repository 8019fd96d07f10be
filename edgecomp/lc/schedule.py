"""The numbers of the LC algorithm, free of torch modules (Carreira-Perpinan 2017, "Model compression
as constrained optimization, with application to neural nets. Part I", section 4 and Figure 2).

The constrained problem  min_w L(w)  s.t.  w = Delta(Theta)  is solved with the augmented
Lagrangian (eq. 7)

    L_A(w, Theta, lambda; mu) = L(w) - lambda^T (w - Delta(Theta)) + mu/2 ||w - Delta(Theta)||^2
                              = L(w) + mu/2 ||w - Delta(Theta) - lambda/mu||^2 - ||lambda||^2 / (2 mu)

alternating, for mu = mu0 * a^k (k = 0 .. K-1), an L step over w (target Delta(Theta) + lambda/mu),
a C step Theta = Pi(w - lambda/mu) and the multiplier update lambda <- lambda - mu (w - Delta(Theta)).
The quadratic-penalty variant keeps lambda = 0.
"""

from __future__ import annotations

import math

import numpy as np

VARIANTS = ("al", "qp")
LR_SCHEDULES = ("cosine", "exponential")


def mu_schedule(mu0: float, a: float, n_mu: int) -> np.ndarray:
    """mu_k = mu0 * a^k for k = 0 .. n_mu - 1 (a > 1: the penalty must grow to enforce w = Delta(Theta))."""
    if not (mu0 > 0 and math.isfinite(mu0)):
        raise ValueError(f"mu0 must be positive, got {mu0}")
    if not (a > 1 and math.isfinite(a)):
        raise ValueError(f"the mu growth factor a must be > 1, got {a}")
    if n_mu < 1:
        raise ValueError(f"n_mu must be >= 1, got {n_mu}")
    return mu0 * a ** np.arange(n_mu, dtype=np.float64)


def l_step_lr(lr: float, k: int, mu: float, lr_decay: float = 1.0) -> float:
    """Learning rate of the k-th L step: eta_k = lr * lr_decay^k, clipped to 1/mu.

    The penalty mu/2 ||w - t||^2 alone has curvature mu, so gradient steps on it diverge for
    eta > 2/mu (section 5.1); eta <= 1/mu never overshoots the target.
    """
    return clip_lr(lr * lr_decay**k, mu)


def sgd_lr(lr: float, step: int, total_steps: int, k: int, mu: float, *, schedule: str = "cosine",
           lr_decay: float = 1.0) -> float:
    """Learning rate of SGD step `step` (of `total_steps` in the whole run), inside the k-th L step.

    "cosine": lr * (1 + cos(pi * step / total_steps)) / 2 over the whole LC run, so that the last
    L steps settle (like the annealing of a fine-tuning run); "exponential": lr * lr_decay^k,
    constant within an L step (the LC toolkit's "after_l" decay). Either is clipped to 1/mu.
    """
    if schedule == "cosine":
        from edgecomp.finetune.schedule import cosine_lr

        return clip_lr(cosine_lr(lr, step, total_steps), mu)
    if schedule == "exponential":
        return l_step_lr(lr, k, mu, lr_decay)
    raise ValueError(f"unknown lr schedule {schedule!r}; choose one of {LR_SCHEDULES}")


def clip_lr(lr: float, mu: float) -> float:
    """min(lr, 1/mu)."""
    if mu <= 0:
        return float(lr)
    return float(min(lr, 1.0 / mu))


def c_step_input(w, lam, mu: float):
    """w - lambda/mu, the point the C step compresses (w itself when mu = 0: direct compression)."""
    return w if mu == 0 else w - lam / mu


def penalty_target(delta, lam, mu: float):
    """Delta(Theta) + lambda/mu: the L step's penalty is mu/2 ||w - target||^2."""
    return delta if mu == 0 else delta + lam / mu


def multiplier_update(lam, mu: float, w, delta):
    """lambda <- lambda - mu (w - Delta(Theta))  (Figure 2, augmented Lagrangian only)."""
    return lam - mu * (w - delta)


def converged(distance: float, norm: float, tol: float) -> bool:
    """True when ||w - Delta(Theta)|| <= tol * ||w|| (tol is relative, so independent of weight scale)."""
    return distance <= tol * max(norm, np.finfo(np.float64).tiny)


def penalty_reach(lr: float, mu: float, steps: int, momentum: float = 0.9) -> float:
    """How far one L step can pull w toward its target: steps * lr * mu / (1 - momentum).

    SGD with momentum beta shrinks the penalty's part of w - target by about
    (1 - lr mu / (1 - beta)) per step (lr mu small), i.e. by exp(-reach) over the L step. With
    reach << 1 the L step ignores the penalty, the multiplier update (which assumes the L step
    reached its minimizer) is inconsistent and the gap grows; with reach >> 1 at mu0, w is pulled
    onto the direct compression in the first L step. mu0 ~ (1 - beta) / (lr * steps) (reach ~ 1)
    is the toolkit's mu0 ~ 1e-4..1e-3 at its L-step length (epochs of SGD at lr 0.1) and ~0.1
    here (100 steps at lr 0.01).
    """
    return float(steps * lr * mu / max(1.0 - momentum, 1e-12))


def reach_mu0(lr: float, steps: int, momentum: float = 0.9, reach: float = 1.0) -> float:
    """The mu0 at which the first L step has the given penalty reach: reach * (1 - momentum) / (lr * steps)."""
    if lr <= 0 or steps < 1:
        raise ValueError("lr must be > 0 and steps >= 1")
    return float(reach * max(1.0 - momentum, 1e-12) / (lr * steps))


def path_warning(initial_gap: float, distances: list[float], threshold: float = 0.1) -> str | None:
    """A warning when the LC path is degenerate, from ||w - Delta(Theta)|| after each C step.

    initial_gap = ||w_ref - Delta(Theta_0)||; distances[k] = ||w - Delta(Theta)|| after the k-th
    L/C step. If the first L step already closed most of the gap, the penalty dominated the loss
    from the start and the iterates stay at the direct compression (mu0 too large / mu grows too
    fast); if the gap grew beyond the initial one, the L steps were too weak for mu (mu0 too small).
    """
    if initial_gap <= 0 or not distances:
        return None
    if distances[0] < threshold * initial_gap:
        return (f"LC: the first L step closed {1 - distances[0] / initial_gap:.0%} of the gap to the direct "
                "compression: mu0 is too large (mu grows too fast for the loss to matter), so the iterates stay "
                "at the direct compression and LC is no better than direct compression + fine-tuning. Lower mu0.")
    worst = max(distances)
    if worst > (1 + threshold) * initial_gap:
        return (f"LC: ||w - Delta(Theta)|| grew to {worst / initial_gap:.2f}x the direct compression's error: the "
                "L steps are too short for mu0 (penalty reach steps*lr*mu/(1-momentum) << 1), so the multiplier "
                "estimates are inconsistent. Raise mu0 or steps_per_mu.")
    return None
