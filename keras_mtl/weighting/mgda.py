"""MGDA: the min-norm point of the convex hull of the task gradients.

Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization",
NeurIPS 2018 (arXiv:1810.04650). The common descent direction of all task
losses is the element of minimum norm in the convex hull of the task
gradients:

    w* = argmin_{w ∈ simplex} ‖Σ_i w_i g_i‖² = argmin_w wᵀ (G Gᵀ) w

and the shared update is `Σ_i w*_i g_i`. The paper finds it by Frank-Wolfe
on the Gram matrix `M = G Gᵀ` (its Algorithm 2, with the analytic line
search of its Algorithm 1). The official solver (`MinNormSolver` in
github.com/isl-org/MultiObjectiveOptimization, whose training script calls
`find_min_norm_element`, a projected-gradient variant with the same line
search) and LibMTL cap it at 250 iterations (`MAX_ITER`; the official loop
never increments its counter, LibMTL's does) and stop once an iteration
moves the weights by less than `1e-5` (L1). Such steps are slow where the
optimum lies on a face of the simplex and the gradients are close: with
four tasks, three close gradients and one conflicting, 250 Frank-Wolfe
iterations are still 1e-4 to 1e-1 away from `w*`, and a small move
certifies nothing. Here each Frank-Wolfe iteration is made fully
corrective, which is Wolfe's min-norm-point algorithm (Wolfe, "Finding the
nearest point in a polytope", Math. Programming 11, 1976): the weights move
to the min-norm point of the affine hull of the tasks in use (the corral)
and the Frank-Wolfe vertex `e_t`, `t = argmin_t (M w)_t`; when that point
has a negative weight, they move towards it until a weight reaches 0, and
that task leaves the corral. This reaches `w*` up to round-off in a few
iterations (at most 9 on thousands of random 2- to 8-task inputs, 2 on the
case above).

It stops on the Frank-Wolfe duality gap

    gap(w) = ∇f(w)ᵀ (w - e_t) = 2 (wᵀ M w - min_t (M w)_t)   (f(w) = wᵀ M w)

once `gap(w) <= 1e-8 · wᵀ M w`. Since `f(w) - f(w*) <= gap(w)` (convexity),
this certifies `‖d‖² <= ‖d*‖² / (1 - 1e-8)` for `d = Σ_i w_i g_i`, and
`g_i·d >= (1 - 5e-9) ‖d‖²` for every task: `d` is a common descent direction,
which is what MGDA promises. The gap is taken relative to `‖d‖²` rather than
to the largest `‖g_i‖²` so that this holds however short `d` is. Near a
Pareto-stationary point (`d* = 0`) the relative gap is round-off, so the
solver also stops when an iteration no longer lowers `wᵀ M w`; and after
`max_iterations` iterations (250 by default, the official cap; rarely
reached). It starts from the best pair of tasks (the official code's start;
exact for two tasks) or from the uniform weights when those are as good (so
that identical gradients keep equal weights).

With `mode="representation"` the gradients are taken at the shared
representation: this is MGDA-UB, the paper's upper bound.

`normalization` scales each gradient before the solver, as the official code
and LibMTL allow: `"none"` (default), `"l2"` (by `‖g_i‖`), `"loss"` (by
`L_i`) or `"loss+"` (by `L_i ‖g_i‖`). As in the official training script,
the solver's weights then multiply the raw task gradients (LibMTL applies
them to the normalised ones in params mode). The loss normalisations need
`L_i > 0` for every labelled task with a nonzero gradient: a loss that can
be 0 or negative makes the step non-finite, which stops training with an
error naming the task (use `"l2"` or `"none"` for such losses).

Weights: the simplex weights `w*` themselves (sum 1 over the tasks of the
step), not multiplied by the number of tasks. Identical gradients give the
uniform weights, so the update is their mean.

Deviations and robustness:
- the solver reaches the min-norm point (Wolfe's algorithm, above), where
  the official one stops after small steps, up to 250 of them;
- the starting pair's line search clips `γ` to `[0, 1]` exactly (the
  official code uses 0.999 / 0.001 at the ends), and treats two points
  closer than float32 can tell apart as identical (no move);
- tasks without labels in the batch, and tasks whose gradient is exactly 0,
  are left out of the simplex with weight 0: their zero gradient would
  otherwise be the min-norm point and stop every other task;
- a labelled task with a near-zero (not zero) gradient keeps its place: the
  min-norm point is then near 0 and the step is small, which is MGDA's
  answer near a Pareto-stationary point (use `normalization="l2"` to avoid
  it); the gradients are divided by their largest entry before the Gram
  matrix is formed (`scale_free_weights`), so gradients of any size (1e-20
  to 1e20) give the same weights and a finite update, and a gradient about
  1e19 times smaller than the largest counts as zero;
- the `T × T` problem is solved in float64 (float32 on JAX unless
  `jax_enable_x64` is set: `w*` to about 1e-5 on the case above), with the
  normalisers applied in logs relative to the smallest, so normalisers far
  apart (losses of 1e-20 and 1e20) neither overflow nor underflow; a
  normalised gradient more than ~1e150 times smaller than the largest would
  underflow to 0 and be left out like a zero gradient.
"""

import keras
import numpy as np
from keras import ops

from keras_mtl.weighting._gram import active_tasks
from keras_mtl._validation import check_int
from keras_mtl.weighting._gram import compiled
from keras_mtl.weighting._gram import normalized_gram
from keras_mtl.weighting._gram import uniform_weights
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Choice

NORMALIZATIONS = ("none", "l2", "loss", "loss+")

# Relative size (to the largest squared norm) below which a squared distance
# computed from Gram entries is float32 round-off.
_TOLERANCE = 1e-6
# The solver stops once the Frank-Wolfe duality gap is at most this times
# wᵀ gram w (see the module docstring).
_GAP = 1e-8


def line_search(v11, v12, v22):
    """`γ ∈ [0, 1]` minimising `‖γ x + (1 - γ) y‖²`, and that minimum.

    `v11 = x·x`, `v12 = x·y`, `v22 = y·y` (tensors of any one shape). When
    `x` and `y` are indistinguishable, `γ = 1` (stay at `x`).
    """
    denominator = v11 + v22 - 2.0 * v12
    distinct = ops.greater(denominator, _TOLERANCE * (v11 + v22))
    gamma = ops.divide_no_nan(v22 - v12, ops.where(distinct, denominator, 1.0))
    gamma = ops.where(distinct, ops.clip(gamma, 0.0, 1.0), 1.0)
    cost = gamma * gamma * v11 + 2.0 * gamma * (1.0 - gamma) * v12 + (1.0 - gamma) ** 2 * v22
    return gamma, cost


def corral_minimizer(gram, corral):
    """The minimiser of `wᵀ gram w` over the `w` with `Σ w = 1` and `w_i = 0`
    off `corral` (a boolean `(T,)`; the signs of the others are free)."""
    inside = ops.cast(corral, gram.dtype)
    # On `Σ w = 1`, `wᵀ (gram + 1 1ᵀ) w = wᵀ gram w + 1`: the same minimiser,
    # `w ∝ (gram + 1 1ᵀ)⁻¹ 1`, and `gram + 1 1ᵀ` is positive definite on the
    # corral when its gradients are affinely independent (Wolfe's algorithm
    # keeps them so). Off the corral it is the identity, so `w_i = 0` there.
    # Plus the dtype's epsilon on the diagonal, so that the matrix is never
    # exactly singular (torch's `solve` raises then). `solve`, not `eigh`:
    # XLA's eigendecomposition is only accurate to ~1e-9 in float64. The
    # identity times a vector, not `ops.diag`: Keras 3.10 builds `diag` on
    # TensorFlow with a `tf.cond` that XLA (TF 2.19) cannot compile in a loop.
    epsilon = np.finfo(keras.backend.standardize_dtype(gram.dtype)).eps
    identity = ops.eye(gram.shape[0], dtype=gram.dtype)
    matrix = (gram + 1.0) * inside[:, None] * inside[None, :]
    matrix = matrix + identity * (1.0 - inside + epsilon)[None, :]
    solution = ops.solve(matrix, inside[:, None])[:, 0] * inside
    return solution / ops.sum(solution)


@compiled
def min_norm_weights(gram, active, iterations):
    """`argmin_{w ∈ simplex over active} wᵀ gram w` (see the module docstring)."""
    num_tasks = gram.shape[0]
    mask = ops.cast(active, gram.dtype)
    diagonal = ops.diagonal(gram)

    # Start: the best pair (i, j) (a pair i == i is task i alone), as in the
    # official solver, or the uniform weights if they are as good.
    gamma, cost = line_search(diagonal[:, None], gram, diagonal[None, :])
    pair_ok = ops.greater(mask[:, None] * mask[None, :], 0.0)
    cost = ops.reshape(ops.where(pair_ok, cost, float("inf")), (-1,))
    best = ops.argmin(cost)
    first, second = best // num_tasks, best % num_tasks
    best_gamma = ops.take(ops.reshape(gamma, (-1,)), best)
    pair = best_gamma * ops.one_hot(first, num_tasks, dtype=gram.dtype) + (
        1.0 - best_gamma
    ) * ops.one_hot(second, num_tasks, dtype=gram.dtype)
    uniform = uniform_weights(active, gram.dtype)
    uniform_cost = ops.sum(uniform * ops.matmul(gram, uniform))
    weights = ops.where(
        ops.less_equal(uniform_cost, ops.min(cost) + _TOLERANCE), uniform, pair
    )
    if iterations == 0:
        return weights * mask

    def measure(weights):
        """`wᵀ gram w`, the duality gap, and the Frank-Wolfe vertex `t`."""
        gram_w = ops.matmul(gram, weights)
        value = ops.sum(weights * gram_w)
        t = ops.argmin(ops.where(active, gram_w, float("inf")))
        return value, 2.0 * (value - ops.take(gram_w, t)), t

    def vertex(t):
        return ops.cast(ops.one_hot(t, num_tasks), "bool")

    def step(weights, corral, value, gap, improving):
        target = corral_minimizer(gram, corral)
        inside = ops.all(ops.logical_or(ops.logical_not(corral), target > 0))
        # Outside the simplex: move towards `target` until the first weight
        # reaches 0, and drop that task from the corral.
        blocking = ops.logical_and(corral, target <= 0)
        ratios = ops.divide_no_nan(weights, ops.where(blocking, weights - target, 1.0))
        ratios = ops.where(blocking, ratios, float("inf"))
        partial = ops.maximum(weights + ops.min(ratios) * (target - weights), 0.0)
        partial = ops.where(vertex(ops.argmin(ratios)), 0.0, partial)
        new = ops.where(inside, target, partial)
        new_value, new_gap, t = measure(new)
        # Inside: `target` is the corral's minimiser; add the Frank-Wolfe vertex.
        new_corral = ops.where(
            inside, ops.logical_or(corral, vertex(t)), ops.logical_and(corral, partial > 0)
        )
        # Every step lowers wᵀ gram w in exact arithmetic: one that does not
        # has reached round-off, so it is undone and the loop stops.
        improving = ops.less(new_value, value)
        new_state = (new, new_corral, new_value, new_gap)
        old_state = (weights, corral, value, gap)
        return tuple(ops.where(improving, n, o) for n, o in zip(new_state, old_state)) + (
            improving,
        )

    def running(weights, corral, value, gap, improving):
        return ops.logical_and(improving, gap > _GAP * value)

    value, gap, t = measure(weights)
    corral = ops.logical_or(weights > 0, vertex(t))
    state = (weights, corral, value, gap, ops.convert_to_tensor(True))
    weights = ops.while_loop(running, step, state, maximum_iterations=iterations)[0]
    return weights * mask


@register
class MGDA(GradientWeighting):
    """Multiple-gradient descent: the min-norm convex combination of gradients.

    | mode             | supported | why                                          |
    | ---------------- | --------- | -------------------------------------------- |
    | "params"         | yes       | MGDA proper, on the shared variables         |
    | "representation" | yes       | MGDA-UB: the paper's upper bound, at `z`     |

    Args:
        mode: `"params"` or `"representation"` (MGDA-UB).
        max_iterations: The most solver iterations after the best-pair
            start (an integer >= 0; 0 keeps the start, exact for two
            tasks). Default 250, the official solver's cap; fewer run once
            the duality gap certifies the optimum (see the module
            docstring), typically after a handful.
        normalization: How gradients are scaled before the solver: `"none"`,
            `"l2"`, `"loss"` or `"loss+"` (see the module docstring).
        **kwargs: Base layer arguments.

    Example:

    >>> import numpy as np
    >>> weighting = MGDA()
    >>> weighting.build({"a": (), "b": ()})
    >>> grads = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")  # orthogonal
    >>> losses = {"a": 1.0, "b": 1.0}
    >>> combined, weights = weighting.combine(grads, losses, training=False)
    >>> [round(float(w), 3) for w in weights], [round(float(c), 3) for c in combined]
    ([0.8, 0.2], [0.8, 0.4])
    """

    registry_name = "mgda"
    paper = "Sener & Koltun, NeurIPS 2018"
    # w* does not change when every gradient is multiplied by one s > 0.
    scale_free_weights = True
    search_space = {"normalization": Choice(NORMALIZATIONS)}

    supported_modes = ("params", "representation")

    def __init__(self, mode="params", max_iterations=250, normalization="none", **kwargs):
        super().__init__(mode=mode, **kwargs)
        self.max_iterations = check_int("max_iterations", max_iterations)
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                "Invalid value received for argument `normalization`. Expected one "
                f"of {NORMALIZATIONS}. Received: normalization={normalization!r}"
            )
        self.normalization = normalization

    def gram_weights(self, gram, losses, labelled, training):
        # The T × T problem is solved in float64: it costs nothing, and
        # normalisers far apart (a loss of 1e-20 next to one of 1e20) stay
        # representable.
        gram, losses = ops.cast(gram, "float64"), ops.cast(losses, "float64")
        active = active_tasks(gram, labelled)
        # Dividing a gradient by its loss needs L_i > 0. A labelled task's
        # loss may be 0 or negative (only its count decides presence): that
        # step is made non-finite, so training stops with `explain_nonfinite`,
        # rather than the logarithm below silently zeroing every weight.
        undefined = None
        if self.normalization in ("loss", "loss+"):
            undefined = ops.any(ops.logical_and(active, ops.less_equal(losses, 0.0)))
        if self.normalization != "none":
            # g_i / n_i, with the n_i taken in logs and divided by their
            # smallest (the solution does not change), so that neither tiny
            # losses nor huge norms overflow. Active tasks have ‖g_i‖ > 0
            # (and L_i > 0 where the losses are used, or the step is NaN).
            safe_losses = ops.where(ops.logical_and(active, losses > 0), losses, 1.0)
            half_log_norms = 0.5 * ops.log(ops.where(active, ops.diagonal(gram), 1.0))
            log_scale = {
                "l2": half_log_norms,
                "loss": ops.log(safe_losses),
                "loss+": ops.log(safe_losses) + half_log_norms,
            }[self.normalization]
            smallest = ops.min(ops.where(active, log_scale, float("inf")))
            factors = ops.where(active, ops.exp(smallest - log_scale), 0.0)
            gram = gram * factors[:, None] * factors[None, :]
            # A factor that underflowed leaves a zero gradient: leave it out.
            active = active_tasks(gram, active)
        weights = min_norm_weights(normalized_gram(gram, active), active, self.max_iterations)
        if undefined is not None:
            weights = ops.where(undefined, float("nan"), weights)
        return ops.cast(weights, "float32")

    def explain_nonfinite(self, losses):
        if self.normalization not in ("loss", "loss+"):
            return None
        below = {n: v for n, v in losses.items() if n in self.task_names and v <= 0}
        if not below:
            return None
        return (
            f"MGDA(normalization={self.normalization!r}) divides each task's gradient "
            f"by its loss, which must be positive; the mean loss of {below} is not. "
            "Use normalization='l2' or 'none' for losses that can be 0 or negative."
        )

    def get_config(self):
        return {
            **super().get_config(),
            "max_iterations": self.max_iterations,
            "normalization": self.normalization,
        }
