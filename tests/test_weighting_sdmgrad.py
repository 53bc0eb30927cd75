"""Tests for `keras_mtl.weighting.sdmgrad.SDMGrad` (Xiao et al., NeurIPS 2023)."""

import numpy as np
import pytest

from keras_mtl.weighting.sdmgrad import SDMGrad

from gradient_method_checks import TASKS, check_config_round_trip, check_fit_save_load
from gradient_method_checks import combine, labelled_counts, numpy, sample_parts, unit_losses

# make test keeps this method's doctest and the registry-wide tests; this file
# runs in make test-slow, to keep make test under 10 minutes.
pytestmark = pytest.mark.slow


def _sdmgrad(names=("a", "b"), **kwargs):
    weighting = SDMGrad(**kwargs)
    weighting.build({n: () for n in names})
    return weighting


# --- an independent float64 reference ----------------------------------------------
def _project(v):
    """LibMTL's `euclidean_proj_simplex` (sort-based), in float64."""
    u = np.sort(v)[::-1]
    cssv = np.cumsum(u)
    rho = np.nonzero(u * np.arange(1, len(v) + 1) > (cssv - 1))[0][-1]
    theta = (cssv[rho] - 1) / (rho + 1.0)
    return np.maximum(v - theta, 0.0)


def _reference(steps, num_tasks, lamda=0.3, iterations=20, lr=5.0, momentum=0.5):
    """LibMTL's `SDMGrad.backward` in float64 with the module docstring's
    rule for unlabelled tasks and its `1e-8` relative to the largest
    entry squared. `steps`: `(zeta, xi1, xi2, labelled)`; returns per step
    `(update, weights, stored w)`."""
    w_stored = np.full(num_tasks, 1.0 / num_tasks)
    out = []
    for zeta, xi1, xi2, labelled in steps:
        on = np.asarray(labelled, bool)
        idx = np.flatnonzero(on)
        s = max(np.abs(xi1).max(), np.abs(xi2).max())
        gg = (xi1[idx] @ xi2[idx].T) / s**2
        c = np.mean(np.sqrt(np.maximum(np.diag(gg), 0.0)))
        gg = gg / (c**2 + 1e-8)
        gg_mean = gg.mean(axis=1)
        share = w_stored[idx].sum()  # 0: uniform (module docstring)
        w = w_stored[idx] / share if share > 0 else np.full(len(idx), 1.0 / len(idx))
        mass = 1.0 - w_stored[~on].sum()
        buf = None
        for _ in range(iterations):
            grad = gg @ w + lamda * gg_mean
            buf = grad if buf is None else momentum * buf + grad
            w = _project(w - lr * buf)
        w_stored = w_stored.copy()
        w_stored[idx] = mass * w
        weights = np.zeros(num_tasks)
        weights[idx] = (w + lamda / len(idx)) / (1 + lamda)
        out.append((weights @ zeta, weights, w_stored.copy()))
    return out


@pytest.mark.parametrize("kwargs", [{}, dict(lamda=0.0, iterations=3), dict(lamda=2.0)])
def test_steps_match_the_reference(kwargs):
    rng = np.random.default_rng(0)
    names = ("a", "b", "c")
    weighting = _sdmgrad(names, **kwargs)
    steps = []
    for k in range(4):
        labelled = [True, k != 2, True]  # "b" has no label at step 2
        arrays = [rng.normal(size=(3, 5)) * np.asarray(labelled)[:, None] for _ in range(3)]
        steps.append((*arrays, labelled))
    reference = _reference(steps, 3, **kwargs)
    for (zeta, xi1, xi2, labelled), (update, weights, stored) in zip(steps, reference):
        combined, got = weighting.combine_samples(
            sample_parts(zeta, xi1, xi2), unit_losses(names),
            labelled_counts(dict(zip(names, labelled))))
        np.testing.assert_allclose(numpy(got), weights, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(numpy(combined[0]), update, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(numpy(weighting.simplex_weights), stored, rtol=1e-4,
                                   atol=1e-6)


def test_an_unlabelled_task_keeps_its_stored_weight_and_gets_zero():
    weighting = _sdmgrad(("a", "b", "c"))
    rng = np.random.default_rng(1)
    weighting.combine_samples(sample_parts(*rng.normal(size=(3, 3, 4))), unit_losses("abc"))
    before = numpy(weighting.simplex_weights).copy()
    grads = rng.normal(size=(3, 3, 4))
    grads[:, 1] = 0.0
    _, weights = weighting.combine_samples(
        sample_parts(*grads), unit_losses("abc"), labelled_counts({"a": 1, "b": 0, "c": 1}))
    assert numpy(weights)[1] == 0.0
    np.testing.assert_allclose(numpy(weights).sum(), 1.0, rtol=1e-6)
    assert numpy(weighting.simplex_weights)[1] == before[1]
    np.testing.assert_allclose(numpy(weighting.simplex_weights).sum(), 1.0, rtol=1e-6)


def test_a_large_lamda_gives_the_mean_and_lamda_zero_mgda():
    grads = np.array([[1.0, 0.0], [0.0, 3.0]])
    _, weights = combine(_sdmgrad(lamda=1e6), grads)
    np.testing.assert_allclose(weights, 0.5, atol=1e-5)
    # λ = 0, a converging inner solver: MGDA's min-norm weights, ∝ 1 / ‖g‖².
    weighting = _sdmgrad(lamda=0.0, iterations=500, inner_learning_rate=0.1)
    _, weights = combine(weighting, grads)
    np.testing.assert_allclose(weights, [0.9, 0.1], atol=1e-4)


def test_the_weights_ignore_the_gradients_common_scale():
    rng = np.random.default_rng(2)
    arrays = rng.normal(size=(3, 3, 6))
    results = []
    for scale in (1e-20, 1.0, 1e20):
        weighting = _sdmgrad(("a", "b", "c"))
        combined, weights = weighting.combine_samples(sample_parts(*(arrays * scale)),
                                                      unit_losses("abc"))
        assert np.all(np.isfinite(numpy(combined[0])))
        results.append((numpy(combined[0]) / scale, numpy(weights)))
    for combined, weights in results:
        np.testing.assert_allclose(weights, results[1][1], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(combined, results[1][0], rtol=1e-3, atol=1e-5)


def test_deterministic_combine_uses_the_gradients_as_every_sample():
    grads = np.random.default_rng(3).normal(size=(2, 4))
    expected = _reference([(grads, grads, grads, [True, True])], 2)[0]
    combined, weights = combine(_sdmgrad(), grads)
    np.testing.assert_allclose(weights, expected[1], rtol=1e-4)
    np.testing.assert_allclose(combined, expected[0], rtol=1e-4, atol=1e-6)


def test_a_non_finite_gradient_gives_a_non_finite_step_and_keeps_the_state():
    weighting = _sdmgrad()
    grads = np.array([[1.0, np.nan], [0.0, 1.0]])
    combined, weights = combine(weighting, grads)
    assert not np.all(np.isfinite(combined)) and not np.all(np.isfinite(weights))
    np.testing.assert_array_equal(numpy(weighting.simplex_weights), [0.5, 0.5])
    assert np.all(np.isfinite(numpy(weighting.task_weights)))


def test_evaluation_changes_no_state():
    weighting = _sdmgrad()
    combine(weighting, [[1.0, 0.0], [0.0, 3.0]], training=False)
    np.testing.assert_array_equal(numpy(weighting.simplex_weights), [0.5, 0.5])


def test_config_round_trip():
    check_config_round_trip(SDMGrad(lamda=0.5, iterations=5, inner_learning_rate=10.0,
                                    momentum=0.0))
    config = SDMGrad().get_config()
    assert {k: config[k] for k in ("lamda", "iterations", "inner_learning_rate", "momentum",
                                   "mode")} == {
        "lamda": 0.3, "iterations": 20, "inner_learning_rate": 5.0, "momentum": 0.5,
        "mode": "params"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(lamda=-0.1), r"`lamda`. Expected a finite number >= 0"),
    (dict(iterations=0), r"`iterations`"),
    (dict(inner_learning_rate=0.0), r"`inner_learning_rate`. Expected a finite number > 0"),
    (dict(momentum=1.0), r"`momentum`. Expected a number in \[0, 1\)"),
    (dict(mode="representation"), r"`mode`. SDMGrad supports \('params',\)"),
])
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SDMGrad(**kwargs)


def test_fit_save_and_load(tmp_path):
    model, history = check_fit_save_load(SDMGrad(), tmp_path)
    stored = numpy(model.weighting.simplex_weights)
    assert np.isclose(stored.sum(), 1.0) and np.all(stored >= 0)
    assert not np.allclose(stored, 1 / len(TASKS))  # it moved
