"""GradDrop: Gradient Sign Dropout at the shared representation.

Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a Sign:
Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020
(arXiv:2010.06808), Algorithm 1.

With `g_i = dL_i/dz` the task gradients at the shared activations `z`
(shape `(batch, ...)`), at each training step:

    G_i = sum over the batch of sign(z) g_i          (shape `z.shape[1:]`)
    P = ½ (1 + sum_i G_i / sum_i |G_i|)              the positive sign purity, per element
    U ~ Uniform[0, 1)                                one draw per element
    M_i = [P > U] [G_i > 0] + [P <= U] [G_i < 0]     keep one sign, drop the other
    combined = sum_i (leak + (1 - leak) M_i) g_i

so at each element of `z` either the positive or the negative task
gradients pass, with the probability of the sign's share of the gradient
mass. The factor `sign(z)` (the paper's `sgn(A)`, with `sign(0) = 0`) makes
`G_i` the sign of the change task `i` asks of the weights feeding that
element rather than of `z` itself: for an example whose activation is
negative the two have opposite signs, and for one whose activation is 0 the
change of the weights does not depend on it. The masks come from the
batch-summed `G_i` and apply to every example's `g_i`, as in the paper (and
in the authors' TensorFlow implementation, Lingvo's `GradDrop` layer with
`use_input_sign_only=True`).

GradDrop is not a linear combination of the task gradients (the masks are
per element), so it overrides `combine`, which the train step calls with
`activations=z`. The weights it reports are 1 for each labelled task (the
factor each task's gradient has before masking) and 0 for a task without
labels in the batch (its gradient is 0).

Choices and deviations:

- where `G_i = 0` (no net sign, e.g. `z` is 0 at that element for the whole
  batch) task `i`'s gradient passes, as in the authors' code (Algorithm 1
  as written drops it; through a ReLU trunk output it is 0 there anyway);
- ties: the negative gradients pass where `P <= U` (the paper writes
  `P < U`), so that an element where every `G_i` is negative (`P = 0`) keeps
  them all even if `U` is drawn as exactly 0;
- where `sum_i |G_i| = 0` (all task gradients sum to 0 there), `P` is
  defined as 1/2 instead of 0/0;
- one `leak` for every task (the paper allows one per task);
- outside training (`training=False`) no random numbers are drawn and
  `U = 1/2`: each element keeps the sign with the larger share.

Identical gradients: every `G_i` is the same at an element, so `P` is 1 or
0 there (or `G_i = 0`) and every gradient passes: the result is the sum of
the task gradients, `T` times their mean. Zero and near-zero gradients give finite
results (the purity is a ratio of sums over the same `G_i`).

Modes:

| mode             | supported | why                                               |
| ---------------- | --------- | ------------------------------------------------- |
| "representation" | yes       | the paper's setting: the masks act on the         |
|                  | (only)    | gradients of the shared activations, with their   |
|                  |           | batch axis.                                       |
| "params"         | no        | parameter gradients have no batch axis and their  |
|                  |           | elements are not activations; the paper does not  |
|                  |           | define GradDrop there.                            |
"""

import keras
from keras import ops

from keras_mtl.weighting.base import check_fraction
from keras_mtl.weighting.base import check_seed
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Float


@register
class GradDrop(GradientWeighting):
    """Gradient Sign Dropout (Chen et al. 2020) on the representation's
    gradients.

    Supported modes: `"representation"` only (see the module docstring).

    Args:
        leak: The fraction of every task gradient that always passes, in
            [0, 1] (0: GradDrop; 1: the plain sum of gradients).
        seed: Optional integer seed of the random draws.
        mode: `"representation"`, the only mode.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = GradDrop(seed=0)
    >>> weighting.build({"a": (), "b": ()})
    >>> # (T=2, batch=1, 3 elements): same signs at elements 0 and 2.
    >>> grads = keras.ops.convert_to_tensor([[[1.0, 2.0, -1.0]], [[3.0, -2.0, -2.0]]])
    >>> z = keras.ops.convert_to_tensor([[0.5, 1.0, 2.0]])  # the activations
    >>> combined, weights = weighting.combine(grads, {"a": 1.0, "b": 1.0}, activations=z)
    >>> c = keras.ops.convert_to_numpy(combined)[0]
    >>> float(c[0]), float(c[2]), float(c[1]) in (2.0, -2.0)
    (4.0, -3.0, True)
    >>> [float(w) for w in keras.ops.convert_to_numpy(weights)]
    [1.0, 1.0]
    """

    registry_name = "grad_drop"
    aliases = ("gradient_sign_dropout",)
    paper = "Chen et al., NeurIPS 2020"
    search_space = {"leak": Float(0.0, 0.5)}

    supported_modes = ("representation",)

    def __init__(self, leak=0.0, seed=None, mode="representation", **kwargs):
        super().__init__(mode=mode, **kwargs)
        self.leak = check_fraction("leak", leak)
        self.seed = check_seed(seed)

    def build(self, losses_shape):
        super().build(losses_shape)
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="seed_generator")

    def combine(
        self, grads, losses, counts=None, training=True, cross_replica_sum=None, activations=None
    ):
        grads = ops.convert_to_tensor(grads)
        if activations is None or tuple(activations.shape) != tuple(grads.shape[1:]):
            raise ValueError(
                "Invalid value received for argument `activations`. GradDrop "
                "needs the shared activations `z`, shaped like one task's "
                f"gradient {tuple(grads.shape[1:])}. Received: activations="
                f"{activations if activations is None else tuple(activations.shape)}"
            )
        labelled = self.labelled(counts)
        # G_i: sign(z) g_i, summed over the batch axis.
        summed = ops.sum(grads * ops.sign(ops.cast(activations, grads.dtype)), axis=1)
        if cross_replica_sum is not None:
            # Over the global batch: every replica then draws the same U
            # (mirrored seed state) and builds the same masks.
            summed = cross_replica_sum(summed)
        total = ops.sum(summed, axis=0)
        mass = ops.sum(ops.abs(summed), axis=0)
        purity = ops.where(mass > 0, 0.5 * (1.0 + total / ops.where(mass > 0, mass, 1.0)), 0.5)
        if training:
            draw = keras.random.uniform(
                ops.shape(purity), seed=self.seed_generator, dtype=purity.dtype
            )
        else:
            draw = ops.full_like(purity, 0.5)
        keep = ops.logical_or(
            ops.equal(summed, 0.0),  # no net sign: nothing to drop
            ops.logical_or(
                ops.logical_and(purity > draw, summed > 0),
                ops.logical_and(purity <= draw, summed < 0),
            ),
        )
        factor = self.leak + (1.0 - self.leak) * ops.cast(keep, grads.dtype)
        combined = ops.sum(grads * ops.expand_dims(factor, 1), axis=0)
        weights = ops.cast(labelled, grads.dtype)
        if training:
            self.task_weights.assign(weights)
        return combined, weights

    def get_config(self):
        return {**super().get_config(), "leak": self.leak, "seed": self.seed}
