"""`ImagePreprocessing`: a backbone's `preprocess_input`, as a layer.

`keras.applications` models expect their inputs preprocessed by the module's
`preprocess_input` function, which is not a layer and so cannot sit inside a
saved model (a `Lambda` would not load with `safe_mode=True`). This layer
implements the four conventions those functions use, so raw 0-255 images can
be fed to the multi-task model.
"""

import keras
from keras import ops

MODES = ("caffe", "tf", "torch", "none")
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="keras_mtl")
class ImagePreprocessing(keras.layers.Layer):
    """Maps raw RGB images in [0, 255] to what a backbone expects.

    Args:
        mode: One of `"caffe"` (RGB to BGR, minus the ImageNet mean: ResNet,
            VGG), `"tf"` (scale to [-1, 1]: MobileNetV2, Xception, Inception),
            `"torch"` (scale to [0, 1], then ImageNet mean/std: DenseNet) or
            `"none"` (backbones that preprocess inside: EfficientNet,
            MobileNetV3, ConvNeXt).
        **kwargs: Base layer arguments.

    Example:

    >>> layer = ImagePreprocessing("tf")
    >>> float(layer(keras.ops.full((1, 2, 2, 3), 255.0))[0, 0, 0, 0])
    1.0
    """

    def __init__(self, mode="none", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(
                "Invalid value received for argument `mode`. Expected one of "
                f"{MODES}. Received: mode={mode!r}"
            )
        self.mode = mode

    def call(self, images):
        if self.mode == "none":
            # Untouched: a text trunk's token ids or strings must not become
            # floats (float16 rounds ids above 2048); the trunk casts images.
            return images
        images = ops.cast(images, self.compute_dtype)
        if self.mode == "tf":
            return images / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, self.compute_dtype)
            std = ops.convert_to_tensor(_TORCH_STD, self.compute_dtype)
            return (images / 255.0 - mean) / std
        mean = ops.convert_to_tensor(_CAFFE_MEAN_BGR, self.compute_dtype)
        return ops.flip(images, axis=-1) - mean

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
