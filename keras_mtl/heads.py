"""Task heads: small models from the shared representation to one output.

A vector head pools the feature map and runs a stack of dense layers; a dense
head decodes the feature map back to input resolution (bilinear upsampling
and 3x3 convolutions, as light decoders in the MTL literature do). Each head
is a Functional model named after its task, so it can be called on the
representation on its own (gradient methods need that).
"""

import math

import keras

from keras_mtl._validation import check_fraction
from keras_mtl._validation import check_ints
from keras_mtl.adversarial import GradientReversal


def build_head(task, feature_shape, image_shape, units=(256,), dropout=0.0):
    """Builds the head of `task` on a representation of `feature_shape`.

    Args:
        task: A `keras_mtl.tasks.Task`.
        feature_shape: Shape of the representation without the batch axis:
            `(height, width, channels)` or `(features,)`.
        image_shape: `(height, width, channels)` of the model's input (dense
            heads decode back to its height and width).
        units: Widths of the hidden dense layers of vector heads (positive
            integers, possibly none); the first one also sets the width of
            dense decoders.
        dropout: Dropout rate after each hidden layer, in [0, 1].

    Returns:
        A `keras.Model` named `task.name`.

    Example:

    >>> from keras_mtl.tasks import Regression
    >>> head = build_head(Regression("age"), (2, 2, 8), (64, 64, 3), units=(16,))
    >>> head.output.shape
    (None, 1)
    """
    units = check_ints("units", units, minimum=1, min_length=0)
    dropout = check_fraction("dropout", dropout)
    features = keras.Input(shape=feature_shape, name=f"{task.name}_features")
    x = features
    if task.gradient_reversal is not None:
        # An adversarial task: the head learns it, the trunk unlearns it.
        x = GradientReversal(task.gradient_reversal, name="gradient_reversal")(x)
    if task.kind == "dense":
        outputs = _dense_decoder(task, x, image_shape, units, dropout)
    else:
        outputs = _vector_head(task, x, units, dropout)
    return keras.Model(features, outputs, name=task.name)


def _vector_head(task, x, units, dropout):
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    for i, width in enumerate(units):
        x = keras.layers.Dense(width, activation="relu", name=f"dense_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    outputs = keras.layers.Dense(
        task.output_channels, activation=task.activation, name="predictions"
    )(x)
    normalize = getattr(task, "normalize", None)
    if normalize is not None:
        # Predictions in the labels' units: `mean + std * output`.
        mean, std = normalize
        outputs = keras.layers.Rescaling(scale=std, offset=mean, name="denormalize")(outputs)
    return outputs


def _dense_decoder(task, x, image_shape, units, dropout):
    height, width = image_shape[:2]
    ratio = max(height / x.shape[1], width / x.shape[2])
    stages = max(0, math.ceil(math.log2(ratio)))
    base = units[0] if units else 64
    for i in range(stages):
        x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"up_{i}")(x)
        x = keras.layers.Conv2D(
            max(16, base // 2**i), 3, padding="same", activation="relu",
            name=f"conv_{i}",
        )(x)
        if dropout:
            x = keras.layers.SpatialDropout2D(dropout, name=f"dropout_{i}")(x)
    if (x.shape[1], x.shape[2]) != (height, width):
        x = keras.layers.Resizing(height, width, interpolation="bilinear", name="resize")(x)
    return keras.layers.Conv2D(
        task.output_channels, 1, activation=task.activation, name="predictions"
    )(x)
