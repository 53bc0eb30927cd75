"""`MultiTaskModel`: one shared trunk, one head per task, one `model.fit`.

The model is a Functional `keras.Model` (raw input, then `ImagePreprocessing`,
then the trunk, then the heads) whose outputs are a dict keyed by task name.
It knows where the shared part ends: `representation(x)` gives the trunk's
output `z`, and `heads[name](z)` one task's prediction, which is the boundary
gradient-level weighting methods work at. A trunk may also give each task
its own representation `{task: z_t}` (`keras_mtl.models.trunk`); there is no
single shared `z` then, so gradient-level methods run in `mode="params"`.

What it adds to a plain multi-output Keras model lives in `compile()` and
the training step (`keras_mtl.training`); `fit`, `evaluate`, `predict`,
callbacks and `.keras` saving are stock Keras:

- losses and metrics come from the tasks (`"auto"`); History shows each
  task's loss and metrics (`age_loss`, `age_mae`, `val_gender_accuracy`);
- a missing label (see `keras_mtl.tasks`) or a per-task sample weight of 0
  adds no loss and no metric update. A task's loss is the sum of its weighted
  per-example losses over the number of labelled examples (pixels for dense
  tasks), so with every label present it equals Keras' own
  `"sum_over_batch_size"` reduction; a batch with no label for a task gives
  it a loss of 0 and a labelled count of 0, and the count (never the loss's
  value) is what tells the weighting the task is absent. A task with no
  labelled example in a whole epoch (or evaluation) logs NaN for its loss and
  metrics: no score, not a perfect one;
- labels outside their task's domain, invalid sample weights and non-finite
  inputs are errors naming the task (or input), before the first step for
  in-memory arrays, at the step that reads them for datasets
  (`keras_mtl.models.step_checks`); never read as "missing";
- the per-task losses are combined by `loss_weights` (a fixed weighted sum,
  as Keras does) or by a `weighting=` method from `keras_mtl.weighting`;
- a non-finite training step (a task's loss, the total or a gradient) stops
  `fit` with a `FloatingPointError` naming the epoch, the step and the
  tasks, before any later callback sees that step, so no checkpoint is
  written from broken weights (`compile(stop_on_nonfinite=False)` turns it
  off). NaN *labels* are not errors: they mark missing labels.

Keras idioms carry over where they can (a metrics list goes to every task it
fits; `EarlyStopping(monitor="val_age_mae")` needs no `mode`) and are refused
with the multi-task form where they cannot (`class_weight`; a callback
monitoring `val_mae`, or a task metric that is NaN).

`compile()` may be called any number of times: each call replaces the last
one's losses, metrics and weighting whole (`keras_mtl.models.compiled`).
"""

import json
import numbers

import keras
import numpy as np
from keras import ops

from keras_mtl import _keras_compat
from keras_mtl._validation import check_fraction
from keras_mtl._validation import is_int
from keras_mtl import optimizers as optimizers_lib
from keras_mtl import tasks as tasks_lib
from keras_mtl import training as training_lib
from keras_mtl.training.source_validation import SourceValidation
from keras_mtl.heads import build_head
from keras_mtl.models import trunk as trunk_lib
from keras_mtl.models.compiled import Compiled
from keras_mtl.models.step_checks import check_input_arrays
from keras_mtl.models.targets import check_arrays
from keras_mtl.models.targets import prepare
from keras_mtl.preprocessing import ImagePreprocessing
from keras_mtl.training.callbacks import ScheduleEpochs
from keras_mtl.training.callbacks import StepGuard
from keras_mtl.training.callbacks import WeightingEpochs

#: Keys of the model's own store that hold its weighting's state (saved with
#: the model's variables so that a model loading weights before `compile`
#: keeps the state for the `compile` that follows).
_METHOD_KEY = "weighting_method"
_STATE_KEY = "weighting_{}"
#: The tasks the saved heads belong to (checked when loading).
_TASKS_KEY = "tasks"


@keras.saving.register_keras_serializable(package="keras_mtl")
class MultiTaskModel(_keras_compat.MultiWorkerBuild, keras.Model):
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
        several = isinstance(trunk_lib.input_structure(trunk), (dict, list))
        if several:
            _check_several_inputs(trunk, input_shape, preprocessing, tasks)
        else:
            if input_shape is None:
                input_shape = tuple(trunk.inputs[0].shape[1:])
            input_shape = _check_input_shape(input_shape)
        head_units = _check_units(head_units)
        dropout = check_fraction("dropout", dropout)
        if dropout == 1:
            raise ValueError(
                "Invalid value received for argument `dropout`. Expected a "
                f"float in [0, 1). Received: dropout={dropout!r}"
            )
        _check_layer_names(tasks, trunk, several)
        if any(t.attach_at for t in tasks) and not isinstance(trunk_lib.trunk_output(trunk), dict):
            trunk = trunk_lib.branched_trunk(trunk, tasks)
        feature_shapes = trunk_lib.feature_shapes(trunk, tasks)
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
        if several:  # the trunk's own inputs and names, nothing before them
            inputs = trunk_lib.model_inputs(trunk)
            representation = trunk(inputs)
        else:
            # The trunk's dtype: float images, or token ids / strings for text.
            inputs = keras.Input(shape=input_shape, dtype=trunk.inputs[0].dtype, name="image")
            representation = trunk(preprocess(inputs))
        outputs = {
            name: head(trunk_lib.head_input(representation, name))
            for name, head in heads.items()
        }
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.trunk = trunk
        self.preprocess = preprocess
        self.heads = heads
        self.tasks = tasks
        #: `(height, width, channels)` of the image input; None for a trunk
        #: with several inputs.
        self.image_shape = input_shape
        self.several_inputs = several
        self.preprocessing = preprocessing
        self.head_units = head_units
        self.dropout = dropout
        # What the last `compile` made (a plain object: Keras tracks none of
        # it, so a new compile replaces it whole), and a weighting state
        # loaded before any compile.
        self._compiled_state = None
        self._pending_weighting_state = None
        self._evaluating = False

    # --- the shared boundary ------------------------------------------------
    @property
    def task_names(self):
        return [t.name for t in self.tasks]

    @property
    def shares_representation(self):
        """Whether all heads read one `z` (False for per-task trunks)."""
        return not isinstance(trunk_lib.trunk_output(self.trunk), dict)

    def representation(self, images, training=False):
        """The shared representation `z` (the trunk's output): a tensor, or
        `{task: z_t}` for a trunk with per-task representations."""
        if self.several_inputs:
            return self.trunk(images, training=training)
        return self.trunk(self.preprocess(images), training=training)

    def head_input(self, z, name):
        """What head `name` reads from the representation `z`."""
        return trunk_lib.head_input(z, name)

    def shared_variables(self):
        """Trainable variables of the shared trunk."""
        return self.trunk.trainable_variables

    # --- compile ----------------------------------------------------------------
    @property
    def weighting(self):
        """The `keras_mtl.weighting.Weighting` of the last `compile`, or None."""
        state = self._compiled_state
        return state.weighting if state is not None else None

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        metrics="auto",
        loss_weights=None,
        weighting=None,
        stop_on_nonfinite=True,
        default_metrics=True,
        **kwargs,
    ):
        """Configures the model for training; may be called any number of times.

        Each call replaces what the previous one made: its weighting (with
        its state), its metrics and its loss trackers are gone from
        `model.metrics`, `model.variables` and saved files.

        Args:
            optimizer: A Keras optimizer or its name; `"auto"` is Adam with
                learning rate 1e-3.
            loss: `"auto"` (each task's own loss) or a dict `{task: loss}`
                overriding some of them.
            metrics: `"auto"` (each task's own metrics); a list of metrics,
                each added to every task whose labels it reads (as Keras gives
                a list to every output: `["mae"]` to the regression tasks,
                `["accuracy"]` to the classification tasks, resolved as Keras
                resolves it); or a dict `{task: [metrics]}` adding to those
                tasks' own. A metric named like one of a task's own replaces it.
            loss_weights: Optional dict `{task: float}` of fixed weights
                (default 1 each), as in Keras. Not combinable with `weighting`.
            weighting: A `keras_mtl.weighting.Weighting` (or its registered
                name) that combines the per-task losses; its task weights
                are reported as `weight_<task>` metrics. An instance belongs
                to the first model compiled with it.
            stop_on_nonfinite: Whether `fit` stops with a `FloatingPointError`
                at the first step whose losses or gradients are not finite,
                and with a `ValueError` at inputs holding NaN or inf (see the
                module docstring). False suits a model that imputes NaN
                inputs itself.
            default_metrics: Whether each task keeps its own metrics besides
                those of `metrics` (False: only those of `metrics`).
            **kwargs: Other `keras.Model.compile` arguments (`run_eagerly`,
                `jit_compile`, `steps_per_execution`, ...).
        """
        if "weighted_metrics" in kwargs:
            raise ValueError(
                "`weighted_metrics` is not supported: task metrics always use "
                "the per-task sample weights and missing-label masks. Pass "
                f"`metrics=` instead. Received: weighted_metrics={kwargs['weighted_metrics']!r}"
            )
        config = dict(
            optimizer=optimizer, loss=loss, metrics=metrics, loss_weights=loss_weights,
            weighting=weighting, stop_on_nonfinite=stop_on_nonfinite,
            default_metrics=default_metrics, **kwargs,
        )
        state = Compiled.resolve(
            self, loss, metrics, loss_weights, weighting, stop_on_nonfinite, config,
            default_metrics=default_metrics,
        )
        super().compile(
            optimizer=keras.optimizers.Adam() if optimizer == "auto" else optimizer,
            **kwargs,
        )
        self._compiled_state = state
        self._restore_pending_weighting_state()
        # `LearningRateMultipliers` keys name this model's trunk, heads and
        # layers (also when `load_model` compiles it again).
        optimizers_lib.bind(self.optimizer, self)

    @property
    def step_checks(self):
        """The last `compile`'s `keras_mtl.models.step_checks.StepChecks`."""
        self._check_compiled()
        return self._compiled_state.checks

    def get_compile_config(self):
        if not self.compiled or self._compiled_state is None:
            return {}
        return keras.saving.serialize_keras_object(self._compiled_state.config)

    def compile_from_config(self, config):
        """Compiles from `get_compile_config()` (used by `load_model`)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        return super().metrics + self.task_metrics()

    @property
    def stop_on_nonfinite(self):
        """The last `compile`'s `stop_on_nonfinite` (True before any)."""
        state = self._compiled_state
        return state.stop_on_nonfinite if state is not None else True

    def task_metrics(self):
        """The metrics of the last `compile`, each once: every task's loss
        tracker and metrics, then the task-weights tracker."""
        state = self._compiled_state
        return state.all_metrics() if state is not None else []

    # The weighting's variables (learned log-variances, loss histories, seed
    # states) are the model's: `fit` trains and updates them, checkpoints
    # and `.keras` files hold them.
    @property
    def weights(self):
        return _unique(super().weights + (self.weighting.weights if self.weighting else []))

    @property
    def variables(self):
        return _unique(super().variables + (self.weighting.variables if self.weighting else []))

    # --- fit ----------------------------------------------------------------------
    def fit(self, *args, callbacks=None, validation_data=None, **kwargs):
        if kwargs.get("class_weight") is not None:
            raise ValueError(
                "Invalid value received for argument `class_weight`. Keras' "
                "`class_weight` weights the classes of a plain model's single output; "
                f"this model's outputs are a dict of tasks {self.task_names}. Pass per-task sample "
                "weights instead: `sample_weight={task: weights}` (e.g. "
                "`weights = np.vectorize(class_weight.get)(labels)`), or with a "
                "dataset, `(x, y, {task: weights})` elements. "
                f"Received: class_weight={kwargs['class_weight']!r}"
            )
        self._check_arrays(args, kwargs, "in the `y` passed to `fit`")
        self._check_monitors(callbacks, validation_data)
        if isinstance(validation_data, (tuple, list)) and len(validation_data) in (2, 3):
            self._check_arrays(validation_data, {}, "in `validation_data`")
        callbacks, validation_data = self.fit_callbacks(
            callbacks, validation_data, kwargs, fit_args=args)
        try:
            return super().fit(
                *args, callbacks=callbacks, validation_data=validation_data, **kwargs
            )
        except Exception as error:
            # An interleaved source found empty while iterating raises in
            # TensorFlow; the user gets the `ValueError` naming it.
            if "tensorflow" in type(error).__module__:
                from keras_mtl.data.sources import empty_source_error

                clear = empty_source_error(error)
                if clear is not None:
                    raise clear from None
            raise

    def evaluate(self, *args, callbacks=None, **kwargs):
        state = self._compiled_state
        if state is not None and not isinstance(callbacks, keras.callbacks.CallbackList):
            # A call of the user's (`fit` passes its own callbacks, with the
            # guard): out-of-domain labels stop it too.
            callbacks = [StepGuard(state.checks, None, state.stop_on_nonfinite), *(callbacks or [])]
        self._check_arrays(args, kwargs, "in the `y` passed to `evaluate`")
        self._evaluating = True
        try:
            return super().evaluate(*args, callbacks=callbacks, **kwargs)
        finally:
            self._evaluating = False

    def _check_arrays(self, args, kwargs, where):
        """In-memory labels and inputs are checked whole before the first
        step (keys, shapes, label domains, finite inputs): a mistake in them is
        reported before any training. Datasets are checked step by step (`StepChecks`)."""
        x = args[0] if args else kwargs.get("x")
        y = args[1] if len(args) > 1 else kwargs.get("y")
        sample_weight = args[2] if len(args) > 2 else kwargs.get("sample_weight")
        if y is not None and self._compiled_state is not None:
            check_arrays(self.tasks, y, sample_weight, self.image_shape, where)
        if self.stop_on_nonfinite:
            check_input_arrays(x, where.replace("`y`", "`x`"))

    def _check_monitors(self, callbacks, validation_data):
        """A callback monitoring a plain Keras key this model does not log
        (`val_accuracy`, `val_mae`: per-task metrics are `<task>_<metric>`)
        would only warn, every epoch, and never act."""
        if self._compiled_state is None:
            return
        keys = [m for m in self.metrics_names if m != "loss"] + (
            [k for k in self._compiled_state.weight_tracker.result()]
            if self._compiled_state.weight_tracker is not None else []
        )
        for callback in callbacks or []:
            monitor = getattr(callback, "monitor", None)
            if not isinstance(monitor, str):
                continue
            validation = monitor.startswith("val_")
            base = monitor[4:] if validation else monitor
            if base == "loss" or base in keys:
                self._set_monitor_mode(callback, base)
                continue
            similar = [k for k in keys if k.endswith(f"_{base}")]
            if similar:
                prefix = "val_" if validation else ""
                raise ValueError(
                    f"Invalid value received for argument `callbacks`: "
                    f"{type(callback).__name__}(monitor={monitor!r}) monitors a key this "
                    f"model never logs: each task's metrics are logged as "
                    f"`<task>_<metric>`. Did you mean one of "
                    f"{[prefix + k for k in similar]}? (Or `{prefix}loss`, the total.)"
                )

    def _task_monitors(self, callbacks):
        """`(callback, key)` for each callback monitoring a task's log."""
        keys = set(self.metrics_names) - {"loss"}
        monitors = []
        for callback in callbacks:
            monitor = getattr(callback, "monitor", None)
            if isinstance(monitor, str) and monitor.removeprefix("val_") in keys:
                monitors.append((f"{type(callback).__name__}(monitor={monitor!r})", monitor))
        return monitors

    def _set_monitor_mode(self, callback, key):
        """`mode="auto"` to `"min"` / `"max"` for a task's loss or metric:
        Keras' monitors find directions only among the metrics of a plain
        compile, and refuse `val_age_mae`."""
        if getattr(callback, "mode", None) != "auto" or key not in self.metrics_names:
            return
        metric = next(m for m in self.metrics if m.name == key)
        if key.endswith("_loss") and key[:-5] in self.task_names:
            direction = "down"
        else:
            direction = _keras_compat.metric_direction(metric)
        if direction is not None:
            callback.mode = "max" if direction == "up" else "min"

    @property
    def metrics_names(self):
        """The names of the values `evaluate` returns, in its order (the
        per-task losses and metrics, not the internal trackers)."""
        state = self._compiled_state
        hidden = {id(state.checks), id(state.weight_tracker)} if state is not None else set()
        return [m.name for m in self.metrics if id(m) not in hidden]

    def fit_callbacks(self, callbacks, validation_data, fit_kwargs, require_labels=True,
                      fit_args=()):
        """The callbacks `fit` puts before the user's, and the validation
        data left for Keras (`fit_kwargs` loses `validation_freq` when the
        sources are validated here). `require_labels=False` accepts epochs
        without any labelled example (a `Distiller` trains on its teachers);
        `fit_args` are `fit`'s positional arguments (the training data)."""
        callbacks = list(callbacks or [])
        x = fit_args[0] if fit_args else fit_kwargs.get("x")
        sources = validation_data.values() if isinstance(validation_data, dict) else []
        schedules = ScheduleEpochs.of(x, validation_data, *sources)
        if schedules is not None:
            # Interleaved datasets draw their sources by epoch.
            callbacks.insert(0, schedules)
        if isinstance(validation_data, dict):
            # {source: dataset}: evaluated source by source at epoch end
            # (`val_<source>_<task>_<metric>`), before any callback that may
            # monitor those keys, as Keras' own validation is.
            callbacks.insert(0, SourceValidation(
                validation_data, frequency=fit_kwargs.pop("validation_freq", 1)))
            validation_data = None
        if self.weighting is not None:
            # First, so that checkpoints written at epoch end see its update.
            callbacks.insert(0, WeightingEpochs(self.weighting))
        state = self._compiled_state
        if state is not None:
            # Before every other callback: a checkpoint must never see the
            # weights of a step that trained on broken data or arithmetic.
            callbacks.insert(0, StepGuard(
                state.checks, self.weighting, state.stop_on_nonfinite, require_labels,
                monitors=self._task_monitors(callbacks)))
        return callbacks, validation_data

    def train_step(self, *args):
        # JAX's trainer passes (state, data); TensorFlow and torch pass (data,).
        return training_lib.train_step(self, *args)

    def test_step(self, *args):
        return training_lib.test_step(self, *args)

    # --- losses and metrics ------------------------------------------------
    def prepare_targets(self, y, sample_weight=None):
        """`{task: Targets}` of a batch (`keras_mtl.models.targets`)."""
        return prepare(self.tasks, y, sample_weight, self.image_shape)

    def task_loss_terms(self, targets, y_pred):
        """Per-task `(sums, counts)`: the summed weighted losses of the
        labelled examples (pixels) and how many there are, before the
        division. `targets` is `prepare_targets(y, sample_weight)`."""
        self._check_compiled()
        sums, counts = {}, {}
        for name in self.task_names:
            labels, keep, weights, _ = targets[name]
            values = self._compiled_state.loss_fns[name](labels, y_pred[name])
            values = ops.cast(values, "float32")
            sums[name] = ops.sum(ops.where(keep, values * weights, 0.0))
            counts[name] = ops.sum(ops.cast(keep, "float32"))
        return sums, counts

    def task_losses(self, y, y_pred, sample_weight=None):
        """Per-task losses `{task: scalar}`, missing labels masked."""
        sums, counts = self.task_loss_terms(self.prepare_targets(y, sample_weight), y_pred)
        return {n: ops.divide_no_nan(sums[n], counts[n]) for n in self.task_names}

    def combine_losses(self, losses, counts=None, training=False):
        """Combines per-task losses into `(total, {task: weight})`, given the
        numbers of labelled examples `counts` (`None`: all labelled)."""
        self._check_compiled()
        if self.weighting is not None:
            return self.weighting(losses, counts, training=training)
        weights = self._compiled_state.loss_weights
        total = ops.sum(ops.stack([weights[n] * losses[n] for n in self.task_names]))
        return total, weights

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """The loss of one batch: the combined task losses plus the
        regularisation losses (the value the training step minimises)."""
        sums, counts = self.task_loss_terms(self.prepare_targets(y, sample_weight), y_pred)
        losses = {n: ops.divide_no_nan(sums[n], counts[n]) for n in self.task_names}
        total, _ = self.combine_losses(losses, counts, training=training)
        return total + training_lib.extra_loss(self.losses)

    def track_losses(self, losses, weights, counts):
        """Updates the `<task>_loss` and (unless `weights` is None)
        `weight_<task>` metrics.

        Each task's loss is weighted by its number of labelled examples
        (pixels), so `<task>_loss` is the mean over the epoch's labelled
        examples: batches without a label for the task (other sources'
        batches under `keras_mtl.data.interleave`) do not pull it to 0.
        """
        state = self._compiled_state
        for name in self.task_names:
            state.loss_trackers[name].update_state(losses[name], sample_weight=counts[name])
        if state.weight_tracker is not None and weights is not None:
            state.weight_tracker.update_state(ops.stack([weights[n] for n in self.task_names]))

    def update_metrics(self, targets, y_pred):
        """Updates every task's metrics; returns the logs."""
        for name in self.task_names:
            labels, _, weights, _ = targets[name]
            for metric in self._compiled_state.metrics[name]:
                metric.update_state(labels, y_pred[name], sample_weight=weights)
        return self.get_metrics_result()

    def get_metrics_result(self):
        """The logs: Keras' own, except that a task without any labelled
        example so far has NaN for its loss and metrics (no score rather
        than a perfect one; `fit` refuses a callback monitoring a NaN), and
        that `evaluate` leaves out the weighting's `weight_<task>`
        (the weights of training steps, not a property of the data)."""
        logs = self.mask_absent_tasks(super().get_metrics_result())
        state = self._compiled_state
        if state is None:
            return logs
        if self._evaluating and state.weight_tracker is not None:
            for key in state.weight_tracker.result():
                logs.pop(key, None)
        return logs

    def mask_absent_tasks(self, logs):
        """`logs` with NaN for the metrics of tasks never labelled so far
        (their `<task>_loss` is NaN already).

        Only where Keras reads the logs eagerly (the epoch's and
        `evaluate`'s, which History and callbacks' `on_epoch_end` get): inside
        the compiled step the masking would add ops to every step (1 % of a
        step, `benchmarks/bench_overhead.py`), for per-batch logs only."""
        state = self._compiled_state
        if state is None or _traced(state.checks.nonfinite_inputs.value):
            return logs
        for name in self.task_names:
            if ops.convert_to_numpy(state.loss_trackers[name].labelled) > 0:
                continue
            for metric in state.metrics[name]:
                if metric.name in logs:
                    logs[metric.name] = float("nan")
        return logs

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        self._check_compiled()
        return self.update_metrics(self.prepare_targets(y, sample_weight), y_pred)

    def _check_compiled(self):
        if self._compiled_state is None:
            raise ValueError(
                f"Model {self.name!r} is not compiled: call `model.compile()` "
                "first (it sets the task losses and metrics)."
            )

    # --- saving -------------------------------------------------------------------
    # Keras saves layer weights but not `SeedGenerator` states (a dropout
    # layer's), nor does it know the weighting (not a tracked layer). The
    # model saves both with its own variables, so that a run resumed by
    # `BackupAndRestore` or from a `.keras` file draws the same dropout masks
    # and continues the same weighting state as the run it continues.
    def _seed_states(self):
        # `variables` is `weights` plus the layers' seed states.
        weights = {id(v) for v in super().weights}
        return [v for v in super().variables if id(v) not in weights]

    def _task_signature(self):
        """What the saved heads were built for: the tasks and head widths."""
        return json.dumps({
            "tasks": [[t.name, type(t).__name__, t.output_channels] for t in self.tasks],
            "head_units": list(self.head_units),
        })

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[_TASKS_KEY] = np.frombuffer(self._task_signature().encode("utf-8"), np.uint8)
        for i, state in enumerate(self._seed_states()):
            store[f"seed_{i}"] = state
        if self.weighting is not None:
            method = self.weighting.registry_name or type(self.weighting).__name__
            arrays = self.weighting.state_arrays()
        elif self._pending_weighting_state is not None:
            method, arrays = self._pending_weighting_state
        else:
            return
        store[_METHOD_KEY] = np.frombuffer(method.encode("utf-8"), np.uint8)
        for i, array in enumerate(arrays):
            store[_STATE_KEY.format(i)] = array

    def load_own_variables(self, store):
        keys = list(store.keys())
        if _TASKS_KEY in keys:
            # Keras loads layers by position: heads saved for other tasks
            # would load into this model's heads without an error.
            saved = bytes(np.asarray(store[_TASKS_KEY], np.uint8)).decode("utf-8")
            if saved != self._task_signature():
                raise ValueError(
                    f"The weights loaded into model {self.name!r} were saved from a "
                    "model with other tasks or heads: saved (tasks as [name, kind, "
                    f"outputs]) {json.loads(saved)}, this model has "
                    f"{json.loads(self._task_signature())}. Loading them would put one "
                    "task's head into another's. Build the model as it was saved (for "
                    "`BackupAndRestore`: a new `backup_dir` after changing the model)."
                )
            keys.remove(_TASKS_KEY)
        states = self._seed_states()
        seeds = sorted(k for k in keys if k.startswith("seed_"))
        if len(seeds) != len(states):
            raise ValueError(
                f"Model {self.name!r} has {len(states)} random-state variables "
                f"(dropout seeds) but the file holds {len(seeds)}: it was saved "
                "from a model with other layers."
            )
        state_keys = [_STATE_KEY.format(i) for i in range(len(keys))]
        state_keys = [k for k in state_keys if k in keys]
        own = [k for k in keys if k not in seeds and k not in state_keys and k != _METHOD_KEY]
        super().load_own_variables({k: store[k] for k in own})
        for i, state in enumerate(states):
            state.assign(store[f"seed_{i}"])
        if _METHOD_KEY in keys:
            method = bytes(np.asarray(store[_METHOD_KEY], np.uint8)).decode("utf-8")
            self._pending_weighting_state = (method, [np.asarray(store[k]) for k in state_keys])
            if self.weighting is not None:
                self._restore_pending_weighting_state()

    def _restore_pending_weighting_state(self):
        """Gives the weighting the state loaded for it (see `load_weights`)."""
        pending, self._pending_weighting_state = self._pending_weighting_state, None
        weighting = self.weighting
        if pending is None or weighting is None:
            self._pending_weighting_state = pending
            return
        method, arrays = pending
        mine = weighting.registry_name or type(weighting).__name__
        if method != mine:
            raise ValueError(
                f"The weights loaded into model {self.name!r} hold the state of the "
                f"weighting {method!r}, but the model is compiled with {mine!r}. "
                f"Compile with weighting={method!r} before loading to resume it, "
                "or load the weights into a model compiled without a weighting "
                "and compile with the new method afterwards."
            )
        weighting.load_state(arrays)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "trunk": keras.saving.serialize_keras_object(self.trunk),
            "tasks": [keras.saving.serialize_keras_object(t) for t in self.tasks],
            "input_shape": None if self.image_shape is None else list(self.image_shape),
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


def _traced(value):
    """Whether `value` belongs to a step being traced (not eager)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.executing_eagerly()
    if backend == "jax":
        import jax

        return isinstance(value, jax.core.Tracer)
    return False


def _check_input_shape(shape):
    """A tuple of positive `int`s or `None`s (NumPy integers accepted)."""
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if not dims or not all(d is None or is_int(d, minimum=1) for d in dims):
        raise ValueError(
            "Invalid value received for argument `input_shape`. Expected a "
            "non-empty tuple of positive integers (or None for a variable "
            f"size), without the batch axis. Received: input_shape={shape!r}"
        )
    return tuple(None if d is None else int(d) for d in dims)


def _unique(variables):
    seen, unique = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            unique.append(v)
    return unique


def _check_several_inputs(trunk, input_shape, preprocessing, tasks):
    """A trunk with several inputs (text, graphs) takes them as they are."""
    names = trunk_lib.input_names(trunk_lib.input_structure(trunk))
    if input_shape is not None:
        raise ValueError(
            "Invalid value received for argument `input_shape`. Expected None "
            f"for the trunk {trunk.name!r}, which has several inputs {names} "
            "(the model takes them with the trunk's own shapes). Received: "
            f"input_shape={input_shape!r}"
        )
    if preprocessing != "none":
        raise ValueError(
            "Invalid value received for argument `preprocessing`. Image "
            f"preprocessing applies to one image input; the trunk {trunk.name!r} "
            f"has several inputs {names}. Received: preprocessing={preprocessing!r}"
        )
    dense = [t.name for t in tasks if t.kind == "dense"]
    if dense:
        raise ValueError(
            f"Invalid value received for argument `tasks`. Dense tasks {dense} "
            "predict a map the size of the input image; the trunk "
            f"{trunk.name!r} has several inputs {names} and no image input."
        )


def _check_layer_names(tasks, trunk, several=False):
    """Each head is a layer named after its task, beside the model's own
    layers and inputs; "trunk" is how optimizer keys name the trunk."""
    inputs = (trunk_lib.input_names(trunk_lib.input_structure(trunk))
              if several else ["image"])
    taken = {name: "the model's input" for name in inputs}
    taken.update({"preprocessing": "its preprocessing layer",
                  trunk.name: "the trunk (backbone)",
                  "trunk": "the trunk in `LearningRateMultipliers` and `fine_tuning` keys"})
    for task in tasks:
        if task.name in taken:
            raise ValueError(
                "Invalid value received for argument `tasks`. Task "
                f"{task.name!r} has the name of {taken[task.name]}: each task's "
                "head is a layer named after the task (and optimizer keys name "
                "it), and those names must be unique. Rename the task (or the "
                f"trunk). Received: {task!r}"
            )


def _check_units(units):
    if isinstance(units, numbers.Integral) and not isinstance(units, bool):
        units = (units,)
    try:
        units = tuple(units)
    except TypeError:
        units = None
    if units is None or not all(
        isinstance(u, numbers.Integral) and not isinstance(u, bool) and u > 0 for u in units
    ):
        raise ValueError(
            "Invalid value received for argument `head_units`. Expected a tuple "
            f"of positive integers. Received: head_units={units!r}"
        )
    return tuple(int(u) for u in units)
