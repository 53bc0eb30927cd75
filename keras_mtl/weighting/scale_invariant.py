"""Scale-invariant linear scalarization (SI): the sum of the log losses.

The "SI" baseline of Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik &
Fetaya, "Multi-Task Learning as a Bargaining Game" (Nash-MTL), ICML 2022
(arXiv:2202.01017); official code: github.com/AvivNavon/nash-mtl,
`methods/weight_methods.py`, `ScaleInvariantLinearScalarization`
(`--method=scaleinvls`):

    L = sum_t log L_t

Minimising it is minimising the product of the losses (and their geometric
mean, `GeometricLoss`), but the gradient of the sum of logs is invariant to the
scale of each loss: multiplying `L_t` by `c` adds the constant `log c` to `L`
and leaves its gradient unchanged.

The reported weight of a task is the derivative of the total with respect to
its loss, the coefficient the task's gradient gets in the update:

    dL / dL_t = 1 / L_t

so a task with a small loss gets a large weight.

Lower bounds. The logarithm needs `L_t > 0`. A loss that can be negative (a
cosine similarity, a log-likelihood) is given a lower bound `m_t`
(`min_losses`, default 0; as FAMO's authors do for its logarithms) and
`L_t - m_t` takes its place; a loss at or below its bound makes the step
non-finite, which stops training with an error naming the task. (Our
extension: the paper's losses are all positive.) The total has no minimum at
a bound the loss can reach: as `L_t` nears `m_t`, `log(L_t - m_t)` falls and
the weight `1 / (L_t - m_t)` grows without limit, and a step can overshoot.
Give a loss that can reach its bound (a closeness loss at a perfect fit; a
positive loss that can reach 0, with the default bound 0) a bound below its
minimum by a margin: `m_t = -1.25` for a loss never below -1 keeps its weight
at most 4.

Unlabelled tasks. A task with no label in a batch (its labelled count is 0)
has loss 0 by convention, whose logarithm is -inf. The sum is therefore taken
over the tasks labelled in the step; the other tasks get weight 0, and a step
where no task is labelled has loss 0.
"""

from keras import ops

from keras_mtl.weighting.base import LowerBoundedWeighting
from keras_mtl.weighting.registry import register


@register
class ScaleInvariant(LowerBoundedWeighting):
    """Minimises the sum of the log task losses (Nash-MTL's SI baseline).

    Args:
        min_losses: Optional dict `{task: lower bound of its loss}` (0 for
            tasks left out); needed for losses that can be negative.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = ScaleInvariant()
    >>> weighting.build({"a": (), "b": ()})
    >>> total, weights = weighting({"a": 1.0, "b": 4.0})
    >>> round(float(total), 4)  # log 1 + log 4
    1.3863
    >>> {k: float(v) for k, v in weights.items()}  # 1 / L_t
    {'a': 1.0, 'b': 0.25}
    """

    registry_name = "scale_invariant"
    aliases = ("si", "scaleinvls")
    paper = "Navon et al., ICML 2022 (Nash-MTL's SI baseline)"

    def call(self, losses, counts=None, training=False):
        vector = self.stack(losses) - self._bounds
        present = self.labelled(counts)
        # The inner `where` keeps log's gradient finite for unlabelled tasks.
        safe = ops.where(present, vector, 1.0)
        total = ops.sum(ops.where(present, ops.log(safe), 0.0))
        weights = ops.where(present, 1.0 / safe, 0.0)
        return total, self.unstack(weights)
