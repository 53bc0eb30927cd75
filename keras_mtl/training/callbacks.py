"""The callbacks `MultiTaskModel.fit` puts before the user's.

- `StopOnNonFinite`: Keras' `TerminateOnNaN(raise_error=True)` for a
  multi-task step. The step logs `loss` as NaN when any task loss, the total
  or any gradient is not finite (`keras_mtl.training.step`); this callback,
  first in the list, raises a `FloatingPointError` at that batch's end,
  before any later callback (a `ModelCheckpoint`, a `BackupAndRestore`)
  could save the weights the step wrote.
- `WeightingEpochs`: forwards epoch events to the weighting (DWA's epoch
  losses), before checkpoints save its state.
"""

import math

import keras


class StopOnNonFinite(keras.callbacks.TerminateOnNaN):
    """Raises `FloatingPointError` at the first non-finite training step.

    Args:
        task_names: The model's tasks (their `<task>_loss` logs name the
            culprits).
        weighting: The model's weighting, asked for a hint, or `None`.
    """

    def __init__(self, task_names, weighting=None):
        super().__init__(raise_error=True)
        self.task_names = list(task_names)
        self.weighting = weighting
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        task_losses = {n: float(logs[f"{n}_loss"]) for n in self.task_names if f"{n}_loss" in logs}
        culprits = {n: v for n, v in task_losses.items() if not math.isfinite(v)}
        if culprits:
            what = f"tasks with a non-finite loss: {culprits}"
        else:
            what = (
                "every task loss is finite: the weighting's total, a "
                "regularisation loss or a gradient is not (e.g. inf × 0 in a "
                "backward pass)"
            )
        hint = self.weighting.explain_nonfinite(task_losses) if self.weighting else None
        raise FloatingPointError(
            f"Training stopped at epoch {self.epoch + 1}, step {batch + 1}: the loss is "
            f"{float(loss)} ({what}). "
            + (f"{hint} " if hint else "")
            + "No callback saw this step: checkpoints written before it are intact "
            "(resume from them); the model's weights in memory may not be finite. "
            "Look for non-finite inputs, labels far outside the task's range or a "
            "learning rate that is too high. (`compile(stop_on_nonfinite=False)` "
            "turns this check off.)"
        )


class WeightingEpochs(keras.callbacks.Callback):
    """Calls the weighting's `on_epoch_begin` / `on_epoch_end`."""

    def __init__(self, weighting):
        super().__init__()
        self.weighting = weighting

    def on_epoch_begin(self, epoch, logs=None):
        self.weighting.on_epoch_begin(epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.weighting.on_epoch_end(epoch)
