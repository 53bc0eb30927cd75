"""Callbacks for multi-task training.

`LossWeightScheduler` changes the task weights of a `Static` weighting between
epochs: the schedule Keras' fixed `loss_weights` cannot express (keras issue
20294).
"""

import math
import numbers

import keras


class LossWeightScheduler(keras.callbacks.Callback):
    """Sets the task loss weights at the start of every epoch.

    The model must be a `MultiTaskModel` compiled with a weighting whose
    weights can be set (`keras_mtl.weighting.Static`). The weights are Keras
    variables read by the train step, so the change applies from the epoch's
    first step without retracing, and checkpoints keep the current values.

    Args:
        schedule: `schedule(epoch, weights) -> weights`, where `epoch` is the
            0-based epoch index and `weights` the current `{task: float}`; it
            returns a dict giving a non-negative weight to some or all tasks
            (tasks left out keep their weight).
        verbose: 1 prints the weights when they change.

    Example:

    >>> import numpy as np
    >>> import keras_mtl
    >>> trunk = keras.Sequential([keras.Input((16, 16, 3)),
    ...                           keras.layers.Conv2D(4, 3, strides=2)])
    >>> model = keras_mtl.MultiTaskModel(
    ...     trunk, [keras_mtl.tasks.Regression("size"),
    ...             keras_mtl.tasks.BinaryClassification("big")],
    ...     head_units=(8,))
    >>> model.compile(weighting=keras_mtl.weighting.Static({"size": 1.0, "big": 0.0}))
    >>> warm_up = LossWeightScheduler(lambda epoch, w: {"big": min(1.0, epoch / 2)})
    >>> x = np.zeros((4, 16, 16, 3), "float32")
    >>> y = {"size": np.ones((4, 1), "float32"), "big": np.ones((4, 1), "float32")}
    >>> history = model.fit(x, y, epochs=3, callbacks=[warm_up], verbose=0)
    >>> [round(w, 2) for w in history.history["weight_big"]]
    [0.0, 0.5, 1.0]
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise ValueError(
                "Invalid value received for argument `schedule`. Expected a "
                "function `schedule(epoch, weights) -> weights`. Received: "
                f"schedule={schedule!r}"
            )
        self.schedule = schedule
        self.verbose = verbose

    def _weighting(self):
        weighting = getattr(self.model, "weighting", None)
        if not hasattr(weighting, "set_task_weights"):
            raise ValueError(
                "`LossWeightScheduler` needs a `MultiTaskModel` compiled with a "
                "weighting whose weights can be set, such as "
                "`keras_mtl.weighting.Static(weights)`. Received: "
                f"weighting={weighting!r}"
            )
        return weighting

    def on_train_begin(self, logs=None):
        self._weighting()

    def on_epoch_begin(self, epoch, logs=None):
        weighting = self._weighting()
        current = weighting.task_weights()
        new = self.schedule(epoch, dict(current))
        if not isinstance(new, dict):
            raise ValueError(
                "The `schedule` of `LossWeightScheduler` must return a dict "
                f"{{task: weight}}. Received at epoch {epoch}: {new!r}"
            )
        unknown = sorted(set(new) - set(current))
        bad = {
            k: v
            for k, v in new.items()
            if isinstance(v, bool)
            or not isinstance(v, numbers.Real)
            or not math.isfinite(v)
            or v < 0
        }
        if unknown or bad:
            raise ValueError(
                "The `schedule` of `LossWeightScheduler` must return finite "
                f"non-negative weights for tasks among {sorted(current)}. "
                f"Received at epoch {epoch}: {new!r} (unknown tasks: {unknown}; "
                f"invalid weights: {sorted(bad)})"
            )
        weighting.set_task_weights(new)
        if self.verbose:
            updated = weighting.task_weights()
            if updated != current:
                print(f"\nEpoch {epoch + 1}: LossWeightScheduler set task weights to {updated}.")
