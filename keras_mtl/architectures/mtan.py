"""MTAN: task-specific attention modules over a shared backbone.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention",
CVPR 2019 (arXiv:1803.10704).

The backbone stays shared (the paper's "global feature pool"). At `J` block
boundaries `p_1 ... p_J` of the backbone, each task `t` has an attention
module (`MTANAttention`) that learns a soft mask and applies it element-wise
to the shared feature (paper, eq. 1 and Figure 2):

    a_t^1 = h(g(p_1))                               (the first module)
    a_t^j = h(g([p_j ; f_j(â_t^{j-1})]))            (j > 1)
    â_t^j = a_t^j ⊙ p_j

    g = 1x1 conv, batch norm, ReLU;  h = 1x1 conv, batch norm, sigmoid;
    f_j = 3x3 conv (to p_j's channels), batch norm, ReLU, then pooling (or
          resizing) to p_j's resolution: the paper's "shared feature
          extractor", shared by the tasks at block j.

The trunk outputs `{task: â_t^J}`, the attended last feature map, on which
each task's head is built.

Simplification: the paper feeds a block's *intermediate* feature `u_j` to
the mask and multiplies the mask with the block's *output* `p_j`. A backbone
seen from outside (any `keras.Model`) only offers block boundaries
(`keras_mtl.backbones.cut_points`), so here the block output plays both
roles: `u_j = p_j`. The mask's widths follow the paper's SegNet model (every
1x1 conv has `p_j`'s channel count) by default; `reduction=r` narrows the
first 1x1 conv to `channels // r` (a bottleneck, as in squeeze-and-excitation
blocks), which matters on wide backbones: on ResNet50's 2048-channel last
block, one task's module has 12.6M weights at r=1 and 3.1M at r=4.
"""

import keras
from keras import ops

from keras_mtl._validation import check_positive_int
from keras_mtl.backbones import cut_points
from keras_mtl.architectures.base import Architecture
from keras_mtl.architectures.base import check_blocks
from keras_mtl.architectures.base import check_task_names


@keras.saving.register_keras_serializable(package="keras_mtl")
class MTANAttention(keras.layers.Layer):
    """One task's attention module at one block of the shared backbone.

    Called on the shared feature `p` alone (the first module) or on
    `[p, previous]`, where `previous` is the task's attended feature of the
    previous block already brought to `p`'s shape by the shared feature
    extractor. Returns `mask ⊙ p` with
    `mask = sigmoid(bn(conv1x1(relu(bn(conv1x1(inputs))))))`, `inputs` being
    `p` or the concatenation `[p ; previous]` along channels.

    Args:
        reduction: The first 1x1 conv has `max(1, channels // reduction)`
            filters, `channels` being `p`'s; 1 (the paper's) keeps the width.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> attention = MTANAttention()
    >>> p = keras.ops.ones((2, 4, 4, 3))
    >>> tuple(attention(p).shape), tuple(attention.mask(p).shape)
    ((2, 4, 4, 3), (2, 4, 4, 3))
    >>> narrow = MTANAttention(reduction=4)
    >>> _ = narrow(keras.ops.ones((2, 4, 4, 16)))
    >>> narrow.mask_conv_1.filters
    4
    """

    def __init__(self, reduction=1, **kwargs):
        super().__init__(**kwargs)
        self.reduction = check_positive_int("reduction", reduction)

    def build(self, input_shape):
        shapes = _shapes(input_shape)
        if len(shapes) not in (1, 2) or any(len(s) != 4 for s in shapes):
            raise ValueError(
                "Invalid input of `MTANAttention`. Expected a feature map "
                "(batch, height, width, channels) or a list [shared, previous] "
                f"of two. Received shapes: {input_shape}"
            )
        if len(shapes) == 2 and tuple(shapes[0][1:]) != tuple(shapes[1][1:]):
            raise ValueError(
                "Invalid input of `MTANAttention`. `shared` and `previous` "
                f"must have the same shape. Received shapes: {input_shape}"
            )
        channels = shapes[0][-1]
        hidden = max(1, channels // self.reduction)
        self.mask_conv_1 = keras.layers.Conv2D(hidden, 1, name="mask_conv_1")
        self.mask_norm_1 = keras.layers.BatchNormalization(name="mask_norm_1")
        self.mask_conv_2 = keras.layers.Conv2D(channels, 1, name="mask_conv_2")
        self.mask_norm_2 = keras.layers.BatchNormalization(name="mask_norm_2")
        concatenated = (*shapes[0][:-1], sum(s[-1] for s in shapes))
        self.mask_conv_1.build(concatenated)
        self.mask_norm_1.build((*shapes[0][:-1], hidden))
        self.mask_conv_2.build((*shapes[0][:-1], hidden))
        self.mask_norm_2.build((*shapes[0][:-1], channels))

    def mask(self, inputs, training=None):
        """The attention mask `a` (values in (0, 1), `p`'s shape)."""
        features = ops.concatenate(inputs, axis=-1) if isinstance(inputs, (list, tuple)) else inputs
        h = self.mask_norm_1(self.mask_conv_1(features), training=training)
        h = self.mask_norm_2(self.mask_conv_2(ops.relu(h)), training=training)
        return ops.sigmoid(h)

    def call(self, inputs, training=None):
        shared = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        return self.mask(inputs, training=training) * shared

    def compute_output_shape(self, input_shape):
        return tuple(_shapes(input_shape)[0])

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction}


def _shapes(input_shape):
    """A list of shapes from a single shape or a list of them."""
    if input_shape and isinstance(input_shape[0], (list, tuple)):
        return [tuple(s) for s in input_shape]
    return [tuple(input_shape)]


@keras.saving.register_keras_serializable(package="keras_mtl")
class MTAN(Architecture):
    """Multi-Task Attention Network (Liu, Johns & Davison 2019).

    An architecture for `keras_mtl.build_model(..., architecture=MTAN())`:
    the backbone is shared and each task reads it through its own attention
    modules at `blocks` block boundaries (see the module docstring for the
    equations and the one simplification). The trunk maps images to
    `{task: attended feature map of the last block}`.

    Args:
        blocks: Where the attention modules go: `None` (up to 3 block
            boundaries evenly spread over the backbone, always including the
            last), an integer (that many, spread the same way) or a list of
            layer names among `keras_mtl.backbones.cut_points(backbone)`.
            The trunk ends at the last of them: backbone layers after it
            (e.g. a global pooling) are not used.
        reduction: Width of the masks' first 1x1 conv: the block's channels
            divided by this (an integer >= 1). 1, the default, is the
            paper's; 4 cuts the attention modules' weights by about 4 on
            wide backbones.

    Example:

    >>> import keras
    >>> backbone = keras.Sequential([keras.Input((16, 16, 3)),
    ...     keras.layers.Conv2D(4, 3, strides=2, name="block_1"),
    ...     keras.layers.Conv2D(8, 3, strides=2, name="block_2")])
    >>> trunk = MTAN().build_trunk(backbone, ["age", "gender"])
    >>> outputs = trunk(keras.ops.zeros((2, 16, 16, 3)))
    >>> {name: tuple(z.shape) for name, z in outputs.items()}
    {'age': (2, 3, 3, 8), 'gender': (2, 3, 3, 8)}
    """

    def __init__(self, blocks=None, reduction=1):
        self.blocks = check_blocks(blocks, minimum=1)
        self.reduction = check_positive_int("reduction", reduction)

    def select_blocks(self, backbone):
        """Names of the backbone layers whose outputs get attention modules,
        in the backbone's order."""
        points = [name for _, name in cut_points(backbone)]
        if not points:
            raise ValueError(
                "Invalid value received for argument `backbone`. MTAN needs a "
                "Functional or Sequential model with feature-map block "
                f"boundaries; {backbone.name!r} has none."
            )
        if isinstance(self.blocks, list):
            unknown = [b for b in self.blocks if b not in points]
            if unknown:
                raise ValueError(
                    "Invalid value received for argument `blocks`. Expected "
                    f"names of block boundaries of {backbone.name!r}: {points}. "
                    f"Received: blocks={self.blocks!r} (unknown: {unknown})"
                )
            return [p for p in points if p in self.blocks]
        count = min(3, len(points)) if self.blocks is None else self.blocks
        if count > len(points):
            raise ValueError(
                "Invalid value received for argument `blocks`. Expected at most "
                f"{len(points)} (the block boundaries of {backbone.name!r}: "
                f"{points}). Received: blocks={self.blocks}"
            )
        # Evenly spread, the last one always the last boundary.
        return [points[round((i + 1) * len(points) / count) - 1] for i in range(count)]

    def build_trunk(self, backbone, task_names):
        """The trunk: backbone input to `{task: attended feature map}`.

        Args:
            backbone: A Functional or Sequential `keras.Model` with one input.
            task_names: The task names (the output keys).

        Returns:
            A Functional `keras.Model` sharing the backbone's layers.
        """
        task_names = check_task_names(task_names)
        blocks = self.select_blocks(backbone)
        features = [backbone.get_layer(name).output for name in blocks]

        # === Layers ===
        attention = {
            t: [
                MTANAttention(self.reduction, name=f"mtan_{t}_attention_{j}")
                for j in range(len(blocks))
            ]
            for t in task_names
        }
        extractors = [None] + [
            _feature_extractor(features[j - 1].shape, features[j].shape, f"mtan_extractor_{j}")
            for j in range(1, len(blocks))
        ]

        # === Functional Model ===
        outputs = {}
        for t in task_names:
            attended = attention[t][0](features[0])
            for j in range(1, len(blocks)):
                previous = attended
                for layer in extractors[j]:
                    previous = layer(previous)
                attended = attention[t][j]([features[j], previous])
            outputs[t] = attended
        return keras.Model(backbone.inputs[0], outputs, name=f"{backbone.name}_mtan")

    def get_config(self):
        return {"blocks": self.blocks, "reduction": self.reduction}


def _feature_extractor(previous_shape, shape, name):
    """The paper's shared feature extractor `f_j`: 3x3 conv, BN, ReLU, then
    pooling (an integer downsampling, as the paper's encoder) or a bilinear
    resize to the block's resolution."""
    (_, ph, pw, _), (_, h, w, channels) = previous_shape, shape
    if None in (ph, pw, h, w):
        raise ValueError(
            "Invalid value received for argument `backbone`. MTAN needs "
            "block outputs of known height and width (build the backbone with "
            f"a fixed `input_shape`). Received block shapes {previous_shape} "
            f"and {shape}."
        )
    layers = [
        keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{name}_conv"),
        keras.layers.BatchNormalization(name=f"{name}_norm"),
        keras.layers.ReLU(name=f"{name}_relu"),
    ]
    if (ph, pw) == (h, w):
        return layers
    if ph % h == 0 and pw % w == 0 and ph // h == pw // w:
        return layers + [keras.layers.MaxPooling2D(ph // h, name=f"{name}_pool")]
    return layers + [keras.layers.Resizing(h, w, name=f"{name}_resize")]
