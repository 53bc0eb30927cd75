"""The training step's independent gradient samples (`gradient_samples > 1`:
SDMGrad, MoDo): each sub-batch's per-task gradients are those of its own
masked mean loss, computed apart with a tape."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_mtl import tasks as T
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.gradient_base import parts_combination

from conftest import needs_tf, random_images, random_labels, tiny_model

TASKS = [T.Regression("a"), T.BinaryClassification("b"), T.Segmentation("s", 3)]


class SampleRecorder(GradientWeighting):
    """Records the samples it is given (eagerly) and steps along sample
    0's mean gradient."""

    supported_modes = ("params",)
    gradient_samples = 3

    def combine_samples(self, samples, losses, counts=None, training=True, after=None):
        self.seen = [[[np.array(p) for p in task] for task in sample] for sample in samples]
        weights = ops.ones((len(self.task_names),)) / len(self.task_names)
        return parts_combination(weights, samples[0], after), weights


@needs_tf
def test_each_sample_is_the_gradient_of_its_sub_batch():
    # 7 examples: sub-batches {0, 3, 6}, {1, 4}, {2, 5}; task "a" has no
    # label in examples 1 and 4, so none in sub-batch 1.
    model = tiny_model(TASKS)
    x, y = random_images(7), random_labels(TASKS, 7)
    y["a"][[1, 4]] = np.nan
    y["a"][0] = np.nan
    weighting = SampleRecorder()
    model.compile(optimizer="sgd", weighting=weighting, run_eagerly=True)
    variables = model.trunk.trainable_variables
    expected = []
    for s in range(3):
        rows = [i for i in range(7) if i % 3 == s]
        with tf.GradientTape(persistent=True) as tape:
            losses = model.task_losses({k: v[rows] for k, v in y.items()},
                                       model(x[rows], training=True))
        expected.append([[g.numpy() if g is not None else np.zeros(v.shape)
                          for g, v in zip(tape.gradient(losses[t.name], variables), variables)]
                         for t in TASKS])
    model.train_on_batch(x, y)
    assert len(weighting.seen) == 3
    for s in range(3):
        for t in range(len(TASKS)):
            for got, want in zip(weighting.seen[s][t], expected[s][t]):
                np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6,
                                           err_msg=f"sample {s}, task {TASKS[t].name}")
    # Sub-batch 1 has no label of "a": its gradient there is 0, not NaN.
    assert all(np.all(g == 0) for g in weighting.seen[1][0])
    assert any(np.any(g != 0) for g in weighting.seen[0][0])


@needs_tf
def test_the_samples_weighted_by_their_counts_add_up_to_the_batch_gradient():
    model = tiny_model(TASKS)
    x, y = random_images(9, seed=3), random_labels(TASKS, 9, seed=3)
    weighting = SampleRecorder()
    model.compile(optimizer="sgd", weighting=weighting, run_eagerly=True)
    variables = model.trunk.trainable_variables
    with tf.GradientTape() as tape:
        losses = model.task_losses(y, model(x, training=True))
    batch = [g.numpy() for g in tape.gradient(losses["b"], variables)]
    model.train_on_batch(x, y)
    # Every example is labelled for "b": three sub-batches of 3.
    for k, want in enumerate(batch):
        got = sum(weighting.seen[s][1][k] for s in range(3)) / 3
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)
    # The samples differ (independent sub-batches, not one gradient thrice).
    assert not np.allclose(weighting.seen[0][1][0], weighting.seen[1][1][0])


@pytest.mark.slow  # make test trains SDMGrad and MoDo traced in the registry-wide tests
def test_sample_methods_train_in_a_traced_step():
    # Graph mode (and XLA on JAX): the same step compiled, finite weights.
    model = tiny_model(TASKS)
    model.compile(optimizer="adam", weighting="sdmgrad")
    x, y = random_images(8), random_labels(TASKS, 8)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    weights = [history[f"weight_{t.name}"][-1] for t in TASKS]
    np.testing.assert_allclose(sum(weights), 1.0, rtol=1e-5)
    assert keras.backend.backend() in ("tensorflow", "jax")
