"""Degenerate-gradient checks for the Gram-based gradient methods (MGDA,
PCGrad, CAGrad, IMTL, Aligned-MTL): identical, parallel, opposite, zero,
near-zero, tiny and huge gradients, and tasks without labels."""

import numpy as np
import tensorflow as tf

from gradient_method_checks import built
from gradient_method_checks import numpy


def combiners(weighting):
    """`{"eager": f, "graph": f}`: `f(grads, losses, counts)` calls
    `weighting.combine` eagerly or traced once with `tf.function` (as in
    `fit`), and returns numpy `(combined, weights)`."""

    def run(grads, losses, counts):
        loss_dict = {n: losses[i] for i, n in enumerate(weighting.task_names)}
        count_dict = {n: counts[i] for i, n in enumerate(weighting.task_names)}
        return weighting.combine(grads, loss_dict, count_dict, training=True)

    traced = tf.function(run)

    def wrap(function):
        def call(grads, losses, counts):
            combined, weights = function(
                tf.constant(np.asarray(grads, "float32")),
                tf.constant(np.asarray(losses, "float32")),
                tf.constant(np.asarray(counts, "float32")),
            )
            return numpy(combined), numpy(weights)

        return call

    return {"eager": wrap(run), "graph": wrap(traced)}


def degenerate_cases(num_params=6, seed=0):
    """`{name: (grads, losses, counts)}` for three tasks: the gradients
    LibMTL's versions trip on, and tasks without labels (count 0). Losses of
    0 or below are labelled tasks' losses, weighted like any other."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=num_params)
    h = rng.normal(size=num_params)
    zero = np.zeros(num_params)
    ones = [1.0, 1.0, 1.0]
    counts = [4.0, 4.0, 4.0]
    return {
        "identical": (np.stack([g, g, g]), ones, counts),
        "parallel": (np.stack([g, 2 * g, 0.5 * g]), ones, counts),
        "opposite": (np.stack([g, -g, h]), ones, counts),
        "zero_labelled": (np.stack([g, zero, h]), ones, counts),
        "near_zero": (np.stack([g, 1e-6 * h, h]), ones, counts),
        "tiny": (1e-15 * np.stack([g, h, g + h]), ones, counts),
        "huge": (1e15 * np.stack([g, h, g - h]), ones, counts),
        # Labelled tasks whose loss is 0 or negative: weighted as usual.
        "identical_loss_zero": (np.stack([g, g, g]), [0.0, -1.0, 0.0], counts),
        # "b" unlabelled: its gradient is 0, as the model gives it.
        "unlabelled": (np.stack([g, zero, h]), [1.0, 0.0, 1.0], [4.0, 0.0, 4.0]),
        # "b" unlabelled with a nonzero gradient: left out all the same.
        "unlabelled_nonzero": (np.stack([g, h, h]), [1.0, 0.0, 1.0], [4.0, 0.0, 4.0]),
        "all_unlabelled": (np.zeros((3, num_params)), [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
    }


def check_degenerate_inputs(factory, mean_multiple):
    """For a `factory()` weighting (one, traced once): finite results
    everywhere (eager and traced); identical gradients give `mean_multiple`
    times their mean, with equal weights, whatever the (labelled) losses; a
    task without labels (count 0) or with a zero gradient gets weight 0 and
    does not stop the others; no labels at all give zeros."""
    runs = combiners(built(factory(), ["a", "b", "c"]))
    for name, (grads, losses, counts) in degenerate_cases().items():
        for how, run in runs.items():
            combined, weights = run(grads, losses, counts)
            where = f"{name} ({how}): weights {weights}"
            assert np.all(np.isfinite(combined)) and np.all(np.isfinite(weights)), where
            if name in ("identical", "identical_loss_zero"):
                np.testing.assert_allclose(
                    combined, mean_multiple * grads.mean(0), rtol=1e-4, atol=1e-6, err_msg=where
                )
                np.testing.assert_allclose(weights, weights[0], rtol=1e-4, err_msg=where)
            if name in ("unlabelled", "unlabelled_nonzero", "zero_labelled"):
                assert weights[1] == 0.0, where
                assert np.linalg.norm(combined) > 1e-3 * np.linalg.norm(grads), where
            if name == "all_unlabelled":
                np.testing.assert_array_equal(weights, 0.0, err_msg=where)
                np.testing.assert_array_equal(combined, 0.0, err_msg=where)


def drawn_orders(seed, n, draws):
    """The task orders PCGrad and GradVac draw (numpy reference): argsort of
    seeded uniform keys, each task itself last, itself dropped."""
    import keras

    generator = keras.random.SeedGenerator(seed)
    out = []
    for _ in range(draws):
        keys = numpy(keras.random.uniform((n, n), seed=generator))
        np.fill_diagonal(keys, 2.0)
        out.append(np.argsort(keys, axis=1)[:, : n - 1])
    return out
