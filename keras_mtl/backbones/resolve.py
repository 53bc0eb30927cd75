"""Backbones: from a name or a `keras.Model` to the shared trunk.

`resolve_backbone("ResNet50", input_shape, weights)` builds the
`keras.applications` model without its classifier (`include_top=False`), so it
maps images to a feature map, and finds the `preprocess_input` convention of its
module so that the multi-task model can take raw 0-255 images. Any
`keras.Model` works too, keras-hub backbones included: it is used as it is
(read at `pooled_output` when it gives a dict of outputs). A model with
several inputs (text: token ids, segment ids, padding mask) keeps them: the
multi-task model takes the same inputs, by the same names.

Weights: `None` (random), `"imagenet"` (Keras' own download and cache, as
`keras.applications` does it) or the path of a local `.weights.h5` file saved
from the same architecture.
"""

import difflib
import os
import sys

import keras
import numpy as np

from keras_mtl._validation import check_ints
from keras_mtl.preprocessing import ImagePreprocessing


def application_names():
    """Names of the `keras.applications` constructors, e.g. `"ResNet50"`."""
    return sorted(n for n in dir(keras.applications) if n[:1].isupper())


def _application(name):
    names = application_names()
    by_lower = {n.lower(): n for n in names}
    key = name.lower().replace("-", "").replace("_", "")
    if key in by_lower:
        return getattr(keras.applications, by_lower[key])
    close = difflib.get_close_matches(key, list(by_lower), n=3, cutoff=0.6)
    hint = f" Did you mean {[by_lower[c] for c in close]}?" if close else ""
    raise ValueError(
        "Invalid value received for argument `backbone`. Expected the name of "
        "a `keras.applications` model (case-insensitive) or a `keras.Model`."
        f"{hint} Received: backbone={name!r}. Known names: {names}"
    )


def _reference_preprocessing(mode, x):
    # numpy reference of each mode, used to recognise a module's convention.
    # float32 whatever the global policy: mixed precision would round the probe.
    return np.asarray(ImagePreprocessing(mode, dtype="float32")(x))


def preprocessing_mode(constructor):
    """The `ImagePreprocessing` mode matching a constructor's module.

    The module's `preprocess_input` is run on a probe image and compared with
    each known convention, so new applications need no table entry.
    """
    module = sys.modules[constructor.__module__]
    probe = np.random.default_rng(0).uniform(0, 255, (1, 2, 2, 3))
    probe = probe.astype("float32")
    expected = np.asarray(module.preprocess_input(probe.copy()))
    for mode in ("none", "tf", "torch", "caffe"):
        if np.allclose(_reference_preprocessing(mode, probe), expected, atol=1e-3):
            return mode
    raise ValueError(
        f"Cannot recognise the `preprocess_input` convention of {module.__name__}."
    )


def check_input_shape(input_shape):
    """Validates `(height, width, channels)` and returns it as a tuple of
    `int`s (NumPy integers, a NumPy array accepted)."""
    return check_ints(
        "input_shape",
        input_shape,
        min_length=3,
        max_length=3,
        expected="a tuple of three positive integers (height, width, channels)",
    )


def _check_weights(weights):
    if weights is None or weights == "imagenet":
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            "Invalid value received for argument `weights`. Expected None, "
            f"'imagenet' or the path of a weights file. Received: weights={weights!r}"
        )
    if not os.path.isfile(weights):
        raise FileNotFoundError(
            "Invalid value received for argument `weights`. Expected None, "
            "'imagenet' or the path of an existing `.weights.h5` file. "
            f"Received: weights={os.fspath(weights)!r} (no such file)"
        )


def _load_weights_file(model, weights, description):
    try:
        model.load_weights(weights)
    except Exception as error:  # Keras raises several types for a bad file.
        raise ValueError(
            "Invalid value received for argument `weights`. Expected a weights "
            f"file saved from {description} (e.g. with `model.save_weights`). "
            f"Received: weights={os.fspath(weights)!r}; loading failed with: {error}"
        ) from error


def resolve_backbone(backbone, input_shape=None, weights=None):
    """Builds the trunk and finds its preprocessing.

    Args:
        backbone: A `keras.applications` name (case-insensitive, e.g.
            `"MobileNetV3Small"`) or a `keras.Model`: images to a feature map
            or vector, or several inputs (a keras-hub text backbone's token
            ids, segment ids and padding mask) to a vector. Of a dict of
            outputs, `"pooled_output"` is used (keras-hub's text backbones).
        input_shape: `(height, width, channels)` of the images. Optional for a
            `keras.Model` with a fully defined input shape; None for a model
            with several inputs.
        weights: `None`, `"imagenet"` or the path of a `.weights.h5` file.

    Returns:
        `(trunk, input_shape, preprocessing_mode)`: the trunk model (images to
        a feature map or vector), the input shape (None for several inputs),
        and the `ImagePreprocessing` mode to put in front of it (`"none"` for
        user models).

    Example:

    >>> trunk, shape, mode = resolve_backbone("ResNet50", (32, 32, 3))
    >>> mode, len(trunk.output.shape)
    ('caffe', 4)
    """
    _check_weights(weights)
    if isinstance(backbone, keras.Model):
        return _resolve_model(backbone, input_shape, weights)
    if not isinstance(backbone, str):
        raise ValueError(
            "Invalid value received for argument `backbone`. Expected a "
            "`keras.applications` model name or a `keras.Model`. "
            f"Received: backbone={backbone!r}"
        )
    constructor = _application(backbone)
    input_shape = check_input_shape(input_shape)
    try:
        trunk = constructor(
            include_top=False,
            weights="imagenet" if weights == "imagenet" else None,
            input_shape=input_shape,
        )
    except ValueError as error:
        raise ValueError(
            "Invalid value received for argument `input_shape`. Expected a "
            f"shape that {constructor.__name__} accepts; it says: {error}"
        ) from error
    except Exception as error:  # a failed ImageNet download, mostly.
        if weights != "imagenet":
            raise
        raise RuntimeError(
            f"Could not obtain the ImageNet weights of {constructor.__name__} "
            "through Keras' download cache (~/.keras/models). Without network "
            "access, pass `weights=` the path of a local `.weights.h5` file. "
            f"Cause: {error}"
        ) from error
    if weights not in (None, "imagenet"):
        _load_weights_file(trunk, weights, f"{constructor.__name__}(include_top=False)")
    _check_feature_shape(trunk, backbone)
    return trunk, input_shape, preprocessing_mode(constructor)


def _resolve_model(model, input_shape, weights):
    if not hasattr(model, "inputs"):
        raise ValueError(
            "Invalid value received for argument `backbone`. Expected a Functional "
            "or Sequential `keras.Model` with one image input; a subclassed model "
            "has no symbolic inputs. Wrap it: `inputs = keras.Input(shape); "
            f"keras.Model(inputs, model(inputs))`. Received: backbone={model!r}"
        )
    if not model.inputs:
        raise ValueError(
            "Invalid value received for argument `backbone`. Expected a "
            f"`keras.Model` with inputs. Received: backbone={model!r}"
        )
    if len(model.inputs) > 1:
        return _resolve_several_inputs(model, input_shape, weights)
    model_shape = tuple(model.inputs[0].shape[1:])
    if input_shape is None:
        input_shape = model_shape
    if len(model_shape) != 3:
        return _resolve_other_input(model, input_shape, model_shape, weights)
    input_shape = check_input_shape(input_shape)
    if any(m is not None and m != s for m, s in zip(model_shape, input_shape)):
        raise ValueError(
            "Invalid value received for argument `input_shape`. Expected a "
            f"shape compatible with the backbone's input {model_shape}. "
            f"Received: input_shape={input_shape}"
        )
    return _trunk_of(model, weights), input_shape, "none"


def _resolve_other_input(model, input_shape, model_shape, weights):
    # One input that is not an image (token ids, a feature vector): the
    # model takes it with the backbone's own shape.
    try:
        same = tuple(input_shape) == model_shape
    except TypeError:
        same = False
    if not same:
        raise ValueError(
            "Invalid value received for argument `input_shape`. Expected None "
            f"or the backbone's input shape {model_shape} (not an image). "
            f"Received: input_shape={input_shape!r}"
        )
    return _trunk_of(model, weights), model_shape, "none"


def _trunk_of(model, weights):
    """A user model as the trunk: its weights loaded, read at one output."""
    _check_model_weights(model, weights)
    model = _single_output(model)
    _check_feature_shape(model, model.name)
    return model


def _check_model_weights(model, weights):
    if weights == "imagenet":
        raise ValueError(
            "Invalid value received for argument `weights`. 'imagenet' only "
            "applies to `keras.applications` names; a `keras.Model` backbone "
            "takes None or a weights file. Received: weights='imagenet'"
        )
    if weights is not None:
        _load_weights_file(model, weights, f"the backbone model {model.name!r}")


def _resolve_several_inputs(model, input_shape, weights):
    # Text and graph trunks: the model takes the trunk's inputs as they are,
    # so there is no image shape to give and no image preprocessing.
    names = [t.name for t in model.inputs]
    if input_shape is not None:
        raise ValueError(
            "Invalid value received for argument `input_shape`. Expected None "
            f"for a backbone with several inputs ({model.name!r} takes {names}); "
            f"the model takes them with their own shapes. Received: "
            f"input_shape={input_shape!r}"
        )
    return _trunk_of(model, weights), None, "none"


#: The output a backbone with a dict of outputs is read at: keras-hub's text
#: backbones (BERT, RoBERTa, ...) give `sequence_output` (one vector per
#: token) and `pooled_output` (one per text), and heads need the latter.
POOLED_OUTPUT = "pooled_output"


def _single_output(model):
    """`model`, or for a dict of outputs with a `pooled_output`, the same
    layers read at that output (a Functional model sharing its weights)."""
    output = None if isinstance(model, keras.Sequential) else model.output
    if not isinstance(output, dict):
        return model
    if POOLED_OUTPUT not in output:
        raise ValueError(
            "Invalid value received for argument `backbone`. Expected a model "
            f"with one output, or a dict of outputs with {POOLED_OUTPUT!r}. "
            f"{model.name!r} gives {sorted(output)}: pick one with "
            "`keras.Model(backbone.input, backbone.output[name])`."
        )
    return keras.Model(model.input, output[POOLED_OUTPUT], name=model.name)


def _check_feature_shape(trunk, description):
    # `outputs`, not `output`: a Sequential model has the latter only once called.
    outputs = trunk.outputs or []
    shape = tuple(outputs[0].shape[1:]) if len(outputs) == 1 else None
    if shape is None or len(shape) not in (1, 3) or any(d == 0 for d in shape):
        raise ValueError(
            "Invalid value received for argument `backbone`. Expected a model "
            "whose single output is a feature map (batch, height, width, "
            f"channels) or a vector (batch, features). {description!r} gives "
            f"{shape if shape is not None else 'several outputs'}."
        )
