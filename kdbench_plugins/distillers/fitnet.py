"""``fitnet``: Romero, Ballas, Kahou, Chassang, Gatta & Bengio, "FitNets: Hints for Thin Deep Nets", ICLR 2015.

Section 2.2: a *guided* layer of the student learns to predict a *hint* layer of the teacher through a
learned regressor r, L_HT = ½‖u_h(x) − r(v_g(x))‖² (Eq. 3). The paper trains in two stages (Sec. 2.3):
stage 1 fits the student up to the guided layer, plus r, to the hint alone; stage 2 trains the whole
student with knowledge distillation, L_KD = H(y, P_S) + λ·H(P_T^τ, P_S^τ) (Eq. 2), λ annealed linearly.

Cross-modal adaptation: kdbench hands over globally pooled stage features ``(B, C_k)`` and the embedding, not
feature maps, so the hint and the guided feature are pooled vectors and r is an affine map
Linear(C_student → C_teacher) (the paper's regressor is convolutional because its hints are maps). By
default each network contributes its middle stage, index (n − 1) // 2 of its own n stages, so stage
counts may differ; that index is RepDistiller's ``hint_layer = 2`` for 3- and 4-stage ResNets.

Two schedules (option ``schedule``):

- ``single`` (default): CE + β·MSE(r(v_g), u_h) every epoch, β = 100, MSE averaged over elements: the
  one-stage form the benchmark suites run (RepDistiller ``HintLoss`` = ``nn.MSELoss``, ``-a 0 -b 100``).
- ``two-stage``: for the first ``hint_epochs`` epochs only β·MSE (no CE); afterwards CE +
  λ·KL(P_T^τ ‖ P_S^τ), τ = 3, λ linear from 4 to 1 over the remaining epochs (the end points are the authors'
  released CIFAR-10 config's; its decay never reaches 1 within its run, ours does: see docs). The switch happens in ``on_epoch_start``. KL differs from Eq. 2's cross-entropy H(P_T^τ, P_S^τ)
  only by the teacher's entropy, a constant, so the gradients are the same and the logged term is 0 at a
  perfect match; as in Eq. 2 and the authors' code, it is not multiplied by τ².

kdbench hands the whole student to one optimiser in every epoch, while the paper's stage 1 trains only the
layers up to the guided one. The effect is the same here: the stage-1 loss does not depend on the later
layers (the inactive terms are constants, not 0·CE), so they get no gradient at all, and PyTorch's
optimisers skip a parameter without a gradient entirely, weight decay and momentum included.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import nn

from kdbench.contracts import Distiller, FeatureSpec
from kdbench.errors import KdbenchError
from kdbench.hookspecs import hookimpl
from kdbench.losses import hard_ce
from kdbench.options import PluginOptions

from .soft import softened_kl


class FitNetOptions(PluginOptions):
    hint: Literal["stage", "embedding"] = Field(
        "stage", description="what is regressed: a pooled stage feature of each net (the paper's hint/guided "
        "hidden layers) or the two embeddings; a net without stages falls back to its embedding")
    student_stage: int | None = Field(None, description="index of the guided student stage (negative counts "
                                      "from the deepest); None = the middle one, (n - 1) // 2")
    teacher_stage: int | None = Field(None, description="index of the teacher's hint stage; None = the middle one")
    hint_weight: float = Field(100.0, ge=0, description="β on the hint MSE (mean over elements): "
                               "RepDistiller's run_cifar_distill.sh value for FitNet")
    schedule: Literal["single", "two-stage"] = Field(
        "single", description="'single': CE + β·hint throughout (benchmark suites); 'two-stage': hint only, "
        "then CE + λ·KD (the paper)")
    hint_epochs: int = Field(30, ge=1, description="two-stage only: epochs of hint training "
                             "(RepDistiller's init_epochs for its two-stage methods; the paper gives none)")
    kd_temperature: float = Field(3.0, gt=0, description="two-stage only: τ of stage 2 "
                                  "(authors' cifar10 FitNet config)")
    kd_weight_start: float = Field(4.0, ge=0, description="two-stage only: λ at the first stage-2 epoch "
                                   "(authors' cifar10 config, lambda_teach)")
    kd_weight_end: float = Field(1.0, ge=0, description="two-stage only: λ at the last epoch, reached linearly "
                                 "(authors' TeacherDecayOverEpoch final value)")


def _pick(spec: FeatureSpec, index: int | None, hint: str, who: str) -> tuple[int | None, int]:
    """(stage index or None for the embedding, its width)."""
    if hint == "embedding" or not spec.stages:
        return None, spec.embedding
    n = len(spec.stages)
    i = (n - 1) // 2 if index is None else index
    if not -n <= i < n:
        raise KdbenchError(f"fitnet: {who}_stage={index} is out of range; the {who} has {n} stages "
                           f"(use 0..{n - 1} or negative indices)")
    return i % n, spec.stages[i]


class FitNet(Distiller):
    """Romero et al. 2015: regress a teacher hint layer from a student layer through a learned regressor."""

    name = "fitnet"
    Options = FitNetOptions

    def __init__(self, options, ctx):
        super().__init__(options, ctx)
        o = options
        self.student_stage, s_width = _pick(ctx.student, o.student_stage, o.hint, "student")
        self.teacher_stage, t_width = _pick(ctx.teacher, o.teacher_stage, o.hint, "teacher")
        self.regressor = nn.Linear(s_width, t_width)
        if o.schedule == "two-stage" and o.hint_epochs >= ctx.epochs:
            raise KdbenchError(f"fitnet: hint_epochs={o.hint_epochs} leaves no classification stage in a "
                               f"{ctx.epochs}-epoch run; lower distiller.hint_epochs")
        self.epoch = 0  # set by on_epoch_start, which the engine also calls on resume: no state to save

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def in_hint_stage(self) -> bool:
        return self.options.schedule == "two-stage" and self.epoch < self.options.hint_epochs

    def kd_weight(self) -> float:
        """λ of stage 2 at the current epoch: linear from kd_weight_start to kd_weight_end."""
        o = self.options
        k, last = self.epoch - o.hint_epochs, self.ctx.epochs - 1 - o.hint_epochs
        frac = min(max(k / last, 0.0), 1.0) if last > 0 else 1.0
        return o.kd_weight_start + (o.kd_weight_end - o.kd_weight_start) * frac

    def hint_loss(self, student, teacher):
        guided = student.embedding if self.student_stage is None else student.stages[self.student_stage]
        hint = teacher.embedding if self.teacher_stage is None else teacher.stages[self.teacher_stage]
        return F.mse_loss(self.regressor(guided), hint.detach())

    def forward(self, student, teacher, batch):
        o = self.options
        ce = hard_ce(student.logits, batch.label)
        if o.schedule == "single":
            return {"ce": ce, "hint": o.hint_weight * self.hint_loss(student, teacher)}
        zero = student.logits.new_zeros(())  # a constant: inactive terms must not touch any parameter
        if self.in_hint_stage:
            return {"ce": zero, "hint": o.hint_weight * self.hint_loss(student, teacher), "kd": zero}
        kd = softened_kl(student.logits, teacher.logits.detach(), o.kd_temperature, self.kd_weight(), t_squared=False)
        return {"ce": ce, "hint": zero, "kd": kd}


@hookimpl
def register_distillers(register):
    register(FitNet)
