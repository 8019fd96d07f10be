"""Training objectives: cross-entropy on labels and knowledge distillation from a teacher.

Distillation (Hinton, Vinyals & Dean 2015, "Distilling the knowledge in a neural network"): with
temperature T, p_T = softmax(z_teacher / T) and q_T = softmax(z_student / T),

    L_KD = T^2 * KL(p_T || q_T)          (T^2 keeps gradient magnitudes independent of T)
    L    = alpha * L_KD + (1 - alpha) * CE(z_student, y)

alpha = 1 is pure distillation and needs no labels (unlabeled calibration images suffice).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over the batch."""
    t = float(temperature)
    log_q = F.log_softmax(student_logits / t, dim=1)
    log_p = F.log_softmax(teacher_logits.detach() / t, dim=1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * (t * t)


def training_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor | None,
    teacher_logits: torch.Tensor | None = None,
    *,
    temperature: float = 4.0,
    alpha: float = 1.0,
) -> torch.Tensor:
    """alpha * L_KD + (1 - alpha) * CE; plain CE without a teacher. Terms with weight 0 are skipped."""
    if teacher_logits is None:
        if labels is None:
            raise ValueError("training without labels needs a teacher")
        return F.cross_entropy(student_logits, labels)
    loss = student_logits.new_zeros(())
    if alpha > 0:
        loss = loss + alpha * distillation_loss(student_logits, teacher_logits, temperature)
    if alpha < 1:
        if labels is None:
            raise ValueError("distill_alpha < 1 mixes in cross-entropy and needs labels")
        loss = loss + (1 - alpha) * F.cross_entropy(student_logits, labels)
    return loss
