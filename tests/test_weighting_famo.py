"""Tests for `keras_mtl.weighting.FAMO` (Liu et al. 2023)."""

import keras
import numpy as np
import pytest

from keras_mtl import weighting as W

from test_weighting_common import built, call, needs_tf, tf_gradients

EPS = 1e-8


def _logits(weighting):
    return keras.ops.convert_to_numpy(weighting.logits)


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


class _ReferenceFAMO:
    """The paper's Algorithm 2 (and the authors' code) in NumPy, with the
    "after" losses taken from the next step."""

    def __init__(self, n, lr, gamma):
        self.xi, self.m, self.v, self.t = np.zeros(n), np.zeros(n), np.zeros(n), 0
        self.lr, self.gamma, self.prev = lr, gamma, None

    def step(self, losses):
        losses = np.asarray(losses, "float64")
        if self.prev is not None:
            delta = np.log(self.prev + EPS) - np.log(losses + EPS)
            z = _softmax(self.xi)
            g = z * delta - z * (z @ delta) + self.gamma * self.xi  # J^T delta + decay
            self.t += 1
            self.m = 0.9 * self.m + 0.1 * g
            self.v = 0.999 * self.v + 0.001 * g**2
            m_hat, v_hat = self.m / (1 - 0.9**self.t), self.v / (1 - 0.999**self.t)
            self.xi = self.xi - self.lr * m_hat / (np.sqrt(v_hat) + EPS)
        self.prev = losses
        z = _softmax(self.xi)
        d = losses + EPS
        c = 1 / np.sum(z / d)
        return c * np.sum(z * np.log(d)), c * z / d


def test_one_logit_update_by_hand():
    weighting = built(W.FAMO(learning_rate=0.025, weight_decay=0.001))
    call(weighting, {"a": 1.0, "b": 2.0}, training=True)
    np.testing.assert_array_equal(_logits(weighting), [0.0, 0.0])
    total, weights = call(weighting, {"a": 0.5, "b": 2.0}, training=True)
    # delta = (log 2, 0); z = (1/2, 1/2): g = J^T delta = (log 2 / 4, -log 2 / 4).
    # Adam's first step moves each logit by lr * g / |g|.
    np.testing.assert_allclose(_logits(weighting), [-0.025, 0.025], rtol=1e-6)
    z = _softmax(np.array([-0.025, 0.025]))
    c = 1 / (z[0] / 0.5 + z[1] / 2.0)
    assert total == pytest.approx(c * (z[0] * np.log(0.5) + z[1] * np.log(2.0)), rel=1e-5)
    assert weights == pytest.approx({"a": c * z[0] / 0.5, "b": c * z[1] / 2.0}, rel=1e-5)
    assert sum(weights.values()) == pytest.approx(1.0)


def test_matches_the_reference_over_several_steps():
    weighting = built(W.FAMO(learning_rate=0.1, weight_decay=0.01), ["a", "b", "c"])
    reference = _ReferenceFAMO(3, lr=0.1, gamma=0.01)
    rng = np.random.default_rng(0)
    for _ in range(6):
        losses = rng.uniform(0.1, 3.0, 3)
        total, weights = call(weighting, dict(zip("abc", losses)), training=True)
        ref_total, ref_weights = reference.step(losses)
        assert total == pytest.approx(ref_total, rel=1e-4, abs=1e-5)
        np.testing.assert_allclose(list(weights.values()), ref_weights, rtol=1e-4)
    np.testing.assert_allclose(_logits(weighting), reference.xi, rtol=1e-4, atol=1e-6)


def test_evaluation_does_not_update_the_logits():
    weighting = built(W.FAMO())
    call(weighting, {"a": 1.0, "b": 2.0}, training=True)
    call(weighting, {"a": 0.1, "b": 9.0}, training=False)
    call(weighting, {"a": 0.2, "b": 9.0})
    np.testing.assert_array_equal(_logits(weighting), [0.0, 0.0])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(weighting.previous_losses), [1.0, 2.0])


def test_unlabelled_task_keeps_its_last_loss_and_gets_weight_zero():
    weighting = built(W.FAMO())
    call(weighting, {"a": 1.0, "b": 2.0}, training=True)
    total, weights = call(
        weighting, {"a": 0.5, "b": 0.0}, training=True, counts={"a": 4.0, "b": 0.0}
    )
    assert weights["b"] == 0.0 and weights["a"] == pytest.approx(1.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weighting.previous_losses), [0.5, 2.0])
    # Only "a" changed: delta = (log 2, 0), the same update as in the hand case.
    np.testing.assert_allclose(_logits(weighting), [-0.025, 0.025], rtol=1e-6)
    # "b" measured against its last labelled loss (2.0): delta_b = log(2 / 4) < 0.
    call(weighting, {"a": 0.0, "b": 4.0}, training=True, counts={"a": 0.0, "b": 4.0})
    logits = _logits(weighting)
    assert logits[1] > 0.025  # its loss grew: more weight
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weighting.previous_losses), [0.5, 4.0])


def test_a_task_first_labelled_late_starts_its_history_then():
    weighting = built(W.FAMO())
    call(weighting, {"a": 1.0, "b": 0.0}, training=True, counts={"a": 4.0, "b": 0.0})
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(weighting.previous_seen), [1.0, 0.0])
    # "b" labelled for the first time: no delta for it, only "a" moves.
    call(weighting, {"a": 0.5, "b": 2.0}, training=True)
    np.testing.assert_allclose(_logits(weighting), [-0.025, 0.025], rtol=1e-6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(weighting.previous_seen), [1.0, 1.0])


def test_a_labelled_loss_of_zero_is_weighted():
    # Presence is the count: "b" labelled with loss 0 is not left out. Its
    # log-loss log(0 + eps) is the smallest, so it takes nearly all the weight.
    weighting = built(W.FAMO())
    total, weights = call(weighting, {"a": 1.0, "b": 0.0}, training=True)
    assert np.isfinite(total)
    assert weights["b"] == pytest.approx(1.0, rel=1e-6) and 0 < weights["a"] < 1e-6
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(weighting.previous_seen), [1.0, 1.0])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(weighting.previous_losses), [1.0, 0.0])


def test_min_losses_shift_the_losses():
    # FAMO on L - m equals FAMO on the shifted losses: a bounded loss can be
    # 0 or negative.
    bounded = built(W.FAMO(learning_rate=0.1, min_losses={"b": -2.0}))
    plain = built(W.FAMO(learning_rate=0.1))
    for a, b in [(1.0, 0.0), (0.5, -1.0), (0.7, -0.5), (0.6, 1.0)]:
        total, weights = call(bounded, {"a": a, "b": b}, training=True)
        expected_total, expected_weights = call(plain, {"a": a, "b": b + 2.0}, training=True)
        assert total == pytest.approx(expected_total, rel=1e-5)
        assert weights == pytest.approx(expected_weights, rel=1e-5)
    np.testing.assert_allclose(_logits(bounded), _logits(plain), rtol=1e-5)
    assert bounded.explain_nonfinite({"a": 1.0, "b": -1.0}) is None
    hint = bounded.explain_nonfinite({"a": 1.0, "b": -3.0})
    assert "{'b': -3.0}" in hint and "FAMO(min_losses=" in hint
    # Below its bound: the logarithm is not finite (the model stops, with the hint).
    total, _ = call(bounded, {"a": 1.0, "b": -3.0}, training=True)
    assert not np.isfinite(total)


def test_min_losses_config_and_bad_values():
    weighting = W.FAMO(min_losses={"a": -1.0})
    assert weighting.get_config()["min_losses"] == {"a": -1.0}
    assert W.FAMO.from_config(weighting.get_config()).get_config() == weighting.get_config()
    with pytest.raises(ValueError, match=r"argument `min_losses`. Expected None or a dict"):
        W.FAMO(min_losses=-1.0)
    with pytest.raises(ValueError, match=r"argument `min_losses\['a'\]`. Expected a float"):
        W.FAMO(min_losses={"a": "low"})
    with pytest.raises(ValueError, match=r"argument `min_losses`.*unknown: \['z'\]"):
        built(W.FAMO(min_losses={"z": 0.0}))


@needs_tf
def test_gradient_is_the_convex_combination():
    weighting = built(W.FAMO())
    call(weighting, {"a": 1.0, "b": 2.0}, training=True)
    _, weights, grads = tf_gradients(weighting, {"a": 0.5, "b": 3.0})
    assert grads == pytest.approx(weights, rel=1e-5)
    assert sum(grads.values()) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"learning_rate": 0},
            r"argument `learning_rate`. Expected a float > 0. Received: learning_rate=0",
        ),
        (
            {"weight_decay": -0.1},
            r"argument `weight_decay`. Expected a float >= 0. Received: weight_decay=-0.1",
        ),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        W.FAMO(**kwargs)
