"""Tests for `keras_mtl.weighting.grad_norm.GradNorm` (Chen et al. 2018)."""

import numpy as np
import pytest

from keras_mtl.weighting.grad_norm import GradNorm

from gradient_method_checks import FIT_SAVE_LOAD_MODES
from gradient_method_checks import built, check_config_round_trip, check_fit_save_load
from gradient_method_checks import combine, gram_weights, numpy


def _state(weighting):
    return numpy(weighting.gradnorm_weights)


def test_one_update_by_hand():
    weighting = built(GradNorm(alpha=1.5, learning_rate=0.1))
    # Orthogonal gradients of norms 2 and 1, equal losses.
    grads = [[2.0, 0.0], [0.0, 1.0]]
    w = gram_weights(weighting, grads, losses=[1.0, 1.0])
    np.testing.assert_allclose(w, [1.0, 1.0])  # the step uses w(t) = 1
    # L(0) = L(t): r = 1, G = (2, 1), G_bar = 1.5 = target;
    # dL/dw = (sign(0.5) * 2, sign(-0.5) * 1) = (2, -1); w = (0.8, 1.1), * 2 / 1.9.
    np.testing.assert_allclose(_state(weighting), [0.8 * 2 / 1.9, 1.1 * 2 / 1.9], rtol=1e-6)
    np.testing.assert_allclose(numpy(weighting.initial_losses), [1.0, 1.0])
    # Second step: "a" trained faster (L~ = (0.5, 1)), r = (2/3, 4/3).
    w1 = _state(weighting)
    w = gram_weights(weighting, grads, losses=[0.5, 1.0])
    np.testing.assert_allclose(w, w1, rtol=1e-6)
    g = w1 * [2.0, 1.0]
    target = g.mean() * np.array([2 / 3, 4 / 3]) ** 1.5
    stepped = w1 - 0.1 * np.sign(g - target) * [2.0, 1.0]
    np.testing.assert_allclose(_state(weighting), stepped * 2 / stepped.sum(), rtol=1e-5)


def test_weights_sum_to_t_and_balance_the_gradient_norms():
    weighting = built(GradNorm(alpha=0.0, learning_rate=0.025), ["a", "b", "c"])
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(3, 20)) * np.array([[10.0], [1.0], [1.0]])
    norms = np.linalg.norm(grads, axis=1)
    spread = []
    for _ in range(20):
        w = gram_weights(weighting, grads, losses=[1.0, 2.0, 3.0])
        spread.append(np.ptp(w * norms))
        np.testing.assert_allclose(_state(weighting).sum(), 3.0, rtol=1e-6)
    history = _state(weighting)
    assert history[0] < 1.0 and history[1] > 1.0 and history[2] > 1.0
    assert spread[-1] < 0.5 * spread[0]  # the weighted norms get closer


def test_the_large_gradient_loses_weight_step_after_step():
    weighting = built(GradNorm(learning_rate=0.025))
    first = []
    for _ in range(4):
        gram_weights(weighting, [[10.0, 0.0], [0.0, 1.0]], losses=[1.0, 1.0])
        first.append(_state(weighting)[0])
    assert np.all(np.diff(first) < 0), first


def test_identical_gradients_keep_weights_one_and_give_the_sum():
    weighting = built(GradNorm(), ["a", "b", "c"])
    g = np.array([1.0, -2.0, 0.5], "float32")
    for _ in range(3):
        combined, weights = combine(weighting, [g, g, g])
        np.testing.assert_allclose(weights, [1.0, 1.0, 1.0], rtol=1e-6)
        np.testing.assert_allclose(combined, 3 * g, rtol=1e-6)  # T times the mean


def test_degenerate_gradients_are_finite():
    weighting = built(GradNorm(), ["a", "b", "c"])
    cases = [
        [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],  # zero
        [[1.0, 1.0], [2.0, 2.0], [1e-30, 1e-30]],  # parallel, near zero
        [[1e-20, 0.0], [0.0, 1e-20], [1e15, 0.0]],  # tiny and huge
        [[1e20, 0.0], [0.0, 1.0], [1.0, 0.0]],  # beyond float32: an infinite Gram entry
    ]
    for grads in cases:
        combined, weights = combine(weighting, grads)
        assert np.all(np.isfinite(combined)) and np.all(np.isfinite(weights)), grads
        assert np.all(_state(weighting) > 0)
        np.testing.assert_allclose(_state(weighting).sum(), 3.0, rtol=1e-5)


def test_unlabelled_task_gets_weight_zero_and_keeps_its_state():
    weighting = built(GradNorm(learning_rate=0.1), ["a", "b", "c"])
    grads = [[2.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    combined, weights = combine(weighting, grads, losses=[1.0, 0.0, 1.0], counts=[4, 0, 4])
    np.testing.assert_allclose(weights, [1.0, 0.0, 1.0])
    np.testing.assert_allclose(combined, [2.0, 1.0])
    state = _state(weighting)
    assert state[1] == 1.0 and state[0] < 1.0 < state[2]  # the others still move
    np.testing.assert_allclose(state.sum(), 3.0, rtol=1e-6)
    np.testing.assert_allclose(numpy(weighting.initial_losses), [1.0, 0.0, 1.0])
    # "b" labelled later: its L(0) is that step's loss.
    combine(weighting, [[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]], losses=[0.5, 3.0, 1.0])
    np.testing.assert_allclose(numpy(weighting.initial_losses), [1.0, 3.0, 1.0])
    # No task labelled: nothing moves, nothing is NaN.
    before = _state(weighting)
    combined, weights = combine(
        weighting, np.zeros((3, 2)), losses=[0.0, 0.0, 0.0], counts=[0, 0, 0]
    )
    np.testing.assert_array_equal(weights, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(_state(weighting), before)


def test_a_labelled_task_with_loss_zero_keeps_its_weight():
    # "b" labelled (no count given) with loss 0 and a zero gradient: the step
    # uses its weight w(t) = 1, and it takes part in the update (the labelled
    # tasks share the total T), where an unlabelled task keeps its weight.
    weighting = built(GradNorm(learning_rate=0.1), ["a", "b", "c"])
    grads = [[2.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    combined, weights = combine(weighting, grads, losses=[1.0, 0.0, 1.0])
    np.testing.assert_allclose(weights, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(combined, [2.0, 1.0])
    state = _state(weighting)
    assert np.all(np.isfinite(state)) and state[1] != 1.0
    np.testing.assert_allclose(state.sum(), 3.0, rtol=1e-6)


def test_evaluation_changes_no_state():
    weighting = built(GradNorm())
    gram_weights(weighting, [[3.0, 0.0], [0.0, 1.0]], training=False)
    np.testing.assert_array_equal(_state(weighting), [1.0, 1.0])
    np.testing.assert_array_equal(numpy(weighting.initial_losses), [0.0, 0.0])


def test_config_round_trip():
    check_config_round_trip(GradNorm(mode="params", alpha=0.5, learning_rate=0.1, min_weight=0.01))
    config = GradNorm().get_config()
    assert {k: config[k] for k in ("mode", "alpha", "learning_rate", "min_weight")} == {
        "mode": "representation", "alpha": 1.5, "learning_rate": 0.025, "min_weight": 1e-3,
    }


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": -1}, r"argument `alpha`. Expected a float >= 0. Received: alpha=-1"),
        ({"learning_rate": 0}, r"`learning_rate`. Expected a float > 0. Received: learning_rate=0"),
        ({"min_weight": 0}, r"argument `min_weight`. Expected a float > 0. Received: min_weight=0"),
        ({"min_weight": 1.0}, r"`min_weight`. Expected a float in \(0, 1\). Received: \w+=1\."),
        ({"mode": "layers"}, r"argument `mode`.*Received: mode='layers'"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GradNorm(**kwargs)


@pytest.mark.parametrize("mode", FIT_SAVE_LOAD_MODES)
def test_fit_save_and_load(mode, tmp_path):
    weighting = GradNorm(mode=mode, learning_rate=0.1)
    model, history = check_fit_save_load(weighting, tmp_path)
    state = _state(model.weighting)
    np.testing.assert_allclose(state.sum(), 3.0, rtol=1e-5)
    assert not np.allclose(state, 1.0)  # the weights moved
    assert numpy(model.weighting.initial_losses).min() > 0  # every task was seen
    # "a" has no label in the first step of each epoch: weight 0 there.
    assert history["weight_a"][0] < history["weight_b"][0]
