"""DualProj: the mean of the task gradients projected onto their dual cone.

The projection is that of Gradient Episodic Memory (Lopez-Paz & Ranzato,
"Gradient Episodic Memory for Continual Learning", NeurIPS 2017, Eq. 11 and
its dual, Eq. 13: there the current task's gradient is projected so that it
increases no stored task's loss). DualProj applies it to multi-task learning
as the aggregator `DualProj` of torchjd (Quinton & Rey, "Jacobian Descent for
Multi-Objective Optimization", arXiv:2406.16232, 2024; torchjd
`src/torchjd/aggregation/_dualproj.py`), whose defaults this mirrors:
the mean of the task gradients (torchjd's default `pref_vector`) is projected
onto the dual cone of the gradients `g_i` (rows of `J`):

    A_DualProj(J) = pi_J(1/T sum_i g_i),   pi_J(x) = argmin_{y : J y >= 0} ||y - x||²

so the update increases no task's loss to first order, and is the mean
itself when the mean already conflicts with no task (even if some tasks
conflict with each other, unlike PCGrad). UPGrad (`keras_mtl.weighting.upgrad`)
projects each gradient and averages the projections; DualProj averages first
and projects once.

By duality (Quinton & Rey's Proposition 1; GEM's Eq. 13),
`pi_J(Jᵀu) = Jᵀ v` with `v = argmin_{v >= u} vᵀ (J Jᵀ) v` and `u = 1/T`:
the update is `sum_k w_k g_k` with `w = v`, and `w_k >= 1/T` for every task.
As in torchjd, the Gram matrix is divided by its trace (which leaves `v`
unchanged) and `regularization * I` is added (torchjd's `reg_eps`, 1e-4: it
makes the problem strictly convex when the gradients are linearly dependent,
and moves the weights by about that much relative). The quadratic program is
UPGrad's with one lower bound instead of `T`, solved by the same in-graph
active-set (Lawson-Hanson NNLS) solver, `upgrad.project_weights`.

Where this differs from torchjd, and why:
- torchjd solves the program with `quadprog` in float64 on the CPU, outside
  the graph; here it is solved in the training step's graph (float32, TF and
  JAX), to the same optimum up to float32 rounding. A run cut short by
  `max_iterations` still gives feasible weights (`w >= 1/T`).
- torchjd's `norm_eps` (1e-4) replaces the Gram matrix by 0, hence the update
  by the plain mean, when the squared norm of all gradients together is below
  1e-4 in the loss's own units. Here the weights do not depend on the
  gradients' common scale (`scale_free_weights`: the Gram matrix is formed
  from the gradients divided by their largest entry), so small gradients are
  projected like large ones; only a gradient of (relative) size zero is left
  out, as below.
- `pref_vector` is fixed to the mean (torchjd's default), as for UPGrad.

Degenerate gradients, as for UPGrad. A task without labels in the batch, or
with a zero gradient (`||g||² < 1.2e-38`, float32's smallest normal number,
in the Gram matrix of the gradients divided by their largest entry: ~1e19
times smaller than the largest), or with an infinite Gram entry, is left out:
weight 0, and the mean runs over the `T'` others. Identical or otherwise
non-conflicting gradients: their mean (`w = 1/T'`). No task active: all
weights 0.

Modes:

| mode             | supported | why                                             |
| ---------------- | --------- | ----------------------------------------------- |
| "params"         | yes       | torchjd's setting: the Jacobian of the shared   |
|                  | (default) | parameters.                                     |
| "representation" | yes       | the same aggregation of the Jacobian at `z`     |
|                  |           | (cheap; as MGDA-UB does for MGDA).              |
"""

import keras
from keras import ops

from keras_mtl.weighting.registry import register
from keras_mtl.weighting.upgrad import UPGrad
from keras_mtl.weighting.upgrad import project_weights


@register
class DualProj(UPGrad):
    """DualProj (GEM's projection, torchjd's aggregator): the mean of the
    task gradients, projected onto the dual cone of all of them.

    The update has a non-negative inner product with every task gradient,
    and is the mean when the mean already has one. Supported modes:
    `"params"` (default) and `"representation"`. See the module docstring
    for the solver, the degenerate cases and the differences from torchjd.

    Args:
        mode: `"params"` or `"representation"`.
        regularization: > 0, added to the trace-normalised Gram matrix's
            diagonal (torchjd's `reg_eps`).
        max_iterations: Active-set iterations (an integer >= 1); `None`
            for `3 T`.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = DualProj()
    >>> weighting.build({"a": (), "b": ()})
    >>> grads = keras.ops.convert_to_tensor([[1.0, 0.0], [-2.0, 1.0]])  # the mean conflicts with a
    >>> combined, weights = weighting.combine(grads, {"a": 1.0, "b": 1.0})
    >>> [round(float(x), 3) for x in keras.ops.convert_to_numpy(weights)]
    [0.999, 0.5]
    >>> # (0, 0.5) up to `regularization`: it conflicts with neither task.
    >>> [round(float(x), 3) for x in keras.ops.convert_to_numpy(combined)]
    [-0.001, 0.5]
    """

    registry_name = "dualproj"
    paper = "Lopez-Paz & Ranzato, NeurIPS 2017 (GEM); torchjd"

    def project(self, gram, active, iterations):
        # One problem: the mean's weights u = 1/T' (over the active tasks) as lower bounds.
        mask = ops.cast(active, "float32")
        mean = ops.divide_no_nan(mask, ops.sum(mask))[None, :]
        return project_weights(gram, active, mean, self.regularization, iterations)[0]
