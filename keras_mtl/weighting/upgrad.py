"""UPGrad: the mean of the task gradients projected onto their dual cone.

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv
preprint 2024 (arXiv:2406.16232); the aggregator `A_UPGrad`, as implemented
by its authors in torchjd (`UPGrad`, default preferences: the mean).

With `J` the matrix of task gradients (rows `g_i`), each row is projected
onto the dual cone `{y : J y >= 0}` (the directions that increase no task
loss to first order), and the projections are averaged:

    A_UPGrad(J) = 1/T sum_i pi_J(g_i),   pi_J(x) = argmin_{y : J y >= 0} ||y - x||²

By duality (the paper's Proposition 1), `pi_J(Jᵀu) = Jᵀ v` with
`v = argmin_{v >= u} vᵀ (J Jᵀ) v`, so the update is `sum_k w_k g_k` with

    w = 1/T sum_i v^(i),   v^(i) = argmin_{v >= e_i} vᵀ Q v,

where `Q` is the Gram matrix divided by its trace (which leaves each `v^(i)`
unchanged) plus `regularization * I` (torchjd's `reg_eps`, 1e-4; it makes
`Q` positive definite when gradients are linearly dependent, and moves the
weights by about that much relative). Every combination has a non-negative
inner product with every task gradient (up to the regularisation), and a
task gradient that conflicts with no other passes unchanged.

Solver (in-graph): the `T` quadratic programs `min ½ xᵀQx + (Q e_i)ᵀx`,
`x = v - e_i >= 0`, are solved together by the Lawson-Hanson active-set
method (the NNLS algorithm, with one linear solve on the free set per
iteration), for at most `max_iterations` iterations (default `3 T`), stopping once an
iteration changes nothing. It terminates in finitely many steps, typically
fewer than `2 T`; every iterate is
feasible, so a truncated run still gives a valid (non-negative) weighting.

Degenerate gradients. A task without labels in the batch or with a zero
gradient (`||g||² < 1.2e-38`, float32's smallest normal number, in the Gram
matrix the method gets: that of the gradients divided by their largest
entry, so gradients of any float32 size give the same weights and "zero"
means ~1e19 times smaller than the largest), or with an infinite Gram entry
(a non-finite gradient), is left out: weight 0, and the mean runs over the
`T'` others. Identical gradients: `v^(i) = e_i` (a conflict-free problem),
so the update is their mean. No task active: all weights 0.

Modes:

| mode             | supported | why                                             |
| ---------------- | --------- | ----------------------------------------------- |
| "params"         | yes       | the paper's setting: the Jacobian of the shared |
|                  | (default) | parameters.                                     |
| "representation" | yes       | the same aggregation of the Jacobian at `z`     |
|                  |           | (cheap; as MGDA-UB does for MGDA).              |
"""

import keras
from keras import ops

from keras_mtl.weighting._gram import compiled
from keras_mtl.weighting.base import check_int
from keras_mtl.weighting.base import check_number
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.registry import register

#: float32's smallest normal number (see the module docstring).
_TINY = 1.1754944e-38


def dual_cone_weights(gram, active, regularization, iterations):
    """`(T, T)`: row `i` is `v^(i) = argmin_{v >= e_i / T'} vᵀQv` for each
    active task `i` (0 for the others); see the module docstring."""
    mask = ops.cast(active, "float32")
    lower = ops.diag(ops.divide_no_nan(mask, ops.sum(mask)))  # e_i / T', active rows
    return project_weights(gram, active, lower, regularization, iterations) * mask[:, None]


@compiled
def project_weights(gram, active, lower, regularization, iterations):
    """`(K, T)`: row `k` is `argmin_{v >= lower[k]} vᵀQv`, the weights of the
    projection of `Jᵀ lower[k]` onto the dual cone (torchjd's
    `project_weights`); `Q` is the active tasks' Gram matrix divided by its
    trace, plus `regularization * I`. `lower` (`(K, T)`, >= 0) must be 0 in
    the columns of inactive tasks, whose weights are then 0. UPGrad solves
    one problem per task, DualProj one for the mean."""
    gram = ops.convert_to_tensor(gram, "float32")
    lower = ops.convert_to_tensor(lower, "float32")
    n = gram.shape[0]
    mask = ops.cast(active, "float32")
    eye = ops.eye(n, dtype="float32")
    masked = ops.where(mask[:, None] * mask[None, :] > 0, gram, 0.0)
    q = ops.divide_no_nan(masked, ops.sum(ops.diagonal(masked))) + regularization * eye
    c = ops.matmul(lower, q)  # the linear terms, one problem per row
    tolerance = 1e-6 * ops.max(ops.abs(c))

    def iteration(x, free, _):
        # The free-set solution z: Q_FF z_F = -c_F, z = 0 off F.
        pinned = eye[None] * (1.0 - free)[:, None, :]
        system = q[None] * (free[:, :, None] * free[:, None, :]) + pinned
        z = ops.solve(system, -(c * free)[:, :, None])[:, :, 0] * free
        blocking = ops.logical_and(free > 0, z <= 0)
        inside = ops.logical_not(ops.any(blocking, axis=1))
        # z infeasible: walk from x towards z up to the first bound, and
        # release the variables that reach it.
        ratio = ops.where(blocking, x / ops.where(blocking, x - z, 1.0), 1e30)
        step = ops.clip(ops.min(ratio, axis=1), 0.0, 1.0)
        reached = ops.logical_and(blocking, ratio <= step[:, None])
        walked = ops.where(reached, 0.0, x + step[:, None] * (z - x))
        x_new = ops.maximum(ops.where(inside[:, None], z, walked), 0.0)
        # z feasible: free the variable whose gradient is most negative.
        gradient = ops.where(free > 0, 1e30, ops.matmul(x_new, q) + c)
        add = ops.logical_and(inside, ops.min(gradient, axis=1) < -tolerance)
        added = ops.one_hot(ops.argmin(gradient, axis=1), n) * ops.cast(add, "float32")[:, None]
        free_new = ops.where(
            inside[:, None], ops.maximum(free, added), ops.where(reached, 0.0, free)
        )
        # Solved: an iteration that changes nothing would change nothing again.
        moved = ops.logical_or(ops.any(x_new != x), ops.any(free_new != free))
        return x_new, free_new, moved

    start = ops.zeros_like(lower)
    x, _, _ = ops.while_loop(
        lambda x, free, moved: moved,
        iteration,
        (start, start, ops.convert_to_tensor(True)),
        maximum_iterations=iterations,
    )
    return (lower + x) * mask[None, :]


@register
class UPGrad(GradientWeighting):
    """UPGrad (Quinton & Rey 2024): the mean of the task gradients, each
    projected onto the dual cone of all of them.

    Supported modes: `"params"` (default) and `"representation"`. See the
    module docstring for the solver and the degenerate cases.

    Args:
        mode: `"params"` or `"representation"`.
        regularization: > 0, added to the trace-normalised Gram matrix's
            diagonal (torchjd's `reg_eps`).
        max_iterations: Active-set iterations (an integer >= 1); `None`
            for `3 T`.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = UPGrad()
    >>> weighting.build({"a": (), "b": ()})
    >>> grads = keras.ops.convert_to_tensor([[1.0, 0.0], [-1.0, 1.0]])  # 135°
    >>> combined, weights = weighting.combine(grads, {"a": 1.0, "b": 1.0})
    >>> [round(float(x), 3) for x in keras.ops.convert_to_numpy(weights)]
    [1.0, 0.75]
    >>> [round(float(x), 3) for x in keras.ops.convert_to_numpy(combined)]  # conflicts with neither
    [0.25, 0.75]
    """

    registry_name = "upgrad"
    paper = "Quinton & Rey, 2024 (torchjd)"
    scale_free_weights = True

    def __init__(self, mode="params", regularization=1e-4, max_iterations=None, **kwargs):
        super().__init__(mode=mode, **kwargs)
        self.regularization = check_number(
            "regularization", regularization, minimum=0, exclusive=True
        )
        self.max_iterations = check_int("max_iterations", max_iterations, 1, optional=True)

    def gram_weights(self, gram, losses, labelled, training):
        gram = ops.convert_to_tensor(gram, "float32")
        diagonal = ops.diagonal(gram)
        active = ops.logical_and(labelled, ops.isfinite(diagonal))
        active = ops.logical_and(active, ops.greater_equal(diagonal, _TINY))
        iterations = self.max_iterations or 3 * len(self.task_names)
        return self.project(gram, active, iterations)

    def project(self, gram, active, iterations):
        """The weights, from the Gram matrix and the active tasks: each
        task's gradient projected onto the dual cone, summed (`DualProj`
        projects the mean instead)."""
        rows = dual_cone_weights(gram, active, self.regularization, iterations)
        return ops.sum(rows, axis=0)

    def get_config(self):
        return {
            **super().get_config(),
            "regularization": self.regularization,
            "max_iterations": self.max_iterations,
        }
