"""Nash-MTL: the task weights of the Nash bargaining solution.

Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, "Multi-Task
Learning as a Bargaining Game", ICML 2022 (arXiv:2202.01017).

The update is `d = sum_i alpha_i g_i` where `alpha > 0` solves

    (G Gᵀ) alpha = 1 / alpha            (element-wise; G: task gradients, rows)

(the paper's Theorem 5.1, `GᵀG alpha = 1/alpha` with gradients as columns).
It follows that `alpha_i g_i·d = 1` for every task and `||d|| = sqrt(T)`.

Solver (in-graph, no cvxpy). The equation is the stationarity condition of
the strictly convex `phi(alpha) = ½ alphaᵀ (G Gᵀ) alpha - sum_i log alpha_i`.
It is solved in cosine units: with `n_i = ||g_i||`, `C = D⁻¹ G Gᵀ D⁻¹`
(`D = diag(n)`, `C_ij = cos(g_i, g_j)`) and `alpha_i = beta_i / n_i`, the
equation becomes `C beta = 1 / beta`, free of the gradients' scale (tiny or
huge gradients stay in float32 range). From `beta = b 1` with the best
scalar `b = sqrt(T / 1ᵀC1)`, `max_iterations` Newton steps
`delta = -(C + diag(1/beta²))⁻¹ (C beta - 1/beta)` follow (fewer once a
step moves `beta` by less than `1e-6` relative: converged), each with a line
search: the step size among 1, 1/2, ..., 1/512 and 0 with the lowest residual
`||C beta - 1/beta||²` while keeping `beta > 0` (the Newton step is a
descent direction of the residual, whose Jacobian, `phi`'s Hessian, is
positive definite). So the residual never increases and `beta` stays
positive. Typical inputs converge in 3 to 6 iterations.

Degenerate gradients (LibMTL's solver stops at its starting point on
identical gradients; this one returns the exact solution):

- identical gradients `g_i = g`: `alpha_i = 1 / (sqrt(T) ||g||)`, and
  `d = sqrt(T) g / ||g||`, which is `sqrt(T) / ||g||` times the mean
  gradient (`g`);
- parallel gradients `g_i = c_i u` (`c_i > 0`, `||u|| = 1`):
  `alpha_i = 1 / (sqrt(T) c_i)`, `d = sqrt(T) u`;
- a task whose gradient is 0 (`||g||² < 1.2e-38`, float32's smallest normal
  number: TensorFlow flushes smaller Gram entries to zero on CPU anyway), or
  without labels in the batch: the equation has no solution for it
  (`0 = 1/alpha_i`) and any weight gives the same `d`; it gets weight 0 and
  the system is solved for the other tasks. Near-zero gradients above that
  get large, finite weights (`alpha_i ~ 1/||g_i||`);
- a Gram matrix with infinite entries (gradients beyond float32's range):
  those tasks get weight 0;
- gradients with a conic combination of zero (e.g. two opposite gradients):
  the exact problem has no solution (`phi` is unbounded below). A ridge of
  `1e-6` on `C`'s diagonal keeps it bounded: the weights are then large but
  finite (`beta <= 1000`). On full-rank inputs the ridge moves the solution
  by about `1e-6` relative.

No task active: all weights 0.

`update_every = N` recomputes `alpha` every `N` training steps (the official
code's `update_weights_every`) and reuses the stored one in between; a task
without labels in a step still gets weight 0 in that step, and a step where
a task with a stored weight of 0 (left out of the last solve) is back is
solved afresh, so partially labelled tasks are not left out for `N` steps.
In params mode a step that reuses the weights computes no per-task
gradients: it back-propagates `sum_i alpha_i L_i` once through the trunk,
as plain training does (`reuse_plan`), so the step costs about
`(T + 1 + (N - 1)) / N` trunk backward passes on average instead of `T + 1`.
In representation mode the per-task gradients at `z` come with the heads'
backward pass anyway; reusing saves the solve.

`max_norm > 0` scales the weights so that `||d|| <= max_norm`, like the
official code's `clip_grad_norm_(shared_parameters, max_norm)` (its default
1.0; here 0, off, since `||d|| = sqrt(T)` already).

Deviation from the official code: it solves the system for `G Gᵀ / ||G Gᵀ||_F`
(for cvxpy's conditioning), which multiplies its weights by
`||G Gᵀ||_F ** ½`; here the weights solve the paper's equation itself, so
the step's size does not grow with the gradients' (use an optimiser
learning rate accordingly). The official code also solves a sequence of
convex approximations (CCP, 20 iterations); Newton's method on `phi` reaches
the same fixed point.

Modes:

| mode             | supported | why                                              |
| ---------------- | --------- | ------------------------------------------------ |
| "params"         | yes       | the paper's setting: gradients of the shared     |
|                  | (default) | parameters.                                      |
| "representation" | yes       | the same bargaining on gradients at `z`: cheap;  |
|                  |           | the Gram of `z`-gradients stands in for the      |
|                  |           | parameters' (as MGDA-UB does).                   |
"""

import keras
from keras import ops

from keras_mtl._validation import check_int
from keras_mtl.weighting._gram import compiled
from keras_mtl.weighting._gram import iterate
from keras_mtl.weighting.base import check_number
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Choice

#: Ridge on the cosine matrix's diagonal (see the module docstring).
_RIDGE = 1e-6
#: float32's smallest normal number: TensorFlow flushes smaller (denormal)
#: Gram entries to zero on CPU, so a squared norm below it counts as zero.
_TINY = 1.1754944e-38
#: Newton stops once a step moves `beta` by less than this (relative, L1):
#: it converges quadratically, so the residual is then at float32 round-off.
_STOP = 1e-6
#: Line-search step sizes: 1, 1/2, ..., 1/512, then 0 (stay).
_STEPS = [2.0**-k for k in range(10)] + [0.0]


@compiled
def nash_weights(gram, active, iterations):
    """`alpha` with `(gram alpha)_i = 1 / alpha_i` over the `active` tasks
    (`alpha_i = 0` elsewhere); see the module docstring."""
    gram = ops.convert_to_tensor(gram, "float32")
    n = gram.shape[0]
    active = ops.logical_and(active, ops.greater_equal(ops.diagonal(gram), _TINY))
    mask = ops.cast(active, "float32")
    pair = mask[:, None] * mask[None, :]
    eye = ops.eye(n, dtype="float32")
    norms = ops.sqrt(ops.where(active, ops.diagonal(gram), 1.0))
    # Divided one norm at a time: n_i n_j may underflow where g_ij / n_i does not.
    cosines = ops.clip(gram / norms[:, None] / norms[None, :], -1.0, 1.0)
    cosines = ops.where(pair > 0, cosines, 0.0)
    # Inactive tasks decouple (C_ii = 1): their beta is solved alone and dropped.
    c = ops.where(ops.cast(eye, "bool"), 1.0 + _RIDGE, cosines)
    count = ops.sum(mask)
    scalar = ops.sqrt(ops.divide_no_nan(count, ops.sum(c * pair)))
    beta = ops.where(active, scalar, 1.0)
    steps = ops.convert_to_tensor(_STEPS, "float32")[:, None]

    def merit(b):
        # ||C b - 1/b||², infinite outside b > 0. (phi itself cannot be
        # compared in float32 once its decrease falls below its rounding.)
        safe = ops.where(b > 0, b, 1.0)
        value = ops.sum(ops.square(ops.matmul(safe, c) - 1.0 / safe), axis=-1)
        feasible = ops.logical_and(ops.all(b > 0, axis=-1), ops.isfinite(value))
        return ops.where(feasible, value, float("inf"))

    def newton_step(beta):
        residual = ops.matmul(c, beta) - 1.0 / beta
        hessian = c + eye / ops.square(beta)[None, :]
        # The Hessian is positive definite; an eigendecomposition (not
        # `solve`, which raises on a matrix float32 rounds to singular)
        # with clamped eigenvalues gives the Newton step.
        values, vectors = ops.eigh(hessian)
        values = ops.maximum(values, 1e-7 * ops.max(values))
        delta = -ops.matmul(vectors, ops.matmul(residual, vectors) / values)
        # Should float32 still fail, the step size 0 (stay) wins.
        delta = ops.where(ops.isfinite(delta), delta, 0.0)
        candidates = beta[None, :] + steps * delta[None, :]
        return ops.take(candidates, ops.argmin(merit(candidates)), axis=0)

    beta = iterate(newton_step, beta, iterations, _STOP)
    return ops.where(active, beta / norms, 0.0)


@register
class NashMTL(GradientWeighting):
    """Nash-MTL (Navon et al. 2022): weights `alpha > 0` with
    `(G Gᵀ) alpha = 1 / alpha`, the Nash bargaining solution.

    Supported modes: `"params"` (default, the paper's) and
    `"representation"`. See the module docstring for the solver and the
    results on degenerate gradients.

    Args:
        mode: `"params"` or `"representation"`.
        update_every: Recompute the weights every this many training steps
            (an integer >= 1); in between, the last weights are reused.
        max_iterations: Newton iterations of the solver (an integer >= 1).
        max_norm: If > 0, the combined gradient's norm is clipped to it.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = NashMTL()
    >>> weighting.build({"a": (), "b": ()})
    >>> grads = keras.ops.convert_to_tensor([[1.0, 0.0], [0.0, 2.0]])
    >>> combined, weights = weighting.combine(grads, {"a": 1.0, "b": 1.0})
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(weights)]  # 1 / ||g_i||
    [1.0, 0.5]
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(combined)]
    [1.0, 1.0]
    """

    registry_name = "nash_mtl"
    aliases = ("nash",)
    paper = "Navon et al., ICML 2022"
    search_space = {"update_every": Choice((1, 5, 25))}

    def __init__(self, mode="params", update_every=1, max_iterations=20, max_norm=0.0, **kwargs):
        super().__init__(mode=mode, **kwargs)
        self.update_every = check_int("update_every", update_every, 1)
        self.max_iterations = check_int("max_iterations", max_iterations, 1)
        self.max_norm = check_number("max_norm", max_norm, minimum=0)

    def build(self, losses_shape):
        super().build(losses_shape)
        n = len(self.task_names)
        # The last solved weights (before any norm clip), reused between updates.
        self.nash_alpha = self.add_weight(
            name="nash_alpha", shape=(n,), initializer="zeros", trainable=False
        )
        self.step = self.add_weight(
            name="step", shape=(), initializer="zeros", dtype="int64", trainable=False
        )

    def _due(self, active):
        """Whether a training step solves: every `update_every` steps, and
        when an active task has no stored weight (left out of the last
        solve: reusing would leave it out until the next one)."""
        stored = ops.convert_to_tensor(self.nash_alpha)
        returning = ops.any(ops.logical_and(active, ops.equal(stored, 0.0)))
        return ops.logical_or(ops.equal(self.step % self.update_every, 0), returning)

    def _clip(self, alpha, norm):
        """`alpha` scaled so that `||d|| <= max_norm` (`norm`: `||d||`)."""
        if self.max_norm <= 0:
            return alpha
        clipped = self.max_norm / ops.maximum(norm, self.max_norm)
        return alpha * ops.where(norm > self.max_norm, clipped, 1.0)

    def reuse_plan(self, losses, counts=None):
        if self.update_every == 1:
            return None
        labelled = self.labelled(counts)
        stored = ops.convert_to_tensor(self.nash_alpha)
        # Solving on at least the steps `gram_weights` would solve on (it
        # also leaves out tasks with infinite Gram entries), so skipping
        # the per-task gradients changes no result.
        return self._due(labelled), ops.where(labelled, stored, 0.0)

    def reuse(self, combined, weights):
        parts = keras.tree.flatten(combined)
        norm = ops.sqrt(sum(ops.sum(ops.square(p)) for p in parts))
        scale = self._clip(1.0, norm)
        self.step.assign(self.step + 1)
        return super().reuse(keras.tree.map_structure(lambda p: p * scale, combined), weights * scale)

    def gram_weights(self, gram, losses, labelled, training):
        gram = ops.convert_to_tensor(gram, "float32")
        active = ops.logical_and(labelled, ops.isfinite(ops.diagonal(gram)))
        if training:
            alpha = ops.cond(
                self._due(active),
                lambda: nash_weights(gram, active, self.max_iterations),
                lambda: ops.convert_to_tensor(self.nash_alpha) + 0.0,
            )
            self.nash_alpha.assign(alpha)
            self.step.assign(self.step + 1)
        else:
            alpha = nash_weights(gram, active, self.max_iterations)
        alpha = ops.where(labelled, alpha, 0.0)
        if self.max_norm > 0:
            finite = ops.where(ops.isfinite(gram), gram, 0.0)  # weight 0 there
            norm = ops.sqrt(ops.maximum(ops.sum(ops.matmul(finite, alpha) * alpha), 0.0))
            alpha = self._clip(alpha, norm)
        return alpha

    def get_config(self):
        return {
            **super().get_config(),
            "update_every": self.update_every,
            "max_iterations": self.max_iterations,
            "max_norm": self.max_norm,
        }
