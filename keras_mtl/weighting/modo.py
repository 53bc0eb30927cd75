"""MoDo: multi-objective gradient with double sampling.

Chen, Fernando, Ying & Chen, "Three-Way Trade-Off in Multi-Objective
Learning: Optimization, Generalization and Conflict-Avoidance", NeurIPS 2023
(arXiv:2305.20057), Algorithm 1; the authors' code is
github.com/heshandevaka/Trade-Off-MOL, LibMTL has it as
`LibMTL/weighting/MoDo.py`.

MGDA's weights from one batch's gradients are a biased estimate (a
nonlinear function of noisy gradients). MoDo keeps simplex weights `λ`
and, at every step, draws three independent samples of the task gradients,
`G1`, `G2`, `G3` (each `(T, P)`): two for an unbiased estimate of the
gradient of MGDA's objective `½ ‖Gᵀλ‖²` with respect to `λ`, the third for
the update:

    λ ← Π_Δ(λ - gamma (G1 G2ᵀ λ + rho λ))      (Π_Δ: onto the simplex)
    d = G3ᵀ λ = Σ_t λ_t g3_t                   (the shared update)

`λ` starts at `1/T`. The reported weight of task `t` (`weight_<task>`) is
`λ_t`, its weight in `d`.

The three samples are three interleaved sub-batches of each batch, the
heads trained on the whole batch (`GradientWeighting.gradient_samples`;
LibMTL averages the three samples' head gradients, the same thing):
`batch_size=3 B` sees the data LibMTL's `B` sees.

Defaults: LibMTL's (`MoDo_gamma=1e-3`, `MoDo_rho=0.1`).

Where we differ, and why:
- `λ` takes the exact, sort-based Euclidean projection onto the simplex, as
  LibMTL and the paper do, computed in the graph (`moco.project_to_simplex`).
- The λ step is MoCo's (`moco.simplex_step`): in float64 (float32 on JAX
  without `jax_enable_x64`), from the gradients divided by their largest
  entry `s` with `gamma · s²` taken in logs and capped where the step
  reaches 1e30, so gradients of any float32 size (1e-20 ... 1e20) give
  finite weights. The weights depend on the gradients' size, as in the
  paper (`gamma` is in units of 1 / gradient²).
- Tasks without labels in the batch (count 0) are left out of the step:
  their `λ_u` stay and their weight is 0; the others take the same step on
  their face of the simplex, renormalised (MoCo's module docstring). LibMTL
  has no missing labels. A sub-batch without a label for a labelled task
  gives it a zero gradient in that sample.

Non-finite gradients make the weights (and the step) non-finite, and `λ`
stays as it was (training stops with an error; under a
`LossScaleOptimizer` the skipped steps do not poison `λ`).

State: `lambdas` (`λ`), saved with the model. `training=False` computes the
step without changing it.

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

from keras_mtl.weighting.base import check_number
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.gradient_base import parts_combination
from keras_mtl.weighting.gradient_base import parts_gram
from keras_mtl.weighting.gradient_base import sample_scale
from keras_mtl.weighting.moco import simplex_step
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Float


@register
class MoDo(GradientWeighting):
    """Multi-objective gradient with double sampling (Chen et al. 2023):
    MGDA's weights by projected steps from two independent gradient
    samples, the update from a third.

    Supported modes: `"params"` only (see the module docstring for the
    algorithm, the three samples and the deviations).

    Args:
        gamma: The step size of `λ`, >= 0 (0: `λ` stays `1/T`).
        rho: The ℓ2 regularisation of the λ step, >= 0.
        mode: `"params"`, the only mode.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> import numpy as np
    >>> weighting = MoDo(gamma=0.1)
    >>> weighting.build({"a": (), "b": ()})
    >>> first = [[np.array([1.0, 0.0], "float32")], [np.array([0.0, 2.0], "float32")]]
    >>> second = [[np.array([1.0, 0.0], "float32")], [np.array([0.0, 1.0], "float32")]]
    >>> third = [[np.array([3.0, 0.0], "float32")], [np.array([0.0, 3.0], "float32")]]
    >>> combined, weights = weighting.combine_samples(
    ...     [first, second, third], {"a": 1.0, "b": 1.0})
    >>> [round(float(w), 3) for w in weights]  # (0.5, 0.5) - 0.1 ((0.5, 1) + 0.1 (0.5, 0.5))
    [0.525, 0.475]
    >>> [round(float(c), 3) for c in combined[0]]  # Σ λ_t times the third sample
    [1.575, 1.425]
    """

    registry_name = "modo"
    paper = "Chen et al., NeurIPS 2023"
    search_space = {"gamma": Float(1e-4, 1e-1, sampling="log")}
    supported_modes = ("params",)
    gradient_samples = 3

    def __init__(self, gamma=1e-3, rho=0.1, mode="params", **kwargs):
        super().__init__(mode=mode, **kwargs)
        self.gamma = check_number("gamma", gamma, minimum=0, kind="finite number")
        self.rho = check_number("rho", rho, minimum=0, kind="finite number")

    def build(self, losses_shape):
        super().build(losses_shape)
        n = len(self.task_names)
        self.lambdas = self.add_weight(
            name="lambdas", shape=(n,), initializer=keras.initializers.Constant(1.0 / n),
            trainable=False,
        )

    def combine_samples(self, samples, losses, counts=None, training=True, after=None):
        first, second, third = samples
        labelled = self.labelled(counts)
        scale = sample_scale([first, second])
        gram = parts_gram(first, second, scale, after)  # G1 G2ᵀ / s²
        old = ops.convert_to_tensor(self.lambdas)
        weights, lambdas = simplex_step(gram, scale, old, labelled, self.gamma, self.rho)
        weights = ops.cast(weights, "float32")
        lambdas = ops.cast(lambdas, "float32")
        if training:
            commit = ops.logical_and(ops.any(labelled), ops.all(ops.isfinite(lambdas)))
            self.lambdas.assign(ops.where(commit, lambdas, old))
            finite = ops.all(ops.isfinite(weights))
            self.task_weights.assign(
                ops.where(finite, weights, ops.convert_to_tensor(self.task_weights)))
        return parts_combination(weights, third, after), weights

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "rho": self.rho}
