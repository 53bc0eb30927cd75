"""Tests for `keras_mtl.architectures.dselect_k` (Hazimeh et al. 2021): the
smooth step, the gate against its product formula in NumPy, the padded codes
when the number of experts is not a power of 2, the regularisation terms
(in Keras' `fit` and in keras_mtl's loss- and gradient-level steps), and the
architecture through `build_model` and a `.keras` round trip."""

import itertools

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl import weighting as W
from keras_mtl.architectures.dselect_k import DSelectK
from keras_mtl.architectures.dselect_k import DSelectKGate
from keras_mtl.architectures.dselect_k import DSelectKLayer
from keras_mtl.architectures.dselect_k import smooth_step

from conftest import random_images, random_labels
from test_architectures_mmoe import NAMES
from test_architectures_mmoe import TASKS
from test_architectures_mmoe import fit_and_round_trip
from test_architectures_mmoe import numpy
from test_architectures_mmoe import numpy_experts
from test_architectures_mmoe import softmax
from test_architectures_mmoe import tiny_backbone


# --- NumPy references ------------------------------------------------------------
def numpy_smooth_step(t, gamma):
    cubic = -2.0 / gamma**3 * t**3 + 3.0 / (2.0 * gamma) * t + 0.5
    return np.where(t <= -gamma / 2, 0.0, np.where(t >= gamma / 2, 1.0, cubic))


def numpy_selectors(z, gamma, num_experts=None):
    """`r` of every selector, `z (..., k, m) -> (..., k, codes)`, from the
    product formula over all `2^m` codes (MSB first), or over the first
    `num_experts` of them."""
    s = numpy_smooth_step(np.asarray(z, "float64"), gamma)
    m = s.shape[-1]
    r = []
    for code in itertools.product([0, 1], repeat=m):
        factors = [s[..., j] if bit else 1 - s[..., j] for j, bit in enumerate(code)]
        r.append(np.prod(factors, axis=0))
    r = np.stack(r, axis=-1)
    return r if num_experts is None else r[..., :num_experts]


def numpy_gate(z, alpha, gamma, num_experts):
    """`Σ_l softmax(α)_l r(z^(l))`, `(..., num_experts)`."""
    r = numpy_selectors(z, gamma, num_experts)
    return np.einsum("...k,...kn->...n", softmax(np.asarray(alpha, "float64")), r)


def numpy_regularization(z, gamma, num_experts, entropy_weight):
    """The static gate's regularisation terms (one `z (k, m)`)."""
    r = numpy_selectors(z, gamma, num_experts)
    total = entropy_weight * -np.sum(r * np.log(r + 1e-6))
    if num_experts & (num_experts - 1):  # not a power of 2
        total += np.sum(1 / r.sum(axis=-1) - 1)
    return total


def finite_difference(f, z, h=1e-6):
    """Central differences of a scalar function of the array `z`."""
    grad = np.zeros_like(z)
    for index in np.ndindex(*z.shape):
        step = np.zeros_like(z)
        step[index] = h
        grad[index] = (f(z + step) - f(z - step)) / (2 * h)
    return grad


def autodiff(f, x):
    """`∂ sum(f(x)) / ∂x` with the backend's own differentiation."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(f(x))
        return tape.gradient(y, x).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: f(v).sum())(x))
    pytest.skip(f"no autodiff helper for the {backend} backend")


def set_gate(gate, z, alpha, z_kernel=None, alpha_kernel=None):
    gate.z_bias.assign(np.asarray(z, "float32"))
    if z_kernel is not None:
        gate.z_kernel.assign(np.asarray(z_kernel, "float32"))
    if gate.k > 1:  # one selector has no α
        gate.alpha_bias.assign(np.asarray(alpha, "float32"))
        if alpha_kernel is not None:
            gate.alpha_kernel.assign(np.asarray(alpha_kernel, "float32"))


# --- the smooth step --------------------------------------------------------------
@pytest.mark.parametrize("gamma", [1.0, 2.0, 0.5])
def test_smooth_step_values_by_hand(gamma):
    t = gamma * np.array([-3.0, -0.5, -0.25, 0.0, 0.25, 0.5, 3.0])
    # -2/γ³ (γ/4)³ + 3/(2γ) (γ/4) + 1/2 = -1/32 + 3/8 + 1/2 = 0.84375
    expected = [0.0, 0.0, 0.15625, 0.5, 0.84375, 1.0, 1.0]
    np.testing.assert_allclose(numpy(smooth_step(t.astype("float32"), gamma)), expected, atol=1e-6)


@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_smooth_step_derivative_by_hand(gamma):
    # S'(t) = -6/γ³ t² + 3/(2γ): 3/(2γ) at 0, 0 at ±γ/2 (and flat outside).
    t = np.array([-gamma, -gamma / 2, 0.0, gamma / 2, gamma], "float64")
    expected = [0.0, 0.0, 3 / (2 * gamma), 0.0, 0.0]
    grad = autodiff(lambda x: smooth_step(x, gamma), t)
    np.testing.assert_allclose(grad, expected, atol=1e-12)
    # Inside the cubic region: the formula, and central differences (float32
    # on JAX, hence the wide step).
    inner = np.array([-0.4, -0.1, 0.1, 0.3]) * gamma
    formula = -6 / gamma**3 * inner**2 + 3 / (2 * gamma)
    np.testing.assert_allclose(autodiff(lambda x: smooth_step(x, gamma), inner), formula, rtol=1e-5)
    h = 1e-3
    above, below = numpy(smooth_step(inner + h, gamma)), numpy(smooth_step(inner - h, gamma))
    numeric = (above - below) / (2 * h)
    np.testing.assert_allclose(numeric, formula, rtol=1e-3)


# --- the gate, by hand -------------------------------------------------------------
def test_gate_by_hand():
    # γ = 1; selector 1: z = (0.25, -1) -> S = (0.84375, 0): codes 00, 01, 10, 11 get
    # (0.15625, 0, 0.84375, 0); selector 2: z = (2, 0) -> S = (1, 0.5): (0, 0, 0.5, 0.5).
    # α = (0, log 3) -> softmax (1/4, 3/4).
    expected = 0.25 * np.array([0.15625, 0, 0.84375, 0]) + 0.75 * np.array([0, 0, 0.5, 0.5])
    np.testing.assert_allclose(expected, [0.0390625, 0, 0.5859375, 0.375])
    for per_example in (True, False):
        gate = DSelectKGate(4, k=2, per_example=per_example)
        x = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
        gate(x)
        kernels = (np.zeros((5, 2, 2)), np.zeros((5, 2))) if per_example else (None, None)
        set_gate(gate, [[0.25, -1.0], [2.0, 0.0]], [0.0, np.log(3.0)], *kernels)
        np.testing.assert_allclose(numpy(gate(x)), np.tile(expected, (3, 1)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("num_experts, k", [(4, 2), (8, 3), (2, 1), (5, 2)])
def test_per_example_gate_is_the_product_formula(num_experts, k):
    gate = DSelectKGate(num_experts, k=k, gamma=0.8)
    rng = np.random.default_rng(num_experts)
    x = rng.normal(size=(6, 3)).astype("float32")
    gate(x)
    m = gate.num_bits
    z_kernel, z_bias = rng.normal(size=(3, k, m)) * 0.3, rng.normal(size=(k, m)) * 0.3
    a_kernel, a_bias = rng.normal(size=(3, k)), rng.normal(size=(k,))
    set_gate(gate, z_bias, a_bias, z_kernel, a_kernel)
    z = np.einsum("bd,dkm->bkm", x, z_kernel) + z_bias
    alpha = x @ a_kernel + a_bias
    expected = numpy_gate(z, alpha, 0.8, num_experts)
    assert len({tuple(row) for row in expected.round(6)}) == 6  # examples differ
    np.testing.assert_allclose(numpy(gate(x)), expected, rtol=1e-5, atol=1e-6)


def test_static_gate_ignores_the_input():
    gate = DSelectKGate(8, k=2, per_example=False)
    gate(np.zeros((1, 4), "float32"))
    assert gate.z_kernel is None and len(gate.trainable_weights) == 2
    set_gate(gate, [[0.1, -0.2, 0.3], [0.0, 0.4, -0.1]], [0.2, -0.3])
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    expected = numpy_gate(np.array([[0.1, -0.2, 0.3], [0.0, 0.4, -0.1]]), [0.2, -0.3], 1.0, 8)
    np.testing.assert_allclose(numpy(gate(x)), np.tile(expected, (5, 1)), rtol=1e-5)


@pytest.mark.parametrize("num_experts", [2, 4, 8, 16])
@pytest.mark.parametrize("per_example", [True, False])
def test_gate_rows_are_distributions(num_experts, per_example):
    gate = DSelectKGate(num_experts, k=2, per_example=per_example)
    rng = np.random.default_rng(num_experts)
    x = rng.normal(size=(7, 3)).astype("float32")
    for scale in (None, 1.0):  # the initialisation, then weights spread over [-1, 1]
        if scale is not None:
            for w in gate.trainable_weights:
                w.assign(rng.uniform(-scale, scale, tuple(w.shape)).astype("float32"))
        values = numpy(gate(x))
        assert values.shape == (7, num_experts)
        assert np.all(values >= 0)
        np.testing.assert_allclose(values.sum(axis=1), 1.0, rtol=1e-5)


def test_initialisation_follows_the_official_code():
    gate = DSelectKGate(8, k=4, gamma=2.0)
    gate.build((None, 64))
    for w, limit in [(gate.z_kernel, 0.02), (gate.z_bias, 0.02),
                     (gate.alpha_kernel, 0.05), (gate.alpha_bias, 0.05)]:
        values = numpy(w)
        assert np.abs(values).max() <= limit and np.abs(values).max() > 0.5 * limit
    assert tuple(gate.z_kernel.shape) == (64, 4, 3) and tuple(gate.alpha_bias.shape) == (4,)


# --- experts that are not a power of 2 ---------------------------------------------
@pytest.mark.parametrize("num_experts", [3, 5, 6, 7])
def test_padded_codes_get_no_weight(num_experts):
    gate = DSelectKGate(num_experts, k=2)
    rng = np.random.default_rng(num_experts)
    x = rng.normal(size=(6, 3)).astype("float32")
    gate(x)
    m = gate.num_bits
    assert 2 ** (m - 1) < num_experts < 2**m
    # Small z: every smooth step inside its cubic region, every code some mass.
    z_kernel, z_bias = rng.normal(size=(3, 2, m)) * 0.05, rng.normal(size=(2, m)) * 0.05
    a_kernel, a_bias = rng.normal(size=(3, 2)), rng.normal(size=(2,))
    set_gate(gate, z_bias, a_bias, z_kernel, a_kernel)
    z = np.einsum("bd,dkm->bkm", x, z_kernel) + z_bias
    assert np.abs(z).max() < 0.5
    alpha = x @ a_kernel + a_bias
    full = np.einsum("bk,bkc->bc", softmax(alpha), numpy_selectors(z, 1.0))  # all 2^m codes
    values = numpy(gate(x))
    assert values.shape == (6, num_experts)
    np.testing.assert_allclose(values, full[:, :num_experts], rtol=1e-5, atol=1e-6)
    padded = full[:, num_experts:].sum(axis=1)
    assert np.all(padded > 0.05)  # the padded codes do hold mass here
    np.testing.assert_allclose(values.sum(axis=1), 1.0 - padded, rtol=1e-5)


# Only the reachability term trains here: α has no gradient, and Keras says so.
@pytest.mark.filterwarnings("ignore:Gradients do not exist for variables")
@pytest.mark.slow  # trains for seconds; make test-slow
def test_reachability_term_moves_the_mass_to_real_experts():
    # Five experts, three bits: codes 5, 6, 7 are padded. S ≈ 0.9 on every bit
    # puts most of the mass on code 7; the reachability term alone (no task
    # loss, no entropy) must bring it back to the real experts.
    gate = DSelectKGate(5, k=2, per_example=False)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, gate(inputs))
    set_gate(gate, [[0.3, 0.3, 0.3], [0.3, 0.25, 0.35]], [0.0, 0.0])
    x = np.ones((8, 3), "float32")
    before = numpy(gate(x)).sum(axis=1)
    assert np.all(before < 0.5)
    model.compile(keras.optimizers.Adam(0.05))  # no loss but the gate's own
    history = model.fit(x, epochs=60, verbose=0)
    assert history.history["loss"][0] > 1.0
    np.testing.assert_allclose(numpy(gate(x)).sum(axis=1), 1.0, atol=1e-4)
    assert history.history["loss"][-1] < 1e-3


# --- the regularisation terms ---------------------------------------------------------
def test_regularization_by_hand():
    gate = DSelectKGate(5, k=2, entropy_weight=0.3, per_example=False)
    z = np.array([[0.1, -0.2, 0.05], [0.4, 0.0, -0.3]])
    gate(np.ones((2, 3), "float32"))
    set_gate(gate, z, [0.5, -0.5])
    r = numpy_selectors(z, 1.0, 5)
    entropy = -np.sum(r * np.log(r + 1e-6))
    reach = np.sum(1 / r.sum(axis=1) - 1)
    assert entropy > 0 and reach > 0
    gate(np.ones((4, 3), "float32"), training=True)
    assert [float(l) for l in gate.losses] == pytest.approx([0.3 * entropy + reach], rel=1e-5)
    assert float(numpy_regularization(z, 1.0, 5, 0.3)) == pytest.approx(0.3 * entropy + reach)
    gate(np.ones((4, 3), "float32"), training=False)
    assert gate.losses == []  # only while training, as in the official code


def test_per_example_terms_are_batch_means():
    gate = DSelectKGate(4, k=2, entropy_weight=1.0)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 3)).astype("float32")
    gate(x)
    set_gate(gate, rng.normal(size=(2, 2)) * 0.2, [0.0, 0.0],
             rng.normal(size=(3, 2, 2)) * 0.2, np.zeros((3, 2)))
    z = np.einsum("bd,dkm->bkm", x, numpy(gate.z_kernel)) + numpy(gate.z_bias)
    r = numpy_selectors(z, 1.0, 4)
    per_example = -np.sum(r * np.log(r + 1e-6), axis=(1, 2))
    gate(x, training=True)
    assert [float(l) for l in gate.losses] == pytest.approx([per_example.mean()], rel=1e-5)
    # A power of 2 with λ = 0: no term at all.
    quiet = DSelectKGate(4, k=2)
    quiet(x, training=True)
    assert quiet.losses == []


@pytest.mark.slow  # trains for seconds; make test-slow
def test_entropy_term_makes_the_selectors_one_hot():
    # A small regression through one DSelect-k layer (per-example gate). With
    # the entropy term, nearly every example's selectors end one-hot (in the
    # smooth step's flat regions); without it, far fewer do.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = x @ rng.normal(size=(4, 1)).astype("float32")
    xs, ys = np.tile(x, (60, 1)), np.tile(y, (60, 1))  # 60 steps in one epoch

    def train(entropy_weight):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((4,))
        layer = DSelectKLayer(["t"], num_experts=5, expert_units=(8,), k=2,
                              entropy_weight=entropy_weight)
        model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)["t"]))
        model.compile(keras.optimizers.Adam(0.1), "mse")
        model.fit(xs, ys, batch_size=64, epochs=1, verbose=0)
        r, _ = layer.gates[0].selectors(x)
        r = numpy(r)
        entropy = -np.sum(r * np.log(np.maximum(r, 1e-12)), axis=-1).mean()
        return entropy, (r.max(axis=-1) > 0.99).mean(), r.sum(axis=-1)

    entropy, one_hot, mass = train(1.0)
    plain_entropy, plain_one_hot, _ = train(0.0)
    assert one_hot > 0.9 and entropy < 0.03
    assert entropy < 0.25 * plain_entropy and plain_one_hot < one_hot
    np.testing.assert_allclose(mass, 1.0, atol=1e-3)  # no mass left on padded codes


@pytest.mark.slow  # trains for seconds; make test-slow
def test_static_selectors_become_exactly_one_hot():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = x @ rng.normal(size=(4, 1)).astype("float32")
    inputs = keras.Input((4,))
    layer = DSelectKLayer(["t"], num_experts=5, expert_units=(8,), k=2,
                          entropy_weight=0.1, per_example=False)
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)["t"]))
    model.compile(keras.optimizers.Adam(0.05), "mse")
    model.fit(np.tile(x, (60, 1)), np.tile(y, (60, 1)), batch_size=64, epochs=1, verbose=0)
    r, weights = layer.gates[0].selectors(x)
    r = numpy(r)[0]
    np.testing.assert_array_equal(np.sort(r, axis=-1)[:, :-1], 0.0)
    np.testing.assert_array_equal(r.max(axis=-1), 1.0)
    gate = numpy(layer.gate_values(x)["t"])
    assert np.count_nonzero(gate[0]) <= 2  # at most k experts
    np.testing.assert_allclose(gate, np.tile(numpy(weights)[0] @ r, (64, 1)), rtol=1e-6)


# --- in keras_mtl's training step -----------------------------------------------------
@pytest.mark.parametrize(
    "weighting",
    # make test keeps no weighting and a gradient-level method; a loss-level
    # one runs in make test-slow.
    [None, pytest.param(lambda: W.Uncertainty(), marks=pytest.mark.slow), lambda: W.get("pcgrad")],
    ids=["equal", "uncertainty", "pcgrad-params"],
)
def test_regularization_gradient_in_the_training_step(weighting):
    # Two models with the same weights, entropy_weight λ and 0, one SGD step on
    # the same batch: the task parts of their updates are the same, so the
    # gates' z moves by -lr ∂(regularisation)/∂z more in the first (NumPy
    # central differences of the static gate's terms).
    lr, lam = 0.1, 0.5
    z = {"a": np.array([[0.1, -0.2, 0.05], [0.3, 0.1, -0.15]]),
         "b": np.array([[-0.1, 0.2, 0.25], [0.0, -0.3, 0.12]])}
    x, y = random_images(8), random_labels(TASKS, 8)
    steps, initial = {}, None
    for entropy_weight in (lam, 0.0):
        keras.utils.set_random_seed(0)
        architecture = DSelectK(num_experts=5, expert_units=(8,), k=2,
                                entropy_weight=entropy_weight, per_example=False)
        model = keras_mtl.build_model(tiny_backbone(), TASKS, architecture=architecture,
                                      head_units=(8,))
        initial = initial or model.get_weights()
        model.set_weights(initial)  # the same weights in both models
        layer = model.trunk.get_layer("dselect_k")
        for name, gate in zip(NAMES, layer.gates):
            gate.z_bias.assign(z[name].astype("float32"))
        model.compile(optimizer=keras.optimizers.SGD(lr),
                      weighting=None if weighting is None else weighting())
        history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        steps[entropy_weight] = {n: numpy(g.z_bias) - z[n] for n, g in zip(NAMES, layer.gates)}
    for name in NAMES:
        grad = finite_difference(lambda v: numpy_regularization(v, 1.0, 5, lam), z[name]) \
            - finite_difference(lambda v: numpy_regularization(v, 1.0, 5, 0.0), z[name])
        assert np.abs(grad).max() > 1e-2
        np.testing.assert_allclose(steps[lam][name] - steps[0.0][name], -lr * grad,
                                   rtol=1e-3, atol=1e-6)


# --- the architecture --------------------------------------------------------------------
def test_layer_output_is_the_gated_sum_of_the_experts():
    layer = DSelectKLayer(["a", "b", "c"], num_experts=4, expert_units=(6, 5), k=2)
    x = np.random.default_rng(2).normal(size=(3, 7)).astype("float32")
    outputs = layer(x)
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "a": (3, 5), "b": (3, 5), "c": (3, 5)
    }
    experts = numpy_experts(layer.experts, x)
    for name, gate in layer.gate_values(x).items():
        expected = np.einsum("be,beu->bu", numpy(gate), experts)
        np.testing.assert_allclose(numpy(outputs[name]), expected, rtol=1e-5, atol=1e-6)


def test_trunk_pools_a_feature_map():
    trunk = DSelectK(num_experts=3, expert_units=(6,)).build_trunk(tiny_backbone(), NAMES)
    outputs = trunk(random_images(3))
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {"a": (3, 6), "b": (3, 6)}
    assert any(isinstance(layer, keras.layers.GlobalAveragePooling2D) for layer in trunk.layers)
    assert isinstance(trunk.get_layer("dselect_k"), DSelectKLayer)


def test_defaults():
    config = DSelectK().get_config()
    assert config == {"num_experts": 4, "expert_units": [64], "expert_activation": "relu",
                      "k": 2, "gamma": 1.0, "entropy_weight": 0.0, "per_example": True}
    assert DSelectK.from_config(config).get_config() == config
    assert "k=2" in repr(DSelectK())


def test_layer_config_round_trip():
    layer = DSelectKLayer(["x", "y"], num_experts=6, expert_units=(4, 2), k=3, gamma=0.5,
                          entropy_weight=0.01, per_example=False, expert_activation="tanh")
    config = layer.get_config()
    assert DSelectKLayer.from_config(config).get_config() == config
    gate = DSelectKGate(6, k=3, gamma=0.5, entropy_weight=0.01, per_example=False)
    assert DSelectKGate.from_config(gate.get_config()).get_config() == gate.get_config()


@pytest.mark.parametrize(
    "weighting, num_experts, per_example",
    [
        pytest.param(lambda: W.Uncertainty(), 4, True, marks=pytest.mark.slow),
        # make test keeps one fit (under 10 minutes): the static gate's.
        pytest.param(lambda: W.get("pcgrad"), 5, True, marks=pytest.mark.slow),
        (lambda: W.Uncertainty(), 3, False),
    ],
    ids=["uncertainty", "pcgrad-params-padded", "uncertainty-static-padded"],
)
def test_fit_and_keras_round_trip(weighting, num_experts, per_example, tmp_path):
    architecture = DSelectK(num_experts=num_experts, expert_units=(8,), k=2,
                            entropy_weight=0.01, per_example=per_example)
    model, history = fit_and_round_trip(architecture, weighting(), tmp_path)
    for name in NAMES:
        assert f"{name}_loss" in history.history and f"weight_{name}" in history.history
    layer = model.trunk.get_layer("dselect_k")
    assert layer.get_config()["entropy_weight"] == 0.01
    loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    restored = loaded.trunk.get_layer("dselect_k")
    assert isinstance(restored, DSelectKLayer) and restored.get_config() == layer.get_config()
    for w, v in zip(layer.weights, restored.weights):
        np.testing.assert_array_equal(numpy(w), numpy(v))


# --- bad arguments ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_experts": 1}, r"argument `num_experts`. Expected an integer >= 2. "
                             r"Received: num_experts=1"),
        ({"num_experts": 4.0}, r"Received: num_experts=4.0"),
        ({"k": 0}, r"argument `k`. Expected an integer >= 1. Received: k=0"),
        ({"k": 5}, r"argument `k`. Expected an integer between 1 and num_experts=4. "
                   r"Received: k=5"),
        ({"k": True}, r"argument `k`.*Received: k=True"),
        ({"gamma": 0.0}, r"argument `gamma`. Expected a float > 0. Received: gamma=0.0"),
        ({"gamma": float("nan")}, r"argument `gamma`"),
        ({"entropy_weight": -0.1}, r"argument `entropy_weight`. Expected a finite number >= 0"),
        ({"entropy_weight": "big"}, r"Received: entropy_weight='big'"),
        ({"per_example": 1}, r"argument `per_example`. Expected True or False"),
    ],
)
def test_bad_gate_arguments(kwargs, match):
    arguments = {"num_experts": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        DSelectK(**arguments)
    with pytest.raises(ValueError, match=match):
        DSelectKLayer(NAMES, **arguments)
    with pytest.raises(ValueError, match=match):
        DSelectKGate(**arguments)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"expert_units": ()}, r"argument `expert_units`. Expected a non-empty tuple"),
        ({"expert_units": (8, 0)}, r"Received: expert_units=\(8, 0\)"),
        ({"expert_activation": "nope"}, r"argument `expert_activation`.*'nope'"),
    ],
)
def test_bad_expert_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DSelectK(**kwargs)
    with pytest.raises(ValueError, match=match):
        DSelectKLayer(NAMES, **kwargs)


def test_bad_task_names_and_inputs():
    with pytest.raises(ValueError, match=r"argument `task_names`.*\['a', 'a'\]"):
        DSelectKLayer(["a", "a"])
    with pytest.raises(ValueError, match=r"argument `task_names`"):
        DSelectK().build_trunk(tiny_backbone(), "a")
    with pytest.raises(ValueError, match=r"DSelectKLayer expects vectors \(batch, features\)"):
        DSelectKLayer(NAMES)(np.ones((2, 4, 4, 3), "float32"))
    with pytest.raises(ValueError, match=r"DSelectKGate expects vectors \(batch, features\)"):
        DSelectKGate(4)(np.ones((2, 4, 4, 3), "float32"))
