"""LC (learning-compression) algorithm for low-rank compression with fixed or budget-selected ranks."""

from edgecomp.lc.algorithm import DEFAULTS, LCResult, run_lc
from edgecomp.lc.choices import tucker2_choices_fn, tucker2_projection
from edgecomp.lc.cstep import CompressedLayer, CStepResult, build_compressed, c_step, compressed_layers, rank_problem, truncate
from edgecomp.lc.schedule import (
    LR_SCHEDULES,
    VARIANTS,
    c_step_input,
    clip_lr,
    converged,
    l_step_lr,
    mu_schedule,
    multiplier_update,
    penalty_target,
    path_warning,
    penalty_reach,
    reach_mu0,
    sgd_lr,
)

__all__ = [
    "DEFAULTS",
    "LR_SCHEDULES",
    "VARIANTS",
    "CStepResult",
    "CompressedLayer",
    "LCResult",
    "build_compressed",
    "c_step",
    "c_step_input",
    "clip_lr",
    "compressed_layers",
    "converged",
    "l_step_lr",
    "mu_schedule",
    "multiplier_update",
    "path_warning",
    "penalty_reach",
    "penalty_target",
    "rank_problem",
    "reach_mu0",
    "run_lc",
    "sgd_lr",
    "truncate",
    "tucker2_choices_fn",
    "tucker2_projection",
]
