"""SDMGrad: stochastic direction-oriented multi-objective gradient descent.

Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and
Provable Stochastic Algorithms", NeurIPS 2023 (arXiv:2305.18409),
Algorithm 1; the authors' code is github.com/OptMN-Lab/sdmgrad
(`methods/weight_methods.py`, `SDMGrad`), LibMTL has it as
`LibMTL/weighting/SDMGrad.py`.

SDMGrad looks for the update direction `d` in a neighbourhood of a target
direction, the mean gradient `g0 = 1/T Σ_t g_t`: its weights `w` on the
simplex minimise `½ ‖Gᵀw + lamda g0‖²`, whose gradient with respect to `w`
is `G Gᵀ w + lamda G g0`. Each step draws three independent samples of the
task gradients: `Xi1`, `Xi2` (each `(T, P)`) estimate `G Gᵀ` without bias,
`Zeta` gives the update:

    A = Xi1 Xi2ᵀ / (c² + 1e-8),   c = mean_t sqrt(max(A_tt, 0)) (before the division)
    b = lamda · mean_j A_{:, j}                     (A g0's estimate, by the same scale)
    repeat `iterations` times:                      (SGD with momentum, then Π_Δ)
        v ← momentum v + (A w + b),   w ← Π_Δ(w - inner_learning_rate · v)
    d = (Zetaᵀ w + lamda · mean_t zeta_t) / (1 + lamda)

`w` starts at `1/T` and is kept from step to step (each step's inner loop
starts from the last step's `w`, its momentum from 0); `Π_Δ` is the
Euclidean projection onto the simplex. `d = Σ_t ω_t zeta_t` with
`ω = (w + lamda / T) / (1 + lamda)`: the reported weight of task `t`
(`weight_<task>`) is `ω_t`. `lamda = 0` is a stochastic MGDA; a large
`lamda` tends to the mean gradient.

The three samples are three interleaved sub-batches of each batch, the
heads trained on the whole batch (`GradientWeighting.gradient_samples`);
LibMTL and the authors draw three batches per step, so `batch_size=3 B`
sees the data their `B` sees.

Defaults: LibMTL's (`SDMGrad_lamda=0.3`, `SDMGrad_niter=20`, its inner SGD
with learning rate 5 and momentum 0.5; the authors' code has learning rate
10).

Where we differ, and why:
- The normalisation `c` is LibMTL's (the diagonal clipped at 0, `+ 1e-8`
  outside the square); the authors' code takes `sqrt(A_tt + 1e-4)` and
  multiplies the update by `T` ("to match the sum loss"), and its three
  gradient buffers are one tensor (`[tensor] * 3`), so its three "samples"
  are the last one. LibMTL's are three, as here and in the paper.
- `A` is formed from the gradients divided by their largest entry `s`
  (then `c` by the same), so the `1e-8` is relative to `s²`: gradients of
  any float32 size (1e-20 ... 1e20) give the same, finite weights, which do
  not depend on the gradients' common scale.
- The inner loop runs in the training step's graph, in float64 (float32 on
  JAX without `jax_enable_x64`), with the exact sort-based projection
  (`moco.project_to_simplex`); LibMTL projects in NumPy on the CPU.
- Tasks without labels in the batch (count 0) are left out: the inner
  problem runs on the simplex of the labelled tasks `S` (from the stored `w`
  renormalised to them; the mean `g0` and `c` are over them), their `w_u`
  stay and their weight is 0 (MoCo's module docstring has the same rule).
  LibMTL has no missing labels. A sub-batch without a label for a labelled
  task gives it a zero gradient in that sample.

Non-finite gradients make the weights (and the step) non-finite, and `w`
stays as it was.

State: `simplex_weights` (`w`), saved with the model. `training=False`
computes the step without changing it.

Modes:

| mode             | supported | why                                             |
| ---------------- | --------- | ----------------------------------------------- |
| "params"         | yes       | the paper's setting: the three samples are      |
|                  | (only)    | gradients of the shared parameters.             |
| "representation" | no        | gradients at `z` of different sub-batches       |
|                  |           | belong to different examples: their inner       |
|                  |           | products are 0. LibMTL refuses it too.          |
"""

import keras
from keras import ops

from keras_mtl._validation import check_positive_int
from keras_mtl.weighting.base import check_number
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.gradient_base import parts_combination
from keras_mtl.weighting.gradient_base import parts_gram
from keras_mtl.weighting.gradient_base import sample_scale
from keras_mtl.weighting.moco import labelled_face
from keras_mtl.weighting.moco import project_to_simplex
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Float

#: Added to the squared normalisation `c²` (LibMTL's).
EPSILON = 1e-8


@register
class SDMGrad(GradientWeighting):
    """Stochastic direction-oriented multi-objective gradient (Xiao et al.
    2023): MGDA's problem regularised towards the mean gradient, solved from
    independent gradient samples.

    Supported modes: `"params"` only (see the module docstring for the
    algorithm, the three samples and the deviations).

    Args:
        lamda: `λ` >= 0, the pull towards the mean gradient (LibMTL's
            `SDMGrad_lamda`; spelt so because `lambda` is Python's).
        iterations: Inner projected-SGD iterations per step (LibMTL's
            `SDMGrad_niter`), an integer >= 1.
        inner_learning_rate: The inner SGD's learning rate, > 0.
        momentum: The inner SGD's momentum, in [0, 1).
        mode: `"params"`, the only mode.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> import numpy as np
    >>> weighting = SDMGrad(lamda=0.0, iterations=1, inner_learning_rate=1.0)
    >>> weighting.build({"a": (), "b": ()})
    >>> grads = [[np.array([1.0, 0.0], "float32")], [np.array([0.0, 3.0], "float32")]]
    >>> combined, weights = weighting.combine_samples([grads] * 3, {"a": 1.0, "b": 1.0})
    >>> # A = diag(1, 9) / 4; w = Π((0.5, 0.5) - (0.125, 1.125)) = (1, 0)
    >>> [round(float(w), 3) for w in weights]
    [1.0, 0.0]
    >>> [round(float(c), 3) for c in combined[0]]
    [1.0, 0.0]
    """

    registry_name = "sdmgrad"
    paper = "Xiao et al., NeurIPS 2023"
    search_space = {"lamda": Float(0.05, 1.0, sampling="log")}
    supported_modes = ("params",)
    gradient_samples = 3

    def __init__(
        self, lamda=0.3, iterations=20, inner_learning_rate=5.0, momentum=0.5, mode="params",
        **kwargs,
    ):
        super().__init__(mode=mode, **kwargs)
        self.lamda = check_number("lamda", lamda, minimum=0, kind="finite number")
        self.iterations = check_positive_int("iterations", iterations)
        self.inner_learning_rate = check_number(
            "inner_learning_rate", inner_learning_rate, minimum=0, exclusive=True,
            kind="finite number",
        )
        self.momentum = check_number("momentum", momentum, minimum=0, kind="finite number")
        if self.momentum >= 1:
            raise ValueError(
                "Invalid value received for argument `momentum`. Expected a number in "
                f"[0, 1). Received: momentum={momentum!r}"
            )

    def build(self, losses_shape):
        super().build(losses_shape)
        n = len(self.task_names)
        self.simplex_weights = self.add_weight(
            name="simplex_weights", shape=(n,), initializer=keras.initializers.Constant(1.0 / n),
            trainable=False,
        )

    def _inner(self, gram, stored, labelled):
        """`(w, stored)`: the step's simplex weights on the labelled tasks,
        and the new stored `w` (the unlabelled tasks' entries kept)."""
        dtype = "float64"  # float32 on JAX without jax_enable_x64
        gram = ops.cast(gram, dtype)
        stored = ops.cast(stored, dtype)
        inside = ops.cast(labelled, dtype)
        count = ops.maximum(ops.sum(inside), 1.0)
        # A, restricted to the labelled tasks, over c² + ε (c from the
        # clipped diagonal, averaged over them).
        gram = gram * inside[:, None] * inside[None, :]
        c = ops.sum(ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))) / count
        gram = gram / (ops.square(c) + EPSILON)
        target = self.lamda * ops.sum(gram, axis=1) / count
        w, mass = labelled_face(stored, labelled)
        velocity = ops.zeros_like(w)
        for _ in range(self.iterations):
            velocity = self.momentum * velocity + ops.matmul(gram, w) + target
            w = project_to_simplex(w - self.inner_learning_rate * velocity, labelled)
        return w, ops.where(labelled, mass * w, stored)

    def combine_samples(self, samples, losses, counts=None, training=True, after=None):
        zeta, first, second = samples
        labelled = self.labelled(counts)
        scale = sample_scale([first, second])
        gram = parts_gram(first, second, scale, after)  # Xi1 Xi2ᵀ / s²
        old = ops.convert_to_tensor(self.simplex_weights)
        w, stored = self._inner(gram, old, labelled)
        w = ops.cast(w, "float32")
        inside = ops.cast(labelled, "float32")
        mean = inside / ops.maximum(ops.sum(inside), 1.0)
        weights = (w + self.lamda * mean) / (1.0 + self.lamda)
        if training:
            commit = ops.logical_and(ops.any(labelled), ops.all(ops.isfinite(stored)))
            self.simplex_weights.assign(ops.where(commit, ops.cast(stored, "float32"), old))
            finite = ops.all(ops.isfinite(weights))
            self.task_weights.assign(
                ops.where(finite, weights, ops.convert_to_tensor(self.task_weights)))
        return parts_combination(weights, zeta, after), weights

    def get_config(self):
        return {
            **super().get_config(),
            "lamda": self.lamda,
            "iterations": self.iterations,
            "inner_learning_rate": self.inner_learning_rate,
            "momentum": self.momentum,
        }
