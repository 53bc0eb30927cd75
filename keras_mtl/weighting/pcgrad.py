"""PCGrad: project each task gradient off the gradients it conflicts with.

Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for Multi-Task
Learning", NeurIPS 2020 (arXiv:2001.06782). Algorithm 1: for each task `i`,
start from `g_i^PC = g_i`; for the other tasks `j` in a random order, if
`g_i^PC · g_j < 0`, project `g_i^PC` onto the normal plane of `g_j`:

    g_i^PC ← g_i^PC - (g_i^PC · g_j / ‖g_j‖²) g_j

and the update is the sum `Σ_i g_i^PC` (the paper's and the official code's
reduction). Every projection subtracts a multiple of an original `g_j`, so
`g_i^PC = Σ_k C_ik g_k` for a `(T, T)` coefficient matrix `C` (starting at
the identity) and every dot product is a row of `C` times the Gram matrix:
the method runs on `G Gᵀ` only, and its weights are `w_k = Σ_i C_ik`.

Random order: each task `i` draws its own order of the other tasks at each
training step (the paper's Algorithm 1; the official TensorFlow code shuffles
once per step for all tasks), by sorting uniform draws of a
`keras.random.SeedGenerator(seed)` whose state is saved with the model, so a
restored model continues the same stream. Outside training
(`combine(..., training=False)`) the order is the task order and nothing is
drawn.

Robustness: tasks without labels in the batch and tasks whose gradient is
exactly 0 get weight 0 and are never projected on. Identical (or merely
non-conflicting) gradients are left alone: the update is their sum, `T`
times their mean. A near-zero but non-zero conflicting gradient is projected
on like any other (the projection does not depend on its length); its
coefficient `C_ij` is then large but the update stays finite, since the
Gram matrix is that of the gradients divided by their largest entry, scaled
to a largest diagonal of 1: gradients of any float32 size give the same
weights (see `_gram`).
"""

import keras
from keras import ops

from keras_mtl.weighting._gram import active_tasks
from keras_mtl.weighting._gram import normalized_gram
from keras_mtl.weighting._gram import random_task_orders
from keras_mtl.weighting.base import check_seed
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.registry import register


def projection_coefficients(gram, active, order):
    """The `(T, T)` matrix `C` with `g_i^PC = Σ_k C_ik g_k`.

    `order[i, s]` is the `s`-th task that task `i` is projected against
    (its first `T - 1` entries are the other tasks).
    """
    num_tasks = gram.shape[0]
    diagonal = ops.diagonal(gram)
    coefficients = ops.eye(num_tasks, dtype=gram.dtype)
    for s in range(num_tasks - 1):  # T is static: a fixed number of steps
        others = order[:, s]
        pick = ops.one_hot(others, num_tasks, dtype=gram.dtype)  # row i: e_j
        dots = ops.sum(ops.matmul(coefficients, gram) * pick, axis=1)  # g_i^PC·g_j
        squared_norms = ops.take(diagonal, others)
        conflict = ops.logical_and(ops.less(dots, 0.0), ops.take(active, others))
        step = ops.where(conflict, dots / ops.where(conflict, squared_norms, 1.0), 0.0)
        coefficients = coefficients - step[:, None] * pick
    return coefficients


@register
class PCGrad(GradientWeighting):
    """Gradient surgery: conflicting components are projected away.

    | mode             | supported | why                                          |
    | ---------------- | --------- | -------------------------------------------- |
    | "params"         | yes       | PCGrad proper, on the shared variables       |
    | "representation" | yes       | the same surgery on the gradients at `z`     |
    |                  |           | (LibMTL's `rep_grad`), one trunk backward    |

    Args:
        mode: `"params"` or `"representation"`.
        seed: Optional integer seed of the random task orders.
        **kwargs: Base layer arguments.

    Example:

    >>> import numpy as np
    >>> weighting = PCGrad(seed=0)
    >>> weighting.build({"a": (), "b": ()})
    >>> grads = np.array([[1.0, 0.0], [-0.5, 0.5]], "float32")  # conflicting
    >>> combined, weights = weighting.combine(grads, {"a": 1.0, "b": 1.0})
    >>> [round(float(w), 3) for w in weights]
    [1.5, 2.0]
    >>> [round(float(c), 3) for c in combined]
    [0.5, 1.0]
    """

    registry_name = "pcgrad"
    paper = "Yu et al., NeurIPS 2020"
    scale_free_weights = True

    supported_modes = ("params", "representation")

    def __init__(self, mode="params", seed=None, **kwargs):
        super().__init__(mode=mode, **kwargs)
        self.seed = check_seed(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="seed_generator")

    def task_orders(self, num_tasks, training):
        """`(T, T)` int: row `i` lists the other tasks in the order task `i`
        is projected against them, then `i` itself."""
        return random_task_orders(num_tasks, self.seed_generator, training)

    def gram_weights(self, gram, losses, labelled, training):
        active = active_tasks(gram, labelled)
        order = self.task_orders(gram.shape[0], training)
        coefficients = projection_coefficients(normalized_gram(gram, active), active, order)
        mask = ops.cast(active, gram.dtype)
        return ops.sum(coefficients * mask[:, None], axis=0) * mask

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
