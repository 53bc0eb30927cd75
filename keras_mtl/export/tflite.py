"""A multi-task model as a TFLite flat buffer, optionally quantised (dynamic
range, float16 or full int8), for on-device, real-time use (seed 000:
pruning and quantisation).

The conversion goes through a SavedModel of the forward pass (each head's
output, keyed by task); the file is written whole or not at all
(`keras_mtl.export.versioning`).
"""

import os
import tempfile

import keras
import numpy as np

from keras_mtl._optional import require
from keras_mtl._validation import check_bool
from keras_mtl.export import versioning
from keras_mtl.export.saved_model import DEFAULT_SIGNATURE
from keras_mtl.export.saved_model import check_input_name
from keras_mtl.export.saved_model import check_model
from keras_mtl.export.saved_model import input_spec

tf = require("tensorflow", "keras_mtl.export (SavedModel, TFLite)")

QUANTIZATIONS = (None, "dynamic", "float16", "int8")


def export_tflite(
    model,
    path,
    *,
    quantization=None,
    representative_data=None,
    input_name="image",
    overwrite=False,
):
    """Converts a multi-task model to a TFLite flat buffer.

    The `.tflite` model has one signature, `serving_default`: the image
    input `input_name` (batch size free, float32 for image models) and one
    output per task, named after it: the head's output as `model.predict`
    gives it (probabilities or values). Class ids and names are left to the
    application (TFLite's builtin ops carry no strings).

    Quantization:

    - `None`: float32, the same numbers as Keras;
    - `"dynamic"`: weights stored as int8 and dequantised on the fly
      (TFLite leaves tensors under 1024 values, e.g. small heads, in float);
    - `"float16"`: weights stored as float16 (half the size, GPU delegates
      run it in float16);
    - `"int8"`: full integer quantisation of weights and activations,
      calibrated on `representative_data`; every op must have an int8
      kernel (the conversion fails otherwise, rather than keep float ops
      silently). Input and outputs stay float32 (quantised at the edges).

    Args:
        model: A built `keras_mtl.MultiTaskModel` (TensorFlow backend).
        path: Where to write the model; must end with `.tflite`.
        quantization: One of `None`, `"dynamic"`, `"float16"`, `"int8"`.
        representative_data: For `"int8"` only, and required there: images
            covering the inputs the model will see (about 100 suffice), as
            an array `(N, height, width, channels)` or a `tf.data.Dataset`
            of images or `(images, labels)`, batched or not. All are used.
        input_name: Name of the input in the TFLite signature.
        overwrite: Whether to replace an existing file at `path`.

    Returns:
        `path`.

    Example:

    >>> import tempfile, keras, keras_mtl
    >>> trunk = keras.Sequential([keras.Input((16, 16, 3)),
    ...                           keras.layers.Conv2D(4, 3, strides=2)])
    >>> model = keras_mtl.MultiTaskModel(
    ...     trunk, [keras_mtl.tasks.Regression("size")], head_units=(8,))
    >>> path = export_tflite(model, os.path.join(tempfile.mkdtemp(), "m.tflite"),
    ...                      quantization="float16")
    >>> os.path.getsize(path) > 0
    True
    """
    check_model(model)
    input_name = check_input_name(input_name)
    overwrite = check_bool("overwrite", overwrite)
    if not (isinstance(quantization, str) or quantization is None) or (
        quantization not in QUANTIZATIONS
    ):
        raise ValueError(
            "Invalid value received for argument `quantization`. Expected one "
            f"of {QUANTIZATIONS}. Received: quantization={quantization!r}"
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "Invalid value received for argument `representative_data`. "
            "quantization='int8' calibrates activation ranges on it: expected "
            "an array or a tf.data.Dataset of images. Received: "
            "representative_data=None"
        )
    if quantization != "int8" and representative_data is not None:
        raise ValueError(
            "Invalid value received for argument `representative_data`. It is "
            "used by quantization='int8' only. Received it with "
            f"quantization={quantization!r}"
        )
    try:
        path = os.fspath(path)
    except TypeError:
        pass
    if not isinstance(path, str) or not path.endswith(".tflite"):
        raise ValueError(
            "Invalid value received for argument `path`. Expected a file path "
            f"ending with '.tflite'. Received: path={path!r}"
        )
    versioning.check_overwrite_target(path, overwrite, "file")
    samples = None
    if representative_data is not None:
        samples = _representative_samples(model, representative_data)

    spec = input_spec(model, input_name)
    archive = keras.export.ExportArchive()
    archive.add_endpoint(
        DEFAULT_SIGNATURE,
        lambda images: {
            name: tf.cast(y, tf.float32)
            for name, y in model(images, training=False).items()
        },
        [spec],
    )
    with tempfile.TemporaryDirectory() as saved_model_dir:
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            converter.representative_dataset = lambda: ([x] for x in samples())
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        flatbuffer = converter.convert()

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(flatbuffer)

    versioning.replace_atomically(write, path, is_dir=False)
    return path


def _representative_samples(model, data):
    """A function returning a fresh iterator over single-image batches."""
    if model.image_shape is None:
        raise ValueError(
            "Invalid value received for argument `quantization`. 'int8' is "
            "calibrated on images; this model has several inputs "
            f"{[t.name for t in model.inputs]}. Use 'dynamic' or 'float16'."
        )
    image_shape = tuple(model.image_shape)
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if isinstance(spec, tuple):
            spec = spec[0]
        shape = tuple(spec.shape)
        batched = len(shape) == len(image_shape) + 1
        ok = isinstance(spec, tf.TensorSpec) and tf.TensorShape(
            shape[1:] if batched else shape
        ).is_compatible_with(image_shape)

        def samples():
            for element in data:
                images = element[0] if isinstance(element, tuple) else element
                images = np.asarray(images, np.float32)
                for image in images if batched else [images]:
                    yield image[None]
    else:
        array = np.asarray(data, np.float32) if isinstance(data, (np.ndarray, list)) else None
        ok = (
            array is not None
            and array.ndim == len(image_shape) + 1
            and len(array) > 0
            and tuple(array.shape[1:]) == image_shape
        )

        def samples():
            for image in array:
                yield image[None]

    if not ok:
        raise ValueError(
            "Invalid value received for argument `representative_data`. Expected "
            f"images of shape {image_shape}: an array (N, {', '.join(map(str, image_shape))}) "
            "or a tf.data.Dataset of images or (images, labels), batched or not. "
            f"Received: {_describe(data)}"
        )
    return samples


def _describe(data):
    if isinstance(data, tf.data.Dataset):
        return f"a tf.data.Dataset with element_spec {data.element_spec}"
    if isinstance(data, np.ndarray):
        return f"an array of shape {data.shape}"
    return f"{type(data).__name__}"
