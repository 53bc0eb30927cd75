"""Tests for `keras_mtl.weighting.aligned_mtl.AlignedMTL` (Senushkin et al. 2023)."""

import numpy as np
import pytest

from keras_mtl.weighting.aligned_mtl import AlignedMTL
from keras_mtl.weighting.aligned_mtl import alignment_matrix

from gradient_method_checks import FIT_SAVE_LOAD_MODES
from gradient_method_checks import built, check_config_round_trip, check_fit_save_load
from gradient_method_checks import combine, numpy
from gram_method_checks import check_degenerate_inputs


def _official(grads, scale="min"):
    """The official ProcrustesSolver's weights B·1, in float64."""
    gram = grads @ grads.T
    values, vectors = np.linalg.eigh(gram)
    keep = values > values.max() * len(values) * np.finfo("float32").eps
    values, vectors = values[keep][::-1], vectors[:, keep][:, ::-1]  # descending
    sigma = {
        "min": np.sqrt(values[-1]),
        "median": np.sqrt(np.sort(values)[(len(values) - 1) // 2]),  # torch's lower median
        "rmse": np.sqrt(values.mean()),
    }[scale]
    return (sigma * vectors / np.sqrt(values) @ vectors.T).sum(axis=1)


def _names(n):
    return [f"t{i}" for i in range(n)]


def test_orthogonal_gradients_by_hand():
    combined, weights = combine(built(AlignedMTL()), [[2.0, 0.0], [0.0, 1.0]])
    # Aligned to the smallest norm, 1: (1, 0) and (0, 1).
    np.testing.assert_allclose(weights, [0.5, 1.0], rtol=1e-5)
    np.testing.assert_allclose(combined, [1.0, 1.0], rtol=1e-5)


@pytest.mark.parametrize("num_tasks, seed", [(2, 0), (3, 1), (5, 2)])
def test_the_update_has_equal_components_along_the_aligned_gradients(num_tasks, seed):
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(num_tasks, 8)) * rng.uniform(0.2, 3.0, size=(num_tasks, 1))
    gram = grads @ grads.T
    matrix = numpy(alignment_matrix(gram.astype("float32")))
    aligned = matrix @ grads
    sigma2 = np.linalg.eigvalsh(gram).min()
    # Orthogonal, all of norm sqrt(λ_min): condition number 1.
    np.testing.assert_allclose(
        aligned @ aligned.T, sigma2 * np.eye(num_tasks), rtol=1e-3, atol=1e-3 * sigma2
    )
    combined, weights = combine(built(AlignedMTL(), _names(num_tasks)), grads)
    np.testing.assert_allclose(combined, aligned.sum(0), rtol=1e-3, atol=1e-4)
    components = aligned @ combined / np.linalg.norm(aligned, axis=1)
    np.testing.assert_allclose(components, np.sqrt(sigma2), rtol=1e-3)
    np.testing.assert_allclose(weights, _official(grads), rtol=1e-3)


@pytest.mark.parametrize("scale", ["min", "median", "rmse"])
def test_scales_match_the_official_solver(scale):
    grads = np.random.default_rng(5).normal(size=(4, 6))
    weights = combine(built(AlignedMTL(scale=scale), _names(4)), grads)[1]
    np.testing.assert_allclose(weights, _official(grads, scale), rtol=1e-3)


def test_rank_deficient_gradients_are_aligned_within_their_span():
    # Three gradients in a plane: rank 2, one eigenvalue dropped.
    grads = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 0.0]])
    combined, weights = combine(built(AlignedMTL(), _names(3)), grads)
    assert np.all(np.isfinite(weights))
    np.testing.assert_allclose(weights, _official(grads), rtol=1e-3)
    matrix = numpy(alignment_matrix((grads @ grads.T).astype("float32")))
    singular = np.linalg.svd(matrix @ grads, compute_uv=False)
    kept = np.linalg.eigvalsh(grads @ grads.T)[1:]
    np.testing.assert_allclose(singular, [np.sqrt(kept.min())] * 2 + [0.0], atol=1e-3)


def test_unlabelled_tasks_get_weight_zero():
    # "b" unlabelled (count 0), or labelled with a zero gradient (its loss 0
    # or not): weight 0 either way.
    grads = np.array([[2.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    for losses, counts in [
        ([1.0, 0.0, 1.0], [4, 0, 4]),
        ([1.0, 0.0, 1.0], None),
        ([1.0, 1.0, 1.0], None),
    ]:
        weighting = built(AlignedMTL(), _names(3))
        combined, weights = combine(weighting, grads, losses=losses, counts=counts)
        np.testing.assert_allclose(weights, [0.5, 0.0, 1.0], rtol=1e-5)
    # An unlabelled task is left out even with a nonzero gradient.
    grads = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    combined, weights = combine(built(AlignedMTL(), _names(3)), grads, counts=[4, 0, 4])
    np.testing.assert_allclose(weights, [0.5, 0.0, 1.0], rtol=1e-5)


def test_degenerate_gradients():
    # Identical gradients: rank 1, each weight 1: the sum, T × mean.
    check_degenerate_inputs(lambda: AlignedMTL(), mean_multiple=3.0)


def test_config_round_trip():
    check_config_round_trip(AlignedMTL(mode="representation", scale="rmse", tolerance=1e-4))
    config = AlignedMTL().get_config()
    assert {k: config[k] for k in ("mode", "scale", "tolerance")} == {
        "mode": "params", "scale": "min", "tolerance": 1e-5,
    }


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scale": "max"}, r"argument `scale`. Expected one of \('min', 'median', 'rmse'\). Received: scale='max'"),
        ({"tolerance": -1}, r"argument `tolerance`. Expected a float >= 0 and < 1. Received: tolerance=-1"),
        ({"tolerance": 1.0}, r"argument `tolerance`. Expected a float >= 0 and < 1. Received: tolerance=1.0"),
        ({"mode": "layers"}, r"argument `mode`.*Received: mode='layers'"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AlignedMTL(**kwargs)


@pytest.mark.parametrize("mode", FIT_SAVE_LOAD_MODES)
def test_fit_save_and_load(mode, tmp_path):
    model, history = check_fit_save_load(AlignedMTL(mode=mode), tmp_path)
    # "a" has no label in the first step of each epoch: weight 0 there.
    assert history["weight_a"][0] < history["weight_b"][0]
