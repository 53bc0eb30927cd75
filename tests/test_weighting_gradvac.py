"""Tests for `keras_mtl.weighting.grad_vac.GradVac` (Wang et al. 2021)."""

import keras
import numpy as np
import pytest

from keras_mtl.weighting.grad_vac import GradVac
from keras_mtl.weighting.grad_vac import variable_groups

from gram_method_checks import check_scale_equivariance, drawn_orders
from gradient_method_checks import FIT_SAVE_LOAD_MODES
from gradient_method_checks import built, check_config_round_trip, check_fit_save_load
from gradient_method_checks import combine, gram_weights, numpy, tiny_model, TASKS


def _reference(grads, targets, beta, orders):
    """Algorithm 1 on the vectors themselves, in float64."""
    grads = np.asarray(grads, "float64")
    targets = np.asarray(targets, "float64")
    new_targets = targets.copy()
    total = np.zeros(grads.shape[1])
    for i, order in enumerate(orders):
        g = grads[i].copy()
        for j in order:
            phi = g @ grads[j] / (np.linalg.norm(g) * np.linalg.norm(grads[j]))
            t = targets[i, j]
            if phi < t:
                g = g + np.linalg.norm(g) * (t * np.sqrt(1 - phi**2) - phi * np.sqrt(1 - t**2)) / (
                    np.linalg.norm(grads[j]) * np.sqrt(1 - t**2)
                ) * grads[j]
            new_targets[i, j] = (1 - beta) * t + beta * phi
        total += g
    return total, new_targets


def test_two_tasks_by_hand_against_the_reference():
    weighting = built(GradVac(beta=0.1, seed=0))
    weighting.target_cosines.assign([[0.0, 0.5], [0.2, 0.0]])
    grads = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]])  # cos = 0.6
    combined, weights = combine(weighting, grads)
    # Task 0: 0.6 >= 0.5, untouched. Task 1: 0.6 >= 0.2, untouched.
    np.testing.assert_allclose(weights, [1.0, 1.0], rtol=1e-6)
    expected = [[0.0, 0.5 * 0.9 + 0.06], [0.2 * 0.9 + 0.06, 0.0]]  # (1 - beta) t + beta cos
    np.testing.assert_allclose(numpy(weighting.target_cosines), expected, rtol=1e-6)
    # Raise the targets above 0.6: both are turned towards the other.
    weighting.target_cosines.assign([[0.0, 0.9], [0.8, 0.0]])
    combined, weights = combine(weighting, grads)
    expected, targets = _reference(grads, [[0.0, 0.9], [0.8, 0.0]], 0.1, [[1], [0]])
    np.testing.assert_allclose(combined, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(numpy(weighting.target_cosines), targets, rtol=1e-6)
    # By hand for task 0: w = (0.9 * 0.8 - 0.6 * sqrt(0.19)) / sqrt(0.19).
    w01 = (0.9 * 0.8 - 0.6 * np.sqrt(0.19)) / np.sqrt(0.19)
    w10 = (0.8 * 0.8 - 0.6 * 0.6) / 0.6
    np.testing.assert_allclose(weights, [1 + w10, 1 + w01], rtol=1e-5)
    # The corrected gradients reach the target cosines.
    g0 = grads[0] + w01 * grads[1]
    assert g0 @ grads[1] / np.linalg.norm(g0) == pytest.approx(0.9, rel=1e-6)


def test_conflicting_pair_with_zero_targets_is_pcgrad():
    weighting = built(GradVac(seed=0))
    g1, g2 = np.array([1.0, 0.0]), np.array([np.cos(2 * np.pi / 3), np.sin(2 * np.pi / 3)])  # 120°
    combined, weights = combine(weighting, [g1, g2])
    pc1 = g1 - (g1 @ g2) * g2
    pc2 = g2 - (g2 @ g1) * g1
    np.testing.assert_allclose(combined, pc1 + pc2, atol=1e-6)
    np.testing.assert_allclose(weights, [1.5, 1.5], rtol=1e-6)
    expected = [[0.0, -0.005], [-0.005, 0.0]]  # 0.99 * 0 + 0.01 * cos(120°)
    np.testing.assert_allclose(numpy(weighting.target_cosines), expected, rtol=1e-5)


def test_three_tasks_in_the_random_order_match_the_reference():
    rng = np.random.default_rng(3)
    grads = rng.normal(size=(3, 5))
    weighting = built(GradVac(beta=0.3, seed=42), ["a", "b", "c"])
    targets = np.array([[0.0, 0.4, 0.7], [0.3, 0.0, 0.9], [0.5, 0.6, 0.0]])
    weighting.target_cosines.assign(targets)
    orders = drawn_orders(42, 3, 4)
    assert any(not np.array_equal(orders[0], o) for o in orders[1:])  # new orders
    for order in orders:
        expected, targets = _reference(grads, targets, 0.3, order)
        combined, _ = combine(weighting, grads)
        np.testing.assert_allclose(combined, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(numpy(weighting.target_cosines), targets, rtol=1e-5, atol=1e-7)


def test_ema_targets_follow_the_observed_cosines():
    weighting = built(GradVac(beta=0.5, seed=0))
    grads = [[1.0, 0.0], [1.0, 1.0]]  # cos = 1/sqrt(2)
    c = 1 / np.sqrt(2)
    expected = 0.0
    for _ in range(4):
        expected = 0.5 * expected + 0.5 * c
        combine(weighting, grads)  # cos >= target: no correction
        targets = numpy(weighting.target_cosines)
        np.testing.assert_allclose(targets, [[0.0, expected], [expected, 0.0]], rtol=1e-5)


def test_same_seed_same_result_and_evaluation_changes_nothing():
    grads = np.random.default_rng(0).normal(size=(4, 6))
    names = ["a", "b", "c", "d"]
    targets = np.full((4, 4), 0.8)
    results = []
    for _ in range(2):
        weighting = built(GradVac(seed=5), names)
        weighting.target_cosines.assign(targets)
        results.append([combine(weighting, grads)[0] for _ in range(3)])
    np.testing.assert_array_equal(results[0], results[1])
    state = numpy(weighting.seed_generator.state).copy()
    before = numpy(weighting.target_cosines)
    gram_weights(weighting, grads, training=False)
    np.testing.assert_array_equal(numpy(weighting.seed_generator.state), state)
    np.testing.assert_array_equal(numpy(weighting.target_cosines), before)


def test_identical_gradients_give_the_sum():
    weighting = built(GradVac(beta=0.5, seed=0), ["a", "b", "c"])
    g = np.array([0.3, -1.0, 2.0], "float32")
    for _ in range(30):  # the targets approach 1; still no correction
        combined, weights = combine(weighting, [g, g, g])
        np.testing.assert_allclose(weights, [1.0, 1.0, 1.0])
        np.testing.assert_allclose(combined, 3 * g, rtol=1e-6)  # T times the mean
    assert numpy(weighting.target_cosines)[0, 1] > 0.999


def test_degenerate_and_unlabelled_gradients_are_finite():
    weighting = built(GradVac(seed=0), ["a", "b", "c"])
    weighting.target_cosines.assign(np.full((3, 3), 1.0))  # extreme targets
    cases = [
        ([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], None, None),
        ([[1.0, 0.0], [-2.0, 0.0], [1e-30, 1e-30]], None, None),  # opposite, near zero
        ([[1e-20, 0.0], [0.0, 1e-20], [1e15, 1.0]], None, None),
        ([[1.0, 0.0], [0.0, 0.0], [-1.0, 1.0]], [1.0, 0.0, 1.0], [4, 0, 4]),  # "b" unlabelled
    ]
    for grads, losses, counts in cases:
        weighting.target_cosines.assign(np.full((3, 3), 1.0))
        combined, weights = combine(weighting, grads, losses=losses, counts=counts)
        assert np.all(np.isfinite(combined)) and np.all(np.isfinite(weights)), grads
        assert np.all(np.isfinite(numpy(weighting.target_cosines))), grads
    # The unlabelled task: weight 0, its pairs' targets untouched.
    assert weights[1] == 0.0
    targets = numpy(weighting.target_cosines)
    assert targets[0, 1] == targets[1, 0] == targets[1, 2] == 1.0
    assert targets[0, 2] < 1.0
    # "b" labelled with loss 0 (and a zero gradient): its own weight 1.
    weighting.target_cosines.assign(np.full((3, 3), 1.0))
    _, weights = combine(weighting, [[1.0, 0.0], [0.0, 0.0], [-1.0, 1.0]], losses=[1.0, 0.0, 1.0])
    assert weights[1] == 1.0


def test_gradients_of_any_magnitude_give_the_same_weights():
    # From fresh state each time: the EMA targets are cosines, scale-free.
    check_scale_equivariance(lambda: GradVac(beta=0.5, seed=0))


def test_config_round_trip():
    check_config_round_trip(GradVac(mode="representation", beta=0.2, seed=3))
    config = GradVac().get_config()
    expected = {"mode": "params", "beta": 0.01, "seed": None}
    assert {k: config[k] for k in expected} == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta": -0.1}, r"argument `beta`. Expected a float in \[0, 1\]. Received: beta=-0.1"),
        ({"beta": 1.5}, r"argument `beta`. Expected a float in \[0, 1\]. Received: beta=1.5"),
        ({"seed": -1}, r"argument `seed`. Expected None or an integer >= 0. Received: seed=-1"),
        ({"seed": "0"}, r"argument `seed`. Expected None or an integer >= 0. Received: seed='0'"),
        ({"mode": "layers"}, r"argument `mode`.*Received: mode='layers'"),
        ({"grouping": "block"}, r"argument `grouping`. Expected one of \('model', 'layer', "
                                r"'variable'\). Received: grouping='block'"),
        ({"grouping": "layer", "mode": "representation"},
         r"argument `grouping`. grouping='layer' groups the shared variables' gradients, "
         r"which only mode='params' has. Received: grouping='layer' with mode='representation'"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GradVac(**kwargs)


def _trunk_variables():
    """A dense trunk's variables: 2 layers of a kernel and a bias each."""
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(2, name="first")(inputs)
    trunk = keras.Model(inputs, keras.layers.Dense(2, name="second")(hidden))
    return trunk.trainable_variables


def test_groups_by_layer_or_by_variable():
    variables = _trunk_variables()
    assert [v.path for v in variables] == [
        "first/kernel", "first/bias", "second/kernel", "second/bias"
    ]
    assert variable_groups(variables, "model") == [0, 0, 0, 0]
    assert variable_groups(variables, "layer") == [0, 0, 1, 1]
    assert variable_groups(variables, "variable") == [0, 1, 2, 3]


def _grouped(grouping, names, variables, seed=42, beta=0.3):
    weighting = GradVac(beta=beta, seed=seed, grouping=grouping)
    weighting.build_shared(variables)
    weighting.build({n: () for n in names})
    return weighting


@pytest.mark.parametrize("grouping, bounds", [
    ("layer", [(0, 8), (8, 14)]),  # first: 3x2 + 2, second: 2x2 + 2
    ("variable", [(0, 6), (6, 8), (8, 12), (12, 14)]),
])
def test_each_group_is_aligned_on_its_own_with_its_own_targets(grouping, bounds):
    # Algorithm 1 on each group's slice of the gradients, with that group's
    # targets and the orders drawn once per step for all groups (LibMTL).
    names = ["a", "b", "c"]
    rng = np.random.default_rng(7)
    grads = rng.normal(size=(3, 14))
    weighting = _grouped(grouping, names, _trunk_variables())
    targets = rng.uniform(-0.5, 0.9, size=(len(bounds), 3, 3))
    weighting.target_cosines.assign(targets)
    for order in drawn_orders(42, 3, 3):
        expected, new_targets = [], []
        for k, (start, stop) in enumerate(bounds):
            total, group_targets = _reference(grads[:, start:stop], targets[k], 0.3, order)
            expected.append(total)
            new_targets.append(group_targets)
        combined, weights = combine(weighting, grads)
        np.testing.assert_allclose(combined, np.concatenate(expected), rtol=1e-4, atol=1e-5)
        targets = np.stack(new_targets)
        np.testing.assert_allclose(numpy(weighting.target_cosines), targets, rtol=1e-5, atol=1e-6)
    # The reported weight: each group's weight, by its number of parameters.
    assert weights.shape == (3,) and np.all(np.isfinite(weights))


def test_the_reported_weights_count_each_group_by_its_size():
    # Two tasks, group 0 (8 parameters) conflicting, group 1 (6) not: with
    # zero targets, group 0 is PCGrad ([2.0, 1.5] at 135°), group 1 the sum.
    grads = np.zeros((2, 14))
    grads[0, :2], grads[1, :2] = [1.0, 0.0], [-1.0, 1.0]
    grads[0, 8:10], grads[1, 8:10] = [1.0, 0.0], [1.0, 1.0]
    weighting = _grouped("layer", ["a", "b"], _trunk_variables(), beta=0.0)
    combined, weights = combine(weighting, grads)
    np.testing.assert_allclose(weights, [(8 * 2.0 + 6 * 1.0) / 14, (8 * 1.5 + 6 * 1.0) / 14],
                               rtol=1e-6)
    np.testing.assert_allclose(combined[:2], 2.0 * grads[0, :2] + 1.5 * grads[1, :2], rtol=1e-6)
    np.testing.assert_allclose(combined[8:10], grads[0, 8:10] + grads[1, 8:10], rtol=1e-6)
    # With one group the weights would be one pair for all parameters.
    whole = built(GradVac(beta=0.0, seed=42))
    _, whole_weights = combine(whole, grads)
    assert not np.allclose(whole_weights, weights)


def test_groups_need_the_shared_variables_before_build():
    weighting = GradVac(grouping="layer")
    with pytest.raises(ValueError, match=r"needs its shared variables before `build`"):
        weighting.build({"a": (), "b": ()})
    built_first = built(GradVac(grouping="model"))
    built_first.build_shared(_trunk_variables())  # nothing to do for one group
    with pytest.raises(ValueError, match=r"needs the trunk's variables when the model is compiled"):
        GradVac(grouping="variable").build_shared([])


def test_a_grouped_instance_refuses_another_trunk():
    model = tiny_model(TASKS)
    weighting = GradVac(grouping="layer", seed=0)
    model.compile(optimizer="adam", weighting=weighting)
    model.compile(optimizer="adam", weighting=weighting)  # the same trunk: fine
    groups = max(variable_groups(model.trunk.trainable_variables, "layer")) + 1
    assert weighting.target_cosines.shape == (groups, len(TASKS), len(TASKS))
    other = tiny_model(TASKS)
    other.trunk.add_weight(shape=(1,), name="extra")
    with pytest.raises(ValueError, match=r"built for other shared variables"):
        weighting.build_shared(other.trunk.trainable_variables)


@pytest.mark.parametrize("grouping", ["layer", pytest.param("variable", marks=pytest.mark.slow)])
def test_grouped_fit_save_and_load(grouping, tmp_path):
    model, history = check_fit_save_load(GradVac(beta=0.5, seed=1, grouping=grouping), tmp_path)
    targets = numpy(model.weighting.target_cosines)
    groups = max(variable_groups(model.trunk.trainable_variables, grouping)) + 1
    assert targets.shape == (groups, len(TASKS), len(TASKS)) and groups > 1
    assert np.all(np.isfinite(targets)) and np.any(targets != 0)


@pytest.mark.parametrize("mode", FIT_SAVE_LOAD_MODES)
def test_fit_save_and_load(mode, tmp_path):
    model, _ = check_fit_save_load(GradVac(mode=mode, beta=0.5, seed=1), tmp_path)
    targets = numpy(model.weighting.target_cosines)
    assert np.all(np.isfinite(targets)) and np.any(targets != 0)
    np.testing.assert_array_equal(np.diag(targets), 0.0)
