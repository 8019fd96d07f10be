"""Fine-tuning and knowledge distillation of (compressed) models, and their evaluation."""

from edgecomp.finetune.callables import LossFn, MetricFn, PenaltyFn, TrainFn
from edgecomp.finetune.checkpoint import Checkpoint
from edgecomp.finetune.evaluate import eval_mode, evaluate
from edgecomp.finetune.losses import distillation_loss, training_loss
from edgecomp.finetune.schedule import cosine_lr
from edgecomp.finetune.train import OPTIMIZERS, TrainResult, make_optimizer, train

__all__ = [
    "Checkpoint",
    "LossFn",
    "MetricFn",
    "OPTIMIZERS",
    "PenaltyFn",
    "TrainFn",
    "TrainResult",
    "cosine_lr",
    "distillation_loss",
    "eval_mode",
    "evaluate",
    "make_optimizer",
    "train",
    "training_loss",
]
