"""Tests for `keras_mtl.weighting.upgrad.UPGrad` (Quinton & Rey 2024)."""

import itertools

import numpy as np
import pytest

from keras_mtl.weighting.upgrad import UPGrad

from gradient_method_checks import FIT_SAVE_LOAD_MODES
from gradient_method_checks import built, check_config_round_trip, check_fit_save_load
from gradient_method_checks import combine, gram_weights
from gram_method_checks import check_scale_equivariance


def _reference(grads, regularization=1e-4):
    """UPGrad's weights in float64, each QP solved exactly by trying every
    free set (KKT check)."""
    grads = np.asarray(grads, "float64")
    n = len(grads)
    gram = grads @ grads.T
    q = gram / np.trace(gram) + regularization * np.eye(n)
    total = np.zeros(n)
    for i in range(n):
        lower = np.eye(n)[i] / n
        for free in itertools.product([False, True], repeat=n):
            free = np.array(free)
            x = np.zeros(n)
            if free.any():
                x[free] = np.linalg.solve(q[np.ix_(free, free)], -(q @ lower)[free])
            if np.all(x >= -1e-12) and np.all((q @ (lower + x))[~free] >= -1e-12):
                total += lower + x
                break
        else:
            raise AssertionError("no KKT point")
    return total


def test_two_conflicting_gradients_by_hand():
    # g_a = (1, 0), g_b = (-1, 1): v_a = (1, 1/2) / 2, v_b = (1, 1) / 2.
    weighting = built(UPGrad())
    combined, weights = combine(weighting, [[1.0, 0.0], [-1.0, 1.0]])
    np.testing.assert_allclose(weights, [1.0, 0.75], rtol=1e-3)
    np.testing.assert_allclose(combined, [0.25, 0.75], rtol=1e-3)


@pytest.mark.parametrize("seed", range(4))
def test_matches_the_exact_solution_and_conflicts_with_no_task(seed):
    rng = np.random.default_rng(seed)
    n = 3 + seed % 3
    grads = rng.normal(size=(n, 6)) + rng.normal(size=(1, 6)) * (seed - 1.5)
    grads *= rng.uniform(0.1, 10.0, size=(n, 1))
    weights = gram_weights(built(UPGrad(), list("abcdef")[:n]), grads)
    np.testing.assert_allclose(weights, _reference(grads), rtol=5e-3, atol=1e-6)
    products = grads @ (weights @ grads)
    assert np.all(products >= -1e-3 * np.abs(products).max()), products


def test_non_conflicting_and_identical_gradients_give_the_mean():
    weighting = built(UPGrad(), ["a", "b", "c"])
    acute = np.array([[1.0, 0.2, 0.0], [0.3, 1.0, 0.1], [0.5, 0.5, 0.5]])
    combined, weights = combine(weighting, acute)
    np.testing.assert_allclose(weights, [1 / 3] * 3, rtol=1e-6)
    g = np.array([1.0, -2.0, 0.5])
    combined, weights = combine(weighting, [g, g, g])
    np.testing.assert_allclose(weights, [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(combined, g, rtol=1e-5)  # the mean


def test_degenerate_gradients_are_finite():
    weighting = built(UPGrad(), ["a", "b", "c"])
    # Opposite gradients: the regularised problem still has a solution.
    combined, weights = combine(weighting, [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    assert np.all(np.isfinite(weights)) and np.all(weights >= 1 / 3 - 1e-6)
    np.testing.assert_allclose(combined, [0.0, 1 / 3], atol=1e-3)
    # Zero gradient and unlabelled task: weight 0, the mean over the others.
    combined, weights = combine(weighting, [[1.0, 0.0], [0.0, 0.0], [0.0, 3.0]])
    np.testing.assert_allclose(weights, [0.5, 0.0, 0.5], rtol=1e-6)
    grads = [[1.0, 0.0], [0.0, 1.0], [0.0, 3.0]]
    combined, weights = combine(weighting, grads, losses=[1, 0, 1], counts=[4, 0, 4])
    np.testing.assert_allclose(weights, [0.5, 0.0, 0.5], rtol=1e-6)
    # The same task labelled, with a loss of 0 or below: one of three.
    for b in (0.0, -1.0):
        combined, weights = combine(weighting, grads, losses=[1, b, 1])
        np.testing.assert_allclose(weights, [1 / 3] * 3, rtol=1e-6)
    # Near-zero and huge gradients, gradients 1e20 apart, and all zero.
    for grads in (
        [[1e-15, 0.0], [-1e-15, 1e-16], [0.0, 1e-15]],
        [[1e15, 0.0], [-1.0, 1.0], [0.0, 1e-10]],
        [[1e20, 0.0], [-1.0, 1.0], [0.0, 1.0]],
        np.zeros((3, 2)),
    ):
        combined, weights = combine(weighting, grads)
        assert np.all(np.isfinite(weights)) and np.all(np.isfinite(combined)), grads
        assert np.all(weights >= 0), grads


def test_gradients_of_any_magnitude_give_the_same_weights():
    check_scale_equivariance(lambda: UPGrad())


def test_a_truncated_run_is_still_feasible():
    rng = np.random.default_rng(7)
    grads = rng.normal(size=(6, 4))
    for iterations in (1, 2, 4):
        weights = gram_weights(built(UPGrad(max_iterations=iterations), list("abcdef")), grads)
        assert np.all(np.isfinite(weights)) and np.all(weights >= 1 / 6 - 1e-7)


def test_config_round_trip():
    check_config_round_trip(UPGrad(mode="representation", regularization=1e-3, max_iterations=5))
    config = UPGrad().get_config()
    expected = {"mode": "params", "regularization": 1e-4, "max_iterations": None}
    assert {k: config[k] for k in expected} == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"regularization": 0}, r"`regularization`. Expected a float > 0. Received: \w+=0"),
        ({"max_iterations": 0}, r"`max_iterations`. Expected None or an integer >= 1. Received: \w+=0"),
        ({"max_iterations": 2.0}, r"`max_iterations`. Expected None or an integer >= 1"),
        ({"mode": "layers"}, r"argument `mode`.*Received: mode='layers'"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UPGrad(**kwargs)


@pytest.mark.parametrize("mode", FIT_SAVE_LOAD_MODES)
def test_fit_save_and_load(mode, tmp_path):
    _, history = check_fit_save_load(UPGrad(mode=mode), tmp_path)
    # Weights are >= 1/T' for labelled tasks; "a" is unlabelled in step 1.
    assert history["weight_b"][0] >= 0.4 and history["weight_a"][0] > 0
