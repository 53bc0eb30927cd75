"""Tests for `keras_mtl.architectures.task_norm` (task-specific batch norm)."""

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl import tasks as T
from keras_mtl import weighting as W
from keras_mtl.architectures.task_norm import TaskSpecificBatchNorm

from conftest import bn_backbone, random_images, random_labels

TASKS = [T.Regression("size"), T.BinaryClassification("round")]
NAMES = ["size", "round"]


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def calls(model, layer_name):
    """How many times `model`'s own graph calls the layer."""
    (entry,) = [e for e in model.get_config()["layers"] if e["name"] == layer_name]
    return len(entry["inbound_nodes"])


def test_convolutions_are_shared_and_batch_norms_per_task():
    backbone = bn_backbone()
    trunk = TaskSpecificBatchNorm().build_trunk(backbone, NAMES)
    for i in range(3):
        # The same layer object, hence the same variables, for every task.
        assert trunk.get_layer(f"conv_{i}") is backbone.get_layer(f"conv_{i}")
        assert calls(trunk, f"conv_{i}") == 2
        copies = [trunk.get_layer(f"bn_{i}_{t}") for t in NAMES]
        assert copies[0] is not copies[1]
        assert copies[0].gamma is not copies[1].gamma
    shared = {id(v) for l in backbone.layers if not isinstance(l, keras.layers.BatchNormalization)
              for v in l.trainable_variables}
    per_bn = sum(len(l.trainable_variables) for l in backbone.layers
                 if isinstance(l, keras.layers.BatchNormalization))
    assert len(trunk.trainable_variables) == len(shared) + len(NAMES) * per_bn
    assert shared <= {id(v) for v in trunk.trainable_variables}
    assert not any(isinstance(l, keras.Model) for l in trunk.layers)  # one flat graph


def test_copies_start_from_the_backbone_and_match_it_in_inference():
    backbone = bn_backbone()
    rng = np.random.default_rng(0)
    for i in range(3):  # non-trivial batch-norm weights and statistics
        bn = backbone.get_layer(f"bn_{i}")
        bn.set_weights([rng.uniform(0.5, 2.0, w.shape).astype("float32") for w in bn.get_weights()])
    trunk = TaskSpecificBatchNorm().build_trunk(backbone, NAMES)
    x = random_images(3, (32, 32, 3)) / 255.0
    expected = numpy(backbone(x, training=False))
    outputs = trunk(x, training=False)
    for name in NAMES:
        np.testing.assert_allclose(numpy(outputs[name]), expected, rtol=1e-5, atol=1e-6)


def test_each_task_updates_only_its_own_statistics():
    trunk = TaskSpecificBatchNorm().build_trunk(bn_backbone(), NAMES)
    x = random_images(8, (32, 32, 3)) / 255.0
    pool = keras.layers.GlobalAveragePooling2D()
    model = keras.Model(
        trunk.input,
        {t: keras.layers.Dense(1, name=t)(pool(trunk.output[t])) for t in NAMES},
    )
    model.compile("adam", loss={"size": "mse", "round": "mse"})
    before = numpy(trunk.get_layer("bn_1_size").moving_mean)
    model.fit(x, {"size": np.zeros((8, 1)), "round": np.ones((8, 1))}, epochs=2, verbose=0)

    def stat(name):
        return numpy(trunk.get_layer(name).moving_mean)

    assert not np.allclose(stat("bn_1_size"), before)  # statistics were updated
    # bn_0 reads the shared conv_0's output, the same for both tasks, so its
    # copies see the same batches; after it, each task's own scale and
    # offset make the features, and so the statistics, differ.
    np.testing.assert_allclose(stat("bn_0_size"), stat("bn_0_round"), rtol=1e-6)
    assert not np.allclose(stat("bn_1_size"), stat("bn_1_round"))
    assert not np.allclose(
        numpy(trunk.get_layer("bn_2_size").gamma), numpy(trunk.get_layer("bn_2_round").gamma)
    )


def test_sequential_backbone():
    backbone = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.BatchNormalization(name="bn"),
    ])
    trunk = TaskSpecificBatchNorm().build_trunk(backbone, ["a", "b", "c"])
    assert sorted(trunk.output) == ["a", "b", "c"]
    assert {l.name for l in trunk.layers} >= {"conv", "bn_a", "bn_b", "bn_c"}


# --- with MultiTaskModel -------------------------------------------------------


def model():
    return keras_mtl.build_model(
        bn_backbone(), TASKS, head_units=(8,), architecture=TaskSpecificBatchNorm()
    )


def fit(m):
    x = random_images(8, (32, 32, 3))
    y = random_labels(TASKS, 8, (32, 32, 3))
    return m.fit(x, y, batch_size=4, epochs=1, verbose=0), x


def test_fit_with_a_loss_level_weighting_and_round_trip(tmp_path):
    m = model()
    m.compile(optimizer="adam", weighting=W.DynamicWeightAverage())
    assert {tuple(z.shape) for z in m.representation(random_images(2, (32, 32, 3))).values()} == {
        (2, 4, 4, 8)
    }
    history, x = fit(m)
    assert np.isfinite(history.history["loss"]).all()

    path = str(tmp_path / "task_bn.keras")
    m.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    expected, got = m.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for name in NAMES:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-6)
    # Still shared after loading: one conv layer called once per task.
    assert calls(loaded.trunk, "conv_0") == 2
    assert len(loaded.trunk.trainable_variables) == len(m.trunk.trainable_variables)


@pytest.mark.slow  # long: `make test-slow` runs it
def test_fit_with_a_gradient_level_weighting_in_params_mode():
    m = model()
    m.compile(optimizer="adam", weighting=W.PCGrad(mode="params", seed=1))
    shared_kernel = numpy(m.trunk.get_layer("conv_0").kernel)
    history, _ = fit(m)
    assert np.isfinite(history.history["loss"]).all()
    assert not np.allclose(numpy(m.trunk.get_layer("conv_0").kernel), shared_kernel)


# --- bad arguments ---------------------------------------------------------------


def test_backbone_without_batch_norm():
    backbone = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(2, 3)])
    match = r"argument `backbone`.*BatchNormalization layers; .* has none"
    with pytest.raises(ValueError, match=match):
        TaskSpecificBatchNorm().build_trunk(backbone, NAMES)


def test_batch_norm_inside_a_nested_model():
    inner = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.BatchNormalization()], name="inner"
    )
    inputs = keras.Input((16, 16, 3))
    backbone = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inner(inputs)))
    with pytest.raises(ValueError, match=r"inside the nested models \['inner'\]"):
        TaskSpecificBatchNorm().build_trunk(backbone, NAMES)


def test_subclassed_backbone_and_bad_task_names():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match=r"Expected a Functional or Sequential `keras.Model`"):
        TaskSpecificBatchNorm().build_trunk(Subclassed(), NAMES)
    with pytest.raises(ValueError, match=r"argument `task_names`.*Received: task_names=\[\]"):
        TaskSpecificBatchNorm().build_trunk(bn_backbone(), [])


def test_config_round_trip():
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(TaskSpecificBatchNorm())
    )
    assert isinstance(restored, TaskSpecificBatchNorm)
    assert repr(restored) == "TaskSpecificBatchNorm()"
