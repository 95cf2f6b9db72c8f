"""Training: ``step`` runs one D/G/Q iteration (paper Section 2), ``loop`` drives it (Trainer,
hooks, EMA), ``run`` creates and resumes run directories; the other modules do one job each."""

from cocogan.training.loop import Hook, SampleGrid, Trainer, TrainingDiverged
from cocogan.training.run import RunSpec, new_trainer, prepare_new_run, resume_trainer

__all__ = ["Hook", "RunSpec", "SampleGrid", "Trainer", "TrainingDiverged", "new_trainer",
           "prepare_new_run", "resume_trainer"]
