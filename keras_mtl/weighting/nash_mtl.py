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
huge gradients stay in range); this `T × T` problem is solved in float64
(float32 on JAX unless `jax_enable_x64` is set). Newton steps
`delta = -(C + diag(1/beta²))⁻¹ (C beta - 1/beta)` (at most
`max_iterations`, fewer once a step moves `beta` by less than `1e-6`
relative: converged), each with a line search: the step size among 1, 1/2,
..., 1/512 and 0 with the lowest residual `||C beta - 1/beta||²` while
keeping `beta > 0` (the Newton step is a descent direction of the residual,
whose Jacobian, `phi`'s Hessian, is positive definite). So the residual
never increases and `beta` stays positive.

Newton runs twice. First on `C + 1e-6 I` (a ridge, which always has a
solution: see the degenerate cases below) from `beta = b 1` with the best
scalar `b`; then on `C` itself from that solution. Where the paper's
equation has a solution, both take a few steps (at most 7 on the tests'
inputs); where it has none, the second runs all `max_iterations`. The
second result is kept when it meets the equation at least as well
(`max_i |beta_i (C beta)_i - 1|`) with every `beta_i <= 1000`, the ridge's
own bound; otherwise the ridged one. So the ridge changes nothing where the
equation is solvable with `beta_i <= 1000`: full-rank inputs get
`alpha_i (G Gᵀ alpha)_i = 1` to the rounding of the float32 weights returned
(below 1e-6 on the tests' inputs, where the ridge alone, solved in float32,
left up to 3e-5).

Degenerate gradients (LibMTL's solver stops at its starting point on
identical gradients; this one returns the exact solution):

- identical gradients `g_i = g`: `alpha_i = 1 / (sqrt(T) ||g||)`, and
  `d = sqrt(T) g / ||g||`, which is `sqrt(T) / ||g||` times the mean
  gradient (`g`);
- parallel gradients `g_i = c_i u` (`c_i > 0`, `||u|| = 1`):
  `alpha_i = 1 / (sqrt(T) c_i)`, `d = sqrt(T) u`;
- a task whose gradient is 0, or without labels in the batch: the equation
  has no solution for it (`0 = 1/alpha_i`) and any weight gives the same
  `d`; it gets weight 0 and the system is solved for the other tasks.
  Each task's gradient is divided by its own largest entry before the Gram
  matrix is formed (`scale_aware_weights`; the weights are corrected for
  it), so every other finite gradient, however tiny or huge and however
  far from the others in size (1e-20 and 1e20 alike), counts and gets its
  weight `alpha_i ~ 1/||g_i||`;
- a non-finite gradient (its Gram entries are not finite): that task gets
  weight 0, and the step's non-finite loss or gradient stops training;
- gradients with a conic combination of zero (e.g. two opposite gradients):
  the exact problem has no solution (`phi` is unbounded below), and
  Newton's method on it runs away; the ridged solution is kept, whose
  weights are large but finite (`beta ≈ 1000` on two opposite gradients).
  Gradients with a conic combination close to zero have an exact solution
  with some `beta_i > 1000`; they get the ridged one too.

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

The official code (github.com/AvivNavon/nash-mtl, `NashMTL` in
`methods/weight_methods.py`; LibMTL's `Nash_MTL` is a copy) solves the same,
unnormalised equation: for cvxpy's conditioning it divides `G Gᵀ` by its
Frobenius norm `N` but multiplies `alpha` by `N` in its constraints
`-log(alpha_i N) - log((G Gᵀ / N) alpha)_i <= 0`, i.e.
`alpha_i (G Gᵀ alpha)_i >= 1`. It reaches the fixed point by a sequence of
convex approximations (CCP: at most 20 ECOS solves, warm-started from the
previous step's `alpha`, stopping once `||(G Gᵀ / N) alpha - 1/alpha|| <
1e-3` or `alpha` moves by less than `1e-6`); Newton's method on `phi`
reaches the same fixed point, to round-off.

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

#: Ridge on the cosine matrix's diagonal, for inputs whose exact solution
#: is unbounded (see the module docstring): it keeps `beta <~ 1/sqrt(_RIDGE)`.
_RIDGE = 1e-6
#: float32's smallest normal number: TensorFlow flushes smaller (denormal)
#: Gram entries to zero on CPU, so a squared norm below it counts as zero.
_TINY = 1.1754944e-38
#: Newton stops once a step moves `beta` by less than this (relative, L1):
#: it converges quadratically, so the residual is then at round-off.
_STOP = 1e-6
#: Line-search step sizes: 1, 1/2, ..., 1/512, then 0 (stay).
_STEPS = [2.0**-k for k in range(10)] + [0.0]


@compiled
def nash_weights(gram, active, iterations):
    """`alpha` with `(gram alpha)_i = 1 / alpha_i` over the `active` tasks
    (`alpha_i = 0` elsewhere), float32; see the module docstring."""
    gram = ops.convert_to_tensor(gram, "float32")
    n = gram.shape[0]
    active = ops.logical_and(active, ops.greater_equal(ops.diagonal(gram), _TINY))
    # The T × T problem is solved in float64: it costs nothing, and float32
    # alone leaves residuals of ~1e-5 on ill-conditioned inputs.
    gram = ops.cast(gram, "float64")
    mask = ops.cast(active, "float64")
    pair = mask[:, None] * mask[None, :]
    eye = ops.eye(n, dtype="float64")
    norms = ops.sqrt(ops.where(active, ops.diagonal(gram), 1.0))
    # Divided one norm at a time: n_i n_j may underflow where g_ij / n_i does not.
    cosines = ops.clip(gram / norms[:, None] / norms[None, :], -1.0, 1.0)
    cosines = ops.where(pair > 0, cosines, 0.0)
    # Inactive tasks decouple (C_ii = 1): their beta is solved alone and dropped.
    c = ops.where(ops.cast(eye, "bool"), 1.0, cosines)
    steps = ops.convert_to_tensor(_STEPS, "float64")[:, None]

    def solve(c, beta):
        """Damped Newton for `c beta = 1 / beta` from `beta > 0`."""

        def merit(b):
            # ||c b - 1/b||², infinite outside b > 0. (phi itself cannot be
            # compared once its decrease falls below its rounding.)
            safe = ops.where(b > 0, b, 1.0)
            value = ops.sum(ops.square(ops.matmul(safe, c) - 1.0 / safe), axis=-1)
            feasible = ops.logical_and(ops.all(b > 0, axis=-1), ops.isfinite(value))
            return ops.where(feasible, value, float("inf"))

        def newton_step(beta):
            residual = ops.matmul(c, beta) - 1.0 / beta
            hessian = c + eye / ops.square(beta)[None, :]
            # The Hessian is positive definite; an eigendecomposition (not
            # `solve`, which raises on a matrix rounded to singular) with
            # clamped eigenvalues gives the Newton step.
            values, vectors = ops.eigh(hessian)
            values = ops.maximum(values, 1e-7 * ops.max(values))
            delta = -ops.matmul(vectors, ops.matmul(residual, vectors) / values)
            # Should that still fail, the step size 0 (stay) wins.
            delta = ops.where(ops.isfinite(delta), delta, 0.0)
            candidates = beta[None, :] + steps * delta[None, :]
            return ops.take(candidates, ops.argmin(merit(candidates)), axis=0)

        return iterate(newton_step, beta, iterations, _STOP)

    def residual(beta):
        """`max_i |beta_i (C beta)_i - 1|` over the active tasks."""
        return ops.max(ops.abs(beta * ops.matmul(c, beta) - 1.0) * mask)

    # First with the ridge (always solvable), from the best scalar start.
    ridged_c = c + _RIDGE * eye
    scalar = ops.sqrt(ops.divide_no_nan(ops.sum(mask), ops.sum(ridged_c * pair)))
    ridged = solve(ridged_c, ops.where(active, scalar, 1.0))
    # Then the paper's equation itself, from there: a few Newton steps when
    # it has a solution. It is kept if it meets the equation better and
    # within the ridge's bound on beta; otherwise the ridged solution.
    exact = solve(c, ridged)
    bounded = ops.all(exact * mask <= _RIDGE**-0.5)
    better = ops.less_equal(residual(exact), residual(ridged))
    beta = ops.where(ops.logical_and(bounded, better), exact, ridged)
    return ops.cast(ops.where(active, beta / norms, 0.0), "float32")


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
        max_iterations: The most Newton iterations of each of the
            solver's two runs (an integer >= 1; see the module docstring).
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
    scale_aware_weights = True

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

    def gram_weights(self, gram, losses, labelled, training, scale=None):
        # `gram` is that of the task gradients each divided by its `scale`
        # (so float32 holds it for gradients of any sizes). With D = diag(scale)
        # the real Gram matrix is D gram D, and alpha' solving
        # gram alpha' = 1 / alpha' gives the real solution alpha = alpha' / scale;
        # that is what is stored and returned.
        gram = ops.convert_to_tensor(gram, "float32")
        if scale is None:
            scale = ops.ones_like(ops.diagonal(gram))
        scale = ops.convert_to_tensor(scale, "float32")
        active = ops.logical_and(labelled, ops.isfinite(ops.diagonal(gram)))

        def solve():
            return nash_weights(gram, active, self.max_iterations) / scale

        if training:
            alpha = ops.cond(
                self._due(active),
                solve,
                lambda: ops.convert_to_tensor(self.nash_alpha) + 0.0,
            )
            self.nash_alpha.assign(alpha)
            self.step.assign(self.step + 1)
        else:
            alpha = solve()
        alpha = ops.where(labelled, alpha, 0.0)
        if self.max_norm > 0:
            finite = ops.where(ops.isfinite(gram), gram, 0.0)  # weight 0 there
            scaled = alpha * scale  # ||d||^2 = alpha^T D gram D alpha
            norm = ops.sqrt(ops.maximum(ops.sum(ops.matmul(finite, scaled) * scaled), 0.0))
            alpha = self._clip(alpha, norm)
        return alpha

    def get_config(self):
        return {
            **super().get_config(),
            "update_every": self.update_every,
            "max_iterations": self.max_iterations,
            "max_norm": self.max_norm,
        }
