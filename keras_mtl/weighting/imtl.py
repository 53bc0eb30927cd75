"""IMTL-G: the update with equal projections on every task's gradient direction.

Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task
Learning", ICLR 2021. IMTL-G (the gradient half of IMTL; the loss half,
IMTL-L, which learns loss scales, is `IMTLL`; the two cannot be combined in
one `compile` yet) looks for weights
`α` with `Σ_i α_i = 1` such that the update `g = Σ_i α_i g_i` has the same
projection on every unit task gradient `u_i = g_i / ‖g_i‖`:

    g·u_1 = g·u_i  for all i.

The paper's closed form, with `D = [g_1 - g_i]` and `U = [u_1 - u_i]`
(`i ≥ 2`), is `α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹` and `α_1 = 1 - Σ_{i≥2} α_i`.

Here the same linear conditions are solved from the Gram matrix, written
around the uniform weights `ᾱ = 1/T`: with `K_ik = u_i·g_k = G_ik / ‖g_i‖`
and `Q` the centring matrix (`Qv = v - mean(v)`, which maps the vector of
projections `Kα` to its deviations from their mean and keeps `Σα` fixed),

    α = ᾱ - (Q K Q)⁺ Q K ᾱ,

with `⁺` the pseudo-inverse (singular values below `1e-5` are dropped, the
gradients being scaled first so that the largest has norm 1). When the task
gradients are linearly independent this is the paper's unique solution. When
they are not (identical, parallel or otherwise dependent gradients, where
LibMTL's `torch.inverse` fails on a singular matrix), it is the solution
closest to the uniform weights (least squares if none is exact): identical
gradients, or gradients with the same direction, give `α = 1/T` (for
identical ones, the mean); a duplicated task shares its
weight with its copy. (Dependent gradients can also force `g = 0`, e.g. three
distinct directions in a plane: then the update is 0, finite.)

Tasks without labels in the batch, and tasks whose gradient is exactly 0
(whose direction `u_i` is undefined), are left out with weight 0. Weights can
be negative, as in the paper. A near-zero, non-zero gradient keeps its place
and can take most of the weight (equal projections on its direction require
it, so the update is then small); results stay finite since the Gram matrix
is that of the gradients divided by their largest entry, scaled to a largest
diagonal of 1: gradients of any float32 size give the same weights (see
`_gram`).
"""

import keras
from keras import ops

from keras_mtl.weighting._gram import active_tasks
from keras_mtl.weighting._gram import normalized_gram
from keras_mtl.weighting._gram import uniform_weights
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.registry import register

#: Singular values of `Q K Q` below this count as 0 (the largest gradient
#: has norm 1 by then).
RCOND = 1e-5


def impartial_weights(gram, active):
    """The IMTL-G weights from a (normalised) Gram matrix."""
    mask = ops.cast(active, gram.dtype)
    uniform = uniform_weights(active, gram.dtype)
    norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))
    projections = ops.divide_no_nan(gram, norms[:, None])  # K_ik = u_i · g_k
    centring = ops.diag(mask) - uniform[:, None] * mask[None, :]  # Q
    reduced = ops.matmul(ops.matmul(centring, projections), centring)
    residual = ops.matmul(centring, ops.matmul(projections, uniform))
    # Pseudo-inverse with an absolute cut-off: the Gram matrix is scaled so
    # that the largest gradient has norm 1, so singular values of `Q K Q`
    # below RCOND are round-off (identical gradients give only those).
    left, values, right_t = ops.svd(reduced)
    kept = ops.greater(values, RCOND)
    inverse = ops.where(kept, 1.0 / ops.where(kept, values, 1.0), 0.0)
    correction = ops.matmul(
        ops.transpose(right_t), inverse * ops.matmul(ops.transpose(left), residual)
    )
    return (uniform - correction) * mask


@register
class IMTL(GradientWeighting):
    """Impartial MTL (IMTL-G): equal projections on all task directions.

    | mode             | supported | why                                          |
    | ---------------- | --------- | -------------------------------------------- |
    | "params"         | yes       | IMTL-G proper, on the shared variables       |
    | "representation" | yes       | the paper's own choice: IMTL-G on the        |
    |                  |           | gradients at the shared features `z`         |

    Args:
        mode: `"params"` or `"representation"`.
        **kwargs: Base layer arguments.

    Example:

    >>> import numpy as np
    >>> weighting = IMTL()
    >>> weighting.build({"a": (), "b": ()})
    >>> grads = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
    >>> combined, weights = weighting.combine(grads, {"a": 1.0, "b": 1.0})
    >>> [round(float(w), 3) for w in weights]  # g = (2/3, 2/3): equal projections
    [0.667, 0.333]
    """

    registry_name = "imtl"
    aliases = ("imtl_g",)
    paper = "Liu et al., ICLR 2021 (IMTL-G)"
    scale_free_weights = True

    supported_modes = ("params", "representation")

    def gram_weights(self, gram, losses, labelled, training):
        active = active_tasks(gram, labelled)
        return impartial_weights(normalized_gram(gram, active), active)
