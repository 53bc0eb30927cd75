import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl
from keras_mtl import tasks as T
from keras_mtl.datasets import shapes

from conftest import needs_tf, random_images, random_labels, tiny_model, tiny_trunk

VECTOR = [T.Regression("a"), T.BinaryClassification("b"), T.MulticlassClassification("c", 3)]


def _losses(model, x, y, sample_weight=None):
    y_pred = model(x, training=False)
    return {k: float(v) for k, v in model.task_losses(y, y_pred, sample_weight).items()}


# --- losses and metrics from the tasks ------------------------------------------
def test_history_has_per_task_losses_and_metrics():
    model = tiny_model(VECTOR)
    model.compile()
    x, y = random_images(16), random_labels(VECTOR, 16)
    history = model.fit(x, y, validation_data=(x, y), batch_size=8, epochs=1, verbose=0)
    expected = {
        "loss", "a_loss", "a_mae", "a_rmse", "b_loss", "b_accuracy", "b_auc",
        "c_loss", "c_accuracy",
    }
    assert expected | {f"val_{k}" for k in expected} == set(history.history)


def test_trains_like_a_plain_keras_model_with_a_loss_dict():
    model = tiny_model(VECTOR)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss_weights={"a": 0.5})
    plain = keras.Model(model.inputs, model.outputs)
    plain.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss={"a": "mse", "b": "binary_crossentropy", "c": "sparse_categorical_crossentropy"},
        loss_weights={"a": 0.5, "b": 1.0, "c": 1.0},
    )
    x = random_images(8)
    y = random_labels(VECTOR, 8)
    assert np.isclose(
        model.evaluate(x, y, verbose=0, return_dict=True)["loss"],
        plain.evaluate(x, y, verbose=0, return_dict=True)["loss"],
        rtol=1e-5,
    )


def test_loss_and_metric_overrides():
    model = tiny_model(VECTOR)
    model.compile(loss={"a": "mae"}, metrics={"a": ["mse"], "c": [keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")]})
    logs = model.evaluate(random_images(8), random_labels(VECTOR, 8), verbose=0, return_dict=True)
    # A metrics dict adds to the task's own metrics ...
    assert {"a_mse", "a_mae", "a_rmse", "c_top2", "c_accuracy", "b_auc"} <= set(logs)
    # ... unless `default_metrics=False`.
    model.compile(loss={"a": "mae"}, metrics={"a": ["mse"]}, default_metrics=False)
    logs = model.evaluate(random_images(8), random_labels(VECTOR, 8), verbose=0, return_dict=True)
    assert sorted(logs) == ["a_loss", "a_mse", "b_loss", "c_loss", "loss"]
    x, y = random_images(4), random_labels(VECTOR, 4)
    pred = model(x)
    assert np.isclose(_losses(model, x, y)["a"], np.mean(np.abs(y["a"] - np.asarray(pred["a"]))), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loss": {"zzz": "mse"}}, r"argument `loss`.*unknown keys \['zzz'\]"),
        ({"loss": "mse"}, r"argument `loss`. Expected 'auto' or a dict"),
        ({"metrics": ["categorical_accuracy"]}, r"argument `metrics`.*one-hot"),
        ({"metrics": "mae"}, r"argument `metrics`. Expected .auto., a list"),
        ({"loss_weights": {"a": -1.0}}, r"argument `loss_weights`.*non-negative"),
        ({"loss_weights": {"q": 1.0}}, r"argument `loss_weights`.*unknown keys"),
        ({"weighting": "no_such_method"}, r"argument `weighting`.*'equal'.*no_such_method"),
        ({"weighting": "equal", "loss_weights": {"a": 1.0}}, r"either `loss_weights` or `weighting`"),
        ({"weighted_metrics": ["mae"]}, r"`weighted_metrics` is not supported"),
    ],
)
def test_bad_compile_arguments(kwargs, match):
    model = tiny_model(VECTOR)
    with pytest.raises(ValueError, match=match):
        model.compile(**kwargs)


# --- missing labels ----------------------------------------------------------
@needs_tf
def test_half_missing_labels_give_the_gradients_of_the_labelled_half():
    model = tiny_model(VECTOR)
    model.compile()
    x = random_images(8)
    y = random_labels(VECTOR, 8)
    masked = {k: v.copy() for k, v in y.items()}
    masked["a"][4:] = np.nan
    masked["b"][4:] = -1
    masked["c"][4:] = -1

    def grads(x, y, sample_weight=None):
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            loss = model.compute_loss(x, y, pred, sample_weight)
        return [np.asarray(g) for g in tape.gradient(loss, model.trainable_variables)]

    expected = grads(x[:4], {k: v[:4] for k, v in y.items()})
    for got in (
        grads(x, masked),  # missing markers
        grads(x, y, {k: np.r_[np.ones(4), np.zeros(4)] for k in y}),  # zero sample weights
    ):
        for e, g in zip(expected, got):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)


def test_a_task_without_labels_in_the_batch_has_loss_zero():
    model = tiny_model(VECTOR + [T.Segmentation("s", 3), T.DenseRegression("d")])
    model.compile()
    y = random_labels(model.tasks, 4)
    y["a"][:] = np.nan
    y["s"][:] = -1
    y["d"][:] = np.nan
    losses = _losses(model, random_images(4), y)
    assert losses["a"] == losses["s"] == losses["d"] == 0.0
    assert losses["b"] > 0 and losses["c"] > 0
    history = model.fit(random_images(4), y, epochs=1, verbose=0)
    # No labelled example in the epoch: no score (NaN), not a perfect 0.
    absent = [k for k in history.history if k.split("_")[0] in ("a", "s", "d")]
    assert sorted(absent) == ["a_loss", "a_mae", "a_rmse", "d_loss", "d_mae", "d_rmse",
                              "s_loss", "s_miou", "s_pixel_accuracy"]
    for key, values in history.history.items():
        assert np.isnan(values[0]) == (key in absent), key


def test_missing_labels_are_left_out_of_metrics():
    model = tiny_model([T.Regression("a")])
    model.compile()
    x = random_images(4)
    pred = np.asarray(model.predict(x, verbose=0)["a"])[:, 0]
    y = np.array([pred[0] + 1.0, np.nan, pred[2] - 3.0, np.nan], "float32")
    logs = model.evaluate(x, {"a": y}, verbose=0, return_dict=True)
    assert np.isclose(logs["a_mae"], 2.0, rtol=1e-4)


# --- bad labels at fit time ------------------------------------------------
@pytest.mark.parametrize(
    "change, match",
    [
        (lambda y: y.pop("b"), r"Missing keys: \['b'\]"),
        (lambda y: y.update(zzz=np.zeros(8)), r"unknown keys: \['zzz'\]"),
        (lambda y: y.update(a=np.zeros((8, 3), "float32")), r"task 'a': expected shape \('batch', 1\).*\(('batch'|8), 3\)"),
        (lambda y: y.update(c=np.zeros((8, 3), "int32")), r"task 'c': expected shape \('batch',\)"),
    ],
)
def test_bad_labels_fail_at_fit_start(change, match):
    model = tiny_model(VECTOR)
    model.compile()
    y = random_labels(VECTOR, 8)
    change(y)
    with pytest.raises(ValueError, match=match):
        model.fit(random_images(8), y, epochs=1, verbose=0)


def test_dense_label_shape_must_match_the_image():
    model = tiny_model([T.Segmentation("s", 3)])
    model.compile()
    with pytest.raises(ValueError, match=r"task 's': expected shape \('batch', 16, 16\)"):
        model.fit(random_images(2), {"s": np.zeros((2, 8, 8), "int32")}, verbose=0)


# --- every task kind learns on the shapes data --------------------------------
SHAPES_TASKS = [
    T.MulticlassClassification("shape", 3, class_names=list(shapes.CLASS_NAMES)),
    T.Regression("size"),
    T.Regression("position", units=2),
    T.BinaryClassification("single"),
    T.MultilabelClassification("present", num_labels=3),
    T.Segmentation("segmentation", shapes.NUM_SEGMENTATION_CLASSES),
    T.DenseRegression("depth"),
]


def _shapes_data(n=64, size=32):
    images, labels = shapes.generate("train", n, image_size=size, seed=3)
    labels = {k: labels[k] for k in ("shape", "size", "position", "segmentation", "depth")}
    labels["single"] = (shapes.generate("train", n, image_size=size, seed=3)[1]["count"] == 1).astype("float32")
    seg = labels["segmentation"]
    labels["present"] = np.stack([(seg == c + 1).any(axis=(1, 2)) for c in range(3)], -1).astype("float32")
    return images, labels


@pytest.mark.parametrize("task", SHAPES_TASKS, ids=lambda t: t.name)
def test_every_task_kind_learns_on_shapes(task):
    images, labels = _shapes_data()
    model = keras_mtl.build_model(tiny_trunk((32, 32, 3), filters=8), [task], head_units=(16,))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    y = {task.name: labels[task.name]}
    before = model.evaluate(images, y, verbose=0, return_dict=True)["loss"]
    model.fit(images, y, batch_size=16, epochs=8, verbose=0)
    after = model.evaluate(images, y, verbose=0, return_dict=True)["loss"]
    assert after < 0.9 * before, (before, after)


# --- saving ---------------------------------------------------------------
def test_keras_round_trip_with_safe_mode(tmp_path):
    tasks = VECTOR + [T.Segmentation("s", 3), T.DenseRegression("d")]
    model = tiny_model(tasks, dropout=0.1)
    model.compile(loss={"a": "huber"}, weighting="equal")
    x, y = random_images(8), random_labels(tasks, 8)
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    assert isinstance(restored, keras_mtl.MultiTaskModel)
    assert json.dumps(restored.get_config()) == json.dumps(model.get_config())
    assert restored.get_compile_config() == model.get_compile_config()
    assert [t.get_config() for t in restored.tasks] == [t.get_config() for t in tasks]
    a, b = model.predict(x, verbose=0), restored.predict(x, verbose=0)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-6)
    # Compiled on load: it evaluates and keeps training with no compile() call.
    np.testing.assert_allclose(
        model.evaluate(x, y, verbose=0), restored.evaluate(x, y, verbose=0), rtol=1e-5
    )
    restored.fit(x, y, epochs=1, verbose=0)


def test_dropout_seed_states_are_saved_so_resumed_runs_draw_the_same_masks(tmp_path):
    model = tiny_model(VECTOR, dropout=0.5)
    model.compile()
    x, y = random_images(8), random_labels(VECTOR, 8)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    states = [keras.ops.convert_to_numpy(s) for s in model._seed_states()]
    assert len(states) == len(VECTOR)  # one Dropout per head
    for a, b in zip(states, restored._seed_states()):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))
    a, b = model(x, training=True), restored(x, training=True)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-6)
    # A model with other dropout layers cannot take these states.
    other = tiny_model(VECTOR + [T.Regression("d")], dropout=0.5)
    with pytest.raises(ValueError, match="random-state variables"):
        other.load_own_variables({"seed_0": states[0]})


@pytest.mark.slow  # long: `make test-slow` runs it
def test_the_issue_example_with_a_keras_application(tmp_path):
    """The foundation issue's example, end to end, on MobileNetV3Small."""
    tasks = [T.Regression("age", loss="mae"), T.BinaryClassification("gender"),
             T.MulticlassClassification("ethnicity", num_classes=5)]
    model = keras_mtl.build_model("MobileNetV3Small", tasks, input_shape=(64, 64, 3), weights=None, head_units=(16,))
    model.compile(optimizer="adam")
    x = random_images(8, (64, 64, 3))
    y = random_labels(tasks, 8, (64, 64, 3))
    y["age"] = np.abs(y["age"]) * 30
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    history = model.fit(train, validation_data=train, epochs=1, verbose=0)
    assert {"age_mae", "val_gender_accuracy", "ethnicity_loss"} <= set(history.history)
    path = str(tmp_path / "hydra.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(model.predict(x, verbose=0)["age"], restored.predict(x, verbose=0)["age"], atol=1e-5)


def test_frozen_backbone_trains_only_heads():
    model = keras_mtl.build_model(tiny_trunk(), VECTOR, trainable_backbone=False, head_units=(4,))
    assert not model.trunk.trainable_variables
    assert model.trainable_variables
    with pytest.raises(ValueError, match="trainable_backbone"):
        keras_mtl.build_model(tiny_trunk(), VECTOR, trainable_backbone="yes")


def test_representation_is_the_shared_boundary():
    model = tiny_model(VECTOR)
    x = random_images(2)
    z = model.representation(x)
    direct = model(x)
    np.testing.assert_allclose(model.heads["a"](z), direct["a"], atol=1e-6)
    assert model.shared_variables() == model.trunk.trainable_variables


@pytest.mark.parametrize(
    "kwargs, match",
    [({"head_units": (0,)}, "head_units"), ({"dropout": 1.0}, "dropout"), ({"tasks": []}, "tasks")],
)
def test_bad_builder_arguments(kwargs, match):
    arguments = {"tasks": VECTOR, **kwargs}
    with pytest.raises(ValueError, match=rf"argument `{match}`"):
        keras_mtl.build_model(tiny_trunk(), **arguments)


# --- non-finite losses ------------------------------------------------------------
def _batches_breaking_in_epoch(bad_epoch, x, y):
    """A dataset of 2 batches per epoch; in epoch `bad_epoch` (1-based) the
    second batch holds a regression label whose square overflows float32."""
    epochs = []

    def generate():
        epochs.append(None)
        for start in (0, 8):
            labels = {k: v[start:start + 8].copy() for k, v in y.items()}
            if len(epochs) == bad_epoch and start == 8:
                labels["a"][0] = 3e19
            yield x[start:start + 8], labels

    signature = (
        tf.TensorSpec((None, *x.shape[1:]), tf.float32),
        {k: tf.TensorSpec((None, *v.shape[1:]), tf.as_dtype(v.dtype)) for k, v in y.items()},
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(2))


@pytest.mark.parametrize("weighting", [None, "uncertainty", "mgda"])
def test_a_non_finite_loss_stops_fit_and_leaves_checkpoints_untouched(weighting, tmp_path):
    model = tiny_model(VECTOR)
    model.compile(optimizer=keras.optimizers.SGD(0.01), weighting=weighting)
    x, y = random_images(16), random_labels(VECTOR, 16)
    checkpoint = str(tmp_path / "last.keras")
    backup = str(tmp_path / "backup")
    callbacks = [keras.callbacks.ModelCheckpoint(checkpoint, save_freq=1),
                 keras.callbacks.BackupAndRestore(backup)]
    with pytest.raises(FloatingPointError, match=r"epoch 2, step 2 of the training data: the loss is nan .*'a': inf"):
        model.fit(_batches_breaking_in_epoch(2, x, y), epochs=3, callbacks=callbacks, verbose=0)
    # The checkpoint holds the weights after the last finite step.
    saved = keras.models.load_model(checkpoint)
    assert np.all([np.all(np.isfinite(w)) for w in saved.get_weights()])
    # The backup of epoch 1 is still there: a new fit resumes from it.
    history = model.fit(_batches_breaking_in_epoch(0, x, y), epochs=3, callbacks=callbacks,
                        verbose=0)
    assert len(history.history["loss"]) == 2 and np.all(np.isfinite(history.history["loss"]))


class _KernelPenalty(keras.layers.Layer):
    """Adds 0.5·Σ k² of a layer's kernel with `add_loss` (soft sharing's
    penalty works so): a loss made during the call, not a regulariser
    Keras recomputes from the variables."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def call(self, x):
        self.add_loss(0.5 * keras.ops.sum(self.layer.kernel**2))
        return x


@pytest.mark.parametrize("penalty", ["kernel_regularizer", "add_loss"])
@pytest.mark.parametrize("weighting", [
    None,
    "uncertainty",
    "pcgrad",
    pytest.param(lambda: keras_mtl.weighting.PCGrad(mode="params"), id="pcgrad_params"),
    pytest.param(
        lambda: keras_mtl.weighting.NashMTL(mode="params", update_every=2), id="nash_mtl_reuse"
    ),
])
def test_the_trunks_own_losses_train_under_every_level_and_mode(weighting, penalty):
    """The trunk's own losses join the step. With every label missing the
    task losses are 0, so only the L2 term 0.5·Σ k² moves the kernel: SGD
    scales it by 1 − 2·lr·0.5 = 0.9 per step (two steps)."""
    inputs = keras.Input((16, 16, 3))
    regularizer = keras.regularizers.L2(0.5) if penalty == "kernel_regularizer" else None
    conv = keras.layers.Conv2D(4, 3, strides=2, kernel_regularizer=regularizer)
    x = conv(inputs)
    if penalty == "add_loss":
        x = _KernelPenalty(conv)(x)
    trunk = keras.Model(inputs, x)
    model = keras_mtl.build_model(trunk, VECTOR[:2], head_units=(8,))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        weighting=weighting() if callable(weighting) else weighting,
    )
    before = keras.ops.convert_to_numpy(conv.kernel)
    unlabelled = {"a": np.full((8, 1), np.nan, "float32"), "b": np.full((8, 1), -1.0, "float32")}
    # Two steps of `fit`'s step (`fit` itself refuses an epoch without labels).
    images = random_images(8)
    for batch in (slice(0, 4), slice(4, 8)):
        model.train_on_batch(images[batch], {k: v[batch] for k, v in unlabelled.items()})
    np.testing.assert_allclose(keras.ops.convert_to_numpy(conv.kernel), before * 0.9**2, rtol=1e-5)


def test_nan_labels_are_missing_not_a_nan_loss():
    model = tiny_model(VECTOR)
    model.compile()
    x, y = random_images(8), random_labels(VECTOR, 8)
    y["a"][:] = np.nan
    y["b"] = y["b"].astype("float32")
    y["b"][:4] = np.nan
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isnan(history.history["a_loss"][0])  # no label in the epoch: no loss
    assert np.isfinite(history.history["b_loss"][0])
    assert np.isfinite(history.history["loss"][0])


def test_gradient_methods_refuse_a_backend_without_a_gradient_step(monkeypatch):
    model = tiny_model(VECTOR)
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(ValueError, match=r"`weighting`.*'torch' backend \(TensorFlow and JAX only\)"):
        model.compile(weighting="mgda")
