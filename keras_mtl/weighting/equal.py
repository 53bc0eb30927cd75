"""Equal weighting: the plain sum of the task losses (every weight is 1)."""

import keras
from keras import ops

from keras_mtl.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="keras_mtl")
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

    def call(self, losses, training=False):
        return self.weighted_sum(losses, ops.ones((len(self.task_names),)))
