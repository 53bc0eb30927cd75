"""Shared test helpers: tiny trunks and data, so the suite stays fast on CPU."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: The child-process scripts (`*_check.py`) set up their process when imported
#: (logical devices, KERAS_BACKEND, XLA_FLAGS); `--doctest-modules` would
#: import them into pytest's own process, whose environment every later child
#: then inherits (CI once ran the TensorFlow checks on JAX that way).
collect_ignore_glob = ["*_check.py"]

#: What the environment said before any test module was imported
#: (tests/test_imports.py checks that collecting left it alone).
ENVIRONMENT_AT_START = {name: os.environ.get(name) for name in ("KERAS_BACKEND", "XLA_FLAGS")}

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_mtl  # noqa: E402


def tiny_trunk(input_shape=(16, 16, 3), filters=4, name="tiny_trunk"):
    """A two-layer CNN trunk (no batch norm: batch statistics would couple
    examples, and the masking tests compare sub-batches)."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(inputs, x, name=name)


def tiny_model(tasks, input_shape=(16, 16, 3), **kwargs):
    kwargs.setdefault("head_units", (8,))
    return keras_mtl.build_model(tiny_trunk(input_shape), tasks, **kwargs)


def bn_backbone(filters=(4, 8, 8)):
    """Conv / batch-norm / ReLU blocks at 32 px (strides 2): the architecture
    tests' backbone (task-specific BN needs batch norm)."""
    x = inputs = keras.Input((32, 32, 3))
    for i, f in enumerate(filters):
        x = keras.layers.Conv2D(f, 3, strides=2, padding="same", name=f"conv_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
    return keras.Model(inputs, x, name="bn_backbone")


def random_labels(tasks, n, image_shape=(16, 16, 3), seed=0):
    """Valid random labels for each task, with the shapes the model expects."""
    rng = np.random.default_rng(seed)
    labels = {}
    for task in tasks:
        shape = task.label_shape(n, image_shape)
        if task.sparse_labels:
            labels[task.name] = rng.integers(0, task.num_classes, shape).astype("int32")
        elif task.activation == "sigmoid":
            labels[task.name] = rng.integers(0, 2, shape).astype("float32")
        else:
            labels[task.name] = rng.normal(size=shape).astype("float32")
    return labels


def random_images(n, image_shape=(16, 16, 3), seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *image_shape)).astype("float32")


#: For tests that use `tf.GradientTape` or other TensorFlow-only APIs.
needs_tf = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="uses TensorFlow's own APIs"
)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def make_weighting(name, tasks, **overrides):
    """A fresh instance of the registered method `name` for `tasks`: its
    defaults, the arguments the tasks determine, and what the built-in
    methods that need arguments get here (any registered method, a plugin's
    included, is built without edits here)."""
    cls = keras_mtl.weighting.get_class(name)
    names = [t.name for t in tasks]
    arguments = cls.arguments_from_tasks(tasks)
    if cls is keras_mtl.weighting.InverseSize:
        arguments["counts"] = {n: 10 + i for i, n in enumerate(names)}
    if cls is keras_mtl.weighting.Static:
        arguments["weights"] = {n: 1.0 + i / 2 for i, n in enumerate(names)}
    return cls(**{**arguments, **overrides})


def load_example(name):
    """`examples/<name>.py` as a module (its `main` is the script's)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def registered_methods(level=None):
    """The registry names of keras_mtl's own methods (pytest parameters).

    A method another test registers (tests/custom_weighting.py) is left
    out: the list must not depend on which test modules were collected
    first, and child processes, which import only keras_mtl, must know
    every name in it."""
    return [
        name for name, cls in keras_mtl.weighting.methods(level).items()
        if cls.__module__.startswith("keras_mtl.")
    ]
