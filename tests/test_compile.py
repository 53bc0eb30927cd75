"""`compile()` any number of times, with anything.

The researcher's workflow: one model, several weighting methods in turn.
Each compile replaces the previous one's weighting, metrics and state;
`.keras` files and checkpoints hold only the current state; weights loaded
before or after `compile` restore the weighting's state.
"""

import zipfile

import h5py
import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl import tasks as T

from conftest import random_images, random_labels, tiny_model

TASKS = [T.Regression("a"), T.BinaryClassification("b"), T.MulticlassClassification("c", 3)]
NAMES = [t.name for t in TASKS]


def data(n=16):
    return random_images(n) / 255.0, random_labels(TASKS, n)


def expected_keys(weighting):
    keys = {"loss", "a_loss", "a_mae", "a_rmse", "b_loss", "b_accuracy", "b_auc",
            "c_loss", "c_accuracy"}
    return keys | ({f"weight_{n}" for n in NAMES} if weighting else set())


def saved_arrays(path):
    """Sorted `(shape, dtype)` of every array in a `.keras` file's weights."""
    arrays = []
    with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as raw:
        with h5py.File(raw, "r") as f:
            f.visititems(
                lambda _, o: arrays.append((o.shape, str(o.dtype)))
                if isinstance(o, h5py.Dataset) else None)
    return sorted(arrays)


def once(weighting, tmp_path):
    """The arrays saved by a model compiled once with `weighting`, trained."""
    model = tiny_model(TASKS)
    model.compile(optimizer="adam", weighting=weighting)
    model.fit(*data(), batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "once.keras")
    return saved_arrays(tmp_path / "once.keras")


@pytest.mark.slow  # make test stays under 10 minutes; make test-slow runs it
def test_uncertainty_pcgrad_dwa_none_on_one_model(tmp_path):
    model = tiny_model(TASKS)
    x, y = data()
    for weighting in ["uncertainty", "pcgrad", "dwa", None]:
        model.compile(optimizer="adam", weighting=weighting)
        before = [w.copy() for w in model.trunk.get_weights()]
        history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"]).all(), weighting
        moved = [not np.allclose(a, b) for a, b in zip(before, model.trunk.get_weights())]
        assert any(moved), f"{weighting}: the trunk did not train"
        logs = model.evaluate(x, y, verbose=0, return_dict=True)
        # The weights are training's: `evaluate` leaves them out.
        assert set(logs) == expected_keys(None), weighting
        assert set(history.history) == expected_keys(weighting), weighting
        names = [m.name for m in model.metrics]
        assert len(names) == len(set(names)) == len({id(m) for m in model.metrics})
        if weighting == "dwa":
            model.save(tmp_path / "third.keras")
            assert saved_arrays(tmp_path / "third.keras") == once("dwa", tmp_path)
    model.save(tmp_path / "last.keras")
    assert saved_arrays(tmp_path / "last.keras") == once(None, tmp_path)
    restored = keras.models.load_model(tmp_path / "last.keras", safe_mode=True)
    assert restored.weighting is None
    assert set(restored.evaluate(x, y, verbose=0, return_dict=True)) == expected_keys(None)


def test_metrics_are_listed_once():
    model = tiny_model(TASKS)
    model.compile(weighting="uncertainty")
    model.compile(weighting="uncertainty")
    # Keras' loss tracker; per task its loss tracker and metrics; the task
    # weights; the step checks (which log nothing).
    expected = 1 + 3 + (2 + 2 + 1) + 1 + 1
    assert len(model.metrics) == expected
    model.compile()
    assert len(model.metrics) == expected - 1


def test_the_variables_are_those_of_the_current_compile():
    model = tiny_model(TASKS)
    model.compile(weighting="uncertainty")
    uncertainty = {id(v) for v in model.weighting.variables}
    assert uncertainty <= {id(v) for v in model.variables}
    model.compile(weighting="famo")
    assert not uncertainty & {id(v) for v in model.variables}
    assert {id(v) for v in model.weighting.variables} <= {id(v) for v in model.variables}


def trained(weighting):
    model = tiny_model(TASKS)
    model.compile(optimizer="adam", weighting=weighting)
    model.fit(*data(), batch_size=8, epochs=2, verbose=0)
    return model


def assert_same_state(a, b):
    for x, y in zip(a.state_arrays(), b.state_arrays(), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("order", ["load_then_compile", "compile_then_load"])
def test_load_weights_restores_the_weighting_state(order, tmp_path):
    source = trained("famo")
    path = str(tmp_path / "w.weights.h5")
    source.save_weights(path)
    target = tiny_model(TASKS)
    if order == "load_then_compile":
        target.load_weights(path)
        target.compile(weighting="famo")
    else:
        target.compile(weighting="famo")
        target.load_weights(path)
    assert_same_state(source.weighting, target.weighting)
    for a, b in zip(source.get_weights(), target.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_loading_another_methods_state_says_so(tmp_path):
    path = str(tmp_path / "w.weights.h5")
    trained("dwa").save_weights(path)
    target = tiny_model(TASKS)
    target.compile(weighting="uncertainty")
    with pytest.raises(ValueError, match=r"state of the weighting 'dynamic_weight_average'.*compiled with 'uncertainty'"):
        target.load_weights(path)
    # Loaded before compile: the error comes at the compile that cannot take it.
    other = tiny_model(TASKS)
    other.load_weights(path)
    with pytest.raises(ValueError, match=r"state of the weighting 'dynamic_weight_average'"):
        other.compile(weighting="uncertainty")


def test_a_keras_file_saved_after_several_compiles_round_trips(tmp_path):
    model = trained("uncertainty")
    model.compile(optimizer="adam", weighting="famo")
    model.fit(*data(), batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert type(restored.weighting) is keras_mtl.weighting.FAMO
    assert_same_state(model.weighting, restored.weighting)


def test_a_weighting_instance_belongs_to_one_model():
    weighting = keras_mtl.weighting.Uncertainty()
    first = tiny_model(TASKS)
    first.compile(weighting=weighting)
    first.compile(weighting=weighting)  # the same model again: fine
    with pytest.raises(ValueError, match=r"weighting.*already.*model"):
        tiny_model(TASKS).compile(weighting=weighting)
