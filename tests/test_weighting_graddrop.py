"""Tests for `keras_mtl.weighting.grad_drop.GradDrop` (Chen et al. 2020)."""

import keras
import numpy as np
import pytest

from keras_mtl.weighting.grad_drop import GradDrop

from gradient_method_checks import built, check_config_round_trip, check_fit_save_load
from gradient_method_checks import numpy
from gradient_method_checks import combine as combine_with


def combine(weighting, grads, losses=None, counts=None, training=True, activations=None):
    """`combine` with positive activations `z` (sign 1) unless given."""
    if activations is None:
        activations = np.ones(np.shape(grads)[1:], "float32")
    return combine_with(
        weighting, grads, losses, counts=counts, training=training, activations=activations
    )


def _reference(grads, z, draw, leak):
    """Algorithm 1 in NumPy, given the uniform draw."""
    summed = (grads * np.sign(z)).sum(axis=1)
    mass = np.abs(summed).sum(axis=0)
    purity = np.where(mass > 0, 0.5 * (1 + summed.sum(axis=0) / np.where(mass > 0, mass, 1)), 0.5)
    keep = ((purity > draw) & (summed > 0)) | ((purity <= draw) & (summed < 0)) | (summed == 0)
    return (grads * (leak + (1 - leak) * keep)[:, None]).sum(axis=0)


def test_matches_the_reference_with_the_same_draws():
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(3, 4, 5, 2)).astype("float32")  # (T, batch, ...)
    z = rng.normal(size=(4, 5, 2)) * (rng.random((4, 5, 2)) < 0.7)  # signs -1, 0, 1
    z[:, 0, 0] = 0.0  # no example active there: G_i = 0, every gradient passes
    weighting = built(GradDrop(leak=0.2, seed=9), ["a", "b", "c"])
    generator = keras.random.SeedGenerator(9)
    for _ in range(2):
        draw = numpy(keras.random.uniform((5, 2), seed=generator))
        combined, weights = combine(weighting, grads, activations=z)
        np.testing.assert_allclose(combined, _reference(grads, z, draw, 0.2), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(weights, [1.0, 1.0, 1.0])
        np.testing.assert_allclose(combined[:, 0, 0], grads[:, :, 0, 0].sum(axis=0), rtol=1e-6)


def test_the_sign_of_the_activations_by_hand():
    # One element, two examples with activations z = (1, -1); U = 1/2
    # outside training. Task a: g = (1, -2), so G_a = 1·1 + (-1)(-2) = 3
    # (without sign(z) it would be -1); task b: g = (-1, 0), G_b = -1.
    # P = ½ (1 + 2 / 4) = 3/4 > 1/2: the positive sign passes, so a passes
    # and b is dropped. (Without the factor: P = 0, both would pass.)
    grads = [[[1.0], [-2.0]], [[-1.0], [0.0]]]
    z = [[1.0], [-1.0]]
    combined, _ = combine(built(GradDrop(seed=0)), grads, training=False, activations=z)
    np.testing.assert_allclose(combined, [[1.0], [-2.0]])
    # A zero activation takes its example out of G_i: z = (1, 0) gives
    # G_a = 1, G_b = -1, P = 1/2 <= U: the negative sign passes.
    combined, _ = combine(
        built(GradDrop(seed=0)), grads, training=False, activations=[[1.0], [0.0]]
    )
    np.testing.assert_allclose(combined, [[-1.0], [0.0]])


def test_activations_are_required():
    weighting = built(GradDrop(seed=0))
    grads = np.ones((2, 3, 4), "float32")
    match = r"argument `activations`.*\(3, 4\). Received: activations=None"
    with pytest.raises(ValueError, match=match):
        combine_with(weighting, grads)
    with pytest.raises(ValueError, match=r"argument `activations`.*Received: activations=\(3, 5\)"):
        combine_with(weighting, grads, activations=np.ones((3, 5)))


def test_masks_come_from_the_batch_sum():
    weighting = built(GradDrop(seed=0))
    # Element 0: "a" sums to +1 over the batch (examples +2, -1), "b" to +1:
    # P = 1, both pass in full, including the negative example of "a".
    grads = np.array([[[2.0], [-1.0]], [[0.5], [0.5]]])
    combined, _ = combine(weighting, grads)
    np.testing.assert_allclose(combined, grads.sum(axis=0))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_same_signs_give_the_plain_sum(sign):
    rng = np.random.default_rng(1)
    grads = sign * np.abs(rng.normal(size=(3, 4, 8))).astype("float32")  # P = 1 or 0
    weighting = built(GradDrop(seed=3), ["a", "b", "c"])
    for _ in range(3):
        combined, _ = combine(weighting, grads)
        np.testing.assert_allclose(combined, grads.sum(axis=0), rtol=1e-6)


def test_identical_gradients_give_the_sum():
    # Mixed signs across elements, the same in every task.
    g = np.random.default_rng(2).normal(size=(4, 6)).astype("float32")
    weighting = built(GradDrop(seed=0), ["a", "b", "c"])
    combined, weights = combine(weighting, [g, g, g])
    np.testing.assert_allclose(combined, 3 * g, rtol=1e-6)  # T times the mean
    np.testing.assert_array_equal(weights, [1.0, 1.0, 1.0])


def test_the_positive_sign_passes_with_probability_purity():
    # G_a = +3, G_b = -1 everywhere: P = 0.75.
    n = 4000
    grads = np.stack([np.full((1, n), 3.0), np.full((1, n), -1.0)]).astype("float32")
    combined, _ = combine(built(GradDrop(seed=1)), grads)
    positive = np.mean(combined[0] == 3.0)
    assert set(np.unique(combined)) <= {3.0, -1.0}
    assert abs(positive - 0.75) < 0.03


def test_leak_one_is_the_plain_sum_and_leak_keeps_a_fraction():
    grads = np.array([[[1.0, -1.0]], [[-3.0, 2.0]]], "float32")
    combined, _ = combine(built(GradDrop(leak=1.0, seed=0)), grads)
    np.testing.assert_allclose(combined, grads.sum(axis=0))
    # Outside training U = 1/2: element 0 keeps the negative side (P = 1/4),
    # element 1 the positive (P = 2/3); the dropped side leaks 0.5.
    combined, _ = combine(built(GradDrop(leak=0.5, seed=0)), grads, training=False)
    np.testing.assert_allclose(combined, [[0.5 * 1.0 - 3.0, -0.5 * 1.0 + 2.0]])


def test_fixed_seed_is_deterministic_and_draws_change_per_step():
    grads = np.random.default_rng(5).normal(size=(3, 2, 50)).astype("float32")
    runs = []
    for _ in range(2):
        weighting = built(GradDrop(seed=4), ["a", "b", "c"])
        runs.append([combine(weighting, grads)[0] for _ in range(2)])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0][0], runs[0][1])
    # Evaluation draws nothing.
    state = numpy(weighting.seed_generator.state).copy()
    combine(weighting, grads, training=False)
    np.testing.assert_array_equal(numpy(weighting.seed_generator.state), state)


def test_zero_near_zero_and_unlabelled_gradients_are_finite():
    weighting = built(GradDrop(seed=0), ["a", "b", "c"])
    combined, weights = combine(weighting, np.zeros((3, 2, 4)))
    np.testing.assert_array_equal(combined, 0.0)  # P = 0/0 is defined as 1/2
    tiny = np.array([[[1e-30, -1e-30]], [[-1e-30, 1e-30]], [[1e-38, 0.0]]], "float32")
    combined, weights = combine(weighting, tiny)
    assert np.all(np.isfinite(combined))
    grads = np.array([[[1.0, 2.0]], [[0.0, 0.0]], [[3.0, 1.0]]], "float32")
    # "b" unlabelled (count 0; its loss and gradient 0, as the model gives them).
    combined, weights = combine(weighting, grads, losses=[1.0, 0.0, 2.0], counts=[4, 0, 4])
    np.testing.assert_array_equal(weights, [1.0, 0.0, 1.0])
    np.testing.assert_allclose(combined, [[4.0, 3.0]])  # the others are untouched
    # "b" labelled with a loss of 0 (or below): weight 1, like any labelled task.
    for b in (0.0, -1.0):
        combined, weights = combine(weighting, grads, losses=[1.0, b, 2.0])
        np.testing.assert_array_equal(weights, [1.0, 1.0, 1.0])
        np.testing.assert_allclose(combined, [[4.0, 3.0]])


def test_params_mode_is_refused():
    match = r"argument `mode`. GradDrop supports \('representation',\). Received: mode='params'"
    with pytest.raises(ValueError, match=match):
        GradDrop(mode="params")


def test_config_round_trip():
    check_config_round_trip(GradDrop(leak=0.3, seed=2))
    config = GradDrop().get_config()
    expected = {"mode": "representation", "leak": 0.0, "seed": None}
    assert {k: config[k] for k in expected} == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"leak": -0.1}, r"argument `leak`. Expected a float in \[0, 1\]. Received: leak=-0.1"),
        ({"leak": 2}, r"argument `leak`. Expected a float in \[0, 1\]. Received: leak=2"),
        ({"seed": 1.5}, r"argument `seed`. Expected None or an integer >= 0. Received: seed=1.5"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GradDrop(**kwargs)


def test_fit_save_and_load(tmp_path):
    weighting = GradDrop(seed=1)
    state = numpy(keras.random.SeedGenerator(1).state)
    model, history = check_fit_save_load(weighting, tmp_path)
    assert not np.array_equal(numpy(model.weighting.seed_generator.state), state)  # it drew
    # "a" has no label in the first step of each epoch: weight 0 there.
    np.testing.assert_allclose(history["weight_a"], [0.5, 0.5])
    np.testing.assert_allclose(history["weight_b"], [1.0, 1.0])
