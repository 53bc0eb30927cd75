"""Tests for `keras_mtl.weighting.excess_mtl.ExcessMTL` (He et al., ICML 2024)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import tasks as T
from keras_mtl import weighting as W
from keras_mtl.weighting.excess_mtl import ExcessMTL

from conftest import random_images, random_labels, tiny_model
from gram_method_checks import combiners, degenerate_cases
from gradient_method_checks import FIT_SAVE_LOAD_MODES
from gradient_method_checks import built, check_config_round_trip, check_fit_save_load
from gradient_method_checks import combine, numpy

# make test keeps this method's doctest and the registry-wide tests (non-finite
# steps, negative losses, numpy scalars); this file runs in make test-slow, to
# keep make test under 10 minutes.
pytestmark = pytest.mark.slow

#: How `combine` runs: eagerly, and traced once by `tf.function` (as in
#: `fit`) on TensorFlow. The file also runs on JAX (its model tests train
#: with the JAX step).
HOWS = ["eager", "graph"] if keras.backend.backend() == "tensorflow" else ["eager"]


def _official(steps, eta, eps=1e-7):
    """The official code's `backward` (LibMTL's ExcessMTL, every task
    labelled), transcribed in float64: `steps` is a list of `(T, P)`
    gradients; returns the combined update and the weights of each step."""
    weights, sums, initial = np.ones(len(steps[0])), None, None
    out = []
    for grads in steps:
        grads = np.asarray(grads, "float64")
        sums = grads**2 if sums is None else sums + grads**2
        risks = np.array([g * (1 / np.sqrt(s + eps)) @ g for g, s in zip(grads, sums)])
        if initial is None:  # the official `first_epoch` flag: the first step
            initial = risks
        else:
            weights = weights * np.exp(risks / initial * eta)
            weights = weights / weights.sum() * len(weights)
        out.append((weights @ grads, weights.copy()))
    return out


def state(weighting):
    return {
        "sums": numpy(weighting.squared_gradient_sums),
        "weights": numpy(weighting.robust_weights),
        "initial": numpy(weighting.initial_risks),
        "steps": numpy(weighting.initial_steps),
        "task_weights": numpy(weighting.task_weights),
    }


def test_two_steps_by_hand():
    weighting = built(ExcessMTL(robust_step_size=1.0))
    # Step 1: S_a = [9, 16], r_a = 9/3 + 16/4 = 7; S_b = [1, 4], r_b = 1/1 + 4/2 = 3
    # (epsilon = 1e-7 moves them by ~1e-8 relative). The baselines are these
    # risks, and no weight moves: the update is g_a + g_b.
    combined, weights = combine(weighting, [[3.0, 4.0], [1.0, 2.0]])
    np.testing.assert_allclose(weights, [1.0, 1.0])
    np.testing.assert_allclose(combined, [4.0, 6.0], rtol=1e-6)
    np.testing.assert_allclose(numpy(weighting.squared_gradient_sums), [[9, 16], [1, 4]])
    np.testing.assert_allclose(numpy(weighting.initial_risks), [7.0, 3.0], rtol=1e-6)
    np.testing.assert_array_equal(numpy(weighting.initial_steps), [1.0, 1.0])
    np.testing.assert_array_equal(numpy(weighting.robust_weights), [1.0, 1.0])
    # Step 2: S_a = [9, 25], r_a = 0 + 9/5 = 1.8, r_a / b_a = 1.8 / 7;
    # S_b = [10, 4], r_b = 9/sqrt(10) + 0, r_b / b_b = 3/sqrt(10).
    # w ∝ exp(ratio) (step size 1), summing to 2: w_a = 2 / (1 + e^(r_b/b_b - r_a/b_a)).
    combined, weights = combine(weighting, [[0.0, 3.0], [3.0, 0.0]])
    w_a = 2.0 / (1.0 + math.exp(3.0 / math.sqrt(10.0) - 1.8 / 7.0))  # 0.66739
    w_b = 2.0 - w_a
    np.testing.assert_allclose(weights, [w_a, w_b], rtol=1e-5)
    np.testing.assert_allclose(combined, [3.0 * w_b, 3.0 * w_a], rtol=1e-5)
    np.testing.assert_allclose(numpy(weighting.squared_gradient_sums), [[9, 25], [10, 4]])
    np.testing.assert_allclose(numpy(weighting.initial_risks), [7.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(numpy(weighting.robust_weights), [w_a, w_b], rtol=1e-5)
    np.testing.assert_allclose(numpy(weighting.task_weights), [w_a, w_b], rtol=1e-5)
    # ... and the official code's arithmetic gives the same.
    official = _official([[[3, 4], [1, 2]], [[0, 3], [3, 0]]], eta=1.0)
    np.testing.assert_allclose(weights, official[1][1], rtol=1e-5)


@pytest.mark.parametrize("how", HOWS)
def test_many_steps_match_the_official_code(how):
    rng = np.random.default_rng(4)
    steps = [rng.normal(size=(3, 7)) * rng.uniform(0.5, 2.0, size=(3, 1)) for _ in range(6)]
    weighting = built(ExcessMTL(robust_step_size=0.5), ["a", "b", "c"])
    weighting.build_accumulators(7)  # before tracing
    run = combiners(weighting)[how]
    for (expected_combined, expected_weights), grads in zip(_official(steps, eta=0.5), steps):
        combined, weights = run(grads, [1.0, 1.0, 1.0], [4.0, 4.0, 4.0])
        np.testing.assert_allclose(weights, expected_weights, rtol=1e-5)
        np.testing.assert_allclose(combined, expected_combined, rtol=1e-4, atol=1e-5)
    assert not np.allclose(weights, 1.0)  # the weights moved


def test_warmup_steps_average_the_baseline():
    rng = np.random.default_rng(1)
    steps = [rng.normal(size=(2, 4)) for _ in range(3)]
    weighting = built(ExcessMTL(robust_step_size=1.0, warmup_steps=2))
    sums = np.zeros((2, 4))
    risks = []
    for grads in steps:
        sums = sums + grads**2
        risks.append(np.sum(grads**2 / np.sqrt(sums + 1e-7), axis=1))
    for grads in steps[:2]:  # no weight moves during the warm-up
        _, weights = combine(weighting, grads)
        np.testing.assert_array_equal(weights, [1.0, 1.0])
    baseline = (risks[0] + risks[1]) / 2
    np.testing.assert_allclose(numpy(weighting.initial_risks), baseline, rtol=1e-5)
    np.testing.assert_array_equal(numpy(weighting.initial_steps), [2.0, 2.0])
    _, weights = combine(weighting, steps[2])
    expected = np.exp(risks[2] / baseline)
    np.testing.assert_allclose(weights, 2 * expected / expected.sum(), rtol=1e-5)
    np.testing.assert_allclose(numpy(weighting.initial_risks), baseline, rtol=1e-5)  # kept


def test_an_unlabelled_task_keeps_its_state_and_gets_weight_zero():
    weighting = built(ExcessMTL(robust_step_size=1.0), ["a", "b", "c"])
    rng = np.random.default_rng(2)
    first, second, third = (rng.normal(size=(3, 5)) for _ in range(3))
    combine(weighting, first)
    combine(weighting, second)  # the weights move: w = [.., .., ..], sum 3
    before = state(weighting)
    assert not np.allclose(before["weights"], 1.0)
    # "b" without labels, with a nonzero gradient all the same.
    combined, weights = combine(weighting, third, losses=[1.0, 0.0, 1.0], counts=[4, 0, 4])
    after = state(weighting)
    assert weights[1] == 0.0 and after["task_weights"][1] == 0.0
    np.testing.assert_array_equal(after["sums"][1], before["sums"][1])
    assert after["weights"][1] == before["weights"][1]  # its stored weight is kept
    assert after["initial"][1] == before["initial"][1] and after["steps"][1] == 1.0
    # "a" and "c": the multiplicative step, renormalised to the sum they had.
    sums = before["sums"] + third**2
    risks = np.sum(third**2 / np.sqrt(sums + 1e-7), axis=1)
    moved = before["weights"] * np.exp(risks / before["initial"])
    moved = moved[[0, 2]] / moved[[0, 2]].sum() * before["weights"][[0, 2]].sum()
    np.testing.assert_allclose(weights[[0, 2]], moved, rtol=1e-5)
    np.testing.assert_allclose(after["weights"].sum(), 3.0, rtol=1e-6)
    np.testing.assert_allclose(combined, weights[0] * third[0] + weights[2] * third[2], rtol=1e-5)


def test_a_task_first_labelled_later_gets_its_baseline_then():
    weighting = built(ExcessMTL(robust_step_size=1.0))
    combine(weighting, [[1.0, 2.0], [0.0, 0.0]], counts=[4, 0])
    np.testing.assert_array_equal(numpy(weighting.initial_steps), [1.0, 0.0])
    np.testing.assert_array_equal(numpy(weighting.squared_gradient_sums)[1], [0.0, 0.0])
    # "b"'s first labelled step: its baseline (9/3 = 3); "a" moves alone
    # (b_a = 1/1 + 4/2 = 3, now S_a = [2, 4] and r_a = 1/sqrt(2)),
    # renormalised over both to 2: "b"'s factor is 1.
    _, weights = combine(weighting, [[1.0, 0.0], [3.0, 0.0]])
    np.testing.assert_allclose(numpy(weighting.initial_risks), [3.0, 3.0], rtol=1e-6)
    ratio_a = (1 / math.sqrt(2.0)) / 3.0
    w_a = 2 * math.exp(ratio_a) / (math.exp(ratio_a) + 1)
    np.testing.assert_allclose(weights, [w_a, 2 - w_a], rtol=1e-5)


def test_a_zero_first_gradient_sets_no_baseline():
    # The official code divides by a first risk of 0 (inf / NaN weights).
    weighting = built(ExcessMTL(robust_step_size=1.0))
    combine(weighting, [[1.0, 1.0], [0.0, 0.0]])  # "b" labelled, zero gradient
    np.testing.assert_array_equal(numpy(weighting.initial_steps), [1.0, 0.0])
    _, weights = combine(weighting, [[1.0, 1.0], [0.0, 2.0]])  # now its baseline
    assert np.all(np.isfinite(weights))
    np.testing.assert_array_equal(numpy(weighting.initial_steps), [1.0, 1.0])
    np.testing.assert_allclose(numpy(weighting.initial_risks)[1], 2.0, rtol=1e-6)


def test_evaluation_changes_no_state():
    weighting = built(ExcessMTL(robust_step_size=1.0), ["a", "b", "c"])
    rng = np.random.default_rng(5)
    for _ in range(2):
        combine(weighting, rng.normal(size=(3, 4)))
    grads = rng.normal(size=(3, 4))
    before = state(weighting)
    combined, weights = combine(weighting, grads, training=False)
    for key, value in state(weighting).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    trained_combined, trained_weights = combine(weighting, grads)  # the same step, trained
    np.testing.assert_array_equal(weights, trained_weights)
    np.testing.assert_array_equal(combined, trained_combined)


def test_step_size_zero_is_equal_weighting():
    weighting = built(ExcessMTL(robust_step_size=0.0))
    rng = np.random.default_rng(6)
    for _ in range(3):
        grads = rng.normal(size=(2, 3))
        combined, weights = combine(weighting, grads)
        np.testing.assert_array_equal(weights, [1.0, 1.0])
        np.testing.assert_allclose(combined, grads.sum(axis=0), rtol=1e-6)


def test_degenerate_gradients_give_finite_results():
    for name, (grads, losses, counts) in degenerate_cases().items():
        for how in HOWS:
            weighting = built(ExcessMTL(robust_step_size=1.0), ["a", "b", "c"])
            weighting.build_accumulators(6)
            run = combiners(weighting)[how]
            for _ in range(3):  # the weights move from the second step
                combined, weights = run(grads, losses, counts)
                where = f"{name} ({how}): weights {weights}"
                assert np.all(np.isfinite(combined)) and np.all(np.isfinite(weights)), where
                assert np.all(weights[np.asarray(counts) == 0] == 0.0), where
            for key, value in state(weighting).items():
                assert np.all(np.isfinite(value)), (name, how, key)
            np.testing.assert_allclose(numpy(weighting.robust_weights).sum(), 3.0, rtol=1e-5)


def test_a_huge_risk_ratio_gives_all_weight_to_one_task():
    # A first gradient of 1e-6 (risk ~1e-9) then 1: r / b ~ 1e9. The
    # official `exp` overflows (inf / inf = NaN); the log-space step is finite.
    weighting = built(ExcessMTL(robust_step_size=1.0))
    combine(weighting, [[1e-6, 0.0], [1.0, 0.0]])
    _, weights = combine(weighting, [[1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(weights, [2.0, 0.0], atol=1e-6)


def test_without_epsilon_the_weights_do_not_depend_on_the_gradients_scale():
    rng = np.random.default_rng(7)
    steps = [rng.normal(size=(2, 5)) for _ in range(3)]
    results = []
    for scale in (1e-10, 1.0, 1e10):
        weighting = built(ExcessMTL(robust_step_size=1.0, epsilon=1e-38))
        results.append([combine(weighting, scale * g)[1] for g in steps])
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5)
    np.testing.assert_allclose(results[2], results[1], rtol=1e-5)
    assert not np.allclose(results[1][-1], 1.0)


def test_representation_mode_sums_the_gradients_over_the_batch():
    # (T, batch, features): the risk is that of the batch-summed gradient,
    # the combination weighs every example's gradient.
    weighting = built(ExcessMTL(mode="representation", robust_step_size=1.0))
    first = np.array([[[1.0, 1.0], [2.0, 3.0]], [[1.0, 0.0], [0.0, 2.0]]])  # sums [3,4], [1,2]
    second = np.array([[[0.0, 1.0], [0.0, 2.0]], [[1.0, 0.0], [2.0, 0.0]]])  # [0,3], [3,0]
    combine(weighting, first)
    np.testing.assert_allclose(numpy(weighting.squared_gradient_sums), [[9, 16], [1, 4]])
    combined, weights = combine(weighting, second)
    hand = built(ExcessMTL(robust_step_size=1.0))  # the two-step case above
    combine(hand, first.sum(axis=1))
    _, expected = combine(hand, second.sum(axis=1))
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    np.testing.assert_allclose(combined, np.tensordot(weights, second, axes=1), rtol=1e-6)


def test_gradients_of_another_size_are_refused():
    weighting = built(ExcessMTL())
    weighting.build_accumulators(3)
    with pytest.raises(ValueError, match=r"argument `grads`.*of 3 entries per task.*of 4:"):
        combine(weighting, np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"squared gradients of 3 entries.*now has 5"):
        weighting.build_accumulators(5)


def test_the_state_round_trips_through_state_arrays():
    weighting = built(ExcessMTL(robust_step_size=1.0))
    rng = np.random.default_rng(8)
    for _ in range(3):
        combine(weighting, rng.normal(size=(2, 4)))
    arrays = weighting.state_arrays()
    restored = built(ExcessMTL(robust_step_size=1.0))  # not sized: the saved S sizes it
    restored.load_state(arrays)
    for key, value in state(restored).items():
        np.testing.assert_array_equal(value, state(weighting)[key], err_msg=key)
    grads = rng.normal(size=(2, 4))
    np.testing.assert_array_equal(combine(restored, grads)[1], combine(weighting, grads)[1])
    with pytest.raises(ValueError, match="Cannot load the state"):
        built(ExcessMTL()).load_state(arrays[:-2])


def test_config_and_registry():
    check_config_round_trip(ExcessMTL(mode="representation", robust_step_size=0.5,
                                      epsilon=1e-8, warmup_steps=3))
    config = ExcessMTL().get_config()
    expected = {"mode": "params", "robust_step_size": 0.01, "epsilon": 1e-7, "warmup_steps": 1}
    assert {k: config[k] for k in expected} == expected
    assert type(W.get("excess_mtl")) is ExcessMTL
    assert type(W.get("ExcessMTL")) is ExcessMTL
    assert ExcessMTL.supported_modes == ("params", "representation")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"robust_step_size": -0.1},
         r"argument `robust_step_size`. Expected a float >= 0. Received: robust_step_size=-0.1"),
        ({"robust_step_size": float("nan")}, r"argument `robust_step_size`.*nan"),
        ({"robust_step_size": True}, r"`robust_step_size`.*Received: robust_step_size=True"),
        ({"robust_step_size": "0.1"}, r"argument `robust_step_size`.*robust_step_size='0.1'"),
        ({"epsilon": 0.0}, r"argument `epsilon`. Expected a float > 0. Received: epsilon=0.0"),
        ({"epsilon": -1e-7}, r"argument `epsilon`. Expected a float > 0"),
        ({"warmup_steps": 0},
         r"argument `warmup_steps`. Expected an integer >= 1. Received: warmup_steps=0"),
        ({"warmup_steps": 1.5}, r"argument `warmup_steps`.*Received: warmup_steps=1.5"),
        ({"mode": "layers"}, r"argument `mode`.*Received: mode='layers'"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExcessMTL(**kwargs)


TASKS = [T.Regression("a"), T.BinaryClassification("b")]


def test_compile_sizes_the_accumulators_for_each_mode():
    model = tiny_model(TASKS)
    model.compile(weighting=ExcessMTL())
    size = sum(int(np.prod(v.shape)) for v in model.trunk.trainable_variables)
    assert tuple(model.weighting.squared_gradient_sums.shape) == (2, size)
    model.compile(weighting=ExcessMTL(mode="representation"))
    assert tuple(model.weighting.squared_gradient_sums.shape) == (2, 4 * 4 * 4)  # z: 4x4x4
    # The same instance after the shared part changed: refused at `compile`,
    # by name.
    weighting = ExcessMTL()
    model.compile(weighting=weighting)
    model.compile(weighting=weighting)  # unchanged: fine
    model.trunk.layers[-1].trainable = False
    with pytest.raises(ValueError, match=r"ExcessMTL instance .*pass a new instance"):
        model.compile(weighting=weighting)


@pytest.mark.parametrize("mode", FIT_SAVE_LOAD_MODES)
def test_fit_save_and_load(mode, tmp_path):
    weighting = ExcessMTL(mode=mode, robust_step_size=1.0)
    model, history = check_fit_save_load(weighting, tmp_path)
    # "a" has no label in the first step of each epoch: its baseline comes
    # from the second step; "b" and "s" moved from the second step on.
    steps = numpy(model.weighting.initial_steps)
    np.testing.assert_array_equal(steps, [1.0, 1.0, 1.0])
    assert np.all(numpy(model.weighting.squared_gradient_sums).sum(axis=1) > 0)
    np.testing.assert_allclose(numpy(model.weighting.robust_weights).sum(), 3.0, rtol=1e-5)
    assert not np.allclose(numpy(model.weighting.robust_weights), 1.0)
    assert all(np.isfinite(history[f"weight_{t}"]).all() for t in "abs")
    # The loaded weighting continues as the original does.
    restored = keras.models.load_model(str(tmp_path / "model.keras"))
    size = model.weighting.squared_gradient_sums.shape[1]
    grads = np.random.default_rng(9).normal(size=(3, size)).astype("float32")
    if mode == "representation":
        grads = grads.reshape(3, 1, *model.trunk.outputs[0].shape[1:])
    expected = combine(model.weighting, grads)
    got = combine(restored.weighting, grads)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-6)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.function")
def test_tf_function_traced_once_updates_the_state():
    weighting = built(ExcessMTL(robust_step_size=1.0))
    weighting.build_accumulators(2)
    step = tf.function(lambda g: weighting.combine(g, {"a": 1.0, "b": 1.0})[1])
    step(tf.constant([[3.0, 4.0], [1.0, 2.0]]))
    weights = numpy(step(tf.constant([[0.0, 3.0], [3.0, 0.0]])))
    np.testing.assert_allclose(weights, [0.66739, 1.33261], rtol=1e-4)
