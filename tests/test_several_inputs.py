"""Trunks with several inputs (text, graphs): the model takes the trunk's
inputs by their names, and everything downstream (weighting, both gradient
modes, saving, export, multi-dataset fit) is unchanged."""

import keras
import numpy as np
import pytest

import keras_mtl

N, ATOMS = 24, 5


def two_input_trunk():
    """A toy molecule encoder: atom types and positions, pooled."""
    types = keras.Input((ATOMS,), dtype="int32", name="atoms")
    positions = keras.Input((ATOMS, 3), name="positions")
    x = keras.layers.Concatenate()([keras.layers.Embedding(4, 6)(types),
                                    keras.layers.Dense(6)(positions)])
    x = keras.layers.Dense(8, activation="relu")(x)
    z = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model({"atoms": types, "positions": positions}, z, name="encoder")


def batch(seed=0):
    rng = np.random.default_rng(seed)
    x = {"atoms": rng.integers(0, 4, (N, ATOMS)).astype("int32"),
         "positions": rng.normal(size=(N, ATOMS, 3)).astype("float32")}
    y = {"energy": rng.normal(size=(N, 1)).astype("float32"),
         "polar": rng.integers(0, 2, (N, 1)).astype("float32")}
    return x, y


TASKS = [keras_mtl.tasks.Regression("energy"), keras_mtl.tasks.BinaryClassification("polar")]


def test_the_model_takes_the_trunks_inputs_by_name():
    model = keras_mtl.build_model(two_input_trunk(), TASKS, head_units=(4,))
    assert sorted(t.name for t in model.inputs) == ["atoms", "positions"]
    assert model.image_shape is None and model.several_inputs
    x, _ = batch()
    out = model.predict(x, verbose=0)
    assert out["energy"].shape == (N, 1) and out["polar"].shape == (N, 1)
    z = model.representation({k: keras.ops.convert_to_tensor(v) for k, v in x.items()})
    assert tuple(z.shape) == (N, 8)


@pytest.mark.parametrize("weighting", [
    "uncertainty", "pcgrad", keras_mtl.weighting.MGDA(mode="params")])
def test_fit_with_each_kind_of_weighting(weighting):
    model = keras_mtl.build_model(two_input_trunk(), TASKS, head_units=(4,))
    model.compile(optimizer="adam", weighting=weighting)
    x, y = batch()
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert {"weight_energy", "weight_polar", "energy_mae"} <= set(history.history)


def test_round_trips_through_keras_file(tmp_path):
    model = keras_mtl.build_model(two_input_trunk(), TASKS, head_units=(4,))
    model.compile(optimizer="adam", weighting="dwa")
    x, y = batch()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert loaded.several_inputs and loaded.image_shape is None
    expected, got = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-6)


def test_nonfinite_float_input_is_named():
    model = keras_mtl.build_model(two_input_trunk(), TASKS, head_units=(4,))
    model.compile(optimizer="adam")
    x, y = batch()
    x["positions"][3, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"index 3.*inputs \(`x`\) hold NaN or inf"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_mistakes_are_named():
    trunk = two_input_trunk()
    with pytest.raises(ValueError, match=r"argument `input_shape`. Expected None.*"
                                         r"\['atoms', 'positions'\]"):
        keras_mtl.build_model(trunk, TASKS, input_shape=(5, 3))
    with pytest.raises(ValueError, match=r"argument `preprocessing`.*several inputs"):
        keras_mtl.MultiTaskModel(trunk, TASKS, preprocessing="tf")
    with pytest.raises(ValueError, match=r"Dense tasks \['mask'\].*no image input"):
        keras_mtl.build_model(trunk, [keras_mtl.tasks.Segmentation("mask", 2)])
    with pytest.raises(ValueError, match=r"Task 'atoms' has the name of the model's input"):
        keras_mtl.build_model(trunk, [keras_mtl.tasks.Regression("atoms")])
    with pytest.raises(ValueError, match=r"argument `weights`. 'imagenet'"):
        keras_mtl.build_model(trunk, TASKS, weights="imagenet")


def test_a_dict_of_outputs_is_read_at_pooled_output():
    inputs = {"a": keras.Input((3,), name="a"), "b": keras.Input((3,), name="b")}
    both = keras.layers.Concatenate()([inputs["a"], inputs["b"]])
    pooled = keras.layers.Dense(4, name="pool")(both)
    trunk = keras.Model(inputs, {"sequence_output": both, "pooled_output": pooled})
    model = keras_mtl.build_model(trunk, TASKS[:1], head_units=(2,))
    assert tuple(model.trunk.output.shape) == (None, 4)
    unnamed = keras.Model(inputs, {"first": both, "second": pooled}, name="two")
    with pytest.raises(ValueError, match=r"'two' gives \['first', 'second'\].*backbone.output\[name\]"):
        keras_mtl.build_model(unnamed, TASKS[:1])


def test_interleaved_sources_with_dict_inputs():
    tf = pytest.importorskip("tensorflow")
    x, y = batch()
    first = tf.data.Dataset.from_tensor_slices((x, {"energy": y["energy"]})).batch(8)
    second = tf.data.Dataset.from_tensor_slices((x, {"polar": y["polar"]})).batch(8)
    train = keras_mtl.data.interleave({"one": first, "two": second}, "round_robin")
    model = keras_mtl.build_model(two_input_trunk(), TASKS, head_units=(4,))
    model.compile(optimizer="adam", weighting="pcgrad")
    history = model.fit(train, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
