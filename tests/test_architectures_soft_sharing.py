"""Tests for `keras_mtl.architectures.soft_sharing` (Duong et al. 2015)."""

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl import tasks as T
from keras_mtl import weighting as W
from keras_mtl.architectures.soft_sharing import SoftSharing, SoftSharingPenalty

from conftest import bn_backbone, random_images, random_labels

TASKS = [T.Regression("size"), T.BinaryClassification("round")]
NAMES = ["size", "round"]


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def dense_tower(kernel, bias):
    layer = keras.layers.Dense(
        2,
        kernel_initializer=keras.initializers.Constant(kernel),
        bias_initializer=keras.initializers.Constant(bias),
    )
    return keras.Sequential([keras.Input((3,)), layer])


def distance(a, b):
    """Σ_w ||W_a − W_b||² over two towers' trainable weights."""
    return sum(
        float(np.sum((numpy(u) - numpy(v)) ** 2))
        for u, v in zip(a.trainable_weights, b.trainable_weights)
    )


# --- the penalty ------------------------------------------------------------------


def test_penalty_by_hand():
    towers = {"a": dense_tower(1.0, 0.0), "b": dense_tower(2.0, 1.0), "c": dense_tower(0.0, 0.0)}
    layer = SoftSharingPenalty(towers, strength=0.1)
    # Kernels (3, 2), biases (2,): pairs ab: 6·1 + 2·1 = 8; ac: 6·1 + 0 = 6;
    # bc: 6·4 + 2·1 = 26; total 40.
    assert float(layer.penalty()) == pytest.approx(0.1 * 40)
    outputs = layer(np.ones((4, 3), "float32"))
    np.testing.assert_allclose(numpy(outputs["b"]), np.full((4, 2), 3 * 2.0 + 1.0))
    assert [float(x) for x in layer.losses] == pytest.approx([4.0])


def test_penalty_is_in_model_losses_and_in_the_total_loss():
    trunk = SoftSharing(strength=0.5, share_initial_weights=False).build_trunk(bn_backbone((4, 8)), NAMES)
    pool = keras.layers.GlobalAveragePooling2D()
    model = keras.Model(
        trunk.input, {t: keras.layers.Dense(1, name=t)(pool(trunk.output[t])) for t in NAMES}
    )
    model.compile("sgd", loss={"size": "mse", "round": "mse"})
    x = random_images(4, (32, 32, 3)) / 255.0
    y = {"size": np.zeros((4, 1)), "round": np.ones((4, 1))}
    model(x)
    penalty = float(trunk.get_layer("soft_sharing").penalty())
    assert penalty > 0
    assert [float(l) for l in model.losses] == pytest.approx([penalty])
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(logs["size_loss"] + logs["round_loss"] + penalty, rel=1e-5)


def test_towers_are_independent_clones():
    backbone = bn_backbone((4, 8))
    trunk = SoftSharing(share_initial_weights=False).build_trunk(backbone, NAMES)
    towers = trunk.get_layer("soft_sharing").towers
    assert [towers[t].name for t in NAMES] == ["size_tower", "round_tower"]
    backbone_ids = {id(v) for v in backbone.weights}
    assert not backbone_ids & {id(v) for t in NAMES for v in towers[t].weights}
    assert len(trunk.trainable_variables) == 2 * len(backbone.trainable_variables)
    assert distance(towers["size"], towers["round"]) > 0  # own initialisations


def test_shared_initial_weights_start_at_zero_penalty():
    backbone = bn_backbone((4, 8))
    trunk = SoftSharing().build_trunk(backbone, NAMES)
    layer = trunk.get_layer("soft_sharing")
    assert float(layer.penalty()) == 0.0
    x = random_images(2, (32, 32, 3)) / 255.0
    expected = numpy(backbone(x))
    for name, z in trunk(x).items():
        np.testing.assert_allclose(numpy(z), expected, rtol=1e-5, atol=1e-6)


def train_towers(strength, epochs=8):
    """Two towers (different initialisations) trained on opposite targets;
    returns their distance before and after."""
    keras.utils.set_random_seed(0)
    trunk = SoftSharing(strength=strength, share_initial_weights=False).build_trunk(
        bn_backbone((4, 8)), NAMES
    )
    towers = trunk.get_layer("soft_sharing").towers
    pool = keras.layers.GlobalAveragePooling2D()
    model = keras.Model(
        trunk.input, {t: keras.layers.Dense(1, name=t)(pool(trunk.output[t])) for t in NAMES}
    )
    model.compile(keras.optimizers.SGD(0.05), loss={"size": "mse", "round": "mse"})
    x = random_images(16, (32, 32, 3)) / 255.0
    y = {"size": -np.ones((16, 1)), "round": np.ones((16, 1))}
    before = distance(towers["size"], towers["round"])
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0)
    return before, distance(towers["size"], towers["round"])


def test_a_strong_penalty_pulls_the_towers_together():
    # With learning rate 0.05 and strength 5, each step shrinks W_a − W_b by
    # a factor (1 − 2·0.05·5·2) = 0 up to the task gradients: the towers meet.
    before, after = train_towers(strength=5.0, epochs=4)
    assert after < 1e-3 * before


def test_without_penalty_the_towers_stay_apart():
    before, after = train_towers(strength=0.0, epochs=4)
    assert after > 0.5 * before


# --- with MultiTaskModel -------------------------------------------------------


def model(strength=0.01):
    return keras_mtl.build_model(
        bn_backbone((4, 8)), TASKS, head_units=(8,), architecture=SoftSharing(strength=strength)
    )


def fit(m):
    x = random_images(8, (32, 32, 3))
    y = random_labels(TASKS, 8, (32, 32, 3))
    return m.fit(x, y, batch_size=4, epochs=1, verbose=0), x, y


def test_fit_with_a_loss_level_weighting_and_round_trip(tmp_path):
    m = model()
    m.compile(optimizer="adam", weighting=W.Uncertainty())
    history, x, y = fit(m)
    assert np.isfinite(history.history["loss"]).all()
    penalty = float(m.trunk.get_layer("soft_sharing").penalty())
    assert penalty > 0  # the towers have drifted apart
    m(x)
    assert [float(l) for l in m.losses] == pytest.approx([penalty])

    path = str(tmp_path / "soft.keras")
    m.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    expected, got = m.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for name in NAMES:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-6)
    restored = loaded.trunk.get_layer("soft_sharing")
    assert restored.strength == 0.01
    assert float(restored.penalty()) == pytest.approx(penalty, rel=1e-6)


def test_penalty_joins_the_total_loss_of_multi_task_model():
    m = model(strength=1.0)
    m.compile(optimizer="adam")
    layer = m.trunk.get_layer("soft_sharing")
    # Pull the towers apart by hand, then the evaluated loss must contain it.
    tower = layer.towers["round"]
    tower.get_layer("conv_0").kernel.assign(tower.get_layer("conv_0").kernel + 0.1)
    x = random_images(8, (32, 32, 3))
    y = random_labels(TASKS, 8, (32, 32, 3))
    logs = m.evaluate(x, y, verbose=0, return_dict=True)
    penalty = float(layer.penalty())
    assert penalty == pytest.approx(0.01 * numpy(tower.get_layer("conv_0").kernel).size, rel=1e-4)
    assert logs["loss"] == pytest.approx(logs["size_loss"] + logs["round_loss"] + penalty, rel=1e-4)


@pytest.mark.parametrize(
    "weighting",
    [
        None,
        pytest.param(lambda: W.MGDA(mode="params"), id="mgda_params"),
    ],
)
def test_penalty_gradient_by_hand_in_the_training_step(weighting):
    # Every label missing: the task losses are 0, so only the penalty moves
    # the towers. Plain SGD: W_a − W_b shrinks by (1 − 4·lr·strength) per
    # step and the penalty, quadratic in it, by that factor squared.
    m = model(strength=1.0)
    m.compile(
        optimizer=keras.optimizers.SGD(0.01),
        weighting=None if weighting is None else weighting(),
    )
    layer = m.trunk.get_layer("soft_sharing")
    tower = layer.towers["round"]
    tower.get_layer("conv_0").kernel.assign(tower.get_layer("conv_0").kernel + 0.1)
    before = float(layer.penalty())
    x = random_images(8, (32, 32, 3))
    unlabelled = {
        "size": np.full((8, 1), np.nan, "float32"),  # missing-label markers
        "round": np.full((8, 1), -1.0, "float32"),
    }
    batches = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: batches.append(float(logs["loss"])))
    # An epoch without any label is reported (at its end): here it is the point.
    with pytest.raises(ValueError, match="hold no labelled example"):
        m.fit(x, unlabelled, batch_size=4, epochs=1, verbose=0, callbacks=[record])
    assert float(layer.penalty()) == pytest.approx(before * (1 - 4 * 0.01) ** 4, rel=1e-5)
    # The reported loss is the penalty alone: the mean over the two steps.
    assert batches[-1] == pytest.approx(before * (1 + (1 - 0.04) ** 2) / 2, rel=1e-5)
    # And with labels, task gradients and penalty train together.
    history, _, _ = fit(m)
    assert np.isfinite(history.history["loss"]).all()


# --- bad arguments ---------------------------------------------------------------


@pytest.mark.parametrize("strength", [-1.0, float("inf"), "big", True])
def test_bad_strength(strength):
    match = r"argument `strength`. Expected a finite number >= 0"
    with pytest.raises(ValueError, match=match):
        SoftSharing(strength=strength)


def test_bad_share_initial_weights():
    with pytest.raises(ValueError, match=r"Received: share_initial_weights='yes'"):
        SoftSharing(share_initial_weights="yes")


def test_bad_towers():
    with pytest.raises(ValueError, match=r"argument `towers`. Expected a non-empty dict"):
        SoftSharingPenalty([dense_tower(1.0, 0.0)])
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match=r"same trainable weight shapes.*\['b'\] differ from 'a'"):
        SoftSharingPenalty({"a": dense_tower(1.0, 0.0), "b": other})


def test_bad_backbone_and_task_names():
    with pytest.raises(ValueError, match=r"argument `backbone`.*Received: backbone='ResNet50'"):
        SoftSharing().build_trunk("ResNet50", NAMES)
    with pytest.raises(ValueError, match=r"argument `task_names`"):
        SoftSharing().build_trunk(bn_backbone((4, 8)), "size")


def test_config_round_trip():
    architecture = SoftSharing(strength=0.5, share_initial_weights=False)
    config = keras.saving.serialize_keras_object(architecture)
    restored = keras.saving.deserialize_keras_object(config)
    assert restored.get_config() == {"strength": 0.5, "share_initial_weights": False}
    towers = {"a": dense_tower(1.0, 0.0), "b": dense_tower(2.0, 0.0)}
    layer = SoftSharingPenalty(towers, strength=0.3)
    layer(np.ones((1, 3), "float32"))
    copy = SoftSharingPenalty.from_config(layer.get_config())
    assert copy.strength == 0.3 and sorted(copy.towers) == ["a", "b"]
