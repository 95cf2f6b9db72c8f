"""Training: the step (paper Section 2), the loop around it, run directories and resume.

``step`` runs one D/G/Q iteration, ``loop`` drives it (Trainer, hooks), ``run`` creates and
resumes run directories; the other modules each do one job their docstring names.
"""

from cocogan.training.loop import Hook, SampleGrid, Trainer, TrainingDiverged
from cocogan.training.run import RunSpec, new_trainer, prepare_new_run, resume_trainer

__all__ = ["Hook", "RunSpec", "SampleGrid", "Trainer", "TrainingDiverged", "new_trainer",
           "prepare_new_run", "resume_trainer"]
