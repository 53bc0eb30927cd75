import sys

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl import backbones
from keras_mtl.preprocessing import ImagePreprocessing

from conftest import tiny_trunk


@pytest.mark.parametrize(
    "name, mode",
    [("ResNet50", "caffe"), ("MobileNetV2", "tf"), ("DenseNet121", "torch"),
     ("EfficientNetB0", "none"), ("ConvNeXtTiny", "none"), ("MobileNetV3Small", "none")],
)
def test_preprocessing_matches_the_application_module(name, mode):
    constructor = getattr(keras.applications, name)
    assert backbones.preprocessing_mode(constructor) == mode
    images = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = sys.modules[constructor.__module__].preprocess_input(images.copy())
    np.testing.assert_allclose(ImagePreprocessing(mode)(images), expected, rtol=1e-5, atol=1e-4)


def test_names_are_case_insensitive():
    trunk, shape, mode = backbones.resolve_backbone("mobilenetv3small", (32, 32, 3))
    assert trunk.name == "MobileNetV3Small" and shape == (32, 32, 3) and mode == "none"


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match=r"argument `backbone`.*Did you mean \['ResNet50'"):
        backbones.resolve_backbone("ResNet5", (32, 32, 3))


@pytest.mark.parametrize(
    "shape, match",
    [((16, 16, 3), "at least 32x32"), ((32, 32), "three positive integers"),
     ((32, 32, 3, 1), "three positive integers"), ("32x32", "three positive integers"),
     ((32, 0, 3), "three positive integers")],
)
def test_bad_input_shape(shape, match):
    with pytest.raises(ValueError, match=r"argument `input_shape`.*" + match):
        backbones.resolve_backbone("ResNet50", shape)


def test_missing_weights_file():
    with pytest.raises(FileNotFoundError, match=r"argument `weights`.*no such file"):
        backbones.resolve_backbone("ResNet50", (32, 32, 3), weights="/nonexistent.weights.h5")


def test_weights_file_written_by_the_test_is_loaded(tmp_path):
    source = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = str(tmp_path / "backbone.weights.h5")
    source.save_weights(path)
    model = keras_mtl.build_model(
        "MobileNetV3Small", [keras_mtl.tasks.Regression("r")], (32, 32, 3), weights=path, head_units=(4,)
    )
    for a, b in zip(source.weights, model.trunk.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_weights_file_of_another_architecture_is_a_clear_error(tmp_path):
    path = str(tmp_path / "tiny.weights.h5")
    tiny_trunk((32, 32, 3)).save_weights(path)
    with pytest.raises(ValueError, match=r"argument `weights`.*MobileNetV3Small"):
        backbones.resolve_backbone("MobileNetV3Small", (32, 32, 3), weights=path)


def test_imagenet_goes_through_keras_download(monkeypatch, tmp_path):
    # No network here: make Keras' downloader fail the way an offline machine
    # does, and check the user is told what to do instead.
    calls = []

    def offline_get_file(fname=None, origin=None, **kwargs):
        calls.append(origin)
        raise Exception(f"URL fetch failure on {origin}")

    monkeypatch.setattr(keras.src.applications.mobilenet_v3.file_utils, "get_file", offline_get_file)
    with pytest.raises(RuntimeError, match=r"ImageNet weights of MobileNetV3Small.*weights="):
        backbones.resolve_backbone("MobileNetV3Small", (32, 32, 3), weights="imagenet")
    assert calls and "mobilenet_v3" in calls[0]


def test_keras_model_backbone_and_its_checks(tmp_path):
    trunk = tiny_trunk((16, 16, 3))
    model, shape, mode = backbones.resolve_backbone(trunk)
    assert model is trunk and shape == (16, 16, 3) and mode == "none"
    with pytest.raises(ValueError, match=r"argument `input_shape`.*compatible"):
        backbones.resolve_backbone(trunk, (32, 32, 3))
    with pytest.raises(ValueError, match=r"argument `weights`.*'imagenet' only"):
        backbones.resolve_backbone(trunk, weights="imagenet")
    with pytest.raises(ValueError, match=r"argument `backbone`"):
        backbones.resolve_backbone(42, (16, 16, 3))


def test_dense_task_needs_a_feature_map():
    inputs = keras.Input((16, 16, 3))
    vector = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    with pytest.raises(ValueError, match=r"argument `backbone`.*feature map"):
        keras_mtl.build_model(vector, [keras_mtl.tasks.Segmentation("seg", 3)])
    # Vector tasks are fine on a vector backbone.
    model = keras_mtl.build_model(vector, [keras_mtl.tasks.Regression("r")], head_units=(4,))
    assert tuple(model.outputs[0].shape) == (None, 1)


# --- small_cnn: the package's one small CNN ----------------------------------------
def test_small_cnn_blocks_are_cut_points():
    trunk = backbones.small_cnn((16, 16, 3), filters=(4, 8))
    assert trunk.output.shape == (None, 4, 4, 8)
    assert [name for _, name in backbones.cut_points(trunk)] == ["block0_conv", "block1_conv"]
    assert keras_mtl.tuning.small_cnn is backbones.small_cnn


def test_small_cnn_with_batch_norm_and_two_convolutions_per_block():
    trunk = backbones.small_cnn((16, 16, 3), (4, 8), convs_per_block=2, batch_norm=True)
    names = [layer.name for layer in trunk.layers]
    assert names[1] == "rescaling" and names[-1] == "block1_conv1_relu"
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in trunk.layers) == 4
    assert trunk.output.shape == (None, 4, 4, 8)  # one stride-2 convolution per block


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"filters": ()}, r"argument `filters`. Expected a non-empty tuple"),
        ({"filters": (4, 0)}, r"argument `filters`"),
        ({"convs_per_block": 0}, r"argument `convs_per_block`. Expected an integer >= 1"),
        ({"batch_norm": 1}, r"argument `batch_norm`. Expected True or False"),
    ],
)
def test_small_cnn_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        backbones.small_cnn((16, 16, 3), **kwargs)
