"""The gradient-level training step (keras_mtl.training.step, TensorFlow primitives)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mtl import tasks as T
from keras_mtl.weighting.gradient_base import GradientWeighting

from conftest import random_images, random_labels, tiny_model

TASKS = [T.Regression("a"), T.BinaryClassification("b"), T.Segmentation("s", 3)]


class SumOfGradients(GradientWeighting):
    """Σ g_i: must train exactly like the plain sum of losses."""

    def gram_weights(self, gram, losses, labelled, training):
        return ops.ones_like(losses)


class Recorder(GradientWeighting):
    """Keeps the last Gram matrix, to check what the step hands over."""

    def build(self, shape):
        super().build(shape)
        n = len(self.task_names)
        self.gram = self.add_weight(name="gram", shape=(n, n), initializer="zeros", trainable=False)

    def gram_weights(self, gram, losses, labelled, training):
        self.gram.assign(gram)
        return ops.ones_like(losses)


def _data(n=8):
    x, y = random_images(n), random_labels(TASKS, n)
    y["a"][: n // 2] = np.nan  # partial labels on the way
    return x, y


def _trained(weighting, epochs=2):
    keras.utils.set_random_seed(1)
    model = tiny_model(TASKS)
    model.compile(optimizer=keras.optimizers.SGD(0.05), weighting=weighting)
    x, y = _data()
    history = model.fit(x, y, batch_size=4, epochs=epochs, shuffle=False, verbose=0)
    return model, history


@pytest.mark.parametrize("mode", ["params", "representation"])
def test_sum_of_gradients_equals_the_plain_sum_of_losses(mode):
    reference, ref_history = _trained("equal")
    model, history = _trained(SumOfGradients(mode=mode))
    for a, b in zip(reference.trainable_variables, model.trainable_variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
    for key in ("loss", "a_loss", "s_pixel_accuracy", "weight_b"):
        np.testing.assert_allclose(ref_history.history[key], history.history[key], rtol=1e-4)


def test_params_mode_gram_is_that_of_the_trunk_gradients():
    import tensorflow as tf

    weighting = Recorder(mode="params")
    model = tiny_model(TASKS)
    model.compile(optimizer=keras.optimizers.SGD(0.0), weighting=weighting)
    x, y = _data(4)
    with tf.GradientTape(persistent=True) as tape:
        losses = model.task_losses(y, model(x, training=True))
    flat = np.stack([
        np.concatenate([np.ravel(g) for g in tape.gradient(losses[n], model.trunk.trainable_variables)])
        for n in model.task_names
    ])
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    np.testing.assert_allclose(np.asarray(weighting.gram), flat @ flat.T, rtol=1e-4, atol=1e-8)


def test_unsupported_mode_is_a_clear_error():
    class RepresentationOnly(SumOfGradients):
        supported_modes = ("representation",)

    with pytest.raises(ValueError, match=r"argument `mode`.*supports \('representation',\).*mode='params'"):
        RepresentationOnly(mode="params")


def _one_step_update(weighting):
    keras.utils.set_random_seed(1)
    model = tiny_model(TASKS)
    model.compile(optimizer=keras.optimizers.SGD(1.0), weighting=weighting)
    before = [np.asarray(v).copy() for v in model.trunk.trainable_variables]
    x, y = _data(4)
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    return [b - np.asarray(v) for b, v in zip(before, model.trunk.trainable_variables)]


@pytest.mark.parametrize("method", ["pcgrad", "mgda"])
def test_bfloat16_task_gradients_give_the_update_to_bfloat16_rounding(method):
    from keras_mtl import weighting as W

    exact = _one_step_update(W.get_class(method)(mode="params"))
    rounded = _one_step_update(W.get_class(method)(mode="params", gradient_dtype="bfloat16"))
    flat_exact = np.concatenate([np.ravel(u) for u in exact])
    flat_rounded = np.concatenate([np.ravel(u) for u in rounded])
    # bfloat16 keeps 8 significant bits: each task gradient within 2^-8
    # relative; their combination (float32, from the rounded gradients) so.
    error = np.linalg.norm(flat_rounded - flat_exact) / np.linalg.norm(flat_exact)
    assert 0 < error < 2**-7, error


def test_gradient_dtype_is_checked_and_saved():
    from keras_mtl import weighting as W

    with pytest.raises(ValueError, match=r"`gradient_dtype`.*Received: gradient_dtype='float16'"):
        W.PCGrad(gradient_dtype="float16")
    config = W.PCGrad(gradient_dtype="bfloat16").get_config()
    assert W.PCGrad.from_config(config).gradient_dtype == "bfloat16"


@pytest.mark.parametrize("block_size", [1000, 5, 3])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_combine_parts_in_slices_equals_combine_on_the_matrix(monkeypatch, block_size, dtype):
    # Variables larger than BLOCK_SIZE are stacked in slices (1000: none is;
    # 5 and 3: a (2, 4) variable in slices of 5 + 3 or 3 + 3 + 2, and slices
    # that cut across a row); the Gram matrix and the combination must not
    # change.
    from keras_mtl.weighting import gradient_base
    from keras_mtl.weighting.mgda import MGDA

    from gradient_method_checks import built

    monkeypatch.setattr(gradient_base, "BLOCK_SIZE", block_size)
    rng = np.random.default_rng(0)
    shapes = [(2, 4), (3,), (1, 1)]
    parts = [[rng.normal(size=s).astype("float32") for s in shapes] for _ in range(3)]
    if dtype == "bfloat16":  # the matrix then holds what bfloat16 keeps
        parts = [[ops.convert_to_numpy(ops.cast(ops.cast(g, dtype), "float32")) for g in p]
                 for p in parts]
    names = ("a", "b", "c")
    losses = {n: ops.convert_to_tensor(1.0 + i) for i, n in enumerate(names)}
    counts = {n: ops.convert_to_tensor(4.0) for n in names}
    flat = np.stack([np.concatenate([np.ravel(g) for g in p]) for p in parts])
    expected, expected_weights = built(MGDA(), names).combine(
        ops.convert_to_tensor(flat), losses, counts, training=False)
    held = [[ops.cast(ops.convert_to_tensor(g), dtype) for g in p] for p in parts]
    combined, weights = built(MGDA(gradient_dtype=dtype), names).combine_parts(
        held, losses, counts, training=False)
    assert [tuple(c.shape) for c in combined] == shapes
    np.testing.assert_allclose(ops.convert_to_numpy(weights), ops.convert_to_numpy(expected_weights),
                               rtol=1e-5)
    np.testing.assert_allclose(np.concatenate([np.ravel(ops.convert_to_numpy(c)) for c in combined]),
                               ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-6)
