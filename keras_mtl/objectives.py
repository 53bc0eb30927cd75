"""Multi-task objectives: one number per epoch that a tuner can optimise.

A multi-task model logs several metrics per task (`val_age_mae`,
`val_gender_accuracy`, ...). To compare two models, or to let KerasTuner pick
one, they have to be folded into one number. The callbacks here compute that
number at the end of every epoch and write it into the epoch logs, so it
reaches `History`, `EarlyStopping`, `ModelCheckpoint` and KerasTuner like any
Keras metric:

- `DeltaM(tasks, baselines)` logs `val_delta_m`: Δm (Maninis et al. 2019,
  "Attentive Single-Tasking of Multiple Tasks"), the mean over tasks of the
  mean signed relative change of each metric against a single-task baseline,
  in percent (`keras_mtl.metrics.delta_m`). Negative is better, so
  `keras_tuner.Objective("val_delta_m", direction="min")`.
- `WeightedScore(tasks, weights, scales)` logs `val_weighted_score` for
  users who have no baselines: a weighted mean of normalised task errors,
  each in the same units (0 is perfect): `1 - value` for metrics where
  larger is better (accuracy, AUC, mIoU; they lie in [0, 1]) and
  `value / scale` for metrics where smaller is better (MAE, RMSE), with
  `scale` the metric of a model that always predicts the label mean
  (`label_scales(train_data, tasks)`), so 1 means "no better than the mean".
  Lower is better: `direction="min"`.

Why not KerasTuner's own list of objectives? `objective=["val_age_mae",
"val_gender_accuracy"]` makes a `MultiObjective` whose value is the plain
sum of the raw metrics to minimise minus the raw metrics to maximise. The
terms have different units and scales: an age MAE in years (around 5) moves
by whole units while an accuracy (around 0.9) moves by hundredths, so the
sum is decided by the regression task alone, a task with two metrics counts
twice, and there is no way to say which task matters more. Δm and the
weighted score are unitless, count every task once whatever its number of
metrics (mean over the task's metrics), and state the trade-off explicitly
(baselines, or weights and scales).

Ordering: the callbacks write their key into the shared `logs` dict in
`on_epoch_end`. Keras calls callbacks in list order with the same dict and
appends `History` last, and KerasTuner reads the objective in its own
callbacks (`SaveBestEpoch`), which it appends after the user's; so put these
callbacks first (`keras_mtl.tuning.MultiTaskHyperModel.fit` does).

A key that is never logged is an error, raised as soon as it is known: at the
end of the first epoch that ran validation (for `val_` keys), or at the end
of training when no epoch did (no `validation_data`). So is a task metric
that is NaN (the validation data hold no labelled example of that task). `RequireLogged` applies
the same rule to any key, e.g. a tuner's objective.
"""

import math
import numbers

import keras
import numpy as np

from keras_mtl import metrics as metrics_lib
from keras_mtl import tasks as tasks_lib


class ObjectiveError(ValueError):
    """A key an objective needs (or writes) is missing from the epoch logs."""


def _check_prefix(prefix):
    if not isinstance(prefix, str):
        raise ValueError(
            "Invalid value received for argument `prefix`. Expected a string "
            f"such as 'val_' or ''. Received: prefix={prefix!r}"
        )
    return prefix


def _check_positive_finite(argument, value, allow_zero=False):
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value != 0)
    )
    if not ok:
        expected = "a finite number >= 0" if allow_zero else "a finite, non-zero number"
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected "
            f"{expected}. Received: {argument}={value!r}"
        )
    return float(value)


def _validation_ran(logs, prefix):
    """Whether this epoch's logs hold any `prefix` key (validation ran)."""
    return not prefix or any(k.startswith(prefix) for k in logs)


def _missing_message(what, missing, logs):
    return (
        f"{what} needs {missing}, which are not in the epoch logs. "
        f"Logged keys: {sorted(logs)}."
    )


class TaskObjective(keras.callbacks.Callback):
    """Base class: a callback that logs one multi-task objective per epoch.

    Subclasses say which task metrics they read (`required_metrics`) and how
    they fold them into one number (`compute`); the base class reads the
    logs, writes `logs[key]` and raises `ObjectiveError` when a metric it
    needs is not logged.

    Args:
        tasks: List of `keras_mtl.tasks.Task` of the model.
        prefix: `"val_"` (validation metrics, the default) or `""` (training
            metrics). The logged key is `prefix + name`.
        name: Name of the objective.
    """

    def __init__(self, tasks, prefix="val_", name="objective"):
        super().__init__()
        self.tasks = tasks_lib.check_tasks(tasks)
        self.prefix = _check_prefix(prefix)
        if not isinstance(name, str) or not name:
            raise ValueError(
                "Invalid value received for argument `name`. Expected a "
                f"non-empty string. Received: name={name!r}"
            )
        self.name = name
        self._logged = False

    @property
    def key(self):
        """The key written into the epoch logs, e.g. `"val_delta_m"`."""
        return f"{self.prefix}{self.name}"

    def required_metrics(self):
        """`{task: [metric]}`: the metrics this objective reads."""
        raise NotImplementedError

    def compute(self, values):
        """The objective from `{task: {metric: value}}`."""
        raise NotImplementedError

    def required_keys(self):
        """The log keys this objective reads, e.g. `["val_age_mae"]`."""
        return [
            f"{self.prefix}{task}_{metric}"
            for task, names in self.required_metrics().items()
            for metric in names
        ]

    def on_train_begin(self, logs=None):
        self._logged = False

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        missing = [k for k in self.required_keys() if k not in logs]
        if missing:
            if not _validation_ran(logs, self.prefix):
                return  # No validation this epoch (`validation_freq`).
            raise ObjectiveError(
                _missing_message(f"`{self.key}` ({type(self).__name__})", missing, logs)
                + f" The metric keys are '{self.prefix}<task>_<metric>'; check the "
                "tasks, `prefix` and the metrics the model was compiled with."
            )
        values = {
            task: {m: float(logs[f"{self.prefix}{task}_{m}"]) for m in names}
            for task, names in self.required_metrics().items()
        }
        # A task's metrics are NaN when its data held no labelled example
        # (no score, not a perfect one): the objective has no value then.
        absent = [t for t, v in values.items() if any(math.isnan(x) for x in v.values())]
        if absent:
            data = "validation data" if self.prefix == "val_" else f"'{self.prefix}' data"
            raise ObjectiveError(
                f"`{self.key}` ({type(self).__name__}) cannot be computed at epoch "
                f"{epoch + 1}: the metrics of tasks {absent} are NaN. The {data} "
                "hold no labelled example of those tasks (or their loss is not "
                "finite). Give every task the objective reads labelled validation "
                "examples, or leave the task out of the objective."
            )
        logs[self.key] = float(self.compute(values))
        self._logged = True

    def on_train_end(self, logs=None):
        if not self._logged:
            raise ObjectiveError(
                f"`{self.key}` ({type(self).__name__}) was never logged: no epoch "
                f"logged the '{self.prefix}' metrics it reads. Pass "
                "`validation_data` to `fit` (or `tuner.search`), or use "
                "prefix='' for training metrics."
            )

    def get_config(self):
        return {
            "tasks": [keras.saving.serialize_keras_object(t) for t in self.tasks],
            "prefix": self.prefix,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["tasks"] = [keras.saving.deserialize_keras_object(t) for t in config["tasks"]]
        return cls(**config)


def _check_task_dict(argument, value, names, allow_subset=True):
    if not isinstance(value, dict) or not value:
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected a "
            f"non-empty dict keyed by task names {names}. Received: {argument}={value!r}"
        )
    unknown = sorted(set(value) - set(names))
    missing = [] if allow_subset else [n for n in names if n not in value]
    if unknown or missing:
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected keys "
            f"among the task names {names}. Unknown keys: {unknown}; missing "
            f"keys: {missing}. Received: {argument}={value!r}"
        )


def _check_metric_names(argument, task, names):
    known = list(task.higher_is_better)
    unknown = [m for m in names if m not in known]
    if unknown or not names:
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected "
            f"metric names of task {task.name!r} among {known}. Received: "
            f"{argument}[{task.name!r}]={names!r}"
        )


@keras.saving.register_keras_serializable(package="keras_mtl")
class DeltaM(TaskObjective):
    """Logs Δm against single-task baselines (`val_delta_m`), in percent.

    Δm = 100 / T Σ_t 1/|M_t| Σ_m (-1)^{h_m} (M_mtl - M_stl) / M_stl over the
    tasks and metrics of `baselines` (Maninis et al. 2019; see
    `keras_mtl.metrics.delta_m`), with `h_m = 1` where larger is better.
    Negative means the multi-task model beats its single-task baselines; a
    tuner minimises it. Baselines usually come from single-task models
    evaluated on the same validation data:
    `keras_mtl.metrics.task_metrics(stl_model.evaluate(val, return_dict=True), [task])`.

    Args:
        tasks: List of `keras_mtl.tasks.Task` of the model.
        baselines: `{task: {metric: value}}`, e.g. `{"age": {"mae": 5.1},
            "gender": {"accuracy": 0.91}}`: finite, non-zero baselines for
            some metrics of some tasks (those are the ones Δm averages; a task
            left out, e.g. an auxiliary task, does not count).
        prefix: `"val_"` (default) or `""`.
        name: Name of the objective; the key is `prefix + name`.

    Example:

    >>> from keras_mtl import tasks
    >>> objective = DeltaM(
    ...     [tasks.Regression("age"), tasks.BinaryClassification("gender")],
    ...     baselines={"age": {"mae": 5.0}, "gender": {"accuracy": 0.8}})
    >>> logs = {"val_age_mae": 4.0, "val_gender_accuracy": 0.88}
    >>> objective.on_epoch_end(0, logs)
    >>> round(logs["val_delta_m"], 6)  # (-20 % + -10 %) / 2
    -15.0
    """

    def __init__(self, tasks, baselines, prefix="val_", name="delta_m"):
        super().__init__(tasks, prefix=prefix, name=name)
        by_name = {t.name: t for t in self.tasks}
        _check_task_dict("baselines", baselines, list(by_name))
        checked = {}
        for task_name, values in baselines.items():
            if not isinstance(values, dict):
                raise ValueError(
                    "Invalid value received for argument `baselines`. Expected "
                    f"a dict {{metric: value}} for task {task_name!r}. Received: "
                    f"baselines[{task_name!r}]={values!r}"
                )
            _check_metric_names("baselines", by_name[task_name], list(values))
            checked[task_name] = {
                m: _check_positive_finite(f"baselines[{task_name!r}][{m!r}]", v)
                for m, v in values.items()
            }
        self.baselines = checked

    def required_metrics(self):
        return {task: list(values) for task, values in self.baselines.items()}

    def compute(self, values):
        by_name = {t.name: t for t in self.tasks}
        higher = {
            task: {m: by_name[task].higher_is_better[m] for m in names}
            for task, names in self.baselines.items()
        }
        return metrics_lib.delta_m(values, self.baselines, higher)

    def get_config(self):
        return {**super().get_config(), "baselines": self.baselines}


@keras.saving.register_keras_serializable(package="keras_mtl")
class WeightedScore(TaskObjective):
    """Logs a weighted mean of normalised task errors (`val_weighted_score`).

    For users without single-task baselines. Every metric becomes an error
    where 0 is perfect: `1 - value` for metrics where larger is better
    (accuracy, AUC, mIoU, pixel accuracy: in [0, 1]) and `value / scale` for
    metrics where smaller is better (MAE, RMSE), `scale` being that metric
    for a constant prediction of the label mean (`label_scales`), so 1 means
    "no better than predicting the mean". A task's error is the mean over its
    metrics; the score is `Σ_t w_t error_t / Σ_t w_t`. Lower is better.

    Args:
        tasks: List of `keras_mtl.tasks.Task` of the model.
        weights: Optional `{task: weight >= 0}`; default 1 for every task.
            Tasks left out (or with weight 0) do not count.
        scales: `{task: scale}` or `{task: {metric: scale}}` (positive) for
            every counted task that has metrics where smaller is better, e.g.
            `label_scales(train_data, tasks)`.
        metrics: Optional `{task: [metric names]}` restricting which of a
            task's metrics count; default all of `task.higher_is_better`.
        prefix: `"val_"` (default) or `""`.
        name: Name of the objective; the key is `prefix + name`.

    Example:

    >>> from keras_mtl import tasks
    >>> objective = WeightedScore(
    ...     [tasks.Regression("age"), tasks.BinaryClassification("gender")],
    ...     weights={"age": 1.0, "gender": 3.0},
    ...     scales={"age": {"mae": 10.0, "rmse": 12.0}})
    >>> logs = {"val_age_mae": 5.0, "val_age_rmse": 6.0,
    ...         "val_gender_accuracy": 0.9, "val_gender_auc": 0.7}
    >>> objective.on_epoch_end(0, logs)
    >>> round(logs["val_weighted_score"], 6)  # (1 * 0.5 + 3 * 0.2) / 4
    0.275
    """

    def __init__(
        self, tasks, weights=None, scales=None, metrics=None, prefix="val_", name="weighted_score"
    ):
        super().__init__(tasks, prefix=prefix, name=name)
        by_name = {t.name: t for t in self.tasks}
        names = list(by_name)
        if weights is None:
            weights = {n: 1.0 for n in names}
        _check_task_dict("weights", weights, names)
        weights = {
            n: _check_positive_finite(f"weights[{n!r}]", w, allow_zero=True)
            for n, w in weights.items()
        }
        if not any(w > 0 for w in weights.values()):
            raise ValueError(
                "Invalid value received for argument `weights`. Expected at "
                f"least one positive weight. Received: weights={weights!r}"
            )
        counted = [n for n in names if weights.get(n, 0.0) > 0]
        if metrics is not None:
            _check_task_dict("metrics", metrics, names)
        chosen = {}
        for n in counted:
            selected = list(by_name[n].higher_is_better)
            if metrics is not None and n in metrics:
                selected = metrics[n]
            if isinstance(selected, str):
                selected = [selected]
            _check_metric_names("metrics", by_name[n], list(selected))
            chosen[n] = list(selected)
        self.weights = weights
        self.metrics = None if metrics is None else {k: list(v) for k, v in metrics.items()}
        self._chosen = chosen
        self.scales = self._check_scales(scales, by_name)

    def _check_scales(self, scales, by_name):
        need = {
            n: [m for m in ms if not by_name[n].higher_is_better[m]]
            for n, ms in self._chosen.items()
        }
        need = {n: ms for n, ms in need.items() if ms}
        if scales is None:
            scales = {}
        if not isinstance(scales, dict):
            raise ValueError(
                "Invalid value received for argument `scales`. Expected a dict "
                f"{{task: scale}} or {{task: {{metric: scale}}}}. Received: scales={scales!r}"
            )
        unknown = sorted(set(scales) - set(by_name))
        missing = sorted(set(need) - set(scales))
        if unknown or missing:
            raise ValueError(
                "Invalid value received for argument `scales`. Metrics where "
                "smaller is better (MAE, RMSE) have no natural range, so each "
                f"counted task with such metrics needs a scale: {need}. Missing "
                f"tasks: {missing}; unknown tasks: {unknown}. Compute them with "
                "`keras_mtl.objectives.label_scales(train_data, tasks)`. "
                f"Received: scales={scales!r}"
            )
        checked = {}
        for n, value in scales.items():
            per_metric = value if isinstance(value, dict) else {m: value for m in need.get(n, [])}
            absent = [m for m in need.get(n, []) if m not in per_metric]
            if absent:
                raise ValueError(
                    "Invalid value received for argument `scales`. Expected a "
                    f"scale for the metrics {need[n]} of task {n!r}. Missing: "
                    f"{absent}. Received: scales[{n!r}]={value!r}"
                )
            checked[n] = {}
            for m, s in per_metric.items():
                s = _check_positive_finite(f"scales[{n!r}][{m!r}]", s)
                if s <= 0:
                    raise ValueError(
                        "Invalid value received for argument `scales`. Expected "
                        f"positive scales. Received: scales[{n!r}][{m!r}]={s!r}"
                    )
                checked[n][m] = s
        return checked

    def required_metrics(self):
        return {n: list(ms) for n, ms in self._chosen.items()}

    def normalized_errors(self, values):
        """`{task: error}`: each task's mean normalised error (0 is perfect)."""
        by_name = {t.name: t for t in self.tasks}
        errors = {}
        for task, metric_values in values.items():
            terms = []
            for m, v in metric_values.items():
                if by_name[task].higher_is_better[m]:
                    terms.append(1.0 - v)
                else:
                    terms.append(v / self.scales[task][m])
            errors[task] = sum(terms) / len(terms)
        return errors

    def compute(self, values):
        errors = self.normalized_errors(values)
        total = sum(self.weights[t] for t in errors)
        return sum(self.weights[t] * e for t, e in errors.items()) / total

    def get_config(self):
        return {
            **super().get_config(),
            "weights": self.weights,
            "scales": self.scales,
            "metrics": self.metrics,
        }


@keras.saving.register_keras_serializable(package="keras_mtl")
class RequireLogged(keras.callbacks.Callback):
    """Raises `ObjectiveError` when a key that something monitors is not logged.

    A key starting with `val_` is checked at the end of every epoch that ran
    validation; other keys at the end of every epoch; a key no epoch logged
    fails at the end of training. Put it after the callbacks that write the
    keys (e.g. after `DeltaM`) and before those that read them.

    Args:
        keys: The log keys to require, e.g. `["val_delta_m"]`.
        what: Who needs them, for the error message (e.g. "the tuner
            objective").

    Example:

    >>> check = RequireLogged(["val_delta_m"], what="the tuner objective")
    >>> check.on_epoch_end(0, {"loss": 1.0})   # no validation this epoch
    >>> check.on_epoch_end(1, {"loss": 1.0, "val_loss": 1.2})
    Traceback (most recent call last):
    ...
    keras_mtl.objectives.ObjectiveError: the tuner objective needs ['val_delta_m'], ...
    """

    def __init__(self, keys, what="a monitor"):
        super().__init__()
        if isinstance(keys, str):
            keys = [keys]
        if not isinstance(keys, (list, tuple)) or not keys or not all(
            isinstance(k, str) and k for k in keys
        ):
            raise ValueError(
                "Invalid value received for argument `keys`. Expected a "
                f"non-empty list of log keys. Received: keys={keys!r}"
            )
        self.keys = list(keys)
        self.what = str(what)
        self._seen = set()

    def on_train_begin(self, logs=None):
        self._seen = set()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._seen.update(k for k in self.keys if k in logs)
        missing = [
            k for k in self.keys
            if k not in logs and (not k.startswith("val_") or _validation_ran(logs, "val_"))
        ]
        if missing:
            raise ObjectiveError(_missing_message(self.what, missing, logs))

    def on_train_end(self, logs=None):
        never = [k for k in self.keys if k not in self._seen]
        if never:
            raise ObjectiveError(
                f"{self.what} needs {never}, which no epoch logged (no epoch "
                "ran validation?). Pass `validation_data`."
            )

    def get_config(self):
        return {"keys": self.keys, "what": self.what}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def label_scales(data, tasks):
    """The error of predicting the label mean, per task and metric.

    For each task with metrics where smaller is better (MAE and RMSE of
    `Regression` and `DenseRegression`): `mae` is the mean absolute deviation
    of the labels from their mean, `rmse` their standard deviation (the mean
    is taken per output channel, over examples and pixels). Missing labels
    (NaN) are left out. Use them as `WeightedScore(scales=...)`: a normalised
    error of 1 is then "no better than always predicting the mean".

    Args:
        data: A dict `{task: labels}`, or an iterable of batches `(x, y)` /
            `(x, y, sample_weight)` with `y` a dict (a `tf.data.Dataset` as
            passed to `fit`, batched or not).
        tasks: List of `keras_mtl.tasks.Task`.

    Returns:
        `{task: {"mae": float, "rmse": float}}` for those tasks.

    Example:

    >>> from keras_mtl import tasks
    >>> labels = {"age": np.array([20.0, 30.0, np.nan, 40.0]),
    ...           "gender": np.array([0, 1, 1, 0])}
    >>> scales = label_scales(labels, [tasks.Regression("age"),
    ...                                tasks.BinaryClassification("gender")])
    >>> {k: round(v, 3) for k, v in scales["age"].items()}
    {'mae': 6.667, 'rmse': 8.165}
    """
    tasks = tasks_lib.check_tasks(tasks)
    wanted = [t for t in tasks if any(not h for h in t.higher_is_better.values())]
    for task in wanted:
        rules = [m for m, h in task.higher_is_better.items() if not h and m not in ("mae", "rmse")]
        if rules:
            raise ValueError(
                f"Cannot compute a label scale for metrics {rules} of task "
                f"{task.name!r} (only 'mae' and 'rmse'); pass `scales` yourself."
            )
    batches = [(None, data)] if isinstance(data, dict) else data
    collected = {t.name: [] for t in wanted}
    for batch in batches:
        if (
            not isinstance(batch, (tuple, list))
            or len(batch) not in (2, 3)
            or not isinstance(batch[1], dict)
        ):
            raise ValueError(
                "Invalid value received for argument `data`. Expected a dict "
                "{task: labels} or batches (x, {task: labels}[, sample_weight]). "
                f"Received an element of type {type(batch).__name__}."
            )
        y = batch[1]
        for task in wanted:
            if task.name not in y:
                raise ValueError(
                    "Invalid value received for argument `data`. Expected labels "
                    f"for task {task.name!r}. Received keys: {sorted(y)}"
                )
            # One row per example (per pixel for dense tasks), whether the
            # data are batched or not and the channel axis of 1 is there or not.
            values = np.asarray(y[task.name], dtype="float32")
            collected[task.name].append(values.reshape(-1, task.output_channels))
    scales = {}
    for task in wanted:
        if not collected[task.name]:
            raise ValueError("Invalid value received for argument `data`: it holds no labels.")
        values = np.concatenate(collected[task.name], axis=0).astype("float64")
        present = values[~np.isnan(values).any(axis=-1)]
        if len(present) < 2:
            raise ValueError(
                f"Cannot compute a label scale for task {task.name!r}: it has "
                f"{len(present)} labelled value(s); at least 2 are needed."
            )
        deviation = present - present.mean(axis=0)
        mae = float(np.mean(np.abs(deviation)))
        rmse = float(np.sqrt(np.mean(deviation**2)))
        if mae == 0 or rmse == 0:
            raise ValueError(
                f"Cannot compute a label scale for task {task.name!r}: all its "
                "labels are equal. Pass `scales` yourself."
            )
        scales[task.name] = {m: {"mae": mae, "rmse": rmse}[m] for m in task.higher_is_better}
    return scales
