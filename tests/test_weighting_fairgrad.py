"""Tests for `keras_mtl.weighting.fair_grad.FairGrad` (Ban & Ji 2024)."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.weighting.fair_grad import FairGrad
from keras_mtl.weighting.nash_mtl import NashMTL

from gradient_method_checks import FIT_SAVE_LOAD_MODES
from gradient_method_checks import built, check_config_round_trip, check_fit_save_load
from gradient_method_checks import combine, gram_weights, numpy
from gram_method_checks import check_scale_equivariance, combiners, degenerate_cases

# make test keeps this method's doctest and the registry-wide tests (non-finite
# steps, negative losses, numpy scalars); this file runs in make test-slow, to
# keep make test under 10 minutes.
pytestmark = pytest.mark.slow


def _residual(grads, weights, alpha):
    """max_i |(G Gᵀ w)_i w_i^(1/α) - 1| in float64, for the float32
    gradients the method gets."""
    grads = np.asarray(grads, "float32").astype("float64")
    weights = np.asarray(weights, "float64")
    return np.max(np.abs((grads @ grads.T @ weights) * weights ** (1.0 / alpha) - 1.0))


def _reference(gram, alpha, iterations=100):
    """An independent float64 solve of `(G Gᵀ w)_i = w_i^(-1/α)`: scipy's
    L-BFGS-B on the convex `½ wᵀKw - Σ_i h(w_i)` (`h' (w) = w^(-1/α)`) over
    `w > 0`, then Newton's method on the log form
    `log (K w)_i + log(w_i) / α = 0` in `x = log w` (Jacobian
    `diag(1/Kw) K diag(w) + I/α`), halving the step until every `(K w)_i`
    stays positive and the residual drops."""
    from scipy.optimize import minimize

    gram = np.asarray(gram, "float64")
    p = 1.0 / alpha

    def h(w):
        return np.log(w) if p == 1 else w ** (1 - p) / (1 - p)

    start = np.diag(gram) ** (-1.0 / (1.0 + p))  # the orthogonal solution
    found = minimize(
        lambda w: (0.5 * w @ gram @ w - np.sum(h(w)), gram @ w - w ** -p),
        start, jac=True, method="L-BFGS-B", bounds=[(1e-12, None)] * len(start),
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000},
    )

    def residual(x):
        y = gram @ np.exp(x)
        return np.log(y) + p * x if np.all(y > 0) else None

    x = np.log(found.x)
    r = residual(x)
    for _ in range(iterations):
        if np.max(np.abs(r)) < 1e-13:
            break
        w = np.exp(x)
        jacobian = (gram * w[None, :]) / (gram @ w)[:, None] + p * np.eye(len(w))
        step = -np.linalg.solve(jacobian, r)
        for size in 0.5 ** np.arange(30):
            new = residual(x + size * step)
            if new is not None and np.linalg.norm(new) < np.linalg.norm(r):
                x, r = x + size * step, new
                break
    assert np.max(np.abs(r)) < 1e-12, r  # the reference itself converged
    return np.exp(x)


def _random_grads(seed, num_tasks=4, spread=1.0):
    """`(T, 8)` random gradients (linearly independent: full-rank Gram),
    norms `10^U(-spread/2, spread/2)` times those of normal entries."""
    rng = np.random.default_rng(seed)
    norms = 10.0 ** rng.uniform(-spread / 2, spread / 2, size=(num_tasks, 1))
    return (rng.normal(size=(num_tasks, 8)) * norms).astype("float32")


@pytest.mark.parametrize("seed", range(4))
def test_alpha_one_gives_nash_mtl_weights(seed):
    # α = 1: (G Gᵀ) w = 1 / w, Nash-MTL's equation, on the same Gram matrix.
    grads = _random_grads(seed, num_tasks=2 + seed % 3, spread=2.0)
    names = "abcd"[: len(grads)]
    fair = gram_weights(built(FairGrad(alpha=1.0), names), grads)
    nash = gram_weights(built(NashMTL(), names), grads)
    np.testing.assert_allclose(fair, nash, rtol=1e-5)
    gram = grads.astype("float64") @ grads.astype("float64").T
    np.testing.assert_allclose(fair, _reference(gram, 1.0), rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.5, 2.0, 5.0])
def test_matches_a_float64_reference_for_other_alphas(alpha):
    for seed in range(3):
        grads = _random_grads(seed, spread=1.0)
        weights = gram_weights(built(FairGrad(alpha=alpha), "abcd"), grads)
        gram = grads.astype("float64") @ grads.astype("float64").T
        np.testing.assert_allclose(weights, _reference(gram, alpha), rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.5, 2.0, 5.0])
@pytest.mark.parametrize("seed", range(3))
def test_residual_on_random_full_rank_four_task_cases(alpha, seed):
    grads = _random_grads(seed, num_tasks=4, spread=1.0)
    weights = gram_weights(built(FairGrad(alpha=alpha), "abcd"), grads).astype("float64")
    assert np.all(weights > 0)
    assert _residual(grads, weights, alpha) <= 1e-5


def test_orthogonal_gradients_by_hand():
    # G Gᵀ = diag(n²): n_i² w_i = w_i^(-1/α), so w_i = n_i^(-2α/(α+1)).
    # α = 1/2: w_i = n_i^(-2/3); norms 2, 0.5, 3:
    # 2^(-2/3) = 0.6299605, 0.5^(-2/3) = 1.5874011, 3^(-2/3) = 0.4807498.
    grads = [[2.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 3.0]]
    combined, weights = combine(built(FairGrad(alpha=0.5), "abc"), grads)
    np.testing.assert_allclose(weights, [0.6299605, 1.5874011, 0.4807498], rtol=1e-5)
    np.testing.assert_allclose(combined, [1.2599210, 0.7937005, 1.4422496], rtol=1e-5)
    # α = 2: w_i = n_i^(-4/3); norms 1 and 8: 1 and 8^(-4/3) = 1/16;
    # g_iᵀd = n_i² w_i = w_i^(-1/2): 1 and 4.
    grads = np.array([[1.0, 0.0], [0.0, 8.0]])
    combined, weights = combine(built(FairGrad(alpha=2.0)), grads)
    np.testing.assert_allclose(weights, [1.0, 0.0625], rtol=1e-5)
    np.testing.assert_allclose(grads @ combined, [1.0, 4.0], rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_identical_gradients_give_the_documented_closed_form(alpha):
    # T ||g||² w = w^(-1/α): w = (T ||g||²)^(-α/(α+1)); d = T w g.
    g = np.array([1.0, -2.0, 2.0], "float32")  # ||g||² = 9
    combined, weights = combine(built(FairGrad(alpha=alpha), "abc"), [g, g, g])
    w = 27.0 ** (-alpha / (alpha + 1.0))
    np.testing.assert_allclose(weights, [w, w, w], rtol=1e-5)
    np.testing.assert_allclose(combined, 3 * w * g, rtol=1e-5)


def test_alpha_near_zero_tends_to_equal_weights():
    # α -> 0 is linear scalarisation: w -> 1 whatever the gradients.
    grads = _random_grads(0, num_tasks=3)
    weights = gram_weights(built(FairGrad(alpha=0.02), "abc"), grads)
    np.testing.assert_allclose(weights, 1.0, rtol=0.2)


def test_unlabelled_task_gets_weight_zero_and_the_others_are_solved():
    weighting = built(FairGrad(alpha=2.0), "abc")
    # The others are orthogonal: w_i = n_i^(-4/3), 2^(-4/3) = 0.3968503,
    # 4^(-4/3) = 0.1574901.
    for grads in ([[2.0, 0.0], [0.0, 0.0], [0.0, 4.0]], [[2.0, 0.0], [1.0, 1.0], [0.0, 4.0]]):
        combined, weights = combine(weighting, grads, losses=[1.0, 0.0, 1.0], counts=[4, 0, 4])
        np.testing.assert_allclose(weights, [0.3968503, 0.0, 0.1574901], rtol=1e-5)
        np.testing.assert_allclose(combined, [0.7937005, 0.6299605], rtol=1e-5)
    # A labelled task with a zero gradient: weight 0 too.
    combined, weights = combine(weighting, [[2.0, 0.0], [0.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(weights, [0.3968503, 0.0, 0.1574901], rtol=1e-5)


def test_a_labelled_task_with_loss_zero_or_negative_is_solved_for():
    weighting = built(FairGrad(alpha=2.0), "abc")
    grads = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 4.0]]
    for losses in ([1.0, 0.0, 1.0], [1.0, -3.0, 1.0]):
        _, weights = combine(weighting, grads, losses=losses)
        np.testing.assert_allclose(weights, [0.3968503, 1.0, 0.1574901], rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_degenerate_gradients_are_finite_and_documented(alpha):
    runs = combiners(built(FairGrad(alpha=alpha), "abc"))
    for name, (grads, losses, counts) in degenerate_cases().items():
        for how, run in runs.items():
            combined, weights = run(grads, losses, counts)
            where = f"{name} ({how}): weights {weights}"
            assert np.all(np.isfinite(combined)) and np.all(np.isfinite(weights)), where
            if name.startswith("identical"):  # w = (3 ||g||²)^(-α/(α+1)) each
                g = grads[0].astype("float32").astype("float64")
                w = (3.0 * g @ g) ** (-alpha / (alpha + 1.0))
                np.testing.assert_allclose(weights, w, rtol=1e-5, err_msg=where)
            if name in ("unlabelled", "unlabelled_nonzero", "zero_labelled"):
                assert weights[1] == 0.0 and weights[0] > 0 and weights[2] > 0, where
            if name == "all_unlabelled":
                np.testing.assert_array_equal(weights, 0.0, err_msg=where)
                np.testing.assert_array_equal(combined, 0.0, err_msg=where)
            if name == "opposite":  # no solution: the ridged one, bounded
                assert np.all(weights > 0), where
    # Two opposite gradients and a third: the pair's weights are large but
    # finite (the ridge's bound), the third's is its orthogonal value.
    _, weights = combine(built(FairGrad(alpha=alpha), "abc"), [[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0]])
    bound = 1e-6 ** (-alpha / (alpha + 1.0))
    assert np.all(weights[:2] > 0.5 * bound) and np.all(weights[:2] < 2 * bound), weights
    np.testing.assert_allclose(weights[2], 2.0 ** (-2 * alpha / (alpha + 1)), rtol=1e-4)


@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.5])
def test_gradients_of_any_magnitude_give_finite_results_of_the_documented_size(alpha):
    """Gradients scaled by 1e-20 ... 1e20: finite weights and updates, the
    weights `s^(-2α/(α+1))` and `d` `s^((1-α)/(1+α))` times those at `s = 1`
    (the equation's own scaling; Nash-MTL's `degree=0` at α = 1)."""
    check_scale_equivariance(lambda: FairGrad(alpha=alpha), degree=(1 - alpha) / (1 + alpha))


def test_tasks_of_very_different_sizes_are_solved_exactly():
    # Per-task scales undone: a gradient 1e15 times larger than another.
    grads = np.array([[1e15, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1e-15]], "float32")
    _, weights = combine(built(FairGrad(alpha=2.0), "abc"), grads)
    expected = np.array([1e15, 1.0, 1e-15]) ** (-4.0 / 3.0)
    np.testing.assert_allclose(weights, expected, rtol=1e-4)


def test_max_norm_clips_the_combined_gradient():
    grads = [[1.0, 0.0], [0.0, 8.0]]  # α = 2: w = [1, 1/16], d = [1, 0.5]
    combined, weights = combine(built(FairGrad(alpha=2.0, max_norm=0.5)), grads)
    np.testing.assert_allclose(np.linalg.norm(combined), 0.5, rtol=1e-5)
    np.testing.assert_allclose(weights, np.array([1.0, 0.0625]) * 0.5 / np.sqrt(1.25), rtol=1e-5)
    _, weights = combine(built(FairGrad(alpha=2.0, max_norm=10.0)), grads)  # unchanged
    np.testing.assert_allclose(weights, [1.0, 0.0625], rtol=1e-5)


def test_evaluation_changes_no_state():
    weighting = built(FairGrad(alpha=2.0))
    combine(weighting, [[1.0, 0.0], [0.0, 8.0]], training=False)
    np.testing.assert_array_equal(numpy(weighting.task_weights), [1.0, 1.0])
    combine(weighting, [[1.0, 0.0], [0.0, 8.0]], training=True)
    np.testing.assert_allclose(numpy(weighting.task_weights), [1.0, 0.0625], rtol=1e-5)


def test_deterministic_and_traceable():
    weighting = built(FairGrad(alpha=2.0), "abcd")
    grads = _random_grads(5)
    first = gram_weights(weighting, grads)
    np.testing.assert_array_equal(first, gram_weights(weighting, grads))
    traced = tf.function(lambda g: weighting.gram_weights(
        g, tf.ones(4), tf.constant([True] * 4), True))
    np.testing.assert_allclose(numpy(traced(tf.constant(grads @ grads.T))), first, rtol=1e-6)


def test_config_round_trip():
    check_config_round_trip(
        FairGrad(alpha=2.5, mode="representation", max_iterations=7, max_norm=1.0)
    )
    config = FairGrad().get_config()
    assert {k: config[k] for k in ("alpha", "mode", "max_iterations", "max_norm")} == {
        "alpha": 1.0, "mode": "params", "max_iterations": 50, "max_norm": 0.0,
    }


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 0}, r"argument `alpha`. Expected a float > 0. Received: alpha=0"),
        ({"alpha": -1.0}, r"argument `alpha`. Expected a float > 0. Received: alpha=-1.0"),
        ({"alpha": float("nan")}, r"argument `alpha`. Expected a float > 0. Received: alpha=nan"),
        ({"alpha": "2"}, r"argument `alpha`. Expected a float > 0. Received: alpha='2'"),
        ({"max_iterations": 0}, r"`max_iterations`. Expected an integer >= 1. Received: max_iter"),
        ({"max_norm": -1}, r"argument `max_norm`. Expected a float >= 0. Received: max_norm=-1"),
        ({"mode": "layers"}, r"argument `mode`.*Received: mode='layers'"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FairGrad(**kwargs)


def test_registered_with_its_search_space():
    from keras_mtl.weighting.registry import get

    weighting = get("fairgrad")
    assert type(weighting) is FairGrad and weighting.alpha == 1.0
    assert set(FairGrad.search_space) == {"alpha"}


@pytest.mark.parametrize("mode", FIT_SAVE_LOAD_MODES)
def test_fit_save_and_load(mode, tmp_path):
    model, history = check_fit_save_load(FairGrad(alpha=2.0, mode=mode), tmp_path)
    # "a" has no label in the first step of each epoch (weight 0 there).
    assert np.all(numpy(model.weighting.task_weights) > 0)
    assert history["weight_a"][0] > 0
