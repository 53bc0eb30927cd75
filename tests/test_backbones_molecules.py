"""The SchNet trunk (`keras_mtl.backbones.molecules`): its symmetries, its
masking of padded atoms, its layers against hand-computed values, its cutoff,
saving, and training as the trunk of a multi-task model."""

import math

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl.backbones.molecules import CosineCutoff
from keras_mtl.backbones.molecules import GaussianExpansion
from keras_mtl.backbones.molecules import InteractionBlock
from keras_mtl.backbones.molecules import InteratomicDistances
from keras_mtl.backbones.molecules import MaskedPooling

MAX_ATOMS = 8
SIZES = dict(num_features=16, num_interactions=2, num_gaussians=12, cutoff=5.0)


def molecules(n=6, max_atoms=MAX_ATOMS, seed=0):
    """`n` random molecules of 3-6 atoms (H, C, N, O, F) within about 2 Å of
    each other, padded to `max_atoms`; padded positions are zeros."""
    rng = np.random.default_rng(seed)
    atoms = np.zeros((n, max_atoms), "int32")
    positions = np.zeros((n, max_atoms, 3), "float32")
    for m in range(n):
        k = rng.integers(3, 7)
        atoms[m, :k] = rng.choice([1, 6, 7, 8, 9], k)
        positions[m, :k] = rng.uniform(-1.2, 1.2, (k, 3))
    return {"atoms": atoms, "positions": positions}


def rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return (q if np.linalg.det(q) > 0 else -q).astype("float32")


def embed(trunk, x):
    return keras.ops.convert_to_numpy(trunk({k: keras.ops.convert_to_tensor(v) for k, v in x.items()}))


@pytest.fixture(scope="module")
def trunk():
    keras.utils.set_random_seed(0)
    return keras_mtl.backbones.schnet(max_atoms=MAX_ATOMS, **SIZES)


def assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_shape_and_layer_names(trunk):
    assert trunk.output.shape == (None, SIZES["num_features"])
    assert sorted(t.name for t in trunk.inputs) == ["atoms", "positions"]
    assert [l.name for l in trunk.layers if isinstance(l, InteractionBlock)] == [
        "interaction_0", "interaction_1"]
    # The representation is not degenerate: molecules differ.
    z = embed(trunk, molecules())
    assert np.isfinite(z).all() and np.std(z, axis=0).max() > 1e-3


def test_invariant_to_rotation_and_translation(trunk):
    x = molecules()
    moved = dict(x, positions=x["positions"] @ rotation(1).T + np.float32([3.0, -7.0, 0.5]))
    assert_close(embed(trunk, moved), embed(trunk, x))


def test_invariant_to_permuting_atoms(trunk):
    x = molecules()
    order = np.random.default_rng(2).permutation(MAX_ATOMS)  # padding slots move too
    permuted = {"atoms": x["atoms"][:, order], "positions": x["positions"][:, order]}
    assert_close(embed(trunk, permuted), embed(trunk, x))


def test_invariant_to_the_amount_of_padding(trunk):
    wider = keras_mtl.backbones.schnet(max_atoms=12, **SIZES)
    wider.set_weights(trunk.get_weights())
    x = molecules()
    padded = molecules(max_atoms=12)  # same seed, same molecules, 4 more slots
    np.testing.assert_array_equal(padded["atoms"][:, :MAX_ATOMS], x["atoms"])
    assert_close(embed(wider, padded), embed(trunk, x))


def test_padded_atoms_contribute_nothing(trunk):
    x = molecules()
    noisy = x["positions"].copy()
    padding = x["atoms"] == 0
    # Padded slots on top of real atoms, or anywhere: nothing changes.
    noisy[padding] = np.random.default_rng(3).uniform(-2, 2, (padding.sum(), 3))
    noisy[0, -1] = x["positions"][0, 0]
    assert_close(embed(trunk, dict(x, positions=noisy)), embed(trunk, x))


def test_beyond_the_cutoff_fragments_do_not_interact(trunk):
    x = molecules(2, seed=4)
    x["atoms"][0, 3:], x["positions"][0, 3:] = 0, 0.0  # fragments of 3 and <= 5 atoms
    a, b = (int((x["atoms"][i] > 0).sum()) for i in (0, 1))
    joined = {"atoms": np.zeros((1, MAX_ATOMS), "int32"),
              "positions": np.zeros((1, MAX_ATOMS, 3), "float32")}
    joined["atoms"][0, :a], joined["atoms"][0, a:a + b] = x["atoms"][0, :a], x["atoms"][1, :b]
    joined["positions"][0, :a] = x["positions"][0, :a]
    # Second fragment 20 Å away (cutoff 5 Å).
    joined["positions"][0, a:a + b] = x["positions"][1, :b] + np.float32([20.0, 0.0, 0.0])
    separate = embed(trunk, x)
    assert_close(embed(trunk, joined)[0], separate[0] + separate[1])
    # Within the cutoff they do interact.
    joined["positions"][0, a:a + b] -= np.float32([18.0, 0.0, 0.0])
    assert np.abs(embed(trunk, joined)[0] - (separate[0] + separate[1])).max() > 1e-3


def test_an_atom_does_not_interact_with_itself():
    positions = keras.ops.convert_to_tensor([[[0, 0, 0], [3, 4, 0], [1, 1, 1]]], "float32")
    distances, pairs = InteratomicDistances()(positions, keras.ops.convert_to_tensor([[6, 1, 0]]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(distances)[0],
                               [[0, 5, 0], [5, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(pairs)[0],
                                  [[0, 1, 0], [1, 0, 0], [0, 0, 0]])


def test_gaussian_expansion_by_hand():
    # Centres 0, 1, 2, 3, 4 Å; width = spacing = 1 Å: exp(-(d - mu)^2 / 2).
    expanded = GaussianExpansion(num_gaussians=5, cutoff=4.0)(keras.ops.convert_to_tensor([1.5, 0.0]))
    expected = [[math.exp(-1.125), math.exp(-0.125), math.exp(-0.125), math.exp(-1.125),
                 math.exp(-3.125)],
                [1.0, math.exp(-0.5), math.exp(-2.0), math.exp(-4.5), math.exp(-8.0)]]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(expanded), expected, rtol=1e-6)


def test_cosine_cutoff_by_hand():
    # 0.5 (cos(pi d / 3) + 1): cos(pi/3) = 1/2, cos(pi/2) = 0, cos(2 pi/3) = -1/2.
    d = keras.ops.convert_to_tensor([0.0, 1.0, 1.5, 2.0, 3.0, 4.5])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(CosineCutoff(3.0)(d)),
                               [1.0, 0.75, 0.5, 0.25, 0.0, 0.0], atol=1e-6)


def test_mean_pooling_divides_by_the_number_of_real_atoms():
    x = keras.ops.convert_to_tensor(np.arange(12, dtype="float32").reshape(2, 3, 2))
    atoms = keras.ops.convert_to_tensor([[1, 6, 0], [0, 0, 0]])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(MaskedPooling("sum")(x, atoms)),
                               [[2, 4], [0, 0]])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(MaskedPooling("mean")(x, atoms)),
                               [[1, 2], [0, 0]])


def test_round_trips_through_keras_file(trunk, tmp_path):
    path = str(tmp_path / "schnet.keras")
    trunk.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = molecules()
    np.testing.assert_allclose(embed(loaded, x), embed(trunk, x), rtol=1e-6, atol=1e-6)
    for layer in trunk.layers:
        assert loaded.get_layer(layer.name).get_config() == layer.get_config()


def test_multi_task_model_learns_atom_counts():
    keras.utils.set_random_seed(0)
    tasks = [keras_mtl.tasks.Regression("atoms_count"), keras_mtl.tasks.Regression("heavy_atoms")]
    model = keras_mtl.build_model(
        keras_mtl.backbones.schnet(max_atoms=MAX_ATOMS, pooling="mean", **SIZES), tasks,
        head_units=(16,))
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    x = molecules(64, seed=5)
    y = {"atoms_count": (x["atoms"] > 0).sum(1, keepdims=True).astype("float32") - 4.5,
         "heavy_atoms": (x["atoms"] > 1).sum(1, keepdims=True).astype("float32") - 3.5}
    history = model.fit(x, y, batch_size=16, epochs=8, verbose=0).history  # 32 steps
    assert np.isfinite(history["loss"]).all()
    assert history["loss"][-1] < 0.5 * history["loss"][0], history["loss"]


@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["pcgrad", "mgda_params"])
def test_trains_with_gradient_methods(weighting):
    if weighting == "mgda_params":
        weighting = keras_mtl.weighting.MGDA(mode="params")
    model = keras_mtl.build_model(
        keras_mtl.backbones.schnet(max_atoms=MAX_ATOMS, **SIZES),
        [keras_mtl.tasks.Regression("u0"), keras_mtl.tasks.Regression("homo")],
        head_units=(32,))
    model.compile(optimizer="adam", weighting=weighting)
    x = molecules(32, seed=6)
    rng = np.random.default_rng(6)
    y = {"u0": rng.normal(size=(32, 1)).astype("float32"),
         "homo": rng.normal(size=(32, 1)).astype("float32")}
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    assert {"weight_u0", "weight_homo"} <= set(history)


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_atoms=0), r"argument `max_atoms`. Expected an integer >= 1. Received: max_atoms=0"),
    (dict(num_features=2.5), r"`num_features`. Expected an integer >= 1. Received: num_features=2.5"),
    (dict(num_interactions=0), r"`num_interactions`.*Received: num_interactions=0"),
    (dict(num_gaussians=1), r"`num_gaussians`. Expected an integer >= 2. Received: num_gaussians=1"),
    (dict(cutoff=0.0), r"`cutoff`. Expected a float > 0. Received: cutoff=0.0"),
    (dict(cutoff=float("inf")), r"`cutoff`.*Received: cutoff=inf"),
    (dict(max_atomic_number=True), r"`max_atomic_number`.*Received: max_atomic_number=True"),
    (dict(pooling="max"), r"`pooling`. Expected one of \('sum', 'mean'\). Received: pooling='max'"),
])
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_mtl.backbones.schnet(**kwargs)


def test_interaction_block_checks_feature_width():
    block = InteractionBlock(num_features=4, num_filters=4)
    with pytest.raises(ValueError, match=r"num_features=4. Received: features of shape \(2, 3, 5\)"):
        block(keras.ops.ones((2, 3, 5)), keras.ops.ones((2, 3, 3, 6)), keras.ops.ones((2, 3, 3)))



def position_gradients(trunk, x):
    """d(sum of the outputs)/d(positions), with the backend's own autodiff."""
    atoms = keras.ops.convert_to_tensor(x["atoms"])
    if keras.backend.backend() == "jax":
        import jax

        return np.asarray(jax.grad(lambda p: trunk({"atoms": atoms, "positions": p}).sum())(
            x["positions"]))
    import tensorflow as tf

    positions = tf.constant(x["positions"])
    with tf.GradientTape() as tape:
        tape.watch(positions)
        total = tf.reduce_sum(trunk({"atoms": atoms, "positions": positions}))
    return tape.gradient(total, positions).numpy()


@pytest.mark.skipif(keras.backend.backend() not in ("tensorflow", "jax"), reason="TF or JAX")
def test_gradients_with_respect_to_positions_are_finite(trunk):
    # Forces are -dE/dr: the diagonal and the padded pairs (distance 0) must
    # not put a NaN from sqrt'(0) into them (JAX would; TensorFlow's sqrt
    # gradient happens to give 0 there).
    x = molecules()
    forces = position_gradients(trunk, x)
    assert np.isfinite(forces).all()
    assert (forces[x["atoms"] == 0] == 0).all() and np.abs(forces[x["atoms"] > 0]).max() > 0
