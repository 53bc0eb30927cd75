"""Tests for `keras_mtl.weighting.RandomLossWeighting` (Lin et al. 2021)."""

import keras
import numpy as np
import pytest

from keras_mtl import weighting as W

from test_weighting_common import built, call

NAMES = ["a", "b", "c"]
ONES = {"a": 1.0, "b": 1.0, "c": 1.0}


def _draws(weighting, steps):
    return [list(call(weighting, ONES, training=True)[1].values()) for _ in range(steps)]


def test_weights_are_the_softmax_of_the_seeded_normal_draws():
    weighting = built(W.RandomLossWeighting(seed=3), NAMES)
    expected_gen = keras.random.SeedGenerator(3)
    for _ in range(3):
        noise = keras.ops.convert_to_numpy(keras.random.normal((3,), seed=expected_gen))
        expected = np.exp(noise) / np.exp(noise).sum()
        total, weights = call(weighting, {"a": 1.0, "b": 2.0, "c": 3.0}, training=True)
        np.testing.assert_allclose(list(weights.values()), expected, rtol=1e-5)
        assert total == pytest.approx(float(expected @ [1.0, 2.0, 3.0]), rel=1e-5)


def test_same_seed_same_stream_new_draw_each_step():
    a = _draws(built(W.RandomLossWeighting(seed=11), NAMES), 3)
    b = _draws(built(W.RandomLossWeighting(seed=11), NAMES), 3)
    np.testing.assert_allclose(a, b)
    assert not np.allclose(a[0], a[1])
    np.testing.assert_allclose(np.sum(a, axis=1), 1.0, rtol=1e-6)


NO_B = {"a": 4.0, "b": 0.0, "c": 4.0}


def test_unlabelled_task_gets_weight_zero_and_the_others_sum_to_one():
    weighting = built(W.RandomLossWeighting(seed=0), NAMES)
    total, weights = call(weighting, {"a": 1.0, "b": 0.0, "c": 2.0}, training=True, counts=NO_B)
    assert weights["b"] == 0.0 and weights["a"] + weights["c"] == pytest.approx(1.0)
    none = {"a": 0.0, "b": 0.0, "c": 0.0}
    assert call(weighting, none, training=True, counts=none) == (0.0, none)


def test_a_labelled_task_with_loss_zero_keeps_its_draw():
    # Same seed, same draw: "b" labelled with loss 0 gets the weight it would
    # get with any other loss (a positive one, or a negative one).
    expected = call(built(W.RandomLossWeighting(seed=0), NAMES), ONES, training=True)[1]
    for b in (0.0, -2.0):
        weighting = built(W.RandomLossWeighting(seed=0), NAMES)
        total, weights = call(weighting, {"a": 1.0, "b": b, "c": 2.0}, training=True)
        assert weights == pytest.approx(expected, rel=1e-6) and weights["b"] > 0
        assert total == pytest.approx(weights["a"] + b * weights["b"] + 2 * weights["c"], abs=1e-6)


def test_evaluation_uses_the_expected_weights_and_draws_nothing():
    weighting = built(W.RandomLossWeighting(seed=0), NAMES)
    state = keras.ops.convert_to_numpy(weighting.seed_generator.state).copy()
    total, weights = call(weighting, {"a": 1.0, "b": 0.0, "c": 2.0}, counts=NO_B)
    assert weights == {"a": 0.5, "b": 0.0, "c": 0.5} and total == pytest.approx(1.5)
    # Every task labelled, "b" with loss 0: 1/3 each.
    total, weights = call(weighting, {"a": 1.0, "b": 0.0, "c": 2.0})
    assert weights == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert total == pytest.approx(1.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(weighting.seed_generator.state), state)


def test_seed_state_is_saved_with_the_weighting(tmp_path):
    weighting = built(W.RandomLossWeighting(seed=5), NAMES)
    _draws(weighting, 2)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.weighting = weighting  # any tracked attribute is saved
    path = str(tmp_path / "rlw.weights.h5")
    model.save_weights(path)
    expected = _draws(weighting, 2)
    fresh = built(W.RandomLossWeighting(seed=5), NAMES)
    model.weighting = fresh
    model.load_weights(path)
    np.testing.assert_allclose(_draws(fresh, 2), expected)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match=r"argument `seed`. Expected None or an integer >= 0"):
        W.RandomLossWeighting(seed=seed)
