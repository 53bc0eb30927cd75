"""Gradient Vaccine (GradVac): align task gradients to adaptive cosine targets.

Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving
Multi-task Optimization in Massively Multilingual Models", ICLR 2021
(arXiv:2010.05874), Algorithm 1.

Each ordered pair of tasks `(i, j)` has a target cosine `phi_hat_ij`, an
exponential moving average of the observed cosines (a `(T, T)` state
variable, initialised to 0). At each training step, for each task `i` and
each other task `j` in a random order (drawn per step and per `i`, like
PCGrad's):

    phi_ij = cos(g'_i, g_j)          (g'_i: task i's gradient so far)
    if phi_ij < phi_hat_ij:
        g'_i <- g'_i + ||g'_i|| (phi_hat_ij sqrt(1 - phi_ij²) - phi_ij sqrt(1 - phi_hat_ij²))
                       / (||g_j|| sqrt(1 - phi_hat_ij²)) * g_j
    phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi_ij

and the update is `sum_i g'_i`. After the correction, `cos(g'_i, g_j)` is
exactly `phi_hat_ij`: the gradient is turned towards `g_j` until it reaches
the target similarity (with `phi_hat = 0`, e.g. `beta = 0`, the correction is
PCGrad's projection).

Every `g'_i` stays a linear combination of the original gradients,
`g'_i = sum_k A_ik g_k` (`A` starts as the identity and each correction adds
to one entry), so every dot product and norm above is read off the Gram
matrix: `g'_i·g_j = (A G Gᵀ)_ij`, `||g'_i||² = (A G Gᵀ Aᵀ)_ii`. The reported
weight of task `k` is `sum_i A_ik`, and the update is `sum_k w_k g_k`. The
tasks `i` are processed together (each one's corrections depend only on its
own row of `A`), in `T - 1` rounds.

Choices and deviations:

- whole-gradient variant: one cosine per task pair over all shared
  parameters (or over the whole representation gradient), not the paper's
  per-layer / per-parameter-group variant;
- random order per step from a `keras.random.SeedGenerator(seed)` (saved
  with the model), as the paper does (following PCGrad). Outside training
  (`training=False`) the order is fixed (ascending) and no state changes;
- the EMA is updated for every pair at every step, whether or not a
  correction was applied, as in the paper's Algorithm 1 (LibMTL updates it
  only when it corrects);
- the target used in the formula (and in the test `phi < phi_hat`) is
  clipped to `[-1 + 1e-6, 1 - 1e-6]`: at `|phi_hat| = 1` the correction
  would be infinite.

Degenerate gradients. A pair involving a task without labels in the batch,
or with a zero gradient, is skipped: no correction, no EMA update (its
cosine is undefined). Unlabelled tasks get weight 0. Identical (or positively
parallel) gradients have `phi = 1 >= phi_hat`: no correction, and the
update is the sum of the task gradients, `T` times their mean. Near-zero
gradients are corrected by the same formula (cosines are scale-free);
everything stays finite. The Gram matrix is that of the gradients divided by
their largest entry (`scale_free_weights`), so gradients of any float32 size
give the same weights; one more than ~1e19 times smaller than the largest
counts as zero.

Modes:

| mode             | supported | why                                                |
| ---------------- | --------- | -------------------------------------------------- |
| "params"         | yes       | the paper's setting: cosines of the gradients of   |
|                  | (default) | the shared parameters.                             |
| "representation" | yes       | the same alignment on gradients at `z` (cheap);    |
|                  |           | cosines over the whole batch's `z`-gradients.      |
"""

import keras
from keras import ops

from keras_mtl.weighting._gram import random_task_orders
from keras_mtl.weighting.base import check_fraction
from keras_mtl.weighting.base import check_seed
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Float

#: How close to +-1 the target cosine may get in the correction.
_TARGET_LIMIT = 1.0 - 1e-6


@register
class GradVac(GradientWeighting):
    """Gradient Vaccine (Wang et al. 2021): turns each task gradient towards
    the others until their cosine reaches an EMA target.

    Supported modes: `"params"` (default) and `"representation"`. See the
    module docstring for the algorithm and the degenerate cases.

    Args:
        mode: `"params"` or `"representation"`.
        beta: The EMA rate of the target cosines, in [0, 1].
        seed: Optional integer seed of the random task order.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = GradVac(beta=0.5, seed=0)
    >>> weighting.build({"a": (), "b": ()})
    >>> grads = keras.ops.convert_to_tensor([[1.0, 0.0], [-1.0, 1.0]])  # 135°
    >>> combined, weights = weighting.combine(grads, {"a": 1.0, "b": 1.0})
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(weights)]  # PCGrad's
    [2.0, 1.5]
    >>> round(float(keras.ops.convert_to_numpy(weighting.target_cosines)[0, 1]), 4)
    -0.3536
    """

    registry_name = "grad_vac"
    aliases = ("gradient_vaccine",)
    paper = "Wang et al., ICLR 2021"
    scale_free_weights = True
    search_space = {"beta": Float(1e-3, 0.1, sampling="log")}

    def __init__(self, mode="params", beta=0.01, seed=None, **kwargs):
        super().__init__(mode=mode, **kwargs)
        self.beta = check_fraction("beta", beta)
        self.seed = check_seed(seed)

    def build(self, losses_shape):
        super().build(losses_shape)
        n = len(self.task_names)
        self.target_cosines = self.add_weight(
            name="target_cosines", shape=(n, n), initializer="zeros", trainable=False
        )
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="seed_generator")

    def _orders(self, n, training):
        """`(T, T - 1)`: for each task `i`, the other tasks in visiting order."""
        return random_task_orders(n, self.seed_generator, training)[:, : n - 1]

    def gram_weights(self, gram, losses, labelled, training):
        gram = ops.convert_to_tensor(gram, "float32")
        n = len(self.task_names)
        squares = ops.diagonal(gram)
        valid = ops.logical_and(labelled, ops.greater(squares, 0.0))
        valid = ops.logical_and(valid, ops.isfinite(squares))
        gram = ops.where(ops.logical_and(valid[:, None], valid[None, :]), gram, 0.0)
        norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))
        targets = ops.convert_to_tensor(self.target_cosines)
        new_targets = targets + 0.0
        coefficients = ops.eye(n, dtype="float32")
        orders = self._orders(n, training)
        for position in range(n - 1):
            pick = ops.one_hot(orders[:, position], n, dtype="float32")  # row i: e_j
            j_valid = ops.sum(pick * ops.cast(valid, "float32")[None, :], axis=1) > 0
            projected = ops.matmul(coefficients, gram)  # g'_i·g_k
            dots = ops.sum(projected * pick, axis=1)  # g'_i·g_j
            norm_i = ops.sqrt(ops.maximum(ops.sum(projected * coefficients, axis=1), 0.0))
            norm_j = ops.sum(pick * norms[None, :], axis=1)
            ok = ops.logical_and(ops.logical_and(valid, j_valid), norm_i > 0)
            # Divided one norm at a time: the product may underflow.
            safe_i = ops.where(ok, norm_i, 1.0)
            safe_j = ops.where(ok, norm_j, 1.0)
            cosine = ops.clip(dots / safe_i / safe_j, -1.0, 1.0)
            target = ops.sum(targets * pick, axis=1)
            limited = ops.clip(target, -_TARGET_LIMIT, _TARGET_LIMIT)
            correct = ops.logical_and(ok, cosine < limited)
            sin_target = ops.sqrt(1.0 - ops.square(limited))
            step = (
                (limited * ops.sqrt(1.0 - ops.square(cosine)) - cosine * sin_target)
                * (safe_i / safe_j)
                / sin_target
            )
            coefficients = coefficients + ops.where(correct, step, 0.0)[:, None] * pick
            moved = (1.0 - self.beta) * target + self.beta * cosine
            visited = ops.logical_and(pick > 0, ok[:, None])
            new_targets = ops.where(visited, moved[:, None], new_targets)
        if training:
            self.target_cosines.assign(new_targets)
        weights = ops.sum(coefficients, axis=0)
        return ops.where(labelled, weights, 0.0)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "seed": self.seed}
