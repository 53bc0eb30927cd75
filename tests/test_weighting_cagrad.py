"""Tests for `keras_mtl.weighting.cagrad.CAGrad` (Liu et al. 2021)."""

import itertools

import numpy as np
import pytest

from keras_mtl.weighting.cagrad import CAGrad

from gradient_method_checks import FIT_SAVE_LOAD_MODES
from gradient_method_checks import built, check_config_round_trip, check_fit_save_load
from gradient_method_checks import combine
from gram_method_checks import check_degenerate_inputs


def _dual(grads, c, w):
    """The dual objective g_w·g0 + c ‖g0‖ ‖g_w‖ for rows of weights `w`."""
    g0 = grads.mean(0)
    gw = w @ grads
    return gw @ g0 + c * np.linalg.norm(g0) * np.linalg.norm(gw, axis=-1)


def _update(grads, c, w, rescale=1):
    g0 = grads.mean(0)
    gw = w @ grads
    d = g0 + c * np.linalg.norm(g0) / np.linalg.norm(gw) * gw
    return d / {0: 1.0, 1: 1 + c**2, 2: 1 + c}[rescale]


def _simplex_grid(num_tasks, steps):
    corners = itertools.product(range(steps + 1), repeat=num_tasks - 1)
    points = [p for p in corners if sum(p) <= steps]
    return np.array([list(p) + [steps - sum(p)] for p in points], "float64") / steps


@pytest.mark.parametrize("rescale", [0, 1, 2, True, False])
def test_c_zero_gives_the_mean_gradient(rescale):
    grads = np.random.default_rng(0).normal(size=(3, 5))
    combined, weights = combine(built(CAGrad(c=0.0, rescale=rescale), ["a", "b", "c"]), grads)
    np.testing.assert_allclose(combined, grads.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights, [1 / 3] * 3, rtol=1e-6)


@pytest.mark.parametrize("c", [0.4, 0.8])
def test_two_conflicting_gradients_match_a_brute_force_search(c):
    grads = np.array([[1.0, 0.0], [-0.5, 1.0]])  # g1·g2 < 0
    w = np.linspace(0.0, 1.0, 100_001)[:, None]
    w = np.concatenate([w, 1 - w], axis=1)
    best = w[np.argmin(_dual(grads, c, w))]
    combined, weights = combine(built(CAGrad(c=c)), grads)
    np.testing.assert_allclose(combined, _update(grads, c, best), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(weights @ grads, combined, rtol=1e-5, atol=1e-6)
    # The paper's primal: d maximises the worst improvement min_i g_i·d in
    # the ball ‖d - g0‖ <= c ‖g0‖ (compare before the 1 / (1 + c²) rescale).
    d = combined * (1 + c**2)
    g0 = grads.mean(0)
    assert np.linalg.norm(d - g0) == pytest.approx(c * np.linalg.norm(g0), rel=1e-4)
    angles = np.linspace(0, 2 * np.pi, 3601)
    ring = g0 + c * np.linalg.norm(g0) * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert np.min(grads @ d) >= np.max(np.min(ring @ grads.T, axis=1)) - 1e-5


@pytest.mark.parametrize("seed", [0, 1])
def test_three_tasks_match_a_brute_force_search(seed):
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(3, 4))
    grid = _simplex_grid(3, 300)
    best = np.min(_dual(grads, 0.4, grid))
    combined, weights = combine(built(CAGrad(c=0.4, rescale=False), ["a", "b", "c"]), grads)
    # Recover the dual weights from d = g0 + λ g_w:  λ w = weights - 1/3.
    dual = weights - 1 / 3
    dual = dual / dual.sum()
    assert dual.min() >= -1e-6
    assert _dual(grads, 0.4, dual) <= best + 1e-4 * np.abs(best) + 1e-6
    expected = _update(grads, 0.4, dual, rescale=False)
    np.testing.assert_allclose(combined, expected, rtol=1e-4, atol=1e-5)


def test_an_unlabelled_task_is_left_out_of_the_mean():
    grads = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 3.0]])
    losses, counts = [1.0, 0.0, 1.0], [4, 0, 4]
    weighting = built(CAGrad(c=0.0), ["a", "b", "c"])
    combined, weights = combine(weighting, grads, losses=losses, counts=counts)
    np.testing.assert_allclose(weights, [0.5, 0.0, 0.5], rtol=1e-6)
    weighting = built(CAGrad(c=0.4), ["a", "b", "c"])
    combined, weights = combine(weighting, grads, losses=losses, counts=counts)
    expected, _ = combine(built(CAGrad(c=0.4)), grads[[0, 2]])
    np.testing.assert_allclose(combined, expected, rtol=1e-5)
    assert weights[1] == 0.0
    # Left out by its count, not its gradient: a nonzero one is ignored too.
    grads[1] = [5.0, -5.0]
    weighting = built(CAGrad(c=0.4), ["a", "b", "c"])
    combined, weights = combine(weighting, grads, losses=losses, counts=counts)
    np.testing.assert_allclose(combined, expected, rtol=1e-5)
    assert weights[1] == 0.0


def test_a_labelled_task_with_loss_zero_is_in_the_mean():
    grads = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    for losses in ([1.0, 0.0, 1.0], [1.0, -2.0, 1.0]):
        combined, weights = combine(built(CAGrad(c=0.0), ["a", "b", "c"]), grads, losses=losses)
        np.testing.assert_allclose(weights, [1 / 3, 1 / 3, 1 / 3], rtol=1e-6)


def test_degenerate_gradients():
    # Identical gradients: g_w = g0, λ = c: d = (1 + c) g0 / (1 + c²).
    check_degenerate_inputs(lambda: CAGrad(c=0.4), mean_multiple=1.4 / 1.16)
    g = np.array([0.5, -1.0, 2.0])
    for rescale, multiple in [(0, 1.4), (False, 1.4), (2, 1.0), (True, 1.4 / 1.16)]:
        weighting = built(CAGrad(c=0.4, rescale=rescale), ["a", "b", "c"])
        combined, weights = combine(weighting, [g, g, g])
        np.testing.assert_allclose(combined, multiple * g, rtol=1e-5)


def test_rescale_two_divides_the_official_update_by_one_plus_c():
    # The official code's rescale=2 on two conflicting gradients: the dual
    # solution of rescale=0, divided by 1 + c (not 1 + c²).
    grads = np.array([[1.0, 0.0], [-0.5, 1.0]])
    plain, plain_weights = combine(built(CAGrad(c=0.5, rescale=0)), grads)
    halved, weights = combine(built(CAGrad(c=0.5, rescale=2)), grads)
    np.testing.assert_allclose(halved, plain / 1.5, rtol=1e-6)
    np.testing.assert_allclose(weights, plain_weights / 1.5, rtol=1e-6)
    w = np.linspace(0.0, 1.0, 100_001)[:, None]
    w = np.concatenate([w, 1 - w], axis=1)
    best = w[np.argmin(_dual(grads, 0.5, w))]
    np.testing.assert_allclose(halved, _update(grads, 0.5, best, rescale=2), rtol=1e-4, atol=1e-5)


def test_config_round_trip():
    check_config_round_trip(CAGrad(mode="representation", c=0.7, max_iterations=5, rescale=2))
    config = CAGrad().get_config()
    assert {k: config[k] for k in ("mode", "c", "max_iterations", "rescale")} == {
        "mode": "params", "c": 0.4, "max_iterations": 20, "rescale": 1,
    }
    # A config saved with a boolean (before rescale=2 existed) still loads.
    assert CAGrad.from_config({**config, "rescale": False}).rescale == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"c": -1}, r"argument `c`. Expected a float >= 0. Received: c=-1"),
        ({"c": float("nan")}, r"argument `c`. Expected a float >= 0. Received: c=nan"),
        ({"c": "0.4"}, r"argument `c`. Expected a float >= 0. Received: c='0.4'"),
        ({"max_iterations": -1}, r"argument `max_iterations`. Expected an integer >= 0. Received: max_iterations=-1"),
        ({"rescale": 3}, r"argument `rescale`. Expected one of \(0, 1, 2\) \(or a boolean: 1 or 0\). Received: rescale=3"),
        ({"rescale": 1.0}, r"argument `rescale`. Expected one of .*Received: rescale=1.0"),
        ({"mode": "layers"}, r"argument `mode`.*Received: mode='layers'"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CAGrad(**kwargs)


@pytest.mark.parametrize("mode", FIT_SAVE_LOAD_MODES)
def test_fit_save_and_load(mode, tmp_path):
    # Few iterations: tracing them into the train step is most of the time.
    model, history = check_fit_save_load(CAGrad(mode=mode, max_iterations=5), tmp_path)
    # "a" has no label in the first step of each epoch: weight 0 there.
    assert history["weight_a"][0] < history["weight_b"][0]
