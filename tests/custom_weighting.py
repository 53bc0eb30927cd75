"""A weighting method defined outside the package, as a user would.

`tests/test_custom_weighting.py` checks that registering it is all it takes:
`compile(weighting="loss_ema")`, tuning, kill-and-resume, `.keras` files and
the benchmarks' method lists know it without edits anywhere else.
"""

import keras
from keras import ops

import keras_mtl
from keras_mtl.weighting import space


@keras_mtl.weighting.register
class LossEMA(keras_mtl.weighting.Weighting):
    """Weights each task by its loss's running mean relative to the others:
    `w_t = T m_t / Σ m`, `m_t ← decay m_t + (1 - decay) L_t` on labelled
    training steps (a stateful loss-level method, for the tests)."""

    registry_name = "loss_ema"
    aliases = ("LossEMA",)
    paper = "a test plugin (tests/custom_weighting.py)"
    level = "loss"
    search_space = {"decay": space.Float(0.5, 0.99)}

    def __init__(self, decay=0.9, **kwargs):
        super().__init__(**kwargs)
        self.decay = float(decay)

    def build(self, losses_shape):
        super().build(losses_shape)
        self.means = self.add_weight(
            shape=(len(self.task_names),), initializer="ones", trainable=False, name="means"
        )

    def call(self, losses, counts=None, training=False):
        vector = ops.stop_gradient(ops.abs(self.stack(losses)))
        labelled = self.labelled(counts)
        # The variable's value as a tensor: Keras' `ops.where` hands its
        # arguments to `jnp.where` unconverted, which refuses a Variable.
        means = ops.convert_to_tensor(self.means)
        if training:
            means = ops.where(labelled, self.decay * means + (1.0 - self.decay) * vector, means)
            self.means.assign(means)
        means = ops.where(labelled, means, 0.0)
        weights = len(self.task_names) * means / ops.maximum(ops.sum(means), 1e-12)
        return self.weighted_sum(losses, weights)

    def get_config(self):
        return {**super().get_config(), "decay": self.decay}
