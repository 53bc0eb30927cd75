"""MoCo: stochastic multi-objective gradient correction (tracked gradients).

Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient Bias
in Multi-objective Learning: A Provably Convergent Approach", ICLR 2023
(arXiv:2210.12624), Algorithm 1. The authors' code is in
github.com/heshandevaka/MoCo (its LibMTL fork's `Tracking` weighting and the
`tracking` function of `CAGrad/nyuv2/utils.py`); LibMTL has it as
`LibMTL/weighting/MoCo.py` ("based on the authors' sharing code").

MGDA's weights computed from one batch's gradients are a biased estimate of
the weights of the full gradients (they are a nonlinear function of noisy
inputs). MoCo keeps, per task, a tracking variable `y_t` that follows the
task's stochastic gradient `h_t`, and moves the simplex weights `λ` by one
projected gradient step of MGDA's problem on the tracked gradients. At step
`k = 1, 2, ...`, with `Y` the `(T, P)` matrix of the `y_t`:

    β_k = beta / k^beta_sigma,     γ_k = gamma / k^gamma_sigma
    y_t ← y_t - β_k (y_t - h_t)                        (every labelled task)
    λ   ← Π_Δ(λ - γ_k (Y Yᵀ + rho I) λ)                (Π_Δ: onto the simplex)
    d   = Yᵀ λ = Σ_t λ_t y_t                           (the shared update)

`Y` starts at 0 and `λ` at `1/T`. `Y Yᵀ λ + rho λ` is the gradient of
`½ ‖Yᵀ λ‖² + ½ rho ‖λ‖²`, MGDA's min-norm objective (`rho > 0` makes it
strongly convex). The update `d` is a convex combination of the *tracked*
gradients, not of this step's gradients: the reported weight of task `t`
(`weight_<task>`) is `λ_t`, the coefficient of `y_t` in `d` (`μ_t` below
when a task has no label: they sum to 1 over the tasks of the step), and
`d ≠ Σ_t λ_t g_t` in general. The loss `fit` logs is `Σ_t λ_t L_t`.

`h_t` is chosen by `normalization`:
- `"none"` (default): `h_t = g_t`, the task's gradient, as in the paper and
  the authors' code;
- `"l2_loss"`: `h_t = L_t g_t / ‖g_t‖`, the gradient's direction with the
  task's loss as its length, as LibMTL does (every task then pulls with its
  loss, whatever its gradient's size);
- `"l2"`: `h_t = g_t / ‖g_t‖`, the unit direction.
A zero gradient has no direction: its `h_t` is 0 under both l2 options.
`"l2_loss"` needs `L_t > 0` for every labelled task with a nonzero
gradient (a negative loss would turn `h_t` uphill): a loss that can be 0 or
negative makes the step non-finite, which stops training with an error
naming the task (`explain_nonfinite`); use `"l2"` or `"none"` for such
losses. The unit directions are computed from the gradient divided by its
largest entry, so gradients of any float32 size (1e-20 ... 1e20) give the
same `h_t`.

Defaults: LibMTL's (`MoCo_beta=0.5`, `MoCo_beta_sigma=0.5`,
`MoCo_gamma=0.1`, `MoCo_gamma_sigma=0.5`, `MoCo_rho=0`), with `k` counted
from 1 at the first step, as LibMTL and the authors' code count it (the
authors' NYUv2 script runs `beta=0.99`, `gamma=0.1`, no decay).

The rates fall with `k`: `y_t` moves less and less towards the current
gradient, so `d` follows an ever longer average of past gradients, the
stochastic-approximation schedule of the paper's analysis. On short budgets
with Adam that average lags the trunk: on a SchNet trunk learning three
atom-count targets (10 epochs of 8 steps, Adam 3e-3) the defaults take the
losses from about 1.0 to 0.87, 1.34, 0.49 where Equal reaches 0.25, 0.06,
0.15 (with SGD both learn alike), and on QM9 (`benchmarks/bench_qm9.py`)
MoCo stops early. `beta_sigma=0` keeps a constant tracking rate.

Where we differ, and why:
- `λ` is updated by the Euclidean projection onto the simplex (exact,
  sort-based), as in the paper and the authors' code; LibMTL applies a
  softmax to `λ - γ_k (Y Yᵀ + rho I) λ` instead, which is not a projection
  (it never reaches a face of the simplex and does not stay put at a
  minimiser);
- the step is the paper's `(Y Yᵀ + rho I) λ`; the authors' LibMTL-fork
  `Tracking` doubles it (the gradient of `‖Yᵀλ‖²`), their NYUv2 `tracking`
  function does not: `gamma` absorbs the factor;
- `"l2_loss"` divides by `‖g_t‖` exactly; LibMTL divides by `‖g_t‖ + 1e-8`,
  which shortens `h_t` of gradients with norms near or below 1e-8, and it is
  LibMTL's only choice (the paper has none: our default);
- `Y` starts at 0, so the first steps are shorter (`d = ½ Σ λ_t g_t` at the
  first step with `beta = 0.5`), as in LibMTL and the authors' code; there is
  no Adam-style bias correction (the paper's rates and analysis assume
  none);
- `y_t` is not projected onto a ball of bounded gradients (if the paper's
  analysis confines it so, the bound is not known in practice), as in the
  authors' code and LibMTL;
- the `T × T` λ step runs in float64 (float32 on JAX unless
  `jax_enable_x64` is set), on the Gram matrix of `Y` divided by its
  largest entry, the step size times that entry squared taken in logs and
  capped where the step reaches 1e30 (the projection of a longer one is
  the same vertex or face), so `normalization="none"` with gradients of
  1e-20 or 1e20 stays finite in float32 too. The weights then depend on the
  gradients' size, as in the paper (`gamma` is in units of 1 / gradient²):
  MoCo with `"none"` is not scale-invariant.

Tasks without labels in the batch. A task `u` with no label in the step
(count 0) is left out of it: its `y_u` and `λ_u` do not move, and its
weight is 0. The other tasks `S` take one step of the same problem on their
face of the simplex: with `m = 1 - Σ_u λ_u` their share of `λ` and
`μ = λ_S / Σ_S λ_S` their weights renormalised (uniform if they are all 0),

    μ ← Π_Δ(μ - γ_k (Y_S Y_Sᵀ + rho I) μ),   λ_S ← m μ,   d = Σ_{t∈S} μ_t y_t.

Since the objective is quadratic, this is the projected gradient step of
`λ_S` on `{λ_S >= 0, Σ λ_S = m}`, scaled to the unit simplex (the direction
does not shrink because a task is missing); with every task labelled,
`m = 1` and it is Algorithm 1's step. A step with no labelled task changes
nothing (`d = 0`, weights 0) and does not count in `k`.

Non-finite steps. A non-finite gradient, or `"l2_loss"` with a non-positive
loss, makes `d` (and the weights) non-finite, and the state (`Y`, `λ`, `k`)
is left as it was: training stops with an error, and under a
`LossScaleOptimizer` (mixed_float16), which skips overflowing steps, the
tracked gradients are not poisoned by them.

State: `tracked_gradients` (`Y`, `(T, P)` float32, `P` the number of
trainable parameters of the trunk: `4·T·P` bytes besides the per-task
gradients), `lambdas` (`λ`) and `step` (`k`), saved with the model.
`MultiTaskModel.compile` gives the method its trunk's variables
(`build_shared`) before `build`, which sizes `Y`; used alone, call
`build_shared(variables)` (anything with a `shape`) before `build`.
`training=False` computes the step without changing any state.

Modes:

| mode             | supported | why                                                |
| ---------------- | --------- | -------------------------------------------------- |
| "params"         | yes       | the paper's setting: `y_t` tracks the gradient of  |
|                  | (only)    | the shared parameters, the same vector every step. |
| "representation" | no        | gradients at `z` are per example: row `b` of one   |
|                  |           | step's gradient belongs to another example than    |
|                  |           | row `b` of the next (and the last batch may be     |
|                  |           | smaller), so an average of them over steps tracks  |
|                  |           | nothing. LibMTL refuses it too.                    |
"""

import numbers

import keras
from keras import ops

from keras_mtl._validation import check_choice
from keras_mtl.weighting.base import check_number
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.gradient_base import shared_parameter_count
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Choice
from keras_mtl.weighting.space import Float

NORMALIZATIONS = ("none", "l2_loss", "l2")


def project_to_simplex(values, active=None):
    """The Euclidean projection of `values` (`(T,)`) onto the simplex of the
    `active` entries (`(T,)` booleans; all when None): the `w` with
    `w >= 0`, `Σ w = 1`, `w = 0` off `active`, nearest to `values` there.

    Sort-based (Held, Wolfe & Crowder 1974; Duchi et al. 2008): with `u` the
    active values sorted in decreasing order and `ρ` the largest `j` with
    `u_j > (Σ_{i<=j} u_i - 1) / j`, `w = max(values - θ, 0)` for
    `θ = (Σ_{i<=ρ} u_i - 1) / ρ`. The values are first shifted by their
    largest (the projection does not change), so that values of any size
    lose no more than their differences' rounding. No active entry: zeros.

    Example:

    >>> w = project_to_simplex(keras.ops.convert_to_tensor([0.5, 1.5, -1.0]))
    >>> [float(x) for x in keras.ops.convert_to_numpy(w)]
    [0.0, 1.0, 0.0]
    """
    values = ops.convert_to_tensor(values)
    n = values.shape[0]
    if active is None:
        active = ops.ones((n,), "bool")
    dtype = values.dtype
    count = ops.sum(ops.cast(active, dtype))
    largest = ops.max(ops.where(active, values, ops.min(values)))
    shifted = ops.where(active, values - largest, 0.0)  # active ones <= 0
    # Inactive entries sort last, below every active one.
    keys = ops.where(active, shifted, ops.min(shifted) - 1.0)
    ordered = -ops.sort(-keys)
    ordered = ops.where(ops.arange(n) < ops.cast(count, "int32"), ordered, 0.0)
    sums = ops.cumsum(ordered)
    ranks = ops.cast(ops.arange(1, n + 1), dtype)
    support = ops.logical_and(ranks <= count, ordered - (sums - 1.0) / ranks > 0)
    rho = ops.sum(ops.cast(support, "int32"))
    last = ops.maximum(rho - 1, 0)
    theta = (ops.take(sums, last) - 1.0) / ops.maximum(ops.cast(rho, dtype), 1.0)
    return ops.where(active, ops.maximum(shifted - theta, 0.0), 0.0)


def _positive_rate(argument, value):
    """`value` as a float in (0, 1], or a Keras-style `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected a float in "
            f"(0, 1]. Received: {argument}={value!r}"
        )
    return float(value)



def labelled_face(stored, labelled):
    """`(μ, m)` for simplex weights `stored` kept from step to step, of
    which a step moves only the `labelled` tasks' (module docstring): `μ`,
    the labelled tasks' stored weights renormalised to sum to 1 (uniform if
    they are all 0; 0 elsewhere), and `m`, their share of the simplex (the
    unlabelled tasks' stay; exactly 1 with every task labelled), so that the
    new stored weights are `m μ'` there."""
    inside = ops.cast(labelled, stored.dtype)
    share = ops.sum(stored * inside)
    mass = ops.maximum(1.0 - ops.sum(stored * (1.0 - inside)), 0.0)
    uniform = inside / ops.maximum(ops.sum(inside), 1.0)
    return ops.where(share > 0, stored * inside / ops.where(share > 0, share, 1.0), uniform), mass


def simplex_step(gram, scale, lambdas, labelled, rate, rho):
    """`(μ, λ)`: one projected gradient step of `½ λᵀ A λ + ½ rho ‖λ‖²` from
    the stored weights `lambdas` on the face of the simplex of the
    `labelled` tasks (MoCo's module docstring: the step's weights `μ`, and
    the new stored `λ`), where `A = scale² gram` (`gram` computed from
    gradients divided by `scale`, so that float32 holds it for gradients of
    any size; it need not be symmetric: the step uses `A λ`).

    The step runs in float64 (float32 on JAX without `jax_enable_x64`);
    `rate · scale²` is taken in logs and capped where its product with the
    direction reaches 1e30 (the projection of a longer step is the same)."""
    dtype = "float64"  # float32 on JAX without jax_enable_x64
    gram = ops.cast(gram, dtype)
    lambdas = ops.cast(lambdas, dtype)
    weights, mass = labelled_face(lambdas, labelled)
    direction = ops.matmul(gram, weights)
    # γ_k s² (in logs: s² alone overflows float32 for s > ~1e19), capped
    # where its product with the direction reaches 1e30: the projection
    # of so long a step is the same (the weights, <= 1, are negligible
    # beside it), and the product stays finite in float32.
    rate = ops.cast(rate, dtype)
    log_step = ops.log(rate) + 2.0 * ops.log(ops.cast(scale, dtype))
    longest = ops.max(ops.abs(direction))
    cap = ops.where(longest > 0, ops.log(ops.convert_to_tensor(1e30, dtype)) - ops.log(
        ops.where(longest > 0, longest, 1.0)), float("inf"))
    step = ops.exp(ops.minimum(log_step, cap))
    moved = weights - step * direction - rate * rho * weights
    weights = project_to_simplex(moved, labelled)
    return weights, ops.where(labelled, mass * weights, lambdas)


@register
class MoCo(GradientWeighting):
    """Multi-objective gradient correction (Fernando et al. 2023): MGDA's
    weights by projected gradient steps on tracked task gradients.

    Supported modes: `"params"` only (see the module docstring for the
    algorithm, the unlabelled tasks and the deviations).

    Args:
        beta: The tracking rate of `y_t`, in (0, 1]; step `k` uses
            `beta / k^beta_sigma`.
        beta_sigma: The decay exponent of the tracking rate, >= 0.
        gamma: The step size of `λ`, >= 0 (0: `λ` stays `1/T`); step `k`
            uses `gamma / k^gamma_sigma`.
        gamma_sigma: The decay exponent of the λ step size, >= 0.
        rho: The ℓ2 regularisation of the λ problem, >= 0.
        normalization: What `y_t` tracks: `"none"` (the gradient, as in
            the paper), `"l2_loss"` (the unit gradient times the loss, as
            LibMTL; needs positive losses) or `"l2"` (the unit gradient).
        mode: `"params"`, the only mode.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> import numpy as np
    >>> weighting = MoCo()
    >>> weighting.build_shared([np.zeros(2)])  # the shared variables: P = 2
    >>> weighting.build({"a": (), "b": ()})
    >>> grads = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
    >>> combined, weights = weighting.combine(grads, {"a": 1.0, "b": 1.0})
    >>> [round(float(w), 5) for w in weights]  # λ after one step
    [0.51875, 0.48125]
    >>> [round(float(c), 4) for c in combined]  # Σ λ_t y_t, y_t = g_t / 2
    [0.2594, 0.4812]
    """

    registry_name = "moco"
    paper = "Fernando et al., ICLR 2023"
    search_space = {
        "gamma": Float(0.01, 1.0, sampling="log"),
        "normalization": Choice(NORMALIZATIONS),
    }

    supported_modes = ("params",)

    def __init__(
        self,
        beta=0.5,
        beta_sigma=0.5,
        gamma=0.1,
        gamma_sigma=0.5,
        rho=0.0,
        normalization="none",
        mode="params",
        **kwargs,
    ):
        super().__init__(mode=mode, **kwargs)
        self.beta = _positive_rate("beta", beta)
        self.beta_sigma = check_number("beta_sigma", beta_sigma, minimum=0, kind="finite number")
        self.gamma = check_number("gamma", gamma, minimum=0, kind="finite number")
        self.gamma_sigma = check_number(
            "gamma_sigma", gamma_sigma, minimum=0, kind="finite number"
        )
        self.rho = check_number("rho", rho, minimum=0, kind="finite number")
        self.normalization = check_choice("normalization", normalization, NORMALIZATIONS)
        self.num_params = None  # P, from `build_shared`

    def build_shared(self, variables, representation_shape=None):
        """Records `P`, the number of shared parameters (`variables`: the
        trunk's trainable variables, or anything with a `shape`), which
        sizes the tracked gradients. Called by `MultiTaskModel.compile`
        before `build`, and again at every compile. (`representation_shape`
        is not used: MoCo has no representation mode.)"""
        self.num_params = shared_parameter_count(self, variables, self.num_params)

    def build(self, losses_shape):
        if self.num_params is None:
            raise ValueError(
                "MoCo needs its shared variables before `build`: its tracked gradients "
                "have one entry per shared parameter. Compile a model with it, or call "
                "`build_shared(variables)` first."
            )
        super().build(losses_shape)
        n = len(self.task_names)
        self.tracked_gradients = self.add_weight(
            name="tracked_gradients", shape=(n, self.num_params), initializer="zeros",
            trainable=False,
        )
        self.lambdas = self.add_weight(
            name="lambdas", shape=(n,), initializer=keras.initializers.Constant(1.0 / n),
            trainable=False,
        )
        self.step = self.add_weight(
            name="step", shape=(), initializer="zeros", dtype="int64", trainable=False
        )

    def _tracked_inputs(self, grads, losses, labelled):
        """`h_t` per task (`(T, P)`), and whether the step is undefined
        (`"l2_loss"` with a labelled non-positive loss)."""
        if self.normalization == "none":
            return grads, None
        # g / ‖g‖ from g divided by its largest entry: its norm is in
        # [1, sqrt(P)], so neither tiny nor huge gradients under- or overflow.
        largest = ops.max(ops.abs(grads), axis=1)
        nonzero = largest > 0
        scaled = grads / ops.where(nonzero, largest, 1.0)[:, None]
        norms = ops.sqrt(ops.sum(ops.square(scaled), axis=1))
        units = scaled / ops.where(nonzero, norms, 1.0)[:, None]
        if self.normalization == "l2":
            return units, None
        undefined = ops.any(ops.logical_and(
            ops.logical_and(labelled, nonzero), ops.less_equal(losses, 0.0)
        ))
        return units * losses[:, None], undefined

    def _lambda_step(self, tracked, lambdas, labelled, rate):
        """`(μ, λ)`: the step's weights (on the simplex of the labelled
        tasks) and the new stored `λ` (see the module docstring)."""
        # Y Yᵀ = s² G, G the Gram matrix of Y / s (s its largest entry),
        # which float32 holds for any Y.
        largest = ops.max(ops.abs(tracked))
        scale = ops.where(ops.logical_and(largest > 0, ops.isfinite(largest)), largest, 1.0)
        small = tracked / scale
        return simplex_step(
            ops.matmul(small, ops.transpose(small)), scale, lambdas, labelled, rate, self.rho)


    def combine(
        self, grads, losses, counts=None, training=True, cross_replica_sum=None, activations=None
    ):
        n = len(self.task_names)
        grads = ops.convert_to_tensor(grads)
        shape = tuple(grads.shape[1:])
        grads = ops.cast(ops.reshape(grads, (n, -1)), "float32")
        size = grads.shape[1]
        if size is not None and size != self.num_params:
            raise ValueError(
                f"MoCo was built for {self.num_params} shared parameters (its tracked "
                f"gradients), but received gradients of {size}. Compile a new MoCo with "
                "the model whose shared gradients it combines."
            )
        labelled = self.labelled(counts)
        loss_vector = self.stack(losses)
        step = ops.cast(self.step, "float32") + 1.0
        beta = self.beta / ops.power(step, self.beta_sigma)
        gamma = self.gamma / ops.power(step, self.gamma_sigma)

        inputs, undefined = self._tracked_inputs(grads, loss_vector, labelled)
        old_tracked = ops.convert_to_tensor(self.tracked_gradients)
        tracked = ops.where(
            labelled[:, None], old_tracked - beta * (old_tracked - inputs), old_tracked
        )
        old_lambdas = ops.convert_to_tensor(self.lambdas)
        weights, lambdas = self._lambda_step(tracked, old_lambdas, labelled, gamma)
        weights = ops.cast(weights, "float32")
        lambdas = ops.cast(lambdas, "float32")
        combined = ops.matmul(weights[None, :], tracked)[0]
        if undefined is not None:
            # A non-positive loss cannot be a length: the step is made
            # non-finite (training stops with `explain_nonfinite`'s hint)
            # rather than silently turning the task's gradient uphill.
            weights = ops.where(undefined, float("nan"), weights)
            combined = ops.where(undefined, float("nan"), combined)
        combined = ops.reshape(combined, shape)
        if training:
            # Only a finite step with a labelled task moves the state.
            commit = ops.logical_and(
                ops.any(labelled),
                ops.logical_and(
                    ops.all(ops.isfinite(tracked)),
                    ops.logical_and(ops.all(ops.isfinite(lambdas)), ops.all(ops.isfinite(weights))),
                ),
            )
            self.tracked_gradients.assign(ops.where(commit, tracked, old_tracked))
            self.lambdas.assign(ops.where(commit, lambdas, old_lambdas))
            self.step.assign(self.step + ops.cast(commit, "int64"))
            finite = ops.all(ops.isfinite(weights))
            self.task_weights.assign(
                ops.where(finite, weights, ops.convert_to_tensor(self.task_weights))
            )
        return combined, weights

    def explain_nonfinite(self, losses):
        if self.normalization != "l2_loss":
            return None
        below = {n: v for n, v in losses.items() if n in self.task_names and v <= 0}
        if not below:
            return None
        return (
            "MoCo(normalization='l2_loss') tracks each task's unit gradient times its "
            f"loss, which must be positive; the mean loss of {below} is not. Use "
            "normalization='l2' or 'none' for losses that can be 0 or negative."
        )

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "beta_sigma": self.beta_sigma,
            "gamma": self.gamma,
            "gamma_sigma": self.gamma_sigma,
            "rho": self.rho,
            "normalization": self.normalization,
        }
