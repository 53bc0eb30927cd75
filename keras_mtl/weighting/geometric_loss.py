"""Geometric Loss Strategy (GLS): the geometric mean of the task losses.

Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++: Multi-Stream Feature
Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR
Workshops 2019 (arXiv:1904.08492):

    L = (prod_t L_t) ^ (1 / T)

computed as `exp(mean_t log L_t)`. The geometric mean is invariant to the
scale of each loss: multiplying `L_t` by `c` multiplies `L` by `c^(1/T)`.

The reported weight of a task is the derivative of the total with respect to
its loss, the coefficient the task's gradient gets in the update:

    dL / dL_t = L / (T * L_t)

so a task with a small loss gets a large weight.

Unlabelled tasks. A task with no label in a batch has loss exactly 0, which
would make the product 0 (and its gradient for the others 0, or NaN through
the log). The mean is therefore taken over the `T'` tasks with a positive
loss in the step, `L = (prod_{L_t > 0} L_t) ^ (1 / T')`; the other tasks get
weight 0, and a step where no task is labelled has loss 0.
"""

import keras
from keras import ops

from keras_mtl.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="keras_mtl")
class GeometricLoss(Weighting):
    """Minimises the geometric mean of the task losses (Chennupati et al. 2019).

    Args:
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = GeometricLoss()
    >>> weighting.build({"a": (), "b": ()})
    >>> total, weights = weighting({"a": 1.0, "b": 4.0})
    >>> float(total)  # sqrt(1 * 4)
    2.0
    >>> {k: float(v) for k, v in weights.items()}  # 2 / (2 * L_t)
    {'a': 1.0, 'b': 0.25}
    """

    def call(self, losses, training=False):
        vector = self.stack(losses)
        present = self.labelled(vector)
        count = ops.sum(ops.cast(present, "float32"))
        # The inner `where` keeps log's gradient finite for unlabelled tasks.
        logs = ops.where(present, ops.log(ops.where(present, vector, 1.0)), 0.0)
        mean_log = ops.divide_no_nan(ops.sum(logs), count)
        total = ops.where(count > 0, ops.exp(mean_log), 0.0)
        weights = ops.where(
            present,
            ops.divide_no_nan(ops.stop_gradient(total), count * ops.where(present, vector, 1.0)),
            0.0,
        )
        return total, self.unstack(weights)
