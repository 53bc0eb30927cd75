"""Labels of one batch, prepared for the losses and metrics of every task.

`prepare(tasks, y, sample_weight, image_shape)` turns what `fit` receives
into one `Targets` per task: the labels in the form the task's loss takes,
`keep` (True where a label is present and its sample weight is positive) and
`weights` (the sample weight where kept, 0 elsewhere). The masked losses,
the labelled counts every weighting receives, and the metrics all read it,
so label presence is decided here, once per step, from the data alone.
"""

import collections

from keras import ops

#: One task's prepared labels (see the module docstring).
Targets = collections.namedtuple("Targets", ["labels", "keep", "weights"])


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
        unknown = sorted(set(sample_weight) - set(names))
        if unknown:
            raise ValueError(
                "Invalid value received for argument `sample_weight`. Expected "
                f"keys among the task names {names}. Received unknown keys "
                f"{unknown} in sample_weight={sample_weight!r}"
            )
    prepared = {}
    for task in tasks:
        labels, absent = task.prepare_labels(y[task.name])
        _check_shape(task, labels, y[task.name], image_shape)
        sw = sample_weight.get(task.name) if isinstance(sample_weight, dict) else sample_weight
        keep = ops.logical_not(absent)
        weights = ops.cast(keep, "float32")
        if sw is not None:
            sw = _broadcastable(ops.cast(sw, "float32"), len(keep.shape))
            keep = ops.logical_and(keep, ops.greater(sw, 0))
            weights = ops.where(keep, sw, 0.0)
        prepared[task.name] = Targets(labels, keep, weights)
    return prepared


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
