"""FAMO: Fast Adaptive Multitask Optimization.

Liu, Feng, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization",
NeurIPS 2023 (arXiv:2306.03792); Algorithm 2 of its appendix, which the
authors' code and LibMTL implement.

Task logits `xi` (non-trainable variables, not touched by the model's
optimiser) give the weights `z = softmax(xi)`. The loss the model minimises
at a step with task losses `L_t` is

    c = 1 / sum_t (z_t / (L_t + eps))               (held constant: no gradient)
    L = c * sum_t z_t * log(L_t + eps)

whose gradient `sum_t (c z_t / (L_t + eps)) grad L_t` is a convex combination
of the task gradients: the reported weight of task `t` is its coefficient
`c z_t / (L_t + eps)` (the weights sum to 1). The value of `L` is a weighted
mean of log-losses, so it can be negative; the per-task losses in History are
the ones to read.

The logits then move so that tasks whose log-loss fell the most lose weight.
With `delta_t = log(L_t(before) + eps) - log(L_t(after) + eps)`, the
gradient of the logits is the softmax Jacobian's product with `delta` plus
the decay:

    g = J_softmax(xi)^T delta + gamma * xi = z * (delta - sum_i z_i delta_i) + gamma * xi

and `xi` takes one Adam step (learning rate `beta`, moments 0.9 / 0.999,
epsilon 1e-8, the decay added to the gradient as PyTorch's Adam does).

No extra forward pass. The paper recomputes the losses after the parameter
update. Here the losses of the next step serve as the "after" losses: at step
`k` the logits are updated from the losses of steps `k-1` (stored in a
variable) and `k`, then the step's loss is built with the new weights. So the
update used for step `k` comes from the losses at the parameters of steps
`k-1` and `k`, measured on two different batches. The first step has no
previous losses and leaves the logits as they are.

Lower bounds. The logarithms need `L_t > 0`. As in the authors' code (its
`min_losses`), each loss may be given a lower bound `m_t` (default 0) and
`L_t - m_t` is used in place of `L_t` everywhere above: a loss that can be
negative (a cosine similarity, a log-likelihood) needs its bound, and a loss
below its bound makes the step non-finite, which stops training with an
error naming the task.

Unlabelled tasks. A task with no label in a batch (its labelled count is 0)
is left out of that step: out of `c` and `L` (weight 0), and its `delta` is
0. Its last loss is kept, so the next step where it is labelled measures its
change from then; a task that alternates with others (round-robin data)
still moves its logit.

The paper clips the model's gradient norm to 1 in its experiments: pass
`clipnorm=1.0` to the optimiser for that.
"""

import math

import keras
from keras import ops

from keras_mtl.weighting.base import Weighting
from keras_mtl.weighting.base import check_lower_bounds
from keras_mtl.weighting.base import check_number
from keras_mtl.weighting.base import explain_lower_bounds
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Float

_EPSILON = 1e-8
_BETA_1 = 0.9
_BETA_2 = 0.999


@register
class FAMO(Weighting):
    """Fast Adaptive Multitask Optimization (Liu et al. 2023).

    Args:
        learning_rate: `beta` > 0, the Adam learning rate of the task logits.
        weight_decay: `gamma` >= 0, the decay of the task logits.
        min_losses: Optional dict `{task: lower bound of its loss}` (0 for
            tasks left out); needed for losses that can be negative.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = FAMO()
    >>> weighting.build({"a": (), "b": ()})
    >>> _ = weighting({"a": 1.0, "b": 2.0}, training=True)  # stores the losses
    >>> _ = weighting({"a": 0.5, "b": 2.0}, training=True)  # "a" fell: less weight
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(weighting.logits)]
    [-0.025, 0.025]
    """

    registry_name = "famo"
    paper = "Liu, Feng, Stone & Liu, NeurIPS 2023"
    search_space = {"learning_rate": Float(1e-3, 0.1, sampling="log"), "weight_decay": Float(1e-4, 1e-2, sampling="log")}

    def __init__(self, learning_rate=0.025, weight_decay=0.001, min_losses=None, **kwargs):
        super().__init__(**kwargs)
        self.learning_rate = check_number("learning_rate", learning_rate, minimum=0, exclusive=True)
        self.weight_decay = check_number("weight_decay", weight_decay, minimum=0)
        self.min_losses = check_lower_bounds("min_losses", min_losses)

    def build(self, losses_shape):
        super().build(losses_shape)
        shape = (len(self.task_names),)
        bounds = self.min_losses or {}
        self.check_task_keys("min_losses", bounds, require_all=False)
        self._bounds = ops.convert_to_tensor([bounds.get(n, 0.0) for n in self.task_names], "float32")

        def state(name, shape):
            return self.add_weight(name=name, shape=shape, initializer="zeros", trainable=False)

        self.logits = state("logits", shape)
        self.logits_momentum = state("logits_momentum", shape)
        self.logits_velocity = state("logits_velocity", shape)
        self.logits_steps = state("logits_steps", ())
        # Last loss of each task (minus its bound), and 1 once one was seen.
        self.previous_losses = state("previous_losses", shape)
        self.previous_seen = state("previous_seen", shape)

    def _update_logits(self, vector, present):
        previous = ops.convert_to_tensor(self.previous_losses)
        xi = ops.convert_to_tensor(self.logits)
        m = ops.convert_to_tensor(self.logits_momentum)
        v = ops.convert_to_tensor(self.logits_velocity)
        steps = ops.convert_to_tensor(self.logits_steps)
        seen = ops.greater(ops.convert_to_tensor(self.previous_seen), 0.0)
        both = ops.logical_and(present, seen)
        delta = ops.where(
            both,
            ops.log(ops.where(both, previous, 1.0) + _EPSILON)
            - ops.log(ops.where(both, vector, 1.0) + _EPSILON),
            0.0,
        )
        z = ops.softmax(xi)
        grad = z * (delta - ops.sum(z * delta)) + self.weight_decay * xi
        new_steps = steps + 1.0
        new_m = _BETA_1 * m + (1 - _BETA_1) * grad
        new_v = _BETA_2 * v + (1 - _BETA_2) * ops.square(grad)
        # 1 - beta^t as -expm1(t log beta): exact to float32 precision, where
        # `1 - 0.999 ** t` in float32 is off by 1e-5 relative.
        m_hat = new_m / -ops.expm1(new_steps * math.log(_BETA_1))
        v_hat = new_v / -ops.expm1(new_steps * math.log(_BETA_2))
        new_xi = xi - self.learning_rate * m_hat / (ops.sqrt(v_hat) + _EPSILON)
        # No task with two observed losses (the first step): nothing to learn.
        active = ops.any(both)
        self.logits.assign(ops.where(active, new_xi, xi))
        self.logits_momentum.assign(ops.where(active, new_m, m))
        self.logits_velocity.assign(ops.where(active, new_v, v))
        self.logits_steps.assign(ops.where(active, new_steps, steps))
        self.previous_losses.assign(ops.where(present, vector, previous))
        self.previous_seen.assign(ops.cast(ops.logical_or(present, seen), "float32"))

    def call(self, losses, counts=None, training=False):
        vector = self.stack(losses) - self._bounds
        present = self.labelled(counts)
        if training:
            self._update_logits(ops.stop_gradient(vector), present)
        z = ops.softmax(ops.convert_to_tensor(self.logits))
        shifted = ops.where(present, vector, 1.0) + _EPSILON
        inverse = ops.where(present, z / shifted, 0.0)
        norm = ops.stop_gradient(ops.sum(inverse))  # 1 / c
        total = ops.divide_no_nan(ops.sum(ops.where(present, z * ops.log(shifted), 0.0)), norm)
        weights = ops.divide_no_nan(ops.stop_gradient(inverse), norm)
        return total, self.unstack(weights)

    def get_config(self):
        return {
            **super().get_config(),
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "min_losses": self.min_losses,
        }

    def explain_nonfinite(self, losses):
        return explain_lower_bounds(self, losses)

