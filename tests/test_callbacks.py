"""Tests of `keras_mtl.callbacks`: WeightHistory and GradientConflict.

(`LossWeightScheduler` is tested with `Static` in test_weighting_static.py.)
These tests run on TensorFlow and on JAX (`make test-slow`); on another
backend GradientConflict must refuse clearly.
"""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

from keras_mtl import callbacks
from keras_mtl import training
from keras_mtl import tasks as T
from keras_mtl import weighting as W

from conftest import random_images, random_labels, tiny_model

TASKS = [T.Regression("a"), T.BinaryClassification("b"), T.Segmentation("s", 3)]


def _data(tasks=TASKS, n=8, seed=0):
    # Pixels in [0, 1]: the tiny trunk has no rescaling, and raw 0-255
    # pixels make SGD diverge from some initialisations (JAX's draw).
    return random_images(n, seed=seed) / 255.0, random_labels(tasks, n, seed=seed)


def _compiled(tasks=TASKS, weighting=None, seed=1):
    keras.utils.set_random_seed(seed)
    model = tiny_model(tasks)
    model.compile(optimizer=keras.optimizers.SGD(0.05), weighting=weighting)
    return model


def _scalars(log_dir):
    """`{tag: [(step, value)]}` from the event files under `log_dir/train`."""
    found = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "train", "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                found.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor)))
                )
    return found


# --- WeightHistory -------------------------------------------------------------
def test_weight_history_records_the_epoch_weights_of_history():
    model = _compiled(weighting="uncertainty")
    weights = callbacks.WeightHistory()
    history = model.fit(*_data(), batch_size=4, epochs=3, callbacks=[weights], verbose=0)
    assert weights.epochs == [0, 1, 2]
    assert list(weights.history) == ["a", "b", "s"]
    for name in ("a", "b", "s"):
        np.testing.assert_allclose(weights.history[name], history.history[f"weight_{name}"])
    # Uncertainty learns its weights: they move.
    assert weights.history["a"][0] != weights.history["a"][-1]


@pytest.mark.slow  # make test stays under 10 minutes; make test-slow runs it
def test_weight_history_follows_a_schedule_exactly():
    model = _compiled(weighting=W.Static({"a": 1.0, "b": 0.0, "s": 2.0}))
    scheduler = callbacks.LossWeightScheduler(lambda epoch, w: {"b": epoch / 2})
    weights = callbacks.WeightHistory()
    model.fit(*_data(), batch_size=4, epochs=3, callbacks=[scheduler, weights], verbose=0)
    assert weights.history == {"a": [1.0, 1.0, 1.0], "b": [0.0, 0.5, 1.0], "s": [2.0, 2.0, 2.0]}


def test_weight_history_continues_across_fits():
    model = _compiled(weighting="dwa")
    weights = callbacks.WeightHistory()
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=2, callbacks=[weights], verbose=0)
    model.fit(x, y, batch_size=4, epochs=4, initial_epoch=2, callbacks=[weights], verbose=0)
    assert weights.epochs == [0, 1, 2, 3]
    assert all(len(v) == 4 for v in weights.history.values())


def test_weight_history_writes_tensorboard_scalars(tmp_path):
    model = _compiled(weighting="uncertainty")
    weights = callbacks.WeightHistory(log_dir=tmp_path)
    model.fit(*_data(), batch_size=4, epochs=2, callbacks=[weights], verbose=0)
    scalars = _scalars(str(tmp_path))
    assert sorted(scalars) == ["task_weights/a", "task_weights/b", "task_weights/s"]
    for name in ("a", "b", "s"):
        steps, values = zip(*scalars[f"task_weights/{name}"])
        assert steps == (0, 1)
        np.testing.assert_allclose(values, weights.history[name], rtol=1e-6)


def test_weight_history_needs_a_weighting():
    model = _compiled(weighting=None)
    with pytest.raises(ValueError, match="compile the model with `weighting=`"):
        model.fit(*_data(), epochs=1, callbacks=[callbacks.WeightHistory()], verbose=0)


def test_callbacks_need_a_multi_task_model():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(loss="mse")
    x, y = np.zeros((4, 4)), np.zeros((4, 1))
    with pytest.raises(ValueError, match="`WeightHistory` needs a `keras_mtl.MultiTaskModel`"):
        model.fit(x, y, epochs=1, callbacks=[callbacks.WeightHistory()], verbose=0)
    probe = (x, {"a": y})
    with pytest.raises(ValueError, match="`GradientConflict` needs a `keras_mtl.MultiTaskModel`"):
        model.fit(x, y, epochs=1, callbacks=[callbacks.GradientConflict(probe)], verbose=0)


@pytest.mark.parametrize("log_dir", [3, ["logs"]])
def test_bad_log_dir(log_dir):
    with pytest.raises(ValueError, match=r"argument `log_dir`. Expected None or a folder path. Received: log_dir="):
        callbacks.WeightHistory(log_dir=log_dir)
    with pytest.raises(ValueError, match="argument `log_dir`"):
        callbacks.GradientConflict(_data(), log_dir=log_dir)


def test_configs_round_trip(tmp_path):
    config = callbacks.WeightHistory(log_dir=tmp_path).get_config()
    assert config == {"log_dir": str(tmp_path)}
    assert callbacks.WeightHistory(**config).get_config() == config
    config = callbacks.GradientConflict(_data(), every_n_steps=5, log_dir=tmp_path).get_config()
    assert config == {"every_n_steps": 5, "log_dir": str(tmp_path)}
    assert callbacks.GradientConflict(_data(), **config).get_config() == config


# --- cosine_matrix -------------------------------------------------------------
def test_cosine_matrix_by_hand():
    grads = np.array([[[3.0, 0.0]], [[0.0, 2.0]], [[1.0, 1.0]], [[-6.0, 0.0]], [[0.0, 0.0]]])
    matrix, norms = callbacks.cosine_matrix(grads)
    s = 1 / np.sqrt(2)
    expected = np.array([
        [1, 0, s, -1], [0, 1, s, 0], [s, s, 1, -s], [-1, 0, -s, 1],
    ])
    np.testing.assert_allclose(matrix[:4, :4], expected, atol=1e-12)
    np.testing.assert_allclose(norms, [3, 2, np.sqrt(2), 6, 0])
    # A zero gradient has no direction: NaN, never a made-up 0.
    assert np.isnan(matrix[4]).all() and np.isnan(matrix[:, 4]).all()


# --- GradientConflict ----------------------------------------------------------
def _twin_model(seed=3):
    """Two regression tasks whose heads are identical copies."""
    model = _compiled([T.Regression("a"), T.Regression("b")], seed=seed)
    model.heads["b"].set_weights(model.heads["a"].get_weights())
    return model


def test_identical_tasks_have_cosine_one():
    model = _twin_model()
    x = random_images(8)
    labels = np.random.default_rng(0).normal(size=(8, 1)).astype("float32")
    conflict = callbacks.GradientConflict((x, {"a": labels, "b": labels}))
    conflict.set_model(model)
    conflict.on_train_begin()
    np.testing.assert_allclose(conflict.matrices[0], np.ones((2, 2)), atol=1e-6)
    assert conflict.steps == [0]
    assert conflict.norms[0][0] > 0


def test_opposite_errors_have_cosine_minus_one():
    # MSE: dL/dz = J^T (pred - y) * 2/n. The same head and labels that put
    # the prediction error the other way round give exactly -g.
    model = _twin_model()
    x = random_images(8)
    labels = np.random.default_rng(0).normal(size=(8, 1)).astype("float32")
    prediction = np.asarray(model.predict(x, verbose=0)["a"])
    mirrored = 2 * prediction - labels
    conflict = callbacks.GradientConflict((x, {"a": labels, "b": mirrored}))
    conflict.set_model(model)
    conflict.on_train_begin()
    np.testing.assert_allclose(conflict.matrices[0][0, 1], -1.0, atol=1e-5)


def test_gradients_at_the_representation_match_a_direct_computation():
    model = _compiled()
    x, y = _data()
    grads, losses, counts = training.representation_gradients(model, x, y)
    assert tuple(grads.shape) == (3, 8, 4, 4, 4)  # (T, batch, *z)
    z = model.representation(x)

    def loss(z):
        prediction = model.heads["b"](z)
        return keras.ops.mean(keras.losses.binary_crossentropy(y["b"], prediction))

    if keras.backend.backend() == "jax":
        import jax

        expected = jax.grad(loss)(z)
    else:
        z = tf.constant(z)
        with tf.GradientTape() as tape:
            tape.watch(z)
            value = loss(z)
        expected = tape.gradient(value, z)
    np.testing.assert_allclose(grads[1], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(losses["b"]), float(loss(z)), rtol=1e-6)
    assert float(counts["s"]) == 8 * 16 * 16


@pytest.mark.parametrize(
    "every_n_steps, epochs, expected",
    [
        (2, 2, [0, 2, 4, 6, 8]),
        (3, 2, [0, 3, 6]),
        (None, 2, [0, 4, 8]),
        # An epoch without a scheduled measurement gets one at its end.
        (6, 3, [0, 4, 6, 12]),
    ],
)
def test_measurement_steps(every_n_steps, epochs, expected):
    model = _compiled()
    x, y = _data(n=16)
    conflict = callbacks.GradientConflict(_data(seed=1), every_n_steps=every_n_steps)
    model.fit(x, y, batch_size=4, epochs=epochs, callbacks=[conflict], verbose=0)
    assert conflict.steps == expected
    assert len(conflict.matrices) == len(conflict.norms) == len(expected)


def test_epoch_logs_hold_the_epoch_mean_of_every_pair():
    model = _compiled()
    x, y = _data(n=16)
    conflict = callbacks.GradientConflict(_data(seed=1), every_n_steps=2)
    history = model.fit(x, y, batch_size=4, epochs=2, callbacks=[conflict], verbose=0)
    keys = [k for k in history.history if k.startswith("grad_cosine_")]
    assert keys == ["grad_cosine_a_b", "grad_cosine_a_s", "grad_cosine_b_s"]
    # Epoch 1: steps 2 and 4 (index 1, 2); epoch 2: steps 6 and 8.
    matrices = np.stack(conflict.matrices)
    np.testing.assert_allclose(
        history.history["grad_cosine_a_s"], [matrices[1:3, 0, 2].mean(), matrices[3:5, 0, 2].mean()],
        rtol=1e-6,
    )
    assert all(-1 <= v <= 1 for k in keys for v in history.history[k])
    np.testing.assert_allclose(conflict.mean_matrix(), matrices.mean(axis=0))


def test_measuring_does_not_change_training():
    x, y = _data(n=16)
    reference = _compiled()
    reference.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    model = _compiled()
    conflict = callbacks.GradientConflict(_data(seed=1), every_n_steps=1)
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, callbacks=[conflict], verbose=0)
    for a, b in zip(reference.weights, model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_with_a_gradient_method_a_dataset_and_tensorboard(tmp_path):
    model = _compiled(weighting=W.MGDA(mode="representation"))
    x, y = _data(n=8)
    probe = tf.data.Dataset.from_tensor_slices(_data(seed=1)).batch(4)
    conflict = callbacks.GradientConflict(probe, every_n_steps=1, log_dir=tmp_path)
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[conflict], verbose=0)
    assert conflict.steps == [0, 1, 2]
    assert conflict.task_names == ["a", "b", "s"]
    scalars = _scalars(str(tmp_path))
    assert sorted(scalars) == [
        "gradient_cosine/a_b", "gradient_cosine/a_s", "gradient_cosine/b_s"
    ]
    steps, values = zip(*scalars["gradient_cosine/b_s"])
    assert steps == (0, 1, 2)
    np.testing.assert_allclose(values, [m[1, 2] for m in conflict.matrices], rtol=1e-6)


@pytest.mark.parametrize("every_n_steps", [0, -1, 1.5, True, "2"])
def test_bad_every_n_steps(every_n_steps):
    with pytest.raises(
        ValueError,
        match=r"argument `every_n_steps`. Expected None or an integer >= 1. Received: every_n_steps=",
    ):
        callbacks.GradientConflict(_data(), every_n_steps=every_n_steps)


@pytest.mark.parametrize(
    "data, match",
    [
        (np.zeros((4, 16, 16, 3)), r"Expected a probe batch `\(x, y\)`"),
        ((np.zeros((4, 16, 16, 3)),), r"Expected a probe batch `\(x, y\)`"),
        ((np.zeros((4, 16, 16, 3)), np.zeros((4, 1))), r"Expected labels `y` as a dict"),
        (tf.data.Dataset.from_tensor_slices(_data()).batch(4).take(0), "empty dataset"),
    ],
)
def test_bad_data(data, match):
    with pytest.raises(ValueError, match=r"argument `data`.*" + match):
        callbacks.GradientConflict(data)


def test_probe_labels_must_match_the_tasks():
    model = _compiled()
    x, y = _data()
    del y["s"]
    conflict = callbacks.GradientConflict((x, {**y, "z": y["a"]}))
    with pytest.raises(ValueError, match=r"argument `data`.*Missing: \['s'\]; unknown: \['z'\]"):
        model.fit(*_data(), epochs=1, callbacks=[conflict], verbose=0)


def test_probe_without_labels_for_a_task_fails_before_training():
    model = _compiled()
    x, y = _data()
    y["a"] = np.full_like(y["a"], np.nan)  # every label of `a` missing
    conflict = callbacks.GradientConflict((x, y))
    before = [np.asarray(w) for w in model.weights]
    with pytest.raises(ValueError, match=r"labels for every task; it has none for \['a'\]"):
        model.fit(*_data(), epochs=1, callbacks=[conflict], verbose=0)
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_gradient_conflict_refuses_other_backends(monkeypatch):
    conflict = callbacks.GradientConflict(_data())
    conflict.set_model(_compiled())
    # As on PyTorch: the check runs before anything is measured.
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(
        ValueError, match="needs the TensorFlow or JAX backend. Received: backend='torch'"
    ):
        conflict.on_train_begin()
    assert conflict.matrices == []


def test_mean_matrix_before_any_measurement():
    with pytest.raises(ValueError, match="no measurement to average yet"):
        callbacks.GradientConflict(_data()).mean_matrix()
