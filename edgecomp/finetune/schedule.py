"""Learning-rate schedule: cosine annealing (Loshchilov & Hutter 2017, SGDR without restarts).

    eta_t = eta_min + (eta_0 - eta_min) * (1 + cos(pi * t / T)) / 2,   t = 0 .. T-1

with an optional linear warm-up over the first `warmup` steps.
"""

from __future__ import annotations

import math


def cosine_lr(base_lr: float, step: int, total_steps: int, *, min_lr: float = 0.0, warmup: int = 0) -> float:
    if total_steps <= 0:
        raise ValueError("total_steps must be positive")
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(1, total_steps - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
