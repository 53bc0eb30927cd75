"""The backbone and branch-point dimensions of the search: the backbones known
by name, and `cut_backbone`, which cuts a backbone at a share of its depth
(the heads branch off there).
"""

import keras

from keras_mtl._optional import require
from keras_mtl.backbones import cut_points
from keras_mtl.backbones import small_cnn
from keras_mtl.backbones.graph import operations
from keras_mtl.tuning.checks import check_fraction

keras_tuner = require("keras_tuner", "keras_mtl.tuning (KerasTuner search)")

#: Backbones known by name besides `keras.applications`.
BUILTIN_BACKBONES = {"small_cnn": small_cnn}


def cut_backbone(model, fraction):
    """Cuts `model` at the last cut point at or before `fraction` of its depth.

    Args:
        model: A Functional or Sequential `keras.Model` (see `cut_points`).
        fraction: A float in (0, 1]: the share of the model's operations, in
            topological order, that stays shared. 1.0 returns `model` as it
            is; a fraction before the first cut point gives the first one.

    Returns:
        A `keras.Model` from the model's input to the chosen layer's output
        (sharing the model's layers and weights).

    Example:

    >>> trunk = cut_backbone(small_cnn((16, 16, 3)), 0.75)
    >>> trunk.output.shape  # operations: input, rescaling, conv0, conv1, conv2
    (None, 4, 4, 32)
    """
    fraction = check_fraction("fraction", fraction)
    if fraction == 1.0:
        return model
    points = cut_points(model)
    if not points:
        raise keras_tuner.errors.FatalValueError(
            f"Cannot branch backbone {model.name!r} at shared_fraction={fraction}: "
            "it has no cut point (a subclassed model, or no layer with a single "
            "feature-map output that ends a block). Use `branch_points=(1.0,)` "
            "or a Functional backbone."
        )
    depth = len(operations(model)) - 1
    before = [p for p in points if p[0] <= fraction * depth]
    index, name = before[-1] if before else points[0]
    if index == depth:
        return model
    layer = model.get_layer(name)
    return keras.Model(model.inputs, layer.output, name=f"{model.name}_to_{name}")
