"""A task whose loss is always negative trains under every method.

Presence is the labelled count, never the loss's sign: a "closeness" loss
`-exp(-(y - p)²)` in [-1, 0) is a labelled task's loss like any other. The
methods that take a logarithm of the losses (FAMO, GeometricLoss,
ScaleInvariant, SmoothTchebycheff) are given the loss's lower bound (`min_losses`); without it
they say so.
"""

import inspect

import keras
import numpy as np
import pytest
from keras import ops

from keras_mtl import tasks as T

from conftest import make_weighting, random_images, registered_methods, tiny_model


def closeness(y_true, y_pred):
    return -ops.mean(ops.exp(-ops.square(y_true - y_pred)), axis=-1)


TASKS = [T.Regression("near", loss=closeness), T.BinaryClassification("b")]


def data(n=32):
    rng = np.random.default_rng(1)
    x = random_images(n) / 255.0  # small activations: the closeness loss keeps a gradient
    y = {"near": np.full((n, 1), 0.8, "float32"),
         "b": rng.integers(0, 2, (n, 1)).astype("float32")}
    return x, y


#: The lower bound a method with `min_losses` gets: the loss's minimum, -1,
#: or below it by a margin for ScaleInvariant and SmoothTchebycheff (whose
#: warm-up is ScaleInvariant), whose weight 1 / (L - m) grows without limit as
#: the loss nears its bound (at -1, SGD overshoots into the closeness loss's
#: flat tails).
BOUNDS = {"scale_invariant": -1.25, "stch": -1.25, "db_mtl": -1.25}


def weighting_for(method):
    cls = __import__("keras_mtl").weighting.get_class(method)
    if "min_losses" in inspect.signature(cls).parameters:
        return make_weighting(method, TASKS, min_losses={"near": BOUNDS.get(method, -1.0)})
    return make_weighting(method, TASKS)


@pytest.mark.parametrize("method", registered_methods())
def test_an_always_negative_loss_trains(method):
    model = tiny_model(TASKS)
    model.compile(optimizer=keras.optimizers.SGD(0.05), weighting=weighting_for(method))
    x, y = data()
    before_loss = model.evaluate(x, y, verbose=0, return_dict=True)["near_loss"]
    before = [w.copy() for w in model.heads["near"].get_weights()]
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    after_loss = model.evaluate(x, y, verbose=0, return_dict=True)["near_loss"]
    assert before_loss < 0 and all(np.isfinite(history.history["loss"]))
    assert any(not np.allclose(a, b) for a, b in zip(before, model.heads["near"].get_weights()))
    assert after_loss < before_loss, (before_loss, after_loss)


@pytest.mark.parametrize("method", ["famo", "gls", "si", "stch", "imtl_l"])
def test_log_methods_without_a_lower_bound_say_how_to_give_one(method):
    model = tiny_model(TASKS)
    model.compile(optimizer=keras.optimizers.SGD(0.05), weighting=method)
    x, y = data(8)
    with pytest.raises(FloatingPointError, match=r"min_losses.*'near'"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
