"""Tests for `keras_mtl.weighting.mgda.MGDA` (Sener & Koltun 2018)."""

import itertools

import numpy as np
import pytest

from keras_mtl.weighting.mgda import MGDA
from keras_mtl.weighting.mgda import min_norm_weights

from gradient_method_checks import FIT_SAVE_LOAD_MODES
from gradient_method_checks import built, check_config_round_trip, check_fit_save_load
from gradient_method_checks import combine, gram_weights
from gram_method_checks import check_degenerate_inputs


def _simplex_grid(num_tasks, steps):
    corners = itertools.product(range(steps + 1), repeat=num_tasks - 1)
    points = [p for p in corners if sum(p) <= steps]
    grid = np.array([list(p) + [steps - sum(p)] for p in points], "float64")
    return grid / steps


def _min_norm_by_enumeration(gram):
    """`argmin_{w ∈ simplex} wᵀ gram w` in float64, exactly: for every
    support S, the KKT system `gram_SS w_S = λ 1, Σ w_S = 1`; the optimum is
    the feasible solution (w >= 0) with `(gram w)_i >= λ` for every i."""
    gram = np.asarray(gram, "float64")
    num_tasks = len(gram)
    for size in range(1, num_tasks + 1):
        for support in itertools.combinations(range(num_tasks), size):
            s = list(support)
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = gram[np.ix_(s, s)]
            kkt[:size, size] = -1.0
            kkt[size, :size] = 1.0
            try:
                solution = np.linalg.solve(kkt, np.eye(size + 1)[size])
            except np.linalg.LinAlgError:  # affinely dependent gradients
                continue
            weights = np.zeros(num_tasks)
            weights[s] = solution[:size]
            value = weights @ gram @ weights
            if weights.min() >= 0 and np.all(gram @ weights >= value * (1 - 1e-12)):
                return weights
    raise AssertionError("no optimal support")


def _duality_gap(gram, weights):
    """Frank-Wolfe gap `2 (wᵀ M w - min_t (M w)_t)` >= `f(w) - f(w*)`."""
    gram_w = gram @ weights
    return 2.0 * (weights @ gram_w - gram_w.min())


# Three close gradients and one strongly conflicting: the optimum is on a
# face (w_a = 0) and the Gram matrix has a condition number of ~5e4. Plain
# Frank-Wolfe is 8e-2 away from it after 250 iterations, 1e-1 after 25.
ILL_CONDITIONED = np.array([
    [1.0, 0.02, 0.0, 0.0],
    [1.0, -0.01, 0.02, 0.0],
    [1.0, 0.0, -0.02, 0.01],
    [-0.9, 0.3, 0.1, 0.05],
], "float32")


@pytest.mark.parametrize("max_iterations", [250, 25])
def test_ill_conditioned_four_tasks_reach_the_min_norm_point(max_iterations):
    # 25: the old default, which configs saved before may still hold.
    grads = ILL_CONDITIONED
    gram = (grads @ grads.T).astype("float64")  # the Gram matrix MGDA gets
    assert np.linalg.cond(gram) > 1e4
    optimum = _min_norm_by_enumeration(gram)
    assert optimum[0] == 0 and optimum.min() >= 0  # on a face
    weighting = built(MGDA(max_iterations=max_iterations), list("abcd"))
    weights = gram_weights(weighting, grads).astype("float64")
    np.testing.assert_allclose(weights, optimum, rtol=0, atol=1e-5)
    best = optimum @ gram @ optimum
    assert abs(weights @ gram @ weights - best) <= 1e-5 * best
    # The gap certifies it (up to the float32 rounding of the weights).
    assert _duality_gap(gram, weights) <= 1e-5 * (weights @ gram @ weights)


@pytest.mark.parametrize("seed", range(4))
def test_the_solver_stops_on_a_small_duality_gap(seed):
    rng = np.random.default_rng(seed)
    num_tasks = 3 + seed
    grads = rng.normal(size=(num_tasks, 5)) * rng.uniform(0.1, 10.0, size=(num_tasks, 1))
    if seed == 0:
        grads, num_tasks = ILL_CONDITIONED.astype("float64"), 4
    gram = grads @ grads.T
    gram = gram / np.max(np.diag(gram))  # as `gram_weights` hands it over
    weights = np.asarray(min_norm_weights(gram, np.ones(num_tasks, bool), 250))
    value = weights @ gram @ weights
    # The stopping rule: a gap of at most 1e-8 wᵀ M w, so every task's
    # directional derivative g_i·d is at least (1 - 5e-9) ‖d‖².
    assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert _duality_gap(gram, weights) <= 1e-8 * value
    assert np.min(gram @ weights) >= (1 - 5e-9) * value
    optimum = _min_norm_by_enumeration(gram)
    assert value <= optimum @ gram @ optimum * (1 + 1e-8)


def test_orthogonal_gradients_of_norms_1_and_2():
    weighting = built(MGDA())
    combined, weights = combine(weighting, [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    # min ‖w g1 + (1 - w) g2‖² = w² + 4 (1 - w)²  ->  w = 0.8.
    np.testing.assert_allclose(weights, [0.8, 0.2], rtol=1e-6)
    np.testing.assert_allclose(combined, [0.8, 0.4, 0.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(weighting.task_weights), [0.8, 0.2], rtol=1e-6)


def test_two_tasks_are_exact_without_iterations():
    grads = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
    weights = gram_weights(built(MGDA(max_iterations=0)), grads)
    np.testing.assert_allclose(weights, [0.8, 0.2], rtol=1e-6)


@pytest.mark.slow  # make test stays under 10 minutes; make test-slow runs it
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_tasks_match_a_brute_force_search(seed):
    grads = np.random.default_rng(seed).normal(size=(3, 4))
    gram = grads @ grads.T
    grid = _simplex_grid(3, 400)
    best = np.min(np.einsum("ni,ij,nj->n", grid, gram, grid))
    weights = gram_weights(built(MGDA(), ["a", "b", "c"]), grads).astype("float64")
    assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0, abs=1e-6)
    # The solver reaches the min-norm point: no grid point is better.
    assert weights @ gram @ weights <= best + 1e-6 * np.trace(gram)
    # The min-norm point makes every g_i·d at least ‖d‖² (a common descent
    # direction for all tasks).
    d = weights @ grads
    assert np.all(grads @ d >= d @ d - 1e-2 * np.trace(gram))


def test_the_solution_is_a_common_descent_direction():
    grads = np.array([
        [1.0, 0.2, 0.0, 0.0],
        [-0.4, 1.0, 0.3, 0.0],
        [0.1, -0.5, 1.0, 0.2],
        [0.3, 0.3, -0.2, 1.0],
    ])
    weights = gram_weights(built(MGDA(max_iterations=100), list("abcd")), grads)
    d = weights @ grads
    # KKT: g_i·d >= ‖d‖² for all i, with equality where w_i > 0.
    np.testing.assert_array_less(d @ d - 1e-4, grads @ d)
    np.testing.assert_allclose((grads @ d)[weights > 1e-3], d @ d, rtol=1e-3)


def test_normalizations_rescale_the_gradients_before_the_solver():
    grads = [[1.0, 0.0], [0.0, 2.0]]
    # l2: unit gradients -> (1/2, 1/2), applied to the raw gradients.
    weights = gram_weights(built(MGDA(normalization="l2")), grads)
    np.testing.assert_allclose(weights, [0.5, 0.5], rtol=1e-6)
    # loss: g / L with L = (1, 2) -> unit gradients again.
    weights = gram_weights(built(MGDA(normalization="loss")), grads, losses=[1.0, 2.0])
    np.testing.assert_allclose(weights, [0.5, 0.5], rtol=1e-6)
    # loss+: g / (L ‖g‖) with L = (1, 2): norms 1 and 1/2 -> (0.2, 0.8).
    weights = gram_weights(built(MGDA(normalization="loss+")), grads, losses=[1.0, 2.0])
    np.testing.assert_allclose(weights, [0.2, 0.8], rtol=1e-6)
    # Normalisers far apart stay finite (they are applied in logs).
    for normalization in ("loss", "loss+"):
        weighting = built(MGDA(normalization=normalization))
        weights = gram_weights(weighting, grads, losses=[1e-20, 1e20])
        np.testing.assert_allclose(weights, [0.0, 1.0], atol=1e-6)


def test_loss_normalizations_need_positive_losses_of_labelled_tasks():
    grads = [[1.0, 0.0], [0.0, 2.0]]
    for normalization in ("loss", "loss+"):
        # A labelled task with a loss of 0 or below and a nonzero gradient: the
        # step is not finite (training stops, with the hint), never a silent 0.
        for b in (0.0, -0.5):
            weighting = built(MGDA(normalization=normalization))
            weights = gram_weights(weighting, grads, losses=[1.0, b])
            assert np.all(np.isnan(weights)), (normalization, b, weights)
        hint = weighting.explain_nonfinite({"a": 1.0, "b": -0.5})
        assert "{'b': -0.5}" in hint and "normalization='l2'" in hint
        assert weighting.explain_nonfinite({"a": 1.0, "b": 0.5}) is None
        # Unlabelled (count 0), or labelled with a zero gradient: left out, finite.
        weights = gram_weights(weighting, grads, losses=[1.0, -0.5], counts=[4, 0])
        np.testing.assert_allclose(weights, [1.0, 0.0])
        weights = gram_weights(weighting, [[1.0, 0.0], [0.0, 0.0]], losses=[1.0, 0.0])
        np.testing.assert_allclose(weights, [1.0, 0.0])
    # The other normalizations do not use the losses.
    for normalization, expected in (("none", [0.8, 0.2]), ("l2", [0.5, 0.5])):
        weighting = built(MGDA(normalization=normalization))
        for b in (0.0, -0.5):
            weights = gram_weights(weighting, grads, losses=[1.0, b])
            np.testing.assert_allclose(weights, expected, rtol=1e-6)
        assert weighting.explain_nonfinite({"a": 1.0, "b": -0.5}) is None


def test_an_unlabelled_task_does_not_take_all_the_weight():
    # Without the mask, the zero gradient of "b" would be the min-norm point.
    grads = [[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]
    weighting = built(MGDA(), ["a", "b", "c"])
    combined, weights = combine(weighting, grads, losses=[1.0, 0.0, 1.0], counts=[4, 0, 4])
    np.testing.assert_allclose(weights, [0.8, 0.0, 0.2], rtol=1e-6)
    np.testing.assert_allclose(combined, [0.8, 0.4], rtol=1e-6)


def test_degenerate_gradients():
    # Identical gradients: equal weights 1/T, the update is their mean.
    check_degenerate_inputs(lambda: MGDA(), mean_multiple=1.0)


def test_config_round_trip():
    check_config_round_trip(MGDA(mode="representation", max_iterations=7, normalization="l2"))
    config = MGDA().get_config()
    assert {k: config[k] for k in ("mode", "max_iterations", "normalization")} == {
        "mode": "params", "max_iterations": 250, "normalization": "none",
    }
    # A config saved with the old default still loads.
    old = MGDA.from_config({**config, "max_iterations": 25})
    assert old.max_iterations == 25


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_iterations": -1}, r"argument `max_iterations`. Expected an integer >= 0. Received: max_iterations=-1"),
        ({"max_iterations": 2.5}, r"argument `max_iterations`. Expected an integer >= 0. Received: max_iterations=2.5"),
        ({"max_iterations": True}, r"argument `max_iterations`. Expected an integer >= 0. Received: max_iterations=True"),
        ({"normalization": "L2"}, r"argument `normalization`. Expected one of \('none', 'l2', 'loss', 'loss\+'\). Received: normalization='L2'"),
        ({"mode": "layers"}, r"argument `mode`.*Received: mode='layers'"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MGDA(**kwargs)


@pytest.mark.parametrize("mode", FIT_SAVE_LOAD_MODES)
def test_fit_save_and_load(mode, tmp_path):
    # Few iterations: tracing them into the train step is most of the time.
    model, history = check_fit_save_load(MGDA(mode=mode, max_iterations=5), tmp_path)
    # "a" has no label in the first step of each epoch: weight 0 there, and
    # the weights of a step sum to 1.
    assert history["weight_a"][0] <= 0.5 + 1e-6
    total = sum(np.asarray(history[f"weight_{t}"]) for t in "abs")
    np.testing.assert_allclose(total, 1.0, rtol=1e-5)
