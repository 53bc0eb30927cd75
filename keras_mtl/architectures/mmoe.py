"""MMoE: a multi-gate mixture of experts on the shared representation.

Ma, Zhao, Yi, Chen, Hong & Chi, "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD 2018. Eq. (5)-(6): `n`
experts `f_i` (identical MLPs with ReLU activations) read the same input `x`,
and task `k` has its own gate, a softmax over the experts of a linear map of
the input (no bias):

    g^k(x) = softmax(W_gk x)            W_gk: (n, d)
    f^k(x) = Σ_i g^k(x)_i f_i(x)

`f^k(x)` is task `k`'s representation, read by its head (the paper's tower).

`Experts` (a group of expert MLPs evaluated together) and `mix` (the gated
sum) are also the building blocks of PLE (`keras_mtl.architectures.ple`).

The input is a vector `(batch, d)`: the `MMoE` architecture pools a backbone's
feature map with `GlobalAveragePooling2D` first (the paper's inputs are
embedding vectors; pooling is our choice to bring images to that form).
"""

import keras
from keras import ops

from keras_mtl._validation import check_ints
from keras_mtl._validation import check_positive_int
from keras_mtl.architectures.base import Architecture
from keras_mtl.architectures.base import check_task_names


def check_units(argument, units):
    """`units` as a tuple of positive `int`s (one per Dense layer; NumPy
    integers accepted)."""
    return check_ints(argument, units, minimum=1)


def check_activation(argument, activation):
    try:
        keras.activations.get(activation)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected a "
            f"Keras activation name such as 'relu'. Received: {argument}={activation!r}"
        ) from error
    return activation


def check_vector(layer_name, shape):
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            f"{layer_name} expects vectors (batch, features); pool a feature "
            f"map first. Received an input of shape {tuple(shape)}."
        )


def mix(gates, experts):
    """The gated sum `Σ_i gates[:, i] experts[:, i]`.

    Args:
        gates: `(batch, num_experts)`, rows summing to 1.
        experts: `(batch, num_experts, units)`.

    Returns:
        `(batch, units)`.
    """
    return ops.einsum("be,beu->bu", gates, experts)


@keras.saving.register_keras_serializable(package="keras_mtl")
class Experts(keras.layers.Layer):
    """A group of expert MLPs that read the same input.

    Each expert is a stack of Dense layers with `activation` after every one
    (the papers' ReLU MLPs). The experts of a group are evaluated together:
    layer `l` of all experts is one `(num_experts, d_in, units[l])` kernel.

    Args:
        num_experts: Number of experts.
        units: Widths of each expert's Dense layers.
        activation: Activation after each Dense layer.
        **kwargs: Base layer arguments (`name`, ...).

    Returns:
        `(batch, num_experts, units[-1])`: every expert's output.

    Example:

    >>> experts = Experts(3, units=(8, 4))
    >>> tuple(experts(keras.ops.ones((2, 5))).shape)
    (2, 3, 4)
    """

    def __init__(self, num_experts, units=(64,), activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.num_experts = check_positive_int("num_experts", num_experts)
        self.units = check_units("units", units)
        self.activation = check_activation("activation", activation)
        self._activation = keras.activations.get(activation)

    def build(self, input_shape):
        check_vector(type(self).__name__, input_shape)
        self.kernels, self.biases = [], []
        fan_in = input_shape[-1]
        for i, width in enumerate(self.units):
            # Each expert is initialised like a Dense layer (Glorot uniform on
            # its own (fan_in, width) kernel), not on the stacked shape.
            limit = (6.0 / (fan_in + width)) ** 0.5
            self.kernels.append(
                self.add_weight(
                    name=f"kernel_{i}",
                    shape=(self.num_experts, fan_in, width),
                    initializer=keras.initializers.RandomUniform(-limit, limit),
                )
            )
            self.biases.append(
                self.add_weight(
                    name=f"bias_{i}", shape=(self.num_experts, width), initializer="zeros"
                )
            )
            fan_in = width

    def call(self, inputs):
        h = self._activation(ops.einsum("bd,edu->beu", inputs, self.kernels[0]) + self.biases[0])
        for kernel, bias in zip(self.kernels[1:], self.biases[1:]):
            h = self._activation(ops.einsum("bed,edu->beu", h, kernel) + bias)
        return h

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_experts, self.units[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "units": list(self.units),
            "activation": self.activation,
        }


def gate(num_experts, name):
    """A softmax gate over `num_experts` experts: `softmax(W x)`, no bias."""
    return keras.layers.Dense(num_experts, activation="softmax", use_bias=False, name=name)


@keras.saving.register_keras_serializable(package="keras_mtl")
class MMoELayer(keras.layers.Layer):
    """Multi-gate mixture of experts (Ma et al. 2018).

    Maps a vector `x` to one representation per task,
    `f^k(x) = Σ_i softmax(W_gk x)_i f_i(x)`, with experts `f_i` shared by
    all tasks and one gate per task.

    Args:
        task_names: Names of the tasks (the keys of the output).
        num_experts: Number of experts.
        expert_units: Widths of each expert's Dense layers.
        expert_activation: Activation after each expert layer.
        **kwargs: Base layer arguments (`name`, ...).

    Returns:
        A dict `{task: (batch, expert_units[-1])}`.

    Example:

    >>> layer = MMoELayer(["age", "gender"], num_experts=3, expert_units=(8,))
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.task_names = check_task_names(task_names)
        self.num_experts = check_positive_int("num_experts", num_experts)
        self.expert_units = check_units("expert_units", expert_units)
        self.expert_activation = check_activation("expert_activation", expert_activation)

        # === Layers ===
        self.experts = Experts(
            self.num_experts, self.expert_units, self.expert_activation, name="experts"
        )
        self.gates = [gate(self.num_experts, name=f"gate_{t}") for t in self.task_names]

    def build(self, input_shape):
        check_vector(type(self).__name__, input_shape)
        self.experts.build(input_shape)
        for g in self.gates:
            g.build(input_shape)

    def gate_values(self, inputs):
        """Each task's gate, `{task: (batch, num_experts)}`; rows sum to 1."""
        return {t: g(inputs) for t, g in zip(self.task_names, self.gates)}

    def call(self, inputs):
        experts = self.experts(inputs)
        return {t: mix(g(inputs), experts) for t, g in zip(self.task_names, self.gates)}

    def compute_output_shape(self, input_shape):
        return {t: (input_shape[0], self.expert_units[-1]) for t in self.task_names}

    def get_config(self):
        return {
            **super().get_config(),
            "task_names": list(self.task_names),
            "num_experts": self.num_experts,
            "expert_units": list(self.expert_units),
            "expert_activation": self.expert_activation,
        }


def pooled_features(backbone, name):
    """`(images, features)`: a new input, and the backbone's output on it as
    a vector (a 4-d feature map is average-pooled)."""
    images = keras.Input(
        shape=tuple(backbone.inputs[0].shape[1:]), dtype=backbone.inputs[0].dtype
    )
    features = backbone(images)
    if len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(features)
    elif len(features.shape) != 2:
        raise ValueError(
            "Invalid value received for argument `backbone`. Expected a model "
            "whose output is a feature map (batch, height, width, channels) "
            f"or a vector (batch, features). Received output shape {features.shape}."
        )
    return images, features


@keras.saving.register_keras_serializable(package="keras_mtl")
class MMoE(Architecture):
    """The MMoE architecture for `keras_mtl.build_model(..., architecture=)`.

    The trunk is the backbone, global average pooling (when the backbone
    gives a feature map), then an `MMoELayer`: each task's head reads its own
    mixture of the shared experts.

    Args:
        num_experts: Number of experts.
        expert_units: Widths of each expert's Dense layers.
        expert_activation: Activation after each expert layer.

    Example:

    >>> import keras_mtl
    >>> backbone = keras_mtl.tuning.small_cnn((16, 16, 3), filters=(4, 8))
    >>> trunk = MMoE(num_experts=2, expert_units=(6,)).build_trunk(backbone, ["a", "b"])
    >>> {k: tuple(v.shape) for k, v in trunk.output.items()}
    {'a': (None, 6), 'b': (None, 6)}
    """

    def __init__(self, num_experts=4, expert_units=(64,), expert_activation="relu"):
        self.num_experts = check_positive_int("num_experts", num_experts)
        self.expert_units = check_units("expert_units", expert_units)
        self.expert_activation = check_activation("expert_activation", expert_activation)

    def build_trunk(self, backbone, task_names):
        """A Functional model from the backbone's input to `{task: vector}`."""
        task_names = check_task_names(task_names)
        images, features = pooled_features(backbone, "mmoe")
        outputs = MMoELayer(
            task_names,
            num_experts=self.num_experts,
            expert_units=self.expert_units,
            expert_activation=self.expert_activation,
            name="mmoe",
        )(features)
        return keras.Model(images, outputs, name=f"{backbone.name}_mmoe")

    def get_config(self):
        return {
            "num_experts": self.num_experts,
            "expert_units": list(self.expert_units),
            "expert_activation": self.expert_activation,
        }
