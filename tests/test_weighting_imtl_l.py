"""Tests for `keras_mtl.weighting.IMTLL` (IMTL-L, Liu et al. 2021)."""

import math

import keras
import numpy as np
import pytest

from keras_mtl import weighting as W

from test_weighting_common import built, call, data, fit, needs_tf, tf_gradients, tiny_model

ABC = ["a", "b", "c"]
NO_B = {"a": 4.0, "b": 0.0, "c": 4.0}


def with_scales(scales, **kwargs):
    weighting = built(W.IMTLL(**kwargs), ABC[: len(scales)])
    weighting.loss_scales.assign(scales)
    return weighting


def test_total_and_weights_for_given_scales_by_hand():
    weighting = with_scales([0.5, -1.0, 0.0])
    total, weights = call(weighting, {"a": 2.0, "b": 3.0, "c": 0.25})
    # sum_t e^{s_t} L_t - s_t
    expected = math.exp(0.5) * 2 - 0.5 + math.exp(-1.0) * 3 + 1.0 + 0.25
    assert total == pytest.approx(expected, rel=1e-6)
    assert weights == pytest.approx({"a": math.exp(0.5), "b": math.exp(-1.0), "c": 1.0}, rel=1e-6)


def test_the_first_steps_are_the_plain_sum():
    # LibMTL's initial scales: 0, so e^s = 1 and the regulariser is 0.
    total, weights = call(built(W.IMTLL(), ABC), {"a": 2.0, "b": 3.0, "c": 0.5})
    assert total == pytest.approx(5.5, rel=1e-6)
    assert weights == {"a": 1.0, "b": 1.0, "c": 1.0}
    weighting = built(W.IMTLL(initial_scale=math.log(2.0)), ABC)
    total, weights = call(weighting, {"a": 1.0, "b": 2.0, "c": 3.0})
    assert total == pytest.approx(2 * 6 - 3 * math.log(2.0), rel=1e-6)
    assert weights == pytest.approx({"a": 2.0, "b": 2.0, "c": 2.0}, rel=1e-6)


def test_losses_of_any_positive_size_give_finite_results():
    weighting = with_scales([0.0, 30.0, -30.0])
    for losses in ({"a": 1e-30, "b": 1e-20, "c": 1e20}, {"a": 1e30, "b": 1e-30, "c": 1e-30}):
        total, weights = call(weighting, losses)
        assert np.isfinite(total) and all(np.isfinite(list(weights.values()))), losses


def test_names():
    for name in ("imtl_l", "IMTL-L", "imtll", "IMTLL"):
        assert type(W.get(name)) is W.IMTLL, name
    assert type(W.get("imtl")) is W.IMTL  # IMTL-G, the gradient half
    assert W.IMTLL.level == "loss" and W.IMTLL.search_space == {}


def test_an_unlabelled_task_adds_neither_its_term_nor_its_scale():
    weighting = with_scales([1.0, 2.0, -0.5])
    total, weights = call(weighting, {"a": 2.0, "b": 0.0, "c": 3.0}, counts=NO_B)
    assert total == pytest.approx(math.exp(1.0) * 2 - 1.0 + math.exp(-0.5) * 3 + 0.5, rel=1e-6)
    assert weights["b"] == pytest.approx(math.exp(2.0), rel=1e-6)  # its state, reported
    none = {"a": 0.0, "b": 0.0, "c": 0.0}
    total, weights = call(weighting, none, counts=none)
    assert total == 0.0 and all(np.isfinite(list(weights.values())))


@needs_tf
def test_gradient_of_the_scales_and_of_the_losses():
    import tensorflow as tf

    weighting = with_scales([0.3, -0.2, 1.0])

    def scale_gradient(losses, counts):
        with tf.GradientTape() as tape:
            total, _ = weighting(losses, counts, training=True)
        return tape.gradient(total, weighting.loss_scales).numpy()

    # d/ds_t (e^{s_t} L_t - s_t) = e^{s_t} L_t - 1 ...
    grad = scale_gradient({"a": 2.0, "b": 0.5, "c": 1.5}, None)
    expected = [math.exp(0.3) * 2 - 1, math.exp(-0.2) * 0.5 - 1, math.exp(1.0) * 1.5 - 1]
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    # ... and 0 for a task unlabelled in the step ("b").
    grad = scale_gradient({"a": 2.0, "b": 0.0, "c": 1.5}, NO_B)
    np.testing.assert_allclose(grad, [expected[0], 0.0, expected[2]], rtol=1e-6)
    _, weights, grads = tf_gradients(weighting, {"a": 2.0, "b": 0.5, "c": 1.5})
    assert grads == pytest.approx(weights, rel=1e-6)  # dL/dL_t = e^{s_t}


@needs_tf
def test_gradient_descent_on_the_scales_drives_every_scaled_loss_to_one():
    # The property the method is named for: with the losses held fixed, the
    # model's optimiser (plain SGD here) moves each e^{s_t} L_t towards 1,
    # s_t towards -log L_t, along s <- s - lr (e^s L - 1); an unlabelled task
    # ("c") keeps its scale.
    import tensorflow as tf

    losses = {"a": 0.25, "b": 4.0, "c": 0.0}
    counts = {"a": 4.0, "b": 4.0, "c": 0.0}
    weighting = with_scales([0.0, 0.0, 0.7])
    optimizer = keras.optimizers.SGD(learning_rate=0.2)
    reference = np.zeros(2)  # float64, by hand
    gaps = []
    for _ in range(60):
        with tf.GradientTape() as tape:
            total, weights = weighting(losses, counts, training=True)
        gaps.append([abs(weights[k].numpy() * losses[k] - 1.0) for k in ("a", "b")])
        grad = tape.gradient(total, weighting.loss_scales)
        optimizer.apply([grad], [weighting.loss_scales])
        reference -= 0.2 * (np.exp(reference) * np.array([0.25, 4.0]) - 1.0)
        s = weighting.loss_scales.numpy()
        np.testing.assert_allclose(s[:2], reference, rtol=1e-5, atol=1e-6)
    gaps = np.array(gaps)
    assert np.all(np.diff(gaps, axis=0) <= 1e-7), gaps[:8]  # every step closer to 1
    assert gaps[0] == pytest.approx([0.75, 3.0])
    assert np.all(gaps[-1] < 1e-4)
    s = weighting.loss_scales.numpy()
    np.testing.assert_allclose(s[:2], -np.log([0.25, 4.0]), atol=1e-4)
    assert s[2] == pytest.approx(0.7)


@needs_tf
def test_at_the_optimal_scales_the_update_is_scale_invariant_and_that_of_log_losses():
    # At s_t = -log L_t the network's gradient is sum_t dL_t / L_t (the sum
    # of log losses, ScaleInvariant); multiplying a loss by c moves its
    # optimum to s_t - log c and leaves the update unchanged.
    import tensorflow as tf

    theta = tf.Variable([0.3, -0.7, 1.2])

    def task_losses(scale_b):
        return {
            "a": tf.reduce_sum(tf.square(theta)) + 0.5,
            "b": scale_b * (tf.reduce_sum(tf.square(theta - 1.0)) + 0.2),
            "c": tf.exp(theta[0] - theta[2]),
        }

    def gradient(weighting, scale_b=1.0):
        if isinstance(weighting, W.IMTLL):  # its optimal scales for these losses
            weighting.loss_scales.assign(-np.log([float(v) for v in task_losses(scale_b).values()]))
        with tf.GradientTape() as tape:
            total, _ = weighting(task_losses(scale_b), training=True)
        return tape.gradient(total, theta).numpy()

    imtl_l = built(W.IMTLL(), ABC)
    reference = gradient(built(W.ScaleInvariant(), ABC))
    assert np.all(np.isfinite(reference)) and np.any(reference != 0)
    for scale in (1.0, 1e-3, 1e3):
        np.testing.assert_allclose(gradient(imtl_l, scale), reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("b", [0.0, -0.5, 2.0])
def test_min_losses_shift_the_losses(b):
    weighting = with_scales([0.0, 0.5, 0.0], min_losses={"b": -1.0})
    total, weights = call(weighting, {"a": 1.0, "b": b, "c": 4.0})
    assert total == pytest.approx(1.0 + math.exp(0.5) * (b + 1.0) - 0.5 + 4.0, rel=1e-6)
    assert weights == pytest.approx({"a": 1.0, "b": math.exp(0.5), "c": 1.0}, rel=1e-6)
    assert weighting.explain_nonfinite({"a": 1.0, "b": b, "c": 4.0}) is None


@pytest.mark.parametrize("b", [0.0, -0.5])
def test_a_labelled_loss_at_or_below_its_bound_is_not_finite_and_explained(b):
    # e^s L - s has no minimum in s for L <= 0 (s would grow without end):
    # the step is not finite, and the model stops with this hint.
    weighting = built(W.IMTLL(), ABC)
    total, weights = call(weighting, {"a": 0.5, "b": b, "c": 3.0})
    assert math.isnan(total) and all(np.isfinite(list(weights.values())))
    hint = weighting.explain_nonfinite({"a": 0.5, "b": b, "c": 3.0})
    assert f"The mean loss of {{'b': {b}}} is not above its bound {{'b': 0.0}}" in hint
    assert "IMTLL(min_losses={task: a lower bound of its loss})" in hint
    assert weighting.explain_nonfinite({"a": 0.5, "b": 2.0, "c": 3.0}) is None
    # Unlabelled, its loss 0 is left out; with a bound below it, it is weighted.
    assert math.isfinite(call(weighting, {"a": 0.5, "b": 0.0, "c": 3.0}, counts=NO_B)[0])
    bounded = built(W.IMTLL(min_losses={"b": -1.0}), ABC)
    assert math.isfinite(call(bounded, {"a": 0.5, "b": b, "c": 3.0})[0])
    hint = bounded.explain_nonfinite({"a": 0.5, "b": -1.0, "c": 3.0})
    assert "The mean loss of {'b': -1.0} is not above its bound {'b': -1.0}" in hint


def test_scales_are_trained_by_the_model_optimizer_saved_and_loaded(tmp_path):
    # The first batch of 4 has no label for "b": after that one step (Adam,
    # the default), "a"'s scale moved and "b"'s did not.
    model = tiny_model(W.IMTLL(), run_eagerly=True)
    assert any(v is model.weighting.loss_scales for v in model.trainable_variables)
    x, y = data()
    history = fit(model, x[:4], {k: v[:4] for k, v in y.items()}, epochs=1).history
    s = keras.ops.convert_to_numpy(model.weighting.loss_scales)
    assert s[0] != 0.0 and s[1] == 0.0
    assert history["weight_a"] == [1.0] and history["weight_b"] == [1.0]  # e^0, before the step
    # The scale moves against e^{s} L - 1: down for a loss above 1, up below.
    a_loss = history["a_loss"][0]
    assert np.sign(s[0]) == -np.sign(a_loss - 1.0)
    fit(model, x, y, epochs=1)
    s = keras.ops.convert_to_numpy(model.weighting.loss_scales)
    assert s[1] != 0.0
    # The learned scales are saved and loaded with the model (safe mode).
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored.weighting) is W.IMTLL
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored.weighting.loss_scales), s)
    losses = {"a": 0.7, "b": 1.3}
    assert call(restored.weighting, losses) == call(model.weighting, losses)


def test_config_round_trip_and_bad_arguments():
    weighting = W.IMTLL(initial_scale=-0.5, min_losses={"b": -1.0})
    config = weighting.get_config()
    assert {k: config[k] for k in ("initial_scale", "min_losses")} == {
        "initial_scale": -0.5, "min_losses": {"b": -1.0}}
    assert W.IMTLL.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(weighting))
    assert type(restored) is W.IMTLL and restored.get_config() == config
    with pytest.raises(ValueError, match=r"Received: initial_scale=inf"):
        W.IMTLL(initial_scale=float("inf"))
    with pytest.raises(ValueError, match=r"argument `min_losses`. Expected None or a dict"):
        W.IMTLL(min_losses=[-1.0])
    with pytest.raises(ValueError, match=r"argument `min_losses`.*unknown: \['z'\]"):
        built(W.IMTLL(min_losses={"z": -1.0}), ABC)
