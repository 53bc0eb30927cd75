"""`MultiTaskModel`: one shared trunk, one head per task, one `model.fit`.

The model is a Functional `keras.Model` (raw image, then `ImagePreprocessing`,
then the trunk, then the heads) whose outputs are a dict keyed by task name.
It knows where the shared part ends: `representation(x)` gives the trunk's
output `z`, and `heads[name](z)` one task's prediction, which is the boundary
gradient-level weighting methods work at.

The trunk may also give each task its own representation: a trunk whose
output is a dict `{task: z_t}` (the architectures of
`keras_mtl.architectures`, or heads attached at other backbone layers with a
task's `attach_at=`). Head t then reads `z_t`, and `representation(x)` is the
dict. There is no single shared `z` then, so gradient-level methods run in
`mode="params"` only.

What it adds to a plain multi-output Keras model lives in `compile()` and
`compute_loss()` / `compute_metrics()`; `fit`, `evaluate`, `predict`,
callbacks and `.keras` saving are stock Keras:

- losses and metrics come from the tasks (`"auto"`); History shows each
  task's loss and metrics (`age_loss`, `age_mae`, `val_gender_accuracy`);
- a missing label (see `keras_mtl.tasks`) or a per-task sample weight of 0
  adds no loss and no metric update. A task's loss is the sum of its weighted
  per-example losses over the number of labelled examples (pixels for dense
  tasks), so with every label present it equals Keras' own
  `"sum_over_batch_size"` reduction, and a batch with no label for a task
  gives that task a loss of exactly 0;
- the per-task losses are combined by `loss_weights` (a fixed weighted sum,
  as Keras does) or by a `weighting=` method from `keras_mtl.weighting`;
- a non-finite (NaN or infinite) training loss stops `fit` at once with a
  `FloatingPointError` naming the epoch, the step and the tasks whose loss is
  not finite. It is raised before any later callback sees that step, so no
  checkpoint is written from the broken weights: `ModelCheckpoint` files and
  `BackupAndRestore` backups keep the last finite state. (NaN *labels* are
  not errors: they mark missing labels, see `keras_mtl.tasks`.)
"""

import keras
import numpy as np
from keras import ops
# Keras' own helper: under tf.distribute a replica's loss is 1/N of the total.
from keras.src.losses.loss import scale_loss_for_distribution
from keras.src.saving import serialization_lib

from keras_mtl import gradients
from keras_mtl import optimizers as optimizers_lib
from keras_mtl.data import SourceValidation
from keras_mtl import tasks as tasks_lib
from keras_mtl import weighting as weighting_lib
from keras_mtl.heads import build_head
from keras_mtl.preprocessing import ImagePreprocessing
from keras_mtl.weighting.base import WeightingCallback


@keras.saving.register_keras_serializable(package="keras_mtl")
class MultiTaskModel(keras.Model):
    """A hard-parameter-sharing multi-task model (a "HydraNet").

    Most users build it with `keras_mtl.build_model`, which also resolves
    backbone names and weights; the constructor takes a ready trunk.

    Args:
        trunk: The shared `keras.Model`, from preprocessed images to a feature
            map `(batch, h, w, c)` or a vector `(batch, features)`.
        tasks: List of `keras_mtl.tasks.Task`, one head each.
        input_shape: `(height, width, channels)` of the raw images. Defaults
            to the trunk's input shape.
        preprocessing: `ImagePreprocessing` mode put before the trunk.
        head_units: Widths of the hidden layers of each head.
        dropout: Dropout rate in the heads.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    >>> import keras_mtl
    >>> trunk = keras.Sequential([keras.Input((16, 16, 3)),
    ...                           keras.layers.Conv2D(4, 3, strides=2)])
    >>> model = keras_mtl.MultiTaskModel(
    ...     trunk, [keras_mtl.tasks.Regression("size"),
    ...             keras_mtl.tasks.BinaryClassification("big")],
    ...     head_units=(8,))
    >>> sorted(model.output_names)
    ['big', 'size']
    """

    def __init__(
        self,
        trunk,
        tasks,
        input_shape=None,
        preprocessing="none",
        head_units=(256,),
        dropout=0.0,
        **kwargs,
    ):
        tasks = tasks_lib.check_tasks(tasks)
        if input_shape is None:
            input_shape = tuple(trunk.inputs[0].shape[1:])
        input_shape = tuple(input_shape)
        head_units = _check_units(head_units)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(
                "Invalid value received for argument `dropout`. Expected a "
                f"float in [0, 1). Received: dropout={dropout!r}"
            )
        if any(t.attach_at for t in tasks) and not isinstance(_trunk_output(trunk), dict):
            trunk = _branched_trunk(trunk, tasks)
        feature_shapes = _feature_shapes(trunk, tasks)
        for t in tasks:
            if t.kind == "dense" and len(feature_shapes[t.name]) != 3:
                raise ValueError(
                    "Invalid value received for argument `backbone`. Dense task "
                    f"{t.name!r} needs a backbone that exposes a feature map "
                    f"(batch, height, width, channels); {trunk.name!r} gives it "
                    f"(batch, {', '.join(map(str, feature_shapes[t.name]))})."
                )

        # === Layers ===
        preprocess = ImagePreprocessing(preprocessing, name="preprocessing")
        heads = {
            t.name: build_head(t, feature_shapes[t.name], input_shape, head_units, dropout)
            for t in tasks
        }

        # === Functional Model ===
        # The trunk's dtype: float images, or token ids / strings for text.
        images = keras.Input(shape=input_shape, dtype=trunk.inputs[0].dtype, name="image")
        representation = trunk(preprocess(images))
        outputs = {
            name: head(_head_input(representation, name)) for name, head in heads.items()
        }
        super().__init__(inputs=images, outputs=outputs, **kwargs)

        # === Config ===
        self.trunk = trunk
        self.preprocess = preprocess
        self.heads = heads
        self.tasks = tasks
        self.image_shape = input_shape
        self.preprocessing = preprocessing
        self.head_units = head_units
        self.dropout = dropout
        self.weighting = None

    # --- the shared boundary ------------------------------------------------
    @property
    def task_names(self):
        return [t.name for t in self.tasks]

    @property
    def shares_representation(self):
        """Whether all heads read one `z` (False for per-task trunks)."""
        return not isinstance(_trunk_output(self.trunk), dict)

    def representation(self, images, training=False):
        """The shared representation `z` (the trunk's output): a tensor, or
        `{task: z_t}` for a trunk with per-task representations."""
        return self.trunk(self.preprocess(images), training=training)

    def head_input(self, z, name):
        """What head `name` reads from the representation `z`."""
        return _head_input(z, name)

    def shared_variables(self):
        """Trainable variables of the shared trunk."""
        return self.trunk.trainable_variables

    # --- compile ----------------------------------------------------------------
    def compile(
        self,
        optimizer="auto",
        loss="auto",
        metrics="auto",
        loss_weights=None,
        weighting=None,
        **kwargs,
    ):
        """Configures the model for training.

        Args:
            optimizer: A Keras optimizer or its name; `"auto"` is Adam with
                learning rate 1e-3.
            loss: `"auto"` (each task's own loss) or a dict `{task: loss}`
                overriding some of them.
            metrics: `"auto"` (each task's metrics) or a dict
                `{task: [metrics]}` replacing some of them.
            loss_weights: Optional dict `{task: float}` of fixed weights
                (default 1 each), as in Keras. Not combinable with `weighting`.
            weighting: A `keras_mtl.weighting.Weighting` (or its registered
                name) that combines the per-task losses; its task weights
                are reported as `weight_<task>` metrics.
            **kwargs: Other `keras.Model.compile` arguments (`run_eagerly`,
                `jit_compile`, `steps_per_execution`, ...).
        """
        names = self.task_names
        if "weighted_metrics" in kwargs:
            raise ValueError(
                "`weighted_metrics` is not supported: task metrics always use "
                "the per-task sample weights and missing-label masks. Pass "
                f"`metrics=` instead. Received: weighted_metrics={kwargs['weighted_metrics']!r}"
            )
        self._task_loss_fns = self._resolve_losses(loss)
        self._task_metrics = self._resolve_metrics(metrics)
        self._loss_weights = self._resolve_loss_weights(loss_weights)
        if weighting is not None and loss_weights is not None:
            raise ValueError(
                "Pass either `loss_weights` or `weighting`, not both. Received: "
                f"loss_weights={loss_weights!r}, weighting={weighting!r}"
            )
        self.weighting = self._resolve_weighting(weighting)
        self._task_loss_trackers = {
            n: keras.metrics.Mean(name=f"{n}_loss") for n in names
        }
        self._weight_tracker = (
            TaskWeightsMean(names) if self.weighting is not None else None
        )
        super().compile(
            optimizer=keras.optimizers.Adam() if optimizer == "auto" else optimizer,
            **kwargs,
        )
        # `LearningRateMultipliers` keys name this model's trunk, heads and
        # layers (also when `load_model` compiles it again).
        optimizers_lib.bind(self.optimizer, self)
        self._compile_config = serialization_lib.SerializableDict(
            optimizer=optimizer,
            loss=loss,
            metrics=metrics,
            loss_weights=loss_weights,
            weighting=weighting,
            **kwargs,
        )

    def get_compile_config(self):
        if self.compiled and hasattr(self, "_compile_config"):
            return self._compile_config.serialize()
        return {}

    def compile_from_config(self, config):
        """Compiles from `get_compile_config()` (used by `load_model`)."""
        config = serialization_lib.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _check_task_keys(self, argument, value):
        unknown = sorted(set(value) - set(self.task_names))
        if unknown:
            raise ValueError(
                f"Invalid value received for argument `{argument}`. Expected "
                f"keys among the task names {self.task_names}. Received "
                f"unknown keys {unknown} in {argument}={value!r}"
            )

    def _resolve_losses(self, loss):
        if loss == "auto" or loss is None:
            loss = {}
        if not isinstance(loss, dict):
            raise ValueError(
                "Invalid value received for argument `loss`. Expected 'auto' or "
                f"a dict {{task: loss}}. Received: loss={loss!r}"
            )
        self._check_task_keys("loss", loss)
        fns = {}
        for task in self.tasks:
            if task.name in loss:
                task = type(task).from_config({**task.get_config(), "loss": loss[task.name]})
            fns[task.name] = task.loss_fn()
        return fns

    def _resolve_metrics(self, metrics):
        if metrics == "auto" or metrics is None:
            metrics = {}
        if not isinstance(metrics, dict):
            raise ValueError(
                "Invalid value received for argument `metrics`. Expected 'auto' "
                f"or a dict {{task: [metrics]}}. Received: metrics={metrics!r}"
            )
        self._check_task_keys("metrics", metrics)
        resolved = {}
        for task in self.tasks:
            chosen = metrics.get(task.name, task.metrics())
            if not isinstance(chosen, (list, tuple)):
                chosen = [chosen]
            resolved[task.name] = [_task_metric(task.name, m) for m in chosen]
        return resolved

    def _resolve_loss_weights(self, loss_weights):
        if loss_weights is None:
            return {n: 1.0 for n in self.task_names}
        if not isinstance(loss_weights, dict):
            raise ValueError(
                "Invalid value received for argument `loss_weights`. Expected a "
                f"dict {{task: float}}. Received: loss_weights={loss_weights!r}"
            )
        self._check_task_keys("loss_weights", loss_weights)
        for name, w in loss_weights.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
                raise ValueError(
                    "Invalid value received for argument `loss_weights`. Expected "
                    f"non-negative floats. Received: loss_weights[{name!r}]={w!r}"
                )
        return {n: float(loss_weights.get(n, 1.0)) for n in self.task_names}

    def _resolve_weighting(self, weighting):
        if weighting is None:
            return None
        weighting = weighting_lib.get(weighting)
        if weighting.level == "gradient":
            self._check_gradient_weighting(weighting)
        if weighting.task_names is None:  # not built yet (or just deserialised)
            weighting.build({n: () for n in self.task_names})
        elif list(weighting.task_names) != self.task_names:
            raise ValueError(
                "Invalid value received for argument `weighting`. It was built "
                f"for the tasks {weighting.task_names}; this model has "
                f"{self.task_names}. Pass a new instance."
            )
        return weighting

    def _check_gradient_weighting(self, weighting):
        """Gradient-level methods need what `keras_mtl.gradients` supports."""
        problem = None
        if keras.backend.backend() not in ("tensorflow", "jax"):
            problem = f"the {keras.backend.backend()!r} backend (TensorFlow and JAX only)"
        elif keras.backend.backend() == "jax" and keras.distribution.distribution() is not None:
            problem = "a `keras.distribution` on JAX (use TensorFlow's tf.distribute)"
        elif weighting.mode == "representation" and not self.shares_representation:
            problem = (
                "mode='representation' on a trunk with per-task representations "
                f"(outputs {sorted(self.trunk.output)}): there is no single shared `z`; "
                "pass mode='params'"
            )
        elif keras.mixed_precision.dtype_policy().name != "float32":
            problem = f"the dtype policy {keras.mixed_precision.dtype_policy().name!r} (float32 only for now)"
        else:
            shared = {id(v) for v in self.trunk.trainable_variables}
            shared |= {id(v) for h in self.heads.values() for v in h.trainable_variables}
            others = [v.path for v in self.trainable_variables if id(v) not in shared]
            if others:
                problem = f"trainable variables outside the trunk and heads: {others}"
        if problem:
            raise ValueError(
                "Invalid value received for argument `weighting`. Gradient-level "
                f"method {type(weighting).__name__} cannot run with {problem}. "
                "Use a loss-level method instead."
            )

    @property
    def metrics(self):
        metrics = super().metrics
        if self.compiled:
            for name in self.task_names:
                metrics.append(self._task_loss_trackers[name])
                metrics.extend(self._task_metrics[name])
            if self._weight_tracker is not None:
                metrics.append(self._weight_tracker)
        return metrics

    def fit(self, *args, callbacks=None, validation_data=None, **kwargs):
        callbacks, validation_data = self.fit_callbacks(callbacks, validation_data, kwargs)
        return super().fit(
            *args, callbacks=callbacks, validation_data=validation_data, **kwargs
        )

    def fit_callbacks(self, callbacks, validation_data, fit_kwargs):
        """The callbacks `fit` puts before the user's, and the validation
        data left for Keras (`fit_kwargs` loses `validation_freq` when the
        sources are validated here)."""
        callbacks = list(callbacks or [])
        if isinstance(validation_data, dict):
            # {source: dataset}: evaluated source by source at epoch end
            # (`val_<source>_<task>_<metric>`), before any callback that may
            # monitor those keys, as Keras' own validation is.
            callbacks.insert(0, SourceValidation(
                validation_data, frequency=fit_kwargs.pop("validation_freq", 1)))
            validation_data = None
        if self.weighting is not None:
            # First, so that checkpoints written at epoch end see its update.
            callbacks.insert(0, WeightingCallback(self.weighting))
        # Before every other callback: a checkpoint must never see NaN weights.
        callbacks.insert(0, _StopOnNonFiniteLoss(self.task_names))
        return callbacks, validation_data

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' TF trainer reduces the whole first (nested) batch with one
        # `strategy.reduce` to build metrics symbolically, which
        # MultiWorkerMirroredStrategy refuses (keras-team/keras#20585). The
        # build needs shapes and dtypes only: give it this worker's first
        # replica batch, read the way Keras reads it.
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is not None and data_batch is None and _is_multi_worker(strategy):
            for _, _, it in iterator:
                batch = next(it)
                data_batch = keras.tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], batch
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    # --- labels ----------------------------------------------------------------
    def _targets(self, y, sample_weight):
        """Checks labels, then returns `(labels, keep, weights)` per task.

        `keep` is True where a label is present and its sample weight is
        positive; `weights` is the sample weight where kept, 0 elsewhere.
        Within one train/test step, Keras calls `compute_loss` then
        `compute_metrics` with the same `y` and `sample_weight` objects: the
        second call reuses the first one's result, so the masks are built
        once per step.
        """
        cache = getattr(self, "_step_targets", None)
        if cache is None:
            return self._prepare_targets(y, sample_weight)
        if not cache or cache[0] is not y or cache[1] is not sample_weight:
            cache[:] = [y, sample_weight, self._prepare_targets(y, sample_weight)]
        return cache[2]

    def _in_step(self, step, *args):
        # A plain attribute (not tracked by Keras), alive for one step only.
        object.__setattr__(self, "_step_targets", [])
        try:
            return step(*args)
        finally:
            object.__setattr__(self, "_step_targets", None)

    def _prepare_targets(self, y, sample_weight):
        names = self.task_names
        if isinstance(y, (list, tuple)) and len(y) == len(names):
            y = dict(zip(names, y))
        elif not isinstance(y, dict):
            if len(names) != 1:
                raise ValueError(
                    "Invalid labels: expected a dict {task: labels} with keys "
                    f"{names}. Received labels of type {type(y).__name__}."
                )
            y = {names[0]: y}
        missing = sorted(set(names) - set(y))
        unknown = sorted(set(y) - set(names))
        if missing or unknown:
            raise ValueError(
                f"Invalid labels: expected a dict with exactly the task keys "
                f"{names}. Missing keys: {missing}; unknown keys: {unknown}. "
                "(Mark an absent label with the task's missing marker or a "
                "sample weight of 0.)"
            )
        if isinstance(sample_weight, dict):
            self._check_task_keys("sample_weight", sample_weight)
        labels, keep, weights = {}, {}, {}
        for task in self.tasks:
            labels[task.name], absent = task.prepare_labels(y[task.name])
            self._check_label_shape(task, labels[task.name], y[task.name])
            sw = sample_weight.get(task.name) if isinstance(sample_weight, dict) else sample_weight
            kept = ops.logical_not(absent)
            w = ops.cast(kept, "float32")
            if sw is not None:
                sw = _broadcastable(ops.cast(sw, "float32"), len(kept.shape))
                kept = ops.logical_and(kept, ops.greater(sw, 0))
                w = ops.where(kept, sw, 0.0)
            keep[task.name], weights[task.name] = kept, w
        return labels, keep, weights

    def _check_label_shape(self, task, labels, original):
        expected = task.label_shape(None, self.image_shape)
        got = tuple(labels.shape)
        if len(got) != len(expected) or any(
            e is not None and g is not None and e != g for e, g in zip(expected, got)
        ):
            raise ValueError(
                f"Invalid labels for task {task.name!r}: expected shape "
                f"{('batch',) + expected[1:]} ({type(task).__name__}), received "
                f"labels of shape {_shape_text(original)}."
            )

    # --- losses and metrics ------------------------------------------------
    def task_loss_terms(self, y, y_pred, sample_weight=None):
        """Per-task `(sums, counts)`: summed weighted losses of the labelled
        examples (pixels) and how many there are, before the division."""
        labels, keep, weights = self._targets(y, sample_weight)
        sums, counts = {}, {}
        for name in self.task_names:
            values = self._task_loss_fns[name](labels[name], y_pred[name])
            values = ops.cast(values, "float32")
            sums[name] = ops.sum(ops.where(keep[name], values * weights[name], 0.0))
            counts[name] = ops.sum(ops.cast(keep[name], "float32"))
        return sums, counts

    def task_losses(self, y, y_pred, sample_weight=None):
        """Per-task losses `{task: scalar}`, missing labels masked."""
        sums, counts = self.task_loss_terms(y, y_pred, sample_weight)
        return {n: ops.divide_no_nan(sums[n], counts[n]) for n in self.task_names}

    def combine_losses(self, losses, training=False):
        """Combines per-task losses into `(total, {task: weight})`."""
        if self.weighting is not None:
            return self.weighting(losses, training=training)
        weights = self._loss_weights
        total = ops.sum(ops.stack([weights[n] * losses[n] for n in self.task_names]))
        return total, weights

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        sums, counts = self.task_loss_terms(y, y_pred, sample_weight)
        losses = {n: ops.divide_no_nan(sums[n], counts[n]) for n in self.task_names}
        total, weights = self.combine_losses(losses, training=training)
        self.track_losses(losses, weights, counts)
        total = scale_loss_for_distribution(total)
        for extra in self.losses:
            total = total + self._aggregate_additional_loss(extra)
        return total

    def track_losses(self, losses, weights, counts):
        """Updates the `<task>_loss` and `weight_<task>` metrics.

        Each task's loss is weighted by its number of labelled examples
        (pixels), so `<task>_loss` is the mean over the epoch's labelled
        examples: batches without a label for the task (other sources'
        batches under `keras_mtl.data.interleave`) do not pull it to 0.
        """
        for name in self.task_names:
            self._task_loss_trackers[name].update_state(losses[name], sample_weight=counts[name])
        if self._weight_tracker is not None:
            self._weight_tracker.update_state(ops.stack([weights[n] for n in self.task_names]))

    def train_step(self, *args):
        # JAX's trainer passes (state, data); TensorFlow and torch pass (data,).
        if self.weighting is not None and self.weighting.level == "gradient":
            step = gradients.train_step
            if keras.backend.backend() == "jax":
                from keras_mtl import gradients_jax  # jax is optional

                step = gradients_jax.train_step
            return self._multi_worker_logs(self._in_step(step, self, *args))
        return self._multi_worker_logs(self._in_step(super().train_step, *args))

    def test_step(self, *args):
        return self._multi_worker_logs(self._in_step(super().test_step, *args))

    def _multi_worker_logs(self, logs):
        # Under MultiWorkerMirroredStrategy, Keras' TF trainer averages each
        # log over replicas *and its axis 0*, which fails on scalars
        # (keras-team/keras#20585): give each log a leading axis of 1, which
        # that reduction removes again.
        if not _is_multi_worker(getattr(self, "_distribute_strategy", None)):
            return logs
        return keras.tree.map_structure(lambda v: ops.expand_dims(v, 0), logs)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        labels, _, weights = self._targets(y, sample_weight)
        for name in self.task_names:
            for metric in self._task_metrics[name]:
                metric.update_state(labels[name], y_pred[name], sample_weight=weights[name])
        return self.get_metrics_result()

    # --- serialisation ----------------------------------------------------------
    # Keras saves layer variables but not `SeedGenerator` states: a run
    # resumed by `BackupAndRestore` or from a `.keras` file would then draw
    # other dropout masks than the run it continues. The model saves its
    # layers' generator states (the weighting saves its own).
    def _seed_states(self):
        return [
            generator.state
            for layer in self._flatten_layers(include_self=False)
            if not isinstance(layer, weighting_lib.Weighting)
            for generator in layer._seed_generators
        ]

    def save_own_variables(self, store):
        super().save_own_variables(store)
        for i, state in enumerate(self._seed_states()):
            store[f"seed_{i}"] = state

    def load_own_variables(self, store):
        states = self._seed_states()
        saved = sorted(k for k in store.keys() if k.startswith("seed_"))
        if len(saved) != len(states):
            raise ValueError(
                f"Model {self.name!r} has {len(states)} random-state variables "
                f"(dropout seeds) but the file holds {len(saved)}: it was saved "
                "from a model with other layers."
            )
        super().load_own_variables({k: store[k] for k in store.keys() if k not in saved})
        for i, state in enumerate(states):
            state.assign(store[f"seed_{i}"])

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "trunk": keras.saving.serialize_keras_object(self.trunk),
            "tasks": [keras.saving.serialize_keras_object(t) for t in self.tasks],
            "input_shape": list(self.image_shape),
            "preprocessing": self.preprocessing,
            "head_units": list(self.head_units),
            "dropout": self.dropout,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["trunk"] = keras.saving.deserialize_keras_object(
            config["trunk"], custom_objects=custom_objects
        )
        config["tasks"] = [
            keras.saving.deserialize_keras_object(t, custom_objects=custom_objects)
            for t in config["tasks"]
        ]
        return cls(**config)


class _StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `FloatingPointError` at the first step whose loss is not finite
    (see the module docstring)."""

    def __init__(self, task_names):
        super().__init__()
        self.task_names = task_names
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or np.isfinite(loss):
            return
        culprits = {
            n: float(logs[f"{n}_loss"]) for n in self.task_names
            if f"{n}_loss" in logs and not np.isfinite(logs[f"{n}_loss"])
        }
        where = culprits or "none: the weighting or a regularisation loss"
        raise FloatingPointError(
            f"Training stopped at epoch {self.epoch + 1}, step {batch + 1}: the loss is "
            f"{float(loss)} (tasks with a non-finite loss: {where}). The model's weights "
            "may no longer be finite; checkpoints written before this step were left "
            "untouched (resume from them). Look for labels far outside the task's range "
            "or a learning rate that is too high."
        )


class TaskWeightsMean(keras.metrics.Metric):
    """Epoch mean of every task's weight, reported as `weight_<task>`.

    One vector state for all tasks (not one `Mean` per task): the weights are
    logged every step, so this keeps their cost to two variable updates.
    """

    def __init__(self, task_names, name="task_weights", **kwargs):
        super().__init__(name=name, **kwargs)
        self.task_names = list(task_names)
        self.total = self.add_variable(
            shape=(len(self.task_names),), initializer="zeros", name="total"
        )
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, weights):
        self.total.assign_add(ops.cast(weights, self.dtype))
        self.count.assign_add(ops.ones((), self.dtype))

    def result(self):
        mean = ops.divide_no_nan(self.total, self.count)
        return {f"weight_{n}": mean[i] for i, n in enumerate(self.task_names)}

    def get_config(self):
        return {**super().get_config(), "task_names": self.task_names}


def _trunk_output(trunk):
    """The trunk's symbolic output: a tensor, or `{task: tensor}`."""
    if isinstance(trunk, keras.Sequential):  # its `output` needs a call
        return trunk.outputs[0]
    return trunk.output


def _head_input(z, name):
    return z[name] if isinstance(z, dict) else z


def _branched_trunk(trunk, tasks):
    """The trunk with each task's features read at its `attach_at` layer
    (the trunk's output for tasks without one): `{task: features}`."""
    names = [layer.name for layer in trunk.layers]
    outputs = {}
    for task in tasks:
        if not task.attach_at:
            outputs[task.name] = trunk.outputs[0]
            continue
        if task.attach_at not in names:
            raise ValueError(
                f"Invalid value received for argument `attach_at` of task {task.name!r}. "
                f"Expected the name of a layer of the backbone {trunk.name!r}: one of "
                f"{names}. Received: attach_at={task.attach_at!r}"
            )
        layer = trunk.get_layer(task.attach_at)
        output = getattr(layer, "output", None) if len(layer._inbound_nodes) == 1 else None
        if not isinstance(output, keras.KerasTensor) or len(output.shape) not in (2, 4):
            raise ValueError(
                f"Invalid value received for argument `attach_at` of task {task.name!r}. "
                f"Expected a layer called once with a feature-map or vector output; "
                f"{task.attach_at!r} is called {len(layer._inbound_nodes)} times or gives "
                f"{getattr(output, 'shape', 'several outputs')}."
            )
        outputs[task.name] = output
    return keras.Model(trunk.inputs, outputs, name=trunk.name)


def _feature_shapes(trunk, tasks):
    """`{task: shape of what its head reads}`, without the batch axis."""
    names = [t.name for t in tasks]
    output = _trunk_output(trunk)
    if not isinstance(output, dict):
        return {n: tuple(output.shape[1:]) for n in names}
    if sorted(trunk.output) != sorted(names):
        raise ValueError(
            "Invalid value received for argument `trunk`. A trunk with per-task "
            f"outputs needs exactly one output per task {sorted(names)}. "
            f"Received outputs {sorted(trunk.output)}."
        )
    shapes = {n: tuple(trunk.output[n].shape[1:]) for n in names}
    bad = {n: s for n, s in shapes.items() if len(s) not in (1, 3)}
    if bad:
        raise ValueError(
            "Invalid value received for argument `trunk`. Expected each task's "
            "representation to be a feature map (batch, height, width, channels) "
            f"or a vector (batch, features). Received shapes {bad}."
        )
    return shapes


def _shape_text(x):
    return tuple("batch" if d is None else d for d in ops.convert_to_tensor(x).shape)


def _broadcastable(sample_weight, rank):
    """Gives per-example weights `(batch,)` or `(batch, 1)` the loss's rank."""
    if len(sample_weight.shape) > rank:
        sample_weight = ops.reshape(sample_weight, ops.shape(sample_weight)[:rank])
    while len(sample_weight.shape) < rank:
        sample_weight = ops.expand_dims(sample_weight, -1)
    return sample_weight


def _check_units(units):
    if isinstance(units, int) and not isinstance(units, bool):
        units = (units,)
    try:
        units = tuple(units)
    except TypeError:
        units = None
    if units is None or not all(
        isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in units
    ):
        raise ValueError(
            "Invalid value received for argument `head_units`. Expected a tuple "
            f"of positive integers. Received: head_units={units!r}"
        )
    return units


def _task_metric(task_name, metric):
    """A metric named `<task>_<metric>` (so History reads `age_mae`)."""
    name = metric if isinstance(metric, str) else getattr(metric, "name", None)
    if isinstance(metric, str):
        metric = keras.metrics.get(metric)
    if not isinstance(metric, keras.metrics.Metric):
        if callable(metric) and not isinstance(metric, type):
            return keras.metrics.MeanMetricWrapper(metric, name=f"{task_name}_{name or metric.__name__}")
        raise ValueError(
            "Invalid value received for argument `metrics`. Expected metric "
            f"names, functions or `keras.metrics.Metric` instances. Received: {metric!r}"
        )
    config = metric.get_config()
    config["name"] = f"{task_name}_{name}"
    return type(metric).from_config(config)


def _is_multi_worker(strategy):
    if strategy is None or keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
