"""Tests for `keras_mtl.architectures.MMoE` (Ma et al. 2018), and the helpers
the other `test_architectures_*` files import: a tiny backbone, data, and a
fit + `.keras` round trip through `build_model(..., architecture=)`."""

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl import tasks as T
from keras_mtl import weighting as W
from keras_mtl.architectures import MMoE
from keras_mtl.architectures import Experts
from keras_mtl.architectures import MMoELayer

from conftest import random_images, random_labels

TASKS = [T.Regression("a"), T.BinaryClassification("b")]
NAMES = ["a", "b"]


def tiny_backbone(filters=(4, 8, 8)):
    return keras_mtl.tuning.small_cnn((16, 16, 3), filters=filters)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def relu(x):
    return np.maximum(x, 0.0)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def numpy_experts(layer, x):
    """Reference of `Experts`: `(batch, experts, units)` from its weights."""
    h = np.repeat(x[:, None, :], layer.num_experts, axis=1)
    for kernel, bias in zip(layer.kernels, layer.biases):
        h = relu(np.einsum("bed,edu->beu", h, numpy(kernel)) + numpy(bias))
    return h


def fit_and_round_trip(architecture, weighting, tmp_path):
    """Builds a model with `architecture`, fits two steps with `weighting`,
    and checks that a `.keras` round trip gives the same predictions.
    Returns the trained model and its History."""
    model = keras_mtl.build_model(
        tiny_backbone(), TASKS, architecture=architecture, head_units=(8,)
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), weighting=weighting)
    x, y = random_images(8), random_labels(TASKS, 8)
    before = [numpy(v).copy() for v in model.trunk.trainable_variables]
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    after = [numpy(v) for v in model.trunk.trainable_variables]
    untrained = [v.path for v, b, a in zip(model.trunk.trainable_variables, before, after)
                 if np.array_equal(b, a)]
    assert not untrained

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    expected, got = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    assert sorted(got) == NAMES
    for name in NAMES:
        np.testing.assert_array_equal(got[name], expected[name])
    return model, history


# --- the layer, by hand -----------------------------------------------------
def test_output_is_a_dict_of_task_vectors():
    layer = MMoELayer(["a", "b", "c"], num_experts=3, expert_units=(6, 5))
    outputs = layer(np.ones((4, 7), "float32"))
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "a": (4, 5), "b": (4, 5), "c": (4, 5)
    }
    assert tuple(layer.experts.kernels[0].shape) == (3, 7, 6)
    assert tuple(layer.experts.kernels[1].shape) == (3, 6, 5)


def test_zero_gates_give_the_mean_of_the_experts():
    layer = MMoELayer(NAMES, num_experts=4, expert_units=(5,))
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    layer(x)
    for gate in layer.gates:
        gate.kernel.assign(np.zeros((6, 4)))
    outputs = layer(x)
    mean = numpy_experts(layer.experts, x).mean(axis=1)
    for name in NAMES:
        np.testing.assert_allclose(numpy(outputs[name]), mean, rtol=1e-5, atol=1e-6)


# Keras warns that a softmax over one expert is always 1: here that is the point.
@pytest.mark.filterwarnings("ignore:You are using a softmax over axis")
def test_one_expert_gives_that_expert():
    layer = MMoELayer(NAMES, num_experts=1, expert_units=(5, 3))
    x = np.random.default_rng(1).normal(size=(3, 6)).astype("float32")
    outputs = layer(x)
    expert = numpy_experts(layer.experts, x)[:, 0]
    assert np.abs(expert).sum() > 0
    for name in NAMES:
        np.testing.assert_allclose(numpy(outputs[name]), expert, rtol=1e-5, atol=1e-6)


def test_gate_rows_are_distributions():
    layer = MMoELayer(NAMES, num_experts=5, expert_units=(4,))
    x = np.random.default_rng(2).normal(size=(6, 3)).astype("float32")
    layer(x)
    for values in layer.gate_values(x).values():
        values = numpy(values)
        assert values.shape == (6, 5)
        assert np.all(values > 0)
        np.testing.assert_allclose(values.sum(axis=1), 1.0, rtol=1e-6)


def test_weights_set_by_hand():
    layer = MMoELayer(NAMES, num_experts=2, expert_units=(2,))
    x = np.array([[1.0, 2.0]], "float32")
    layer(x)
    # expert 0: relu([x1 - x2, x1 + x2] + [0, 1]) = [0, 4]
    # expert 1: relu([2 x1, -x2] + [1, 0])      = [3, 0]
    layer.experts.kernels[0].assign([[[1, 1], [-1, 1]], [[2, 0], [0, -1]]])
    layer.experts.biases[0].assign([[0, 1], [1, 0]])
    # gate a: logits [x1, 0] = [1, 0]; gate b: logits [0, x2] = [0, 2]
    layer.gates[0].kernel.assign([[1, 0], [0, 0]])
    layer.gates[1].kernel.assign([[0, 0], [0, 1]])
    outputs = layer(x)
    e0, e1 = np.array([0.0, 4.0]), np.array([3.0, 0.0])
    ga, gb = softmax(np.array([1.0, 0.0])), softmax(np.array([0.0, 2.0]))
    np.testing.assert_allclose(numpy(outputs["a"])[0], ga[0] * e0 + ga[1] * e1, rtol=1e-6)
    np.testing.assert_allclose(numpy(outputs["b"])[0], gb[0] * e0 + gb[1] * e1, rtol=1e-6)


def test_experts_are_initialised_like_dense_layers():
    experts = Experts(8, units=(16,))
    experts.build((None, 32))
    kernel = numpy(experts.kernels[0])
    limit = np.sqrt(6.0 / (32 + 16))
    assert np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.9 * limit
    # experts differ from each other
    assert not np.allclose(kernel[0], kernel[1])


def test_layer_config_round_trip():
    layer = MMoELayer(["x", "y"], num_experts=3, expert_units=(4, 2), expert_activation="tanh")
    config = layer.get_config()
    assert MMoELayer.from_config(config).get_config() == config
    assert config["task_names"] == ["x", "y"] and config["expert_units"] == [4, 2]


# --- the architecture ---------------------------------------------------------
def test_trunk_pools_a_feature_map():
    trunk = MMoE(num_experts=2, expert_units=(6,)).build_trunk(tiny_backbone(), NAMES)
    outputs = trunk(random_images(3))
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {"a": (3, 6), "b": (3, 6)}
    assert any(isinstance(layer, keras.layers.GlobalAveragePooling2D) for layer in trunk.layers)


def test_trunk_on_a_vector_backbone():
    inputs = keras.Input((5,))
    backbone = keras.Model(inputs, keras.layers.Dense(7)(inputs))
    trunk = MMoE(num_experts=2, expert_units=(3,)).build_trunk(backbone, ["t"])
    assert tuple(trunk.output["t"].shape) == (None, 3)
    assert not any(isinstance(layer, keras.layers.GlobalAveragePooling2D) for layer in trunk.layers)


def test_architecture_config_round_trip():
    arch = MMoE(num_experts=3, expert_units=(8, 4))
    assert MMoE.from_config(arch.get_config()).get_config() == arch.get_config()
    assert "num_experts=3" in repr(arch)


@pytest.mark.parametrize(
    "weighting",
    [lambda: W.Uncertainty(), lambda: W.get("pcgrad")],
    ids=["uncertainty", "pcgrad-params"],
)
def test_fit_and_keras_round_trip(weighting, tmp_path):
    arch = MMoE(num_experts=3, expert_units=(8,))
    model, history = fit_and_round_trip(arch, weighting(), tmp_path)
    assert "weight_a" in history.history
    assert isinstance(model.trunk.get_layer("mmoe"), MMoELayer)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"num_experts": 0},
            r"argument `num_experts`. Expected an integer >= 1. Received: num_experts=0",
        ),
        ({"num_experts": 2.0}, r"Received: num_experts=2.0"),
        (
            {"expert_units": ()},
            r"argument `expert_units`. Expected a non-empty tuple of positive integers",
        ),
        ({"expert_units": (8, 0)}, r"Received: expert_units=\(8, 0\)"),
        (
            {"expert_activation": "nope"},
            r"argument `expert_activation`.*Received: expert_activation='nope'",
        ),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MMoE(**kwargs)
    with pytest.raises(ValueError, match=match):
        MMoELayer(NAMES, **kwargs)


def test_bad_task_names_and_inputs():
    expected = r"argument `task_names`.*Received: task_names=\['a', 'a'\]"
    with pytest.raises(ValueError, match=expected):
        MMoELayer(["a", "a"])
    with pytest.raises(ValueError, match=r"MMoELayer expects vectors \(batch, features\)"):
        MMoELayer(NAMES)(np.ones((2, 4, 4, 3), "float32"))
