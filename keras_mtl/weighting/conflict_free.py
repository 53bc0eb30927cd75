"""ConFIG: the conflict-free update, at equal angles to every task gradient.

Liu, Chu & Thuerey, "ConFIG: Towards Conflict-free Training of Physics
Informed Neural Networks", ICLR 2025 (arXiv:2408.11104), Eq. 2; as
implemented by its authors in the `conflictfree` package
(github.com/tum-pbs/ConFIG, `conflictfree/grad_operator.py`: `ConFIG_update`,
`ConFIGOperator`; `conflictfree/length_model.py`: the length models) and in
torchjd (`torchjd.aggregation.ConFIG`, `src/torchjd/aggregation/_config.py`).
LibMTL has no ConFIG. (This module is `conflict_free.py`, after the authors'
package, not `config.py`: "config" means `get_config` everywhere else.)

With the unit task gradients `u_i = g_i / ‖g_i‖` (rows of `U`), the update is

    g_u = unit(pinv(U) 1),          g_c = (Σ_i g_iᵀ g_u) g_u,

a direction with the same inner product `u_iᵀ g_u > 0` with every task
gradient when the gradients are linearly independent (so no task's loss
grows to first order: "conflict-free"), and a length that is the sum of the
gradients' projections on it (`ProjectionLength`, the default).

It is a combination `Σ_i w_i g_i` fixed by the Gram matrix: with `D` the
diagonal of norms and `C = D⁻¹ G D⁻¹` the cosine matrix (`C = U Uᵀ`),
`pinv(U) = Uᵀ C⁺`, so `pinv(U) 1 = Σ_i a_i u_i` with `a = C⁺ 1`, and

    w = D⁻¹ a · (Σ_j ℓ_j (C a)_j) / (aᵀ C a),

where `(C a)_i = u_iᵀ pinv(U) 1` and `ℓ_j = ‖g_j‖` (`"projection"`; the
`"track_*"` length models put one norm, the smallest, largest or a mean of
the `‖g_j‖`, in place of every `ℓ_j`). The weights do not change when every
gradient is multiplied by the same number, so they are computed from the Gram
matrix of the gradients divided by their largest entry (gradients of any
float32 size give the same weights).

The pseudo-inverse. `C⁺` is taken on the eigenvalues of `C` (the squared
singular values of `U`) above `rcond² · λ_max`, i.e. singular values of `U`
above `rcond` times the largest, as `torch.linalg.pinv`'s `rtol` and
`lstsq`'s `rcond` do. Linearly dependent gradients then give the official
code's least-squares answer: the direction whose inner products with the
`u_i` are closest to equal (three directions in a plane: their bisector;
two opposite gradients and a third: the third's part orthogonal to them;
`g` and `-g` alone: no direction, a zero update). Such an update need not
be conflict-free; with independent gradients (every singular value above
the cut-off) it always is. Weights can be negative (for a gradient close to
the plane of two others), the update still conflicting with none.

Where we differ: the default cut-off. The official `ConFIG_update` uses
`torch.linalg.lstsq` (`use_least_square=True`), whose default `rcond` on CPU
(driver `gelsy`) is float32's epsilon times `max(T, P)`, `P` the number of
parameters (torchjd's `pinv` has the same default `rtol`): a cut-off that
grows with the model, 0.012 at `P = 1e5`, above 1 from `P ≈ 8.4e6` (then
every singular value but at most the largest counts as 0); on CUDA (driver
`gels`) there is none, and dependent gradients have no defined answer.
Here `rcond = 1e-3` whatever `P` is: the Gram matrix of float32 gradients
holds `C` to about 1e-7 .. 1e-6, so eigenvalues of `C` below ~1e-6 `λ_max`
(singular values of `U` below ~1e-3 of the largest) are round-off.

Other choices of the official code, kept: two tasks use the same formula
(the authors' `ConFIGOperator` uses `ConFIG_update_double` for two by
default: the same direction written with orthogonal components, which
divides 0 by 0 for opposite gradients, where this gives 0); a zero
gradient's unit vector is 0 (`nan_to_num`), so it takes no part (weight 0),
as does a task without labels in the batch (`labelled` False) or with a
non-finite gradient. Here "zero" is a squared norm below float32's smallest
normal number (`1.2e-38`) in the scaled Gram matrix: ~1e19 times smaller
than the largest gradient. The weight model (the vector 1 on the right-hand
side) is not a parameter: the official code's only one is `EqualWeight`
(torchjd's `pref_vector` generalises it), so preferences are left out.

Left out: M-ConFIG (`conflictfree.momentum_operator.PseudoMomentumOperator`),
which back-propagates one task per step, keeps an Adam-style first moment
per task (`T · P` state) and a second moment per parameter, and divides the
ConFIG update element-wise by the root of the second moment. That is an
optimiser, not a weighting: its update is not a combination of the step's
task gradients (the element-wise division), it needs one task's gradient
per step rather than all of them, and the authors advise plain SGD with it.

Modes:

| mode             | supported | why                                              |
| ---------------- | --------- | ------------------------------------------------ |
| "params"         | yes       | the paper's setting: gradients of the shared     |
|                  | (default) | parameters.                                      |
| "representation" | yes       | the same update of the gradients at `z` (cheap;  |
|                  |           | conflict-free for the representation).           |
"""

import keras
from keras import ops

from keras_mtl._validation import check_choice
from keras_mtl.weighting.base import check_number
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Choice

#: The official length models (`conflictfree.length_model`), by the norm
#: each gradient's projection is multiplied by: its own (`ProjectionLength`),
#: or one for all (`TrackMinimum`, `TrackMaximum`, `TrackArithmeticAverage`,
#: `TrackHarmonicAverage`, `TrackGeometricAverage`). `TrackSpecific` (a
#: task's own norm for all) is not offered.
LENGTH_MODELS = (
    "projection",
    "track_minimum",
    "track_maximum",
    "track_arithmetic_average",
    "track_harmonic_average",
    "track_geometric_average",
)

#: float32's smallest normal number: a smaller squared norm is a zero gradient.
_TINY = 1.1754944e-38


def _tracked_norm(norms, mask, length_model):
    """The one norm a `"track_*"` length model uses, over the active tasks
    (`mask` 1); 0 when no task is active."""
    count = ops.sum(mask)
    active = mask > 0
    if length_model == "track_minimum":
        tracked = ops.min(ops.where(active, norms, float("inf")))
    elif length_model == "track_maximum":
        tracked = ops.max(norms * mask)
    elif length_model == "track_arithmetic_average":
        tracked = ops.divide_no_nan(ops.sum(norms * mask), count)
    elif length_model == "track_harmonic_average":
        inverse = ops.where(active, 1.0 / ops.where(active, norms, 1.0), 0.0)
        tracked = ops.divide_no_nan(count, ops.sum(inverse))
    else:  # track_geometric_average
        logs = ops.where(active, ops.log(ops.where(active, norms, 1.0)), 0.0)
        tracked = ops.exp(ops.divide_no_nan(ops.sum(logs), count))
    return ops.where(count > 0, tracked, 0.0)


def conflict_free_weights(gram, active, rcond=1e-3, length_model="projection"):
    """ConFIG's weights `w` (`g_c = Σ_i w_i g_i`) from the Gram matrix of the
    task gradients, for the `active` tasks (0 for the others); see the module
    docstring."""
    gram = ops.convert_to_tensor(gram, "float32")
    mask = ops.cast(active, "float32")
    both = mask[:, None] * mask[None, :] > 0
    gram = ops.where(both, gram, 0.0)
    # Divided by the largest squared norm: the solve's cut-off is relative,
    # and the largest norm is 1.
    gram = ops.divide_no_nan(gram, ops.max(ops.diagonal(gram)))
    norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))
    inverse_norms = ops.where(mask > 0, 1.0 / ops.where(mask > 0, norms, 1.0), 0.0)
    cosines = gram * inverse_norms[:, None] * inverse_norms[None, :]
    values, vectors = ops.eigh(cosines)
    kept = ops.greater(values, rcond**2 * ops.max(values))  # none if no task is active
    inverse_values = ops.where(kept, 1.0 / ops.where(kept, values, 1.0), 0.0)
    ones = ops.matmul(ops.transpose(vectors), mask)  # v_kᵀ 1 over the active tasks
    a = ops.matmul(vectors, inverse_values * ones)  # C⁺ 1
    inner = ops.matmul(vectors, ops.cast(kept, "float32") * ones)  # C C⁺ 1: u_iᵀ pinv(U) 1
    squared = ops.sum(inverse_values * ones * ones)  # aᵀ C a = ‖pinv(U) 1‖²
    if length_model == "projection":
        length = ops.sum(norms * inner)
    else:
        length = _tracked_norm(norms, mask, length_model) * ops.sum(inner * mask)
    return a * inverse_norms * ops.divide_no_nan(length, squared) * mask


@register
class ConFIG(GradientWeighting):
    """ConFIG (Liu, Chu & Thuerey, ICLR 2025): the update at equal angles to
    every task gradient, as long as the sum of their projections on it.

    Supported modes: `"params"` (default) and `"representation"`. See the
    module docstring for the pseudo-inverse, the degenerate cases and where
    this differs from the official code.

    Args:
        mode: `"params"` or `"representation"`.
        length_model: How long the update is, one of `LENGTH_MODELS`:
            `"projection"` (the paper's and the official default: the sum of
            the task gradients' projections on the direction), or
            `"track_minimum"`, `"track_maximum"`,
            `"track_arithmetic_average"`, `"track_harmonic_average"`,
            `"track_geometric_average"` (the sum of the unit gradients'
            projections, times that statistic of the gradients' norms; the
            official `Track*` length models).
        rcond: In (0, 1): singular values of the matrix of unit gradients
            below `rcond` times the largest count as 0 in its pseudo-inverse.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = ConFIG()
    >>> weighting.build({"a": (), "b": ()})
    >>> grads = keras.ops.convert_to_tensor([[1.0, 0.0], [-1.0, 1.0]])  # 135°
    >>> combined, weights = weighting.combine(grads, {"a": 1.0, "b": 1.0})
    >>> [round(float(x), 3) for x in keras.ops.convert_to_numpy(weights)]
    [1.207, 0.854]
    >>> [round(float(x), 3) for x in keras.ops.convert_to_numpy(combined)]  # at 67.5° to both
    [0.354, 0.854]
    """

    registry_name = "config"
    aliases = ("conflict_free",)
    paper = "Liu, Chu & Thuerey, ICLR 2025"
    scale_free_weights = True
    search_space = {"length_model": Choice(LENGTH_MODELS)}

    supported_modes = ("params", "representation")

    def __init__(self, mode="params", length_model="projection", rcond=1e-3, **kwargs):
        super().__init__(mode=mode, **kwargs)
        self.length_model = check_choice("length_model", length_model, LENGTH_MODELS)
        rcond = check_number("rcond", rcond, minimum=0, exclusive=True)
        if rcond >= 1:  # every direction dropped: a zero update, silently
            raise ValueError(
                "Invalid value received for argument `rcond`. Expected a float in "
                f"(0, 1). Received: rcond={rcond!r}"
            )
        self.rcond = rcond

    def gram_weights(self, gram, losses, labelled, training):
        gram = ops.convert_to_tensor(gram, "float32")
        diagonal = ops.diagonal(gram)
        active = ops.logical_and(labelled, ops.isfinite(diagonal))
        active = ops.logical_and(active, ops.greater_equal(diagonal, _TINY))
        return conflict_free_weights(gram, active, self.rcond, self.length_model)

    def get_config(self):
        return {**super().get_config(), "length_model": self.length_model, "rcond": self.rcond}
