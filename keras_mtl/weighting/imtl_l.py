"""IMTL-L: learned loss scales that keep every scaled task loss at 1.

The loss-balance half of Impartial Multi-Task Learning: Liu, Li, Kuang, Xue,
Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task Learning", ICLR 2021
(openreview.net/forum?id=IMPnRXEWpvr). The authors' code is not public; the
reference implementation is LibMTL's (github.com/median-research-group/LibMTL,
`LibMTL/weighting/IMTL.py`, commit 4336804: `init_param`, line 20, and the
first line of `backward`, line 23), where IMTL-L comes combined with IMTL-G.

Each task has a learned scale `s_t` (a trainable variable, trained with the
network by the model's optimiser in the same backward pass, as LibMTL's
`loss_scale` parameter is) and the total is

    L = sum_t (e^{s_t} L_t - s_t)

The network's parameters get `e^{s_t} dL_t`; the scale gets

    dL / ds_t = e^{s_t} L_t - 1,

which vanishes at `s_t = -log L_t`: gradient descent drives every scaled
loss `e^{s_t} L_t` towards 1, whatever the scale of `L_t` (the paper's
"impartial" loss balance, with no assumption on the loss's distribution,
unlike `Uncertainty`). Multiplying a loss by `c` shifts its optimal `s_t` by
`-log c` and leaves the scaled loss and the network's gradient at the
optimum unchanged: there the gradient is `dL_t / L_t = d log L_t`, that of
`ScaleInvariant` (as DB-MTL, Lin et al. 2023, notes). Away from it `s_t`
follows `-log L_t` at the pace of the optimiser, a smoothed version of it.

The reported weight of a task (`weight_<task>`) is its loss coefficient
`e^{s_t}`, state like `Uncertainty`'s: a task unlabelled in a step reports it
too.

Defaults, as LibMTL: `s_t = 0` at the start (`initial_scale=0`; LibMTL's
`torch.tensor([0.0]*self.task_num)`), so the first steps are those of
`Equal`; no hyperparameter to tune.

Unlabelled tasks. A task with no label in a batch (its labelled count is 0)
is left out of that step: neither `e^{s_t} L_t` nor `-s_t` is added, so
`s_t` gets no gradient and does not drift while the task is unlabelled.

Lower bounds (our extension, as `ScaleInvariant`, `GeometricLoss`, FAMO and
STCH have). The optimum `s_t = -log L_t` exists only for `L_t > 0`: for a
loss at or below 0, `e^{s_t} L_t - s_t` decreases without end as `s_t`
grows, and the scale would grow until it overflows (LibMTL lets it). A loss
that can be negative or reach 0 (a cosine similarity, a closeness loss) is
given a lower bound `m_t` (`min_losses`, default 0) and `L_t - m_t` takes its
place; a labelled loss at or below its bound makes the step non-finite,
which stops training with an error naming the task and the argument.

IMTL-L with IMTL-G (the paper's full IMTL, "hybrid balance"). Not supported
yet: `compile` takes one weighting, and a gradient-level method (`IMTL`, which
is IMTL-G) combines the gradients of the raw task losses and trains no
variable by back-propagation. Use `IMTL()` for IMTL-G alone and `IMTLL()` for
IMTL-L alone. (With linearly independent task gradients the hybrid's shared
update has IMTL-G's direction, since scaling a gradient leaves its unit
direction unchanged; what differs is the step's length, the heads'
gradients `e^{s_t} dL_t` and the training of `s`.)
"""

import keras
from keras import ops

from keras_mtl.weighting.base import LowerBoundedWeighting
from keras_mtl.weighting.base import check_number
from keras_mtl.weighting.registry import register


@register
class IMTLL(LowerBoundedWeighting):
    """Impartial loss balance (IMTL-L, Liu et al. 2021): learned scales `s_t`,
    total `sum_t (e^{s_t} L_t - s_t)`, which drive each `e^{s_t} L_t` to 1.

    Args:
        initial_scale: Initial value of every `s_t` (default 0, as LibMTL:
            the first steps are the plain sum).
        min_losses: Optional dict `{task: lower bound of its loss}` (0 for
            tasks left out); needed for losses that can be 0 or negative.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> import math
    >>> weighting = IMTLL(initial_scale=math.log(0.5))  # s_t = log 0.5
    >>> weighting.build({"a": (), "b": ()})
    >>> total, weights = weighting({"a": 2.0, "b": 4.0})
    >>> round(float(total), 4)  # (0.5 * 2 - log 0.5) + (0.5 * 4 - log 0.5)
    4.3863
    >>> {k: round(float(v), 4) for k, v in weights.items()}  # e^{s_t}
    {'a': 0.5, 'b': 0.5}
    """

    registry_name = "imtl_l"
    paper = "Liu et al., ICLR 2021 (IMTL-L)"

    def __init__(self, initial_scale=0.0, min_losses=None, **kwargs):
        super().__init__(min_losses=min_losses, **kwargs)
        self.initial_scale = check_number("initial_scale", initial_scale)

    def build(self, losses_shape):
        super().build(losses_shape)
        self.loss_scales = self.add_weight(
            name="loss_scales",
            shape=(len(self.task_names),),
            initializer=keras.initializers.Constant(self.initial_scale),
            trainable=True,
        )

    def call(self, losses, counts=None, training=False):
        vector = self.stack(losses) - self._bounds
        present = self.labelled(counts)
        s = ops.convert_to_tensor(self.loss_scales)
        weights = ops.exp(s)
        terms = ops.where(present, weights * vector - s, 0.0)
        # `s` has no optimum for a loss at or below its bound (see the module
        # docstring): the step is marked non-finite, which stops `fit` with
        # `explain_nonfinite`'s hint, rather than `s` growing without end.
        outside = ops.any(ops.logical_and(present, ops.logical_not(ops.greater(vector, 0.0))))
        total = ops.where(outside, float("nan"), ops.sum(terms))
        return total, self.unstack(weights)

    def explain_nonfinite(self, losses):
        bounds = self.min_losses or {}
        below = {
            n: v for n, v in losses.items() if n in self.task_names and v <= bounds.get(n, 0.0)
        }
        if not below:
            return None
        return (
            "IMTLL needs each task's loss above its lower bound `min_losses` (default 0): "
            "the scale's optimum e^s = 1 / (L - m) exists only there, and below it the "
            f"scale grows without end. The mean loss of {below} is not above its bound "
            f"{({n: bounds.get(n, 0.0) for n in below})}. Pass "
            "IMTLL(min_losses={task: a lower bound of its loss})."
        )

    def get_config(self):
        return {**super().get_config(), "initial_scale": self.initial_scale}
