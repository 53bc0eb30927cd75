"""Callbacks for multi-task training and its diagnostics.

- `LossWeightScheduler` changes the task weights of a `Static` weighting
  between epochs: the schedule Keras' fixed `loss_weights` cannot express
  (keras issue 20294).
- `WeightHistory` records the task weights a weighting method gives each
  epoch (`weight_<task>`), as a dict of lists and TensorBoard scalars.
- `GradientConflict` measures, every few steps on a fixed probe batch, the
  cosine similarity of every pair of task gradients at the shared
  representation `z`: negative values mean the tasks pull the shared features
  in opposite directions, the signal of negative transfer (Yu et al. 2020,
  "Gradient Surgery for Multi-Task Learning", call it conflicting
  gradients). It logs `grad_cosine_<a>_<b>` per epoch (History, Keras'
  `TensorBoard`) and every measurement as TensorBoard scalars.

`keras_mtl.plots` draws what the last two record.
"""

import math
import numbers
import os

import keras
import numpy as np

from keras_mtl import training
from keras_mtl._validation import check_int


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


def _check_log_dir(log_dir):
    if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
        raise ValueError(
            "Invalid value received for argument `log_dir`. Expected None or "
            f"a folder path. Received: log_dir={log_dir!r}"
        )
    return None if log_dir is None else os.fspath(log_dir)


class _ScalarWriter:
    """TensorBoard scalars in `<log_dir>/train`, where Keras' `TensorBoard`
    callback writes its training scalars, so they show side by side.

    Event files are written with TensorFlow's core `tf.summary.write` (TF is
    a dependency of keras_mtl, whatever the Keras backend) and the metadata
    of TensorBoard's scalar plugin, which is what `tf.summary.scalar` writes;
    `tf.summary.scalar` itself lives in the `tensorboard` package, which
    `tensorflow-cpu` does not install, and which is needed only to view them.
    """

    def __init__(self, log_dir):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        self._tf = tf
        self._metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
            data_class=summary_pb2.DATA_CLASS_SCALAR,
        )
        self._writer = tf.summary.create_file_writer(os.path.join(log_dir, "train"))

    def write(self, scalars, step):
        tf = self._tf
        with self._writer.as_default():
            for tag, value in scalars.items():
                tf.summary.write(
                    tag, tf.constant(value, tf.float32), step=int(step),
                    metadata=self._metadata,
                )
        self._writer.flush()

    def close(self):
        self._writer.close()


def _multi_task_model(callback, model):
    """Raises unless `model` is a `MultiTaskModel` (or quacks like one)."""
    if not all(hasattr(model, a) for a in ("task_names", "heads", "representation")):
        raise ValueError(
            f"`{callback}` needs a `keras_mtl.MultiTaskModel`. Received a model "
            f"of type {type(model).__name__}."
        )
    return model


class WeightHistory(keras.callbacks.Callback):
    """Records the task weights of a weighting method, epoch by epoch.

    Every `keras_mtl.weighting` method reports the weight it gives each task
    as the `weight_<task>` metric (for methods whose weights change every
    step, the mean over the epoch's steps). This callback collects them into
    `history`, a dict of lists that `keras_mtl.plots.plot_task_weights`
    draws, and, given a `log_dir`, writes them as TensorBoard scalars
    `task_weights/<task>` (one chart per task, steps = epochs).

    It keeps recording across several `fit` calls; `epochs` holds the epoch
    numbers Keras reports (so `initial_epoch` continues the x axis).

    Args:
        log_dir: Optional folder for TensorBoard event files (give the
            folder of a `keras.callbacks.TensorBoard` to see both side by
            side).

    Attributes:
        history: `{task: [weight per epoch]}`.
        epochs: The epoch indices (0-based), one per recorded value.

    Example:

    >>> import numpy as np
    >>> import keras_mtl
    >>> trunk = keras.Sequential([keras.Input((16, 16, 3)),
    ...                           keras.layers.Conv2D(4, 3, strides=2)])
    >>> model = keras_mtl.MultiTaskModel(
    ...     trunk, [keras_mtl.tasks.Regression("size"),
    ...             keras_mtl.tasks.BinaryClassification("big")],
    ...     head_units=(8,))
    >>> model.compile(weighting="uncertainty")
    >>> weights = WeightHistory()
    >>> x = np.zeros((4, 16, 16, 3), "float32")
    >>> y = {"size": np.ones((4, 1), "float32"), "big": np.ones((4, 1), "float32")}
    >>> _ = model.fit(x, y, epochs=2, callbacks=[weights], verbose=0)
    >>> sorted(weights.history), len(weights.history["size"]), weights.epochs
    (['big', 'size'], 2, [0, 1])
    """

    def __init__(self, log_dir=None):
        super().__init__()
        self.log_dir = _check_log_dir(log_dir)
        self.history = {}
        self.epochs = []
        self._writer = None

    def on_train_begin(self, logs=None):
        model = _multi_task_model("WeightHistory", self.model)
        if getattr(model, "weighting", None) is None:
            raise ValueError(
                "`WeightHistory` records the weights of a weighting method: "
                "compile the model with `weighting=` (e.g. \"equal\", "
                "\"uncertainty\"). Received a model compiled without one "
                "(fixed `loss_weights`)."
            )
        for name in model.task_names:
            self.history.setdefault(name, [])
        if self.log_dir is not None and self._writer is None:
            self._writer = _ScalarWriter(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        names = self.model.task_names
        missing = [f"weight_{n}" for n in names if f"weight_{n}" not in logs]
        if missing:
            raise ValueError(
                f"`WeightHistory` expected the metrics {missing} in the epoch "
                f"logs. Received keys: {sorted(logs)}"
            )
        weights = {n: float(logs[f"weight_{n}"]) for n in names}
        self.epochs.append(int(epoch))
        for name, value in weights.items():
            self.history[name].append(value)
        if self._writer is not None:
            self._writer.write(
                {f"task_weights/{n}": v for n, v in weights.items()}, step=epoch
            )

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def get_config(self):
        return {"log_dir": self.log_dir}


class GradientConflict(keras.callbacks.Callback):
    """Cosine similarity of task gradients at the shared representation.

    Every `every_n_steps` training steps, on a fixed probe batch and in
    inference mode (the model is not changed), it computes each task's
    gradient of its loss with respect to the shared representation `z` (the
    trunk's output, for the whole batch) and the cosine similarity of every
    pair of tasks. +1: the tasks ask the shared features for the same
    change; 0: unrelated; negative: conflicting gradients, where one task's
    step hurts the other (the negative transfer that PCGrad, CAGrad or MGDA
    address). `z` is where representation-mode gradient methods combine
    gradients, so this is the geometry they see.

    A measurement runs eagerly and costs about one training step; it needs
    the TensorFlow or JAX backend (like the gradient-level weighting
    methods).

    A fixed probe batch makes measurements comparable over training. One
    measurement is taken when training begins (it also checks the probe
    batch), then one every `every_n_steps` optimizer steps, and one at the
    end of any epoch that had none. At each epoch end, the mean of the
    epoch's measurements is added to the logs as `grad_cosine_<a>_<b>` (task
    order of the model), so History and a `keras.callbacks.TensorBoard` put
    *after* this callback record it; with `log_dir`, every measurement is
    also written as a TensorBoard scalar `gradient_cosine/<a>_<b>` (steps =
    optimizer steps).

    Args:
        data: The probe batch: `(x, y)` or `(x, y, sample_weight)` with `y`
            a dict `{task: labels}` labelling every task at least once, or a
            batched `tf.data.Dataset` of such tuples (its first batch is
            used).
        every_n_steps: Measure every this many optimizer steps (an integer
            >= 1), or `None` for once per epoch (at its end).
        log_dir: Optional folder for TensorBoard event files.

    Attributes:
        task_names: The model's tasks, in the order of the matrices.
        steps: Optimizer step of each measurement.
        matrices: One `(T, T)` numpy array of cosines per measurement (NaN
            for a pair where a task's gradient is exactly 0).
        norms: One `(T,)` numpy array of gradient norms per measurement.

    Example:

    >>> import numpy as np
    >>> import keras_mtl
    >>> trunk = keras.Sequential([keras.Input((16, 16, 3)),
    ...                           keras.layers.Conv2D(4, 3, strides=2)])
    >>> model = keras_mtl.MultiTaskModel(
    ...     trunk, [keras_mtl.tasks.Regression("a"),
    ...             keras_mtl.tasks.Regression("b")], head_units=(8,))
    >>> model.compile()
    >>> x = np.random.default_rng(0).uniform(size=(8, 16, 16, 3)).astype("float32")
    >>> y = {"a": np.ones((8, 1), "float32"), "b": -np.ones((8, 1), "float32")}
    >>> conflict = GradientConflict((x, y), every_n_steps=2)
    >>> history = model.fit(x, y, batch_size=2, epochs=1, callbacks=[conflict], verbose=0)
    >>> conflict.steps
    [0, 2, 4]
    >>> round(float(conflict.matrices[0][0, 0]), 6)  # a task with itself
    1.0
    >>> "grad_cosine_a_b" in history.history
    True
    """

    def __init__(self, data, every_n_steps=None, log_dir=None):
        super().__init__()
        self.every_n_steps = check_int("every_n_steps", every_n_steps, 1, optional=True)
        self.log_dir = _check_log_dir(log_dir)
        self.x, self.y, self.sample_weight = self._probe_batch(data)
        self.task_names = None
        self.steps = []
        self.matrices = []
        self.norms = []
        self._writer = None
        self._epoch_start = 0
        self._last_step = None

    @staticmethod
    def _probe_batch(data):
        if hasattr(data, "take") and hasattr(data, "element_spec"):  # tf.data
            batches = list(data.take(1))
            if not batches:
                raise ValueError(
                    "Invalid value received for argument `data`. Expected a "
                    "batched dataset with at least one batch. Received an "
                    "empty dataset."
                )
            data = batches[0]
        if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
            raise ValueError(
                "Invalid value received for argument `data`. Expected a probe "
                "batch `(x, y)` or `(x, y, sample_weight)`, or a batched "
                f"`tf.data.Dataset`. Received: data={_short(data)}"
            )
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(tuple(data))
        if not isinstance(y, dict):
            raise ValueError(
                "Invalid value received for argument `data`. Expected labels "
                "`y` as a dict {task: labels}. Received labels of type "
                f"{type(y).__name__}."
            )
        return x, y, sample_weight

    # --- measuring ---------------------------------------------------------------
    def measure(self):
        """Measures once now; returns the `(T, T)` cosine matrix."""
        model = self.model
        if self.task_names is None:  # called outside `fit`
            self.task_names = list(model.task_names)
        grads, _, counts = training.representation_gradients(
            model, self.x, self.y, self.sample_weight
        )
        unlabelled = [n for n in model.task_names if float(counts[n]) == 0]
        if unlabelled:
            raise ValueError(
                "Invalid value received for argument `data`. Expected a probe "
                "batch with labels for every task; it has none for "
                f"{unlabelled}."
            )
        matrix, norms = cosine_matrix(keras.ops.convert_to_numpy(grads))
        step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        self.steps.append(step)
        self.matrices.append(matrix)
        self.norms.append(norms)
        self._last_step = step
        if self._writer is not None:
            self._writer.write(
                {f"gradient_cosine/{a}_{b}": matrix[i, j] for a, b, i, j in self._pairs()},
                step=step,
            )
        return matrix

    def _pairs(self):
        names = self.task_names
        return [
            (names[i], names[j], i, j)
            for i in range(len(names))
            for j in range(i + 1, len(names))
        ]

    def mean_matrix(self, start=0):
        """Mean cosine matrix of the measurements from index `start` on."""
        if not self.matrices[start:]:
            raise ValueError(
                "`GradientConflict` has no measurement to average yet: train "
                "the model with this callback first."
            )
        return np.mean(np.stack(self.matrices[start:]), axis=0)

    # --- callback hooks --------------------------------------------------------
    def on_train_begin(self, logs=None):
        model = _multi_task_model("GradientConflict", self.model)
        if not model.compiled:
            raise ValueError("`GradientConflict` needs a compiled model.")
        if keras.backend.backend() not in ("tensorflow", "jax"):
            raise ValueError(
                "`GradientConflict` needs the TensorFlow or JAX backend. "
                f"Received: backend={keras.backend.backend()!r}"
            )
        if not model.shares_representation:
            raise ValueError(
                "`GradientConflict` measures gradients at the shared "
                "representation; this model's trunk gives each task its own "
                f"({sorted(model.trunk.output)})."
            )
        unknown = sorted(set(self.y) - set(model.task_names))
        missing = [n for n in model.task_names if n not in self.y]
        if unknown or missing:
            raise ValueError(
                "Invalid value received for argument `data`. Expected labels "
                f"for the model's tasks {model.task_names}. Missing: {missing}; "
                f"unknown: {unknown}."
            )
        if self.task_names is not None and self.task_names != model.task_names:
            raise ValueError(
                f"This `GradientConflict` recorded the tasks {self.task_names}; "
                f"the model has {model.task_names}. Use a new instance."
            )
        self.task_names = list(model.task_names)
        if self.log_dir is not None and self._writer is None:
            self._writer = _ScalarWriter(self.log_dir)
        step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        if step != self._last_step:  # a second `fit` may start where one ended
            self.measure()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = len(self.matrices)

    def on_train_batch_end(self, batch, logs=None):
        if self.every_n_steps is None:
            return
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        # `iterations` (not `batch`) counts steps across epochs and under
        # `steps_per_execution`, where this hook runs once per several steps.
        if step // self.every_n_steps > self._last_step // self.every_n_steps:
            self.measure()

    def on_epoch_end(self, epoch, logs=None):
        if len(self.matrices) == self._epoch_start:
            self.measure()
        if logs is not None:
            mean = self.mean_matrix(self._epoch_start)
            for a, b, i, j in self._pairs():
                logs[f"grad_cosine_{a}_{b}"] = float(mean[i, j])

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def get_config(self):
        """The hyperparameters (the probe batch `data` is not config)."""
        return {"every_n_steps": self.every_n_steps, "log_dir": self.log_dir}


def cosine_matrix(grads):
    """Pairwise cosine similarities of per-task gradients.

    Args:
        grads: Array `(T, ...)`: one gradient per task, of any shape (each
            is flattened).

    Returns:
        `(matrix, norms)`: the `(T, T)` cosine matrix (NaN where a
        gradient is exactly 0) and the `(T,)` gradient norms, float64.

    Example:

    >>> matrix, norms = cosine_matrix(np.array([[1.0, 0.0], [1.0, 1.0], [-2.0, 0.0]]))
    >>> np.round(matrix, 3).tolist()
    [[1.0, 0.707, -1.0], [0.707, 1.0, -0.707], [-1.0, -0.707, 1.0]]
    """
    flat = np.asarray(grads, dtype=np.float64).reshape(len(grads), -1)
    gram = flat @ flat.T
    norms = np.sqrt(np.diag(gram))
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = gram / np.outer(norms, norms)
    zero = norms == 0
    matrix[zero, :] = np.nan
    matrix[:, zero] = np.nan
    return np.clip(matrix, -1.0, 1.0), norms


def _short(value, limit=120):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
