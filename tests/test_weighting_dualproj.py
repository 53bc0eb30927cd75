"""Tests for `keras_mtl.weighting.dual_proj.DualProj` (GEM's projection of the
mean, torchjd's aggregator)."""

import itertools

import numpy as np
import pytest

from keras_mtl.weighting.dual_proj import DualProj

from gradient_method_checks import FIT_SAVE_LOAD_MODES
from gradient_method_checks import built, check_config_round_trip, check_fit_save_load
from gradient_method_checks import combine, gram_weights
from gram_method_checks import check_degenerate_inputs


def _reference(grads, regularization=1e-4):
    """DualProj's weights in float64: `argmin_{v >= 1/T} vᵀQv`, `Q` the
    trace-normalised Gram matrix plus `regularization * I`, solved exactly
    by trying every free set (KKT check)."""
    grads = np.asarray(grads, "float64")
    n = len(grads)
    gram = grads @ grads.T
    q = gram / np.trace(gram) + regularization * np.eye(n)
    lower = np.full(n, 1.0 / n)
    for free in itertools.product([False, True], repeat=n):
        free = np.array(free)
        x = np.zeros(n)
        if free.any():
            x[free] = np.linalg.solve(q[np.ix_(free, free)], -(q @ lower)[free])
        if np.all(x >= -1e-12) and np.all((q @ (lower + x))[~free] >= -1e-12):
            return lower + x
    raise AssertionError("no KKT point")


def _conflicting(seed, n):
    """`n` gradients in R^6 whose mean conflicts with at least one of them."""
    rng = np.random.default_rng(seed)
    while True:
        grads = rng.normal(size=(n, 6)) * rng.uniform(0.1, 10.0, size=(n, 1))
        if np.min(grads @ grads.mean(0)) < -0.05 * np.abs(grads @ grads.mean(0)).max():
            return grads


def test_the_mean_conflicting_with_one_task_by_hand():
    # g_a = (1, 0), g_b = (-2, 1): the mean (-1/2, 1/2) has g_a·mean = -1/2.
    # Its projection onto {d : d_1 >= 0, d_2 >= 2 d_1} is (0, 1/2) = 1·g_a +
    # 1/2·g_b. With the regularisation (trace 6): v_a (1/6 + 1e-4) = 1/6.
    weighting = built(DualProj())
    combined, weights = combine(weighting, [[1.0, 0.0], [-2.0, 1.0]])
    np.testing.assert_allclose(weights, [1 / (1 + 6e-4), 0.5], rtol=1e-5)
    np.testing.assert_allclose(combined, [0.0, 0.5], atol=1e-3)


def test_three_tasks_with_two_constraints_active_by_hand():
    # g_a = (1, 0, 0), g_b = (0, 1, 0), g_c = (-1, -1, 1): mean (0, 0, 1/3)
    # conflicts with neither a nor b (products 0) nor c (1/3): kept. Scaling
    # c's first entries to -3 makes a and b conflict with the mean (-2/3 each);
    # the projection onto {d_1 >= 0, d_2 >= 0, d_3 >= 3 d_1 + 3 d_2} is
    # (0, 0, 1/3) = 1·g_a + 1·g_b + 1/3·g_c (no regularisation: w = (1, 1, 1/3)).
    weighting = built(DualProj(regularization=1e-7), ["a", "b", "c"])
    combined, weights = combine(weighting, [[1, 0, 0], [0, 1, 0], [-1, -1, 1]])
    np.testing.assert_allclose(weights, [1 / 3] * 3, rtol=1e-5)
    np.testing.assert_allclose(combined, [0.0, 0.0, 1 / 3], atol=1e-6)
    combined, weights = combine(weighting, [[1, 0, 0], [0, 1, 0], [-3, -3, 1]])
    np.testing.assert_allclose(weights, [1.0, 1.0, 1 / 3], rtol=1e-4)
    np.testing.assert_allclose(combined, [0.0, 0.0, 1 / 3], atol=1e-5)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_conflicts_with_no_task_and_matches_the_exact_solution(n):
    # The property, on random cases whose mean conflicts with a task.
    for seed in range(3):
        grads = _conflicting(10 * n + seed, n)
        weights = gram_weights(built(DualProj(), list("abcde")[:n]), grads)
        np.testing.assert_allclose(weights, _reference(grads), rtol=5e-3, atol=1e-6)
        assert np.all(weights >= 1 / n - 1e-6), weights
        combined = weights @ grads
        products = grads @ combined
        # >= 0 up to the regularisation: -reg · trace(G) · w_i at most.
        floor = -2e-4 * np.trace(grads @ grads.T) * weights
        assert np.all(products >= floor), (products, floor)


def test_the_mean_is_kept_when_it_conflicts_with_no_task():
    # a and b conflict (a·b = -0.5), but the mean (0.25, 0.5) conflicts with
    # neither: unlike PCGrad, nothing changes.
    combined, weights = combine(built(DualProj()), [[1.0, 0.0], [-0.5, 1.0]])
    np.testing.assert_allclose(weights, [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(combined, [0.25, 0.5], rtol=1e-6)
    rng = np.random.default_rng(3)
    for n in (2, 3, 4, 5):
        grads = rng.normal(size=(n, 6)) + 2.0 * rng.normal(size=(1, 6))
        assert np.min(grads @ grads.mean(0)) > 0
        names = list("abcde")[:n]
        combined, weights = combine(built(DualProj(), names), grads)
        np.testing.assert_allclose(weights, [1 / n] * n, rtol=1e-6)
        np.testing.assert_allclose(combined, grads.mean(0), rtol=1e-5, atol=1e-6)


def test_degenerate_inputs():
    check_degenerate_inputs(lambda: DualProj(), mean_multiple=1.0)
    weighting = built(DualProj(), ["a", "b", "c"])
    # Opposite gradients: the regularised problem still has a solution, and
    # the update keeps to the plane both allow.
    combined, weights = combine(weighting, [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(weights, [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(combined, [0.0, 1 / 3], atol=1e-6)
    # Near-zero and huge gradients, gradients 1e20 apart (a gradient 1e25
    # times smaller than the largest counts as zero: weight 0).
    for grads in (
        [[1e-15, 0.0], [-1e-15, 1e-16], [0.0, 1e-15]],
        [[1e15, 0.0], [-1.0, 1.0], [0.0, 1e-10]],
        [[1e20, 0.0], [-1.0, 1.0], [0.0, 1.0]],
    ):
        combined, weights = combine(weighting, grads)
        assert np.all(np.isfinite(weights)) and np.all(np.isfinite(combined)), grads
        assert np.all(weights >= 0), grads


def test_a_truncated_run_is_still_feasible():
    grads = _conflicting(7, 5)
    for iterations in (1, 2):
        weights = gram_weights(built(DualProj(max_iterations=iterations), list("abcde")), grads)
        assert np.all(np.isfinite(weights)) and np.all(weights >= 1 / 5 - 1e-7)


def test_config_round_trip():
    check_config_round_trip(DualProj(mode="representation", regularization=1e-3, max_iterations=5))
    config = DualProj().get_config()
    expected = {"mode": "params", "regularization": 1e-4, "max_iterations": None}
    assert {k: config[k] for k in expected} == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"regularization": 0}, r"`regularization`. Expected a float > 0. Received: \w+=0"),
        ({"max_iterations": 0},
         r"`max_iterations`. Expected None or an integer >= 1. Received: \w+=0"),
        ({"max_iterations": 2.0}, r"`max_iterations`. Expected None or an integer >= 1"),
        ({"mode": "layers"}, r"argument `mode`.*Received: mode='layers'"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DualProj(**kwargs)


@pytest.mark.parametrize("mode", FIT_SAVE_LOAD_MODES)
def test_fit_save_and_load(mode, tmp_path):
    _, history = check_fit_save_load(DualProj(mode=mode), tmp_path)
    # Weights are >= 1/T' for labelled tasks: epoch 1 averages step 1 ("a"
    # unlabelled, T' = 2) and step 2 (T' = 3); "a" has weight 0, then >= 1/3.
    assert history["weight_b"][0] >= (1 / 2 + 1 / 3) / 2 - 1e-6
    assert history["weight_a"][0] >= (0 + 1 / 3) / 2 - 1e-6
