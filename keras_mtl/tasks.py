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
"""

import keras
from keras import ops

from keras_mtl._validation import check_int
from keras_mtl._validation import check_non_negative

_NAME_FORBIDDEN = set(" /\\:")


def _is_float(x):
    return "float" in keras.backend.standardize_dtype(x.dtype)


def _check_name(name):
    if not isinstance(name, str) or not name or _NAME_FORBIDDEN & set(name):
        raise ValueError(
            "Invalid value received for argument `name`. Expected a non-empty "
            "string without spaces, slashes or colons (it names the head, its "
            f"losses and metrics). Received: name={name!r}"
        )
    return name


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
    #: Whether a negative label (-1) marks a missing label (class labels).
    negative_is_missing = False

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
            keras.losses.get(self.loss)
        except (ValueError, TypeError) as error:
            raise ValueError(
                "Invalid value received for argument `loss`. Expected a Keras "
                "loss name, function or `keras.losses.Loss` instance. "
                f"Received: loss={self.loss!r}"
            ) from error

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

    # --- missing labels ----------------------------------------------------
    def missing(self, y):
        """Boolean tensor, True where the label is missing (the loss's shape)."""
        missing = ops.isnan(y) if _is_float(y) else ops.zeros_like(y, "bool")
        if self.negative_is_missing:
            missing = ops.logical_or(missing, ops.less(y, 0))
        if not self.sparse_labels:
            missing = ops.any(missing, axis=-1)
        return missing

    def fill_missing(self, y, missing):
        """Replaces missing labels by a valid placeholder (masked later)."""
        if not self.sparse_labels:
            missing = ops.expand_dims(missing, -1)
        return ops.where(missing, ops.zeros_like(y), y)

    def prepare_labels(self, y):
        """Casts `y` to the label dtype and adds the last axis when it is 1.

        Returns the labels and a boolean mask of the missing ones.
        """
        y = ops.convert_to_tensor(y)
        if self.sparse_labels:
            if _is_float(y):
                # NaN class ids count as missing before the integer cast.
                y = ops.where(ops.isnan(y), -ops.ones_like(y), y)
            y = ops.cast(y, "int32")
        else:
            y = ops.cast(y, self.label_dtype)
            if self.output_channels == 1 and self._needs_channel_axis(y):
                y = ops.expand_dims(y, -1)
        missing = self.missing(y)
        return self.fill_missing(y, missing), missing

    def _needs_channel_axis(self, y):
        expected_rank = 4 if self.kind == "dense" else 2
        return len(y.shape) == expected_rank - 1

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

    Args:
        name: The task's name.
        units: Number of values predicted per example.
        loss: "mse" (default), "mae", "huber", or any Keras loss.
        attach_at: The backbone layer the head reads (see `Task`).
        gradient_reversal: `λ` of an adversarial task (see `Task`).

    Example:

    >>> task = Regression("age", loss="mae")
    >>> task.label_shape(batch_size=8)
    (8, 1)
    """

    default_loss = "mse"

    def __init__(self, name, units=1, loss=None, attach_at=None,
                 gradient_reversal=None):
        super().__init__(
            name, loss=loss, attach_at=attach_at, gradient_reversal=gradient_reversal
        )
        self.units = check_int("units", units, 1)

    @property
    def output_channels(self):
        return self.units

    def metrics(self):
        return [
            keras.metrics.MeanAbsoluteError(name="mae"),
            keras.metrics.RootMeanSquaredError(name="rmse"),
        ]

    @property
    def higher_is_better(self):
        return {"mae": False, "rmse": False}

    def get_config(self):
        return {**super().get_config(), "units": self.units}


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
    negative_is_missing = True
    default_loss = "binary_crossentropy"

    def __init__(self, name, loss=None, attach_at=None,
                 gradient_reversal=None):
        super().__init__(
            name, loss=loss, attach_at=attach_at, gradient_reversal=gradient_reversal
        )

    @property
    def output_channels(self):
        return 1

    def metrics(self):
        return [
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc"),
        ]

    @property
    def higher_is_better(self):
        return {"accuracy": True, "auc": True}


@keras.saving.register_keras_serializable(package="keras_mtl")
class MulticlassClassification(Task):
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
    negative_is_missing = True
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

    @property
    def output_channels(self):
        return self.num_classes

    def metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    @property
    def higher_is_better(self):
        return {"accuracy": True}

    def _needs_channel_axis(self, y):
        return False

    def prepare_labels(self, y):
        y = ops.convert_to_tensor(y)
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

    Labels are multi-hot rows of 0/1; a row holding a -1 (or NaN) is missing.

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
    negative_is_missing = True
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
class Segmentation(Task):
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
    negative_is_missing = True
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

    @property
    def output_channels(self):
        return self.num_classes

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
        y = ops.convert_to_tensor(y)
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
    return tasks

