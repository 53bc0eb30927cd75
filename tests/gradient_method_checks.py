"""Helpers for the tests of gradient-level methods (`test_weighting_<method>.py`):
calling `combine` / `gram_weights` on small matrices, config round trips, and
one end-to-end fit / save / load."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import tasks as T

from conftest import random_images, random_labels, tiny_model

#: The end-to-end model's tasks: "a" has no label in the first batch of each
#: epoch (see `check_fit_save_load`).
TASKS = [T.Regression("a"), T.BinaryClassification("b"), T.Segmentation("s", 3)]


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def built(weighting, names=("a", "b")):
    """`weighting`, built for the tasks `names`."""
    weighting.build({n: () for n in names})
    return weighting


def _losses(weighting, losses):
    """`{task: scalar}` from a list in task order (default 1 each). A loss of
    0 (or below) is a labelled task's loss: presence is in `counts`."""
    if losses is None:
        losses = [1.0] * len(weighting.task_names)
    return {n: tf.constant(float(v)) for n, v in zip(weighting.task_names, losses)}


def _counts(weighting, counts):
    """`{task: labelled examples}` from a list in task order (0 marks a task
    without labels in the step), or `None` (every task labelled)."""
    if counts is None:
        return None
    return {n: tf.constant(float(c)) for n, c in zip(weighting.task_names, counts)}


def combine(weighting, grads, losses=None, counts=None, training=True, activations=None):
    """`weighting.combine` on `(T, ...)` gradients (and, for GradDrop, the
    activations `z`, `(batch, ...)`); numpy `(combined, weights)`. `counts`
    (a list in task order, 0 for a task without labels) defaults to every
    task labelled."""
    if activations is not None:
        activations = tf.constant(np.asarray(activations, "float32"))
    combined, weights = weighting.combine(
        tf.constant(np.asarray(grads, "float32")), _losses(weighting, losses),
        _counts(weighting, counts), training=training, activations=activations,
    )
    return numpy(combined), numpy(weights)


def sample_parts(*arrays):
    """`combine_samples`' `samples` from `(T, P)` arrays, one per sample:
    each task's gradient is one shared variable."""
    return [[[keras.ops.convert_to_tensor(np.asarray(g, "float32"))] for g in a] for a in arrays]


def unit_losses(names):
    """`{task: 1.0}` for the tasks `names`."""
    return {n: keras.ops.convert_to_tensor(1.0) for n in names}


def labelled_counts(labelled):
    """`{task: count}` from `{task: bool}`: 4 labelled examples, or none."""
    return {n: keras.ops.convert_to_tensor(4.0 if on else 0.0) for n, on in labelled.items()}


def gram_weights(weighting, grads, losses=None, counts=None, training=True):
    """`weighting.gram_weights` on the Gram matrix of `(T, ...)` gradients;
    `counts` as in `combine`."""
    flat = np.asarray(grads, "float32").reshape(len(weighting.task_names), -1)
    vector = weighting.stack(_losses(weighting, losses))
    labelled = weighting.labelled(_counts(weighting, counts))
    weights = weighting.gram_weights(tf.constant(flat @ flat.T), vector, labelled, training)
    return numpy(weights)


def check_config_round_trip(weighting):
    """`from_config` and Keras (de)serialisation keep the config."""
    config = weighting.get_config()
    assert type(weighting).from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(weighting))
    assert type(restored) is type(weighting)
    assert restored.get_config() == config


def _saved_values(weighting):
    """The weighting's whole state (`state_arrays()`: its variables, seed
    states included), named by its variables."""
    arrays = weighting.state_arrays()
    assert len(arrays) == len(weighting.variables)
    return [(v.name, a) for v, a in zip(weighting.variables, arrays)]


def check_fit_save_load(weighting, tmp_path):
    """Trains the three-task tiny model (`TASKS`) with `weighting` for 2
    epochs of 2 steps (8 examples, batches of 4, not shuffled; "a" has NaN
    labels for the first 4 examples, so no label in the first step of each
    epoch); checks finite losses, weights and `weight_<task>` metrics; saves
    a `.keras` file and loads it: same config and same weighting variables
    (seed-generator states included). Returns `(model, history.history)`.
    """
    keras.utils.set_random_seed(1)
    model = tiny_model(TASKS)
    model.compile(optimizer="adam", weighting=weighting)
    x, y = random_images(8), random_labels(TASKS, 8)
    y["a"][:4] = np.nan
    history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0).history
    for key in ["loss"] + [f"{t.name}_loss" for t in TASKS] + [f"weight_{t.name}" for t in TASKS]:
        assert key in history and np.all(np.isfinite(history[key])), (key, history)
    assert all(np.all(np.isfinite(numpy(v))) for v in model.weights)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored.weighting) is type(weighting)
    assert restored.weighting.get_config() == weighting.get_config()
    expected, got = _saved_values(weighting), _saved_values(restored.weighting)
    assert [n for n, _ in expected] == [n for n, _ in got]
    for (name, a), (_, b) in zip(expected, got):
        np.testing.assert_array_equal(a, b, err_msg=name)
    return model, history


#: The modes of each method's `test_fit_save_and_load`. `make test` keeps
#: representation mode; params mode (the default) runs in `make test-slow`
#: (CI), to keep `make test` under 10 minutes: in `make test` every method
#: still trains in params mode (tests/test_nonfinite.py) and several save and
#: reload there (tests/test_numpy_scalars.py).
FIT_SAVE_LOAD_MODES = [pytest.param("params", marks=pytest.mark.slow), "representation"]
