"""The per-task trackers: `<task>_loss` (`TaskLossMean`) and `weight_<task>`
(`TaskWeightsMean`)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mtl")
class TaskWeightsMean(keras.metrics.Metric):
    """Epoch mean of every task's weight, reported as `weight_<task>`.

    One vector state for all tasks (not one `Mean` per task): the weights are
    logged every step, so this keeps their cost to two variable updates.

    Args:
        task_names: The tasks, in the order of the weight vectors.
        name: The metric's name.

    Example:

    >>> metric = TaskWeightsMean(["a", "b"])
    >>> metric.update_state(keras.ops.convert_to_tensor([1.0, 3.0]))
    >>> {k: float(v) for k, v in metric.result().items()}
    {'weight_a': 1.0, 'weight_b': 3.0}
    """

    def __init__(self, task_names, name="task_weights", **kwargs):
        super().__init__(name=name, **kwargs)
        self.task_names = list(task_names)
        self.total = self.add_variable(
            shape=(len(self.task_names),), initializer="zeros", name="total"
        )
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, weights):
        self.total.assign_add(ops.cast(weights, self.dtype))
        self.count.assign_add(ops.ones((), self.dtype))

    def result(self):
        mean = ops.divide_no_nan(self.total, self.count)
        return {f"weight_{n}": mean[i] for i, n in enumerate(self.task_names)}

    def get_config(self):
        return {**super().get_config(), "task_names": self.task_names}


@keras.saving.register_keras_serializable(package="keras_mtl")
class TaskLossMean(keras.metrics.Metric):
    """A task's loss, averaged over its labelled examples; NaN while it has none.

    A task with no labelled example in an epoch (or in the validation data)
    has no loss: NaN, which Keras' monitors (`EarlyStopping`,
    `ModelCheckpoint(save_best_only=True)`, `ReduceLROnPlateau`) treat as no
    improvement, where a 0 would be a perfect score. `labelled` is the
    number of labelled examples seen.

    Example:

    >>> metric = TaskLossMean(name="age_loss")
    >>> float(metric.result())
    nan
    >>> metric.update_state(2.0, sample_weight=3.0)
    >>> float(metric.result())
    2.0
    """

    def __init__(self, name="task_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.labelled = self.add_variable(shape=(), initializer="zeros", name="labelled")

    def update_state(self, loss, sample_weight):
        sample_weight = ops.cast(sample_weight, self.dtype)
        self.total.assign_add(ops.cast(loss, self.dtype) * sample_weight)
        self.labelled.assign_add(sample_weight)

    def result(self):
        return ops.where(
            self.labelled > 0, ops.divide_no_nan(self.total, self.labelled), float("nan")
        )
