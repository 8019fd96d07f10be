"""The L step's penalty as a callable, for a user's own training loop (edgecomp.finetune.callables).

In the k-th L step (Carreira-Perpinan 2017, eq. 9) the user minimizes their loss plus

    P(w) = mu/2 sum_i ||w_i - t_i||^2,   t_i = Delta(Theta_i) + lambda_i/mu   (constants of the L step)

over the compressed layers' weights w_i; dP/dw_i = mu (w_i - t_i). Each call evaluates P at the
current weights, so the returned tensor carries the graph back to them.
"""

from __future__ import annotations

from typing import Mapping

import torch


class QuadraticPenalty:
    """penalty_fn() -> mu/2 sum_i ||w_i - t_i||^2 (0-dim tensor, differentiable w.r.t. the w_i)."""

    def __init__(self, weights: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor], mu: float):
        self.weights = dict(weights)
        self.targets = {name: t.detach() for name, t in targets.items()}
        self.mu = float(mu)
        self.calls = 0

    @property
    def max_lr(self) -> float:
        """1/mu: SGD on the penalty alone (curvature mu) never overshoots below it (edgecomp.lc.schedule.clip_lr)."""
        return 1.0 / self.mu if self.mu > 0 else float("inf")

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        total = sum(torch.sum((w - self.targets[name]) ** 2) for name, w in self.weights.items())
        return 0.5 * self.mu * total

    def value(self) -> float:
        """P at the current weights, as a number (no graph)."""
        with torch.no_grad():
            return float(sum(torch.sum((w - self.targets[n]) ** 2) for n, w in self.weights.items())) * 0.5 * self.mu
