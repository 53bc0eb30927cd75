"""`StepChecks`: what each step found wrong, kept for the error that stops `fit`.

The training and test steps check every batch on the device, at no extra
host synchronisation: non-finite inputs, labels outside their task's domain
and invalid sample weights (`keras_mtl.models.targets`), non-finite task
losses, totals and gradients. A step that found anything logs `loss` as NaN; the callback that
`fit` puts first (`keras_mtl.training.callbacks.StepGuard`) reads `loss`
after each batch, as Keras' `TerminateOnNaN` does, and only when it is NaN
reads this metric to say what happened, at which step and for which task.

It is a metric (its variables are reset with the others at each epoch and
each evaluation, and travel with the metrics' state on JAX) whose result is
empty: nothing of it reaches the logs.
"""

import math

import keras
import numpy as np
from keras import ops


class StepChecks(keras.metrics.Metric):
    """The steps of the current epoch (or evaluation) and what went wrong.

    Args:
        tasks: The model's `keras_mtl.tasks.Task` list.
        name: The metric's name.
    """

    def __init__(self, tasks, name="step_checks", **kwargs):
        super().__init__(name=name, **kwargs)
        self.tasks = list(tasks)
        num_tasks = len(self.tasks)
        # Steps run, and the clean steps before the first that was not.
        self.steps = self.add_variable(
            shape=(2,), initializer="zeros", name="steps", aggregation="only_first_replica"
        )
        # Per task: out-of-domain labels, invalid sample weights, steps with
        # a non-finite loss, labelled examples (pixels).
        self.counts = self.add_variable(
            shape=(num_tasks, 4), initializer="zeros", name="counts", aggregation="sum"
        )
        # Per task: min and -max of the out-of-domain labels, of the invalid
        # sample weights (+inf: none).
        self.extremes = self.add_variable(
            shape=(num_tasks, 4), initializer="zeros", name="extremes",
            aggregation="only_first_replica",
        )
        # Steps whose inputs held NaN or inf (a NaN pixel may reach no loss:
        # TensorFlow's ReLU and max pooling drop it).
        self.nonfinite_inputs = self.add_variable(
            shape=(), initializer="zeros", name="nonfinite_inputs", aggregation="sum"
        )
        self.reset_state()

    def reset_state(self):
        self.steps.assign(ops.zeros(self.steps.shape, self.dtype))
        self.counts.assign(ops.zeros(self.counts.shape, self.dtype))
        self.extremes.assign(ops.full(self.extremes.shape, float("inf"), self.dtype))
        self.nonfinite_inputs.assign(ops.zeros((), self.dtype))

    def update_state(self, errors, task_losses_finite, finite, labelled, inputs_finite=True):
        """Records one step; returns whether it was clean.

        Every step runs this, so it is a handful of ops on `(T, 4)` tensors
        (`benchmarks/bench_overhead.py`).

        Args:
            errors: `(T, 6)`, each task's `Targets.errors`.
            task_losses_finite: `(T,)` booleans.
            finite: Whether the total and the gradients are finite.
            labelled: `(T,)`, each task's number of labelled examples.
            inputs_finite: Whether the step's inputs were (`inputs_finite(x)`).
        """
        errors = ops.cast(errors, self.dtype)
        counts = ops.concatenate([
            errors[:, ::3],  # out-of-domain labels, sample weights
            ops.cast(ops.logical_not(ops.expand_dims(task_losses_finite, 1)), self.dtype),
            ops.cast(ops.expand_dims(labelled, 1), self.dtype),
        ], axis=1)
        clean = ops.logical_and(
            ops.logical_and(finite, inputs_finite), ops.equal(ops.sum(counts[:, :3]), 0)
        )
        steps = self.steps.value
        before_first = ops.logical_and(clean, ops.equal(steps[0], steps[1]))
        self.steps.assign_add(ops.cast(ops.stack([True, before_first]), self.dtype))
        self.nonfinite_inputs.assign_add(ops.cast(ops.logical_not(inputs_finite), self.dtype))
        self.counts.assign_add(counts)
        self.extremes.assign(ops.minimum(self.extremes.value, ops.take(errors, [1, 2, 4, 5], 1)))
        return clean

    def result(self):
        return {}

    def first_unclean_step(self):
        """The 0-based index of the first step that was not clean, or None."""
        steps, clean = ops.convert_to_numpy(self.steps)
        return None if clean == steps else int(clean)

    def domain_error(self, where):
        """A `ValueError` for the non-finite inputs, out-of-domain labels and
        sample weights seen, or None. `where` says when (epoch, step, which
        data)."""
        return domain_error(
            self.tasks, ops.convert_to_numpy(self.counts), ops.convert_to_numpy(self.extremes),
            where, input_steps=int(ops.convert_to_numpy(self.nonfinite_inputs)),
        )

    def labelled(self):
        """`{task: bool}`: whether any step so far had a labelled example."""
        counts = ops.convert_to_numpy(self.counts)
        return {t.name: bool(counts[i, 3]) for i, t in enumerate(self.tasks)}

    def nonfinite_tasks(self):
        """Names of the tasks whose loss was not finite in some step."""
        counts = ops.convert_to_numpy(self.counts)
        return [t.name for i, t in enumerate(self.tasks) if counts[i, 2]]

    def get_config(self):
        return {
            **super().get_config(),
            "tasks": [keras.saving.serialize_keras_object(t) for t in self.tasks],
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["tasks"] = [keras.saving.deserialize_keras_object(t) for t in config["tasks"]]
        return cls(**config)


def all_finite(values):
    """A scalar boolean: every value finite. A sum is NaN or inf when any of
    its terms is, so one reduction per tensor suffices (no boolean copy of a
    batch or of the gradients). Finite values overflow a float32 sum only
    near 3e38 / their number (1e33 for a batch of 32 64-px images), far past
    where the optimizer's own state does (Adam squares the gradients:
    1.8e19). A sparse gradient (TF's `IndexedSlices`, of an embedding) is
    checked by its values."""
    sums = [
        ops.sum(ops.cast(v.values if hasattr(v, "indices") else v, "float32")) for v in values
    ]
    if not sums:
        return ops.convert_to_tensor(True)
    return ops.isfinite(ops.sum(ops.stack(sums)))


def inputs_finite(x):
    """Whether every floating-point input of the batch `x` is finite."""
    return all_finite([
        v for v in keras.tree.flatten(x) if "float" in keras.backend.standardize_dtype(v.dtype)
    ])


def check_input_arrays(x, where):
    """Raises the error a step would raise for in-memory NumPy inputs `x`
    holding NaN or inf, naming the first example that does."""
    bad = set()
    for value in keras.tree.flatten(x):
        if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating) and value.ndim:
            finite = np.isfinite(value.reshape(len(value), -1)).all(axis=1)
            bad.update(np.flatnonzero(~finite).tolist())
    if bad:
        raise ValueError(
            f"Invalid data {where} (index {min(bad)}): " + input_problem(len(bad), "example")
        )


def input_problem(count, unit="step"):
    """The sentence for `count` steps (or examples) with non-finite inputs."""
    return (
        f"the inputs (`x`) hold NaN or inf values in {count} {unit}"
        f"{'' if count == 1 else 's'}: a model's inputs must be finite (fill "
        "missing pixels or features, e.g. with 0; NaN marks missing labels, "
        "not inputs; a model that replaces NaN inputs itself takes "
        "`compile(stop_on_nonfinite=False)`)."
    )


def domain_error(tasks, counts, extremes, where, after_steps=True, input_steps=0):
    """A `ValueError` naming each task with out-of-domain labels or sample
    weights (and the non-finite inputs of `input_steps` steps), or None.
    `counts` is `(T, >=2)` (labels, sample weights) and `extremes` `(T, 4)`
    (their min and -max), as `StepChecks` keeps them; `after_steps`: whether
    steps ran on the data."""
    problems = [input_problem(input_steps)] if input_steps else []
    for i, task in enumerate(tasks):
        kind = type(task).__name__
        if counts[i, 0]:
            problems.append(
                f"labels of task {task.name!r} ({kind}): expected {task.domain}; "
                f"received {_count(counts[i, 0], task)} outside it, "
                f"{_values(extremes[i, 0], -extremes[i, 1])}.{_label_hint(task, extremes[i])}"
            )
        if counts[i, 1]:
            problems.append(
                f"`sample_weight` of task {task.name!r}: expected finite values >= 0 "
                "(0 leaves an example out, as a missing label does); received "
                f"{_count(counts[i, 1], task)} with other weights, "
                f"{_values(extremes[i, 2], -extremes[i, 3])}."
            )
    if not problems:
        return None
    tail = (
        " These values were left out of the losses and metrics: nothing was trained on them."
        if after_steps and len(problems) > bool(input_steps) else ""
    )
    return ValueError(f"Invalid data {where}: " + " ".join(problems) + tail)


def _count(count, task):
    count = int(count)
    unit = "pixel" if task.kind == "dense" else "example"
    return f"{count} {unit}{'' if count == 1 else 's'}"


def _values(low, high):
    low, high = _number(low), _number(high)
    return f"value {low}" if low == high else f"values from {low} to {high}"


def _number(value):
    value = float(value)
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return str(np.float32(value))


def _label_hint(task, extremes):
    """What to do about the commonest out-of-domain labels."""
    low, high = float(extremes[0]), -float(extremes[1])
    if task.sparse_labels and high >= getattr(task, "num_classes", math.inf):
        if high == 255:
            return (
                " 255 is a common \"ignore\" marker: mark unlabelled values with -1 "
                "(e.g. `tf.where(mask == 255, -1, mask)`)."
            )
        return " Are the class ids 1-based, or is `num_classes` too small?"
    if task.sparse_labels and low > -1:
        return " Class ids must be integers (no rounding is done)."
    if task.sparse_labels or (task.minus_one_is_missing and low < 0):
        return " Only -1 (or NaN) marks a missing label."
    if task.minus_one_is_missing and high == 255:
        return " Scale 0/255 labels to 0/1."
    return ""
