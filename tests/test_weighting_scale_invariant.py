"""Tests for `keras_mtl.weighting.ScaleInvariant` (Nash-MTL's SI baseline,
Navon et al. 2022)."""

import math

import numpy as np
import pytest

from keras_mtl import weighting as W

from test_weighting_common import built, call, needs_tf, tf_gradients

E = math.e
NO_B = {"a": 4.0, "b": 0.0, "c": 4.0}


def test_sum_of_logs_and_weights_by_hand():
    weighting = built(W.ScaleInvariant(), ["a", "b", "c"])
    total, weights = call(weighting, {"a": 1.0, "b": E, "c": E**2})
    assert total == pytest.approx(3.0, rel=1e-6)  # 0 + 1 + 2
    assert weights == pytest.approx({"a": 1.0, "b": 1 / E, "c": E**-2}, rel=1e-6)


def test_names_and_the_official_code_name():
    for name in ("scale_invariant", "SI", "scaleinvls", "Scale-Invariant"):
        assert type(W.get(name)) is W.ScaleInvariant, name
    assert W.ScaleInvariant.level == "loss" and W.ScaleInvariant.search_space == {}


def test_scaling_one_loss_shifts_the_total_and_scales_its_weight():
    # L_b -> c L_b: the total gains log c, b's weight 1 / L_b is divided by c,
    # so b's term in the update, (1 / L_b) dL_b, is unchanged.
    weighting = built(W.ScaleInvariant(), ["a", "b", "c"])
    losses = {"a": 0.3, "b": 5.0, "c": 1.7}
    t1, w1 = call(weighting, losses)
    for c in (1e-3, 100.0):
        t2, w2 = call(weighting, {**losses, "b": c * losses["b"]})
        assert t2 - t1 == pytest.approx(math.log(c), abs=1e-5)
        assert w2 == pytest.approx({**w1, "b": w1["b"] / c}, rel=1e-5)


def test_weights_are_proportional_to_geometric_loss_weights():
    # Both minimise the product of the losses; GLS's total is exp(SI / T).
    losses = {"a": 0.5, "b": 2.0, "c": 3.0}
    si_total, si = call(built(W.ScaleInvariant(), ["a", "b", "c"]), losses)
    gls_total, gls = call(built(W.GeometricLoss(), ["a", "b", "c"]), losses)
    assert gls_total == pytest.approx(math.exp(si_total / 3), rel=1e-6)
    ratios = [gls[k] / si[k] for k in losses]
    assert ratios == pytest.approx([gls_total / 3] * 3, rel=1e-6)


def test_unlabelled_task_is_left_out_of_the_sum():
    weighting = built(W.ScaleInvariant(), ["a", "b", "c"])
    total, weights = call(weighting, {"a": 1.0, "b": 0.0, "c": E**2}, counts=NO_B)
    assert total == pytest.approx(2.0, rel=1e-6)
    assert weights == pytest.approx({"a": 1.0, "b": 0.0, "c": E**-2}, rel=1e-6)
    none = {"a": 0.0, "b": 0.0, "c": 0.0}
    assert call(weighting, none, counts=none) == (0.0, none)


@needs_tf
def test_reported_weights_are_the_gradient():
    weighting = built(W.ScaleInvariant(), ["a", "b", "c"])
    steps = [({"a": 0.5, "b": 2.0, "c": 3.0}, None), ({"a": 0.5, "b": 0.0, "c": 3.0}, NO_B)]
    for losses, counts in steps:
        _, weights, grads = tf_gradients(weighting, losses, counts=counts)
        assert grads == pytest.approx(weights, rel=1e-5)
        assert np.all(np.isfinite(list(grads.values())))


@needs_tf
def test_the_models_gradient_is_invariant_to_the_scale_of_a_loss():
    import tensorflow as tf

    weighting = built(W.ScaleInvariant(), ["a", "b", "c"])
    theta = tf.Variable([0.3, -0.7, 1.2])

    def gradient(scale):
        with tf.GradientTape() as tape:
            losses = {
                "a": tf.reduce_sum(tf.square(theta)) + 0.5,
                "b": scale * (tf.reduce_sum(tf.square(theta - 1.0)) + 0.2),
                "c": tf.exp(theta[0] - theta[2]),
            }
            total, _ = weighting(losses, training=True)
        return tape.gradient(total, theta).numpy()

    reference = gradient(1.0)
    assert np.all(np.isfinite(reference)) and np.any(reference != 0)
    for scale in (1e-3, 1e3):
        np.testing.assert_allclose(gradient(scale), reference, rtol=1e-5, atol=1e-6)


@needs_tf
def test_a_labelled_loss_at_zero_without_a_bound_is_not_finite_and_explained():
    # Presence is the count: "b" labelled with loss 0 is not left out; the
    # logarithm of 0 makes the step non-finite (the model stops with the hint).
    weighting = built(W.ScaleInvariant(), ["a", "b", "c"])
    for b in (0.0, -0.5):
        total, _, grads = tf_gradients(weighting, {"a": 0.5, "b": b, "c": 3.0})
        assert not (np.isfinite(total) and np.all(np.isfinite(list(grads.values())))), b
    hint = weighting.explain_nonfinite({"a": 0.5, "b": -0.5, "c": 3.0})
    assert "{'b': -0.5}" in hint and "ScaleInvariant(min_losses=" in hint
    assert weighting.explain_nonfinite({"a": 0.5, "b": 2.0, "c": 3.0}) is None


@pytest.mark.parametrize("b", [0.0, -0.5, 2.0])
def test_min_losses_shift_the_losses(b):
    # Loss L - m in place of L: a bounded loss of 0 or below is weighted.
    bounded = built(W.ScaleInvariant(min_losses={"b": -1.0}), ["a", "b", "c"])
    total, weights = call(bounded, {"a": 1.0, "b": b, "c": 4.0})
    assert total == pytest.approx(math.log(b + 1.0) + math.log(4.0), rel=1e-6, abs=1e-6)
    assert weights == pytest.approx({"a": 1.0, "b": 1 / (b + 1.0), "c": 0.25}, rel=1e-5)
    assert bounded.explain_nonfinite({"a": 1.0, "b": b, "c": 4.0}) is None
    hint = bounded.explain_nonfinite({"a": 1.0, "b": -1.0, "c": 4.0})
    assert "the mean loss of {'b': -1.0} is not above its bound {'b': -1.0}" in hint


def test_min_losses_config_and_bad_values():
    weighting = W.ScaleInvariant(min_losses={"b": -1.0})
    assert weighting.get_config()["min_losses"] == {"b": -1.0}
    assert W.ScaleInvariant.from_config(weighting.get_config()).min_losses == {"b": -1.0}
    assert W.ScaleInvariant().get_config()["min_losses"] is None
    with pytest.raises(ValueError, match=r"argument `min_losses`. Expected None or a dict"):
        W.ScaleInvariant(min_losses=[-1.0])
    with pytest.raises(ValueError, match=r"argument `min_losses\['b'\]`. Expected a float"):
        W.ScaleInvariant(min_losses={"b": float("inf")})
    with pytest.raises(ValueError, match=r"argument `min_losses`.*unknown: \['z'\]"):
        built(W.ScaleInvariant(min_losses={"z": -1.0}), ["a", "b", "c"])
