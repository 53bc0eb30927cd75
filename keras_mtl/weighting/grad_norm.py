"""GradNorm: task weights that balance the tasks' gradient norms.

Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for
Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018
(arXiv:1711.02257), Algorithm 1.

The task weights `w` are state (a non-trainable variable, which the model's
optimiser never sees), `w(0) = 1`. At training step `t`, with `g_i` the
gradient of the (unweighted) task loss `L_i` at the shared part (see "Modes")
and `T` the number of tasks:

    G_i = w_i ||g_i||                          the weighted gradient norm
    G_bar = mean_i G_i
    r_i = L~_i / mean_j L~_j,   L~_i = L_i(t) / L_i(0)   relative inverse training rate
    target_i = G_bar * r_i ** alpha            held constant
    L_grad = sum_i |G_i - target_i|
    dL_grad / dw_i = sign(G_i - target_i) ||g_i||

then one SGD step on the weights, `w <- w - learning_rate * dL_grad/dw`,
a clip at `min_weight`, and a renormalisation so that `sum_i w_i = T`.

As in Algorithm 1, the network is updated with the weights *before* this
update: the combined gradient of step `t` is `sum_i w_i(t) g_i`, and
`w(t + 1)` is used at the next step. The weights reported for step `t`
(`weight_<task>`) are those `w_i(t)`.

`||g_i||` is `sqrt(diag(G Gᵀ))`: the method only needs the Gram matrix, so
it implements `gram_weights`.

`L_i(0)` is the task's loss at the first training step where it is labelled
(stored in the `initial_losses` variable, 0 until then).

Modes:

| mode             | supported | why                                                  |
| ---------------- | --------- | ---------------------------------------------------- |
| "representation" | yes       | `||g_i||` at the shared representation `z`; the      |
|                  | (default) | paper applies GradNorm to the last shared layer, and |
|                  |           | this is the cheap variant (LibMTL's `rep_grad`).     |
| "params"         | yes       | `||g_i||` over all the trunk's variables: exact but  |
|                  |           | T backward passes through the trunk.                 |

Unlabelled tasks and degenerate gradients. A task without labels in the
batch (loss 0, gradient 0) gets weight 0 for that step; means (`G_bar`, the
mean of `L~`) run over the labelled tasks, only their weights move, and they
are renormalised to `T` minus the unlabelled tasks' (unchanged) weights, so
`sum_i w_i = T` always holds for the state. A zero gradient contributes
`dL_grad/dw_i = 0`; no division involves a gradient norm, so zero, identical
and parallel gradients all give finite weights (a Gram matrix with infinite
entries, gradients beyond float32's range, leaves the weights unchanged).
With identical gradients and equal loss ratios the weights stay at 1: the
combined gradient is the sum of the task gradients, `T` times their mean.

Deviations: the weights take a plain SGD step inside the train step, not a
step of the model's optimiser (the paper's code shares one optimiser); the
clip at `min_weight` (> 0) keeps weights positive, which the paper leaves
implicit.
"""

import keras
from keras import ops

from keras_mtl.weighting.base import check_number
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Float


@register
class GradNorm(GradientWeighting):
    """Gradient normalisation (Chen et al. 2018): weights that balance the
    tasks' gradient norms, scaled by their relative training rates.

    Supported modes: `"representation"` (default; gradient norms at the
    shared representation, as the paper's "last shared layer") and
    `"params"` (norms over all shared variables). See the module docstring.

    Args:
        mode: `"representation"` or `"params"`.
        alpha: `alpha` >= 0, the strength of the restoring force towards
            equal training rates (0: equal gradient norms only).
        learning_rate: > 0, the SGD learning rate of the task weights.
        min_weight: The smallest weight after an update, in (0, 1).
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = GradNorm(learning_rate=0.1)
    >>> weighting.build({"a": (), "b": ()})
    >>> gram = keras.ops.convert_to_tensor([[4.0, 0.0], [0.0, 1.0]])  # norms 2, 1
    >>> losses = keras.ops.convert_to_tensor([1.0, 1.0])
    >>> labelled = keras.ops.convert_to_tensor([True, True])
    >>> w = weighting.gram_weights(gram, losses, labelled, training=True)
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(w)]  # w(t)
    [1.0, 1.0]
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(weighting.gradnorm_weights)]
    [0.8421, 1.1579]
    """

    registry_name = "grad_norm"
    paper = "Chen et al., ICML 2018"
    search_space = {"alpha": Float(0.0, 3.0)}

    def __init__(
        self,
        mode="representation",
        alpha=1.5,
        learning_rate=0.025,
        min_weight=1e-3,
        **kwargs,
    ):
        super().__init__(mode=mode, **kwargs)
        self.alpha = check_number("alpha", alpha, minimum=0)
        self.learning_rate = check_number("learning_rate", learning_rate, minimum=0, exclusive=True)
        self.min_weight = check_number("min_weight", min_weight, minimum=0, exclusive=True)
        if self.min_weight >= 1:
            raise ValueError(
                "Invalid value received for argument `min_weight`. Expected a "
                f"float in (0, 1). Received: min_weight={min_weight!r}"
            )

    def build(self, losses_shape):
        super().build(losses_shape)
        shape = (len(self.task_names),)
        self.gradnorm_weights = self.add_weight(
            name="gradnorm_weights", shape=shape, initializer="ones", trainable=False
        )
        # L_i(0): the loss at the first step where the task is labelled.
        self.initial_losses = self.add_weight(
            name="initial_losses", shape=shape, initializer="zeros", trainable=False
        )

    def gram_weights(self, gram, losses, labelled, training):
        gram = ops.convert_to_tensor(gram, "float32")
        losses = ops.convert_to_tensor(losses, "float32")
        norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))
        weights = ops.convert_to_tensor(self.gradnorm_weights)
        mask = ops.cast(labelled, "float32")
        # Algorithm 1: the network's step uses w(t), read before the update.
        step_weights = weights * mask
        if training:
            self._update(weights, norms, losses, labelled, mask)
        return step_weights

    def _update(self, weights, norms, losses, labelled, mask):
        count = ops.sum(mask)
        initial = ops.convert_to_tensor(self.initial_losses)
        initial = ops.where(ops.logical_and(labelled, ops.equal(initial, 0.0)), losses, initial)
        self.initial_losses.assign(initial)
        ratio = ops.where(labelled, ops.divide_no_nan(losses, initial), 0.0)
        relative = ops.divide_no_nan(ratio, ops.divide_no_nan(ops.sum(ratio), count))
        weighted_norms = weights * norms * mask
        mean_norm = ops.divide_no_nan(ops.sum(weighted_norms), count)
        target = mean_norm * ops.power(relative, self.alpha)
        grad = ops.sign(weighted_norms - target) * norms * mask
        stepped = ops.maximum(weights - self.learning_rate * grad, self.min_weight)
        # Unlabelled tasks keep their weights; the labelled ones share the
        # rest of the total T.
        budget = len(self.task_names) - ops.sum(weights * (1.0 - mask))
        scale = ops.divide_no_nan(budget, ops.sum(stepped * mask))
        updated = ops.where(labelled, stepped * scale, weights)
        # Gradients beyond float32's range (an infinite Gram entry) leave
        # the weights as they are rather than making them NaN.
        finite = ops.all(ops.isfinite(updated))
        self.gradnorm_weights.assign(ops.where(finite, updated, weights))

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "learning_rate": self.learning_rate,
            "min_weight": self.min_weight,
        }
