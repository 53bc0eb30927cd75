"""Every gradient-level method, in each mode it supports, trains the shapes
HydraNet (classification + regression + segmentation) with `model.fit`,
reports its weights as `weight_<task>` metrics, and its state survives a
`.keras` round trip."""

import keras
import numpy as np
import pytest

from keras_mtl import tasks as T
from keras_mtl import weighting as W
from keras_mtl.datasets import shapes

from conftest import registered_methods, tiny_model

# Long (each trains models): `make test-slow` runs them.
pytestmark = pytest.mark.slow


METHODS = [W.get_class(name) for name in registered_methods("gradient")]
CASES = [(cls, mode) for cls in METHODS for mode in cls.supported_modes]
TASKS = [
    T.MulticlassClassification("shape", shapes.NUM_CLASSES),
    T.Regression("size"),
    T.Segmentation("segmentation", shapes.NUM_SEGMENTATION_CLASSES),
]
EPOCHS = 4


@pytest.fixture(scope="module")
def data():
    dataset = shapes.load("train", num_examples=32, image_size=16, tasks=[t.name for t in TASKS])
    return next(iter(dataset.batch(32)))


def _weighting(cls, mode):
    kwargs = {"mode": mode}
    if cls in (W.PCGrad, W.GradVac, W.GradDrop):
        kwargs["seed"] = 0
    if cls is W.NashMTL:
        kwargs["update_every"] = 2  # reuse steps (no per-task gradients in params mode) too
    return cls(**kwargs)


@pytest.mark.parametrize("cls, mode", CASES, ids=[f"{c.__name__}-{m}" for c, m in CASES])
def test_trains_the_shapes_hydranet_and_round_trips(cls, mode, data, tmp_path):
    images, labels = data
    keras.utils.set_random_seed(0)
    model = tiny_model(TASKS)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), weighting=_weighting(cls, mode))
    history = model.fit(
        images, labels, batch_size=16, epochs=EPOCHS, shuffle=False, verbose=0
    ).history

    for key in ["loss"] + [f"{t.name}_loss" for t in TASKS]:
        assert np.all(np.isfinite(history[key])), (key, history[key])
    for t in TASKS:
        weights = np.asarray(history[f"weight_{t.name}"])
        assert weights.shape == (EPOCHS,) and np.all(np.isfinite(weights)), (t.name, weights)
    # A sanity check, not a benchmark: the tasks' summed loss goes down.
    summed = sum(np.asarray(history[f"{t.name}_loss"]) for t in TASKS)
    assert summed[-1] < summed[0], summed

    path = str(tmp_path / "hydranet.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored.weighting) is cls
    assert restored.weighting.get_config() == model.weighting.get_config()
    pairs = zip(model.weighting.variables, model.weighting.state_arrays(),
                restored.weighting.state_arrays(), strict=True)
    for variable, a, b in pairs:
        np.testing.assert_array_equal(a, b, err_msg=variable.path)
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
