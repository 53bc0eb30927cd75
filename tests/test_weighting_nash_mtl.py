"""Tests for `keras_mtl.weighting.nash_mtl.NashMTL` (Navon et al. 2022)."""

import numpy as np
import pytest

from keras_mtl.weighting.nash_mtl import NashMTL

from gradient_method_checks import FIT_SAVE_LOAD_MODES
from gradient_method_checks import built, check_config_round_trip, check_fit_save_load
from gradient_method_checks import combine, gram_weights, numpy
from gram_method_checks import check_scale_equivariance


def _residual(grads, alpha):
    """max_i |alpha_i (G Gᵀ alpha)_i - 1|, in float64, for the float32
    gradients the method gets."""
    grads = np.asarray(grads, "float32").astype("float64")
    return np.max(np.abs((grads @ grads.T @ alpha) * alpha - 1.0))


@pytest.mark.parametrize("seed", range(9))
def test_solves_the_bargaining_equation_on_random_full_rank_grams(seed):
    rng = np.random.default_rng(seed)
    num_tasks = 2 + seed % 3
    # Norms from 1e-3 to 1e3, several orders of magnitude apart.
    norms = 10.0 ** rng.uniform(-3.0, 3.0, size=(num_tasks, 1))
    grads = rng.normal(size=(num_tasks, 6)) * norms
    weighting = built(NashMTL(), "abcd"[:num_tasks])
    alpha = gram_weights(weighting, grads).astype("float64")
    assert np.all(alpha > 0)
    assert _residual(grads, alpha) <= 1e-5
    # Then alpha_i g_i·d = 1 for every task and ||d|| = sqrt(T).
    d = alpha @ grads
    np.testing.assert_allclose(np.linalg.norm(d), np.sqrt(num_tasks), rtol=1e-5)


def test_solves_the_equation_with_one_strongly_conflicting_task():
    # Three close gradients and one strongly conflicting: the cosine matrix
    # is ill-conditioned (~1e4); a ridge of 1e-6 on it left a residual of 3e-5.
    grads = np.array([
        [1.0, 0.02, 0.0, 0.0],
        [1.0, -0.01, 0.02, 0.0],
        [1.0, 0.0, -0.02, 0.01],
        [-0.9, 0.3, 0.1, 0.05],
    ])
    alpha = gram_weights(built(NashMTL(), list("abcd")), grads).astype("float64")
    assert np.all(alpha > 0)
    assert _residual(grads, alpha) <= 1e-5


def test_rank_deficient_gradients_stay_finite_and_bounded():
    weighting = built(NashMTL(), ["a", "b", "c"])
    # Two parallel gradients and a third: the Gram matrix has rank 2, yet
    # the equation has a solution, which is found.
    grads = [[0.6, 0.8, 0.0], [1.5, 2.0, 0.0], [0.3, -0.2, 1.0]]
    alpha = gram_weights(weighting, grads).astype("float64")
    assert np.all(np.isfinite(alpha)) and np.all(alpha > 0)
    assert _residual(grads, alpha) <= 1e-5
    # Two opposite gradients: no solution; the ridged one, bounded
    # (beta = alpha_i ||g_i|| ≈ 1000 for the opposite pair).
    grads = [[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0]]
    beta = gram_weights(weighting, grads).astype("float64") * [2.0, 2.0, 1.0]
    assert np.all(beta[:2] > 900) and np.all(beta[:2] < 1100), beta
    np.testing.assert_allclose(beta[2], 1.0, rtol=1e-5)


def test_orthogonal_gradients_by_hand():
    # G Gᵀ = diag(n²): n_i² alpha_i = 1 / alpha_i, alpha_i = 1 / n_i.
    weighting = built(NashMTL())
    combined, weights = combine(weighting, [[3.0, 0.0], [0.0, 0.5]])
    np.testing.assert_allclose(weights, [1 / 3, 2.0], rtol=1e-5)
    np.testing.assert_allclose(combined, [1.0, 1.0], rtol=1e-5)


def test_identical_gradients_give_the_documented_closed_form():
    weighting = built(NashMTL(), ["a", "b", "c"])
    g = np.array([1.0, -2.0, 2.0], "float32")  # ||g|| = 3
    combined, weights = combine(weighting, [g, g, g])
    np.testing.assert_allclose(weights, np.full(3, 1 / (np.sqrt(3) * 3)), rtol=1e-5)
    # d = sqrt(T) / ||g|| times the mean gradient g.
    np.testing.assert_allclose(combined, np.sqrt(3) / 3 * g, rtol=1e-5)


def test_parallel_gradients_give_the_documented_closed_form():
    weighting = built(NashMTL(), ["a", "b", "c"])
    u = np.array([0.6, 0.8])
    c = np.array([1.0, 2.0, 5.0])
    combined, weights = combine(weighting, c[:, None] * u)
    np.testing.assert_allclose(weights, 1 / (np.sqrt(3) * c), rtol=1e-5)
    np.testing.assert_allclose(combined, np.sqrt(3) * u, rtol=1e-5)


def test_degenerate_gradients_are_finite_and_documented():
    weighting = built(NashMTL(), ["a", "b", "c"])
    # A zero gradient gets weight 0; the others are solved alone (orthogonal: 1/n).
    combined, weights = combine(weighting, [[2.0, 0.0], [0.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(weights, [0.5, 0.0, 0.25], rtol=1e-5)
    # Opposite gradients: no exact solution; the ridge keeps it finite.
    combined, weights = combine(weighting, [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    assert np.all(np.isfinite(weights)) and np.all(weights > 0) and weights.max() < 2000
    np.testing.assert_allclose(combined, [0.0, 1.0], atol=1e-3)
    # Near-zero and huge gradients: scale-free solve, finite weights.
    tiny = [[1e-15, 0.0], [0.0, 1e-15], [1e-15, 1e-15]]
    for grads in (tiny, [[1e15, 0.0], [0.0, 1e-15], [0.0, 1.0]]):
        combined, weights = combine(weighting, grads)
        assert np.all(np.isfinite(weights)) and np.all(np.isfinite(combined)), grads
        assert np.all(weights > 0), grads
    # All zero: all weights 0, no NaN.
    combined, weights = combine(weighting, np.zeros((3, 2)))
    np.testing.assert_array_equal(weights, 0.0)
    np.testing.assert_array_equal(combined, 0.0)


def test_unlabelled_task_gets_weight_zero_and_the_others_are_solved():
    weighting = built(NashMTL(), ["a", "b", "c"])
    grads = [[2.0, 0.0], [0.0, 0.0], [0.0, 4.0]]
    combined, weights = combine(weighting, grads, losses=[1.0, 0.0, 1.0], counts=[4, 0, 4])
    np.testing.assert_allclose(weights, [0.5, 0.0, 0.25], rtol=1e-5)
    np.testing.assert_allclose(combined, [1.0, 1.0], rtol=1e-5)
    # Left out by its count, even with a nonzero gradient.
    grads = [[2.0, 0.0], [1.0, 1.0], [0.0, 4.0]]
    combined, weights = combine(weighting, grads, losses=[1.0, 0.0, 1.0], counts=[4, 0, 4])
    np.testing.assert_allclose(weights, [0.5, 0.0, 0.25], rtol=1e-5)


def test_a_labelled_task_with_loss_zero_or_negative_is_solved_for():
    weighting = built(NashMTL(), ["a", "b", "c"])
    grads = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 4.0]]
    for losses in ([1.0, 0.0, 1.0], [1.0, -3.0, 1.0]):
        combined, weights = combine(weighting, grads, losses=losses)
        np.testing.assert_allclose(weights, [0.5, 1.0, 0.25], rtol=1e-5)


def test_update_every_reuses_the_stored_weights():
    weighting = built(NashMTL(update_every=3))
    first = [[1.0, 0.0], [0.0, 2.0]]
    other = [[4.0, 0.0], [0.0, 0.5]]
    np.testing.assert_allclose(gram_weights(weighting, first), [1.0, 0.5], rtol=1e-5)
    np.testing.assert_allclose(gram_weights(weighting, other), [1.0, 0.5], rtol=1e-5)  # reused
    np.testing.assert_allclose(gram_weights(weighting, other), [1.0, 0.5], rtol=1e-5)  # reused
    # Step 3: solved again.
    np.testing.assert_allclose(gram_weights(weighting, other), [0.25, 2.0], rtol=1e-5)
    assert int(numpy(weighting.step)) == 4
    # A task unlabelled in a reuse step still gets weight 0 there.
    weights = gram_weights(weighting, other, losses=[1.0, 0.0], counts=[4, 0])
    np.testing.assert_allclose(weights, [0.25, 0.0], rtol=1e-5)
    np.testing.assert_allclose(numpy(weighting.nash_alpha), [0.25, 2.0], rtol=1e-5)


def test_update_every_solves_again_when_a_left_out_task_returns():
    weighting = built(NashMTL(update_every=10))
    grads = [[1.0, 0.0], [0.0, 2.0]]
    weights = gram_weights(weighting, grads, losses=[1.0, 0.0], counts=[4, 0])
    np.testing.assert_allclose(weights, [1.0, 0.0], rtol=1e-5)
    # "b" is labelled again: its stored weight is 0, so this step solves.
    np.testing.assert_allclose(gram_weights(weighting, grads), [1.0, 0.5], rtol=1e-5)
    weights = gram_weights(weighting, [[9.0, 0.0], [0.0, 9.0]])  # reused
    np.testing.assert_allclose(weights, [1.0, 0.5], rtol=1e-5)


def test_evaluation_solves_without_touching_the_state():
    weighting = built(NashMTL(update_every=2))
    weights = gram_weights(weighting, [[2.0, 0.0], [0.0, 1.0]], training=False)
    np.testing.assert_allclose(weights, [0.5, 1.0], rtol=1e-5)
    assert int(numpy(weighting.step)) == 0
    np.testing.assert_array_equal(numpy(weighting.nash_alpha), [0.0, 0.0])


def test_max_norm_clips_the_combined_gradient():
    weighting = built(NashMTL(max_norm=0.5))
    combined, weights = combine(weighting, [[3.0, 0.0], [0.0, 0.5]])
    np.testing.assert_allclose(np.linalg.norm(combined), 0.5, rtol=1e-5)
    np.testing.assert_allclose(weights, np.array([1 / 3, 2.0]) * 0.5 / np.sqrt(2), rtol=1e-5)
    weighting = built(NashMTL(max_norm=10.0))  # ||d|| = sqrt(2) < 10: unchanged
    _, weights = combine(weighting, [[3.0, 0.0], [0.0, 0.5]])
    np.testing.assert_allclose(weights, [1 / 3, 2.0], rtol=1e-5)


def test_config_round_trip():
    check_config_round_trip(
        NashMTL(mode="representation", update_every=2, max_iterations=7, max_norm=1.0)
    )
    config = NashMTL().get_config()
    assert {k: config[k] for k in ("mode", "update_every", "max_iterations", "max_norm")} == {
        "mode": "params", "update_every": 1, "max_iterations": 20, "max_norm": 0.0,
    }


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"update_every": 0}, r"`update_every`. Expected an integer >= 1. Received: \w+=0"),
        ({"update_every": 1.5}, r"`update_every`. Expected an integer >= 1. Received: .*=1.5"),
        ({"max_iterations": 0}, r"`max_iterations`. Expected an integer >= 1. Received: max_iter"),
        ({"max_norm": -1}, r"argument `max_norm`. Expected a float >= 0. Received: max_norm=-1"),
        ({"mode": "layers"}, r"argument `mode`.*Received: mode='layers'"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NashMTL(**kwargs)


@pytest.mark.parametrize("mode", FIT_SAVE_LOAD_MODES)
def test_fit_save_and_load(mode, tmp_path):
    model, history = check_fit_save_load(NashMTL(mode=mode, update_every=2), tmp_path)
    assert int(numpy(model.weighting.step)) == 4
    assert np.all(numpy(model.weighting.nash_alpha) > 0)
    # "a" has no label in the first step of each epoch (weight 0 there), and
    # is solved for again in the second: half its weight in the mean.
    assert history["weight_a"][0] > 0


class _CountingNash(NashMTL):
    """Counts `combine` calls (the steps that computed per-task gradients)."""

    def build(self, losses_shape):
        super().build(losses_shape)
        self.combines = self.add_weight(
            name="combines", shape=(), initializer="zeros", trainable=False
        )

    def combine(self, *args, **kwargs):
        self.combines.assign(self.combines + 1.0)
        return super().combine(*args, **kwargs)


class _EveryStepGradients(_CountingNash):
    """Per-task gradients at every step (no `reuse_plan`): the reference."""

    def reuse_plan(self, losses, counts=None):
        return None


def _train(weighting):
    import keras

    from conftest import random_images, random_labels, tiny_model
    from gradient_method_checks import TASKS

    keras.utils.set_random_seed(3)
    model = tiny_model(TASKS)
    model.compile(optimizer=keras.optimizers.SGD(0.01), weighting=weighting)
    x, y = random_images(16) / 255.0, random_labels(TASKS, 16)
    y["a"][:4] = np.nan  # no label for "a" in the first step of each epoch
    history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0).history
    return model, history


@pytest.mark.parametrize("max_norm", [0.0, 0.05])
def test_params_mode_reuse_steps_skip_the_per_task_gradients(max_norm):
    # 8 steps, update_every=3: steps 0, 3, 6 solve, and so does step 1:
    # "a" had no labels in step 0, which stored weight 0 for it. (Step 5
    # reuses: "a"'s weight stored at step 3 is positive.)
    skipping, history = _train(_CountingNash(update_every=3, max_norm=max_norm))
    reference, ref_history = _train(_EveryStepGradients(update_every=3, max_norm=max_norm))
    assert int(numpy(skipping.weighting.step)) == 8
    assert float(numpy(skipping.weighting.combines)) == 4  # steps 0, 1, 3, 6
    assert float(numpy(reference.weighting.combines)) == 8
    # ... and the training is the same as with per-task gradients every step.
    for a, b in zip(reference.trainable_variables, skipping.trainable_variables):
        np.testing.assert_allclose(numpy(a), numpy(b), rtol=1e-5, atol=1e-6)
    for key in ("loss", "weight_a", "weight_s"):
        np.testing.assert_allclose(history[key], ref_history[key], rtol=1e-5)


def test_gradients_of_any_magnitude_give_the_same_update():
    """Gradients scaled by 1e-20 ... 1e20: the Gram matrix is formed from
    gradients divided by a common scale and alpha corrected for it, so the
    update is the same (Nash-MTL's `d` does not depend on the gradients'
    size) and the weights are `1 / s` times those of `s = 1`."""
    check_scale_equivariance(lambda: NashMTL(), degree=0)
