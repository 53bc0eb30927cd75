"""Tests for `keras_mtl.weighting.GeometricLoss` (Chennupati et al. 2019)."""

import numpy as np
import pytest

from keras_mtl import weighting as W

from test_weighting_common import built, call, needs_tf, tf_gradients

NO_B = {"a": 4.0, "b": 0.0, "c": 4.0}


def test_geometric_mean_and_weights_by_hand():
    weighting = built(W.GeometricLoss(), ["a", "b", "c"])
    total, weights = call(weighting, {"a": 1.0, "b": 2.0, "c": 4.0})
    assert total == pytest.approx(2.0, rel=1e-6)  # (1 * 2 * 4) ** (1/3)
    assert weights == pytest.approx({"a": 2 / 3, "b": 1 / 3, "c": 1 / 6}, rel=1e-6)


def test_scale_of_one_loss_scales_the_total_by_its_root():
    weighting = built(W.GeometricLoss())
    t1, _ = call(weighting, {"a": 0.3, "b": 5.0})
    t2, _ = call(weighting, {"a": 0.3 * 100, "b": 5.0})
    assert t2 / t1 == pytest.approx(10.0, rel=1e-5)


def test_unlabelled_task_is_left_out_of_the_mean():
    weighting = built(W.GeometricLoss(), ["a", "b", "c"])
    total, weights = call(weighting, {"a": 1.0, "b": 0.0, "c": 9.0}, counts=NO_B)
    assert total == pytest.approx(3.0, rel=1e-6)
    assert weights == pytest.approx({"a": 1.5, "b": 0.0, "c": 1 / 6}, rel=1e-6)
    none = {"a": 0.0, "b": 0.0, "c": 0.0}
    assert call(weighting, none, counts=none) == (0.0, none)


@needs_tf
def test_reported_weights_are_the_gradient():
    weighting = built(W.GeometricLoss(), ["a", "b", "c"])
    steps = [({"a": 0.5, "b": 2.0, "c": 3.0}, None), ({"a": 0.5, "b": 0.0, "c": 3.0}, NO_B)]
    for losses, counts in steps:
        _, weights, grads = tf_gradients(weighting, losses, counts=counts)
        assert grads == pytest.approx(weights, rel=1e-5)
        assert np.all(np.isfinite(list(grads.values())))


@needs_tf
def test_a_labelled_loss_at_zero_without_a_bound_is_not_finite_and_explained():
    # Presence is the count: "b" labelled with loss 0 is not left out; the
    # logarithm of 0 makes the step non-finite (the model stops with the hint).
    weighting = built(W.GeometricLoss(), ["a", "b", "c"])
    for b in (0.0, -0.5):
        total, _, grads = tf_gradients(weighting, {"a": 0.5, "b": b, "c": 3.0})
        assert not (np.isfinite(total) and np.all(np.isfinite(list(grads.values())))), b
    hint = weighting.explain_nonfinite({"a": 0.5, "b": -0.5, "c": 3.0})
    assert "{'b': -0.5}" in hint and "GeometricLoss(min_losses=" in hint
    assert weighting.explain_nonfinite({"a": 0.5, "b": 2.0, "c": 3.0}) is None


@pytest.mark.parametrize("b", [0.0, -0.5, 2.0])
def test_min_losses_shift_the_losses(b):
    # Loss L - m in place of L: a bounded loss of 0 or below is weighted.
    bounded = built(W.GeometricLoss(min_losses={"b": -1.0}), ["a", "b", "c"])
    total, weights = call(bounded, {"a": 1.0, "b": b, "c": 4.0})
    expected = (1.0 * (b + 1.0) * 4.0) ** (1 / 3)
    assert total == pytest.approx(expected, rel=1e-6)
    assert weights == pytest.approx(
        {"a": expected / 3, "b": expected / (3 * (b + 1.0)), "c": expected / 12}, rel=1e-5
    )
    assert bounded.explain_nonfinite({"a": 1.0, "b": b, "c": 4.0}) is None
    hint = bounded.explain_nonfinite({"a": 1.0, "b": -1.0, "c": 4.0})
    assert "the mean loss of {'b': -1.0} is not above its bound {'b': -1.0}" in hint


def test_min_losses_config_and_bad_values():
    weighting = W.GeometricLoss(min_losses={"b": -1.0})
    assert weighting.get_config()["min_losses"] == {"b": -1.0}
    assert W.GeometricLoss.from_config(weighting.get_config()).min_losses == {"b": -1.0}
    assert W.GeometricLoss().get_config()["min_losses"] is None
    with pytest.raises(ValueError, match=r"argument `min_losses`. Expected None or a dict"):
        W.GeometricLoss(min_losses=[-1.0])
    with pytest.raises(ValueError, match=r"argument `min_losses\['b'\]`. Expected a float"):
        W.GeometricLoss(min_losses={"b": float("nan")})
    with pytest.raises(ValueError, match=r"argument `min_losses`.*unknown: \['z'\]"):
        built(W.GeometricLoss(min_losses={"z": -1.0}), ["a", "b", "c"])
