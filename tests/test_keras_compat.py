"""Tests for `keras_mtl._keras_compat`, the only module that uses Keras internals.

Each test pins down the private Keras behaviour one function relies on, so
that a Keras release which renames or changes it fails here, loudly, rather
than somewhere deep in a training step. Run this file first against a new
Keras. Backend-agnostic (TensorFlow and JAX) except where marked.
"""

import inspect

import keras
import numpy as np
import pytest

from keras_mtl import _keras_compat

TF = keras.backend.backend() == "tensorflow"
tf_only = pytest.mark.skipif(not TF, reason="TensorFlow backend only")


def dense_model():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(inputs))


# --- models and layers ---------------------------------------------------------
def test_loss_tracker_is_the_loss_metric_of_a_compiled_model():
    model = dense_model()
    model.compile(optimizer="sgd", loss="mse")
    tracker = _keras_compat.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean)
    assert tracker.name == "loss"
    assert any(metric is tracker for metric in model.metrics)
    # It is the metric behind the `loss` log.
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(float(tracker.result()), logs["loss"], rtol=1e-6)


def test_loss_tracker_refuses_a_model_without_one():
    with pytest.raises(RuntimeError, match=r"loss tracker.*not supported"):
        _keras_compat.loss_tracker(dense_model())  # not compiled


def test_metric_direction_is_what_keras_monitors_read():
    assert _keras_compat.metric_direction(keras.metrics.BinaryAccuracy()) == "up"
    assert _keras_compat.metric_direction(keras.metrics.AUC()) == "up"
    assert _keras_compat.metric_direction(keras.metrics.MeanAbsoluteError()) == "down"
    assert _keras_compat.metric_direction(keras.metrics.Mean()) is None
    # Keras' monitors use it when they find the metric among compile's own.
    model = dense_model()
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    stop = keras.callbacks.EarlyStopping(monitor="mae")
    stop.set_model(model)
    stop._set_monitor_op()
    assert stop.monitor_op == keras.ops.less


class Block(keras.layers.Layer):
    """A custom layer holding layers (as experts or attention modules do)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(3, name="inner_dense")
        self.norm = keras.layers.LayerNormalization(name="inner_norm")

    def call(self, x):
        return self.norm(self.inner(x))


def test_flatten_layers_reaches_nested_layers_once_without_the_layer_itself():
    inputs = keras.Input((3,))
    block = Block(name="block")
    shared = keras.layers.Dense(3, name="shared")
    outputs = shared(block(shared(inputs)))
    model = keras.Model(inputs, outputs, name="model")
    names = [layer.name for layer in _keras_compat.flatten_layers(model)]
    assert "model" not in names
    assert {"block", "inner_dense", "inner_norm", "shared"} <= set(names)
    assert len(names) == len(set(names))
    # `keras.Model.layers`, the public list, has the top level only.
    assert "inner_dense" not in [layer.name for layer in model.layers]
    assert [l.name for l in _keras_compat.flatten_layers(block)] == ["inner_dense", "inner_norm"]


def test_call_count_counts_symbolic_calls():
    shared, once, never = (keras.layers.Dense(3) for _ in range(3))
    inputs = keras.Input((3,))
    once(shared(shared(inputs)))
    assert _keras_compat.call_count(shared) == 2
    assert _keras_compat.call_count(once) == 1
    assert _keras_compat.call_count(never) == 0


# --- MultiWorkerMirroredStrategy -------------------------------------------------
def test_multi_worker_logs_are_unchanged_on_the_default_strategy():
    logs = {"loss": keras.ops.convert_to_tensor(1.5), "age_mae": keras.ops.zeros(())}
    assert _keras_compat.multi_worker_logs(logs) is logs


@tf_only
def test_multi_worker_check_names_tensorflow_strategies():
    import tensorflow as tf

    assert isinstance(tf.distribute.MultiWorkerMirroredStrategy, type)
    assert not _keras_compat._is_multi_worker(tf.distribute.get_strategy())
    assert _keras_compat._current_strategy() is tf.distribute.get_strategy()


@tf_only
def test_multi_worker_build_overrides_a_method_of_the_tensorflow_trainer():
    method = getattr(keras.Model, "_maybe_symbolic_build", None)
    assert callable(method), "Keras' TF trainer has no `_maybe_symbolic_build` any more"
    parameters = inspect.signature(method).parameters
    assert {"iterator", "data_batch"} <= set(parameters)


def test_multi_worker_build_fits_on_the_default_strategy():
    class Model(_keras_compat.MultiWorkerBuild, keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Model()
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert "mae" in history.history


# --- optimizers ------------------------------------------------------------------
def built(optimizer):
    model = dense_model()
    kernel, bias = model.get_layer("out").kernel, model.get_layer("out").bias
    optimizer.build([kernel, bias])
    return kernel, bias


def test_variable_index_is_the_position_in_the_build_list():
    optimizer = keras.optimizers.SGD(0.1)
    kernel, bias = built(optimizer)
    assert _keras_compat.variable_index(optimizer, kernel) == 0
    assert _keras_compat.variable_index(optimizer, bias) == 1


@tf_only
def test_variable_index_knows_the_tensorflow_variable_inside():
    # Under `tf.distribute`, `update_step` gets TF variables, not Keras ones.
    optimizer = keras.optimizers.SGD(0.1)
    kernel, bias = built(optimizer)
    assert _keras_compat.variable_index(optimizer, bias.value) == 1
    assert _keras_compat.variable_index(optimizer, kernel.value) == 0


@pytest.mark.parametrize("steps", [None, 2])
def test_iterations_variable_is_the_step_counter(steps):
    optimizer = keras.optimizers.Adam(0.1, gradient_accumulation_steps=steps)
    built(optimizer)
    counter = _keras_compat.iterations_variable(optimizer)
    assert isinstance(counter, keras.Variable)
    if steps is None:
        assert counter is optimizer.iterations
    else:  # the public `iterations` is a tensor: micro-steps // steps
        assert not isinstance(optimizer.iterations, keras.Variable)
    for _ in range(4):
        counter.assign_add(1)
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 4 // (steps or 1)


def test_uses_weight_decay_follows_exclude_from_weight_decay():
    by_name = keras.optimizers.AdamW(0.1, weight_decay=0.1)
    by_name.exclude_from_weight_decay(var_names=["bias"])
    kernel, bias = built(by_name)
    assert _keras_compat.uses_weight_decay(by_name, kernel) is True
    assert _keras_compat.uses_weight_decay(by_name, bias) is False

    model = dense_model()
    kernel, bias = model.get_layer("out").kernel, model.get_layer("out").bias
    by_variable = keras.optimizers.AdamW(0.1, weight_decay=0.1)
    by_variable.exclude_from_weight_decay(var_list=[kernel])
    by_variable.build([kernel, bias])
    assert _keras_compat.uses_weight_decay(by_variable, kernel) is False
    assert _keras_compat.uses_weight_decay(by_variable, bias) is True
    if TF:  # the TF variable inside, as `update_step` gets it under `tf.distribute`
        assert _keras_compat.uses_weight_decay(by_variable, kernel.value) is False
