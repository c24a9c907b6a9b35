"""Training, evaluation, checkpoints and teacher weights.

A run is :func:`prepare`\\ d (everything decided and refusable refused, nothing tracked) and then :func:`fit`\\ ted
(the teacher's training if it needs one, stored teacher outputs, the student's epochs, tracked).
"""

from .fit import RunResult, fit, fit_teacher_only, fit_teacher_stage
from .plan import Prepared, PreparedTeacher, TeacherStage, prepare, prepare_teacher, prepare_teacher_stage

__all__ = ["Prepared", "PreparedTeacher", "RunResult", "TeacherStage", "fit", "fit_teacher_only", "fit_teacher_stage",
           "prepare", "prepare_teacher", "prepare_teacher_stage"]
