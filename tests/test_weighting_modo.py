"""Tests for `keras_mtl.weighting.modo.MoDo` (Chen et al., NeurIPS 2023)."""

import numpy as np
import pytest

from keras_mtl.weighting.modo import MoDo

from gradient_method_checks import TASKS, check_config_round_trip, check_fit_save_load
from gradient_method_checks import combine, labelled_counts, numpy, sample_parts, unit_losses

# make test keeps this method's doctest and the registry-wide tests; this file
# runs in make test-slow, to keep make test under 10 minutes.
pytestmark = pytest.mark.slow


def _modo(names=("a", "b"), **kwargs):
    weighting = MoDo(**kwargs)
    weighting.build({n: () for n in names})
    return weighting


def _project(v):
    """LibMTL's `_projection2simplex`, in float64."""
    m = len(v)
    ordered = np.sort(v)[::-1]
    tmax_f = (v.sum() - 1.0) / m
    partial = 0.0
    for i in range(m - 1):
        partial += ordered[i]
        tmax = (partial - 1) / (i + 1.0)
        if tmax > ordered[i + 1]:
            tmax_f = tmax
            break
    return np.maximum(v - tmax_f, 0.0)


def _reference(steps, num_tasks, gamma=1e-3, rho=0.1):
    """LibMTL's `MoDo.backward` in float64, with the module docstring's rule
    for unlabelled tasks. `steps`: `(g1, g2, g3, labelled)`; per step
    `(update, weights, λ)`."""
    lam = np.full(num_tasks, 1.0 / num_tasks)
    out = []
    for g1, g2, g3, labelled in steps:
        on = np.asarray(labelled, bool)
        idx = np.flatnonzero(on)
        share = lam[idx].sum()  # 0: uniform (MoCo's module docstring)
        mu = lam[idx] / share if share > 0 else np.full(len(idx), 1.0 / len(idx))
        mass = 1.0 - lam[~on].sum()
        mu = _project(mu - gamma * (g1[idx] @ (g2[idx].T @ mu) + rho * mu))
        lam = lam.copy()
        lam[idx] = mass * mu
        weights = np.zeros(num_tasks)
        weights[idx] = mu
        out.append((weights @ g3, weights, lam.copy()))
    return out


@pytest.mark.parametrize("gamma, rho", [(1e-3, 0.1), (0.5, 0.0), (0.05, 1.0)])
def test_steps_match_the_reference(gamma, rho):
    rng = np.random.default_rng(0)
    names = ("a", "b", "c")
    weighting = _modo(names, gamma=gamma, rho=rho)
    steps = []
    for k in range(5):
        labelled = [True, True, k != 3]
        arrays = [rng.normal(size=(3, 4)) * np.asarray(labelled)[:, None] for _ in range(3)]
        steps.append((*arrays, labelled))
    for (g1, g2, g3, labelled), (update, weights, lam) in zip(
            steps, _reference(steps, 3, gamma, rho)):
        combined, got = weighting.combine_samples(
            sample_parts(g1, g2, g3), unit_losses(names),
            labelled_counts(dict(zip(names, labelled))))
        np.testing.assert_allclose(numpy(got), weights, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(numpy(combined[0]), update, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(numpy(weighting.lambdas), lam, rtol=1e-5, atol=1e-7)


def test_the_update_is_the_third_sample_and_the_weights_come_from_the_first_two():
    weighting = _modo(gamma=1.0, rho=0.0)
    first = [[1.0, 0.0], [0.0, 0.0]]
    second = [[1.0, 0.0], [0.0, 0.0]]  # G1 G2ᵀ λ = (0.5, 0): "a" loses weight
    third = [[0.0, 2.0], [4.0, 0.0]]
    combined, weights = weighting.combine_samples(sample_parts(first, second, third),
                                                  unit_losses("ab"))
    np.testing.assert_allclose(numpy(weights), [0.25, 0.75], rtol=1e-6)
    np.testing.assert_allclose(numpy(combined[0]), [3.0, 0.5], rtol=1e-6)


def test_an_unlabelled_task_keeps_its_lambda_and_gets_zero():
    weighting = _modo(("a", "b", "c"), gamma=0.5)
    rng = np.random.default_rng(1)
    weighting.combine_samples(sample_parts(*rng.normal(size=(3, 3, 4))), unit_losses("abc"))
    before = numpy(weighting.lambdas).copy()
    grads = rng.normal(size=(3, 3, 4))
    grads[:, 0] = 0.0
    _, weights = weighting.combine_samples(
        sample_parts(*grads), unit_losses("abc"), labelled_counts({"a": 0, "b": 1, "c": 1}))
    assert numpy(weights)[0] == 0.0
    np.testing.assert_allclose(numpy(weights).sum(), 1.0, rtol=1e-6)
    assert numpy(weighting.lambdas)[0] == before[0]


def test_gradients_of_any_size_give_finite_weights():
    grads = np.random.default_rng(2).normal(size=(3, 3, 6))
    for scale in (1e-20, 1e20):
        combined, weights = _modo(("a", "b", "c"), gamma=0.1).combine_samples(
            sample_parts(*(grads * scale)), unit_losses("abc"))
        assert np.all(np.isfinite(numpy(weights))) and np.all(np.isfinite(numpy(combined[0])))
        np.testing.assert_allclose(numpy(weights).sum(), 1.0, rtol=1e-5)
    # Tiny gradients barely move λ (gamma is in units of 1 / gradient²).
    _, weights = _modo(("a", "b", "c"), gamma=0.1).combine_samples(
        sample_parts(*(grads * 1e-20)), unit_losses("abc"))
    np.testing.assert_allclose(numpy(weights), 1 / 3, rtol=1e-4)


def test_a_non_finite_gradient_gives_a_non_finite_step_and_keeps_the_state():
    weighting = _modo()
    combined, weights = combine(weighting, [[1.0, np.nan], [0.0, 1.0]])
    assert not np.all(np.isfinite(combined))
    np.testing.assert_array_equal(numpy(weighting.lambdas), [0.5, 0.5])


def test_evaluation_changes_no_state():
    weighting = _modo(gamma=1.0)
    combine(weighting, [[1.0, 0.0], [0.0, 3.0]], training=False)
    np.testing.assert_array_equal(numpy(weighting.lambdas), [0.5, 0.5])


def test_config_round_trip():
    check_config_round_trip(MoDo(gamma=0.01, rho=0.5))
    config = MoDo().get_config()
    assert {k: config[k] for k in ("gamma", "rho", "mode")} == {
        "gamma": 1e-3, "rho": 0.1, "mode": "params"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(gamma=-1.0), r"`gamma`. Expected a finite number >= 0"),
    (dict(rho=float("nan")), r"`rho`"),
    (dict(mode="representation"), r"`mode`. MoDo supports \('params',\)"),
])
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MoDo(**kwargs)


def test_fit_save_and_load(tmp_path):
    model, _ = check_fit_save_load(MoDo(gamma=0.1), tmp_path)
    lambdas = numpy(model.weighting.lambdas)
    assert np.isclose(lambdas.sum(), 1.0) and np.all(lambdas >= 0)
    assert not np.allclose(lambdas, 1 / len(TASKS))
