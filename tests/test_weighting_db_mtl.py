"""Tests for `keras_mtl.weighting.db_mtl.DBMTL` (Lin et al. 2023, DB-MTL)."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_mtl
from keras_mtl import tasks as T
from keras_mtl.weighting.db_mtl import DBMTL

from conftest import needs_tf, random_images, tiny_model
from gradient_method_checks import built, check_config_round_trip, check_fit_save_load
from gradient_method_checks import combine, numpy
from gram_method_checks import check_scale_equivariance, combiners, degenerate_cases

# make test keeps this method's doctest and the registry-wide tests (non-finite
# steps, negative losses, numpy scalars); this file runs in make test-slow, to
# keep make test under 10 minutes.
pytestmark = pytest.mark.slow


def shared(weighting, num_parameters):
    """`weighting` told its shared variables hold `num_parameters` entries
    (what `compile` does with the trunk's variables)."""
    weighting.build_shared([np.zeros(num_parameters, "float32")])
    return weighting


def make(num_parameters, names=("a", "b"), **kwargs):
    return built(shared(DBMTL(**kwargs), num_parameters), names)


def reference(steps, beta, beta_sigma, num_tasks, num_parameters, bounds=None):
    """DB-MTL from its definition, in float64, on a list of steps
    `(grads (T, P), losses (T,), labelled (T,) bools)`: per step the update
    `d`, the coefficients `w` of the step's own gradients in `d`, and the
    state (buffer, update counts) after it.

    b_t <- β_k b_t + (1 - β_k) g_t / (L_t - m_t),  β_k = beta / k**beta_sigma
    d = Σ_t (max_s ‖b_s‖ / ‖b_t‖) b_t   over the labelled tasks
    """
    bounds = np.zeros(num_tasks) if bounds is None else np.asarray(bounds, "float64")
    buffer = np.zeros((num_tasks, num_parameters))
    updates = np.zeros(num_tasks, int)
    out = []
    for grads, losses, labelled in steps:
        grads = np.asarray(grads, "float64")
        shifted = np.asarray(losses, "float64") - bounds
        rates = np.zeros(num_tasks)
        for t in range(num_tasks):
            if labelled[t]:
                updates[t] += 1
                rates[t] = beta / updates[t] ** beta_sigma
                buffer[t] = rates[t] * buffer[t] + (1 - rates[t]) * grads[t] / shifted[t]
        norms = np.linalg.norm(buffer, axis=1)
        largest = max([norms[t] for t in range(num_tasks) if labelled[t]], default=0.0)
        alpha = np.array([largest / norms[t] if labelled[t] and norms[t] > 0 else 0.0
                          for t in range(num_tasks)])
        d = alpha @ buffer
        w = np.where(labelled, alpha * (1 - rates) / np.where(labelled, shifted, 1.0), 0.0)
        out.append((d, w, buffer.copy(), updates.copy()))
    return out


# --- the update -------------------------------------------------------------------
def test_two_steps_by_hand_and_against_the_reference():
    weighting = make(3, beta=0.9, beta_sigma=0.5)
    # Step 1 (k = 1, β_1 = 0.9):
    #   g_a = (3, 0, 4), L_a = 2:    g_a / L_a = (1.5, 0, 2), b_a = 0.1 of it = (0.15, 0, 0.2)
    #   g_b = (0, 1, 0), L_b = 0.25: g_b / L_b = (0, 4, 0),   b_b = (0, 0.4, 0)
    #   norms 0.25 and 0.4: α = (1.6, 1); d = 1.6 b_a + b_b = (0.24, 0.4, 0.32)
    #   w = α (1 - 0.9) / L = (0.08, 0.4), and 0.08 g_a + 0.4 g_b = d.
    steps = [
        ([[3.0, 0.0, 4.0], [0.0, 1.0, 0.0]], [2.0, 0.25]),
        ([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]], [1.0, 0.5]),
    ]
    combined, weights = combine(weighting, *steps[0])
    np.testing.assert_allclose(combined, [0.24, 0.4, 0.32], rtol=1e-6)
    np.testing.assert_allclose(weights, [0.08, 0.4], rtol=1e-6)
    np.testing.assert_allclose(numpy(weighting.gradient_buffer), [[0.15, 0, 0.2], [0, 0.4, 0]],
                               rtol=1e-6)
    np.testing.assert_array_equal(numpy(weighting.update_counts), [1, 1])
    # Step 2 (k = 2, β_2 = 0.9 / sqrt(2) = 0.63640):
    #   b_a = 0.6364 (0.15, 0, 0.2) + 0.3636 (0, 2, 0)  = (0.09546, 0.72720, 0.12728)
    #   b_b = 0.6364 (0, 0.4, 0)    + 0.3636 (2, 0, 0)  = (0.72720, 0.25456, 0)
    combined, weights = combine(weighting, *steps[1])
    beta_2 = 0.9 / np.sqrt(2)
    b_a = beta_2 * np.array([0.15, 0, 0.2]) + (1 - beta_2) * np.array([0, 2.0, 0])
    b_b = beta_2 * np.array([0, 0.4, 0]) + (1 - beta_2) * np.array([2.0, 0, 0])
    np.testing.assert_allclose(b_a, [0.095459, 0.727208, 0.127279], rtol=1e-5)
    largest = max(np.linalg.norm(b_a), np.linalg.norm(b_b))
    alpha = largest / np.array([np.linalg.norm(b_a), np.linalg.norm(b_b)])
    np.testing.assert_allclose(combined, alpha[0] * b_a + alpha[1] * b_b, rtol=1e-5)
    np.testing.assert_allclose(weights, alpha * (1 - beta_2) / [1.0, 0.5], rtol=1e-5)
    # The same from the reference.
    expected = reference([(g, l, [True, True]) for g, l in steps], 0.9, 0.5, 2, 3)[-1]
    np.testing.assert_allclose(combined, expected[0], rtol=1e-5)
    np.testing.assert_allclose(weights, expected[1], rtol=1e-5)
    np.testing.assert_allclose(numpy(weighting.gradient_buffer), expected[2], rtol=1e-5)
    np.testing.assert_array_equal(numpy(weighting.update_counts), [2, 2])


@pytest.mark.parametrize("beta, beta_sigma", [(0.9, 0.5), (0.9, 0.0), (0.5, 1.0), (0.0, 0.5)])
def test_several_steps_with_an_unlabelled_task_match_the_reference(beta, beta_sigma):
    rng = np.random.default_rng(0)
    steps = []
    for k in range(6):
        labelled = [True, k % 2 == 0, k != 3]  # "b" every other step, "c" not at step 3
        losses = rng.uniform(0.1, 3.0, 3) * labelled
        grads = rng.normal(size=(3, 5)) * np.asarray(labelled)[:, None]
        steps.append((grads, losses, labelled))
    weighting = make(5, ["a", "b", "c"], beta=beta, beta_sigma=beta_sigma)
    for (grads, losses, labelled), expected in zip(
        steps, reference(steps, beta, beta_sigma, 3, 5)
    ):
        counts = [4.0 if x else 0.0 for x in labelled]
        combined, weights = combine(weighting, grads, losses, counts)
        d, w, buffer, updates = expected
        np.testing.assert_allclose(combined, d, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weights, w, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(numpy(weighting.gradient_buffer), buffer, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(numpy(weighting.update_counts), updates)
        assert np.all(np.asarray(weights)[~np.asarray(labelled)] == 0.0)


def test_the_reported_weights_are_the_coefficients_of_the_steps_own_gradients():
    rng = np.random.default_rng(1)
    weighting = make(4, ["a", "b", "c"], beta=0.8, beta_sigma=0.0)
    previous = np.zeros((3, 4))
    for _ in range(4):
        grads, losses = rng.normal(size=(3, 4)), rng.uniform(0.5, 2.0, 3)
        combined, weights = combine(weighting, grads, losses)
        buffer = numpy(weighting.gradient_buffer).astype("float64")
        norms = np.linalg.norm(buffer, axis=1)
        alpha = norms.max() / norms
        # d = Σ α_t β b_t(previous) + Σ w_t g_t
        np.testing.assert_allclose(
            combined - weights @ grads, 0.8 * alpha @ previous, rtol=1e-4, atol=1e-6
        )
        previous = buffer
    # Without averaging (beta = 0) the update is Σ w_t g_t exactly, w_t = α_t / L_t.
    weighting = make(4, ["a", "b", "c"], beta=0.0)
    grads, losses = rng.normal(size=(3, 4)), np.array([0.5, 1.0, 4.0])
    combined, weights = combine(weighting, grads, losses)
    np.testing.assert_allclose(combined, weights @ grads, rtol=1e-5, atol=1e-7)
    norms = np.linalg.norm(grads / losses[:, None], axis=1)
    np.testing.assert_allclose(weights, norms.max() / norms / losses, rtol=1e-5)


def test_every_task_pulls_with_the_largest_norm():
    rng = np.random.default_rng(2)
    weighting = make(6, ["a", "b", "c"], beta=0.9, beta_sigma=0.5)
    for _ in range(3):
        sizes = [[1e-3], [1.0], [1e3]]  # very unequal gradients
        combined, _ = combine(weighting, rng.normal(size=(3, 6)) * sizes, [1.0, 2.0, 3.0])
        buffer = numpy(weighting.gradient_buffer).astype("float64")
        norms = np.linalg.norm(buffer, axis=1)
        assert norms.max() > 1e5 * norms.min()
        # d = max_s ‖b_s‖ Σ_t b_t / ‖b_t‖: each task's part has the largest norm.
        expected = norms.max() * (buffer / norms[:, None]).sum(0)
        np.testing.assert_allclose(combined, expected, rtol=1e-5)


def test_the_log_makes_the_update_independent_of_each_losss_scale():
    rng = np.random.default_rng(3)
    grads, losses = rng.normal(size=(2, 5)), np.array([0.7, 1.9])
    c = np.array([1e-3, 250.0])  # L_t -> c_t L_t multiplies g_t by c_t
    a, b = make(5), make(5)
    for _ in range(3):
        combined, weights = combine(a, grads, losses)
        scaled_combined, scaled_weights = combine(b, c[:, None] * grads, c * losses)
        np.testing.assert_allclose(scaled_combined, combined, rtol=1e-5)
        np.testing.assert_allclose(scaled_weights, weights / c, rtol=1e-5)


@needs_tf  # the shared checks trace with tf.function
def test_gradients_of_any_magnitude_give_the_same_weights():
    # From fresh state each time: common scales cancel in α, and the update
    # scales with the gradients (both paths of the step, bfloat16 too).
    check_scale_equivariance(lambda: shared(DBMTL(), 6))


@needs_tf
def test_degenerate_gradients():
    weighting = built(shared(DBMTL(), 6), ["a", "b", "c"])
    initial = weighting.state_arrays()
    runs = combiners(weighting)
    for name, (grads, losses, counts) in degenerate_cases().items():
        for how, run in runs.items():
            weighting.load_state(initial)
            combined, weights = run(grads, losses, counts)
            where = f"{name} ({how}): weights {weights}"
            if name == "identical_loss_zero":
                # log L of a labelled task with L <= 0: a non-finite step.
                assert np.all(np.isnan(combined)) and np.all(np.isnan(weights)), where
                # No state moved (the reported weights are the step's: NaN).
                for now, before in zip(weighting.state_arrays()[1:], initial[1:]):
                    np.testing.assert_array_equal(now, before, err_msg=where)
                continue
            assert np.all(np.isfinite(combined)) and np.all(np.isfinite(weights)), where
            if name == "identical":
                # Equal buffers, α = 1: (1 - β_1) Σ_t g_t, T (1 - β) times the mean.
                np.testing.assert_allclose(combined, 0.3 * grads.mean(0), rtol=1e-5, err_msg=where)
                np.testing.assert_allclose(weights, 0.1, rtol=1e-5, err_msg=where)
            if name == "parallel":  # each scaled to the largest: 3 (1 - β) 2 g
                np.testing.assert_allclose(combined, 0.6 * grads[0], rtol=1e-5, err_msg=where)
            labelled = [c > 0 for c in counts]
            d, w, _, _ = reference([(grads, losses, labelled)], 0.9, 0.0, 3, 6)[0]
            scale = max(np.linalg.norm(d), 1e-30)
            assert np.linalg.norm(combined - d) <= 1e-5 * scale, where
            np.testing.assert_allclose(weights, w, rtol=1e-5, atol=1e-30, err_msg=where)
            if name in ("unlabelled", "unlabelled_nonzero", "zero_labelled"):
                assert weights[1] == 0.0, where
                assert np.linalg.norm(combined) > 1e-3 * np.linalg.norm(grads), where
            if name == "all_unlabelled":
                np.testing.assert_array_equal(weights, 0.0, err_msg=where)
                np.testing.assert_array_equal(combined, 0.0, err_msg=where)


# --- unlabelled tasks, losses at or below their bound, training=False ----------------
def test_an_unlabelled_task_keeps_its_buffer_and_takes_no_part():
    weighting = make(2, ["a", "b", "c"], beta=0.5, beta_sigma=1.0)  # β_k = 0.5 / k
    combine(weighting, [[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]], [1.0, 1.0, 1.0])
    buffer, updates = numpy(weighting.gradient_buffer), numpy(weighting.update_counts)
    # "b" unlabelled (count 0, loss 0, and a gradient the model would not give):
    combined, weights = combine(weighting, [[2.0, 0.0], [0.0, 9.0], [0.0, 2.0]],
                                [2.0, 0.0, 1.0], counts=[4, 0, 4])
    after = numpy(weighting.gradient_buffer)
    np.testing.assert_array_equal(after[1], buffer[1])  # its buffer stays
    np.testing.assert_array_equal(numpy(weighting.update_counts), updates + [1, 0, 1])
    assert weights[1] == 0.0
    # d from "a" and "c" only, scaled to the larger of their two norms (b's
    # kept buffer, of norm 1.5, is not the largest norm).
    norms = np.linalg.norm(after[[0, 2]], axis=1)
    np.testing.assert_allclose(combined, (norms.max() / norms) @ after[[0, 2]], rtol=1e-6)
    # Labelled again: its own second update (k = 2, β_2 = 0.25), from the
    # buffer it kept (the others make their third, β_3 = 1/6).
    combine(weighting, [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], [1.0, 0.5, 1.0])
    np.testing.assert_allclose(numpy(weighting.gradient_buffer)[1],
                               0.25 * buffer[1] + 0.75 * np.array([0.0, 2.0]), rtol=1e-6)
    np.testing.assert_allclose(numpy(weighting.gradient_buffer)[0],
                               after[0] / 6 + 5 / 6 * np.array([1.0, 0.0]), rtol=1e-6)
    np.testing.assert_array_equal(numpy(weighting.update_counts), [3, 2, 3])


def test_a_labelled_loss_at_or_below_its_bound_makes_the_step_non_finite():
    weighting = make(2, beta=0.5)
    combine(weighting, [[1.0, 0.0], [0.0, 1.0]], [1.0, 1.0])
    state = weighting.state_arrays()
    for b in (0.0, -0.5):
        combined, weights = combine(weighting, [[1.0, 0.0], [0.0, 1.0]], [1.0, b])
        assert np.all(np.isnan(combined)) and np.all(np.isnan(weights)), b
        # No state moved (the buffers are not poisoned).
        for now, before in zip(weighting.state_arrays()[1:], state[1:]):
            np.testing.assert_array_equal(now, before)
    hint = weighting.explain_nonfinite({"a": 1.0, "b": -0.5})
    assert "DBMTL takes the logarithm" in hint and "{'b': -0.5}" in hint
    assert "min_losses" in hint
    assert weighting.explain_nonfinite({"a": 1.0, "b": 0.5}) is None
    # Unlabelled with a negative loss: left out, finite.
    combined, weights = combine(weighting, [[1.0, 0.0], [0.0, 0.0]], [1.0, -0.5], counts=[4, 0])
    assert np.all(np.isfinite(combined)) and weights[1] == 0.0
    # With a lower bound, log(L - m): g / (L - m).
    bounded = make(2, beta=0.0, min_losses={"b": -1.0})
    combined, weights = combine(bounded, [[1.0, 0.0], [0.0, 1.0]], [1.0, -0.5])
    np.testing.assert_allclose(combined, [2.0, 2.0], rtol=1e-6)  # norms 1 and 2: both to 2
    np.testing.assert_allclose(weights, [2.0, 2.0], rtol=1e-6)  # α / (L - m) = (2/1, 1/0.5)
    assert bounded.explain_nonfinite({"a": 1.0, "b": -0.5}) is None
    assert "{'b': -1.0}" in bounded.explain_nonfinite({"a": 1.0, "b": -1.5})


def test_evaluation_changes_no_state():
    rng = np.random.default_rng(4)
    weighting = make(5, ["a", "b", "c"])
    combine(weighting, rng.normal(size=(3, 5)), [1.0, 2.0, 3.0])
    state = weighting.state_arrays()
    grads = rng.normal(size=(3, 5))
    evaluated = combine(weighting, grads, [1.0, 2.0, 3.0], training=False)
    for now, before in zip(weighting.state_arrays(), state):
        np.testing.assert_array_equal(now, before)
    trained = combine(weighting, grads, [1.0, 2.0, 3.0])  # the same step, trained
    np.testing.assert_allclose(evaluated[0], trained[0], rtol=1e-6)
    np.testing.assert_allclose(evaluated[1], trained[1], rtol=1e-6)
    np.testing.assert_array_equal(numpy(weighting.update_counts), [2, 2, 2])


def test_same_inputs_same_result():
    rng = np.random.default_rng(5)
    steps = [(rng.normal(size=(2, 3)), rng.uniform(0.5, 1.5, 2)) for _ in range(3)]
    a, b = make(3), make(3)
    for grads, losses in steps:
        for x, y in zip(combine(a, grads, losses), combine(b, grads, losses)):
            np.testing.assert_array_equal(x, y)


# --- state --------------------------------------------------------------------------
def test_state_round_trips_and_the_next_step_continues():
    rng = np.random.default_rng(6)
    weighting = make(4, ["a", "b", "c"])
    for _ in range(3):
        combine(weighting, rng.normal(size=(3, 4)), rng.uniform(0.5, 1.5, 3), counts=[4, 0, 4])
    state = weighting.state_arrays()
    assert [v.name for v in weighting.variables] == [
        "task_weights", "update_counts", "gradient_buffer"
    ]
    assert state[1].dtype == np.int32 and state[2].shape == (3, 4)
    clone = make(4, ["a", "b", "c"])
    clone.load_state(state)
    grads, losses = rng.normal(size=(3, 4)), [1.0, 2.0, 3.0]
    for x, y in zip(combine(clone, grads, losses), combine(weighting, grads, losses)):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="Cannot load the state of weighting"):
        make(5, ["a", "b", "c"]).load_state(state)  # another number of parameters


def _two_task_data(n=8):
    tasks = [T.Regression("a"), T.BinaryClassification("b")]
    rng = np.random.default_rng(8)
    y = {"a": rng.normal(size=(n, 1)).astype("float32"),
         "b": rng.integers(0, 2, (n, 1)).astype("float32")}
    return tasks, random_images(n), y


def test_buffer_and_update_counts_round_trip_through_a_keras_file(tmp_path):
    tasks, x, y = _two_task_data()
    model = tiny_model(tasks)
    model.compile(optimizer="adam", weighting=DBMTL(beta=0.8, beta_sigma=0.25))
    weighting = model.weighting
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)  # two steps
    size = sum(int(np.prod(v.shape)) for v in model.trunk.trainable_variables)
    assert weighting.num_parameters == size
    assert tuple(weighting.gradient_buffer.shape) == (2, size)
    np.testing.assert_array_equal(numpy(weighting.update_counts), [2, 2])
    # The model lists (and so saves, trains under JAX, restores) the buffer.
    assert any(v is weighting.gradient_buffer for v in model.variables)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)  # safe_mode=True
    assert restored.weighting.get_config() == weighting.get_config()
    assert [v.name for v in restored.weighting.variables] == [
        "task_weights", "update_counts", "gradient_buffer"
    ]
    for v, a, b in zip(weighting.variables, weighting.state_arrays(),
                       restored.weighting.state_arrays(), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=v.name)
    assert np.any(restored.weighting.state_arrays()[2] != 0)
    # Training goes on from the restored state.
    restored.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_array_equal(numpy(restored.weighting.update_counts), [4, 4])


def test_the_buffer_needs_the_shared_variables_before_build():
    with pytest.raises(ValueError, match=r"needs the shared variables before `build`.*build_shared"):
        built(DBMTL())
    weighting = make(3)
    assert tuple(weighting.gradient_buffer.shape) == (2, 3)
    assert [v.name for v in weighting.variables] == [
        "task_weights", "update_counts", "gradient_buffer"
    ]
    weighting.build_shared([np.zeros((3,))])  # the same trunk again: fine
    with pytest.raises(ValueError, match=r"This DBMTL holds state for 3 .*this trunk has 4"):
        weighting.build_shared([np.zeros((2, 2))])
    with pytest.raises(ValueError, match=r"built for 3 shared parameters; the gradients have 4"):
        weighting.combine(ops.zeros((2, 4)), {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match=r"DBMTL keeps state per shared .*no trainable variables"):
        DBMTL().build_shared([])


def test_a_trunk_with_another_number_of_parameters_needs_a_new_instance():
    tasks, x, y = _two_task_data()
    model = tiny_model(tasks)
    weighting = DBMTL()
    model.compile(optimizer="adam", weighting=weighting)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.trunk.layers[-1].trainable = False
    # Refused at `compile` where it hands the trunk's variables over, else at `fit`.
    with pytest.raises(ValueError, match=r"holds state for \d+ .*a new instance"):
        model.compile(optimizer="adam", weighting=weighting)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)


# --- configuration -------------------------------------------------------------------
def test_config_round_trip_and_defaults():
    check_config_round_trip(DBMTL(beta=0.5, beta_sigma=0.0, min_losses={"a": -1.0}))
    config = DBMTL().get_config()
    expected = {"mode": "params", "beta": 0.9, "beta_sigma": 0.0, "min_losses": None}
    assert {k: config[k] for k in expected} == expected
    assert type(keras_mtl.weighting.get("db_mtl")) is DBMTL
    assert type(keras_mtl.weighting.get("DB-MTL")) is DBMTL
    assert type(keras_mtl.weighting.get("dual_balancing")) is DBMTL
    assert DBMTL.supported_modes == ("params",)
    assert DBMTL(beta=np.float32(0.5), beta_sigma=np.int64(1)).get_config()["beta_sigma"] == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta": -0.1}, r"argument `beta`. Expected a float in \[0, 1\).*Received: beta=-0.1"),
        ({"beta": 1.0}, r"argument `beta`. Expected a float in \[0, 1\).*Received: beta=1.0"),
        ({"beta": 1.5}, r"argument `beta`. Expected a float in \[0, 1\).*Received: beta=1.5"),
        ({"beta": True}, r"argument `beta`.*Received: beta=True"),
        ({"beta": "0.9"}, r"argument `beta`.*Received: beta='0.9'"),
        ({"beta": float("nan")}, r"argument `beta`.*Received: beta=nan"),
        ({"beta_sigma": -0.5}, r"argument `beta_sigma`. Expected a finite number >= 0. "
                               r"Received: beta_sigma=-0.5"),
        ({"beta_sigma": float("inf")}, r"argument `beta_sigma`.*Received: beta_sigma=inf"),
        ({"beta_sigma": None}, r"argument `beta_sigma`.*Received: beta_sigma=None"),
        ({"min_losses": [0.0]}, r"argument `min_losses`. Expected None or a dict"),
        ({"min_losses": {"a": float("nan")}}, r"argument `min_losses\['a'\]`"),
        ({"mode": "representation"}, r"argument `mode`. DBMTL supports \('params',\). "
                                     r"Received: mode='representation'"),
        ({"gradient_dtype": "float16"}, r"argument `gradient_dtype`"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DBMTL(**kwargs)


def test_bounds_for_unknown_tasks_are_refused():
    weighting = shared(DBMTL(min_losses={"z": -1.0}), 2)
    with pytest.raises(ValueError, match=r"argument `min_losses`.*unknown: \['z'\]"):
        weighting.build({"a": (), "b": ()})


# --- training -----------------------------------------------------------------------
def closeness(y_true, y_pred):
    return -ops.mean(ops.exp(-ops.square(y_true - y_pred)), axis=-1)


def test_fit_with_a_negative_loss_and_no_bound_says_how_to_give_one():
    tasks = [T.Regression("near", loss=closeness), T.BinaryClassification("b")]
    model = tiny_model(tasks)
    model.compile(optimizer="sgd", weighting=DBMTL())
    x = random_images(8) / 255.0
    y = {"near": np.full((8, 1), 0.8, "float32"), "b": np.ones((8, 1), "float32")}
    with pytest.raises(FloatingPointError, match=r"DBMTL takes the logarithm.*min_losses.*'near'"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    # The failed step moved no state.
    np.testing.assert_array_equal(numpy(model.weighting.update_counts), [0, 0])
    np.testing.assert_array_equal(numpy(model.weighting.gradient_buffer), 0.0)


@pytest.mark.slow
def test_fit_save_and_load(tmp_path):
    model, history = check_fit_save_load(DBMTL(), tmp_path)
    # "a" has no label in the first step of each epoch: 2 updates of its
    # buffer, 4 of the others'.
    np.testing.assert_array_equal(numpy(model.weighting.update_counts), [2, 4, 4])
    buffer = numpy(model.weighting.gradient_buffer)
    assert np.all(np.isfinite(buffer)) and np.all(np.linalg.norm(buffer, axis=1) > 0)
