"""Tests for `keras_mtl.weighting.moco.MoCo` (Fernando et al., ICLR 2023)."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.weighting.moco import MoCo
from keras_mtl.weighting.moco import project_to_simplex

from gradient_method_checks import TASKS, check_config_round_trip, check_fit_save_load
from gradient_method_checks import combine, numpy, tiny_model

# make test keeps this method's doctest and the registry-wide tests (non-finite
# steps, negative losses, numpy scalars); this file runs in make test-slow, to
# keep make test under 10 minutes.
pytestmark = pytest.mark.slow


def _moco(names=("a", "b"), num_params=2, **kwargs):
    """A MoCo built for `names` and `num_params` shared parameters."""
    weighting = MoCo(**kwargs)
    weighting.build_shared([np.zeros(num_params)])
    weighting.build({n: () for n in names})
    return weighting


def _state(weighting):
    variables = (weighting.tracked_gradients, weighting.lambdas, weighting.step)
    return [numpy(v).copy() for v in variables]


# --- an independent float64 reference ----------------------------------------------
def _brute_projection(values):
    """The projection onto the simplex by trying every support: on support
    `S` the nearest point of `{Σ w = 1}` is `v_S - (Σ v_S - 1) / |S|`; the
    projection is the nearest feasible (non-negative) one of those."""
    values = np.asarray(values, "float64")
    best, best_distance = None, np.inf
    for size in range(1, len(values) + 1):
        for support in itertools.combinations(range(len(values)), size):
            w = np.zeros_like(values)
            s = list(support)
            w[s] = values[s] - (values[s].sum() - 1.0) / size
            if np.all(w >= -1e-12):
                distance = np.sum((w - values) ** 2)
                if distance < best_distance:
                    best, best_distance = np.maximum(w, 0.0), distance
    return best


def _reference(steps, num_tasks, num_params, beta=0.5, beta_sigma=0.5, gamma=0.1,
               gamma_sigma=0.5, rho=0.0, normalization="none"):
    """Algorithm 1 in float64, written from the paper's update (with the
    module docstring's rule for unlabelled tasks). `steps`: a list of
    `(grads, losses, labelled)`. Returns per step `(combined, weights, Y, λ)`."""
    y = np.zeros((num_tasks, num_params))
    lam = np.full(num_tasks, 1.0 / num_tasks)
    k = 0
    out = []
    for grads, losses, labelled in steps:
        grads = np.asarray(grads, "float64").reshape(num_tasks, -1)
        labelled = np.asarray(labelled, bool)
        if not labelled.any():
            out.append((np.zeros(num_params), np.zeros(num_tasks), y.copy(), lam.copy()))
            continue
        k += 1
        b, c = beta / k**beta_sigma, gamma / k**gamma_sigma
        norms = np.linalg.norm(grads, axis=1, keepdims=True)
        units = np.divide(grads, norms, out=np.zeros_like(grads), where=norms > 0)
        h = {"none": grads, "l2": units,
             "l2_loss": units * np.asarray(losses, "float64")[:, None]}[normalization]
        s = np.flatnonzero(labelled)
        y[s] = y[s] - b * (y[s] - h[s])
        share, mass = lam[s].sum(), 1.0 - lam[~labelled].sum()
        mu = lam[s] / share if share > 0 else np.full(len(s), 1.0 / len(s))
        moved = mu - c * (y[s] @ y[s].T @ mu + rho * mu)
        mu = _brute_projection(moved)
        lam[s] = mass * mu
        weights = np.zeros(num_tasks)
        weights[s] = mu
        out.append((weights @ y, weights, y.copy(), lam.copy()))
    return out


# --- hand-computed -----------------------------------------------------------------
def test_two_steps_by_hand():
    weighting = _moco()  # beta 0.5, beta_sigma 0.5, gamma 0.1, gamma_sigma 0.5, rho 0
    # Step 1 (k = 1: beta_1 = 0.5, gamma_1 = 0.1), g_a = (1, 0), g_b = (0, 2):
    #   y_a = 0.5 g_a = (0.5, 0), y_b = 0.5 g_b = (0, 1);  Y Yᵀ = [[0.25, 0], [0, 1]]
    #   λ - 0.1 Y Yᵀ λ = (0.5 - 0.0125, 0.5 - 0.05) = (0.4875, 0.45), sum 0.9375
    #   projection: both stay positive, θ = (0.9375 - 1) / 2 = -0.03125
    #   λ = (0.51875, 0.48125);  d = 0.51875 (0.5, 0) + 0.48125 (0, 1)
    combined, weights = combine(weighting, [[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(weights, [0.51875, 0.48125], rtol=1e-6)
    np.testing.assert_allclose(combined, [0.259375, 0.48125], rtol=1e-6)
    np.testing.assert_allclose(numpy(weighting.tracked_gradients), [[0.5, 0.0], [0.0, 1.0]])
    assert int(numpy(weighting.step)) == 1
    # Step 2 (k = 2: beta_2 = 0.5 / sqrt 2 = 0.353553, gamma_2 = 0.1 / sqrt 2 = 0.0707107),
    # g_a = (1, 1), g_b = (-1, 1):
    #   y_a = (0.5, 0) - 0.353553 ((0.5, 0) - (1, 1)) = (0.676777, 0.353553)
    #   y_b = (0, 1)   - 0.353553 ((0, 1) - (-1, 1))  = (-0.353553, 1)
    #   Y Yᵀ = [[0.583027, 0.114277], [0.114277, 1.125]]
    #   Y Yᵀ λ = (0.357441, 0.600687);  λ - gamma_2 Y Yᵀ λ = (0.493475, 0.438775)
    #   θ = (0.93225 - 1) / 2 = -0.033875:  λ = (0.527350, 0.472650)
    #   d = 0.527350 y_a + 0.472650 y_b = (0.189791, 0.659101)
    combined, weights = combine(weighting, [[1.0, 1.0], [-1.0, 1.0]])
    np.testing.assert_allclose(weights, [0.527350, 0.472650], rtol=1e-5)
    np.testing.assert_allclose(combined, [0.189791, 0.659101], rtol=1e-5)
    np.testing.assert_allclose(
        numpy(weighting.tracked_gradients), [[0.676777, 0.353553], [-0.353553, 1.0]], rtol=1e-5
    )
    np.testing.assert_allclose(numpy(weighting.lambdas), weights, rtol=1e-6)
    # The same two steps from the float64 reference.
    steps = [([[1.0, 0.0], [0.0, 2.0]], [1.0, 1.0], [True, True]),
             ([[1.0, 1.0], [-1.0, 1.0]], [1.0, 1.0], [True, True])]
    expected_combined, expected_weights, _, _ = _reference(steps, 2, 2)[-1]
    np.testing.assert_allclose(combined, expected_combined, rtol=1e-5)
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-5)


def test_l2_loss_tracks_the_unit_gradient_times_the_loss():
    # LibMTL's normalisation: g_a = (3, 4) with loss 2 -> h_a = 2 (0.6, 0.8) = (1.2, 1.6);
    # g_b = (0, -5) with loss 0.5 -> h_b = (0, -0.5). After one step y = h / 2.
    weighting = _moco(normalization="l2_loss")
    combine(weighting, [[3.0, 4.0], [0.0, -5.0]], losses=[2.0, 0.5])
    np.testing.assert_allclose(
        numpy(weighting.tracked_gradients), [[0.6, 0.8], [0.0, -0.25]], rtol=1e-6
    )
    unit = _moco(normalization="l2")
    combine(unit, [[3.0, 4.0], [0.0, -5.0]], losses=[2.0, 0.5])
    np.testing.assert_allclose(numpy(unit.tracked_gradients), [[0.3, 0.4], [0.0, -0.5]], rtol=1e-6)


@pytest.mark.parametrize("normalization", ["none", "l2", "l2_loss"])
@pytest.mark.parametrize("rho", [0.0, 0.3])
def test_many_steps_match_the_reference(normalization, rho):
    rng = np.random.default_rng(3)
    kwargs = dict(beta=0.7, beta_sigma=0.3, gamma=0.8, gamma_sigma=0.2, rho=rho,
                  normalization=normalization)
    weighting = _moco(["a", "b", "c"], num_params=5, **kwargs)
    steps = []
    # Some steps leave a task out (count 0); one step leaves out all of them.
    patterns = [[1, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 0], [0, 1, 1], [1, 1, 1], [1, 1, 0]]
    for pattern in patterns:
        grads = rng.normal(size=(3, 5)) * np.array([[1.0], [3.0], [0.3]])
        losses = rng.uniform(0.2, 2.0, size=3)
        steps.append((grads, losses, np.asarray(pattern, bool)))
    expected = _reference(steps, 3, 5, **kwargs)
    for (grads, losses, labelled), (c, w, y, lam) in zip(steps, expected):
        counts = [4.0 if x else 0.0 for x in labelled]
        combined, weights = combine(weighting, grads, losses=losses, counts=counts)
        np.testing.assert_allclose(weights, w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(combined, c, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(numpy(weighting.tracked_gradients), y, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(numpy(weighting.lambdas), lam, rtol=1e-5, atol=1e-6)
        assert np.isclose(numpy(weighting.lambdas).sum(), 1.0, atol=1e-6)
    assert int(numpy(weighting.step)) == len(patterns) - 1  # the empty step does not count


# --- the simplex projection --------------------------------------------------------
def _atol(result):
    """Round-off of the projection: float64 (float32 on JAX without x64)."""
    return 1e-12 if result.dtype == np.float64 else 1e-6


def test_projection_known_cases():
    cases = [
        ([0.4875, 0.45], [0.51875, 0.48125]),
        ([2.0, 0.0], [1.0, 0.0]),
        ([0.5, 1.5, -1.0], [0.0, 1.0, 0.0]),
        ([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]),  # already on the simplex
        ([1.0, 1.0, 1.0], [1 / 3, 1 / 3, 1 / 3]),  # ties
        ([5.0], [1.0]),
        ([1e20, 1e20, -1e20], [0.5, 0.5, 0.0]),  # huge: shifted by the largest first
        ([-1e20, -3e20], [1.0, 0.0]),
    ]
    for values, expected in cases:
        got = numpy(project_to_simplex(np.asarray(values, "float64")))
        np.testing.assert_allclose(got, expected, atol=_atol(got), err_msg=str(values))


def test_projection_matches_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 7))
        values = rng.normal(size=n) * 10.0 ** rng.integers(-3, 3)
        active = rng.random(n) < 0.7
        active[rng.integers(n)] = True
        got = numpy(project_to_simplex(values, active))
        expected = np.zeros(n)
        expected[active] = _brute_projection(values[active])
        atol = _atol(got) * max(1.0, np.abs(values).max())
        np.testing.assert_allclose(got, expected, atol=atol, err_msg=f"{values}, {active}")
    # No active entry: zeros.
    got = numpy(project_to_simplex(np.array([1.0, 2.0]), np.array([False, False])))
    np.testing.assert_array_equal(got, [0.0, 0.0])


# --- unlabelled tasks, evaluation, non-finite steps --------------------------------
def test_an_unlabelled_task_does_not_move_and_gets_weight_zero():
    weighting = _moco(["a", "b", "c"])
    grads = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5]])
    combine(weighting, grads)
    tracked, lambdas, _ = _state(weighting)
    # "b" unlabelled, with a nonzero gradient all the same: left out.
    combined, weights = combine(weighting, 3.0 * grads, counts=[4, 0, 4])
    assert weights[1] == 0.0 and np.isclose(weights.sum(), 1.0)
    new_tracked, new_lambdas, step = _state(weighting)
    np.testing.assert_array_equal(new_tracked[1], tracked[1])
    assert new_lambdas[1] == lambdas[1]
    assert np.isclose(new_lambdas.sum(), 1.0) and int(step) == 2
    np.testing.assert_allclose(combined, weights @ new_tracked, rtol=1e-6)
    # The labelled tasks' share of λ is kept: their weights scaled by it.
    np.testing.assert_allclose(new_lambdas[[0, 2]], (1 - lambdas[1]) * weights[[0, 2]], rtol=1e-6)
    # If the labelled tasks have no share (λ on the unlabelled task's vertex),
    # they start from equal weights and λ stays where it was.
    weighting.lambdas.assign([0.0, 1.0, 0.0])
    combined, weights = combine(weighting, grads, counts=[4, 0, 4])
    assert weights[1] == 0.0 and np.isclose(weights.sum(), 1.0) and np.all(np.isfinite(combined))
    np.testing.assert_array_equal(numpy(weighting.lambdas), [0.0, 1.0, 0.0])


def test_no_labelled_task_changes_nothing():
    weighting = _moco()
    combine(weighting, [[1.0, 0.0], [0.0, 1.0]])
    before = _state(weighting)
    combined, weights = combine(weighting, [[5.0, 5.0], [5.0, 5.0]], losses=[0, 0], counts=[0, 0])
    np.testing.assert_array_equal(combined, [0.0, 0.0])
    np.testing.assert_array_equal(weights, [0.0, 0.0])
    for a, b in zip(before, _state(weighting)):
        np.testing.assert_array_equal(a, b)


def test_evaluation_changes_no_state():
    weighting = _moco()
    combine(weighting, [[1.0, 0.0], [0.0, 2.0]])
    before = _state(weighting) + [numpy(weighting.task_weights).copy()]
    evaluated = combine(weighting, [[1.0, 1.0], [-1.0, 1.0]], training=False)
    after = _state(weighting) + [numpy(weighting.task_weights).copy()]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    # ... and computes the step training would take.
    trained = combine(weighting, [[1.0, 1.0], [-1.0, 1.0]])
    for a, b in zip(evaluated, trained):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_l2_loss_needs_positive_losses_of_labelled_tasks():
    grads = [[1.0, 0.0], [0.0, 1.0]]
    for loss in (0.0, -0.5):
        weighting = _moco(normalization="l2_loss")
        before = _state(weighting)
        combined, weights = combine(weighting, grads, losses=[1.0, loss])
        assert np.all(np.isnan(combined)) and np.all(np.isnan(weights))
        for a, b in zip(before, _state(weighting)):  # the state is not poisoned
            np.testing.assert_array_equal(a, b)
    hint = weighting.explain_nonfinite({"a": 1.0, "b": -0.5})
    assert "{'b': -0.5}" in hint and "normalization='l2'" in hint
    assert weighting.explain_nonfinite({"a": 1.0, "b": 0.5}) is None
    # Unlabelled, or labelled with a zero gradient: no length needed, finite.
    combined, weights = combine(_moco(normalization="l2_loss"), grads, losses=[1.0, -0.5],
                                counts=[4, 0])
    np.testing.assert_allclose(weights, [1.0, 0.0])
    combined, _ = combine(_moco(normalization="l2_loss"), [[1.0, 0.0], [0.0, 0.0]],
                          losses=[1.0, -0.5])
    assert np.all(np.isfinite(combined))
    # The other normalisations take losses of any sign.
    for normalization in ("none", "l2"):
        weighting = _moco(normalization=normalization)
        combined, weights = combine(weighting, grads, losses=[1.0, -0.5])
        assert np.all(np.isfinite(combined)) and np.all(np.isfinite(weights))
        assert weighting.explain_nonfinite({"a": 1.0, "b": -0.5}) is None


def test_a_non_finite_gradient_gives_a_non_finite_step_and_keeps_the_state():
    weighting = _moco()
    combine(weighting, [[1.0, 0.0], [0.0, 1.0]])
    before = _state(weighting)
    combined, _ = combine(weighting, [[np.inf, 0.0], [0.0, 1.0]])
    assert not np.all(np.isfinite(combined))
    for a, b in zip(before, _state(weighting)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("normalization", ["l2", "l2_loss"])
def test_normalised_tracking_ignores_the_gradients_size(normalization):
    rng = np.random.default_rng(1)
    grads = rng.normal(size=(3, 6))
    reference = None
    for s in (1e-20, 1e-10, 1.0, 1e10, 1e20):
        weighting = _moco(["a", "b", "c"], num_params=6, normalization=normalization)
        for _ in range(3):
            combined, weights = combine(weighting, s * grads, losses=[0.5, 1.0, 2.0])
        assert np.all(np.isfinite(combined)) and np.all(np.isfinite(weights))
        if reference is None:
            reference = combined, weights
        np.testing.assert_allclose(combined, reference[0], rtol=1e-5, err_msg=f"scale {s}")
        np.testing.assert_allclose(weights, reference[1], rtol=1e-5, err_msg=f"scale {s}")


def test_raw_gradients_of_any_size_give_finite_steps():
    rng = np.random.default_rng(2)
    grads = rng.normal(size=(3, 6))
    for s in (1e-20, 1e-10, 1.0, 1e10, 1e20):
        weighting = _moco(["a", "b", "c"], num_params=6)
        for _ in range(3):
            combined, weights = combine(weighting, s * grads)
        assert np.all(np.isfinite(combined)) and np.all(np.isfinite(weights)), s
        assert np.isclose(weights.sum(), 1.0) and np.all(weights >= 0), s
        # The update is a convex combination of the tracked gradients.
        np.testing.assert_allclose(combined, weights @ numpy(weighting.tracked_gradients),
                                   rtol=1e-5)
    # Tiny gradients hardly move λ (γ is in units of 1 / gradient²); huge ones
    # push it to a vertex of the simplex.
    tiny = _moco(["a", "b", "c"], num_params=6)
    _, weights = combine(tiny, 1e-10 * grads)
    np.testing.assert_allclose(weights, 1 / 3, rtol=1e-6)
    huge = _moco(["a", "b", "c"], num_params=6)
    _, weights = combine(huge, 1e10 * grads)
    assert np.sum(weights > 0) == 1


def test_the_params_path_matches_combine():
    # `combine_parts` (the model's params mode: one tensor per variable)
    # stacks the parts and calls `combine`.
    rng = np.random.default_rng(4)
    whole, parts = (_moco(["a", "b", "c"], num_params=6) for _ in range(2))
    losses = {n: keras.ops.convert_to_tensor(1.0) for n in ("a", "b", "c")}
    for _ in range(3):
        grads = rng.normal(size=(3, 6)).astype("float32")
        expected = [numpy(x) for x in whole.combine(grads, losses)]
        split = [[keras.ops.reshape(g[:4], (2, 2)), keras.ops.convert_to_tensor(g[4:])]
                 for g in grads]
        combined, weights = parts.combine_parts(split, losses)
        assert [tuple(c.shape) for c in combined] == [(2, 2), (2,)]
        got = [np.concatenate([numpy(c).ravel() for c in combined]), numpy(weights)]
        for a, b in zip(expected, got):
            np.testing.assert_allclose(b, a, rtol=1e-6)
    for a, b in zip(_state(whole), _state(parts)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.function")
def test_traced_steps_match_eager_ones():
    rng = np.random.default_rng(4)
    eager, traced = (_moco(["a", "b", "c"], num_params=6) for _ in range(2))
    losses = {n: tf.constant(1.0) for n in ("a", "b", "c")}
    counts = {n: tf.constant(4.0) for n in ("a", "b", "c")}
    graph = tf.function(lambda g, c: traced.combine(g, losses, c, training=True))
    for step in range(4):
        grads = tf.constant(rng.normal(size=(3, 6)).astype("float32"))
        step_counts = {**counts, "b": tf.constant(0.0 if step == 2 else 4.0)}
        expected = [numpy(x) for x in eager.combine(grads, losses, step_counts)]
        got = [numpy(x) for x in graph(grads, step_counts)]
        for a, b in zip(expected, got):
            np.testing.assert_allclose(b, a, rtol=1e-6)
    for a, b in zip(_state(eager), _state(traced)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_the_state_round_trips_through_state_arrays():
    rng = np.random.default_rng(5)
    weighting = _moco(["a", "b"], num_params=3)
    for _ in range(2):
        combine(weighting, rng.normal(size=(2, 3)))
    restored = _moco(["a", "b"], num_params=3)
    restored.load_state(weighting.state_arrays())
    grads = rng.normal(size=(2, 3))
    for a, b in zip(combine(weighting, grads), combine(restored, grads)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"Cannot load the state"):
        _moco(["a", "b"], num_params=4).load_state(weighting.state_arrays())


# --- configuration and building ----------------------------------------------------
def test_config_round_trip():
    check_config_round_trip(MoCo(beta=0.9, beta_sigma=0.0, gamma=0.5, gamma_sigma=0.25,
                                 rho=0.1, normalization="l2_loss"))
    config = MoCo().get_config()
    assert {k: config[k] for k in ("beta", "beta_sigma", "gamma", "gamma_sigma", "rho",
                                   "normalization", "mode")} == {
        "beta": 0.5, "beta_sigma": 0.5, "gamma": 0.1, "gamma_sigma": 0.5, "rho": 0.0,
        "normalization": "none", "mode": "params",
    }


@pytest.mark.parametrize("kwargs, match", [
    (dict(beta=0.0), r"`beta`. Expected a float in \(0, 1\]. Received: beta=0.0"),
    (dict(beta=1.5), r"`beta`. Expected a float in \(0, 1\]. Received: beta=1.5"),
    (dict(beta=True), r"`beta`"),
    (dict(beta_sigma=-0.5), r"`beta_sigma`. Expected a finite number >= 0"),
    (dict(gamma=-0.1), r"`gamma`. Expected a finite number >= 0"),
    (dict(gamma=float("nan")), r"`gamma`"),
    (dict(gamma_sigma=float("inf")), r"`gamma_sigma`"),
    (dict(rho=-1.0), r"`rho`. Expected a finite number >= 0"),
    (dict(rho="0.1"), r"`rho`"),
    (dict(normalization="loss"), r"`normalization`. Expected one of \('none', 'l2_loss', 'l2'\)"),
    (dict(mode="representation"), r"`mode`. MoCo supports \('params',\)"),
])
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MoCo(**kwargs)


def test_the_tracked_gradients_need_the_shared_variables():
    with pytest.raises(ValueError, match=r"needs its shared variables before `build`"):
        MoCo().build({"a": (), "b": ()})
    with pytest.raises(ValueError, match=r"MoCo keeps state per .*no trainable variables yet"):
        MoCo().build_shared([])
    weighting = _moco(num_params=3)
    weighting.build_shared([np.zeros((1, 3))])  # the same size: fine
    with pytest.raises(ValueError, match=r"This MoCo holds state for 3 .*this trunk has 4"):
        weighting.build_shared([np.zeros(4)])
    with pytest.raises(ValueError, match=r"received gradients of 2"):
        combine(weighting, [[1.0, 0.0], [0.0, 1.0]])


def test_compile_sizes_the_state_by_the_trunk():
    model = tiny_model(TASKS)
    weighting = MoCo()
    model.compile(optimizer="adam", weighting=weighting)
    size = sum(int(np.prod(v.shape)) for v in model.trunk.trainable_variables)
    assert weighting.tracked_gradients.shape == (len(TASKS), size)
    np.testing.assert_allclose(numpy(weighting.lambdas), 1 / len(TASKS))
    model.compile(optimizer="adam", weighting=weighting)  # the same trunk: fine
    other = tiny_model(TASKS)
    other.trunk.add_weight(shape=(1,), name="extra")
    with pytest.raises(ValueError, match=r"holds state for \d+ .*a new instance"):
        weighting.build_shared(other.trunk.trainable_variables)


def test_fit_save_and_load(tmp_path):
    # Params mode, the only one (no `FIT_SAVE_LOAD_MODES`, as GradDrop has
    # only its representation mode).
    model, history = check_fit_save_load(MoCo(), tmp_path)
    weighting = model.weighting
    assert int(numpy(weighting.step)) == 4  # 2 epochs of 2 steps
    lambdas = numpy(weighting.lambdas)
    assert np.isclose(lambdas.sum(), 1.0) and np.all(lambdas >= 0)
    tracked = numpy(weighting.tracked_gradients)
    assert np.all(np.isfinite(tracked)) and np.all(np.any(tracked != 0, axis=1))
    # The reported weights are on the simplex of the step's tasks.
    for epoch in range(2):
        total = sum(history[f"weight_{t.name}"][epoch] for t in TASKS)
        assert 0.0 < total <= 1.0 + 1e-5


@pytest.mark.slow
def test_fit_save_and_load_with_the_loss_normalisation(tmp_path):
    model, _ = check_fit_save_load(MoCo(normalization="l2_loss", rho=0.1), tmp_path)
    assert int(numpy(model.weighting.step)) == 4


def test_compiled_model_deserialises_the_method():
    model = tiny_model(TASKS)
    model.compile(optimizer="adam", weighting="moco")
    assert isinstance(model.weighting, MoCo)
    assert keras.saving.get_registered_object("keras_mtl>MoCo") is MoCo


def _closeness(y_true, y_pred):
    """A loss in [-1, 0): a labelled task's loss like any other."""
    return -keras.ops.mean(keras.ops.exp(-keras.ops.square(y_true - y_pred)), axis=-1)


def test_negative_losses_train_and_the_loss_normalisation_says_why_it_cannot():
    from keras_mtl import tasks as T

    from conftest import random_images

    tasks = [T.Regression("near", loss=_closeness), T.BinaryClassification("b")]
    rng = np.random.default_rng(1)
    x = random_images(16) / 255.0
    y = {"near": np.full((16, 1), 0.8, "float32"),
         "b": rng.integers(0, 2, (16, 1)).astype("float32")}
    keras.utils.set_random_seed(2)
    model = tiny_model(tasks)
    model.compile(optimizer=keras.optimizers.SGD(0.05), weighting=MoCo())
    before = model.evaluate(x, y, verbose=0, return_dict=True)["near_loss"]
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0).history
    after = model.evaluate(x, y, verbose=0, return_dict=True)["near_loss"]
    assert before < 0 and np.all(np.isfinite(history["loss"])) and after < before
    model = tiny_model(tasks)
    model.compile(optimizer=keras.optimizers.SGD(0.05), weighting=MoCo(normalization="l2_loss"))
    with pytest.raises(FloatingPointError, match=r"MoCo\(normalization='l2_loss'\).*'near'"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
