"""Behaviour every weighting method shares (registry, config, unlabelled
tasks, fit, saving, resuming), and the helpers the `test_weighting_*` files
import: a tiny two-task model, deterministic data, the methods under test."""

import functools

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl import tasks as T
from keras_mtl import weighting as W
from keras_mtl.callbacks import LossWeightScheduler

from conftest import random_images, random_labels

TASKS = [T.Regression("a"), T.BinaryClassification("b")]
NAMES = ["a", "b"]

#: id -> factory of a fresh weighting, for the two tasks "a" and "b".
METHODS = {
    "equal": lambda: W.Equal(),
    "static": lambda: W.Static({"a": 0.5, "b": 2.0}),
    "inverse_size": lambda: W.InverseSize(counts={"a": 8, "b": 6}),
    "uncertainty": lambda: W.Uncertainty(task_kinds={"b": "classification"}),
    "dwa": lambda: W.DynamicWeightAverage(temperature=2.0),
    "rlw": lambda: W.RandomLossWeighting(seed=7),
    "gls": lambda: W.GeometricLoss(),
    "si": lambda: W.ScaleInvariant(),
    "famo": lambda: W.FAMO(learning_rate=0.1),
    # No warm-up before the nadir epoch: a two-epoch fit reaches STCH itself.
    "stch": lambda: W.SmoothTchebycheff(mu=0.5, warmup_epochs=0),
    "imtl_l": lambda: W.IMTLL(),
}


def tiny_model(weighting=None, seed=0, **compile_kwargs):
    """Two heads on a one-conv trunk; same seed, same initial weights."""
    keras.utils.set_random_seed(seed)
    trunk = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, strides=2)])
    model = keras_mtl.MultiTaskModel(trunk, TASKS, head_units=(8,))
    if weighting is not None:
        model.compile(weighting=weighting, **compile_kwargs)
    return model


def data(n=8, missing_b_in_first_batch=True):
    """Deterministic images and labels; with the flag, the first batch of 4
    has no label for "b" (its labelled count is 0 there)."""
    x = random_images(n)
    y = random_labels(TASKS, n)
    if missing_b_in_first_batch:
        y["b"][:4] = -1
    return x, y


def weighting_state(model):
    """`{variable path: numpy value}` of the model's weighting."""
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.weighting.variables}


def assert_same_state(a, b, atol=1e-6):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=atol, rtol=0, err_msg=key)


def call(weighting, losses, training=False, counts=None):
    """Calls a weighting on Python floats; returns floats. `counts` is
    `{task: labelled examples}` (0: no label in the step), or `None`: every
    task labelled, whatever its loss."""
    total, weights = weighting(losses, counts, training=training)
    return float(total), {k: float(v) for k, v in weights.items()}


def counts_without(*unlabelled, names=NAMES, n=4.0):
    """`{task: n}`, with 0 for the `unlabelled` tasks."""
    return {name: 0.0 if name in unlabelled else n for name in names}


def built(weighting, names=NAMES):
    weighting.build({n: () for n in names})
    return weighting


def weighting_values(model):
    """The weighting's variables as `[(name, numpy value)]`, in order (layer
    names differ between instances, so paths are not compared)."""
    return [(v.name, keras.ops.convert_to_numpy(v)) for v in model.weighting.variables]


def assert_same_values(a, b, atol=1e-6):
    assert [name for name, _ in a] == [name for name, _ in b]
    for (name, x), (_, y) in zip(a, b):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=name)


def fit(model, x, y, **kwargs):
    kwargs.setdefault("verbose", 0)
    return model.fit(x, y, batch_size=4, shuffle=False, **kwargs)


def tf_gradients(weighting, losses, training=True, counts=None):
    """(total, weights, d total / d losses) under TensorFlow."""
    import tensorflow as tf

    tensors = {k: tf.constant(v, "float32") for k, v in losses.items()}
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        total, weights = weighting(tensors, counts, training=training)
    grads = tape.gradient(total, tensors, unconnected_gradients="zero")
    return (
        float(total),
        {k: float(v) for k, v in weights.items()},
        {k: float(v) for k, v in grads.items()},
    )


needs_tf = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="gradient check uses tf.GradientTape"
)

#: Methods whose state changes during training, and the callbacks they use.
STATEFUL = ["static", "uncertainty", "dwa", "rlw", "famo", "stch", "imtl_l"]
CALLBACKS = {
    "static": lambda: [
        LossWeightScheduler(lambda epoch, w: {"a": 0.5 + epoch, "b": 2.0 / (1 + epoch)})
    ],
}


def callbacks_for(method):
    return CALLBACKS.get(method, lambda: [])()


# --- registry -----------------------------------------------------------------
@pytest.mark.parametrize(
    "name, cls",
    [
        ("equal", W.Equal),
        ("static", W.Static),
        ("inverse_size", W.InverseSize),
        ("uncertainty", W.Uncertainty),
        ("DWA", W.DynamicWeightAverage),
        ("dynamic_weight_average", W.DynamicWeightAverage),
        ("rlw", W.RandomLossWeighting),
        ("GLS", W.GeometricLoss),
        ("scale_invariant", W.ScaleInvariant),
        ("SI", W.ScaleInvariant),
        ("scaleinvls", W.ScaleInvariant),
        ("famo", W.FAMO),
        ("stch", W.SmoothTchebycheff),
        ("smooth_tchebycheff", W.SmoothTchebycheff),
        ("imtl_l", W.IMTLL),
    ],
)
def test_get_resolves_names_and_aliases(name, cls):
    assert type(W.get(name)) is cls
    assert name.lower() in W.names()


def test_aliases_are_the_classes():
    assert W.DWA is W.DynamicWeightAverage
    assert W.RLW is W.RandomLossWeighting
    assert W.GLS is W.GeometricLoss
    assert W.STCH is W.SmoothTchebycheff


def test_get_unknown_name_lists_the_known_ones():
    match = r"one of the names \[.*'dwa'.*'famo'.*\]. Received: weighting='nonexistent'"
    with pytest.raises(ValueError, match=match):
        W.get("nonexistent")


# --- config -------------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(METHODS))
def test_config_round_trip(method):
    weighting = METHODS[method]()
    config = weighting.get_config()
    clone = type(weighting).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(weighting))
    assert type(restored) is type(weighting)
    assert restored.get_config() == config


def test_get_config_has_every_hyperparameter():
    expected = {
        "static": {"weights": {"a": 0.5, "b": 2.0}},
        "inverse_size": {"counts": {"a": 8.0, "b": 6.0}},
        "uncertainty": {"task_kinds": {"b": "classification"}, "initial_log_variance": 0.0},
        "dwa": {"temperature": 2.0},
        "rlw": {"seed": 7},
        "gls": {"min_losses": None},
        "si": {"min_losses": None},
        "famo": {"learning_rate": 0.1, "weight_decay": 0.001, "min_losses": None},
        "stch": {"mu": 0.5, "warmup_epochs": 0, "min_losses": None},
        "imtl_l": {"initial_scale": 0.0, "min_losses": None},
    }
    for method, hyper in expected.items():
        config = METHODS[method]().get_config()
        assert {k: config[k] for k in hyper} == hyper, method


# --- unlabelled tasks -----------------------------------------------------------
@pytest.mark.parametrize("method", sorted(METHODS))
def test_an_unlabelled_task_gives_no_nan_and_keeps_the_others(method):
    # An unlabelled task (count 0) has loss 0 by convention.
    weighting = built(METHODS[method]())
    steps = [
        ({"a": 0.7, "b": 0.0}, counts_without("b")),
        ({"a": 0.5, "b": 1.3}, counts_without()),
        ({"a": 0.0, "b": 0.0}, counts_without("a", "b")),
    ]
    for _ in range(3):  # stateful methods: several steps, with and without "b"
        for losses, counts in steps:
            total, weights = call(weighting, losses, training=True, counts=counts)
            assert np.isfinite(total) and all(np.isfinite(list(weights.values()))), losses
    no_b = counts_without("b")
    total, weights = call(weighting, {"a": 0.7, "b": 0.0}, training=True, counts=no_b)
    assert weights["a"] > 0 and total != 0
    total, _ = call(weighting, {"a": 0.0, "b": 0.0}, counts=counts_without("a", "b"))
    assert np.isfinite(total)


@needs_tf
@pytest.mark.parametrize("method", sorted(METHODS))
def test_gradients_are_finite_with_an_unlabelled_task(method):
    weighting = built(METHODS[method]())
    call(weighting, {"a": 0.9, "b": 0.4}, training=True)
    total, weights, grads = tf_gradients(
        weighting, {"a": 0.7, "b": 0.0}, counts=counts_without("b")
    )
    assert np.isfinite(total)
    assert np.isfinite(grads["a"]) and grads["a"] > 0
    assert np.isfinite(grads["b"])


#: Methods whose weights do not depend on the step's loss values (GLS, SI,
#: FAMO and STCH take logarithms: see their own tests for losses <= 0).
LOSS_FREE = ["equal", "static", "inverse_size", "uncertainty", "dwa", "rlw"]


@pytest.mark.parametrize("method", LOSS_FREE)
@pytest.mark.parametrize("loss", [0.0, -0.5])
def test_a_labelled_task_with_loss_zero_or_negative_is_weighted(method, loss):
    # Presence is the count, never the loss's value: "b" (loss <= 0, count 4)
    # gets the weight a positive loss would get, and its loss is in the total.
    _, expected = call(built(METHODS[method]()), {"a": 0.7, "b": 1.3}, training=True)
    for counts in (None, counts_without()):
        total, weights = call(
            built(METHODS[method]()), {"a": 0.7, "b": loss}, training=True, counts=counts
        )
        assert weights == pytest.approx(expected, rel=1e-6) and weights["b"] > 0, counts
        # The first step: log-variances 0, so no regulariser in Uncertainty's total.
        assert total == pytest.approx(0.7 * weights["a"] + loss * weights["b"], abs=1e-6)
    if method == "dwa":  # its epoch mean counts the step: 1 labelled loss of "b"
        weighting = built(METHODS[method]())
        call(weighting, {"a": 0.7, "b": loss}, training=True, counts=counts_without())
        counts = keras.ops.convert_to_numpy(weighting.loss_counts)
        np.testing.assert_array_equal(counts, [1.0, 1.0])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_without_counts_every_task_is_labelled(method):
    # A custom loop may leave `counts` out: the same as every count positive.
    a, b = built(METHODS[method]()), built(METHODS[method]())
    for losses in ({"a": 0.7, "b": 1.3}, {"a": 0.4, "b": 1.1}):
        total_a, weights_a = call(a, losses, training=True)
        total_b, weights_b = call(b, losses, training=True, counts=counts_without())
        assert total_a == pytest.approx(total_b, rel=1e-6)
        assert weights_a == pytest.approx(weights_b, rel=1e-6)


# --- state ----------------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(METHODS))
def test_state_arrays_round_trip_and_refuse_another_shape(method):
    weighting = built(METHODS[method]())
    for losses in ({"a": 0.9, "b": 0.4}, {"a": 0.7, "b": 0.5}):
        call(weighting, losses, training=True)
    weighting.on_epoch_end(0)
    state = weighting.state_arrays()
    assert all(isinstance(a, np.ndarray) for a in state)
    assert len(state) == len(weighting.variables)
    clone = built(METHODS[method]())
    clone.load_state(state)
    for x, y in zip(clone.state_arrays(), state):
        np.testing.assert_array_equal(x, y)
    assert call(clone, {"a": 0.3, "b": 0.8}, training=True) == call(
        weighting, {"a": 0.3, "b": 0.8}, training=True
    )
    if state:  # a state of another method or other tasks is refused
        with pytest.raises(ValueError, match="Cannot load the state of weighting"):
            clone.load_state(state[:-1])
        with pytest.raises(ValueError, match="Cannot load the state of weighting"):
            clone.load_state([np.zeros(np.shape(x) + (1,), x.dtype) for x in state])


# --- training, saving, resuming ------------------------------------------------
#: Weights History must show (2 epochs of 2 steps, "b" unlabelled in step 1).
EXPECTED_WEIGHTS = {
    "equal": {"weight_a": [1.0, 1.0], "weight_b": [1.0, 1.0]},
    "inverse_size": {"weight_a": [6 / 7, 6 / 7], "weight_b": [8 / 7, 8 / 7]},
    # The scheduler's values: read from the variable by the traced step.
    "static": {"weight_a": [0.5, 1.5], "weight_b": [2.0, 1.0]},
    "dwa": {"weight_a": [1.0, 1.0], "weight_b": [1.0, 1.0]},
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_fit_reports_weights_and_saves_the_state(method, tmp_path):
    # The traced (graph) train step, unlike the resume tests below.
    model = tiny_model(METHODS[method]())
    x, y = data()
    before = weighting_values(model)
    history = fit(model, x, y, epochs=2, callbacks=callbacks_for(method)).history
    for key in ("loss", "a_loss", "b_loss", "weight_a", "weight_b"):
        assert key in history and np.all(np.isfinite(history[key])), (key, history)
    for key, values in EXPECTED_WEIGHTS.get(method, {}).items():
        np.testing.assert_allclose(history[key], values, rtol=1e-6, err_msg=key)
    if method in STATEFUL:
        after = weighting_values(model)
        changed = [not np.array_equal(a, b) for (_, a), (_, b) in zip(before, after)]
        assert any(changed), method
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)  # safe_mode=True
    assert type(restored.weighting) is type(model.weighting)
    assert restored.weighting.get_config() == model.weighting.get_config()
    assert_same_values(weighting_values(restored), weighting_values(model), atol=0)


# The resume tests run eagerly: the state logic is the same as in the traced
# step (tested above), and tracing ten models would dominate the suite's time.
def _numpy(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


@functools.lru_cache(maxsize=None)
def _uninterrupted(method):
    """Weighting state and model weights after 2 straight epochs (cached:
    both resume tests compare with it)."""
    x, y = data()
    model = tiny_model(METHODS[method](), run_eagerly=True)
    fit(model, x, y, epochs=2, callbacks=callbacks_for(method))
    return weighting_values(model), _numpy(model.weights)


def _assert_same_run(model, method):
    values, weights = _uninterrupted(method)
    assert_same_values(weighting_values(model), values)
    assert len(model.weights) == len(weights)
    for a, b in zip(_numpy(model.weights), weights):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def stateful_first():
    """Every method, stateless ones included (resuming must not depend on
    which), those without state of their own in `make test-slow` only: for
    them the run resumes the model's and optimizer's state, which every
    stateful method's run resumes too."""
    return [m if m in STATEFUL else pytest.param(m, marks=pytest.mark.slow)
            for m in sorted(METHODS)]


@pytest.mark.parametrize("method", stateful_first())
def test_resume_after_load_model_equals_an_uninterrupted_run(method, tmp_path):
    x, y = data()
    split = tiny_model(METHODS[method](), run_eagerly=True)
    fit(split, x, y, epochs=1, callbacks=callbacks_for(method))
    after_one = dict(weighting_values(split))
    path = str(tmp_path / "epoch1.keras")
    split.save(path)
    resumed = keras.models.load_model(path)
    fit(resumed, x, y, epochs=2, initial_epoch=1, callbacks=callbacks_for(method))
    # The second epoch changes the state (of methods that have some), so the
    # equality below is not vacuous; the model's weights are compared always.
    final, _ = _uninterrupted(method)
    if final:
        assert any(not np.allclose(after_one[name], value) for name, value in final), final
    _assert_same_run(resumed, method)


class _Interrupt(keras.callbacks.Callback):
    """Raises after the first step of the second epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1:
            raise RuntimeError("interrupted")


@pytest.mark.parametrize("method", stateful_first())
def test_backup_and_restore_resumes_an_interrupted_run_exactly(method, tmp_path):
    x, y = data()
    model = tiny_model(METHODS[method](), run_eagerly=True)
    backup = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(
            model, x, y, epochs=2,
            callbacks=callbacks_for(method)
            + [keras.callbacks.BackupAndRestore(backup), _Interrupt()],
        )
    # The same model object: its state went on one step past the backup,
    # which BackupAndRestore must undo.
    callbacks = callbacks_for(method) + [keras.callbacks.BackupAndRestore(backup)]
    fit(model, x, y, epochs=2, callbacks=callbacks)
    _assert_same_run(model, method)
