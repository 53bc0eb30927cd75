"""Gradient Vaccine (GradVac): align task gradients to adaptive cosine targets.

Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving
Multi-task Optimization in Massively Multilingual Models", ICLR 2021
(arXiv:2010.05874), Algorithm 1.

Each ordered pair of tasks `(i, j)` has a target cosine `phi_hat_ij`, an
exponential moving average of the observed cosines (a `(T, T)` state
variable, initialised to 0). At each training step, for each task `i` and
each other task `j` in a random order (drawn per step and per `i`, like
PCGrad's):

    phi_ij = cos(g'_i, g_j)          (g'_i: task i's gradient so far)
    if phi_ij < phi_hat_ij:
        g'_i <- g'_i + ||g'_i|| (phi_hat_ij sqrt(1 - phi_ij²) - phi_ij sqrt(1 - phi_hat_ij²))
                       / (||g_j|| sqrt(1 - phi_hat_ij²)) * g_j
    phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi_ij

and the update is `sum_i g'_i`. After the correction, `cos(g'_i, g_j)` is
exactly `phi_hat_ij`: the gradient is turned towards `g_j` until it reaches
the target similarity (with `phi_hat = 0`, e.g. `beta = 0`, the correction is
PCGrad's projection).

Every `g'_i` stays a linear combination of the original gradients,
`g'_i = sum_k A_ik g_k` (`A` starts as the identity and each correction adds
to one entry), so every dot product and norm above is read off the Gram
matrix: `g'_i·g_j = (A G Gᵀ)_ij`, `||g'_i||² = (A G Gᵀ Aᵀ)_ii`. The reported
weight of task `k` is `sum_i A_ik`, and the update is `sum_k w_k g_k`. The
tasks `i` are processed together (each one's corrections depend only on its
own row of `A`), in `T - 1` rounds.

Parameter groups (`grouping`, LibMTL's `GradVac_group_type`). The paper
aligns gradients group by group (per layer in its Transformer experiments):
each group `k` of shared variables has its own targets `phi_hat_ijk`, the
corrections above run on each group's slice of the gradients, with the same
task orders for every group (as LibMTL draws them), and the update is the
concatenation of the groups' `sum_i g'_ik`:

- `"model"` (LibMTL's 0, `whole_model`, the default): one group, the whole
  gradient (or the whole representation gradient);
- `"layer"` (LibMTL's 1, `all_layer`): the variables of one layer (LibMTL's
  leaf modules with parameters): those whose `Variable.path` has the same
  owner (the path without the variable's own name);
- `"variable"` (LibMTL's 2, `all_matrix`): every shared variable alone.

Groups need the shared variables, so they are for params mode only; the
model hands them over at `compile` (`build_shared`), and the `(K, T, T)`
targets are created then. The reported weight of task `k` is then the mean
over groups of its weight in each group's combination, each group counted
by its number of parameters (the weight an average parameter sees).

Choices and deviations:

- random order per step from a `keras.random.SeedGenerator(seed)` (saved
  with the model), as the paper does (following PCGrad). Outside training
  (`training=False`) the order is fixed (ascending) and no state changes;
- the EMA is updated for every pair at every step, whether or not a
  correction was applied, as in the paper's Algorithm 1 (LibMTL updates it
  only when it corrects);
- the target used in the formula (and in the test `phi < phi_hat`) is
  clipped to `[-1 + 1e-6, 1 - 1e-6]`: at `|phi_hat| = 1` the correction
  would be infinite.

Degenerate gradients. A pair involving a task without labels in the batch,
or with a zero gradient, is skipped: no correction, no EMA update (its
cosine is undefined). Unlabelled tasks get weight 0. Identical (or positively
parallel) gradients have `phi = 1 >= phi_hat`: no correction, and the
update is the sum of the task gradients, `T` times their mean. Near-zero
gradients are corrected by the same formula (cosines are scale-free);
everything stays finite. The Gram matrix is that of the gradients divided by
their largest entry (`scale_free_weights`), so gradients of any float32 size
give the same weights; one more than ~1e19 times smaller than the largest
counts as zero.

Modes:

| mode             | supported | why                                                |
| ---------------- | --------- | -------------------------------------------------- |
| "params"         | yes       | the paper's setting: cosines of the gradients of   |
|                  | (default) | the shared parameters.                             |
| "representation" | yes       | the same alignment on gradients at `z` (cheap);    |
|                  |           | cosines over the whole batch's `z`-gradients.      |
"""

import math

import keras
from keras import ops

from keras_mtl.weighting._gram import random_task_orders
from keras_mtl.weighting.base import check_fraction
from keras_mtl.weighting.base import check_seed
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.gradient_base import _block
from keras_mtl.weighting.gradient_base import _largest_magnitude
from keras_mtl.weighting.gradient_base import _spans
from keras_mtl.weighting.gradient_base import _usable
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Float

#: How close to +-1 the target cosine may get in the correction.
_TARGET_LIMIT = 1.0 - 1e-6
#: The parameter groups, LibMTL's `GradVac_group_type` 0, 1 and 2.
GROUPINGS = ("model", "layer", "variable")


def variable_groups(variables, grouping):
    """The group index of each variable (groups numbered in order of first
    appearance): one group, one per owner of the variables' paths, or one
    per variable."""
    if grouping == "model":
        return [0] * len(variables)
    keys = [v.path.rpartition("/")[0] if grouping == "layer" else i for i, v in enumerate(variables)]
    index = {}
    return [index.setdefault(key, len(index)) for key in keys]


@register
class GradVac(GradientWeighting):
    """Gradient Vaccine (Wang et al. 2021): turns each task gradient towards
    the others until their cosine reaches an EMA target.

    Supported modes: `"params"` (default) and `"representation"`. See the
    module docstring for the algorithm, the groups and the degenerate cases.

    Args:
        mode: `"params"` or `"representation"`.
        beta: The EMA rate of the target cosines, in [0, 1].
        seed: Optional integer seed of the random task order.
        grouping: `"model"` (one cosine per task pair over the whole
            gradient), `"layer"` or `"variable"` (one per pair and layer or
            variable of the trunk; params mode only).
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = GradVac(beta=0.5, seed=0)
    >>> weighting.build({"a": (), "b": ()})
    >>> grads = keras.ops.convert_to_tensor([[1.0, 0.0], [-1.0, 1.0]])  # 135°
    >>> combined, weights = weighting.combine(grads, {"a": 1.0, "b": 1.0})
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(weights)]  # PCGrad's
    [2.0, 1.5]
    >>> round(float(keras.ops.convert_to_numpy(weighting.target_cosines)[0, 1]), 4)
    -0.3536
    """

    registry_name = "grad_vac"
    aliases = ("gradient_vaccine",)
    paper = "Wang et al., ICLR 2021"
    scale_free_weights = True
    search_space = {"beta": Float(1e-3, 0.1, sampling="log")}

    def __init__(self, mode="params", beta=0.01, seed=None, grouping="model", **kwargs):
        super().__init__(mode=mode, **kwargs)
        self.beta = check_fraction("beta", beta)
        self.seed = check_seed(seed)
        if grouping not in GROUPINGS:
            raise ValueError(
                f"Invalid value received for argument `grouping`. Expected one of "
                f"{GROUPINGS}. Received: grouping={grouping!r}"
            )
        if grouping != "model" and mode != "params":
            raise ValueError(
                f"Invalid value received for argument `grouping`. grouping={grouping!r} "
                "groups the shared variables' gradients, which only mode='params' has. "
                f"Received: grouping={grouping!r} with mode={mode!r}"
            )
        self.grouping = grouping
        self.groups = None  # per shared variable, its group (`build_shared`)

    def build(self, losses_shape):
        super().build(losses_shape)
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="seed_generator")
        n = len(self.task_names)
        shape = (n, n)
        if self.grouping != "model":
            self._check_built_shared()
            shape = (max(self.groups) + 1, n, n)
        self.target_cosines = self.add_weight(
            name="target_cosines", shape=shape, initializer="zeros", trainable=False
        )

    def build_shared(self, variables, representation_shape=None):
        if self.grouping == "model":
            return
        groups = variable_groups(variables, self.grouping)
        sizes = [math.prod(v.shape) for v in variables]
        if self.groups is not None:
            if (groups, sizes) != (list(self.groups), list(self.sizes)):
                raise ValueError(
                    f"This GradVac (grouping={self.grouping!r}) was built for other "
                    "shared variables (another model's trunk): its target cosines are "
                    "per group of those. Pass a new instance."
                )
            return
        if not variables:
            raise ValueError(
                f"GradVac(grouping={self.grouping!r}) needs the trunk's variables when "
                "the model is compiled, and the trunk has none yet. Build the trunk "
                "(call it on an input) before `compile`, or use grouping='model'."
            )
        self.groups, self.sizes = groups, sizes

    def _orders(self, n, training):
        """`(T, T - 1)`: for each task `i`, the other tasks in visiting order."""
        return random_task_orders(n, self.seed_generator, training)[:, : n - 1]

    def _coefficients(self, grams, targets, labelled, training):
        """Algorithm 1 on `K` groups at once: `grams` and `targets` are
        `(K, T, T)`; returns `(A, new_targets)`, `A` the `(K, T, T)`
        coefficients of `g'_ik = Σ_m A_kim g_mk`. The task orders are drawn
        once, shared by the groups."""
        n = len(self.task_names)
        squares = ops.diagonal(grams, axis1=1, axis2=2)  # (K, T)
        valid = ops.logical_and(labelled[None, :], ops.greater(squares, 0.0))
        valid = ops.logical_and(valid, ops.isfinite(squares))
        grams = ops.where(ops.logical_and(valid[:, :, None], valid[:, None, :]), grams, 0.0)
        norms = ops.sqrt(ops.maximum(ops.diagonal(grams, axis1=1, axis2=2), 0.0))
        new_targets = targets + 0.0
        coefficients = ops.tile(ops.eye(n, dtype="float32")[None], (grams.shape[0], 1, 1))
        orders = self._orders(n, training)
        for position in range(n - 1):
            pick = ops.one_hot(orders[:, position], n, dtype="float32")[None]  # row i: e_j
            j_valid = ops.sum(pick * ops.cast(valid, "float32")[:, None, :], axis=2) > 0
            projected = ops.matmul(coefficients, grams)  # g'_i·g_m
            dots = ops.sum(projected * pick, axis=2)  # g'_i·g_j
            norm_i = ops.sqrt(ops.maximum(ops.sum(projected * coefficients, axis=2), 0.0))
            norm_j = ops.sum(pick * norms[:, None, :], axis=2)
            ok = ops.logical_and(ops.logical_and(valid, j_valid), norm_i > 0)
            # Divided one norm at a time: the product may underflow.
            safe_i = ops.where(ok, norm_i, 1.0)
            safe_j = ops.where(ok, norm_j, 1.0)
            cosine = ops.clip(dots / safe_i / safe_j, -1.0, 1.0)
            target = ops.sum(targets * pick, axis=2)
            limited = ops.clip(target, -_TARGET_LIMIT, _TARGET_LIMIT)
            correct = ops.logical_and(ok, cosine < limited)
            sin_target = ops.sqrt(1.0 - ops.square(limited))
            step = (
                (limited * ops.sqrt(1.0 - ops.square(cosine)) - cosine * sin_target)
                * (safe_i / safe_j)
                / sin_target
            )
            coefficients = coefficients + ops.where(correct, step, 0.0)[:, :, None] * pick
            moved = (1.0 - self.beta) * target + self.beta * cosine
            visited = ops.logical_and(pick > 0, ok[:, :, None])
            new_targets = ops.where(visited, moved[:, :, None], new_targets)
        return coefficients, new_targets

    def gram_weights(self, gram, losses, labelled, training):
        gram = ops.convert_to_tensor(gram, "float32")
        targets = ops.convert_to_tensor(self.target_cosines)
        coefficients, new_targets = self._coefficients(gram[None], targets[None], labelled, training)
        if training:
            self.target_cosines.assign(new_targets[0])
        weights = ops.sum(coefficients[0], axis=0)
        return ops.where(labelled, weights, 0.0)

    def combine(self, grads, losses, counts=None, training=True, cross_replica_sum=None,
                activations=None):
        if self.grouping == "model":
            return super().combine(
                grads, losses, counts, training, cross_replica_sum, activations
            )
        self._check_built_shared()
        flat = ops.reshape(grads, (len(self.task_names), -1))
        if flat.shape[1] != sum(self.sizes):
            raise ValueError(
                f"GradVac(grouping={self.grouping!r}) was built for {sum(self.sizes)} "
                f"shared parameters; the gradients have {flat.shape[1]}."
            )
        parts, start = [[] for _ in self.task_names], 0
        for size in self.sizes:
            for t in range(len(self.task_names)):
                parts[t].append(flat[t, start:start + size])
            start += size
        combined, weights = self.combine_parts(parts, losses, counts, training)
        return ops.reshape(ops.concatenate(combined), grads.shape[1:]), weights

    def combine_parts(self, parts, losses, counts=None, training=True, after=None):
        if self.grouping == "model":
            return super().combine_parts(parts, losses, counts, training, after)
        self._check_built_shared()
        if len(parts[0]) != len(self.groups):
            raise ValueError(
                f"GradVac(grouping={self.grouping!r}) was built for {len(self.groups)} "
                f"shared variables; the gradients have {len(parts[0])}."
            )
        after = after or (lambda value, fn: fn())
        num_groups = max(self.groups) + 1
        # One common scale (cosines and the norm ratios of the corrections
        # do not depend on it), as for the whole-model Gram matrix.
        scale = _usable(_largest_magnitude([p for task in parts for p in task]))

        def add_block(gram, k, span):
            block = _block(parts, k, span) / scale
            return gram + ops.matmul(block, ops.transpose(block))

        grams = [ops.zeros((len(parts), len(parts)), "float32") for _ in range(num_groups)]
        for k, group in enumerate(self.groups):
            for span in _spans(parts[0][k]):
                grams[group] = after(grams[group], lambda: add_block(grams[group], k, span))  # noqa: B023
        labelled = self.labelled(counts)
        targets = ops.convert_to_tensor(self.target_cosines)
        coefficients, new_targets = self._coefficients(
            ops.stack(grams), targets, labelled, training
        )
        group_weights = ops.where(labelled[None, :], ops.sum(coefficients, axis=1), 0.0)  # (K, T)
        combined = [
            ops.reshape(
                ops.tensordot(group_weights[g], ops.cast(ops.stack([
                    ops.reshape(task[k], (-1,)) for task in parts]), "float32"), axes=1),
                parts[0][k].shape,
            )
            for k, g in enumerate(self.groups)
        ]
        # Reported: each group's weights, counted by its number of parameters.
        group_sizes = [0.0] * num_groups
        for group, size in zip(self.groups, self.sizes):
            group_sizes[group] += size
        shares = ops.convert_to_tensor([s / sum(self.sizes) for s in group_sizes], "float32")
        weights = ops.sum(shares[:, None] * group_weights, axis=0)
        if training:
            self.target_cosines.assign(new_targets)
            self.task_weights.assign(weights)
        return combined, weights

    def _check_built_shared(self):
        if self.groups is None:
            raise ValueError(
                f"GradVac(grouping={self.grouping!r}) needs its shared variables "
                "before `build`: `MultiTaskModel.compile` hands them over "
                "(`build_shared(variables)`)."
            )

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "seed": self.seed,
            "grouping": self.grouping,
        }
