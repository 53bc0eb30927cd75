"""Inverse-size weighting: weights inversely proportional to label counts.

"Assign weights to the individual loss functions to be inversely proportional
to the training set sizes of the respective tasks so as to not let a task
having more data dominate the optimization" (seed 003, the MTL guide). With
`n_t` labelled training examples for task `t` and `T` tasks:

    w_t = T * (1 / n_t) / sum_i (1 / n_i)        L = sum_t w_t * L_t

so the weights sum to `T`, as with equal weighting, and equal counts give
weight 1 each.

The counts are given explicitly (`counts={task: n}`); `count_labels` counts
the labelled examples of a dataset or of a label dict, with the tasks'
missing-label markers and sample weights.
"""

import keras
import numpy as np
from keras import ops

from keras_mtl.weighting.base import Weighting
from keras_mtl.weighting.base import check_number
from keras_mtl.weighting.registry import register


@register
class InverseSize(Weighting):
    """Weights each task by the inverse of its number of labelled examples.

    Args:
        counts: Dict `{task: n}`: the number (> 0) of labelled training
            examples of every task, e.g. from `count_labels(train_ds, tasks)`.
            Required when the model is compiled.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = InverseSize(counts={"a": 100, "b": 300})
    >>> weighting.build({"a": (), "b": ()})
    >>> total, weights = weighting({"a": 1.0, "b": 1.0})
    >>> {k: round(float(v), 3) for k, v in weights.items()}
    {'a': 1.5, 'b': 0.5}
    """

    registry_name = "inverse_size"
    paper = "weights ∝ 1 / labelled examples (seed 003, the MTL guide)"

    def __init__(self, counts=None, **kwargs):
        super().__init__(**kwargs)
        if counts is not None:
            if not isinstance(counts, dict):
                raise ValueError(
                    "Invalid value received for argument `counts`. Expected a "
                    f"dict {{task: number of labelled examples}}. Received: counts={counts!r}"
                )
            counts = {
                str(k): check_number(
                    f"counts[{k!r}]", v, minimum=0.0, exclusive=True, kind="number"
                )
                for k, v in counts.items()
            }
        self.counts = counts

    def build(self, losses_shape):
        super().build(losses_shape)
        if self.counts is None:
            raise ValueError(
                "`InverseSize` needs the number of labelled examples of each "
                f"task {self.task_names}: pass `counts={{task: n}}`, for "
                "example from `keras_mtl.weighting.count_labels(train_data, tasks)`. "
                "Received: counts=None"
            )
        self.check_task_keys("counts", self.counts)
        inverse = np.array([1.0 / self.counts[n] for n in self.task_names])
        self._weights = (len(inverse) * inverse / inverse.sum()).astype("float32")

    def call(self, losses, counts=None, training=False):
        return self.weighted_sum(losses, ops.convert_to_tensor(self._weights))

    def get_config(self):
        return {**super().get_config(), "counts": self.counts}


def count_labels(data, tasks):
    """Counts the labelled examples of each task.

    An example counts for a task when its label is not the task's missing
    marker (for dense tasks: when any pixel is labelled) and its sample
    weight for the task, if given, is positive.

    Args:
        data: A dict `{task: labels}` for the whole training set, or an
            iterable of batches `(x, y)` / `(x, y, sample_weight)` with `y` a
            dict (a `tf.data.Dataset` as passed to `fit`).
        tasks: The model's `keras_mtl.tasks.Task` list.

    Returns:
        Dict `{task: int}`.

    Example:

    >>> from keras_mtl import tasks
    >>> labels = {"age": np.array([[30.0], [np.nan], [41.0]]),
    ...           "gender": np.array([[1], [0], [-1]])}
    >>> count_labels(labels, [tasks.Regression("age"),
    ...                       tasks.BinaryClassification("gender")])
    {'age': 2, 'gender': 2}
    """
    names = [t.name for t in tasks]
    counts = {n: 0 for n in names}
    batches = [(None, data)] if isinstance(data, dict) else data
    for batch in batches:
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise ValueError(
                "Invalid value received for argument `data`. Expected a dict "
                "{task: labels} or batches (x, y) / (x, y, sample_weight). "
                f"Received a batch of type {type(batch).__name__}."
            )
        y = batch[1]
        sample_weight = batch[2] if len(batch) == 3 else None
        if not isinstance(y, dict) or set(names) - set(y):
            raise ValueError(
                "Invalid value received for argument `data`. Expected labels "
                f"as a dict with the task keys {names}. Received: {type(y).__name__}"
                f"{' with keys ' + str(sorted(y)) if isinstance(y, dict) else ''}"
            )
        for task in tasks:
            # `prepare_labels` returns (labels, missing, ...): the mask is second.
            missing = task.prepare_labels(ops.convert_to_tensor(y[task.name]))[1]
            present = np.logical_not(ops.convert_to_numpy(missing))
            present = present.reshape(present.shape[0], -1).any(axis=1)
            sw = sample_weight.get(task.name) if isinstance(sample_weight, dict) else sample_weight
            if sw is not None:
                sw = np.asarray(ops.convert_to_numpy(sw)).reshape(present.shape[0], -1)
                present = np.logical_and(present, (sw > 0).any(axis=1))
            counts[task.name] += int(present.sum())
    return counts
