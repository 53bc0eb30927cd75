"""A non-finite step stops `fit` under every registered method, and no
checkpoint on disk ever holds a non-finite weight.

Two ways a step goes wrong: a NaN in an input batch (every loss NaN), and
finite losses with non-finite gradients (`sqrt(|k x|)` at `x = 0`: its
gradient is inf × 0). Both happen in the second epoch, after a checkpoint
of the first was written every batch; `fit` must raise (a `ValueError` for
the inputs, a `FloatingPointError` for the gradients) naming the epoch and
step, and the checkpoint must still hold the last finite weights.
"""

import h5py
import keras
import numpy as np
import pytest
from keras import ops

import keras_mtl
from keras_mtl import tasks as T

from conftest import make_weighting, random_labels, registered_methods

TASKS = [T.Regression("a"), T.BinaryClassification("b"), T.MulticlassClassification("c", 3)]
SHAPE = (8, 8, 3)


class SqrtScale(keras.layers.Layer):
    """`sqrt(|k x|)`: finite everywhere, its gradient in `k` is NaN at `x = 0`."""

    def build(self, input_shape):
        self.k = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="k")

    def call(self, x):
        return ops.sqrt(ops.abs(x * self.k))


def model_for(method):
    inputs = keras.Input(SHAPE)
    x = SqrtScale()(inputs)
    # No ReLU anywhere: fused CPU kernels may map a NaN to 0 in the forward
    # pass; here a NaN input reaches every loss on every backend.
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)
    trunk = keras.Model(inputs, x)
    model = keras_mtl.build_model(trunk, TASKS, head_units=())
    model.compile(optimizer=keras.optimizers.SGD(0.01), weighting=make_weighting(method, TASKS))
    return model


def batches(spoil):
    """Batches of 4, two per epoch (`steps_per_epoch=2`); `spoil(x)` is
    applied to the fourth: the second step of the second epoch."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.0, (8, *SHAPE)).astype("float32")
    y = random_labels(TASKS, 8, SHAPE)
    step = 0
    while True:
        part = slice(4 * (step % 2), 4 * (step % 2) + 4)
        x_batch = spoil(x[part].copy()) if step == 3 else x[part]
        yield x_batch, {k: v[part] for k, v in y.items()}
        step += 1


def nan_input(x):
    x[0, 0, 0, 0] = np.nan
    return x


def zero_input(x):
    return np.zeros_like(x)


def finite_file(path):
    """Whether every array in an HDF5 weights file is finite, and how many."""
    arrays = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda _, obj: arrays.append(obj[()]) if isinstance(obj, h5py.Dataset) else None)
    floats = [a for a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating)]
    return all(np.isfinite(a).all() for a in floats), len(floats)


def fit_until_it_stops(method, spoil, tmp_path, error=FloatingPointError):
    model = model_for(method)
    path = str(tmp_path / "last.weights.h5")
    checkpoint = keras.callbacks.ModelCheckpoint(path, save_weights_only=True, save_freq=1)
    with pytest.raises(error, match=r"epoch 2, step 2") as error:
        model.fit(batches(spoil), epochs=3, steps_per_epoch=2, callbacks=[checkpoint], verbose=0)
    finite, count = finite_file(path)
    assert count > 0 and finite, "a checkpoint holds non-finite weights"
    return str(error.value)


@pytest.mark.parametrize("method", registered_methods())
def test_a_nan_input_stops_fit_and_no_checkpoint_holds_it(method, tmp_path):
    # Bad data, not arithmetic: a `ValueError` naming the inputs.
    message = fit_until_it_stops(method, nan_input, tmp_path, error=ValueError)
    assert "the inputs (`x`) hold NaN or inf values in 1 step" in message


@pytest.mark.parametrize("method", ["equal", "uncertainty", "pcgrad", "nash_mtl"])
def test_finite_losses_with_non_finite_gradients_stop_fit(method, tmp_path):
    message = fit_until_it_stops(method, zero_input, tmp_path)
    assert "every task loss is finite" in message


@pytest.mark.slow
@pytest.mark.parametrize("method", registered_methods())
def test_finite_losses_with_non_finite_gradients_stop_fit_under_every_method(method, tmp_path):
    fit_until_it_stops(method, zero_input, tmp_path)


def test_the_guard_can_be_turned_off():
    model = model_for("equal")
    model.compile(optimizer=keras.optimizers.SGD(0.01), stop_on_nonfinite=False)
    history = model.fit(batches(nan_input), epochs=2, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and np.isnan(history.history["loss"][1])
