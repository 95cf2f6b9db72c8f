"""Training: the step (paper Section 2), the loop around it, run directories and resume.

Modules, one job each: ``step`` (one D/G/Q iteration: the phases of :mod:`cocogan.losses`
run), ``ema`` (the EMA generator's decay and update), ``family`` (the network + loss
pairs the loop drives: COCO-GAN's, the full-image baseline's), ``loop`` (the
Trainer driver and its hooks, sample grids), ``run`` (creating and resuming run directories),
``state`` (resume state and RNGs), ``datastream`` (resumable batch order), ``logging``
(metrics.jsonl, TensorBoard, progress), ``signals`` (graceful stop), ``device`` (device and
threads), ``distributed`` (torchrun process groups, gradient averaging), ``sync_norm``
(global-batch BN).
"""

from cocogan.training.loop import Hook, SampleGrid, Trainer, TrainingDiverged
from cocogan.training.run import RunSpec, new_trainer, prepare_new_run, resume_trainer

__all__ = ["Hook", "RunSpec", "SampleGrid", "Trainer", "TrainingDiverged", "new_trainer",
           "prepare_new_run", "resume_trainer"]
