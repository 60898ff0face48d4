"""The project's own EMA trainer (a what-if of the user's training) and the runs it makes. Reads no files:
frames come from the pipeline; saving goes through `rvq_viewer.io.save`."""

from .history import RunHistory, describe_settings, settings_diff, threshold_meaning
from .run import (BATCH_INTERVAL, EVAL_FRAMES, MAX_TRAIN_FRAMES, Evaluation, StepBatch, TrainControl, TrainingFrames,
                  TrainStatus, evaluate_codebooks, loaded_codebooks, loaded_codebooks_reason, train_steps)
from .trainer import StepStats, Trainer, TrainSettings

__all__ = ["BATCH_INTERVAL", "EVAL_FRAMES", "MAX_TRAIN_FRAMES", "Evaluation", "RunHistory", "StepBatch", "StepStats",
           "TrainControl", "TrainSettings", "Trainer", "TrainStatus", "TrainingFrames", "describe_settings",
           "evaluate_codebooks", "loaded_codebooks", "loaded_codebooks_reason", "settings_diff", "threshold_meaning",
           "train_steps"]
