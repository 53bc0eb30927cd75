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

Lower bounds. The geometric mean needs `L_t > 0`. A loss that can be
negative (a cosine similarity, a log-likelihood) is given a lower bound `m_t`
(`min_losses`, default 0; as FAMO's authors do for its logarithms) and
`L_t - m_t` takes its place; a loss at or below its bound makes the step
non-finite, which stops training with an error naming the task. (Our
extension: the paper's losses are all positive.)

Unlabelled tasks. A task with no label in a batch (its labelled count is 0)
has loss 0 by convention, which would make the product 0. The mean is
therefore taken over the `T'` tasks labelled in the step,
`L = (prod_labelled L_t) ^ (1 / T')`; the other tasks get weight 0, and a
step where no task is labelled has loss 0.
"""

import keras
from keras import ops

from keras_mtl.weighting.base import LowerBoundedWeighting
from keras_mtl.weighting.registry import register


@register
class GeometricLoss(LowerBoundedWeighting):
    """Minimises the geometric mean of the task losses (Chennupati et al. 2019).

    Args:
        min_losses: Optional dict `{task: lower bound of its loss}` (0 for
            tasks left out); needed for losses that can be negative.
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

    registry_name = "geometric_loss"
    aliases = ("gls",)
    paper = "Chennupati et al., CVPR Workshops 2019"

    def call(self, losses, counts=None, training=False):
        vector = self.stack(losses) - self._bounds
        present = self.labelled(counts)
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
