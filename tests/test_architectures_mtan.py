"""Tests for `keras_mtl.architectures.mtan` (Liu, Johns & Davison 2019)."""

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl import tasks as T
from keras_mtl import weighting as W
from keras_mtl.architectures.mtan import MTAN, MTANAttention

from conftest import bn_backbone, random_images, random_labels

TASKS = [T.Regression("size"), T.BinaryClassification("round")]
NAMES = ["size", "round"]
EPS = 1e-3  # BatchNormalization's default epsilon


def zero_last_mask_conv(attention):
    conv = attention.mask_conv_2
    conv.set_weights([np.zeros_like(w) for w in conv.get_weights()])


# --- the attention module ----------------------------------------------------


@pytest.mark.parametrize("with_previous", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_zeroed_mask_halves_the_shared_feature(with_previous, training):
    rng = np.random.default_rng(0)
    p = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    previous = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    inputs = [p, previous] if with_previous else p
    attention = MTANAttention()
    attention(inputs)
    zero_last_mask_conv(attention)
    # conv = 0 everywhere; batch norm of a constant 0 is 0 in both modes.
    out = keras.ops.convert_to_numpy(attention(inputs, training=training))
    np.testing.assert_allclose(out, 0.5 * p, atol=1e-6)


def test_mask_by_hand():
    # Identity 1x1 convs, fresh batch norms (inference: x / sqrt(1 + eps)):
    # mask = sigmoid(relu(p) / (1 + eps)).
    p = np.random.default_rng(1).normal(size=(2, 3, 3, 2)).astype("float32")
    attention = MTANAttention()
    attention(p)
    for conv in (attention.mask_conv_1, attention.mask_conv_2):
        conv.set_weights([np.eye(2, dtype="float32")[None, None], np.zeros(2, "float32")])
    expected_mask = 1 / (1 + np.exp(-np.maximum(p, 0) / (1 + EPS)))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(attention.mask(p)), expected_mask, rtol=1e-5
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(attention(p)), expected_mask * p, rtol=1e-5
    )


def test_previous_feature_enters_the_mask_after_the_shared_one():
    # The first 1x1 conv reads [p ; previous]: let it pass `previous` only.
    rng = np.random.default_rng(2)
    p, previous = rng.normal(size=(2, 2, 3, 3, 2)).astype("float32")
    attention = MTANAttention()
    attention([p, previous])
    assert tuple(attention.mask_conv_1.kernel.shape) == (1, 1, 4, 2)
    kernel = np.zeros((1, 1, 4, 2), "float32")
    kernel[0, 0, 2:] = np.eye(2)
    attention.mask_conv_1.set_weights([kernel, np.zeros(2, "float32")])
    identity = np.eye(2, dtype="float32")[None, None]
    attention.mask_conv_2.set_weights([identity, np.zeros(2, "float32")])
    expected_mask = 1 / (1 + np.exp(-np.maximum(previous, 0) / (1 + EPS)))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(attention([p, previous])), expected_mask * p, rtol=1e-5
    )


def test_attention_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match=r"same shape"):
        MTANAttention()([np.ones((1, 4, 4, 2)), np.ones((1, 2, 2, 2))])
    with pytest.raises(ValueError, match=r"Expected a feature map"):
        MTANAttention()(np.ones((2, 3)))


# --- the trunk -----------------------------------------------------------------


def test_default_blocks_are_spread_and_end_at_the_last_boundary():
    backbone = bn_backbone()
    assert MTAN().select_blocks(backbone) == ["relu_0", "relu_1", "relu_2"]
    assert MTAN(blocks=1).select_blocks(backbone) == ["relu_2"]
    assert MTAN(blocks=["relu_2", "bn_0"]).select_blocks(backbone) == ["bn_0", "relu_2"]
    small = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="only")])
    assert MTAN().select_blocks(small) == ["only"]


def test_trunk_outputs_and_layers():
    backbone = bn_backbone()
    trunk = MTAN().build_trunk(backbone, NAMES)
    outputs = trunk(random_images(2, (32, 32, 3)))
    assert sorted(outputs) == sorted(NAMES)
    assert all(tuple(z.shape) == (2, 4, 4, 8) for z in outputs.values())
    attention = [l for l in trunk.layers if isinstance(l, MTANAttention)]
    assert len(attention) == 2 * 3  # tasks x blocks
    # The backbone's layers are the trunk's (shared, not copied), and the
    # feature extractor of a block is shared by the tasks (called per task).
    assert trunk.get_layer("conv_0") is backbone.get_layer("conv_0")
    assert len(trunk.get_layer("mtan_extractor_1_conv")._inbound_nodes) == 2


def test_zeroed_last_masks_give_half_the_backbone_output():
    backbone = bn_backbone()
    trunk = MTAN().build_trunk(backbone, NAMES)
    for name in NAMES:
        zero_last_mask_conv(trunk.get_layer(f"mtan_{name}_attention_2"))
    x = random_images(3, (32, 32, 3)) / 255.0
    expected = keras.ops.convert_to_numpy(backbone(x, training=False))
    outputs = trunk(x, training=False)
    for name in NAMES:
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(outputs[name]), 0.5 * expected, atol=1e-6
        )


def test_tasks_get_different_features():
    trunk = MTAN().build_trunk(bn_backbone(), NAMES)
    outputs = trunk(random_images(2, (32, 32, 3)) / 255.0)
    assert not np.allclose(
        keras.ops.convert_to_numpy(outputs["size"]), keras.ops.convert_to_numpy(outputs["round"])
    )


def test_resolution_by_resizing_when_not_an_integer_factor():
    # 16 -> 7 (valid 3x3, stride 2) is no integer pooling factor.
    backbone = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(4, 3, padding="same", name="a"),
        keras.layers.Conv2D(4, 3, strides=2, name="b"),
    ])
    trunk = MTAN().build_trunk(backbone, ["t"])
    assert isinstance(trunk.get_layer("mtan_extractor_1_resize"), keras.layers.Resizing)
    assert tuple(trunk(np.zeros((1, 16, 16, 3)))["t"].shape) == (1, 7, 7, 4)


# --- with MultiTaskModel -------------------------------------------------------


def model(**kwargs):
    return keras_mtl.build_model(
        bn_backbone(), TASKS, head_units=(8,), architecture=MTAN(**kwargs)
    )


def fit(m, epochs=1):
    x = random_images(8, (32, 32, 3))
    y = random_labels(TASKS, 8, (32, 32, 3))
    return m.fit(x, y, batch_size=4, epochs=epochs, verbose=0), x


@pytest.mark.slow  # long: `make test-slow` runs it
def test_fit_with_a_loss_level_weighting_and_round_trip(tmp_path):
    m = model()
    m.compile(optimizer="adam", weighting=W.Uncertainty())
    before = [keras.ops.convert_to_numpy(v) for v in m.trunk.trainable_variables]
    history, x = fit(m)
    assert np.isfinite(history.history["loss"]).all()
    after = [keras.ops.convert_to_numpy(v) for v in m.trunk.trainable_variables]
    assert all(not np.allclose(a, b) for a, b in zip(before, after))

    path = str(tmp_path / "mtan.keras")
    m.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    expected, got = m.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for name in NAMES:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-6)


@pytest.mark.slow  # long: `make test-slow` runs it
def test_fit_with_a_gradient_level_weighting_in_params_mode():
    m = model(blocks=2)
    m.compile(optimizer="adam", weighting=W.MGDA(mode="params"))
    history, _ = fit(m)
    assert np.isfinite(history.history["loss"]).all()
    assert set(history.history) >= {"size_loss", "round_loss", "weight_size", "weight_round"}


def test_representation_mode_is_refused():
    m = model(blocks=1)
    with pytest.raises(ValueError, match=r"mode='representation'.*pass mode='params'"):
        m.compile(weighting=W.PCGrad(mode="representation"))


# --- bad arguments ---------------------------------------------------------------


@pytest.mark.parametrize(
    "blocks, match",
    [
        (0, r"argument `blocks`. Expected None, a positive integer.*Received: blocks=0"),
        (True, r"Received: blocks=True"),
        ("relu_0", r"Received: blocks='relu_0'"),
        (["a", "a"], r"distinct layer names. Received: blocks=\['a', 'a'\]"),
    ],
)
def test_bad_blocks(blocks, match):
    with pytest.raises(ValueError, match=match):
        MTAN(blocks=blocks)


def test_blocks_that_the_backbone_does_not_have():
    with pytest.raises(ValueError, match=r"at most 9 .*Received: blocks=10"):
        MTAN(blocks=10).build_trunk(bn_backbone(), NAMES)
    with pytest.raises(ValueError, match=r"'conv_0', 'bn_0'.*unknown: \['nope'\]"):
        MTAN(blocks=["relu_0", "nope"]).build_trunk(bn_backbone(), NAMES)


def test_bad_backbone_and_task_names():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    with pytest.raises(ValueError, match=r"argument `backbone`.*has none"):
        MTAN().build_trunk(Subclassed(), NAMES)
    match = r"argument `task_names`.*Received: task_names=\['a', 'a'\]"
    with pytest.raises(ValueError, match=match):
        MTAN().build_trunk(bn_backbone(), ["a", "a"])


@pytest.mark.parametrize("reduction", [0, -2, 1.5, True, "4"])
def test_bad_reduction(reduction):
    match = r"argument `reduction`. Expected an integer >= 1. Received: reduction="
    with pytest.raises(ValueError, match=match):
        MTAN(reduction=reduction)
    with pytest.raises(ValueError, match=match):
        MTANAttention(reduction=reduction)


def test_config_round_trip():
    architecture = MTAN(blocks=["relu_0", "relu_2"], reduction=2)
    config = keras.saving.serialize_keras_object(architecture)
    restored = keras.saving.deserialize_keras_object(config)
    assert isinstance(restored, MTAN) and restored.get_config() == architecture.get_config()
    assert repr(restored) == "MTAN(blocks=['relu_0', 'relu_2'], reduction=2)"
    attention = MTANAttention(reduction=3, name="a")
    assert MTANAttention.from_config(attention.get_config()).reduction == 3


# --- reduction ---------------------------------------------------------------------


def test_reduction_narrows_the_first_mask_conv_only():
    wide = MTAN().build_trunk(bn_backbone(filters=(8, 16, 16)), NAMES)
    narrow = MTAN(reduction=4).build_trunk(bn_backbone(filters=(8, 16, 16)), NAMES)
    for j, channels in enumerate((8, 16, 16)):
        for t in NAMES:
            a = wide.get_layer(f"mtan_{t}_attention_{j}")
            b = narrow.get_layer(f"mtan_{t}_attention_{j}")
            assert (a.mask_conv_1.filters, b.mask_conv_1.filters) == (channels, channels // 4)
            assert a.mask_conv_2.filters == b.mask_conv_2.filters == channels
            # Weights of the two 1x1 convs: (in -> hidden) + (hidden -> channels).
            inputs = channels if j == 0 else 2 * channels
            hidden = channels // 4
            assert b.mask_conv_1.count_params() + b.mask_conv_2.count_params() == (
                inputs * hidden + hidden + hidden * channels + channels
            )
    x = random_images(2, (32, 32, 3))
    shapes = {t: tuple(z.shape) for t, z in narrow(x).items()}
    assert shapes == {t: tuple(z.shape) for t, z in wide(x).items()}
    assert narrow.count_params() < wide.count_params()


@pytest.mark.slow  # long: `make test-slow` runs it
def test_reduced_model_trains_and_round_trips(tmp_path):
    m = model(blocks=2, reduction=2)
    m.compile(optimizer="adam")
    history, x = fit(m)
    assert np.isfinite(history.history["loss"]).all()
    path = str(tmp_path / "mtan_reduced.keras")
    m.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert loaded.trunk.get_layer("mtan_size_attention_1").reduction == 2
    expected, got = m.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for name in NAMES:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-6)
