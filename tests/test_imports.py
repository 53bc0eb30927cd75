"""`import keras_mtl` and the core path (build, compile, fit) on JAX import
neither TensorFlow, KerasTuner nor TensorFlow Datasets.

Each check runs in a fresh interpreter with `KERAS_BACKEND=jax`, so it holds
whatever backend runs this file and whatever earlier tests imported.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")

HEAVY = ("tensorflow", "keras_tuner", "tensorflow_datasets")


def run_fresh(code):
    """Runs `code` in a new interpreter on JAX; returns its last stdout line
    parsed as JSON."""
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


LOADED = f"""
import json, sys
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


def test_import_loads_no_tensorflow_tuner_or_tfds():
    assert run_fresh("import keras_mtl" + LOADED) == []


@pytest.mark.slow  # a child process importing JAX and Keras (12 s)
def test_build_compile_fit_on_jax_loads_no_tensorflow():
    code = """
    import keras
    import numpy as np
    import keras_mtl

    trunk = keras.Sequential([keras.Input((8, 8, 3)),
                              keras.layers.Conv2D(4, 3, strides=2, activation="relu")])
    tasks = [keras_mtl.tasks.Regression("a"),
             keras_mtl.tasks.BinaryClassification("b"),
             keras_mtl.tasks.MulticlassClassification("c", num_classes=3)]
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype("float32")
    y = {"a": np.zeros((8, 1), "float32"), "b": np.ones((8, 1), "float32"),
         "c": np.arange(8, dtype="int32") % 3}
    for weighting in ("uncertainty", "dwa",
                      keras_mtl.weighting.PCGrad(mode="representation"),
                      keras_mtl.weighting.MGDA(mode="params")):
        model = keras_mtl.build_model(trunk, tasks, head_units=(4,))
        model.compile(optimizer="sgd", weighting=weighting)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        model.evaluate(x, y, verbose=0)
        model.predict(x, verbose=0)
    """
    assert run_fresh(textwrap.dedent(code) + LOADED) == []


@pytest.mark.slow  # child processes importing TensorFlow (11 s)
def test_a_keras_file_loads_after_import_keras_mtl_alone(tmp_path):
    """`.keras` files name keras_mtl's classes; `import keras_mtl` registers
    them (lazy submodules must not break loading in a fresh process)."""
    path = str(tmp_path / "model.keras")
    save = f"""
    import keras
    import keras_mtl

    trunk = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, strides=2)])
    tasks = [keras_mtl.tasks.Regression("a"), keras_mtl.tasks.BinaryClassification("b")]
    model = keras_mtl.build_model(trunk, tasks, head_units=(4,),
                                  architecture=keras_mtl.architectures.MMoE(num_experts=2))
    model.compile(weighting="uncertainty")
    model.save({path!r})
    print("[]")
    """
    run_fresh(save)
    load = f"""
    import json, sys
    import keras
    import keras_mtl

    model = keras.saving.load_model({path!r})
    print(json.dumps([type(model).__name__, type(model.weighting).__name__,
                      [m for m in {HEAVY!r} if m in sys.modules]]))
    """
    assert run_fresh(load) == ["MultiTaskModel", "Uncertainty", []]


def test_every_public_name_resolves():
    code = """
    import json
    import keras_mtl

    missing = [n for n in keras_mtl.__all__ if getattr(keras_mtl, n, None) is None]
    listed = set(keras_mtl.__all__) <= set(dir(keras_mtl))
    print(json.dumps([missing, listed, keras_mtl.datasets.shapes.__name__]))
    """
    assert run_fresh(code) == [[], True, "keras_mtl.datasets.shapes"]


def test_unknown_attribute_is_an_attribute_error():
    import keras_mtl

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        keras_mtl.nope  # noqa: B018


def test_collecting_the_tests_leaves_the_environment_alone():
    # Every child process a test starts inherits this process's environment:
    # a module that sets KERAS_BACKEND when collected would move them all to
    # another backend (tests/conftest.py: collect_ignore_glob).
    from conftest import ENVIRONMENT_AT_START

    assert {name: os.environ.get(name) for name in ENVIRONMENT_AT_START} == ENVIRONMENT_AT_START
