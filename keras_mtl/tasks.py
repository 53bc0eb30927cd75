"""Tasks: what one head predicts and how it is judged.

A task is plain configuration (no tensors, no layers): its name, the shape and
activation of its head's output, its loss, its metrics, how a missing label is
marked, and whether a larger value of each metric is better (for Δm). The model
reads tasks to build heads and to fill `compile(loss="auto", metrics="auto")`.

Heads output what a user wants from `predict`: probabilities for classification
(sigmoid / softmax), values for regression. Losses are Keras' own
`from_logits=False` forms; under TensorFlow Keras reads the logits back from
the sigmoid/softmax op, so training is as stable as with logits.

Missing labels. A label is missing when it carries the task's marker: NaN for
regression targets, -1 (or NaN) for class ids and binary labels, -1 per pixel
for segmentation, NaN per pixel for dense regression. A label whose last axis
holds several values (a 2-d position, a multi-hot row, a depth channel) is
missing when any of those values is missing. Missing labels add no loss and no
metric update (see `MultiTaskModel`).

Label domains. Every other value must lie in the task's domain (`domain`):
class ids are integers in `[0, num_classes)`, binary and multi-label targets
lie in `[0, 1]` (soft labels included), regression targets are finite. A value
outside it (a 255 "ignore" pixel, a class id of 1.7, a binary label of 255,
a class id of -2, an infinite target) is never read as missing nor trained
on: the step masks it and reports it, and `fit` stops with a `ValueError`
naming the task (`keras_mtl.models.step_checks`).
"""

import re

import keras
import numpy as np
from keras import ops

from keras_mtl._validation import check_int
from keras_mtl._validation import check_number
from keras_mtl._validation import check_non_negative

#: A task's name becomes a layer name, a TF name scope, log keys and
#: SavedModel output keys: ASCII letters, digits, `_`, `.` and `-`.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _is_float(x):
    return "float" in keras.backend.standardize_dtype(x.dtype)


def _check_name(name):
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        raise ValueError(
            "Invalid value received for argument `name`. Expected a non-empty "
            "name of ASCII letters, digits, '_', '.' and '-', starting with a "
            "letter or digit: it names the head's layers, its TensorFlow name "
            f"scope, its log keys and its SavedModel outputs. Received: name={name!r}"
        )
    if name == "val" or name.startswith("val_"):
        raise ValueError(
            "Invalid value received for argument `name`. Expected a name other "
            "than 'val' and not starting with 'val_': Keras prefixes validation "
            f"logs with 'val_', so the training logs of a task named {name!r} "
            f"would read as validation logs (`{name}_loss`). Received: name={name!r}"
        )
    return name


#: Keras losses by the labels they read (function and class names). A class-id
#: task takes only class-id losses; other tasks take neither those nor the
#: one-hot ones (keras_mtl's class labels are ids, never one-hot).
_LOSS_FAMILIES = {
    "class_ids": {"sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"},
    "one_hot": {
        "categorical_crossentropy", "CategoricalCrossentropy",
        "categorical_focal_crossentropy", "CategoricalFocalCrossentropy",
        "categorical_hinge", "CategoricalHinge",
    },
    "binary": {
        "binary_crossentropy", "BinaryCrossentropy", "binary_focal_crossentropy",
        "BinaryFocalCrossentropy", "hinge", "Hinge", "squared_hinge", "SquaredHinge",
    },
    "regression": {
        "mean_squared_error", "MeanSquaredError", "mean_absolute_error", "MeanAbsoluteError",
        "huber", "Huber", "log_cosh", "LogCosh", "mean_squared_logarithmic_error",
        "MeanSquaredLogarithmicError", "mean_absolute_percentage_error",
        "MeanAbsolutePercentageError", "poisson", "Poisson",
    },
}


_FAMILY_TEXT = {
    "class_ids": "class-id", "one_hot": "one-hot", "binary": "binary", "regression": "regression",
}


def _check_loss(task, loss):
    """Refuses a loss that cannot read the task's labels or head."""
    if isinstance(loss, keras.losses.Loss):
        key, config = type(loss).__name__, loss.get_config()
    else:
        key, config = getattr(loss, "__name__", None), {}
    family = next((f for f, names in _LOSS_FAMILIES.items() if key in names), None)
    wrong = (
        family in ("binary", "regression", "one_hot") if task.label_family == "class_ids"
        else family in ("class_ids", "one_hot")
    )
    problem = None
    if wrong:
        hint = (
            " (for class ids use 'sparse_categorical_crossentropy')"
            if family == "one_hot" else ""
        )
        problem = (
            f"{key} reads {_FAMILY_TEXT[family]} labels, and task {task.name!r} "
            f"has {_FAMILY_TEXT[task.label_family]} labels{hint}"
        )
    elif config.get("from_logits") and task.activation is not None:
        problem = (
            f"from_logits=True, but the head of task {task.name!r} already applies a "
            f"{task.activation} (it outputs probabilities, as `predict` gives them); "
            "use from_logits=False, the default: under TensorFlow Keras reads the "
            "logits back from that op, so training is as stable"
        )
    elif config.get("reduction") == "sum":
        problem = (
            "reduction='sum': each task's loss is the mean over its labelled "
            "examples (missing labels masked), whatever the reduction; scale a "
            "task's loss with `compile(loss_weights=...)` instead"
        )
    if problem:
        raise ValueError(
            f"Invalid value received for argument `loss`. {problem}. "
            f"Received: loss={task.loss!r}"
        )


def _label_tensor(task, y):
    """`y` as a tensor of numbers, or a `ValueError` naming the task."""
    if getattr(y, "dtype", None) is None or getattr(y.dtype, "kind", None) in ("U", "S", "O"):
        y = np.asarray(y)
        if y.dtype.kind in ("U", "S", "O"):
            hint = (
                " (map class names to ids, e.g. with `class_names.index`)"
                if task.label_family == "class_ids" else ""
            )
            raise ValueError(
                f"Invalid labels for task {task.name!r}: expected numbers, "
                f"{task.domain}. Received labels of dtype {y.dtype}{hint}, e.g. "
                f"{y.reshape(-1)[:3].tolist()!r}."
            )
    y = ops.convert_to_tensor(y)
    if keras.backend.standardize_dtype(y.dtype) == "string":
        raise ValueError(
            f"Invalid labels for task {task.name!r}: expected numbers, {task.domain}. "
            "Received a tensor of strings (map them to numbers in the data pipeline)."
        )
    return y


def value_summary(bad, values):
    """`[count, min, -max]` (float32) of `values` where `bad` is True (+inf
    for both extremes when nothing is): what a step reports of the values
    it left out. The maximum is negated so that `StepChecks` keeps both
    extremes of all steps with one `minimum`."""
    values = ops.cast(values, "float32")
    return ops.stack([
        ops.sum(ops.cast(bad, "float32")),
        ops.min(ops.where(bad, values, float("inf"))),
        -ops.max(ops.where(bad, values, -float("inf"))),
    ])


def _outside_unit_interval(task, y):
    """`label_masks` of binary targets: `[0, 1]`, -1 or NaN missing."""
    missing, invalid = Task.label_masks(task, y)
    outside = ops.logical_or(ops.less(y, 0), ops.greater(y, 1))
    return missing, ops.logical_or(invalid, outside)


def _ignore_class(loss):
    if isinstance(loss, keras.losses.Loss):
        return loss.get_config().get("ignore_class")
    return None


class Task:
    """Base class of all tasks. Subclasses set the class attributes below.

    Args:
        name: The task's name: the key of its output, its labels and its
            sample weights, and the prefix of its metrics in History
            (`age_loss`, `val_age_mae`).
        loss: A Keras loss (name, function or `keras.losses.Loss`), or `None`
            for the task's default.
        attach_at: Name of the backbone layer whose output this task's head
            reads (a branch point: hierarchical or early-exit heads), or
            `None` for the backbone's output.
        gradient_reversal: `None`, or `λ >= 0` for an adversarial task: the
            head reads the representation through
            `keras_mtl.adversarial.GradientReversal(λ)`, so the head learns
            the task while the shared trunk gets `-λ` times its gradient and
            unlearns what predicts it (a data set's domain, a nuisance or
            protected attribute; Ganin & Lempitsky 2015).
    """

    #: "vector" heads read the pooled representation, "dense" heads decode
    #: the feature map back to input resolution.
    kind = "vector"
    #: Activation of the head's last layer.
    activation = None
    #: Default loss identifier.
    default_loss = None
    #: dtype the labels are cast to before the loss.
    label_dtype = "float32"
    #: Whether labels are class ids (one value fewer than the output's rank).
    sparse_labels = False
    #: Whether -1 marks a missing label (class labels), besides NaN.
    minus_one_is_missing = False
    #: Whether each value of a label's last axis is masked on its own (the
    #: loss is then per value); otherwise a label is missing as a whole.
    masks_per_value = False
    #: The kind of labels, which decides the Keras metrics that read them:
    #: "regression" values, "binary" (or multi-hot) targets, "class_ids".
    label_family = "regression"

    def __init__(self, name, loss=None, attach_at=None,
                 gradient_reversal=None):
        self.name = _check_name(name)
        if attach_at is not None and (not isinstance(attach_at, str) or not attach_at):
            raise ValueError(
                "Invalid value received for argument `attach_at`. Expected None or "
                f"the name of a backbone layer. Received: attach_at={attach_at!r}"
            )
        self.attach_at = attach_at
        self.gradient_reversal = (
            None if gradient_reversal is None
            else check_non_negative("gradient_reversal", gradient_reversal)
        )
        self.loss = self.default_loss if loss is None else loss
        try:
            resolved = keras.losses.get(self.loss)
        except (ValueError, TypeError) as error:
            raise ValueError(
                "Invalid value received for argument `loss`. Expected a Keras "
                "loss name, function or `keras.losses.Loss` instance. "
                f"Received: loss={self.loss!r}"
            ) from error
        _check_loss(self, resolved)

    # --- shapes -----------------------------------------------------------
    @property
    def output_channels(self):
        """Size of the head output's last axis."""
        raise NotImplementedError

    def label_shape(self, batch_size=None, image_shape=None):
        """Shape of a batch of labels, as the model expects it."""
        spatial = tuple(image_shape[:2]) if self.kind == "dense" else ()
        tail = () if self.sparse_labels else (self.output_channels,)
        return (batch_size, *spatial, *tail)

    # --- losses and metrics ------------------------------------------------
    def loss_fn(self):
        """Returns a function `(y_true, y_pred) -> per-example loss`.

        The values are not reduced over the batch (nor over pixels), so the
        model can mask missing labels before it averages.
        """
        loss = keras.losses.get(self.loss)
        if isinstance(loss, keras.losses.Loss):
            return loss.call
        return loss

    def metrics(self):
        """Fresh metric objects for this task's head."""
        return []

    @property
    def higher_is_better(self):
        """`{metric_name: bool}` for each of `metrics()` (used by Δm)."""
        return {}

    # --- missing labels and the label domain -------------------------------
    @property
    def domain(self):
        """The valid labels and the missing marker, in words (error messages)."""
        return "finite numbers, or NaN for a missing label"

    def label_masks(self, y):
        """`(missing, invalid)`: boolean tensors of `y`'s shape, True where a
        value is the missing marker, or neither that nor in the domain."""
        if _is_float(y):
            missing = ops.isnan(y)
            invalid = ops.isinf(y)
        else:
            missing = invalid = ops.zeros_like(y, "bool")
        if self.minus_one_is_missing:
            missing = ops.logical_or(missing, ops.equal(y, -1))
        return missing, invalid

    def prepare_labels(self, y):
        """The labels as the loss takes them, and what to leave out.

        Returns `(labels, missing, invalid, received)`: `labels` cast to the
        label dtype (a last axis of 1 added where the head has one), with
        missing and out-of-domain values replaced by a valid placeholder;
        `missing` and `invalid`, boolean masks of the loss's shape (an
        example, or a pixel, is missing or invalid when any of its values
        is); `received`, `value_summary` of the out-of-domain values.
        """
        y = _label_tensor(self, y)
        if not self.sparse_labels and self.output_channels == 1 and self._needs_channel_axis(y):
            y = ops.expand_dims(y, -1)
        missing, invalid = self.label_masks(y)
        invalid = ops.logical_and(invalid, ops.logical_not(missing))
        received = value_summary(invalid, y)
        left_out = ops.logical_or(missing, invalid)
        labels = ops.cast(ops.where(left_out, ops.zeros_like(y), y), self.label_dtype)
        if not self.sparse_labels and not self.masks_per_value:
            missing, invalid = ops.any(missing, axis=-1), ops.any(invalid, axis=-1)
            invalid = ops.logical_and(invalid, ops.logical_not(missing))
        return labels, missing, invalid, received

    def _needs_channel_axis(self, y):
        expected_rank = 4 if self.kind == "dense" else 2
        return len(y.shape) == expected_rank - 1

    def serving_outputs(self):
        """The names of this task's SavedModel outputs (`keras_mtl.export`):
        its prediction, then what is derived from it."""
        return [self.name]

    # --- serialisation -----------------------------------------------------
    def get_config(self):
        loss = self.loss
        if not isinstance(loss, str):
            loss = keras.saving.serialize_keras_object(loss)
        return {
            "name": self.name, "loss": loss, "attach_at": self.attach_at,
            "gradient_reversal": self.gradient_reversal,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("loss"), dict):
            config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_mtl")
class Regression(Task):
    """Regression of `units` real values from the pooled representation.

    Missing labels are NaN (a label with any NaN value is missing).

    Targets in their own units (ages in years, prices) give losses of
    thousands beside classification losses below 1, and a head that starts
    near 0. `normalize=(mean, std)` (from `Regression.normalization` of the
    training labels) makes the head predict `mean + std * output`, so its
    predictions, metrics and SavedModel outputs stay in the labels' units,
    and computes the loss on standardised values, `loss((y - mean) / std,
    (y_pred - mean) / std)`: MSE divided by `std²`, MAE by `std`.

    Args:
        name: The task's name.
        units: Number of values predicted per example.
        loss: "mse" (default), "mae", "huber", or any Keras loss.
        attach_at: The backbone layer the head reads (see `Task`).
        gradient_reversal: `λ` of an adversarial task (see `Task`).
        normalize: `None`, or `(mean, std)` of the labels: numbers, or one
            per unit; each std finite and > 0.

    Example:

    >>> task = Regression("age", loss="mae")
    >>> task.label_shape(batch_size=8)
    (8, 1)
    >>> ages = np.array([20.0, 30.0, np.nan, 40.0])  # NaN: missing
    >>> Regression("age", normalize=Regression.normalization(ages)).normalize
    ([30.0], [8.16496...])
    """

    default_loss = "mse"

    def __init__(self, name, units=1, loss=None, attach_at=None,
                 gradient_reversal=None, normalize=None):
        super().__init__(
            name, loss=loss, attach_at=attach_at, gradient_reversal=gradient_reversal
        )
        self.units = check_int("units", units, 1)
        self.normalize = _check_normalize(normalize, self.units)

    @staticmethod
    def normalization(labels):
        """`(mean, std)` of `labels` (`(N,)` or `(N, units)`), per unit,
        ignoring NaN (missing) labels: the `normalize` argument. A unit
        whose labels are all equal gets std 1."""
        values = np.asarray(labels, dtype="float64")
        values = values.reshape(len(values), -1)
        if not np.isfinite(values).any(axis=0).all():
            raise ValueError(
                "Invalid value received for argument `labels`: every unit needs at "
                f"least one finite label to normalise by. Received {len(values)} "
                "labels with none for some unit."
            )
        mean = np.nanmean(np.where(np.isfinite(values), values, np.nan), axis=0)
        std = np.nanstd(np.where(np.isfinite(values), values, np.nan), axis=0)
        std = np.where(std > 0, std, 1.0)
        return [float(m) for m in mean], [float(s) for s in std]

    @property
    def output_channels(self):
        return self.units

    def loss_fn(self):
        loss = super().loss_fn()
        if self.normalize is None:
            return loss
        mean, std = (ops.convert_to_tensor(v, "float32") for v in self.normalize)

        def standardised(y_true, y_pred):
            return loss((ops.cast(y_true, "float32") - mean) / std,
                        (ops.cast(y_pred, "float32") - mean) / std)

        return standardised

    def metrics(self):
        return [
            keras.metrics.MeanAbsoluteError(name="mae"),
            keras.metrics.RootMeanSquaredError(name="rmse"),
        ]

    @property
    def higher_is_better(self):
        return {"mae": False, "rmse": False}

    def get_config(self):
        config = {**super().get_config(), "units": self.units}
        if self.normalize is not None:
            config["normalize"] = [list(v) for v in self.normalize]
        return config


def _check_normalize(normalize, units):
    """`normalize` as `([mean] * units, [std] * units)`, or None."""
    if normalize is None:
        return None
    if not isinstance(normalize, (list, tuple)) or len(normalize) != 2:
        raise ValueError(
            "Invalid value received for argument `normalize`. Expected None or "
            "`(mean, std)` of the labels (e.g. `Regression.normalization(train_labels)`). "
            f"Received: normalize={normalize!r}"
        )
    result = []
    for part, value in zip(("mean", "std"), normalize):
        values = list(np.ravel(np.asarray(value, dtype=object)))
        if len(values) == 1:
            values = values * units
        if len(values) != units:
            raise ValueError(
                f"Invalid value received for argument `normalize`: expected a {part} "
                f"per unit ({units}) or one number. Received: {part}={value!r}"
            )
        result.append([
            check_number(f"normalize ({part})", v, minimum=0.0 if part == "std" else None,
                         exclusive=True, kind="finite number")
            for v in values
        ])
    return tuple(result)


@keras.saving.register_keras_serializable(package="keras_mtl")
class BinaryClassification(Task):
    """Binary classification: a sigmoid head giving P(label = 1).

    Labels are 0 or 1; -1 (or NaN) marks a missing label.

    Args:
        name: The task's name.
        loss: Defaults to binary cross-entropy.
        attach_at: The backbone layer the head reads (see `Task`).
        gradient_reversal: `λ` of an adversarial task (see `Task`).

    Example:

    >>> task = BinaryClassification("gender")
    >>> [m.name for m in task.metrics()]
    ['accuracy', 'auc']
    """

    activation = "sigmoid"
    minus_one_is_missing = True
    label_family = "binary"
    default_loss = "binary_crossentropy"

    def __init__(self, name, loss=None, attach_at=None,
                 gradient_reversal=None):
        super().__init__(
            name, loss=loss, attach_at=attach_at, gradient_reversal=gradient_reversal
        )

    @property
    def output_channels(self):
        return 1

    @property
    def domain(self):
        return "0 or 1 (or a soft label in [0, 1]), or -1 (or NaN) for a missing label"

    def label_masks(self, y):
        return _outside_unit_interval(self, y)

    def serving_outputs(self):
        return [self.name, f"{self.name}_class_ids"]

    def metrics(self):
        return [
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc"),
        ]

    @property
    def higher_is_better(self):
        return {"accuracy": True, "auc": True}


class _ClassIdLabels:
    """Labels that are class ids (multi-class and segmentation tasks): one
    output channel per class; integers in `[0, num_classes)`, -1 or NaN
    missing; served as scores, `<task>_class_ids` and, with `class_names`,
    `<task>_class_names`."""

    @property
    def output_channels(self):
        return self.num_classes

    @property
    def domain(self):
        ignored = _ignore_class(self.loss)
        ignored = "" if ignored is None else f" (or {ignored}, the loss's `ignore_class`)"
        return (
            f"class ids: integers in [0, {self.num_classes}), or -1 (or NaN){ignored} "
            "for a missing label"
        )

    def label_masks(self, y):
        missing, invalid = Task.label_masks(self, y)
        ignored = _ignore_class(self.loss)
        if ignored is not None:
            # The loss ignores that id (`ignore_class=255`): a missing marker.
            missing = ops.logical_or(missing, ops.equal(y, ignored))
        outside = ops.logical_or(ops.less(y, 0), ops.greater_equal(y, self.num_classes))
        if _is_float(y):
            # NaN != floor(NaN) too, but NaN is already `missing`.
            outside = ops.logical_or(outside, ops.not_equal(y, ops.floor(y)))
        return missing, ops.logical_or(invalid, outside)

    def serving_outputs(self):
        names = ["class_ids"] + (["class_names"] if self.class_names else [])
        return [self.name] + [f"{self.name}_{n}" for n in names]


@keras.saving.register_keras_serializable(package="keras_mtl")
class MulticlassClassification(_ClassIdLabels, Task):
    """Single-label classification over `num_classes` classes (softmax head).

    Labels are class ids in `[0, num_classes)`; -1 marks a missing label.

    Args:
        name: The task's name.
        num_classes: Number of classes, at least 2.
        class_names: Optional names of the classes, in id order (serving
            returns them).
        loss: Defaults to sparse categorical cross-entropy.
        attach_at: The backbone layer the head reads (see `Task`).
        gradient_reversal: `λ` of an adversarial task (see `Task`).

    Example:

    >>> task = MulticlassClassification("ethnicity", num_classes=5)
    >>> task.label_shape(batch_size=8)
    (8,)
    """

    activation = "softmax"
    minus_one_is_missing = True
    label_family = "class_ids"
    default_loss = "sparse_categorical_crossentropy"
    label_dtype = "int32"
    sparse_labels = True

    def __init__(self, name, num_classes, class_names=None, loss=None, attach_at=None,
                 gradient_reversal=None):
        super().__init__(
            name, loss=loss, attach_at=attach_at, gradient_reversal=gradient_reversal
        )
        self.num_classes = check_int("num_classes", num_classes, 2)
        if class_names is not None:
            class_names = list(class_names)
            if len(class_names) != num_classes or not all(
                isinstance(c, str) for c in class_names
            ):
                raise ValueError(
                    "Invalid value received for argument `class_names`. "
                    f"Expected {num_classes} strings (one per class). "
                    f"Received: class_names={class_names!r}"
                )
        self.class_names = class_names

    def metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    @property
    def higher_is_better(self):
        return {"accuracy": True}

    def _needs_channel_axis(self, y):
        return False

    def prepare_labels(self, y):
        y = _label_tensor(self, y)
        # Accept (batch, 1) class ids as Keras does.
        if len(y.shape) == len(self.label_shape()) + 1 and y.shape[-1] == 1:
            y = ops.squeeze(y, -1)
        return super().prepare_labels(y)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
        }


@keras.saving.register_keras_serializable(package="keras_mtl")
class MultilabelClassification(Task):
    """Multi-label classification: `num_labels` independent sigmoids.

    Labels are multi-hot rows of 0/1. Each value is a label of its own: a -1
    (or NaN) marks that one value as unknown, and the row's other values
    still train (the loss is the mean over the known values; a data set
    that labels some attributes of each example, as CelebA-style sets do).

    Args:
        name: The task's name.
        num_labels: Number of labels, at least 1.
        label_names: Optional names of the labels.
        loss: Defaults to binary cross-entropy.
        attach_at: The backbone layer the head reads (see `Task`).
        gradient_reversal: `λ` of an adversarial task (see `Task`).

    Example:

    >>> task = MultilabelClassification("attributes", num_labels=4)
    >>> task.label_shape(batch_size=2)
    (2, 4)
    """

    activation = "sigmoid"
    minus_one_is_missing = True
    label_family = "binary"
    masks_per_value = True
    default_loss = "binary_crossentropy"

    def __init__(self, name, num_labels, label_names=None, loss=None, attach_at=None,
                 gradient_reversal=None):
        super().__init__(
            name, loss=loss, attach_at=attach_at, gradient_reversal=gradient_reversal
        )
        self.num_labels = check_int("num_labels", num_labels, 1)
        if label_names is not None and len(label_names) != num_labels:
            raise ValueError(
                "Invalid value received for argument `label_names`. "
                f"Expected {num_labels} names. Received: label_names={label_names!r}"
            )
        self.label_names = None if label_names is None else list(label_names)

    @property
    def output_channels(self):
        return self.num_labels

    @property
    def domain(self):
        return (
            f"rows of {self.num_labels} values, each 0 or 1 (or a soft label in "
            "[0, 1]), or -1 (or NaN) for an unknown value"
        )

    def label_masks(self, y):
        return _outside_unit_interval(self, y)

    def loss_fn(self):
        # The loss of each value (a trailing axis of 1 for the loss to
        # reduce), so that unknown values are masked one by one.
        loss = super().loss_fn()
        return lambda y, p: loss(ops.expand_dims(y, -1), ops.expand_dims(p, -1))

    def serving_outputs(self):
        names = ["labels"] + (["label_names"] if self.label_names else [])
        return [self.name] + [f"{self.name}_{n}" for n in names]

    def metrics(self):
        return [
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(
                name="auc", multi_label=True, num_labels=self.num_labels
            ),
        ]

    @property
    def higher_is_better(self):
        return {"accuracy": True, "auc": True}

    def get_config(self):
        return {
            **super().get_config(),
            "num_labels": self.num_labels,
            "label_names": self.label_names,
        }


@keras.saving.register_keras_serializable(package="keras_mtl")
class Segmentation(_ClassIdLabels, Task):
    """Semantic segmentation: a class per pixel, at input resolution.

    Labels are `(height, width)` class-id maps; -1 marks an unlabelled pixel.

    Args:
        name: The task's name.
        num_classes: Number of classes (background included), at least 2.
        class_names: Optional names of the classes.
        loss: Defaults to per-pixel sparse categorical cross-entropy.
        attach_at: The backbone layer the head reads (see `Task`).
        gradient_reversal: `λ` of an adversarial task (see `Task`).

    Example:

    >>> task = Segmentation("segmentation", num_classes=4)
    >>> task.label_shape(batch_size=2, image_shape=(32, 32, 3))
    (2, 32, 32)
    """

    kind = "dense"
    activation = "softmax"
    minus_one_is_missing = True
    label_family = "class_ids"
    default_loss = "sparse_categorical_crossentropy"
    label_dtype = "int32"
    sparse_labels = True

    def __init__(self, name, num_classes, class_names=None, loss=None, attach_at=None,
                 gradient_reversal=None):
        super().__init__(
            name, loss=loss, attach_at=attach_at, gradient_reversal=gradient_reversal
        )
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.class_names = None if class_names is None else list(class_names)

    def metrics(self):
        return [
            keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy"),
            keras.metrics.MeanIoU(
                num_classes=self.num_classes, sparse_y_pred=False, name="miou",
                # A float confusion matrix takes the float masks as weights.
                dtype="float32",
            ),
        ]

    @property
    def higher_is_better(self):
        return {"pixel_accuracy": True, "miou": True}

    def prepare_labels(self, y):
        y = _label_tensor(self, y)
        if len(y.shape) == 4 and y.shape[-1] == 1:
            y = ops.squeeze(y, -1)
        return super().prepare_labels(y)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
        }


@keras.saving.register_keras_serializable(package="keras_mtl")
class DenseRegression(Task):
    """Dense (per-pixel) regression, e.g. depth maps, at input resolution.

    Labels are `(height, width, channels)` maps; NaN marks a missing pixel.

    Args:
        name: The task's name.
        channels: Values per pixel.
        loss: "mae" (default, as depth estimation usually reports), or any
            Keras loss.
        attach_at: The backbone layer the head reads (see `Task`).
        gradient_reversal: `λ` of an adversarial task (see `Task`).

    Example:

    >>> task = DenseRegression("depth")
    >>> task.label_shape(batch_size=2, image_shape=(32, 32, 3))
    (2, 32, 32, 1)
    """

    kind = "dense"
    default_loss = "mae"

    def __init__(self, name, channels=1, loss=None, attach_at=None,
                 gradient_reversal=None):
        super().__init__(
            name, loss=loss, attach_at=attach_at, gradient_reversal=gradient_reversal
        )
        self.channels = check_int("channels", channels, 1)

    @property
    def output_channels(self):
        return self.channels

    def metrics(self):
        return [
            keras.metrics.MeanAbsoluteError(name="mae"),
            keras.metrics.RootMeanSquaredError(name="rmse"),
        ]

    @property
    def higher_is_better(self):
        return {"mae": False, "rmse": False}

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


def get(identifier):
    """Returns a `Task` from a `Task` or its serialised config."""
    if isinstance(identifier, Task):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    raise ValueError(
        "Invalid value received for argument `tasks`. Expected `keras_mtl.tasks.Task` "
        f"instances. Received: {identifier!r}"
    )


def check_tasks(tasks):
    """Validates a task list: non-empty, `Task` instances, unique names."""
    if isinstance(tasks, Task):
        tasks = [tasks]
    if not isinstance(tasks, (list, tuple)) or not tasks:
        raise ValueError(
            "Invalid value received for argument `tasks`. Expected a non-empty "
            f"list of `keras_mtl.tasks.Task`. Received: tasks={tasks!r}"
        )
    tasks = [get(t) for t in tasks]
    names = [t.name for t in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            "Invalid value received for argument `tasks`. Expected unique task "
            f"names. Received duplicate names: {duplicates}"
        )
    owners = {}
    for task in tasks:
        for output in task.serving_outputs():
            if output in owners:
                raise ValueError(
                    "Invalid value received for argument `tasks`. Task names "
                    f"{owners[output]!r} and {task.name!r} collide: both give an "
                    f"output named {output!r} to the exported SavedModel "
                    "(`keras_mtl.export`). Rename one of them."
                )
            owners[output] = task.name
    return tasks

