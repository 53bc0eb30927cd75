"""`small_cnn`: the package's one small convolutional trunk, for small images,
tests, the tuner's `"small_cnn"` backbone and (deeper, with batch norm) the
demo (`keras_mtl.demo.demo_trunk`).
"""

import keras

from keras_mtl._validation import check_bool
from keras_mtl._validation import check_ints
from keras_mtl._validation import check_positive_int
from keras_mtl.backbones.resolve import check_input_shape

def small_cnn(
    input_shape, filters=(16, 32, 64), *, convs_per_block=1, batch_norm=False, name="small_cnn"
):
    """A small CNN trunk that takes raw 0-255 images.

    After a 1/255 rescaling, one block per entry of `filters`: a 3x3
    stride-2 convolution, then `convs_per_block - 1` stride-1 ones, each
    followed by a ReLU (and, with `batch_norm`, a BatchNormalization before
    it, in which case the convolutions have no bias). The feature map is
    `2 ** len(filters)` times smaller than the image. Each block ends with a
    layer that is a cut point (`keras_mtl.backbones.cut_points`).

    BatchNormalization uses momentum 0.9, so its moving statistics, and hence
    validation metrics, are usable after a few hundred steps
    (`keras.applications` models use 0.99-0.999, made for long ImageNet runs).

    Layers are named `block<i>_conv` (one convolution per block, no batch
    norm) or `block<i>_conv<j>`, `block<i>_conv<j>_bn`, `block<i>_conv<j>_relu`.

    Args:
        input_shape: `(height, width, channels)` of the images.
        filters: Channels of each block.
        convs_per_block: Convolutions per block, an integer >= 1.
        batch_norm: Whether each convolution is followed by
            BatchNormalization.
        name: Name of the model.

    Returns:
        A Functional `keras.Model` from images to a feature map.

    Example:

    >>> small_cnn((32, 32, 3)).output.shape
    (None, 4, 4, 64)
    >>> deeper = small_cnn((32, 32, 3), (32, 64, 96), convs_per_block=2, batch_norm=True)
    >>> deeper.output.shape, deeper.layers[-1].name
    ((None, 4, 4, 96), 'block2_conv1_relu')
    """
    input_shape = check_input_shape(input_shape)
    filters = check_ints("filters", filters, minimum=1)
    convs_per_block = check_positive_int("convs_per_block", convs_per_block)
    batch_norm = check_bool("batch_norm", batch_norm)

    images = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="rescaling")(images)
    for block, width in enumerate(filters):
        for conv in range(convs_per_block):
            strides = 2 if conv == 0 else 1
            if convs_per_block == 1 and not batch_norm:
                prefix = f"block{block}_conv"
            else:
                prefix = f"block{block}_conv{conv}"
            if not batch_norm:
                x = keras.layers.Conv2D(
                    width, 3, strides=strides, padding="same", activation="relu", name=prefix
                )(x)
                continue
            x = keras.layers.Conv2D(
                width, 3, strides=strides, padding="same", use_bias=False, name=prefix
            )(x)
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"{prefix}_bn")(x)
            x = keras.layers.ReLU(name=f"{prefix}_relu")(x)
    return keras.Model(images, x, name=name)
