"""Dynamic Weight Average (DWA): weights from the rate of loss decrease.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention",
CVPR 2019 (arXiv:1803.10704), eq. (1):

    r_t(e-1) = L_t(e-1) / L_t(e-2)
    w_t(e)   = T * exp(r_t(e-1) / tau) / sum_i exp(r_i(e-1) / tau)
    L        = sum_t w_t(e) * L_t

where `L_t(e)` is task `t`'s mean training loss over epoch `e`, `T` the
number of tasks and `tau` the temperature. A task whose loss falls more
slowly gets a larger weight. Weights are 1 for the first two epochs, when
there is no ratio yet.

State, all in non-trainable variables (so `model.save` and
`BackupAndRestore` keep it): the running sums and counts of this epoch's
per-task training losses (added to in training steps only, never during
`evaluate`), the epoch-mean losses of the last two epochs, the number of
epochs seen and the current weights. `MultiTaskModel.fit` calls
`on_epoch_begin`, which clears the sums, and `on_epoch_end`, which rolls the
history and sets the next epoch's weights; a custom training loop calls
them itself.

A task with no label in a batch (`counts` 0) adds nothing to the sums for
that step; a task with no label during a whole epoch gets the ratio 1.
"""

import keras
from keras import ops

from keras_mtl.weighting.base import Weighting
from keras_mtl.weighting.base import check_number
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Float


@register
class DynamicWeightAverage(Weighting):
    """Weights tasks by the ratio of their last two epoch-mean losses.

    Args:
        temperature: `tau` > 0; larger values give more even weights.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = DynamicWeightAverage(temperature=2.0)
    >>> weighting.build({"a": (), "b": ()})
    >>> for epoch, (a, b) in enumerate([(1.0, 1.0), (0.5, 1.0)]):
    ...     _ = weighting({"a": a, "b": b}, training=True)
    ...     weighting.on_epoch_end(epoch)
    >>> _, weights = weighting({"a": 1.0, "b": 1.0})
    >>> {k: round(float(v), 4) for k, v in weights.items()}  # 2 softmax([0.5, 1] / 2)
    {'a': 0.8756, 'b': 1.1244}
    """

    registry_name = "dynamic_weight_average"
    aliases = ("dwa",)
    paper = "Liu, Johns & Davison, CVPR 2019"
    search_space = {"temperature": Float(0.5, 10.0, sampling="log")}

    def __init__(self, temperature=2.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = check_number("temperature", temperature, minimum=0, exclusive=True)

    def build(self, losses_shape):
        super().build(losses_shape)
        num_tasks = len(self.task_names)

        def state(name, shape, value=0.0, dtype="float32"):
            return self.add_weight(
                name=name,
                shape=shape,
                initializer=keras.initializers.Constant(value),
                dtype=dtype,
                trainable=False,
            )

        self.loss_sums = state("loss_sums", (num_tasks,))
        self.loss_counts = state("loss_counts", (num_tasks,))
        # Row 0: epoch e-2, row 1: epoch e-1.
        self.loss_history = state("loss_history", (2, num_tasks))
        self.epochs_seen = state("epochs_seen", (), dtype="int32")
        self.task_weights = state("task_weights", (num_tasks,), value=1.0)

    def call(self, losses, counts=None, training=False):
        vector = self.stack(losses)
        if training:
            present = ops.cast(self.labelled(counts), "float32")
            self.loss_sums.assign_add(ops.stop_gradient(vector) * present)
            self.loss_counts.assign_add(present)
        return self.weighted_sum(losses, ops.convert_to_tensor(self.task_weights))

    def on_epoch_begin(self, epoch):
        # An epoch interrupted before (or restored from a mid-epoch backup,
        # which Keras replays from the epoch's first step) must not count twice.
        self._reset_sums()

    def _reset_sums(self):
        # Two arrays: JAX's jitted step donates each variable's buffer, and
        # one array held by two variables would be donated twice.
        self.loss_sums.assign(ops.zeros((len(self.task_names),)))
        self.loss_counts.assign(ops.zeros((len(self.task_names),)))

    def on_epoch_end(self, epoch):
        counts = ops.convert_to_tensor(self.loss_counts)
        if float(ops.sum(counts)) == 0:
            return  # No training step this epoch: nothing to average.
        mean = ops.divide_no_nan(ops.convert_to_tensor(self.loss_sums), counts)
        history = ops.stack([ops.convert_to_tensor(self.loss_history)[1], mean])
        self.loss_history.assign(history)
        self.epochs_seen.assign_add(1)
        if int(ops.convert_to_numpy(self.epochs_seen)) >= 2:
            older, newer = history[0], history[1]
            known = ops.logical_and(ops.greater(older, 0), ops.greater(newer, 0))
            ratio = ops.where(known, ops.divide_no_nan(newer, older), 1.0)
            weights = len(self.task_names) * ops.softmax(ratio / self.temperature)
            self.task_weights.assign(weights)
        self._reset_sums()

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
