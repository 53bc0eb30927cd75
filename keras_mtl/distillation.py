"""Knowledge distillation: a multi-task student learns from single-task teachers.

The most common use of distillation in multi-task learning (seed 003) is to
train one multi-task "student" from several single-task "teacher" networks,
one per task, each already trained on its own task. `Distiller` wraps a
`MultiTaskModel` student and a dict of frozen teachers `{task: model}`; it is
trained with plain `fit`, and afterwards `distiller.student` is the model to
save and export.

For each task t that has a teacher the student minimises

    L_t = alpha * L_label,t + (1 - alpha) * L_distill,t

where `L_label,t` is the student's own loss for t (missing labels and sample
weights masked exactly as `MultiTaskModel` masks them) and `L_distill,t`
compares the student's prediction with the teacher's, following Hinton,
Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"
(arXiv:1503.02531):

- softmax heads (`MulticlassClassification`, per pixel for `Segmentation`):
  `T² · KL(softmax(t / T) ‖ softmax(s / T))`, where t and s are the teacher's
  and student's logits. Our heads output probabilities, so their logarithms
  serve as logits: `log softmax(z) = z - logsumexp(z)` differs from the
  logits z by a per-example constant, which the softmax ignores.
  Probabilities are clipped at 1e-7 first, as Keras' cross-entropies clip
  them.
  The T² factor is the paper's: it keeps the soft targets' gradients at the
  same scale as the labels' when T changes;
- sigmoid heads (`BinaryClassification`, `MultilabelClassification`): the
  same divergence for a Bernoulli distribution, i.e. the two-class softmax on
  the logits `(0, l)`, per label and averaged over labels as Keras' binary
  cross-entropy averages them;
- heads without an activation (`Regression`, `DenseRegression`): the mean
  squared error to the teacher's prediction, where the temperature plays no
  part. The paper has no regression case; matching the teacher's output with
  a squared error is the form its high-temperature limit takes for logits,
  and the usual regression analogue.

Each distillation term is the mean over every example (and pixel) of the
batch, labelled or not, and ignores sample weights: the teacher fills in the
labels a batch lacks. This is what makes distillation useful for partially
labelled, multi-dataset training (`keras_mtl.data.interleave` marks a task's
absent labels with sample weight 0): each task still gets a training signal
from every image, through its teacher. Tasks without a teacher keep their
label loss alone. The per-task losses are then combined by the student's
weighting (`compile(weighting=...)`, loss-level methods).
"""

import types

import keras
from keras import ops

from keras_mtl import _keras_compat
from keras_mtl._validation import check_fraction
from keras_mtl._validation import check_number
from keras_mtl import training as training_lib
from keras_mtl import weighting as weighting_lib
from keras_mtl.models import MultiTaskModel
from keras_mtl.models.step_checks import inputs_finite

#: Probabilities are clipped to [EPSILON, 1] before their logarithm.
EPSILON = 1e-7


def _log(p):
    return ops.log(ops.clip(p, EPSILON, 1.0))


def distillation_loss(task, teacher_prediction, student_prediction, temperature=2.0):
    """Per-example (per-pixel) distillation loss of one task (see module doc).

    Args:
        task: The `keras_mtl.tasks.Task` both predictions are for; its head's
            activation ("softmax", "sigmoid" or none) picks the form.
        teacher_prediction: The teacher's output (probabilities or values).
        student_prediction: The student's output, same shape.
        temperature: The softening temperature T > 0 (unused for regression).

    Returns:
        The loss without its last axis: `(batch,)`, or `(batch, h, w)` for
        dense tasks.

    Example:

    >>> import numpy as np
    >>> from keras_mtl.tasks import MulticlassClassification
    >>> task = MulticlassClassification("digit", num_classes=2)
    >>> p = np.array([[0.8, 0.2]], "float32")
    >>> float(distillation_loss(task, p, p, temperature=2.0)[0])
    0.0
    """
    t = ops.cast(teacher_prediction, "float32")
    s = ops.cast(student_prediction, "float32")
    if task.activation == "softmax":
        log_q_t = ops.log_softmax(_log(t) / temperature, axis=-1)
        log_q_s = ops.log_softmax(_log(s) / temperature, axis=-1)
        kl = ops.sum(ops.exp(log_q_t) * (log_q_t - log_q_s), axis=-1)
        return temperature**2 * kl
    if task.activation == "sigmoid":
        logit_t = (_log(t) - _log(1.0 - t)) / temperature
        logit_s = (_log(s) - _log(1.0 - s)) / temperature
        # KL between Bernoulli(sigmoid(logit_t)) and Bernoulli(sigmoid(logit_s)).
        kl = ops.sigmoid(logit_t) * (ops.log_sigmoid(logit_t) - ops.log_sigmoid(logit_s))
        kl += ops.sigmoid(-logit_t) * (ops.log_sigmoid(-logit_t) - ops.log_sigmoid(-logit_s))
        return temperature**2 * ops.mean(kl, axis=-1)
    if task.activation is None:
        return ops.mean(ops.square(s - t), axis=-1)
    raise ValueError(
        f"Task {task.name!r} has a head activation {task.activation!r}; "
        "distillation supports 'softmax', 'sigmoid' and none (regression)."
    )


@keras.saving.register_keras_serializable(package="keras_mtl")
class Distiller(keras.Model):
    """Trains a multi-task student from per-task teachers' soft targets.

    For each task with a teacher the student minimises
    `alpha * label_loss + (1 - alpha) * distillation_loss` (Hinton et al.
    2015; see the module docstring for each task kind); tasks without a
    teacher keep their label loss. The distillation term is computed on every
    example, including those whose label is missing, so the teachers fill in
    the labels a partially labelled batch lacks. The per-task losses are
    combined by the weighting given to `compile`, as the student's own
    `compile` would combine them.

    Calling the distiller (or `predict`) runs the student. Teachers are
    frozen (`trainable = False`, run with `training=False`). History shows
    `loss`, `<task>_loss` (the student's label loss, as the student would
    report it), `<task>_distill_loss` for the tasks with a teacher, the
    student's metrics and the weighting's `weight_<task>`. After training,
    `distiller.student` is the model to save or export.

    Args:
        student: A `keras_mtl.MultiTaskModel`, the model being trained.
        teachers: Dict `{task_name: keras.Model}`. Each teacher maps the
            student's input images to that task's prediction: a tensor of the
            shape of the student's head, or a dict holding it under the task
            name (a single-task or multi-task `MultiTaskModel`) or as its only
            entry.
        temperature: Softening temperature T > 0 of the classification terms.
        alpha: Weight in [0, 1] of the label loss; `1 - alpha` weights the
            distillation loss. `alpha=1` is the student's own training.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    >>> import keras, keras_mtl
    >>> from keras_mtl.tasks import BinaryClassification, Regression
    >>> def trunk():
    ...     images = keras.Input((8, 8, 3))
    ...     return keras.Model(images, keras.layers.Conv2D(4, 3)(images))
    >>> student = keras_mtl.MultiTaskModel(
    ...     trunk(), [Regression("size"), BinaryClassification("big")],
    ...     head_units=(4,))
    >>> teacher = keras_mtl.MultiTaskModel(
    ...     trunk(), [BinaryClassification("big")], head_units=(4,))
    >>> distiller = Distiller(student, {"big": teacher}, temperature=2.0, alpha=0.5)
    >>> distiller.compile(optimizer="adam", weighting="equal")
    >>> x = keras.random.uniform((4, 8, 8, 3))
    >>> y = {"size": keras.ops.ones((4, 1)), "big": keras.ops.ones((4, 1))}
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> sorted(k for k in history.history if k.endswith("loss"))
    ['big_distill_loss', 'big_loss', 'loss', 'size_loss']
    """

    def __init__(self, student, teachers, temperature=2.0, alpha=0.5, **kwargs):
        kwargs.setdefault("name", "distiller")
        super().__init__(**kwargs)
        if not isinstance(student, MultiTaskModel):
            raise ValueError(
                "Invalid value received for argument `student`. Expected a "
                f"`keras_mtl.MultiTaskModel`. Received: student={student!r}"
            )
        self.temperature = check_number("temperature", temperature, minimum=0, exclusive=True)
        self.alpha = check_fraction("alpha", alpha)
        teachers = self._check_teachers(student, teachers)
        for teacher in teachers.values():
            _freeze(teacher)

        # === Config ===
        self.student = student
        self.teachers = teachers
        # Both are built (Functional) models: nothing left to build.
        self.built = True

    # --- what the student is ------------------------------------------------
    @property
    def tasks(self):
        return self.student.tasks

    @property
    def task_names(self):
        return self.student.task_names

    @property
    def image_shape(self):
        return self.student.image_shape

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    # --- checks -------------------------------------------------------------
    def _check_teachers(self, student, teachers):
        if not isinstance(teachers, dict) or not teachers:
            raise ValueError(
                "Invalid value received for argument `teachers`. Expected a "
                "non-empty dict {task_name: keras.Model}. Received: "
                f"teachers={teachers!r}"
            )
        unknown = sorted(set(teachers) - set(student.task_names))
        if unknown:
            raise ValueError(
                "Invalid value received for argument `teachers`. Expected keys "
                f"among the student's task names {student.task_names}. "
                f"Received unknown keys {unknown}."
            )
        images = student.inputs[0]
        student_shapes = {n: tuple(v.shape) for n, v in student.compute_output_spec(images).items()}
        tasks = {t.name: t for t in student.tasks}
        checked = {}
        for name in student.task_names:  # in task order
            if name not in teachers:
                continue
            teacher = teachers[name]
            if not isinstance(teacher, keras.Model) or teacher is student:
                raise ValueError(
                    "Invalid value received for argument `teachers`. Expected "
                    f"a `keras.Model` other than the student for task {name!r}. "
                    f"Received: teachers[{name!r}]={teacher!r}"
                )
            if tasks[name].activation not in ("softmax", "sigmoid", None):
                raise ValueError(
                    "Invalid value received for argument `teachers`. Task "
                    f"{name!r} has a head activation {tasks[name].activation!r}; "
                    "distillation supports 'softmax', 'sigmoid' and none."
                )
            try:
                spec = _pick(name, teacher.compute_output_spec(images))
            except Exception as error:  # what a model raises varies
                raise ValueError(
                    "Invalid value received for argument `teachers`. The teacher "
                    f"of task {name!r} cannot take the student's inputs "
                    f"{tuple(images.shape)}, or its output is not one tensor "
                    f"(nor a dict holding {name!r}): {error}"
                ) from error
            got, expected = tuple(spec.shape), student_shapes[name]
            if len(got) != len(expected) or any(
                g is not None and e is not None and g != e
                for g, e in zip(got[1:], expected[1:])
            ):
                raise ValueError(
                    "Invalid value received for argument `teachers`. The teacher "
                    f"of task {name!r} must output the shape of the student's "
                    f"head {expected}. Received a teacher output of shape {got}."
                )
            checked[name] = teacher
        return checked

    # --- compile --------------------------------------------------------------
    def compile(
        self,
        optimizer="auto",
        loss="auto",
        metrics="auto",
        loss_weights=None,
        weighting=None,
        **kwargs,
    ):
        """Configures training; the arguments are the student's `compile`'s.

        Args:
            optimizer: A Keras optimizer or its name; `"auto"` is Adam.
            loss: `"auto"` or a dict `{task: loss}` (the label losses).
            metrics: `"auto"` or a dict `{task: [metrics]}`.
            loss_weights: Optional dict `{task: float}` of fixed weights.
            weighting: A loss-level `keras_mtl.weighting.Weighting` or its
                name. Gradient-level methods are refused: their training step
                differentiates the student's own task losses, which do not
                contain the distillation terms.
            **kwargs: Other `keras.Model.compile` arguments (`run_eagerly`,
                `jit_compile`, `steps_per_execution`, ...).
        """
        if weighting is not None:
            weighting = weighting_lib.get(weighting)
            if weighting.level == "gradient":
                raise ValueError(
                    "Invalid value received for argument `weighting`. A "
                    "`Distiller` supports loss-level weightings only; the "
                    f"gradient-level method {type(weighting).__name__} computes "
                    "per-task gradients of the student's label losses, without "
                    "the distillation terms. Received: "
                    f"weighting={weighting!r}"
                )
        # The student resolves losses, metrics and the weighting (and checks
        # them), so both models report and combine losses in the same way.
        self.student.compile(
            optimizer=optimizer,
            loss=loss,
            metrics=metrics,
            loss_weights=loss_weights,
            weighting=weighting,
        )
        super().compile(optimizer=self.student.optimizer, **kwargs)
        # In a plain namespace, which Keras does not track: a new compile
        # replaces them whole (`metrics` lists them).
        self._distill_loss_trackers = types.SimpleNamespace(by_task={
            n: keras.metrics.Mean(name=f"{n}_distill_loss") for n in self.teachers
        })
        self._distiller_compile_config = dict(
            optimizer=optimizer,
            loss=loss,
            metrics=metrics,
            loss_weights=loss_weights,
            weighting=weighting,
            **kwargs,
        )

    def get_compile_config(self):
        if not self.compiled or getattr(self, "_distiller_compile_config", None) is None:
            return {}
        return keras.saving.serialize_keras_object(self._distiller_compile_config)

    # As the student's: the compile arguments, applied again by `load_model`.
    compile_from_config = MultiTaskModel.compile_from_config

    @property
    def metrics(self):
        metrics = super().metrics  # the loss tracker
        if self.compiled and getattr(self, "_distill_loss_trackers", None):
            # The student's per-task losses, metrics and task weights; not
            # its total-loss tracker (it does not train itself here).
            metrics.extend(self.student.task_metrics())
            metrics.extend(self._distill_loss_trackers.by_task.values())
        return metrics

    def fit(self, *args, callbacks=None, validation_data=None, **kwargs):
        # The callbacks `MultiTaskModel.fit` adds, in the same order. An
        # epoch without labels is valid here: the teachers' targets train.
        callbacks, validation_data = self.student.fit_callbacks(
            callbacks, validation_data, kwargs, require_labels=False, fit_args=args)
        return super().fit(
            *args, callbacks=callbacks, validation_data=validation_data, **kwargs
        )

    # --- losses ---------------------------------------------------------------
    def teacher_predictions(self, x):
        """`{task: prediction}` of each task's teacher (inference mode)."""
        return {
            name: ops.stop_gradient(_pick(name, teacher(x, training=False)))
            for name, teacher in self.teachers.items()
        }

    def distillation_losses(self, x, y_pred):
        """`{task: scalar}`: each teacher's distillation loss, the mean over
        every example (and pixel) of the batch, labelled or not."""
        targets = self.teacher_predictions(x)
        tasks = {t.name: t for t in self.student.tasks}
        return {
            name: ops.mean(distillation_loss(tasks[name], target, y_pred[name], self.temperature))
            for name, target in targets.items()
        }

    def task_losses(self, x, y, y_pred, sample_weight=None):
        """Per-task losses before the weighting.

        Args:
            x: The batch's inputs (the teachers' input).
            y: The batch's labels, as `fit` takes them.
            y_pred: The student's predictions.
            sample_weight: Optional sample weights, as `fit` takes them.

        Returns:
            `(losses, label_losses, distill_losses, counts)`: `{task: scalar}`
            dicts of the combined per-task losses, the student's masked label
            losses, the distillation losses (tasks with a teacher) and the
            numbers of labelled examples (pixels).
        """
        return self._task_losses(x, self.student.prepare_targets(y, sample_weight), y_pred)

    def _task_losses(self, x, targets, y_pred):
        sums, counts = self.student.task_loss_terms(targets, y_pred)
        label = {n: ops.divide_no_nan(sums[n], counts[n]) for n in self.task_names}
        distill = self.distillation_losses(x, y_pred)
        losses = {
            n: self.alpha * label[n] + (1.0 - self.alpha) * distill[n] if n in distill else label[n]
            for n in self.task_names
        }
        return losses, label, distill, counts

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        targets = self.student.prepare_targets(y, sample_weight)
        losses, label, distill, counts = self._task_losses(x, targets, y_pred)
        total, weights = self.student.combine_losses(losses, counts, training=training)
        # `<task>_loss` stays the student's label loss (as the student would
        # report it); the distillation terms are logged beside it.
        self.student.track_losses(label, weights, counts)
        for name, value in distill.items():
            self._distill_loss_trackers.by_task[name].update_state(
                value, sample_weight=ops.shape(y_pred[name])[0]
            )
        # The student's regularisation losses join unweighted (the teachers'
        # are constants and left out). Keras' step sums the replicas'
        # gradients: each replica gives its share.
        total = total + training_lib.extra_loss(self.student.losses)
        # As the student's own step: a step with out-of-domain labels or a
        # non-finite loss logs (and returns) NaN, which `StepGuard` turns into
        # an error naming the task; `where` leaves the gradients zero.
        names = self.task_names
        clean = self.student.step_checks.update_state(
            ops.stack([targets[n].errors for n in names]),
            ops.isfinite(ops.stack([ops.cast(losses[n], "float32") for n in names])),
            ops.all(ops.isfinite(total)),
            ops.stack([ops.cast(counts[n], "float32") for n in names]),
            inputs_finite(x) if self.student.stop_on_nonfinite else True,
        )
        total = ops.where(clean, total, float("nan"))
        return total / training_lib.replicas()

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        self.student.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        return self.get_metrics_result()

    def get_metrics_result(self):
        # As the student reports them: NaN for a task never labelled so far.
        return self.student.mask_absent_tasks(super().get_metrics_result())

    # --- serialisation ----------------------------------------------------------
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "student": keras.saving.serialize_keras_object(self.student),
            "teachers": {
                n: keras.saving.serialize_keras_object(t) for n, t in self.teachers.items()
            },
            "temperature": self.temperature,
            "alpha": self.alpha,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        # The distiller's own compile config compiles the student again:
        # deserialise the student uncompiled rather than compile it twice.
        student = {k: v for k, v in config["student"].items() if k != "compile_config"}
        config["student"] = keras.saving.deserialize_keras_object(
            student, custom_objects=custom_objects
        )
        config["teachers"] = {
            n: keras.saving.deserialize_keras_object(t, custom_objects=custom_objects)
            for n, t in config["teachers"].items()
        }
        return cls(**config)


def _freeze(model):
    """Makes every layer and variable of `model` non-trainable.

    `model.trainable = False` is not enough: on TensorFlow, assigning the
    value an attribute already holds is skipped, and a model deserialised
    with `trainable=False` (a teacher loaded from a `.keras` file) can hold
    sublayers built in its constructor that are still trainable, whose
    variables the distiller would then train.
    """
    for layer in [model, *_keras_compat.flatten_layers(model)]:
        keras.layers.Layer.trainable.fset(layer, False)


def _pick(name, outputs):
    """The prediction for task `name` in a teacher's output."""
    if isinstance(outputs, dict):
        if name in outputs:
            return outputs[name]
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        raise ValueError(
            f"the teacher outputs a dict with keys {sorted(outputs)}, without {name!r}"
        )
    if isinstance(outputs, (list, tuple)):
        if len(outputs) == 1:
            return outputs[0]
        raise ValueError(f"the teacher outputs {len(outputs)} tensors")
    return outputs
