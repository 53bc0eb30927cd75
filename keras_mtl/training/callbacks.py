"""The callbacks `MultiTaskModel.fit` puts before the user's.

- `StepGuard`: what Keras' `TerminateOnNaN(raise_error=True)` does (Keras
  3.11 and later), for a multi-task step. A step logs `loss` as NaN when it was not clean: a label outside its
  task's domain or an invalid sample weight, or a task loss, the total or a
  gradient that is not finite (`keras_mtl.models.step_checks`). This
  callback, first in the list, then raises at that batch's end, before any
  later callback (a `ModelCheckpoint`, a `BackupAndRestore`) could save the
  weights the step wrote: a `ValueError` for the data, a `FloatingPointError`
  for the arithmetic.
- `WeightingEpochs`: forwards epoch events to the weighting (DWA's epoch
  losses), before checkpoints save its state.
- `ScheduleEpochs`: tells interleaved datasets the epoch that starts (their
  sampling schedules draw by epoch), so that resumed runs draw the same.
"""

import math

import keras


class StepGuard(keras.callbacks.Callback):
    """Stops at the first step that was not clean, saying what was wrong.

    Args:
        checks: The model's `keras_mtl.models.step_checks.StepChecks`.
        weighting: The model's weighting, asked for a hint, or `None`.
        stop_on_nonfinite: Whether non-finite losses or gradients stop
            training, validation or evaluation (non-finite inputs are then
            not checked at all) (out-of-domain data always does;
            so does an epoch without any labelled example, unless
            `require_labels` is false).
        require_labels: Whether an epoch whose data hold no labelled example
            for any task is an error.
        monitors: `(callback, key)` pairs: the task losses and metrics the
            user's callbacks monitor. One that is NaN at an epoch's end (no
            labelled example of its task) is an error: Keras' monitors take a
            first NaN as the best value and never improve on it, so
            `ModelCheckpoint(save_best_only=True)` would keep that epoch.
    """

    def __init__(self, checks, weighting=None, stop_on_nonfinite=True, require_labels=True,
                 monitors=()):
        super().__init__()
        self.require_labels = require_labels
        self.monitors = list(monitors)
        self.checks = checks
        self.weighting = weighting
        self.stop_on_nonfinite = stop_on_nonfinite
        self.epoch = 0
        self.fitting = False

    def on_train_begin(self, logs=None):
        self.fitting = True

    def on_train_end(self, logs=None):
        self.fitting = False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.trained = None

    def on_test_begin(self, logs=None):
        # The training steps' counts, before validation resets the checks.
        if self.fitting:
            self.trained = self._labelled()

    def on_test_end(self, logs=None):
        if not self.fitting:
            self._require_labels(self._labelled(), "evaluation data", "evaluated")

    def on_epoch_end(self, epoch, logs=None):
        validated = self.trained is not None
        trained = self.trained if validated else self._labelled()
        self._require_labels(trained, f"training data of epoch {epoch + 1}", "trained")
        if validated:
            self._require_labels(
                self._labelled(), f"validation data of epoch {epoch + 1}", "validated")
        for callback, key in self.monitors:
            value = (logs or {}).get(key)
            if value is not None and math.isnan(float(value)):
                data = "validation data" if key.startswith("val_") else "training data"
                raise ValueError(
                    f"Invalid value received for argument `callbacks`: {callback} monitors "
                    f"{key!r}, which is NaN at the end of epoch {epoch + 1}: the {data} of "
                    "that epoch hold no labelled example of its task (or its loss is not "
                    "finite). Keras' monitors would keep a NaN as the best value. Monitor "
                    "the total (`val_loss`) or a task labelled in every epoch's "
                    f"{data}."
                )

    def _sync(self):
        # On JAX, `Callback.model` writes the trainer's state (the checks'
        # variables among it) back into the variables mid-epoch.
        self.model  # noqa: B018

    def _labelled(self):
        self._sync()
        return self.checks.labelled()

    def _require_labels(self, labelled, data, done):
        # Every task without a labelled example: nothing was trained (or
        # validated), and every `<task>_loss` is NaN.
        if not self.require_labels or any(labelled.values()):
            return
        raise ValueError(
            f"Invalid data: the {data} hold no labelled example for any of the tasks "
            f"{list(labelled)}: every label is a missing marker (NaN, or -1 for class "
            f"labels) or has a sample weight of 0, so nothing was {done}."
        )

    def on_batch_end(self, batch, logs=None):
        self._check(logs, "training")

    def on_test_batch_end(self, batch, logs=None):
        self._check(logs, "validation" if self.fitting else "evaluation")

    def _check(self, logs, data):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        # A step was not clean; which one and why is only read now.
        self._sync()
        step = self.checks.first_unclean_step()
        step = "" if step is None else f"step {step + 1} of "
        if data == "training":
            where = f"at epoch {self.epoch + 1}, {step}the training data"
        else:
            where = f"at {step}the {data} data"
        error = self.checks.domain_error(where)
        if error is not None:
            raise error
        if self.stop_on_nonfinite:
            raise self._nonfinite_error(where, logs, data)

    def _nonfinite_error(self, where, logs, data):
        culprits = {n: float(logs.get(f"{n}_loss", math.nan)) for n in self.checks.nonfinite_tasks()}
        if culprits:
            what = f"tasks with a non-finite loss: {culprits}"
        else:
            what = (
                "every task loss is finite: the weighting's total, a "
                "regularisation loss or a gradient is not (e.g. inf × 0 in a "
                "backward pass)"
            )
        task_losses = {
            t.name: float(logs[f"{t.name}_loss"]) for t in self.checks.tasks
            if f"{t.name}_loss" in logs and math.isfinite(float(logs[f"{t.name}_loss"]))
        }
        hint = self.weighting.explain_nonfinite(task_losses) if self.weighting else None
        if data != "training":
            return FloatingPointError(
                f"{data.capitalize()} stopped {where}: the loss is {float(logs['loss'])} "
                f"({what}). Look for non-finite inputs in the {data} data, or weights "
                "that are no longer finite. (`compile(stop_on_nonfinite=False)` turns "
                "this check off.)"
            )
        return FloatingPointError(
            f"Training stopped {where}: the loss is {float(logs['loss'])} ({what}). "
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


class ScheduleEpochs(keras.callbacks.Callback):
    """Tells interleaved datasets which epoch starts, so that a sampling
    schedule draws epoch e's sources in epoch e, resumed runs included.

    `MultiTaskModel.fit` adds it for the datasets `keras_mtl.data.interleave`
    returned (training data, validation data); pass it yourself for a
    dataset you transformed further, or to a plain Keras model:

    >>> import keras, tensorflow as tf, keras_mtl
    >>> def source(task, n):
    ...     return tf.data.Dataset.from_tensor_slices(
    ...         (tf.ones((n, 2)), {task: tf.ones((n, 1))})).batch(2)
    >>> mixed = keras_mtl.data.interleave(
    ...     {"a": source("a", 8), "b": source("b", 4)}, "temperature", temperature=2.0, seed=0)
    >>> trunk = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> model = keras_mtl.MultiTaskModel(
    ...     trunk, [keras_mtl.tasks.Regression("a"), keras_mtl.tasks.Regression("b")])
    >>> model.compile(optimizer="sgd")
    >>> history = model.fit(mixed.map(lambda x, y, w: (2.0 * x, y, w)), epochs=2, verbose=0,
    ...                     callbacks=[keras_mtl.data.ScheduleEpochs(mixed)])
    >>> int(mixed.schedule_epoch.numpy())  # the epoch a next pass would draw for
    2

    Args:
        *datasets: Datasets returned by `keras_mtl.data.interleave`.
    """

    def __init__(self, *datasets):
        super().__init__()
        self.epochs = []
        for i, dataset in enumerate(datasets):
            if not hasattr(dataset, "schedule_epoch"):
                raise ValueError(
                    f"Invalid value received for argument `datasets[{i}]` of "
                    "`ScheduleEpochs`: expected a dataset returned by "
                    "`keras_mtl.data.interleave` (a transformed one loses its "
                    "`schedule_epoch`; pass the one `interleave` returned). "
                    f"Received: {type(dataset).__name__}"
                )
            if dataset.schedule_epoch is not None:  # round-robin: nothing drawn
                self.epochs.append(dataset.schedule_epoch)

    @classmethod
    def of(cls, *candidates):
        """The callback for those of `candidates` that are interleaved
        datasets (anything else is skipped), or `None` if none is."""
        found = [c for c in candidates if getattr(c, "schedule_epoch", None) is not None]
        return cls(*found) if found else None

    def on_epoch_begin(self, epoch, logs=None):
        for variable in self.epochs:
            variable.assign(epoch)
