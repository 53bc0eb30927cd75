"""DSelect-k: a differentiable gate that selects k of n experts.

Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder, Hong & Chi,
"DSelect-k: Differentiable Selection in the Mixture of Experts with
Applications to Multi-Task Learning", NeurIPS 2021 (arXiv:2106.03760);
official TensorFlow code: google-research/google-research, `dselect_k_moe`.

A gate over `n` experts is made of `k` "single expert selectors". Selector
`l` holds `m = ceil(log2 n)` numbers `z^(l)` that pass through the cubic
smooth step (exactly 0 or 1 outside `[-γ/2, γ/2]`, so a selector can become
exactly binary and then has zero gradient):

    S(t) = 0                              t <= -γ/2
           -2/γ³ t³ + 3/(2γ) t + 1/2      -γ/2 < t < γ/2
           1                              t >= γ/2

Expert `i` has the `m`-bit binary code `b(i)` (most significant bit first,
as in the official code), and selector `l` gives it the weight

    r(z)_i = Π_j ( S(z_j) if b(i)_j = 1 else 1 - S(z_j) ),

a distribution over the `2^m` codes (one-hot once every `S(z_j)` is 0 or 1).
The `k` selectors are mixed by a softmax over `α`:

    q = Σ_l softmax(α)_l r(z^(l))              (the gate: weights of the n experts)

Static gate (`per_example=False`): `z` (k, m) and `α` (k,) are weights.
Per-example gate (`per_example=True`, the default): linear maps of the input,
`z^(l)(x) = Z_l x + b_l` and `α(x) = A x + c`. For multi-task learning each
task has its own gate over the shared experts, as in MMoE
(`keras_mtl.architectures.mmoe`); `f^t(x) = Σ_i q^t(x)_i f_i(x)` is task
`t`'s representation.

Regularisation, added with `add_loss` while training (as the official code):

- entropy, `λ · Σ_l h(r(z^(l)))` with `h(p) = -Σ_i p_i log(p_i + 1e-6)`,
  pushes every selector to a single expert (λ is `entropy_weight`);
- when `n` is not a power of 2, the codes `n .. 2^m - 1` select no expert:
  they are left out (`r` has `n` entries; its sum `s_l` is then at most 1,
  and so is the gate's), and `Σ_l (1 / s_l - 1)` keeps each selector's mass
  on the real experts (0, with zero gradient, once `s_l = 1`).

Deviations from the official code, and why:

- both terms are averaged over the examples of the batch (the official code
  sums them): the task losses are batch means, and Keras divides activity
  regularisers by the batch size too, so λ does not depend on the batch
  size (the official λ is ours divided by the batch size);
- the reachability term is `1/s - 1` (the official code: `1/s`): the same
  gradient, but zero at its optimum instead of adding `k` per example to the
  logged loss; `s` is clipped at 1e-6 so that a selector stuck on padded codes
  gives a large finite term, not an infinite one;
- λ is a constant (the official `EntropyRegularizer` takes a schedule of the
  step count); its default, 0, is the official gate's default (no entropy
  regulariser: the smooth step alone can reach 0 and 1);
- with `k = 1` the gate has no `α` (the official code keeps a softmax over
  one logit, always 1, whose weights get no gradient);
- the gate is computed in float32 (under mixed precision too): the smooth
  step's cube and the log of the entropy are what float16 would round.

Defaults: `k=2` (the official README's example), `gamma=1.0` and the
initialisers of the official code (`z` and its map uniform in
`±γ/100`, `α` and its map uniform in `±0.05`). As for MMoE, the `DSelectK`
architecture average-pools a backbone's feature map to a vector first.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_mtl._validation import check_bool
from keras_mtl._validation import check_int
from keras_mtl._validation import check_non_negative
from keras_mtl._validation import check_number
from keras_mtl._validation import check_positive_int
from keras_mtl.architectures.base import Architecture
from keras_mtl.architectures.base import check_task_names
from keras_mtl.architectures.mmoe import Experts
from keras_mtl.architectures.mmoe import check_activation
from keras_mtl.architectures.mmoe import check_units
from keras_mtl.architectures.mmoe import check_vector
from keras_mtl.architectures.mmoe import mix
from keras_mtl.architectures.mmoe import pooled_features

#: Inside the entropy's log and the floor of a selector's mass on the real
#: experts (the official code's constant).
EPSILON = 1e-6


def smooth_step(x, gamma=1.0):
    """The cubic smooth step `S(x)`: 0 for `x <= -γ/2`, 1 for `x >= γ/2`,
    `-2/γ³ x³ + 3/(2γ) x + 1/2` between (continuously differentiable, with
    zero derivative at `±γ/2`).

    Example:

    >>> [float(v) for v in smooth_step(keras.ops.convert_to_tensor([-1.0, 0.0, 0.25, 1.0]))]
    [0.0, 0.5, 0.84375, 1.0]
    """
    cubic = (-2.0 / gamma**3) * x**3 + (3.0 / (2.0 * gamma)) * x + 0.5
    return ops.where(
        x <= -gamma / 2, ops.zeros_like(x), ops.where(x >= gamma / 2, ops.ones_like(x), cubic)
    )


def binary_codes(num_experts):
    """`(num_experts, ceil(log2 num_experts))` float32: row `i` is `i` in
    binary, most significant bit first."""
    bits = math.ceil(math.log2(num_experts))
    return np.array(
        [[int(b) for b in np.binary_repr(i, width=bits)] for i in range(num_experts)], "float32"
    )


def check_num_experts(argument, value):
    """At least two experts: a gate over one expert selects nothing."""
    return check_int(argument, value, minimum=2)


def check_k(k, num_experts):
    """`k` as an `int` in `[1, num_experts]`, else a Keras-style `ValueError`."""
    check_positive_int("k", k)
    if k > num_experts:
        raise ValueError(
            "Invalid value received for argument `k`. Expected an integer "
            f"between 1 and num_experts={num_experts}. Received: k={k!r}"
        )
    return int(k)


@keras.saving.register_keras_serializable(package="keras_mtl")
class DSelectKGate(keras.layers.Layer):
    """The DSelect-k gate (Hazimeh et al. 2021): weights of `num_experts`
    experts, at most `k` of them non-zero once the selectors are binary.

    `k` single expert selectors each give a distribution `r` over the
    experts' binary codes (a product of smooth steps of `z`), mixed by a
    softmax over `α`. With `per_example=True`, `z` and `α` are linear maps of
    the input; otherwise they are weights and every example gets the same
    gate. While training, the layer adds the mean over the batch of
    `entropy_weight · Σ_l entropy(r_l)` and, when `num_experts` is not a
    power of 2, of `Σ_l (1 / Σ_i r_l,i - 1)` with `add_loss` (see the module
    docstring).

    Args:
        num_experts: Number of experts `n` (at least 2).
        k: Number of single expert selectors, the most experts selected
            (`1 <= k <= num_experts`; with one selector there is no `α`).
        gamma: Width of the smooth step's cubic region (positive).
        entropy_weight: λ, the non-negative factor of the entropy term.
        per_example: Whether `z` and `α` depend on the input (`True`) or
            are the same for all examples (`False`, the static gate).
        **kwargs: Base layer arguments (`name`, ...).

    Returns:
        `(batch, num_experts)`: non-negative weights; each row sums to 1
        when `num_experts` is a power of 2 (otherwise to 1 minus the mass on
        the codes that select no expert).

    Example:

    >>> gate = DSelectKGate(4, k=2)
    >>> weights = gate(keras.ops.ones((3, 5)))
    >>> tuple(weights.shape)
    (3, 4)
    >>> [round(float(s), 5) for s in keras.ops.sum(weights, axis=1)]
    [1.0, 1.0, 1.0]
    """

    def __init__(
        self, num_experts, k=2, gamma=1.0, entropy_weight=0.0, per_example=True, **kwargs
    ):
        super().__init__(**kwargs)
        self.num_experts = check_num_experts("num_experts", num_experts)
        self.k = check_k(k, self.num_experts)
        self.gamma = check_number("gamma", gamma, minimum=0, exclusive=True)
        self.entropy_weight = check_non_negative("entropy_weight", entropy_weight)
        self.per_example = check_bool("per_example", per_example)
        self.num_bits = math.ceil(math.log2(self.num_experts))
        self.power_of_2 = self.num_experts == 2**self.num_bits
        self._codes = binary_codes(self.num_experts)

    def build(self, input_shape):
        check_vector(type(self).__name__, input_shape)
        z_init = keras.initializers.RandomUniform(-self.gamma / 100, self.gamma / 100)
        alpha_init = keras.initializers.RandomUniform(-0.05, 0.05)
        k, m = self.k, self.num_bits
        d = input_shape[-1]
        self.z_kernel = self.alpha_kernel = self.alpha_bias = None
        # The static gate is the per-example gate's biases alone; one
        # selector (k = 1) needs no α.
        if self.per_example:
            self.z_kernel = self.add_weight(name="z_kernel", shape=(d, k, m), initializer=z_init)
        self.z_bias = self.add_weight(name="z_bias", shape=(k, m), initializer=z_init)
        if k > 1:
            if self.per_example:
                self.alpha_kernel = self.add_weight(
                    name="alpha_kernel", shape=(d, k), initializer=alpha_init
                )
            self.alpha_bias = self.add_weight(
                name="alpha_bias", shape=(k,), initializer=alpha_init
            )

    def selectors(self, inputs):
        """`(r, softmax(α))`, float32: the selectors' weights of the experts
        `(batch, k, num_experts)` (one row of `r` per selector; `batch` is 1
        for the static gate) and their mixing weights `(batch, k)` (ones
        when `k` is 1)."""
        x = ops.cast(inputs, "float32")
        z = ops.cast(self.z_bias, "float32")[None]
        if self.per_example:
            z = z + ops.einsum("bd,dkm->bkm", x, ops.cast(self.z_kernel, "float32"))
        if self.k == 1:
            weights = ops.ones_like(z[:, :, 0])
        else:
            alpha = ops.cast(self.alpha_bias, "float32")[None]
            if self.per_example:
                alpha = alpha + ops.matmul(x, ops.cast(self.alpha_kernel, "float32"))
            weights = ops.softmax(alpha, axis=-1)
        step = smooth_step(z, self.gamma)[:, :, None, :]  # (batch, k, 1, m)
        codes = ops.convert_to_tensor(self._codes)  # (n, m)
        # r_i = Π_j (S_j if bit j of i else 1 - S_j): a product over the few
        # bits, written out (no reduce_prod, whose gradient divides).
        factors = codes * step + (1.0 - codes) * (1.0 - step)  # (batch, k, n, m)
        r = factors[..., 0]
        for j in range(1, self.num_bits):
            r = r * factors[..., j]
        return r, weights

    def regularization(self, r):
        """The mean over the batch of `entropy_weight · Σ_l h(r_l)` plus,
        when `num_experts` is not a power of 2, `Σ_l (1 / Σ_i r_l,i - 1)`;
        `None` when both are absent."""
        terms = []
        if self.entropy_weight > 0:
            entropy = -ops.sum(r * ops.log(r + EPSILON), axis=(1, 2))
            terms.append(self.entropy_weight * ops.mean(entropy))
        if not self.power_of_2:
            mass = ops.maximum(ops.sum(r, axis=-1), EPSILON)
            terms.append(ops.mean(ops.sum(1.0 / mass - 1.0, axis=-1)))
        return sum(terms[1:], terms[0]) if terms else None

    def call(self, inputs, training=None):
        r, weights = self.selectors(inputs)
        if training:
            loss = self.regularization(r)
            if loss is not None:
                self.add_loss(loss)
        gate = ops.einsum("bk,bkn->bn", weights, r)
        if not self.per_example:
            gate = ops.ones_like(ops.cast(inputs[:, :1], "float32")) * gate
        return ops.cast(gate, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_experts)

    def get_config(self):
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "k": self.k,
            "gamma": self.gamma,
            "entropy_weight": self.entropy_weight,
            "per_example": self.per_example,
        }


@keras.saving.register_keras_serializable(package="keras_mtl")
class DSelectKLayer(keras.layers.Layer):
    """Shared experts with one DSelect-k gate per task (Hazimeh et al. 2021).

    Maps a vector `x` to one representation per task,
    `f^t(x) = Σ_i q^t(x)_i f_i(x)`: experts `f_i` shared by all tasks (ReLU
    MLPs, as MMoE's), and task `t`'s `DSelectKGate` `q^t`, which selects at
    most `k` of them.

    Args:
        task_names: Names of the tasks (the keys of the output).
        num_experts: Number of experts (at least 2).
        expert_units: Widths of each expert's Dense layers.
        expert_activation: Activation after each expert layer.
        k: Most experts each task's gate selects (`1 <= k <= num_experts`).
        gamma: Width of the smooth step's cubic region (positive).
        entropy_weight: λ, the factor of each gate's entropy term.
        per_example: Per-example gates (`True`) or static ones (`False`).
        **kwargs: Base layer arguments (`name`, ...).

    Returns:
        A dict `{task: (batch, expert_units[-1])}`.

    Example:

    >>> layer = DSelectKLayer(["age", "gender"], num_experts=4, expert_units=(8,), k=2)
    >>> outputs = layer(keras.ops.ones((2, 5)))
    >>> {k: tuple(v.shape) for k, v in outputs.items()}
    {'age': (2, 8), 'gender': (2, 8)}
    """

    def __init__(
        self,
        task_names,
        num_experts=4,
        expert_units=(64,),
        expert_activation="relu",
        k=2,
        gamma=1.0,
        entropy_weight=0.0,
        per_example=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.task_names = check_task_names(task_names)
        self.num_experts = check_num_experts("num_experts", num_experts)
        self.expert_units = check_units("expert_units", expert_units)
        self.expert_activation = check_activation("expert_activation", expert_activation)
        self.k = check_k(k, self.num_experts)
        self.gamma = check_number("gamma", gamma, minimum=0, exclusive=True)
        self.entropy_weight = check_non_negative("entropy_weight", entropy_weight)
        self.per_example = check_bool("per_example", per_example)

        # === Layers ===
        self.experts = Experts(
            self.num_experts, self.expert_units, self.expert_activation, name="experts"
        )
        self.gates = [
            DSelectKGate(
                self.num_experts,
                k=self.k,
                gamma=self.gamma,
                entropy_weight=self.entropy_weight,
                per_example=self.per_example,
                name=f"gate_{t}",
            )
            for t in self.task_names
        ]

    def build(self, input_shape):
        check_vector(type(self).__name__, input_shape)
        self.experts.build(input_shape)
        for g in self.gates:
            g.build(input_shape)

    def gate_values(self, inputs):
        """Each task's gate, `{task: (batch, num_experts)}`."""
        return {t: g(inputs) for t, g in zip(self.task_names, self.gates)}

    def call(self, inputs, training=None):
        experts = self.experts(inputs)
        return {
            t: mix(ops.cast(g(inputs, training=training), experts.dtype), experts)
            for t, g in zip(self.task_names, self.gates)
        }

    def compute_output_shape(self, input_shape):
        return {t: (input_shape[0], self.expert_units[-1]) for t in self.task_names}

    def get_config(self):
        return {
            **super().get_config(),
            "task_names": list(self.task_names),
            "num_experts": self.num_experts,
            "expert_units": list(self.expert_units),
            "expert_activation": self.expert_activation,
            "k": self.k,
            "gamma": self.gamma,
            "entropy_weight": self.entropy_weight,
            "per_example": self.per_example,
        }


@keras.saving.register_keras_serializable(package="keras_mtl")
class DSelectK(Architecture):
    """The DSelect-k architecture for `keras_mtl.build_model(..., architecture=)`.

    As MMoE, with each task's softmax gate replaced by a DSelect-k gate
    (Hazimeh et al. 2021, their multi-task setting): the trunk is the
    backbone, global average pooling (when the backbone gives a feature
    map), then a `DSelectKLayer`. The gates' regularisation terms join the
    training loss (`model.losses`), under loss- and gradient-level weighting
    alike.

    Args:
        num_experts: Number of shared experts (at least 2).
        expert_units: Widths of each expert's Dense layers.
        expert_activation: Activation after each expert layer.
        k: Most experts each task's gate selects (`1 <= k <= num_experts`).
        gamma: Width of the smooth step's cubic region (positive; the
            official default 1.0).
        entropy_weight: λ, the non-negative factor of the entropy term that
            pushes each selector to one expert (per example; default 0, the
            official gate's default).
        per_example: Per-example gates (`True`, default) or static ones.

    Example:

    >>> import keras_mtl
    >>> backbone = keras_mtl.tuning.small_cnn((16, 16, 3), filters=(4, 8))
    >>> architecture = DSelectK(num_experts=4, expert_units=(6,), k=2)
    >>> trunk = architecture.build_trunk(backbone, ["a", "b"])
    >>> {k: tuple(v.shape) for k, v in trunk.output.items()}
    {'a': (None, 6), 'b': (None, 6)}
    """

    def __init__(
        self,
        num_experts=4,
        expert_units=(64,),
        expert_activation="relu",
        k=2,
        gamma=1.0,
        entropy_weight=0.0,
        per_example=True,
    ):
        self.num_experts = check_num_experts("num_experts", num_experts)
        self.expert_units = check_units("expert_units", expert_units)
        self.expert_activation = check_activation("expert_activation", expert_activation)
        self.k = check_k(k, self.num_experts)
        self.gamma = check_number("gamma", gamma, minimum=0, exclusive=True)
        self.entropy_weight = check_non_negative("entropy_weight", entropy_weight)
        self.per_example = check_bool("per_example", per_example)

    def build_trunk(self, backbone, task_names):
        """A Functional model from the backbone's input to `{task: vector}`."""
        task_names = check_task_names(task_names)
        images, features = pooled_features(backbone, "dselect_k")
        outputs = DSelectKLayer(task_names, name="dselect_k", **self.get_config())(features)
        return keras.Model(images, outputs, name=f"{backbone.name}_dselect_k")

    def get_config(self):
        return {
            "num_experts": self.num_experts,
            "expert_units": list(self.expert_units),
            "expert_activation": self.expert_activation,
            "k": self.k,
            "gamma": self.gamma,
            "entropy_weight": self.entropy_weight,
            "per_example": self.per_example,
        }
