"""Equal weighting: the plain sum of the task losses (every weight is 1)."""

import keras
from keras import ops

from keras_mtl.weighting.base import Weighting
from keras_mtl.weighting.registry import register


@register
class Equal(Weighting):
    """Sums the task losses, each with weight 1.

    The baseline every other method is compared with ("EW" in LibMTL).

    Example:

    >>> weighting = Equal()
    >>> weighting.build({"a": (), "b": ()})
    >>> total, weights = weighting({"a": 1.0, "b": 2.0})
    >>> float(total)
    3.0
    """

    registry_name = "equal"
    paper = "the baseline: the plain sum (LibMTL's EW)"

    def call(self, losses, counts=None, training=False):
        return self.weighted_sum(losses, ops.ones((len(self.task_names),)))
