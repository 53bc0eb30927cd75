"""Cross-stitch networks: one tower per task, mixed linearly between blocks.

Misra, Shrivastava, Gupta & Hebert, "Cross-stitch Networks for Multi-task
Learning", CVPR 2016 (arXiv:1604.03539). Each task has its own copy of the
network; after chosen layers a cross-stitch unit replaces each task's
activation map by a learned linear combination of all tasks' maps (eq. 1,
written for `T` tasks):

    x'_i = Σ_j α_ij x_j

with one `T × T` matrix `α` per unit, or one per channel (the paper's
per-channel variant). The paper initialises `α` as a convex combination,
`α_S = 0.9` for a task's own map and `α_D = 0.1` for the other's (two
tasks); for `T` tasks we spread `1 - α_S` evenly: `α_D = 0.1 / (T - 1)`.
`α` is then learned freely (no constraint), as in the paper.

`CrossStitchNetwork` builds the towers from a backbone: it cuts the backbone
at block boundaries (`keras_mtl.backbones.cut_points`, never inside a
residual block), clones each segment once per task with
`keras.models.clone_model`, and puts a `CrossStitch` unit after every segment
but the last. By default every tower starts from the backbone's weights (the
paper starts both towers from the same ImageNet-trained network); with
`copy_weights=False` they start from fresh initialisations.

The paper trains `α` with a learning rate 10^2-10^3 times the network's
(its `α` gradients are small with SGD). By default `α` uses the model's
optimiser like any weight; for the paper's recipe, give the units their own
rate: `keras_mtl.optimizers.LearningRateMultipliers(optimizer,
{"cross_stitch_*": 100})`.
"""

import keras
import numpy as np
from keras import ops

from keras_mtl._validation import check_bool
from keras_mtl._validation import check_fraction
from keras_mtl.architectures.base import Architecture
from keras_mtl.architectures.base import check_blocks
from keras_mtl.architectures.base import check_task_names
from keras_mtl.backbones import cut_points

_INITS = ("paper", "identity")


def _check_init(init):
    """`init` as given if a name in `_INITS`, as a `float` if a number in
    [0, 1] (NumPy's too), else a Keras-style `ValueError`."""
    if isinstance(init, str) and init in _INITS:
        return init
    try:
        return check_fraction("init", init)
    except ValueError:
        pass
    raise ValueError(
        "Invalid value received for argument `init`. Expected 'paper', "
        "'identity' or a float in [0, 1] (the weight of a task's own map, "
        f"the rest spread evenly over the others). Received: init={init!r}"
    )


def stitch_matrix(init, num_tasks):
    """The initial `(T, T)` `α` of a cross-stitch unit (rows sum to 1).

    Example:

    >>> stitch_matrix(0.5, 3).tolist()
    [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]]
    """
    same = {"paper": 0.9, "identity": 1.0}.get(init, init)
    if num_tasks == 1:
        return np.ones((1, 1))
    other = (1.0 - same) / (num_tasks - 1)
    return np.where(np.eye(num_tasks, dtype=bool), same, other)


@keras.saving.register_keras_serializable(package="keras_mtl")
class CrossStitch(keras.layers.Layer):
    """A cross-stitch unit: `x'_i = Σ_j α_ij x_j` over `T` same-shape tensors.

    Args:
        init: Initial `α`: `"paper"` (0.9 on the diagonal, `0.1 / (T - 1)`
            elsewhere), `"identity"` (independent towers), or a float `a` in
            [0, 1] (`a` on the diagonal, `(1 - a) / (T - 1)` elsewhere).
        per_channel: One `α` per channel (last axis), shape `(T, T, C)`,
            instead of one `(T, T)` matrix for the whole map.
        **kwargs: Base layer arguments (`name`, ...).

    Input: a list of `T` tensors of the same shape, or a dict of them (then
    `α`'s rows and columns follow the sorted keys).

    Returns:
        The mixed tensors, in the input's structure.

    Example:

    >>> stitch = CrossStitch(init=0.75)
    >>> a, b = stitch([keras.ops.ones((1, 2)), keras.ops.zeros((1, 2))])
    >>> keras.ops.convert_to_numpy(a).tolist(), keras.ops.convert_to_numpy(b).tolist()
    ([[0.75, 0.75]], [[0.25, 0.25]])
    """

    def __init__(self, init="paper", per_channel=False, **kwargs):
        super().__init__(**kwargs)
        self.init = _check_init(init)
        self.per_channel = check_bool("per_channel", per_channel)

    def build(self, input_shape):
        shapes = list(input_shape.values()) if isinstance(input_shape, dict) else input_shape
        if not isinstance(shapes, (list, tuple)) or not shapes or not all(
            isinstance(s, (list, tuple)) for s in shapes
        ):
            raise ValueError(
                "CrossStitch expects a list or dict of tensors (one per task). "
                f"Received input shape {input_shape!r}."
            )
        shapes = [tuple(s) for s in shapes]
        if any(s[1:] != shapes[0][1:] for s in shapes):
            raise ValueError(
                "CrossStitch expects tensors of the same shape (one per task). "
                f"Received shapes {shapes}."
            )
        num_tasks = len(shapes)
        matrix = stitch_matrix(self.init, num_tasks)
        shape = (num_tasks, num_tasks)
        if self.per_channel:
            channels = shapes[0][-1]
            matrix = matrix[:, :, None].repeat(channels, axis=2)
            shape = (num_tasks, num_tasks, channels)
        self.alpha = self.add_weight(
            name="alpha", shape=shape, initializer=keras.initializers.Constant(0.0)
        )
        self.alpha.assign(matrix)

    def call(self, inputs):
        keys = sorted(inputs) if isinstance(inputs, dict) else None
        tensors = [inputs[k] for k in keys] if keys else list(inputs)
        alpha = ops.cast(self.alpha, tensors[0].dtype)
        # x'_i = Σ_j alpha[i, j] x_j (per channel: alpha[i, j] is a (C,)
        # vector, broadcast over batch and spatial axes). A plain sum of
        # products: XLA on CPU crashes on the stacked 5-d broadcast under
        # JAX's jit + jacrev (gradient-level methods in params mode).
        count = len(tensors)
        outputs = [
            sum(alpha[i, j] * tensors[j] for j in range(count)) for i in range(count)
        ]
        return dict(zip(keys, outputs)) if keys else outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "init": self.init, "per_channel": self.per_channel}


@keras.saving.register_keras_serializable(package="keras_mtl")
class CrossStitchNetwork(Architecture):
    """The cross-stitch architecture for `keras_mtl.build_model(..., architecture=)`.

    One tower per task, each a copy of the backbone cut into segments at
    block boundaries, with a `CrossStitch` unit after every segment but the
    last. The trunk's output for a task is its tower's last feature map.

    Args:
        blocks: Where to cut: `None` (after every block boundary of
            `keras_mtl.backbones.cut_points`, the backbone's output excepted),
            an integer `n` (`n` units at boundaries spread evenly; 0 gives
            independent towers), or a list of cut-point layer names.
        init: Initial `α` of each unit (see `CrossStitch`).
        per_channel: Per-channel `α` (see `CrossStitch`).
        copy_weights: Whether each tower starts from the backbone's weights
            (e.g. ImageNet); `False` initialises each afresh.

    Example:

    >>> import keras_mtl
    >>> backbone = keras_mtl.tuning.small_cnn((16, 16, 3), filters=(4, 8))
    >>> trunk = CrossStitchNetwork().build_trunk(backbone, ["a", "b"])
    >>> {k: tuple(v.shape) for k, v in trunk.output.items()}
    {'a': (None, 4, 4, 8), 'b': (None, 4, 4, 8)}
    >>> [layer.name for layer in trunk.layers if isinstance(layer, CrossStitch)]
    ['cross_stitch_0']
    """

    def __init__(self, blocks=None, init="paper", per_channel=False, copy_weights=True):
        self.blocks = check_blocks(blocks, minimum=0)
        self.init = _check_init(init)
        self.per_channel = check_bool("per_channel", per_channel)
        self.copy_weights = check_bool("copy_weights", copy_weights)

    def cuts(self, backbone):
        """Names of the layers after which `backbone` is cut, in graph order."""
        output = backbone.outputs[0]
        candidates = [
            name for _, name in cut_points(backbone)
            if backbone.get_layer(name).output is not output
        ]
        if self.blocks is None or isinstance(self.blocks, int):
            count = len(candidates) if self.blocks is None else self.blocks
            if count > len(candidates) or (self.blocks is None and not candidates):
                raise ValueError(
                    "Invalid value received for argument `blocks`. Expected at "
                    f"most {len(candidates)} cross-stitch units: the block "
                    f"boundaries of {backbone.name!r} (its output excepted) are "
                    f"{candidates}. Received: blocks={self.blocks!r}"
                )
            # `count` boundaries spread evenly over the candidates.
            step = (len(candidates) + 1) / (count + 1)
            return [candidates[round((k + 1) * step) - 1] for k in range(count)]
        unknown = [b for b in self.blocks if b not in candidates]
        if unknown:
            raise ValueError(
                "Invalid value received for argument `blocks`. Expected names of "
                f"block boundaries of {backbone.name!r} (its output excepted): "
                f"{candidates}. Received: blocks={self.blocks!r} (unknown: {unknown})"
            )
        return [name for name in candidates if name in self.blocks]

    def segments(self, backbone):
        """The backbone cut into consecutive Functional models (sharing its
        layers), one per segment."""
        ends = [backbone.get_layer(name).output for name in self.cuts(backbone)]
        starts = [backbone.inputs[0], *ends]
        ends = [*ends, backbone.outputs[0]]
        return [
            keras.Model(start, end, name=f"segment_{i}")
            for i, (start, end) in enumerate(zip(starts, ends))
        ]

    def build_trunk(self, backbone, task_names):
        """A Functional model from the backbone's input to `{task: map}`."""
        task_names = check_task_names(task_names)
        segments = self.segments(backbone)

        # === Layers ===
        towers = {}
        for task in task_names:
            towers[task] = []
            for i, segment in enumerate(segments):
                copy = keras.models.clone_model(segment)
                copy.name = f"{task}_segment_{i}"
                if self.copy_weights:
                    copy.set_weights(segment.get_weights())
                towers[task].append(copy)
        stitches = [
            CrossStitch(init=self.init, per_channel=self.per_channel, name=f"cross_stitch_{i}")
            for i in range(len(segments) - 1)
        ]

        # === Functional Model ===
        images = keras.Input(
            shape=tuple(backbone.inputs[0].shape[1:]), dtype=backbone.inputs[0].dtype
        )
        xs = [images] * len(task_names)
        for i in range(len(segments)):
            xs = [towers[task][i](x) for task, x in zip(task_names, xs)]
            if i < len(stitches):
                xs = stitches[i](xs)
        return keras.Model(images, dict(zip(task_names, xs)), name=f"{backbone.name}_cross_stitch")

    def get_config(self):
        return {
            "blocks": self.blocks,
            "init": self.init,
            "per_channel": self.per_channel,
            "copy_weights": self.copy_weights,
        }
