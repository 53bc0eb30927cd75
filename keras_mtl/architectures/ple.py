"""CGC and PLE: shared and task-specific experts, progressively extracted.

Tang, Liu, Zhao & Gong, "Progressive Layered Extraction (PLE): A Novel
Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020.

Customized Gate Control (CGC, Section 4.2): `m_s` shared experts and `m_k`
experts of each task `k`. Task `k`'s gate is a softmax over its own experts
and the shared ones (eq. 2-4):

    S^k(x) = [E_(k,1), ..., E_(k,m_k), E_(s,1), ..., E_(s,m_s)]
    g^k(x) = softmax(W_k x) · S^k(x)

Progressive Layered Extraction (PLE, Section 4.3): extraction networks
stacked in levels. At level `j`, task `k`'s experts and gate read task `k`'s
output of level `j-1`; the shared experts read the shared output of level
`j-1`, and a shared gate (softmax over *all* the level's experts) gives the
next shared output (eq. 5). The first level reads the input `x` everywhere;
the last level has no shared gate, so it is a CGC. A PLE with one level is
a CGC.

Experts are ReLU MLPs (`keras_mtl.architectures.mmoe.Experts`); gates have
no bias, as in the paper. Images are average-pooled to a vector first (see
`keras_mtl.architectures.mmoe`).
"""

import keras
from keras import ops

from keras_mtl._validation import check_bool
from keras_mtl._validation import check_positive_int
from keras_mtl.architectures.mmoe import Experts
from keras_mtl.architectures.mmoe import check_activation
from keras_mtl.architectures.base import Architecture
from keras_mtl.architectures.base import check_task_names
from keras_mtl.architectures.mmoe import check_units
from keras_mtl.architectures.mmoe import check_vector
from keras_mtl.architectures.mmoe import gate
from keras_mtl.architectures.mmoe import mix
from keras_mtl.architectures.mmoe import pooled_features


@keras.saving.register_keras_serializable(package="keras_mtl")
class ExtractionNetwork(keras.layers.Layer):
    """One level of PLE; with `shared_gate=False`, a CGC layer.

    Input: a vector `(batch, d)` read by every expert and gate (the first
    level), or the previous level's list `[task_1, ..., task_T, shared]`.

    Output: with `shared_gate=False` (the last level, or a CGC), a dict
    `{task: (batch, units)}`; otherwise the list
    `[task_1, ..., task_T, shared]` that the next level reads.

    Args:
        task_names: Names of the tasks, in the order of the list format.
        shared_experts: Number of shared experts `m_s`.
        task_experts: Number of experts of each task `m_k`.
        expert_units: Widths of each expert's Dense layers.
        expert_activation: Activation after each expert layer.
        shared_gate: Whether the level also gives a shared output (a gate
            over all its experts) for the next level.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> cgc = ExtractionNetwork(["a", "b"], shared_experts=2, task_experts=1,
    ...                         expert_units=(4,))
    >>> {k: tuple(v.shape) for k, v in cgc(keras.ops.ones((3, 5))).items()}
    {'a': (3, 4), 'b': (3, 4)}
    """

    def __init__(
        self,
        task_names,
        shared_experts=2,
        task_experts=1,
        expert_units=(64,),
        expert_activation="relu",
        shared_gate=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.task_names = check_task_names(task_names)
        self.shared_experts = check_positive_int("shared_experts", shared_experts)
        self.task_experts = check_positive_int("task_experts", task_experts)
        self.expert_units = check_units("expert_units", expert_units)
        self.expert_activation = check_activation("expert_activation", expert_activation)
        self.shared_gate = check_bool("shared_gate", shared_gate)
        num_tasks = len(self.task_names)

        # === Layers ===
        shared_experts, task_experts = self.shared_experts, self.task_experts

        def experts(n, name):
            return Experts(n, self.expert_units, self.expert_activation, name=name)

        self.shared_expert_group = experts(shared_experts, "shared_experts")
        self.task_expert_groups = [experts(task_experts, f"experts_{t}") for t in self.task_names]
        self.task_gates = [
            gate(task_experts + shared_experts, name=f"gate_{t}") for t in self.task_names
        ]
        self.shared_gate_layer = (
            gate(num_tasks * task_experts + shared_experts, name="gate_shared")
            if self.shared_gate
            else None
        )

    def _split(self, inputs):
        """`(task_inputs, shared_input)` from either input format."""
        if isinstance(inputs, (list, tuple)):
            return list(inputs[:-1]), inputs[-1]
        return [inputs] * len(self.task_names), inputs

    def build(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            if len(input_shape) != len(self.task_names) + 1:
                raise ValueError(
                    f"ExtractionNetwork expects a vector or a list of "
                    f"{len(self.task_names) + 1} vectors [task_1, ..., task_T, "
                    f"shared]. Received {len(input_shape)} inputs."
                )
            task_shapes, shared_shape = list(input_shape[:-1]), input_shape[-1]
        else:
            task_shapes, shared_shape = [input_shape] * len(self.task_names), input_shape
        for shape in (*task_shapes, shared_shape):
            check_vector(type(self).__name__, shape)
        self.shared_expert_group.build(shared_shape)
        for group, g, shape in zip(self.task_expert_groups, self.task_gates, task_shapes):
            group.build(shape)
            g.build(shape)
        if self.shared_gate_layer is not None:
            self.shared_gate_layer.build(shared_shape)

    def gate_values(self, inputs):
        """Each gate's softmax: `{task: (batch, m_k + m_s)}` (own experts
        first), plus `"shared"`: `(batch, T m_k + m_s)` with a shared gate."""
        task_inputs, shared_input = self._split(inputs)
        values = {t: g(x) for t, g, x in zip(self.task_names, self.task_gates, task_inputs)}
        if self.shared_gate_layer is not None:
            values["shared"] = self.shared_gate_layer(shared_input)
        return values

    def call(self, inputs):
        task_inputs, shared_input = self._split(inputs)
        shared = self.shared_expert_group(shared_input)
        own = [group(x) for group, x in zip(self.task_expert_groups, task_inputs)]
        outputs = [
            mix(g(x), ops.concatenate([own_k, shared], axis=1))
            for g, x, own_k in zip(self.task_gates, task_inputs, own)
        ]
        if self.shared_gate_layer is None:
            return dict(zip(self.task_names, outputs))
        every_expert = ops.concatenate([*own, shared], axis=1)
        return [*outputs, mix(self.shared_gate_layer(shared_input), every_expert)]

    def get_config(self):
        return {
            **super().get_config(),
            "task_names": list(self.task_names),
            "shared_experts": self.shared_experts,
            "task_experts": self.task_experts,
            "expert_units": list(self.expert_units),
            "expert_activation": self.expert_activation,
            "shared_gate": self.shared_gate,
        }


@keras.saving.register_keras_serializable(package="keras_mtl")
class PLE(Architecture):
    """The PLE (or, with one level, CGC) architecture for
    `keras_mtl.build_model(..., architecture=)`.

    The trunk is the backbone, global average pooling (when the backbone gives
    a feature map), then `num_levels` `ExtractionNetwork` levels; the last is
    a CGC whose task outputs the heads read.

    Args:
        num_levels: Number of extraction levels (1: CGC).
        shared_experts: Shared experts per level.
        task_experts: Experts of each task per level.
        expert_units: Widths of each expert's Dense layers.
        expert_activation: Activation after each expert layer.

    Example:

    >>> import keras_mtl
    >>> backbone = keras_mtl.tuning.small_cnn((16, 16, 3), filters=(4, 8))
    >>> trunk = PLE(num_levels=2, expert_units=(6,)).build_trunk(backbone, ["a", "b"])
    >>> {k: tuple(v.shape) for k, v in trunk.output.items()}
    {'a': (None, 6), 'b': (None, 6)}
    """

    def __init__(
        self,
        num_levels=2,
        shared_experts=2,
        task_experts=1,
        expert_units=(64,),
        expert_activation="relu",
    ):
        self.num_levels = check_positive_int("num_levels", num_levels)
        self.shared_experts = check_positive_int("shared_experts", shared_experts)
        self.task_experts = check_positive_int("task_experts", task_experts)
        self.expert_units = check_units("expert_units", expert_units)
        self.expert_activation = check_activation("expert_activation", expert_activation)

    def build_trunk(self, backbone, task_names):
        """A Functional model from the backbone's input to `{task: vector}`."""
        task_names = check_task_names(task_names)
        images, h = pooled_features(backbone, "ple")
        for level in range(self.num_levels):
            h = ExtractionNetwork(
                task_names,
                shared_experts=self.shared_experts,
                task_experts=self.task_experts,
                expert_units=self.expert_units,
                expert_activation=self.expert_activation,
                shared_gate=level < self.num_levels - 1,
                name=f"extraction_{level}",
            )(h)
        return keras.Model(images, h, name=f"{backbone.name}_ple")

    def get_config(self):
        return {
            "num_levels": self.num_levels,
            "shared_experts": self.shared_experts,
            "task_experts": self.task_experts,
            "expert_units": list(self.expert_units),
            "expert_activation": self.expert_activation,
        }
