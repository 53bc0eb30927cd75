"""Tests for `keras_mtl.architectures.CrossStitch` and `CrossStitchNetwork`
(Misra et al. 2016)."""

import keras
import numpy as np
import pytest

from keras_mtl import weighting as W
from keras_mtl.architectures import CrossStitch
from keras_mtl.architectures import CrossStitchNetwork
from keras_mtl.architectures.cross_stitch import stitch_matrix

from conftest import random_images
from test_architectures_mmoe import NAMES
from test_architectures_mmoe import fit_and_round_trip
from test_architectures_mmoe import numpy
from test_architectures_mmoe import tiny_backbone


def residual_backbone():
    """conv - [conv + skip] - conv: the residual block must stay whole."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="inner")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="last")(x)
    return keras.Model(inputs, x, name="residual")


def towers(trunk, task, count):
    return [trunk.get_layer(f"{task}_segment_{i}") for i in range(count)]


def run_alone(segments, x):
    for segment in segments:
        x = segment(x)
    return numpy(x)


# --- the unit --------------------------------------------------------------------
def test_paper_initialisation():
    np.testing.assert_allclose(stitch_matrix("paper", 2), [[0.9, 0.1], [0.1, 0.9]])
    three = stitch_matrix("paper", 3)
    np.testing.assert_allclose(np.diag(three), 0.9)
    np.testing.assert_allclose(three[~np.eye(3, dtype=bool)], 0.05)
    np.testing.assert_array_equal(stitch_matrix("identity", 3), np.eye(3))
    np.testing.assert_array_equal(stitch_matrix("paper", 1), [[1.0]])
    layer = CrossStitch()
    layer([np.ones((1, 2), "float32")] * 2)
    np.testing.assert_allclose(numpy(layer.alpha), [[0.9, 0.1], [0.1, 0.9]], rtol=1e-6)


def test_known_alpha_by_hand():
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(2, 3, 3, 4)).astype("float32") for _ in range(3)]
    layer = CrossStitch()
    layer(xs)
    alpha = np.array([[1.0, 2.0, 0.0], [0.0, -1.0, 0.5], [0.3, 0.3, 0.3]])
    layer.alpha.assign(alpha)
    outputs = layer(xs)
    for i in range(3):
        expected = sum(alpha[i, j] * xs[j] for j in range(3))
        np.testing.assert_allclose(numpy(outputs[i]), expected, rtol=1e-5, atol=1e-6)


def test_per_channel_alpha_by_hand():
    a = np.arange(6, dtype="float32").reshape(1, 2, 3)  # (batch, width, channels)
    b = np.ones((1, 2, 3), "float32")
    layer = CrossStitch(per_channel=True)
    layer([a, b])
    assert tuple(layer.alpha.shape) == (2, 2, 3)
    np.testing.assert_allclose(numpy(layer.alpha)[:, :, 2], [[0.9, 0.1], [0.1, 0.9]], rtol=1e-6)
    alpha = np.zeros((2, 2, 3))
    alpha[0, 0] = [1, 0, 2]  # channel c of output 0: alpha[0, 0, c] a + alpha[0, 1, c] b
    alpha[0, 1] = [0, 1, 1]
    alpha[1, 0] = [0, 0, -1]
    layer.alpha.assign(alpha)
    first, second = layer([a, b])
    np.testing.assert_allclose(numpy(first), a * [1, 0, 2] + b * [0, 1, 1])
    np.testing.assert_allclose(numpy(second), -a * [0, 0, 1])


def test_dict_inputs_follow_sorted_keys():
    layer = CrossStitch(init=0.75)
    outputs = layer({"b": np.zeros((1, 2), "float32"), "a": np.ones((1, 2), "float32")})
    np.testing.assert_allclose(numpy(outputs["a"]), 0.75)
    np.testing.assert_allclose(numpy(outputs["b"]), 0.25)


def test_unit_rejects_bad_inputs_and_arguments():
    with pytest.raises(ValueError, match=r"same shape.*\(2, 3\), \(2, 4\)"):
        CrossStitch()([np.ones((2, 3), "float32"), np.ones((2, 4), "float32")])
    expected = r"argument `init`. Expected 'paper', 'identity' or a float in \[0, 1\]"
    with pytest.raises(ValueError, match=expected):
        CrossStitch(init="ones")
    with pytest.raises(ValueError, match=r"Received: init=1.5"):
        CrossStitch(init=1.5)
    with pytest.raises(ValueError, match=r"argument `per_channel`. Expected True or False"):
        CrossStitch(per_channel=1)


# --- the network -------------------------------------------------------------------
def test_identity_reproduces_independent_towers():
    trunk = CrossStitchNetwork(init="identity", copy_weights=False).build_trunk(
        tiny_backbone(), ["a", "b", "c"]
    )
    x = random_images(2)
    outputs = {k: numpy(v) for k, v in trunk(x).items()}
    alone = {t: run_alone(towers(trunk, t, 3), x) for t in ["a", "b", "c"]}
    for task in alone:
        assert outputs[task].shape == (2, 2, 2, 8)
        np.testing.assert_allclose(outputs[task], alone[task], rtol=1e-5, atol=1e-6)
    # fresh weights: the towers really are different networks
    assert not np.allclose(alone["a"], alone["b"])


def test_known_alpha_mixes_the_towers():
    trunk = CrossStitchNetwork(blocks=["block0_conv"], copy_weights=False).build_trunk(
        tiny_backbone(), NAMES
    )
    alpha = np.array([[0.6, 0.4], [-0.5, 2.0]])
    trunk.get_layer("cross_stitch_0").alpha.assign(alpha)
    x = random_images(2)
    (a0, a1), (b0, b1) = towers(trunk, "a", 2), towers(trunk, "b", 2)
    za, zb = numpy(a0(x)), numpy(b0(x))
    outputs = trunk(x)
    np.testing.assert_allclose(
        numpy(outputs["a"]), numpy(a1(alpha[0, 0] * za + alpha[0, 1] * zb)), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        numpy(outputs["b"]), numpy(b1(alpha[1, 0] * za + alpha[1, 1] * zb)), rtol=1e-5, atol=1e-6
    )


def test_towers_start_from_the_backbone_weights():
    backbone = residual_backbone()
    trunk = CrossStitchNetwork().build_trunk(backbone, NAMES)
    x = random_images(2) / 255.0
    expected = numpy(backbone(x))
    # identical towers: the paper's mix of equal maps is the map itself
    for output in trunk(x).values():
        np.testing.assert_allclose(numpy(output), expected, rtol=1e-5, atol=1e-5)
    # ... but they are copies, not the backbone's own variables
    assert not any(v is w for v in trunk.weights for w in backbone.weights)


def test_residual_blocks_are_not_split():
    network = CrossStitchNetwork()
    assert network.cuts(residual_backbone()) == ["stem", "add"]
    expected = r"block boundaries of 'residual'.*\['stem', 'add'\]. Received: blocks=\['inner'\]"
    with pytest.raises(ValueError, match=expected):
        CrossStitchNetwork(blocks=["inner"]).build_trunk(residual_backbone(), NAMES)


def test_choosing_blocks():
    backbone = tiny_backbone(filters=(4, 4, 4, 4, 4))
    assert CrossStitchNetwork().cuts(backbone) == [f"block{i}_conv" for i in range(4)]
    assert CrossStitchNetwork(blocks=2).cuts(backbone) == ["block1_conv", "block2_conv"]
    assert CrossStitchNetwork(blocks=1).cuts(backbone) == ["block1_conv"]
    assert CrossStitchNetwork(blocks=0).cuts(backbone) == []
    named = CrossStitchNetwork(blocks=["block3_conv", "block0_conv"])
    assert named.cuts(backbone) == ["block0_conv", "block3_conv"]
    trunk = named.build_trunk(backbone, NAMES)
    stitches = [layer.name for layer in trunk.layers if isinstance(layer, CrossStitch)]
    assert stitches == ["cross_stitch_0", "cross_stitch_1"]
    assert len(towers(trunk, "a", 3)) == 3
    # no unit: independent towers, one segment each
    trunk = CrossStitchNetwork(blocks=0).build_trunk(backbone, NAMES)
    assert not any(isinstance(layer, CrossStitch) for layer in trunk.layers)


def test_sequential_backbone():
    backbone = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(3, 3, name="c1"),
            keras.layers.Conv2D(2, 3, name="c2"),
        ]
    )
    trunk = CrossStitchNetwork(init="identity").build_trunk(backbone, NAMES)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    for output in trunk(x).values():
        np.testing.assert_allclose(numpy(output), numpy(backbone(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "weighting",
    [lambda: W.Uncertainty(), lambda: W.get("pcgrad")],
    ids=["uncertainty", "pcgrad-params"],
)
def test_fit_and_keras_round_trip(weighting, tmp_path):
    model, _ = fit_and_round_trip(CrossStitchNetwork(per_channel=True), weighting(), tmp_path)
    alpha = numpy(model.trunk.get_layer("cross_stitch_0").alpha)
    assert alpha.shape == (2, 2, 4)  # after block0_conv (4 filters)
    assert not np.allclose(alpha, stitch_matrix("paper", 2)[:, :, None])  # α is learned


def test_config_round_trip():
    arch = CrossStitchNetwork(blocks=["x"], init=0.8, per_channel=True, copy_weights=False)
    assert CrossStitchNetwork.from_config(arch.get_config()).get_config() == arch.get_config()
    layer = CrossStitch(init="identity", per_channel=True)
    assert CrossStitch.from_config(layer.get_config()).get_config() == layer.get_config()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"blocks": -1},
            r"argument `blocks`. Expected None, an integer >= 0 or a list of "
            r"distinct layer names. Received: blocks=-1",
        ),
        ({"blocks": ["a", "a"]}, r"Received: blocks=\['a', 'a'\]"),
        ({"blocks": "block0_conv"}, r"Received: blocks='block0_conv'"),
        ({"init": -0.1}, r"argument `init`.*Received: init=-0.1"),
        ({"copy_weights": "yes"}, r"argument `copy_weights`. Expected True or False"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CrossStitchNetwork(**kwargs)


def test_bad_blocks_for_the_backbone():
    backbone = tiny_backbone()
    valid = r"\['block0_conv', 'block1_conv'\]"
    expected = rf"{valid}. Received: blocks=\['conv9'\] \(unknown: \['conv9'\]\)"
    with pytest.raises(ValueError, match=expected):
        CrossStitchNetwork(blocks=["conv9"]).build_trunk(backbone, NAMES)
    # the output is no boundary: a unit there would have no segment after it
    with pytest.raises(ValueError, match=rf"{valid}. Received: blocks=\['block2_conv'\]"):
        CrossStitchNetwork(blocks=["block2_conv"]).build_trunk(backbone, NAMES)
    expected = rf"at most 2 cross-stitch units.*{valid}. Received: blocks=3"
    with pytest.raises(ValueError, match=expected):
        CrossStitchNetwork(blocks=3).build_trunk(backbone, NAMES)


def test_backbone_without_block_boundaries():
    inputs = keras.Input((8, 8, 3))
    single = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="only")(inputs), name="single")
    expected = r"at most 0 cross-stitch units: the block boundaries of 'single'.*\[\]"
    with pytest.raises(ValueError, match=expected):
        CrossStitchNetwork().build_trunk(single, NAMES)
    trunk = CrossStitchNetwork(blocks=0).build_trunk(single, NAMES)  # independent towers
    assert sorted(trunk.output) == NAMES
