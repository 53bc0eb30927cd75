"""Tests for `keras_mtl.weighting.pcgrad.PCGrad` (Yu et al. 2020)."""

import keras
import numpy as np
import pytest

from keras_mtl.weighting.pcgrad import PCGrad

from gram_method_checks import drawn_orders
from gradient_method_checks import FIT_SAVE_LOAD_MODES
from gradient_method_checks import built, check_config_round_trip, check_fit_save_load
from gradient_method_checks import combine, numpy
from gram_method_checks import check_degenerate_inputs


def _reference(grads, orders):
    """Algorithm 1 on the vectors themselves, in float64: task i is
    projected against the tasks `orders[i]`, in that order."""
    grads = np.asarray(grads, "float64")
    total = np.zeros(grads.shape[1])
    for i, order in enumerate(orders):
        g = grads[i].copy()
        for j in order:
            dot = g @ grads[j]
            if dot < 0:
                g = g - dot / (grads[j] @ grads[j]) * grads[j]
        total += g
    return total


def test_two_gradients_at_120_degrees_are_both_projected():
    angle = np.deg2rad(120)
    g1 = np.array([1.0, 0.0, 0.0])
    g2 = 2.0 * np.array([np.cos(angle), np.sin(angle), 0.0])
    combined, weights = combine(built(PCGrad(seed=0)), [g1, g2])
    # g1·g2 = -1: g1' = g1 + g2 / 4, g2' = g2 + g1, both ⟂ to the other.
    expected = (g1 + g2 / 4) + (g2 + g1)
    np.testing.assert_allclose(combined, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(combined, _reference([g1, g2], [[1], [0]]), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(weights, [2.0, 1.25], rtol=1e-6)
    assert (g1 + g2 / 4) @ g2 == pytest.approx(0.0, abs=1e-12)


def test_three_tasks_match_the_reference_with_the_samedrawn_orders():
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(3, 5))
    grads[1] -= 1.5 * grads[0]  # make conflicts likely
    weighting = built(PCGrad(seed=4), ["a", "b", "c"])
    for order in drawn_orders(4, 3, draws=4):
        combined, weights = combine(weighting, grads)
        np.testing.assert_allclose(combined, _reference(grads, order), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weights @ grads, combined, rtol=1e-5, atol=1e-6)


def test_same_seed_same_orders_and_the_order_changes_between_steps():
    # Three pairwise-conflicting gradients: the result depends on the order.
    grads = np.array([[1.0, 0.0], [-0.6, 0.8], [-0.6, -0.7]])
    runs = []
    for _ in range(2):
        weighting = built(PCGrad(seed=11), ["a", "b", "c"])
        runs.append([combine(weighting, grads)[0] for _ in range(6)])
    np.testing.assert_allclose(runs[0], runs[1])
    assert len({tuple(np.round(c, 5)) for c in runs[0]}) > 1


def test_outside_training_the_order_is_fixed_and_nothing_is_drawn():
    grads = np.array([[1.0, 0.0], [-0.6, 0.8], [-0.6, -0.7]])
    weighting = built(PCGrad(seed=0), ["a", "b", "c"])
    state = numpy(weighting.seed_generator.state).copy()
    combined, _ = combine(weighting, grads, training=False)
    np.testing.assert_allclose(combined, _reference(grads, [[1, 2], [0, 2], [0, 1]]), rtol=1e-5)
    np.testing.assert_array_equal(numpy(weighting.seed_generator.state), state)


def test_unlabelled_tasks_are_not_projected_on():
    grads = np.array([[1.0, 0.0], [0.0, 0.0], [-0.5, 1.0]])
    weighting = built(PCGrad(seed=0), ["a", "b", "c"])
    combined, weights = combine(weighting, grads, losses=[1.0, 0.0, 1.0], counts=[4, 0, 4])
    assert weights[1] == 0.0
    np.testing.assert_allclose(combined, _reference(grads[[0, 2]], [[1], [0]]), rtol=1e-6)
    # Left out by its count: a nonzero gradient is neither used nor projected on.
    grads[1] = [-1.0, -1.0]
    combined, weights = combine(weighting, grads, losses=[1.0, 0.0, 1.0], counts=[4, 0, 4])
    assert weights[1] == 0.0
    np.testing.assert_allclose(combined, _reference(grads[[0, 2]], [[1], [0]]), rtol=1e-6)


def test_a_labelled_task_with_loss_zero_is_projected_as_usual():
    grads = np.array([[1.0, 0.0], [-0.6, 0.8], [-0.6, -0.7]])
    for b in (0.0, -1.0):
        weighting = built(PCGrad(seed=0), ["a", "b", "c"])
        combined, _ = combine(weighting, grads, losses=[1.0, b, 1.0], training=False)
        expected = _reference(grads, [[1, 2], [0, 2], [0, 1]])
        np.testing.assert_allclose(combined, expected, rtol=1e-5)


def test_degenerate_gradients():
    # Identical gradients do not conflict: the update is their sum, T × mean.
    check_degenerate_inputs(lambda: PCGrad(seed=0), mean_multiple=3.0)


def test_config_round_trip():
    check_config_round_trip(PCGrad(mode="representation", seed=3))
    config = PCGrad().get_config()
    assert {k: config[k] for k in ("mode", "seed")} == {"mode": "params", "seed": None}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seed": -1}, r"argument `seed`. Expected None or an integer >= 0. Received: seed=-1"),
        ({"seed": 1.5}, r"argument `seed`. Expected None or an integer >= 0. Received: seed=1.5"),
        ({"seed": True}, r"argument `seed`. Expected None or an integer >= 0. Received: seed=True"),
        ({"mode": "layers"}, r"argument `mode`.*Received: mode='layers'"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PCGrad(**kwargs)


@pytest.mark.parametrize("mode", FIT_SAVE_LOAD_MODES)
def test_fit_save_and_load(mode, tmp_path):
    weighting = PCGrad(mode=mode, seed=1)
    start = numpy(keras.random.SeedGenerator(1).state)
    model, history = check_fit_save_load(weighting, tmp_path)
    assert not np.array_equal(numpy(weighting.seed_generator.state), start)  # it drew
    # "a" has no label in the first step of each epoch: weight 0 there.
    assert history["weight_a"][0] < history["weight_b"][0]
    # The restored seed state continues the same stream.
    restored = keras.models.load_model(str(tmp_path / "model.keras")).weighting
    grads = np.random.default_rng(0).normal(size=(3, 4))
    np.testing.assert_array_equal(combine(restored, grads)[0], combine(weighting, grads)[0])
