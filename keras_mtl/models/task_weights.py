"""`TaskWeightsMean`: the `weight_<task>` entries of the logs."""

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
