"""Tests for `keras_mtl.weighting.imtl.IMTL` (IMTL-G, Liu et al. 2021)."""

import numpy as np
import pytest

from keras_mtl.weighting.imtl import IMTL

from gradient_method_checks import FIT_SAVE_LOAD_MODES
from gradient_method_checks import built, check_config_round_trip, check_fit_save_load
from gradient_method_checks import combine
from gram_method_checks import check_degenerate_inputs


def _paper(grads):
    """The paper's closed form (as in LibMTL): α = g_1 Uᵀ (D Uᵀ)⁻¹."""
    grads = np.asarray(grads, "float64")
    units = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    d = grads[:1] - grads[1:]
    u = units[:1] - units[1:]
    alpha = grads[0] @ u.T @ np.linalg.inv(d @ u.T)
    return np.concatenate([[1 - alpha.sum()], alpha])


def _projections(grads, combined):
    grads = np.asarray(grads, "float64")
    return (grads / np.linalg.norm(grads, axis=1, keepdims=True)) @ combined


def test_orthogonal_gradients_by_hand():
    # g = α (1, 0) + (1 - α) (0, 2): equal projections α = 2 (1 - α).
    combined, weights = combine(built(IMTL()), [[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(weights, [2 / 3, 1 / 3], rtol=1e-5)
    np.testing.assert_allclose(combined, [2 / 3, 2 / 3], rtol=1e-5)


@pytest.mark.parametrize("num_tasks, seed", [(2, 0), (3, 1), (4, 2), (5, 3)])
def test_equal_projections_on_every_unit_task_gradient(num_tasks, seed):
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(num_tasks, 7)) * rng.uniform(0.1, 5.0, size=(num_tasks, 1))
    combined, weights = combine(built(IMTL(), [f"t{i}" for i in range(num_tasks)]), grads)
    projections = _projections(grads, combined)
    np.testing.assert_allclose(projections, projections.mean(), rtol=1e-4)
    assert weights.sum() == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(weights, _paper(grads), rtol=1e-3, atol=1e-5)


def test_dependent_gradients_keep_equal_projections():
    # "c" duplicates "a": the paper's D Uᵀ is singular. Every α with
    # α_a + α_c = 2/3 and α_b = 1/3 gives g = (2/3, 2/3); the closest to
    # uniform is chosen.
    g = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
    combined, weights = combine(built(IMTL(), ["a", "b", "c"]), g)
    np.testing.assert_allclose(weights, [1 / 3] * 3, rtol=1e-5)
    np.testing.assert_allclose(_projections(g, combined), 2 / 3, rtol=1e-5)


def test_three_directions_in_a_plane_give_a_zero_update():
    # Equal projections on three distinct directions of a plane force g = 0
    # (α = (1, 1, -1) here): IMTL-G's answer, finite.
    g = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    combined, weights = combine(built(IMTL(), ["a", "b", "c"]), g)
    np.testing.assert_allclose(weights, [1.0, 1.0, -1.0], rtol=1e-4)
    np.testing.assert_allclose(combined, 0.0, atol=1e-5)


def test_parallel_gradients_give_equal_weights():
    g = np.array([1.0, -2.0, 0.5])
    combined, weights = combine(built(IMTL(), ["a", "b", "c"]), [g, 3 * g, 0.5 * g])
    np.testing.assert_allclose(weights, [1 / 3] * 3, rtol=1e-5)


def test_unlabelled_and_zero_gradients_are_left_out():
    # "b" unlabelled (count 0), or labelled with a zero gradient (its loss 0
    # or not): weight 0 either way.
    grads = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    for losses, counts in [
        ([1.0, 0.0, 1.0], [4, 0, 4]),
        ([1.0, 0.0, 1.0], None),
        ([1.0, 1.0, 1.0], None),
    ]:
        weighting = built(IMTL(), ["a", "b", "c"])
        combined, weights = combine(weighting, grads, losses=losses, counts=counts)
        np.testing.assert_allclose(weights, [2 / 3, 0.0, 1 / 3], rtol=1e-5)
    # Left out by its count even with a nonzero gradient.
    grads[1] = [3.0, 3.0]
    combined, weights = combine(built(IMTL(), ["a", "b", "c"]), grads, counts=[4, 0, 4])
    np.testing.assert_allclose(weights, [2 / 3, 0.0, 1 / 3], rtol=1e-5)


def test_degenerate_gradients():
    # Identical gradients: the closest solution to uniform, the mean.
    check_degenerate_inputs(lambda: IMTL(), mean_multiple=1.0)


def test_config_round_trip():
    check_config_round_trip(IMTL(mode="representation"))
    assert IMTL().get_config()["mode"] == "params"


def test_bad_mode():
    with pytest.raises(ValueError, match=r"argument `mode`.*Received: mode='layers'"):
        IMTL(mode="layers")


@pytest.mark.parametrize("mode", FIT_SAVE_LOAD_MODES)
def test_fit_save_and_load(mode, tmp_path):
    model, history = check_fit_save_load(IMTL(mode=mode), tmp_path)
    # "a" has no label in the first step of each epoch (weight 0 there);
    # the weights of each step sum to 1.
    total = sum(np.asarray(history[f"weight_{t}"]) for t in "abs")
    np.testing.assert_allclose(total, 1.0, rtol=1e-4)
