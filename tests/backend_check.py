"""Child process for tests/test_gradients_jax.py: trains one gradient-level
method for one step on the backend named by KERAS_BACKEND.

Usage: KERAS_BACKEND=... python backend_check.py OUTDIR MODE:METHOD [MODE:METHOD ...]

The first backend to run writes the initial weights to `OUTDIR/init.npz`;
the other loads them, so both start from the same point whatever their
random number generators. Each method's trained variables go to
`OUTDIR/<backend>_<mode>_<method>.npz`, and its History to the `.json` beside.
"""

import json
import os
import sys

import keras
import numpy as np

import keras_mtl
from keras_mtl import tasks as T

TASKS = [T.Regression("a"), T.BinaryClassification("b"), T.Segmentation("s", 3)]


#: Seeds for the methods that draw random numbers (task orders, masks).
SEEDS = {"pcgrad": 3, "grad_vac": 3, "grad_drop": 3}


def data(n=8):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (n, 16, 16, 3)).astype("float32")
    y = {
        "a": rng.normal(size=(n, 1)).astype("float32"),
        "b": rng.integers(0, 2, (n, 1)).astype("float32"),
        "s": rng.integers(0, 3, (n, 16, 16)).astype("int32"),
    }
    y["a"][rng.random(n) < 0.3] = np.nan  # partial labels
    return x, y


def model_for(method, mode, init_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)  # non-trainable state on the path
    trunk = keras.Model(inputs, keras.layers.Conv2D(4, 3, strides=2, padding="same")(x))
    model = keras_mtl.build_model(trunk, TASKS, head_units=(8,))
    if os.path.exists(init_path):
        with np.load(init_path) as saved:
            model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
    else:
        np.savez(init_path, *model.get_weights())
    kwargs = {"seed": SEEDS[method]} if method in SEEDS else {}
    weighting = keras_mtl.weighting.get_class(method)(mode=mode, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.01), weighting=weighting)
    return model


def train(outdir, mode, method):
    """Trains one method; returns the path stem of what it wrote."""
    model = model_for(method, mode, os.path.join(outdir, "init.npz"))
    x, y = data()
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    stem = os.path.join(outdir, f"{keras.backend.backend()}_{mode}_{method}")
    np.savez(stem + ".npz", *[keras.ops.convert_to_numpy(v) for v in model.variables])
    with open(stem + ".json", "w") as f:
        json.dump(history.history, f)
    return stem


def main(outdir, *cases):
    for case in cases:
        mode, method = case.split(":")
        train(outdir, mode, method)
        print("DONE", case, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
