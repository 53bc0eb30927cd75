"""Tests for `keras_mtl.weighting.Uncertainty` (Kendall et al. 2018)."""

import keras
import numpy as np
import pytest

from keras_mtl import weighting as W

from test_weighting_common import built, call, data, fit, needs_tf, tf_gradients, tiny_model


def test_total_for_given_log_variances_by_hand():
    weighting = built(W.Uncertainty(task_kinds={"b": "classification"}))
    weighting.log_variances.assign([0.5, -1.0])
    total, weights = call(weighting, {"a": 2.0, "b": 3.0})
    # a: 0.5 exp(-0.5) 2 + 0.5 * 0.5 ; b: exp(1) 3 + 0.5 * (-1)
    expected = 0.5 * np.exp(-0.5) * 2 + 0.25 + np.exp(1.0) * 3 - 0.5
    assert total == pytest.approx(expected, rel=1e-6)
    assert weights == pytest.approx({"a": 0.5 * np.exp(-0.5), "b": np.exp(1.0)}, rel=1e-6)


def test_default_is_the_uniform_regression_form():
    weighting = built(W.Uncertainty(initial_log_variance=np.log(2.0)))
    total, weights = call(weighting, {"a": 2.0, "b": 4.0})
    assert total == pytest.approx(0.25 * 6 + np.log(2.0), rel=1e-6)
    assert weights == pytest.approx({"a": 0.25, "b": 0.25})


NO_B = {"a": 4.0, "b": 0.0}


def test_unlabelled_task_adds_neither_term_nor_regulariser():
    weighting = built(W.Uncertainty())
    weighting.log_variances.assign([1.0, 2.0])
    total, weights = call(weighting, {"a": 2.0, "b": 0.0}, counts=NO_B)
    assert total == pytest.approx(0.5 * np.exp(-1.0) * 2 + 0.5)
    assert weights["b"] == pytest.approx(0.5 * np.exp(-2.0))  # its state, reported


@pytest.mark.parametrize("loss", [0.0, -1.5])
def test_a_labelled_task_with_loss_zero_or_negative_keeps_its_regulariser(loss):
    weighting = built(W.Uncertainty())
    weighting.log_variances.assign([1.0, 2.0])
    total, weights = call(weighting, {"a": 2.0, "b": loss})
    # b: 0.5 exp(-2) L + 0.5 * 2, labelled whatever its loss.
    expected = 0.5 * np.exp(-1.0) * 2 + 0.5 + 0.5 * np.exp(-2.0) * loss + 1.0
    assert total == pytest.approx(expected, rel=1e-6)
    assert weights["b"] == pytest.approx(0.5 * np.exp(-2.0))


@needs_tf
def test_gradient_of_the_log_variance():
    import tensorflow as tf

    weighting = built(W.Uncertainty(task_kinds={"a": "classification"}))
    weighting.log_variances.assign([0.3, 0.0])
    with tf.GradientTape() as tape:
        total, _ = weighting({"a": 2.0, "b": 0.0}, NO_B)
    grad = tape.gradient(total, weighting.log_variances).numpy()
    # d/ds (exp(-s) L + s / 2) = -exp(-s) L + 1/2 ; "b" unlabelled: 0.
    np.testing.assert_allclose(grad, [-np.exp(-0.3) * 2 + 0.5, 0.0], rtol=1e-6)
    # "b" labelled with loss 0: its regulariser's gradient 1/2 remains.
    with tf.GradientTape() as tape:
        total, _ = weighting({"a": 2.0, "b": 0.0})
    grad = tape.gradient(total, weighting.log_variances).numpy()
    np.testing.assert_allclose(grad, [-np.exp(-0.3) * 2 + 0.5, 0.5], rtol=1e-6)
    _, weights, grads = tf_gradients(weighting, {"a": 2.0, "b": 1.0})
    assert grads == pytest.approx(weights)


def test_log_variances_are_trained_by_the_model_optimizer():
    model = tiny_model(W.Uncertainty(), run_eagerly=True)
    assert any(v is model.weighting.log_variances for v in model.trainable_variables)
    x, y = data()
    history = fit(model, x, y, epochs=1).history
    s = keras.ops.convert_to_numpy(model.weighting.log_variances)
    assert np.all(s != 0.0)
    assert history["weight_a"][0] != 0.5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"task_kinds": {"a": "dense"}},
            r"argument `task_kinds`. Expected a dict \{task: 'regression' \| 'classification'\}",
        ),
        ({"task_kinds": ["regression"]}, r"Received: task_kinds=\['regression'\]"),
        ({"initial_log_variance": float("inf")}, r"Received: initial_log_variance=inf"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        W.Uncertainty(**kwargs)


def test_unknown_task_kind_fails_at_compile():
    with pytest.raises(ValueError, match=r"argument `task_kinds`.*unknown: \['c'\]"):
        tiny_model(W.Uncertainty(task_kinds={"c": "regression"}))
