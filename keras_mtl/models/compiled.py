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
from keras_mtl.models.task_weights import TaskWeightsMean


class Compiled:
    """The per-task losses, metrics and trackers, the loss weights or the
    weighting, and the compile arguments (for `get_compile_config`)."""

    def __init__(self, loss_fns, metrics, loss_weights, weighting, stop_on_nonfinite, config):
        names = list(loss_fns)
        self.loss_fns = loss_fns
        self.metrics = metrics
        self.loss_weights = loss_weights
        self.weighting = weighting
        self.stop_on_nonfinite = stop_on_nonfinite
        self.config = config
        self.loss_trackers = {n: keras.metrics.Mean(name=f"{n}_loss") for n in names}
        self.weight_tracker = TaskWeightsMean(names) if weighting is not None else None

    @classmethod
    def resolve(cls, model, loss, metrics, loss_weights, weighting, stop_on_nonfinite, config):
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
            loss_fns=_resolve_losses(model, loss),
            metrics=_resolve_metrics(model, metrics),
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
        return metrics


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


def _resolve_metrics(model, metrics):
    if metrics == "auto" or metrics is None:
        metrics = {}
    if not isinstance(metrics, dict):
        raise ValueError(
            "Invalid value received for argument `metrics`. Expected 'auto' "
            f"or a dict {{task: [metrics]}}. Received: metrics={metrics!r}"
        )
    check_task_keys(model, "metrics", metrics)
    resolved = {}
    for task in model.tasks:
        chosen = metrics.get(task.name, task.metrics())
        if not isinstance(chosen, (list, tuple)):
            chosen = [chosen]
        resolved[task.name] = [_task_metric(task.name, m) for m in chosen]
    return resolved


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


def _check_gradient_weighting(model, weighting):
    """Gradient-level methods need what `keras_mtl.training` supports."""
    problem = None
    if keras.backend.backend() not in ("tensorflow", "jax"):
        problem = f"the {keras.backend.backend()!r} backend (TensorFlow and JAX only)"
    elif keras.backend.backend() == "jax" and keras.distribution.distribution() is not None:
        problem = "a `keras.distribution` on JAX (use TensorFlow's tf.distribute)"
    elif weighting.mode == "representation" and not model.shares_representation:
        problem = (
            "mode='representation' on a trunk with per-task representations "
            f"(outputs {sorted(model.trunk.output)}): there is no single shared `z`; "
            "pass mode='params'"
        )
    elif keras.mixed_precision.dtype_policy().name != "float32":
        problem = (
            f"the dtype policy {keras.mixed_precision.dtype_policy().name!r} "
            "(float32 only for now)"
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


def _task_metric(task_name, metric):
    """A metric named `<task>_<metric>` (so History reads `age_mae`)."""
    name = metric if isinstance(metric, str) else getattr(metric, "name", None)
    if isinstance(metric, str):
        metric = keras.metrics.get(metric)
    if not isinstance(metric, keras.metrics.Metric):
        if callable(metric) and not isinstance(metric, type):
            return keras.metrics.MeanMetricWrapper(
                metric, name=f"{task_name}_{name or metric.__name__}"
            )
        raise ValueError(
            "Invalid value received for argument `metrics`. Expected metric "
            f"names, functions or `keras.metrics.Metric` instances. Received: {metric!r}"
        )
    config = metric.get_config()
    config["name"] = f"{task_name}_{name}"
    return type(metric).from_config(config)
