"""Tests for `keras_mtl.weighting.conflict_free.ConFIG` (Liu, Chu & Thuerey,
ICLR 2025)."""

import numpy as np
import pytest

from keras_mtl import weighting as W
from keras_mtl.weighting.conflict_free import LENGTH_MODELS
from keras_mtl.weighting.conflict_free import ConFIG

from gradient_method_checks import FIT_SAVE_LOAD_MODES
from gradient_method_checks import built, check_config_round_trip, check_fit_save_load
from gradient_method_checks import combine
from gram_method_checks import check_degenerate_inputs

NAMES = list("abcdef")

#: The official `Track*` length models' norm, from the gradients' norms.
TRACKED = {
    "track_minimum": np.min,
    "track_maximum": np.max,
    "track_arithmetic_average": np.mean,
    "track_harmonic_average": lambda n: len(n) / np.sum(1 / n),
    "track_geometric_average": lambda n: np.prod(n) ** (1 / len(n)),
}


def _official(grads, length_model="projection"):
    """`conflictfree.ConFIG_update` (`use_least_square=True`, `EqualWeight`)
    in float64 NumPy: the minimum-norm least-squares direction (an exact
    pseudo-inverse), rescaled by the length model."""
    grads = np.asarray(grads, "float64")
    norms = np.linalg.norm(grads, axis=1)
    units = np.nan_to_num(grads / norms[:, None])
    direction = np.linalg.lstsq(units, np.ones(len(grads)), rcond=None)[0]
    size = np.linalg.norm(direction)
    unit = direction / size if size > 0 else direction
    if length_model == "projection":
        return np.sum(grads @ unit) * unit
    return np.sum(units @ unit) * TRACKED[length_model](norms) * unit


def _official_double(g1, g2):
    """`conflictfree.ConFIG_update_double` (the authors' two-task default)
    in float64 NumPy."""
    g1, g2 = np.asarray(g1, "float64"), np.asarray(g2, "float64")
    n1, n2 = np.linalg.norm(g1), np.linalg.norm(g2)
    u1, u2 = g1 / n1, g2 / n2
    cos = u1 @ u2
    or1, or2 = g2 - n2 * cos * u1, g1 - n1 * cos * u2
    or1, or2 = or1 / np.linalg.norm(or1), or2 / np.linalg.norm(or2)
    direction = (or2 @ u1) / (or1 @ u2) * or1 + or2
    unit = direction / np.linalg.norm(direction)
    return (g1 @ unit + g2 @ unit) * unit


def _cosines(grads, combined):
    grads = np.asarray(grads, "float64")
    return grads @ combined / np.linalg.norm(grads, axis=1) / np.linalg.norm(combined)


def test_two_conflicting_gradients_by_hand():
    # g_a = (1, 0), g_b = (-1, 1) (135° apart): g_u bisects them, at 67.5°;
    # |g_c| = cos 67.5° + √2 cos 67.5°, so g_c = (1 + √2) cos 67.5° g_u:
    # w_b = (2 + √2) / 4 and w_a = √2 w_b = (1 + √2) / 2.
    combined, weights = combine(built(ConFIG()), [[1.0, 0.0], [-1.0, 1.0]])
    w_b = (2 + np.sqrt(2)) / 4
    np.testing.assert_allclose(weights, [np.sqrt(2) * w_b, w_b], rtol=1e-5)
    angle = np.radians(67.5)
    expected = (1 + np.sqrt(2)) * np.cos(angle) * np.array([np.cos(angle), np.sin(angle)])
    np.testing.assert_allclose(combined, expected, rtol=1e-5)
    np.testing.assert_allclose(combined, _official_double([1, 0], [-1, 1]), rtol=1e-5)


def test_orthogonal_gradients_by_hand():
    # g_u = (1, 1) / √2, its length 1/√2 + 2/√2: g_c = (1.5, 1.5).
    combined, weights = combine(built(ConFIG()), [[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(combined, [1.5, 1.5], rtol=1e-5)
    np.testing.assert_allclose(weights, [1.5, 0.75], rtol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_conflict_free_at_equal_angles_and_as_the_official_code(seed):
    # Full rank (T <= P), norms up to 100 apart: gradients sharing a
    # common component (seeds 0..2), or with the second task's nearly
    # opposite to the first's (3..5: a strong conflict).
    rng = np.random.default_rng(seed)
    n = 2 + seed % 4
    grads = rng.normal(size=(n, 8))
    if seed < 3:
        grads += 1.5 * rng.normal(size=(1, 8))
    else:
        grads[1] = -grads[0] + 0.5 * grads[1]
        assert np.min(grads @ grads.T) < 0
    grads *= rng.uniform(0.1, 10.0, size=(n, 1))
    combined, weights = combine(built(ConFIG(), NAMES[:n]), grads)
    expected = _official(grads)
    np.testing.assert_allclose(combined, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(weights @ grads, combined, rtol=1e-4, atol=1e-5)
    cosines = _cosines(grads, combined)
    assert np.all(grads @ combined > 0), cosines  # conflicts with no task
    np.testing.assert_allclose(cosines, cosines.mean(), rtol=1e-4)  # the same angle to each
    if n == 2:
        np.testing.assert_allclose(combined, _official_double(*grads), rtol=1e-4)


@pytest.mark.parametrize("length_model", LENGTH_MODELS[1:])
def test_the_official_length_models(length_model):
    rng = np.random.default_rng(3)
    grads = rng.normal(size=(4, 7)) * np.array([[0.5], [1.0], [4.0], [2.0]])
    combined, _ = combine(built(ConFIG(length_model=length_model), NAMES[:4]), grads)
    np.testing.assert_allclose(combined, _official(grads, length_model), rtol=1e-4)
    # The same direction as the default; only the length differs.
    default, _ = combine(built(ConFIG(), NAMES[:4]), grads)
    np.testing.assert_allclose(_cosines([default], combined), [1.0], rtol=1e-6)


def test_a_negative_weight_still_conflicts_with_no_task():
    # "c" lies close to the plane of "a" and "b": a = C⁻¹ 1 is negative for
    # it, and the update is still at equal (acute) angles to all three.
    grads = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 0.3]]
    combined, weights = combine(built(ConFIG(), ["a", "b", "c"]), grads)
    assert weights[2] < 0 < min(weights[:2]), weights
    cosines = _cosines(grads, combined)
    np.testing.assert_allclose(cosines, cosines.mean(), rtol=1e-4)
    assert cosines.mean() > 0
    np.testing.assert_allclose(combined, _official(grads), rtol=1e-4)


def test_its_names():
    assert W.get_class("config") is ConFIG and W.get_class("conflict-free") is ConFIG
    assert isinstance(W.get("ConFIG"), ConFIG)


def test_dependent_gradients_give_the_least_squares_direction():
    weighting = built(ConFIG(), ["a", "b", "c"])
    # Three directions in a plane: no direction is at equal angles to all;
    # the least-squares one bisects (1, 0) and (0, 1), along the third:
    # g_u = (1, 1, 0) / √2 and |g_c| = 1/√2 + 1/√2 + √2.
    grads = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]
    combined, weights = combine(weighting, grads)
    np.testing.assert_allclose(combined, [2.0, 2.0, 0.0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(combined, _official(grads), rtol=1e-5, atol=1e-6)
    # Opposite gradients and a third: the third's part orthogonal to them.
    grads = [[1.0, 0.0], [-2.0, 0.0], [1.0, 1.0]]
    combined, weights = combine(weighting, grads)
    np.testing.assert_allclose(combined, [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(combined, _official(grads), atol=1e-6)
    # `g` and `-g` (the third task unlabelled): no direction, a zero update.
    combined, weights = combine(weighting, [[1.0, 2.0], [-1.0, -2.0], [0.0, 1.0]],
                                counts=[4, 4, 0])
    np.testing.assert_allclose(combined, 0.0, atol=1e-6)
    np.testing.assert_array_equal(weights[2], 0.0)


def test_a_task_without_labels_is_left_out_of_direction_and_length():
    rng = np.random.default_rng(5)
    grads = rng.normal(size=(3, 5))
    combined, weights = combine(built(ConFIG(), ["a", "b", "c"]), grads, counts=[4, 0, 4])
    assert weights[1] == 0.0
    np.testing.assert_allclose(combined, _official(grads[[0, 2]]), rtol=1e-4)


@pytest.mark.parametrize(
    "length_model",
    ["projection", pytest.param("track_harmonic_average", marks=pytest.mark.slow)],
)
def test_degenerate_gradients_and_any_magnitude(length_model):
    # Identical gradients: g_u = u and |g_c| = Σ ‖g_i‖ (or T times the
    # tracked norm, the same here): three times their mean. Also checks
    # that gradients scaled by 1e-20 ... 1e20 give the same weights.
    check_degenerate_inputs(lambda: ConFIG(length_model=length_model), mean_multiple=3.0)


def test_config_round_trip():
    check_config_round_trip(
        ConFIG(mode="representation", length_model="track_minimum", rcond=1e-4)
    )
    config = ConFIG().get_config()
    expected = {"mode": "params", "length_model": "projection", "rcond": 1e-3}
    assert {k: config[k] for k in expected} == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"length_model": "projectionlength"},
         r"`length_model`. Expected one of \('projection', .*Received: length_model='proj"),
        ({"rcond": 0}, r"`rcond`. Expected a float > 0. Received: rcond=0"),
        ({"rcond": 1.0}, r"`rcond`. Expected a float in \(0, 1\). Received: rcond=1.0"),
        ({"mode": "layers"}, r"argument `mode`.*Received: mode='layers'"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConFIG(**kwargs)


@pytest.mark.parametrize("mode", FIT_SAVE_LOAD_MODES)
def test_fit_save_and_load(mode, tmp_path):
    _, history = check_fit_save_load(ConFIG(mode=mode), tmp_path)
    # "a" has no label in the first step of each epoch: weight 0 there.
    assert history["weight_b"][0] > 0 and history["weight_a"][0] >= 0
