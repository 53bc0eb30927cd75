"""Labels of one batch, prepared for the losses and metrics of every task.

`prepare(tasks, y, sample_weight, image_shape)` turns what `fit` receives
into one `Targets` per task: the labels in the form the task's loss takes,
`keep` (True where a label is present and its sample weight is positive) and
`weights` (the sample weight where kept, 0 elsewhere). The masked losses,
the labelled counts every weighting receives, and the metrics all read it,
so label presence is decided here, once per step, from the data alone.

A label outside its task's domain (`Task.domain`) and a sample weight that is
negative or not finite are left out like missing ones and counted in
`errors`, which the step reports (`keras_mtl.models.step_checks`): nothing
outside the domain is trained on or silently read as "missing".
"""

import collections

import numpy as np
from keras import ops

from keras_mtl.models.step_checks import domain_error
from keras_mtl.tasks import value_summary

#: One task's prepared labels (see the module docstring).
Targets = collections.namedtuple("Targets", ["labels", "keep", "weights", "errors"])

#: `value_summary` of no values.
_NOTHING = (0.0, float("inf"), float("inf"))

# `Targets.errors` holds, in order, the labels' and then the sample weights'
# `value_summary`: label count, min, -max, weight count, min, -max
# (`StepChecks` and `check_arrays` index it so).


def prepare(tasks, y, sample_weight, image_shape):
    """`{task: Targets}` for a batch's labels `y` and `sample_weight`.

    Args:
        tasks: The model's `keras_mtl.tasks.Task` list.
        y: `{task: labels}`; a list or tuple in task order, or one array when
            there is one task.
        sample_weight: `None`, one array for every task, or `{task: array}`.
        image_shape: The model's input shape (dense tasks' label shapes).
    """
    names = [t.name for t in tasks]
    y = _as_dict(names, y)
    if isinstance(sample_weight, (list, tuple)) and len(names) > 1:
        sample_weight = _as_dict(names, sample_weight, what="sample weights")
    if isinstance(sample_weight, dict):
        unknown = sorted(set(sample_weight) - set(names))
        if unknown:
            raise ValueError(
                "Invalid value received for argument `sample_weight`. Expected "
                f"keys among the task names {names}. Received unknown keys "
                f"{unknown} in sample_weight={sample_weight!r}"
            )
    prepared = {}
    for task in tasks:
        labels, missing, invalid, received = task.prepare_labels(y[task.name])
        _check_shape(task, labels, y[task.name], image_shape)
        sw = sample_weight.get(task.name) if isinstance(sample_weight, dict) else sample_weight
        keep = ops.logical_not(ops.logical_or(missing, invalid))
        weights = ops.cast(keep, "float32")
        weight_received = _NOTHING
        if sw is not None:
            sw = _broadcastable(ops.cast(sw, "float32"), len(keep.shape))
            bad = ops.logical_not(ops.logical_and(ops.isfinite(sw), ops.greater_equal(sw, 0)))
            weight_received = value_summary(bad, sw)
            keep = ops.logical_and(keep, ops.greater(ops.where(bad, 0.0, sw), 0))
            weights = ops.where(keep, sw, 0.0)
        errors = ops.concatenate([received, ops.convert_to_tensor(weight_received, "float32")])
        prepared[task.name] = Targets(labels, keep, weights, errors)
    return prepared


def check_arrays(tasks, y, sample_weight, image_shape, where):
    """Raises the error a step would raise for in-memory labels `y` (and
    `sample_weight`), before any step runs: wrong keys or shapes, values out
    of a task's domain (naming the first example holding one). `where` names
    the argument (`"in `y`"`)."""
    prepared = prepare(tasks, y, sample_weight, image_shape)
    errors = np.stack([ops.convert_to_numpy(prepared[t.name].errors) for t in tasks])
    if not errors[:, [0, 3]].any():
        return
    first = []
    for task in tasks:
        labels = _as_dict([t.name for t in tasks], y)[task.name]
        invalid = ops.convert_to_numpy(task.prepare_labels(labels)[2])
        bad = np.flatnonzero(invalid.reshape(invalid.shape[0], -1).any(axis=1))
        if len(bad):
            first.append(f"labels of {task.name!r} at index {bad[0]}")
    where = f"{where} ({', '.join(first)})" if first else where
    raise domain_error(tasks, errors[:, ::3], errors[:, [1, 2, 4, 5]], where, after_steps=False)


def _as_dict(names, y, what="labels"):
    """`y` as `{task: labels}`, refusing what cannot be read unambiguously."""
    if isinstance(y, (list, tuple)) and len(names) > 1:
        # Keras orders a dict-output model's outputs by sorted name
        # (`model.output_names`), the tasks are in the order given: a list is
        # only unambiguous when both orders agree.
        if names != sorted(names):
            raise ValueError(
                f"Invalid {what}: received a {type(y).__name__} of {len(y)} arrays "
                f"for the tasks {names}, whose order differs from the model's "
                f"sorted output names {sorted(names)}. Pass a dict {{task: {what}}} "
                "so that no task gets another's."
            )
        if len(y) != len(names):
            raise ValueError(
                f"Invalid {what}: expected {len(names)} arrays (one per task "
                f"{names}) or a dict {{task: {what}}}. Received a "
                f"{type(y).__name__} of {len(y)}."
            )
        return dict(zip(names, y))
    if not isinstance(y, dict):
        if len(names) != 1:
            raise ValueError(
                f"Invalid {what}: expected a dict {{task: {what}}} with keys "
                f"{names}. Received {what} of type {type(y).__name__}."
            )
        y = {names[0]: y[0] if isinstance(y, (list, tuple)) and len(y) == 1 else y}
    missing = sorted(set(names) - set(y))
    unknown = sorted(set(y) - set(names))
    if missing or unknown:
        raise ValueError(
            f"Invalid {what}: expected a dict with exactly the task keys "
            f"{names}. Missing keys: {missing}; unknown keys: {unknown}. "
            "(Mark an absent label with the task's missing marker or a "
            "sample weight of 0.)"
        )
    return y


def _check_shape(task, labels, original, image_shape):
    expected = task.label_shape(None, image_shape)
    got = tuple(labels.shape)
    if len(got) != len(expected) or any(
        e is not None and g is not None and e != g for e, g in zip(expected, got)
    ):
        raise ValueError(
            f"Invalid labels for task {task.name!r}: expected shape "
            f"{('batch',) + expected[1:]} ({type(task).__name__}), received "
            f"labels of shape {_shape_text(original)}."
        )


def _shape_text(x):
    return tuple("batch" if d is None else d for d in ops.convert_to_tensor(x).shape)


def _broadcastable(sample_weight, rank):
    """Gives per-example weights `(batch,)` or `(batch, 1)` the loss's rank."""
    if len(sample_weight.shape) > rank:
        sample_weight = ops.reshape(sample_weight, ops.shape(sample_weight)[:rank])
    while len(sample_weight.shape) < rank:
        sample_weight = ops.expand_dims(sample_weight, -1)
    return sample_weight
