"""Static weighting: fixed task weights that a callback may change.

    L = sum_t w_t * L_t

Keras' own `compile(loss_weights=...)` takes plain floats that are baked into
the traced train step: a `keras.Variable` there no longer works (keras issue
20294), so a weight schedule needs a custom training loop. Here the weights
live in a non-trainable Keras variable that the train step reads, so
`keras_mtl.callbacks.LossWeightScheduler` can change them between epochs and
`model.save` / `BackupAndRestore` keep their current values.
"""

import keras
from keras import ops

from keras_mtl.weighting.base import Weighting
from keras_mtl.weighting.base import check_number
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Float, PerTask


@register
class Static(Weighting):
    """Weights each task's loss by a fixed (but schedulable) weight.

    Args:
        weights: Dict `{task: weight}` with a non-negative weight for every
            task of the model. `None` gives every task weight 1 (then a
            `LossWeightScheduler` usually sets them).
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = Static(weights={"a": 2.0, "b": 0.5})
    >>> weighting.build({"a": (), "b": ()})
    >>> total, weights = weighting({"a": 1.0, "b": 4.0})
    >>> float(total)
    4.0
    >>> weighting.set_task_weights({"b": 1.0})
    >>> weighting.task_weights()
    {'a': 2.0, 'b': 1.0}
    """

    registry_name = "static"
    paper = "fixed weights, schedulable (Keras' `loss_weights`)"
    search_space = {"weights": PerTask(Float(0.1, 10.0, sampling="log"), key="weight_{task}")}

    def __init__(self, weights=None, **kwargs):
        super().__init__(**kwargs)
        if weights is not None:
            if not isinstance(weights, dict):
                raise ValueError(
                    "Invalid value received for argument `weights`. Expected a "
                    f"dict {{task: weight}}. Received: weights={weights!r}"
                )
            weights = {
                str(k): check_number(f"weights[{k!r}]", v, minimum=0.0)
                for k, v in weights.items()
            }
        self.static_weights = weights

    def build(self, losses_shape):
        super().build(losses_shape)
        if self.static_weights is None:
            initial = [1.0] * len(self.task_names)
        else:
            self.check_task_keys("weights", self.static_weights)
            initial = [self.static_weights[n] for n in self.task_names]
        self.weights_variable = self.add_weight(
            name="task_weights",
            shape=(len(self.task_names),),
            initializer=keras.initializers.Constant(initial),
            trainable=False,
        )

    def task_weights(self):
        """The current weights, `{task: float}`."""
        values = ops.convert_to_numpy(self.weights_variable)
        return {n: float(values[i]) for i, n in enumerate(self.task_names)}

    def set_task_weights(self, weights):
        """Sets some or all task weights from a dict `{task: weight >= 0}`."""
        if not isinstance(weights, dict):
            raise ValueError(
                "Invalid value received for argument `weights`. Expected a "
                f"dict {{task: weight}}. Received: weights={weights!r}"
            )
        self.check_task_keys("weights", weights, require_all=False)
        current = self.task_weights()
        for name, value in weights.items():
            current[name] = check_number(f"weights[{name!r}]", value, minimum=0.0)
        self.weights_variable.assign([current[n] for n in self.task_names])

    def call(self, losses, counts=None, training=False):
        return self.weighted_sum(losses, ops.convert_to_tensor(self.weights_variable))

    def get_config(self):
        return {**super().get_config(), "weights": self.static_weights}
