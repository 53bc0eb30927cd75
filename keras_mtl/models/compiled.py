"""What one `MultiTaskModel.compile` call made: losses, metrics, weighting.

`Compiled.resolve(model, ...)` checks the compile arguments against the
model's tasks and builds everything a step needs. The model keeps the result
in one plain attribute, which Keras does not track: a second `compile`
replaces it whole, so nothing of the first one (its weighting's variables,
its metrics) stays in `model.metrics`, `model.variables` or a saved file.
"""

import numbers
import weakref

import keras

from keras_mtl import weighting as weighting_lib
from keras_mtl.models import trunk as trunk_lib
from keras_mtl.models.step_checks import StepChecks
from keras_mtl.models.trackers import TaskLossMean
from keras_mtl.models.trackers import TaskWeightsMean


class Compiled:
    """The per-task losses, metrics and trackers, the loss weights or the
    weighting, and the compile arguments (for `get_compile_config`)."""

    def __init__(self, tasks, loss_fns, metrics, loss_weights, weighting, stop_on_nonfinite,
                 config):
        names = [t.name for t in tasks]
        self.loss_fns = loss_fns
        self.metrics = metrics
        self.loss_weights = loss_weights
        self.weighting = weighting
        self.stop_on_nonfinite = stop_on_nonfinite
        self.config = config
        self.loss_trackers = {n: TaskLossMean(name=f"{n}_loss") for n in names}
        self.weight_tracker = TaskWeightsMean(names) if weighting is not None else None
        self.checks = StepChecks(tasks)
        _check_log_keys(self.all_metrics())

    @classmethod
    def resolve(cls, model, loss, metrics, loss_weights, weighting, stop_on_nonfinite, config,
                default_metrics=True):
        if weighting is not None and loss_weights is not None:
            raise ValueError(
                "Pass either `loss_weights` or `weighting`, not both. Received: "
                f"loss_weights={loss_weights!r}, weighting={weighting!r}"
            )
        if not isinstance(stop_on_nonfinite, bool):
            raise ValueError(
                "Invalid value received for argument `stop_on_nonfinite`. Expected "
                f"True or False. Received: stop_on_nonfinite={stop_on_nonfinite!r}"
            )
        return cls(
            tasks=model.tasks,
            loss_fns=_resolve_losses(model, loss),
            metrics=_resolve_metrics(model, metrics, default_metrics),
            loss_weights=_resolve_loss_weights(model, loss_weights),
            weighting=_resolve_weighting(model, weighting),
            stop_on_nonfinite=stop_on_nonfinite,
            config=config,
        )

    def all_metrics(self):
        """Each metric this compile made, once, in log order."""
        metrics = []
        for name, tracker in self.loss_trackers.items():
            metrics.append(tracker)
            metrics.extend(self.metrics[name])
        if self.weight_tracker is not None:
            metrics.append(self.weight_tracker)
        metrics.append(self.checks)
        return metrics


def _check_log_keys(metrics):
    """Every log key once: `age_mae` must not be two things."""
    keys = {"loss": "the total loss"}
    for metric in metrics:
        result = metric.result()
        for key in result if isinstance(result, dict) else [metric.name]:
            if key in keys:
                raise ValueError(
                    f"Invalid task or metric names: two values would be logged as "
                    f"{key!r}, {keys[key]} and metric {metric.name!r} (History keys "
                    "are `<task>_loss`, `<task>_<metric>` and `weight_<task>`). "
                    "Rename a task, or a metric with `name=`."
                )
            keys[key] = f"metric {metric.name!r}"


def check_task_keys(model, argument, value):
    unknown = sorted(set(value) - set(model.task_names))
    if unknown:
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected "
            f"keys among the task names {model.task_names}. Received "
            f"unknown keys {unknown} in {argument}={value!r}"
        )


def _resolve_losses(model, loss):
    if loss == "auto" or loss is None:
        loss = {}
    if not isinstance(loss, dict):
        raise ValueError(
            "Invalid value received for argument `loss`. Expected 'auto' or "
            f"a dict {{task: loss}}. Received: loss={loss!r}"
        )
    check_task_keys(model, "loss", loss)
    fns = {}
    for task in model.tasks:
        if task.name in loss:
            task = type(task).from_config({**task.get_config(), "loss": loss[task.name]})
        fns[task.name] = task.loss_fn()
    return fns


#: Keras metrics by the labels they read: regression values, binary (or
#: multi-hot) targets, class ids. A metric of a listed family is given to
#: the tasks of that family only (`Task.label_family`); one-hot metrics fit
#: no task (keras_mtl's class labels are ids); others go to every task.
_METRIC_FAMILIES = {
    "regression": {
        "MeanSquaredError", "MeanAbsoluteError", "MeanAbsolutePercentageError",
        "MeanSquaredLogarithmicError", "RootMeanSquaredError", "CosineSimilarity",
        "LogCoshError", "R2Score", "Poisson", "KLDivergence",
    },
    "binary": {
        "BinaryAccuracy", "BinaryCrossentropy", "AUC", "Precision", "Recall",
        "TruePositives", "TrueNegatives", "FalsePositives", "FalseNegatives",
        "PrecisionAtRecall", "RecallAtPrecision", "SensitivityAtSpecificity",
        "SpecificityAtSensitivity", "F1Score", "FBetaScore", "Hinge", "SquaredHinge",
        "BinaryIoU",
    },
    "class_ids": {
        "SparseCategoricalAccuracy", "SparseCategoricalCrossentropy",
        "SparseTopKCategoricalAccuracy", "MeanIoU", "IoU",
    },
    "one_hot": {
        "CategoricalAccuracy", "CategoricalCrossentropy", "TopKCategoricalAccuracy",
        "OneHotIoU", "OneHotMeanIoU", "CategoricalHinge",
    },
}
#: What "accuracy" (and "acc", "crossentropy", "ce") means per family, as
#: Keras picks it from the loss for a plain model.
_BY_FAMILY = {
    "accuracy": {"binary": "binary_accuracy", "class_ids": "sparse_categorical_accuracy"},
    "crossentropy": {
        "binary": "binary_crossentropy", "class_ids": "sparse_categorical_crossentropy",
    },
}
_BY_FAMILY["acc"] = _BY_FAMILY["accuracy"]
_BY_FAMILY["ce"] = _BY_FAMILY["crossentropy"]


def _resolve_metrics(model, metrics, default_metrics):
    """`{task: [Metric]}`: the task's own metrics (unless `default_metrics`
    is False) and those `metrics` gives it, the latter replacing a default
    of the same name."""
    if not isinstance(default_metrics, bool):
        raise ValueError(
            "Invalid value received for argument `default_metrics`. Expected True "
            f"or False. Received: default_metrics={default_metrics!r}"
        )
    if metrics == "auto" or metrics is None:
        metrics = {}
    elif isinstance(metrics, (list, tuple)):
        metrics = _metrics_for_each_task(model, metrics)
    elif isinstance(metrics, dict):
        check_task_keys(model, "metrics", metrics)
        metrics = {
            n: list(m) if isinstance(m, (list, tuple)) else [m] for n, m in metrics.items()
        }
    else:
        raise ValueError(
            "Invalid value received for argument `metrics`. Expected 'auto', a "
            "list of metrics (each given to every task it fits) or a dict "
            f"{{task: [metrics]}}. Received: metrics={metrics!r}"
        )
    resolved = {}
    for task in model.tasks:
        given = [_task_metric(task, m) for m in metrics.get(task.name, [])]
        names = {m.name for m in given}
        defaults = task.metrics() if default_metrics else []
        defaults = [_task_metric(task, m) for m in defaults]
        resolved[task.name] = [m for m in defaults if m.name not in names] + given
    return resolved


def _metrics_for_each_task(model, metrics):
    """A metrics list as a dict: each metric for the tasks whose labels it reads."""
    chosen = {t.name: [] for t in model.tasks}
    for metric in metrics:
        fitting = [t for t in model.tasks if _fits(t, metric)]
        if not fitting:
            family = _family(metric)
            why = (
                "it reads one-hot labels; keras_mtl's class labels are class ids "
                "(use the sparse form, e.g. 'sparse_categorical_accuracy')"
                if family == "one_hot" else
                f"it reads {family} labels and no task has them"
            )
            raise ValueError(
                "Invalid value received for argument `metrics`. Metric "
                f"{_metric_text(metric)} fits none of the tasks "
                f"{ {t.name: type(t).__name__ for t in model.tasks} }: {why}. "
                "Pass a dict {task: [metrics]} to choose per task. "
                f"Received: metrics={metrics!r}"
            )
        for task in fitting:
            chosen[task.name].append(metric)
    return chosen


def _family(metric):
    if isinstance(metric, str):
        if metric in _BY_FAMILY:
            return "binary or class-id"
        metric = _get_metric(metric)
    name = type(metric).__name__
    return next((f for f, names in _METRIC_FAMILIES.items() if name in names), None)


def _fits(task, metric):
    if isinstance(metric, str) and metric in _BY_FAMILY:
        return task.label_family in _BY_FAMILY[metric]
    family = _family(metric)
    return family is None or family == task.label_family


def _get_metric(identifier):
    try:
        return keras.metrics.get(_ALIASES.get(identifier, identifier))
    except ValueError as error:
        raise ValueError(
            "Invalid value received for argument `metrics`. Expected Keras metric "
            "names (e.g. 'mae', 'accuracy', 'auc'), functions or "
            f"`keras.metrics.Metric` instances. Received: {identifier!r}"
        ) from error


#: Names Keras does not know that users write (the tasks' own log names).
_ALIASES = {"rmse": "root_mean_squared_error"}


def _metric_text(metric):
    return repr(metric) if isinstance(metric, str) else type(metric).__name__


def _resolve_loss_weights(model, loss_weights):
    if loss_weights is None:
        return {n: 1.0 for n in model.task_names}
    if not isinstance(loss_weights, dict):
        raise ValueError(
            "Invalid value received for argument `loss_weights`. Expected a "
            f"dict {{task: float}}. Received: loss_weights={loss_weights!r}"
        )
    check_task_keys(model, "loss_weights", loss_weights)
    for name, w in loss_weights.items():
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not w >= 0:
            raise ValueError(
                "Invalid value received for argument `loss_weights`. Expected "
                f"non-negative floats. Received: loss_weights[{name!r}]={w!r}"
            )
    return {n: float(loss_weights.get(n, 1.0)) for n in model.task_names}


def _resolve_weighting(model, weighting):
    if weighting is None:
        return None
    weighting = weighting_lib.get(weighting)
    owner = getattr(weighting, "_keras_mtl_owner", None)
    owner = owner() if owner is not None else None
    if owner is not None and owner is not model:
        raise ValueError(
            "Invalid value received for argument `weighting`. This "
            f"{type(weighting).__name__} instance ({weighting.name!r}) is already "
            f"used by the model {owner.name!r}: its state (weights, history) "
            "belongs to that model's training. Pass a new instance, e.g. "
            f"weighting={weighting.registry_name!r}."
        )
    if weighting.level == "gradient":
        _check_gradient_weighting(model, weighting)
    if weighting.level == "gradient":
        weighting.build_shared(model.trunk.trainable_variables, _representation_shape(model))
    if weighting.task_names is None:  # not built yet (or just deserialised)
        weighting.build({n: () for n in model.task_names})
    elif list(weighting.task_names) != model.task_names:
        raise ValueError(
            "Invalid value received for argument `weighting`. It was built "
            f"for the tasks {weighting.task_names}; this model has "
            f"{model.task_names}. Pass a new instance."
        )
    # A weak reference (which Keras does not track): the weighting must not
    # keep its model alive.
    weighting._keras_mtl_owner = weakref.ref(model)
    return weighting


def _representation_shape(model):
    """The shape of one example's shared `z` (`None` entries where it
    varies), or None for per-task representations."""
    if not model.shares_representation:
        return None
    return tuple(trunk_lib.trunk_output(model.trunk).shape[1:])


def _check_gradient_weighting(model, weighting):
    """Gradient-level methods need what `keras_mtl.training` supports."""
    problem = None
    if keras.backend.backend() not in ("tensorflow", "jax"):
        problem = f"the {keras.backend.backend()!r} backend (TensorFlow and JAX only)"
    elif weighting.mode == "representation" and not model.shares_representation:
        problem = (
            "mode='representation' on a trunk with per-task representations "
            f"(outputs {sorted(model.trunk.output)}): there is no single shared `z`; "
            "pass mode='params'"
        )
    elif keras.mixed_precision.dtype_policy().variable_dtype != "float32":
        policy = keras.mixed_precision.dtype_policy()
        problem = (
            f"the dtype policy {policy.name!r}, whose variables are "
            f"{policy.variable_dtype}: the per-task gradients are combined in float32 "
            "(use 'mixed_float16' or 'mixed_bfloat16', which keep the variables float32)"
        )
    else:
        shared = {id(v) for v in model.trunk.trainable_variables}
        shared |= {id(v) for h in model.heads.values() for v in h.trainable_variables}
        # The previous compile's weighting is still attached while this one resolves.
        shared |= {id(v) for v in (model.weighting.variables if model.weighting else [])}
        others = [v.path for v in model.trainable_variables if id(v) not in shared]
        if others:
            problem = f"trainable variables outside the trunk and heads: {others}"
    if problem:
        raise ValueError(
            "Invalid value received for argument `weighting`. Gradient-level "
            f"method {type(weighting).__name__} cannot run with {problem}. "
            "Use a loss-level method instead."
        )


def _task_metric(task, metric):
    """`metric` for `task`, named `<task>_<metric>` (History reads `age_mae`).
    "accuracy" and "crossentropy" resolve by the task's labels, as Keras
    resolves them by the loss."""
    name = metric if isinstance(metric, str) else getattr(metric, "name", None)
    if not _fits(task, metric):
        raise ValueError(
            "Invalid value received for argument `metrics`. Metric "
            f"{_metric_text(metric)} does not fit task {task.name!r} "
            f"({type(task).__name__}, {task.label_family} labels): it reads "
            f"{_family(metric)} labels. Received: metrics[{task.name!r}] "
            f"containing {metric!r}"
        )
    if isinstance(metric, str):
        family = _BY_FAMILY.get(metric, {})
        metric = _get_metric(family.get(task.label_family, metric))
    if not isinstance(metric, keras.metrics.Metric):
        if callable(metric) and not isinstance(metric, type):
            return keras.metrics.MeanMetricWrapper(
                metric, name=f"{task.name}_{name or metric.__name__}"
            )
        raise ValueError(
            "Invalid value received for argument `metrics`. Expected metric "
            f"names, functions or `keras.metrics.Metric` instances. Received: {metric!r}"
        )
    # A new object per task and compile (each keeps its own state).
    config = metric.get_config()
    config["name"] = f"{task.name}_{name}"
    return type(metric).from_config(config)
