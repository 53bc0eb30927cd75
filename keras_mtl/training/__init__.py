"""The training step of `MultiTaskModel` (`keras_mtl.training.step`) and the
backend primitives it runs on (`tensorflow.py`, `jax.py`)."""

import keras

from keras_mtl.training.step import extra_loss

__all__ = ["extra_loss", "replicas", "representation_gradients", "test_step", "train_step"]


def _engine_module():
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from keras_mtl.training import tensorflow as module
    elif backend == "jax":
        from keras_mtl.training import jax as module
    else:
        raise NotImplementedError(
            f"keras_mtl trains on the TensorFlow and JAX backends; the {backend!r} "
            "backend is not supported yet. Set KERAS_BACKEND=tensorflow or jax."
        )
    return module


def replicas():
    """The replicas of the current `tf.distribute` strategy (1 without one,
    and on other backends, whose arrays are global)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def train_step(model, *args):
    """Keras' `train_step` for a `MultiTaskModel` (`(data,)` on TensorFlow,
    `(state, data)` on JAX)."""
    return _engine_module().train_step(model, *args)


def test_step(model, *args):
    """Keras' `test_step` for a `MultiTaskModel`."""
    return _engine_module().test_step(model, *args)


def representation_gradients(model, x, y, sample_weight=None):
    """Per-task gradients of the task losses w.r.t. the shared `z` for one
    batch, in inference mode: `(grads, losses, counts)` (see
    `keras_mtl.training.step.representation_gradients`).

    Args:
        model: A compiled `MultiTaskModel` whose heads read one shared `z`.
        x: A batch of inputs.
        y: `{task: labels}` for the batch (missing labels masked as in
            training).
        sample_weight: Optional sample weights, as in `fit`.
    """
    from keras_mtl.training import step

    return step.representation_gradients(model, x, y, sample_weight, _engine_module().Engine())
