"""FairGrad: task weights of the α-fair allocation of the update.

Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024
(arXiv:2402.15638); official code github.com/OptMN-Lab/fairgrad (`FairGrad`
in `methods/weight_methods.py`), and LibMTL's `LibMTL/weighting/FairGrad.py`.

Each task's utility is α-fair in its loss decrease, `u(x) = x^(1-α) / (1-α)`
(`log x` at `α = 1`) with `x = g_iᵀd`; maximising `Σ_i u(g_iᵀd)` over a ball
of updates gives `d = Σ_i w_i g_i` with `w > 0` solving

    (G Gᵀ w)_i = w_i^(-1/α)           (element-wise; G: task gradients, rows)

the paper's Eq. 7 (`GᵀG w = w^(-1/α)`, gradients as columns). So
`g_iᵀd = w_i^(-1/α)`. `α = 1` is Nash-MTL's equation `(G Gᵀ) w = 1 / w`
(`nash_mtl.py`: the same weights); `α -> 0` tends to equal weights (linear
scalarisation, `w = 1`), and larger `α` to the max-min fair direction.
The default `α = 1.0` is LibMTL's (`FairGrad_alpha`) and the official
code's (`--alpha`); the official run scripts use `α = 2.0`.

Size. Multiplying every gradient by `s > 0` multiplies `w` by
`s^(-2α/(α+1))` and `d` by `s^((1-α)/(1+α))`: only at `α = 1` is the
update's size independent of the gradients' (`||d|| = sqrt(T)`); at
`α = 2` tiny gradients give a large update (`s^(-1/3)`), at `α = 1/2` a
small one. That is the method, not rounding. With orthogonal gradients
of norms `n_i`, `w_i = n_i^(-2α/(α+1))`.

Solver (in-graph, keras.ops, float64; float32 on JAX unless
`jax_enable_x64` is set). With `n_i = ||g_i||`, the cosine matrix `C`
(`C_ij = cos(g_i, g_j)`), and `β_i = n_i w_i`, the equation reads

    (C β)_i = c_i β_i^(-p),      p = 1/α,  c_i = n_i^(p-1),

the stationarity condition of the strictly convex
`φ(β) = ½ βᵀCβ - Σ_i c_i h(β_i)` with `h' (β) = β^(-p)` (`h = log` at
`p = 1`). Norms enter only through `c`, and a common factor `m` of all the
norms only rescales the solution (`β -> m^((p-1)/(p+1)) β`), so the problem
is solved with the norms divided by their geometric mean, and the factor is
put back in log space: gradients of any size, 1e-20 or 1e20, give finite
weights (as long as the weights themselves fit in float32: below ~1e-38 a
weight rounds to 0, above ~3e38 it is clipped to float32's largest
number). The weights are `scale_aware_weights`: each task's gradient is
divided by its own largest entry before the Gram matrix is formed, and its
norm `n_i` is taken in log space from that matrix and the divisor; the
equation is solved for the undivided gradients exactly (not by dividing the
weights by the divisors, which only `α = 1` allows).

Newton's method on `φ`, as in `nash_mtl.py`, with two changes that
`α != 1` needs (its solutions can lie many orders of magnitude from the
start: at `α = 10` a task whose gradient the others already serve gets a
weight ~1e-11 of its orthogonal value). The unknown is
`γ = β / β⁰` with `β⁰_i = c_i^(1/(1+p))` (the solution for orthogonal
gradients, so `γ = 1` there whatever the norms); steps
`δβ = -(C + p diag(γ^(-p-1)))⁻¹ (C β - c β^(-p))`, the Hessian scaled to a
unit diagonal before its eigendecomposition (its diagonal spans orders of
magnitude when `γ` does, and clamping small eigenvalues would then stall
the step); at most `max_iterations` steps, fewer once a step moves `γ` by
less than `1e-6` relative; each step's size is the best, on the residual
`Σ_i ((C β - c β^(-p))_i / β⁰_i)²`, of 1, 1/2, ..., 1/512 and 0 times
`min(1, 0.9 × the largest step that keeps γ > 0)` (so a `γ_i` bound for
1e-11 gets there in a few steps instead of halving its way down); so the
residual never increases. It runs twice: on `C + 1e-6 I` (a ridge: always
solvable) from `γ = t` (`t`, the best scalar), then on `C` from that
solution. The second is kept when it meets the equation at least as well
(`max_i |(C β)_i β_i^p / c_i - 1|`, which is
`max_i |(G Gᵀ w)_i w_i^(1/α) - 1|`) with every `γ_i <= 1e-6^(-1/(1+p))`
(the size the ridge gives two opposite gradients; Nash-MTL's bound 1000 at
`α = 1`); otherwise the ridged one. At `α = 1` it solves Nash-MTL's
problem with its ridge and rule (the weights agree to 1e-5).

Accuracy (float64, on random 4-task Gram matrices): `w_i` meets
`w_i = (G Gᵀ w)_i^(-α)` to 1e-6 relative or better for `α` in [0.25, 10]
with norms within 100× of one another, and in [0.5, 5] within 1e4×; the
float32 weights returned then meet the equation to their
own rounding (`|(G Gᵀ w)_i w_i^(1/α) - 1|` ~1e-6 .. 1e-5 with norms within
10×). Outside that (e.g. `α = 0.1`, or norms 1e6 apart with `α = 10`) some
inputs are ill-conditioned: a task served almost only by the others has
`(G Gᵀ w)_i` cancelling to ~1e-11, which float64 cannot resolve.

Degenerate gradients, as in Nash-MTL: identical gradients `g_i = g` get
equal weights, `w_i = (T ||g||²)^(-α/(α+1))`; a task whose gradient is 0,
or without labels in the batch, gets weight 0 (the equation has no solution
for it, `0 = w_i^(-1/α)`) and the others are solved alone; a non-finite
gradient gets weight 0 (the step's non-finite loss or gradient stops
training); gradients with a conic combination of zero (two opposite ones)
have no solution and get the ridged one, large but finite. No task active:
all weights 0.

`max_norm > 0` scales the weights so that `||d|| <= max_norm`.

Where this differs from the official code and LibMTL, and why:

- the solver: both call `scipy.optimize.least_squares` on
  `G Gᵀ w - (1/w)^(1/α)` with `w >= 0`, from `w = 1/T`, on the host every
  step. Newton's method on `φ` reaches the same root in-graph (no host round
  trip), and to round-off (their default tolerances stop at about 1e-8
  relative). On inputs without a root they return whatever the bounded
  least-squares iteration stops at; here the ridged solution.
- the scale of `d`: the official code's `overwrite_grad` multiplies `d` by
  `T` ("to match the sum loss") and then clips the shared gradient's norm
  to `max_norm = 1.0` (its default); LibMTL does neither and uses
  `Σ_i w_i g_i`, as this class does by default (`max_norm = 0`, off);
  `max_norm > 0` clips like the official code (without the factor `T`, which
  only matters below the clip).
- unlabelled tasks and zero gradients get weight 0 and are left out of the
  solve (the official code solves for every task; LibMTL likewise).
- representation mode: LibMTL raises for FairGrad with representation
  gradients (`rep_grad=True`) and the official code uses the shared
  parameters only; here the same equation on the gradients at `z` is
  offered, as for Nash-MTL (MGDA-UB's shortcut).

Modes:

| mode             | supported | why                                              |
| ---------------- | --------- | ------------------------------------------------ |
| "params"         | yes       | the paper's setting: gradients of the shared     |
|                  | (default) | parameters.                                      |
| "representation" | yes       | the same allocation on gradients at `z`: cheap;  |
|                  |           | the Gram of `z`-gradients stands in for the      |
|                  |           | parameters' (as MGDA-UB does).                   |
"""

import math

import keras
from keras import ops

from keras_mtl._validation import check_int
from keras_mtl._validation import check_number
from keras_mtl.weighting._gram import compiled
from keras_mtl.weighting._gram import iterate
from keras_mtl.weighting.gradient_base import GradientWeighting
# Nash-MTL's ridge (for unbounded exact solutions) and float32's smallest
# normal number, as FairGrad at α = 1 is Nash-MTL.
from keras_mtl.weighting.nash_mtl import _RIDGE
from keras_mtl.weighting.nash_mtl import _TINY
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Float

#: log of float32's largest finite number: larger weights are clipped to it.
_LOG_FLOAT32_MAX = math.log(3.4028234e38)
#: Newton stops once a step moves `β` by less than this (relative, L1).
_STOP = 1e-6
#: Line-search step sizes: 1, 1/2, ..., 1/512, then 0 (stay).
_STEPS = [2.0**-k for k in range(10)] + [0.0]


@compiled
def fair_weights(gram, scale, active, p, iterations):
    """`w > 0` with `(G Gᵀ w)_i = w_i^(-p)` over the `active` tasks
    (`w_i = 0` elsewhere), float32, where `G Gᵀ = D gram D` with
    `D = diag(scale)`; see the module docstring."""
    gram = ops.convert_to_tensor(gram, "float32")
    n = gram.shape[0]
    active = ops.logical_and(active, ops.greater_equal(ops.diagonal(gram), _TINY))
    gram = ops.cast(gram, "float64")
    dtype = keras.backend.standardize_dtype(gram.dtype)  # float32 on JAX without x64
    # Magnitudes stay within the square root of the dtype's range (the
    # residual is squared): log β⁰ is clipped to a quarter of its log range.
    bound = (709.0 if dtype == "float64" else 88.0) / 4
    mask = ops.cast(active, dtype)
    count = ops.sum(mask)
    pair = mask[:, None] * mask[None, :]
    eye = ops.eye(n, dtype=dtype)
    norms = ops.sqrt(ops.where(active, ops.diagonal(gram), 1.0))
    # Divided one norm at a time: n_i n_j may underflow where g_ij / n_i does not.
    cosines = ops.clip(gram / norms[:, None] / norms[None, :], -1.0, 1.0)
    cosines = ops.where(pair > 0, cosines, 0.0)
    # Inactive tasks decouple (C_ii = 1, c_i = 1): their β is solved alone and dropped.
    cos = ops.where(ops.cast(eye, "bool"), 1.0, cosines)
    # log n_i of the undivided gradients, less their mean over the active
    # tasks (the common factor m, put back at the end).
    log_scale = ops.log(ops.where(active, ops.cast(scale, dtype), 1.0))
    log_norms = ops.where(active, log_scale + ops.log(norms), 0.0)
    log_m = ops.divide_no_nan(ops.sum(log_norms * mask), count)
    relative = ops.where(active, log_norms - log_m, 0.0)
    # β⁰_i = c_i^(1/(1+p)): the solution for orthogonal gradients. The
    # solver's unknown is γ = β / β⁰ (1 for orthogonal gradients, whatever
    # the norms), so that its residual and stopping rule weigh every task
    # alike; c = (β⁰)^(1+p) itself (possibly out of range) is never formed.
    log_start = ops.clip((p - 1.0) / (p + 1.0) * relative, -bound, bound)
    start = ops.exp(log_start)
    steps = ops.convert_to_tensor(_STEPS, dtype)[:, None]

    def solve(matrix, gamma):
        """Damped Newton for `matrix β = c β^(-p)` in `γ = β / β⁰ > 0`."""

        def merit(g):
            # Σ_i (r_i / β⁰_i)² with r = matrix β - c β^(-p) (rows of
            # candidates); infinite outside g > 0.
            safe = ops.where(g > 0, g, 1.0)
            value = ops.matmul(safe * start, matrix) / start - ops.power(safe, -p)
            value = ops.sum(ops.square(value), axis=-1)
            feasible = ops.logical_and(ops.all(g > 0, axis=-1), ops.isfinite(value))
            return ops.where(feasible, value, float("inf"))

        def newton_step(gamma):
            # In β: r = matrix β - c β^(-p), Hessian of φ
            # matrix + p diag(c β^(-p-1)) = matrix + p diag(γ^(-p-1)), free
            # of the norms; the step in γ is the step in β over β⁰.
            residual = ops.matmul(matrix, gamma * start) - start * ops.power(gamma, -p)
            curvature = p * ops.power(gamma, -p - 1.0)
            # The Hessian, scaled to a unit diagonal (its diagonal
            # `1 + curvature` spans orders of magnitude when γ does):
            # positive definite; an eigendecomposition with clamped
            # eigenvalues (not `solve`, which raises on a matrix rounded to
            # singular) gives the Newton step.
            root = ops.sqrt(ops.diagonal(matrix) + curvature)
            hessian = (matrix + eye * curvature[None, :]) / root[:, None] / root[None, :]
            values, vectors = ops.eigh(hessian)
            values = ops.maximum(values, 1e-7 * ops.max(values))
            delta = ops.matmul(vectors, ops.matmul(residual / root, vectors) / values)
            delta = -delta / root / start
            delta = ops.where(ops.isfinite(delta), delta, 0.0)  # then the step 0 wins
            # At most 90% of the way to the boundary γ = 0: a γ_i whose
            # solution is many orders below its start gets there in a few
            # steps (the line search's 1/512 alone would stall it).
            shrinking = delta < 0
            ratio = gamma / ops.where(shrinking, -delta, 1.0)
            room = ops.min(ops.where(shrinking, ratio, float("inf")))
            candidates = gamma[None, :] + ops.minimum(1.0, 0.9 * room) * steps * delta[None, :]
            return ops.take(candidates, ops.argmin(merit(candidates)), axis=0)

        return iterate(newton_step, gamma, iterations, _STOP)

    def residual(gamma):
        """`max_i |(C β)_i β_i^p / c_i - 1|` over the active tasks."""
        ratio = ops.matmul(cos, gamma * start) / start * ops.power(gamma, p)
        return ops.max(ops.where(active, ops.abs(ratio - 1.0), 0.0))

    # First with the ridge (always solvable), from the best multiple of β⁰:
    # t^(1+p) = |β⁰|² / (β⁰ᵀ C β⁰) minimises φ along β⁰.
    ridged_cos = cos + _RIDGE * eye
    active_start = start * mask
    quadratic = ops.sum(ops.matmul(ridged_cos, active_start) * active_start)
    t = ops.power(ops.divide_no_nan(ops.sum(ops.square(active_start)), quadratic), 1.0 / (1.0 + p))
    ridged = solve(ridged_cos, ops.where(active, t, 1.0))
    # Then the paper's equation itself, from there; kept if it meets the
    # equation better and within the ridge's bound, else the ridged solution.
    exact = solve(cos, ridged)
    within = exact <= _RIDGE ** (-1.0 / (1.0 + p))
    bounded = ops.all(ops.logical_or(ops.logical_not(active), within))
    better = ops.less_equal(residual(exact), residual(ridged))
    gamma = ops.where(ops.logical_and(bounded, better), exact, ridged)
    # w_i = m^((p-1)/(p+1)) β_i / n_i (β solved for the norms n / m), in
    # log space; clipped to float32's range.
    log_w = (p - 1.0) / (p + 1.0) * log_m + log_start + ops.log(gamma) - log_norms
    log_w = ops.minimum(log_w, _LOG_FLOAT32_MAX)
    return ops.cast(ops.where(active, ops.exp(log_w), 0.0), "float32")


@register
class FairGrad(GradientWeighting):
    """FairGrad (Ban & Ji 2024): weights `w > 0` with
    `(G Gᵀ w)_i = w_i^(-1/α)`, the α-fair allocation of the update.

    `α = 1` gives Nash-MTL's weights. Supported modes: `"params"` (default,
    the paper's) and `"representation"`. See the module docstring for the
    solver, the update's size and the results on degenerate gradients.

    Args:
        alpha: The fairness parameter `α > 0` (default 1.0, LibMTL's and the
            official code's default; larger is fairer, towards max-min).
        mode: `"params"` or `"representation"`.
        max_iterations: The most Newton iterations of each of the solver's
            two runs (an integer >= 1).
        max_norm: If > 0, the combined gradient's norm is clipped to it.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = FairGrad(alpha=2.0)
    >>> weighting.build({"a": (), "b": ()})
    >>> grads = keras.ops.convert_to_tensor([[1.0, 0.0], [0.0, 8.0]])
    >>> combined, weights = weighting.combine(grads, {"a": 1.0, "b": 1.0})
    >>> # orthogonal gradients: w_i = ||g_i||^(-2α/(α+1)) = ||g_i||^(-4/3)
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(weights)]
    [1.0, 0.0625]
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(combined)]
    [1.0, 0.5]
    """

    registry_name = "fairgrad"
    paper = "Ban & Ji, ICML 2024"
    search_space = {"alpha": Float(0.5, 5.0, sampling="log")}
    scale_aware_weights = True

    def __init__(self, alpha=1.0, mode="params", max_iterations=50, max_norm=0.0, **kwargs):
        super().__init__(mode=mode, **kwargs)
        self.alpha = check_number("alpha", alpha, minimum=0, exclusive=True)
        self.max_iterations = check_int("max_iterations", max_iterations, 1)
        self.max_norm = check_number("max_norm", max_norm, minimum=0)

    def gram_weights(self, gram, losses, labelled, training, scale=None):
        # `gram` is that of the task gradients each divided by its `scale`;
        # the solver takes both and returns weights for the undivided ones.
        gram = ops.convert_to_tensor(gram, "float32")
        if scale is None:
            scale = ops.ones_like(ops.diagonal(gram))
        scale = ops.convert_to_tensor(scale, "float32")
        active = ops.logical_and(labelled, ops.isfinite(ops.diagonal(gram)))
        weights = fair_weights(gram, scale, active, 1.0 / self.alpha, self.max_iterations)
        weights = ops.where(labelled, weights, 0.0)
        if self.max_norm > 0:
            finite = ops.where(ops.isfinite(gram), gram, 0.0)  # weight 0 there
            scaled = weights * scale  # ||d||² = wᵀ D gram D w
            norm = ops.sqrt(ops.maximum(ops.sum(ops.matmul(finite, scaled) * scaled), 0.0))
            clipped = self.max_norm / ops.maximum(norm, self.max_norm)
            weights = weights * ops.where(norm > self.max_norm, clipped, 1.0)
        return weights

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "max_iterations": self.max_iterations,
            "max_norm": self.max_norm,
        }
