"""What the distribution checks train (`distributed_check.py` on TensorFlow,
`jax_distribution_check.py` on JAX): the model, the data and the methods,
without importing a backend's distribution API."""

import keras
import numpy as np
from keras import ops

import keras_mtl
from keras_mtl import tasks as T
from keras_mtl.weighting.gradient_base import GradientWeighting


class NormalisedGradients(GradientWeighting):
    """w_i = 1/‖g_i‖: depends on the Gram matrix, so a wrong cross-replica
    reduction shows."""

    def gram_weights(self, gram, losses, labelled, training):
        return ops.where(labelled, ops.rsqrt(ops.maximum(ops.diagonal(gram), 1e-12)), 0.0)


def make_weighting(method, mode):
    """`method` (a registry name, "normalised" or "nash_mtl_every2") in
    `mode` ("loss" for loss-level methods)."""
    if method == "normalised":
        return NormalisedGradients(mode=mode)
    if method == "nash_mtl_every2":
        # Reuse steps: in params mode they skip the per-task gradients.
        return keras_mtl.weighting.NashMTL(mode=mode, update_every=2, max_norm=1.0)
    if method == "inverse_size":
        return keras_mtl.weighting.InverseSize(counts={"a": 20, "b": 40, "s": 28})
    if mode == "loss":
        return keras_mtl.weighting.get_class(method)()
    return keras_mtl.weighting.get_class(method)(mode=mode)


#: Epochs of 5 steps: 3 for loss-level methods, whose state changes at
#: epoch ends too (DWA's weights from the second epoch's end on, STCH's nadir
#: after its warm-up), 1 for gradient-level ones (their state moves at steps).
EPOCHS = {"loss": 3}


def trunk():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(4, 3, strides=2, padding="same")(x))


def model(method, mode):
    """The three-task model, compiled with `method` (seeded: every call
    starts from the same weights)."""
    keras.utils.set_random_seed(0)
    tasks = [T.Regression("a"), T.BinaryClassification("b"), T.Segmentation("s", 3)]
    built = keras_mtl.build_model(trunk(), tasks, head_units=(8,))
    built.compile(optimizer=keras.optimizers.SGD(0.01), weighting=make_weighting(method, mode))
    return built


def data(n=40):
    """`(x, y)`: 5 steps of a global batch of 8, with uneven partial labels
    (so replicas hold different label counts)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (n, 16, 16, 3)).astype("float32")
    y = {
        "a": rng.normal(size=(n, 1)).astype("float32"),
        "b": rng.integers(0, 2, (n, 1)).astype("float32"),
        "s": rng.integers(0, 3, (n, 16, 16)).astype("int32"),
    }
    y["a"][rng.random(n) < 0.5] = np.nan
    y["s"][rng.random(n) < 0.3] = -1
    return x, y


def difference(a, b):
    """The largest difference of two arrays, relative to `a`'s values where
    those exceed 1 in magnitude (a weighting's state, such as Nash-MTL's
    unnormalised weights, can be large)."""
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1.0)))
