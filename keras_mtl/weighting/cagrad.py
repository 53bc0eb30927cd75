"""CAGrad: the update that most improves the worst task near the mean gradient.

Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task
Learning", NeurIPS 2021 (arXiv:2110.14048). CAGrad looks for the update `d`
that maximises the worst task's improvement `min_i g_i·d` within a ball
around the mean gradient `g0`: `‖d - g0‖ ≤ c ‖g0‖`. Its dual, which the
official code solves, is a problem over the simplex:

    w* = argmin_{w ∈ simplex} g_w·g0 + sqrt(φ) ‖g_w‖,   g_w = Σ_i w_i g_i,
    φ = c² ‖g0‖²,

and the update is

    d = g0 + sqrt(φ) / ‖g_w*‖ · g_w*,

divided by `1 + c²` (`rescale=1`, the official code's default), by `1 + c`
(`rescale=2`) or by nothing (`rescale=0`), the official code's three
options (LibMTL's `CAGrad_rescale`). So with `rescale=1` the weights of the
task gradients are `(1/T + λ w*_i) / (1 + c²)` with `λ = c ‖g0‖ / ‖g_w*‖`;
`c = 0` gives the mean gradient whatever `rescale`. `True` and `False` are
taken for 1 and 0 (files saved before the third option hold them).

Solver: all dot products come from the Gram matrix (`g_i·g0 = (G b)_i`,
`‖g_w‖² = wᵀ G w` with `b` the uniform weights), and the convex dual is
minimised in-graph by pairwise Frank-Wolfe (Lacoste-Julien & Jaggi, 2015)
for `max_iterations` steps from the uniform weights (the official start):
each step moves weight from the active task with the largest partial
derivative to the one with the smallest, by the exact minimiser of the
objective along that segment (a linear term plus the norm of an affine
function of the step, which has a closed form). The official code calls
scipy's SLSQP instead.

Robustness and deviations:
- tasks without labels in the batch and tasks whose gradient is exactly 0
  are left out: `g0` is the mean over the other tasks (so the step does not
  shrink when a task has no labels) and their weight is 0;
- when `g_w* = 0` (e.g. two opposite gradients) `d = g0`; the official code
  adds `1e-8` to norms instead, which is not scale-free;
- a near-zero (not zero) gradient is the worst task whatever the update: the
  dual then leans on it and its weight `λ w*_i` is large, while the update
  stays in the ball (`‖d - g0‖ = c ‖g0‖`), so it is finite;
- identical gradients: every `w` is optimal, the weights stay uniform,
  `λ = c` and `d = (1 + c) / (1 + c²) · g0` (`(1 + c) g0` with `rescale=0`,
  `g0` itself with `rescale=2`);
- the weights do not depend on the gradients' common scale: the Gram matrix
  is that of the gradients divided by their largest entry, scaled to a
  largest diagonal of 1, so gradients of any float32 size give finite
  weights, the same as at size 1 (see `_gram`).
"""

import numbers

import keras
from keras import ops

from keras_mtl.weighting._gram import active_tasks
from keras_mtl._validation import check_int
from keras_mtl.weighting._gram import compiled
from keras_mtl.weighting._gram import normalized_gram
from keras_mtl.weighting._gram import uniform_weights
from keras_mtl.weighting.base import check_number
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Float

_TINY = 1e-12
#: The official code's `rescale` options: divide the update by nothing,
#: by `1 + c²`, or by `1 + c`.
RESCALES = (0, 1, 2)


def segment_step(slope, radius, a, b, c, largest):
    """The `s ∈ [0, largest]` minimising `s·slope + radius·sqrt(a s² + 2 b s + c)`.

    `a s² + 2 b s + c = ‖u + s Δ‖²` (so `a ≥ 0`, `b² ≤ a c`), `radius ≥ 0`.
    """
    moving = ops.greater(a, _TINY)
    safe_a = ops.where(moving, a, 1.0)
    shift = b / safe_a
    offset = ops.maximum(c / safe_a - shift * shift, 0.0)  # distance² of 0 to the line / a
    pull = radius * ops.sqrt(safe_a)
    curved = ops.greater(pull, _TINY)
    # Stationary point of the convex function, where it has one:
    # (s + shift) / sqrt((s + shift)² + offset) = -slope / pull = rho.
    rho = -slope / ops.where(curved, pull, 1.0)
    inside = ops.less(ops.abs(rho), 1.0)
    rho_in = ops.where(inside, rho, 0.0)
    stationary = rho_in * ops.sqrt(offset / (1.0 - rho_in * rho_in)) - shift
    step = ops.where(
        inside,
        stationary,
        ops.where(ops.greater_equal(rho, 1.0), largest, 0.0),
    )
    # Without the norm term the function is linear.
    step = ops.where(curved, step, ops.where(ops.less(slope, 0.0), largest, 0.0))
    return ops.where(moving, ops.clip(step, 0.0, largest), 0.0)


@compiled
def dual_weights(gram, active, radius, mean_weights, iterations):
    """Pairwise Frank-Wolfe for `min_{w ∈ simplex} wᵀ G b + radius ‖G^½ w‖`."""
    num_tasks = gram.shape[0]
    linear = ops.matmul(gram, mean_weights)  # g_i · g0

    def step(_, weights):
        gram_w = ops.matmul(gram, weights)  # g_i · g_w
        norm = ops.sqrt(ops.maximum(ops.sum(weights * gram_w), 0.0))
        # At g_w = 0 the norm has no gradient; 0 is a subgradient.
        partial = linear + radius * ops.divide_no_nan(gram_w, norm)
        toward = ops.argmin(ops.where(active, partial, float("inf")))
        away = ops.argmax(
            ops.where(ops.logical_and(active, weights > 0.0), partial, -float("inf"))
        )
        direction = ops.one_hot(toward, num_tasks) - ops.one_hot(away, num_tasks)
        gram_d = ops.matmul(gram, direction)
        length = segment_step(
            slope=ops.sum(linear * direction),
            radius=radius,
            a=ops.sum(direction * gram_d),
            b=ops.sum(weights * gram_d),
            c=norm * norm,
            largest=ops.take(weights, away),
        )
        return ops.maximum(weights + length * direction, 0.0)

    weights = mean_weights
    for i in range(iterations):
        weights = step(i, weights)
    return weights


@register
class CAGrad(GradientWeighting):
    """Conflict-averse gradient: best worst-task gain near the mean gradient.

    | mode             | supported | why                                          |
    | ---------------- | --------- | -------------------------------------------- |
    | "params"         | yes       | CAGrad proper, on the shared variables       |
    | "representation" | yes       | the same problem on the gradients at `z`     |
    |                  |           | (the guarantee then holds for `z`'s change;  |
    |                  |           | LibMTL refuses this mode, the paper has no   |
    |                  |           | such variant)                                |

    Args:
        mode: `"params"` or `"representation"`.
        c: Radius of the ball around the mean gradient, in units of its
            norm (a float >= 0; 0 gives the mean gradient).
        max_iterations: Pairwise Frank-Wolfe steps for the dual (an integer
            >= 0).
        rescale: What the update is divided by, as in the official code:
            `1` (the default): `1 + c²`; `2`: `1 + c`; `0`: nothing.
            `True` / `False` mean 1 / 0.
        **kwargs: Base layer arguments.

    Example:

    >>> import numpy as np
    >>> weighting = CAGrad(c=0.0)
    >>> weighting.build({"a": (), "b": ()})
    >>> grads = np.array([[1.0, 0.0], [-0.5, 0.5]], "float32")
    >>> combined, weights = weighting.combine(grads, {"a": 1.0, "b": 1.0})
    >>> [round(float(x), 3) for x in combined]  # the mean gradient
    [0.25, 0.25]
    """

    registry_name = "cagrad"
    paper = "Liu et al., NeurIPS 2021"
    scale_free_weights = True
    search_space = {"c": Float(0.0, 1.0)}

    supported_modes = ("params", "representation")

    def __init__(self, mode="params", c=0.4, max_iterations=20, rescale=1, **kwargs):
        super().__init__(mode=mode, **kwargs)
        self.c = check_number("c", c, minimum=0)
        self.max_iterations = check_int("max_iterations", max_iterations)
        if not isinstance(rescale, numbers.Integral) or rescale not in RESCALES:
            raise ValueError(
                "Invalid value received for argument `rescale`. Expected one of "
                f"{RESCALES} (or a boolean: 1 or 0). Received: rescale={rescale!r}"
            )
        self.rescale = int(rescale)

    def gram_weights(self, gram, losses, labelled, training):
        active = active_tasks(gram, labelled)
        gram = normalized_gram(gram, active)
        mean_weights = uniform_weights(active, gram.dtype)
        mean_squared = ops.sum(mean_weights * ops.matmul(gram, mean_weights))
        mean_norm = ops.sqrt(ops.maximum(mean_squared, 0.0))
        radius = self.c * mean_norm  # sqrt(φ)
        weights = dual_weights(gram, active, radius, mean_weights, self.max_iterations)
        dual_norm = ops.sqrt(ops.maximum(ops.sum(weights * ops.matmul(gram, weights)), 0.0))
        weights = mean_weights + ops.divide_no_nan(radius, dual_norm) * weights
        if self.rescale:
            weights = weights / (1.0 + (self.c**2 if self.rescale == 1 else self.c))
        return weights * ops.cast(active, gram.dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "c": self.c,
            "max_iterations": self.max_iterations,
            "rescale": self.rescale,
        }
