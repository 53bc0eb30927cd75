"""Aligned-MTL: align the task gradients into an orthogonal, equal-norm system.

Senushkin, Patakin, Kuznetsov & Konushin, "Independent Component Alignment
for Multi-Task Learning", CVPR 2023. The matrix of task gradients `G` (rows
`g_i`) is replaced by the closest (Procrustes) matrix with orthogonal rows of
equal norm. From the eigendecomposition of the Gram
matrix `G Gᵀ = V Λ Vᵀ`:

    B = σ V Λ^{-1/2} Vᵀ,   Ĝ = B G  (aligned gradients ĝ_i = Σ_k B_ik g_k),

so that `Ĝ Ĝᵀ = σ² V Vᵀ` (`σ² I` when `G` has full rank): the aligned
gradients are orthogonal and all of norm `σ`, and the update `d = Σ_i ĝ_i` has the same component `σ` along
each of them. So the task weights are `w = B·1` (`d = Σ_k w_k g_k`); like the
official code (SamsungLabs/MTL) and LibMTL, they are not divided by `T`.
The scale `σ` is `sqrt(λ_min)` (`scale="min"`, the paper's choice), the
square root of the (lower) median eigenvalue (`"median"`) or of their mean
(`"rmse"`), the official code's three modes.

Rank-deficient Gram matrices (dependent, parallel, identical gradients) are
handled as in the official code: eigenvalues at or below `tolerance` times the
largest are dropped, with their eigenvectors, and `σ` is taken among the
others. (The official tolerance is `T · eps · λ_max`; float32 eigenvalues of
a rank-deficient matrix are not that accurate, hence the `1e-5` default.)
Identical gradients give rank 1 and `w = 1` for each task: the update is
their sum, `T` times their mean, as with equal weighting. A gradient much
smaller than the others (its eigenvalue below the tolerance) gets almost no
weight, rather than shrinking `σ` and so the whole update.

Tasks without labels in the batch and tasks whose gradient is exactly 0 get
weight 0 (their row of the Gram matrix is zeroed, so they only add zero
eigenvalues). LibMTL's version calls the removed `torch.symeig`; this one
uses `keras.ops.eigh`. The weights do not depend on the gradients' common
scale: the Gram matrix is that of the gradients divided by their largest
entry, scaled to a largest diagonal of 1, so gradients of any float32 size
give finite weights, the same as at size 1 (see `_gram`).
"""

import numbers

import keras
from keras import ops

from keras_mtl.weighting._gram import active_tasks
from keras_mtl.weighting._gram import normalized_gram
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Choice

SCALES = ("min", "median", "rmse")


def alignment_matrix(gram, scale="min", tolerance=1e-5):
    """`B = σ V Λ^{-1/2} Vᵀ` over the eigenvalues above `tolerance · λ_max`."""
    num_tasks = gram.shape[0]
    # TensorFlow's eigh raises on a non-finite matrix; a non-finite gradient
    # makes the step non-finite anyway (the model stops training on it), so
    # its Gram matrix is zeroed here rather than crash inside the solver.
    finite = ops.all(ops.isfinite(gram))
    values, vectors = ops.eigh(ops.where(finite, gram, ops.zeros_like(gram)))  # ascending
    largest = ops.max(values)
    kept = ops.logical_and(
        ops.greater(values, tolerance * largest), ops.greater(largest, 0.0)
    )
    safe = ops.where(kept, values, 1.0)
    inverse_roots = ops.where(kept, 1.0 / ops.sqrt(safe), 0.0)
    rank = ops.sum(ops.cast(kept, "int32"))
    if scale == "min":
        squared = ops.min(ops.where(kept, values, float("inf")))
    elif scale == "median":
        # Kept eigenvalues are the `rank` largest: ascending positions
        # T - rank ... T - 1; the lower median is the ((rank - 1) // 2)-th.
        position = ops.maximum(num_tasks - rank + (rank - 1) // 2, 0)
        squared = ops.take(values, ops.minimum(position, num_tasks - 1))
    else:  # "rmse"
        squared = ops.divide_no_nan(
            ops.sum(ops.where(kept, values, 0.0)), ops.cast(rank, values.dtype)
        )
    sigma = ops.where(ops.greater(rank, 0), ops.sqrt(ops.maximum(squared, 0.0)), 0.0)
    return sigma * ops.matmul(vectors * inverse_roots[None, :], ops.transpose(vectors))


@register
class AlignedMTL(GradientWeighting):
    """Aligned-MTL: the update of the aligned (orthogonal, equal-norm) gradients.

    | mode             | supported | why                                          |
    | ---------------- | --------- | -------------------------------------------- |
    | "params"         | yes       | Aligned-MTL proper, on the shared variables  |
    | "representation" | yes       | Aligned-MTL-UB, the paper's fast variant at  |
    |                  |           | the shared representation `z`                |

    Args:
        mode: `"params"` or `"representation"` (Aligned-MTL-UB).
        scale: The aligned gradients' norm: `"min"` (square root of the
            smallest kept eigenvalue), `"median"` or `"rmse"`.
        tolerance: Eigenvalues at or below `tolerance` times the largest are
            treated as 0 (a float in [0, 1)).
        **kwargs: Base layer arguments.

    Example:

    >>> import numpy as np
    >>> weighting = AlignedMTL()
    >>> weighting.build({"a": (), "b": ()})
    >>> grads = np.array([[2.0, 0.0], [0.0, 1.0]], "float32")  # orthogonal
    >>> combined, weights = weighting.combine(grads, {"a": 1.0, "b": 1.0})
    >>> [round(float(w), 3) for w in weights]  # both aligned to norm 1
    [0.5, 1.0]
    >>> [round(float(x), 3) for x in combined]
    [1.0, 1.0]
    """

    registry_name = "aligned_mtl"
    aliases = ("amtl",)
    paper = "Senushkin et al., CVPR 2023"
    scale_free_weights = True
    search_space = {"scale": Choice(SCALES)}

    supported_modes = ("params", "representation")

    def __init__(self, mode="params", scale="min", tolerance=1e-5, **kwargs):
        super().__init__(mode=mode, **kwargs)
        if scale not in SCALES:
            raise ValueError(
                "Invalid value received for argument `scale`. Expected one of "
                f"{SCALES}. Received: scale={scale!r}"
            )
        self.scale = scale
        if not (
            isinstance(tolerance, numbers.Real)
            and not isinstance(tolerance, bool)
            and 0 <= tolerance < 1
        ):
            raise ValueError(
                "Invalid value received for argument `tolerance`. Expected a "
                f"float >= 0 and < 1. Received: tolerance={tolerance!r}"
            )
        self.tolerance = float(tolerance)

    def gram_weights(self, gram, losses, labelled, training):
        active = active_tasks(gram, labelled)
        matrix = alignment_matrix(normalized_gram(gram, active), self.scale, self.tolerance)
        return ops.sum(matrix, axis=1) * ops.cast(active, gram.dtype)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "tolerance": self.tolerance}
