"""Tests for `keras_mtl.weighting.DynamicWeightAverage` (Liu et al. 2019)."""

import keras
import numpy as np
import pytest

from keras_mtl import weighting as W

from test_weighting_common import built, call, data, fit, tiny_model


def _epoch(weighting, steps, epoch):
    """One epoch of training steps: each a losses dict (every task
    labelled) or a `(losses, counts)` pair."""
    weighting.on_epoch_begin(epoch)
    for step in steps:
        losses, counts = step if isinstance(step, tuple) else (step, None)
        call(weighting, losses, training=True, counts=counts)
    weighting.on_epoch_end(epoch)


def test_weights_after_known_epoch_losses_by_hand():
    weighting = built(W.DynamicWeightAverage(temperature=2.0), ["a", "b", "c"])
    # Epoch means: e0 = (2, 1, 4); e1 = (1, 1, 3) (two steps each).
    _epoch(weighting, [{"a": 3.0, "b": 1.0, "c": 4.0}, {"a": 1.0, "b": 1.0, "c": 4.0}], 0)
    assert call(weighting, {"a": 1.0, "b": 1.0, "c": 1.0})[1] == {"a": 1.0, "b": 1.0, "c": 1.0}
    _epoch(weighting, [{"a": 1.5, "b": 1.0, "c": 3.0}, {"a": 0.5, "b": 1.0, "c": 3.0}], 1)
    r = np.array([1 / 2, 1 / 1, 3 / 4])
    expected = 3 * np.exp(r / 2) / np.exp(r / 2).sum()
    total, weights = call(weighting, {"a": 1.0, "b": 2.0, "c": 3.0})
    np.testing.assert_allclose([weights[k] for k in "abc"], expected, rtol=1e-6)
    assert total == pytest.approx(float(expected @ [1.0, 2.0, 3.0]), rel=1e-6)
    # The third epoch uses epochs 1 and 2 only: e2 = (1, 2, 3).
    _epoch(weighting, [{"a": 1.0, "b": 2.0, "c": 3.0}], 2)
    r = np.array([1 / 1, 2 / 1, 3 / 3])
    expected = 3 * np.exp(r / 2) / np.exp(r / 2).sum()
    weights = call(weighting, {"a": 1.0, "b": 1.0, "c": 1.0})[1]
    np.testing.assert_allclose([weights[k] for k in "abc"], expected, rtol=1e-6)


def test_evaluation_steps_do_not_count():
    weighting = built(W.DynamicWeightAverage())
    _epoch(weighting, [{"a": 2.0, "b": 2.0}], 0)
    weighting.on_epoch_begin(1)
    call(weighting, {"a": 1.0, "b": 2.0}, training=True)
    call(weighting, {"a": 100.0, "b": 0.5}, training=False)
    weighting.on_epoch_end(1)
    # r = (1/2, 1): evaluation's losses left no trace.
    w = call(weighting, {"a": 1.0, "b": 1.0})[1]
    assert w["a"] == pytest.approx(2 / (1 + np.exp(0.25)), rel=1e-6)


def test_unlabelled_steps_and_epochs():
    weighting = built(W.DynamicWeightAverage(temperature=1.0))
    no_b = {"a": 4.0, "b": 0.0}
    # "b" unlabelled in one of two steps: its mean is over the labelled step.
    _epoch(weighting, [({"a": 2.0, "b": 0.0}, no_b), {"a": 2.0, "b": 4.0}], 0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weighting.loss_history)[1], [2.0, 4.0])
    # "b" unlabelled for a whole epoch: its ratio is 1.
    _epoch(weighting, [({"a": 1.0, "b": 0.0}, no_b)], 1)
    w = call(weighting, {"a": 1.0, "b": 1.0})[1]
    assert w["a"] == pytest.approx(2 * np.exp(0.5) / (np.exp(0.5) + np.exp(1.0)), rel=1e-6)


def test_a_labelled_loss_of_zero_counts_in_the_epoch_mean():
    weighting = built(W.DynamicWeightAverage(temperature=1.0))
    # "b" labelled in both steps, its loss 0 in the first: the mean is 2, not 4.
    _epoch(weighting, [{"a": 2.0, "b": 0.0}, {"a": 2.0, "b": 4.0}], 0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weighting.loss_history)[1], [2.0, 2.0])
    _epoch(weighting, [({"a": 1.0, "b": 0.0}, {"a": 4.0, "b": 4.0}), {"a": 1.0, "b": 2.0}], 1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weighting.loss_history)[1], [1.0, 1.0])
    # r = (1/2, 1/2): equal weights.
    w = call(weighting, {"a": 1.0, "b": 1.0})[1]
    assert w == pytest.approx({"a": 1.0, "b": 1.0}, rel=1e-6)


def test_an_epoch_without_training_steps_changes_nothing():
    weighting = built(W.DynamicWeightAverage())
    _epoch(weighting, [{"a": 2.0, "b": 1.0}], 0)
    _epoch(weighting, [], 1)
    assert int(weighting.epochs_seen) == 1


def test_epoch_begin_clears_a_partial_epoch():
    weighting = built(W.DynamicWeightAverage())
    call(weighting, {"a": 50.0, "b": 50.0}, training=True)  # an interrupted epoch
    _epoch(weighting, [{"a": 2.0, "b": 1.0}], 0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weighting.loss_history)[1], [2.0, 1.0])


def test_fit_hooks_the_epochs_in_without_a_callback():
    model = tiny_model(W.DWA(temperature=2.0), run_eagerly=True)
    x, y = data(missing_b_in_first_batch=False)
    history = fit(model, x, y, epochs=3).history
    assert history["weight_a"][:2] == [1.0, 1.0] and history["weight_b"][:2] == [1.0, 1.0]
    means = np.array([history["a_loss"], history["b_loss"]])  # epoch means, as DWA's
    r = means[:, 1] / means[:, 0]
    expected = 2 * np.exp(r / 2) / np.exp(r / 2).sum()
    third = [history["weight_a"][2], history["weight_b"][2]]
    np.testing.assert_allclose(third, expected, rtol=1e-4)


def test_bad_temperature():
    with pytest.raises(
        ValueError,
        match=r"^Invalid value received for argument `temperature`. "
        r"Expected a float > 0. Received: temperature=-1$",
    ):
        W.DynamicWeightAverage(temperature=-1)
    with pytest.raises(ValueError, match="temperature=0"):
        W.DynamicWeightAverage(temperature=0)
