"""Tests for `keras_mtl.weighting.GeometricLoss` (Chennupati et al. 2019)."""

import numpy as np
import pytest

from keras_mtl import weighting as W

from test_weighting_common import built, call, needs_tf, tf_gradients


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
    total, weights = call(weighting, {"a": 1.0, "b": 0.0, "c": 9.0})
    assert total == pytest.approx(3.0, rel=1e-6)
    assert weights == pytest.approx({"a": 1.5, "b": 0.0, "c": 1 / 6}, rel=1e-6)
    assert call(weighting, {"a": 0.0, "b": 0.0, "c": 0.0}) == (0.0, {"a": 0.0, "b": 0.0, "c": 0.0})


@needs_tf
def test_reported_weights_are_the_gradient():
    weighting = built(W.GeometricLoss(), ["a", "b", "c"])
    for losses in ({"a": 0.5, "b": 2.0, "c": 3.0}, {"a": 0.5, "b": 0.0, "c": 3.0}):
        _, weights, grads = tf_gradients(weighting, losses)
        assert grads == pytest.approx(weights, rel=1e-5)
        assert np.all(np.isfinite(list(grads.values())))
