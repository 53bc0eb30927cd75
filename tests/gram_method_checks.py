"""Degenerate-gradient checks for the Gram-based gradient methods (MGDA,
PCGrad, CAGrad, IMTL, Aligned-MTL): identical, parallel, opposite, zero,
near-zero, tiny and huge gradients, and tasks without labels; and, for those
and GradVac and UPGrad, gradients scaled by 1e-20 ... 1e20."""

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
    does not stop the others; no labels at all give zeros; and gradients of
    any magnitude give the same weights (`check_scale_equivariance`)."""
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
    check_scale_equivariance(factory)


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


#: The common factors of `check_scale_equivariance`: float32 holds gradients
#: so scaled, not the products of their entries (~1e±40).
SCALES = (1e-20, 1e-10, 1.0, 1e10, 1e20)
#: The same range in powers of two (2^±66 ≈ 1e±20), for bfloat16 gradients:
#: bfloat16 rounding commutes with such a scaling, so the method sees exactly
#: `s` times the gradients of `s = 1`.
POWER_OF_TWO_SCALES = (2.0**-66, 2.0**-33, 1.0, 2.0**33, 2.0**66)


def scale_cases(seed=0):
    """`{name: (grads, counts)}`: four tasks' gradients `(4, 6)` whose
    weights are well-conditioned (rounding the gradients moves them by far
    less than 1e-4), and the task counts."""
    rng = np.random.default_rng(seed)
    g, h, k, m = rng.normal(size=(4, 6))
    labelled = [4.0, 4.0, 4.0, 4.0]
    return {
        "conflicting": (np.stack([g, h, -0.5 * g + 0.2 * k, m]), labelled),
        # Norms 16 apart (100 apart, float32 rounding of the gradients alone
        # moves Aligned-MTL's weights, from 1/sqrt of the eigenvalues, by
        # ~4e-5, and 1e4 apart IMTL-G's by 1e-3: no test of scale then).
        "unequal_norms": (np.stack([g, 4.0 * h, 0.25 * k, m]), labelled),
        # A zero gradient and an unlabelled task, both left out.
        "left_out": (np.stack([g, np.zeros(6), h, k]), [4.0, 4.0, 0.0, 4.0]),
    }


def _scaled_runs(weighting):
    """`{path: f}` for a built `weighting`: `f(grads, counts)` gives numpy
    `(combined, weights)` (combined flattened, float64) of one training step
    from the weighting's initial state (restored before each call, so
    stateful methods such as GradVac start afresh every time), for each way
    the training step calls the method, eager and traced with
    `tf.function`:

    - `representation`: `combine` on `(T, batch, ...)` gradients;
    - `params`: `combine_parts` on per-variable float32 gradients;
    - `params_bfloat16`: the same with bfloat16 gradients (`gradient_dtype`).
    """
    initial = weighting.state_arrays()
    names = weighting.task_names
    losses = {n: tf.constant(1.0) for n in names}

    def representation(grads, counts):
        return weighting.combine(grads, losses, counts, training=True)

    def params(parts, counts):
        combined, weights = weighting.combine_parts(parts, losses, counts, training=True)
        return tf.concat([tf.reshape(c, (-1,)) for c in combined], 0), weights

    def as_representation(grads):
        return tf.constant(np.asarray(grads, "float32").reshape(len(names), 2, 3))

    def as_parts(dtype):
        def convert(grads):
            grads = tf.constant(np.asarray(grads, "float32"))
            return [[tf.cast(tf.reshape(g[:4], (2, 2)), dtype), tf.cast(g[4:], dtype)]
                    for g in tf.unstack(grads)]

        return convert

    ways = {
        "representation": (representation, as_representation),
        "params": (params, as_parts("float32")),
        "params_bfloat16": (params, as_parts("bfloat16")),
    }
    runs = {}
    for path, (function, convert) in ways.items():
        for how, run in (("eager", function), ("graph", tf.function(function))):
            def call(grads, counts, run=run, convert=convert):
                weighting.load_state(initial)
                counts = {n: tf.constant(c) for n, c in zip(names, counts)}
                combined, weights = run(convert(grads), counts)
                return numpy(combined).astype("float64").ravel(), numpy(weights).astype("float64")

            runs[f"{path} ({how})"] = call
    return runs


def check_scale_equivariance(factory, degree=1):
    """For a `factory()` weighting (deterministic: seeded if it draws): task
    gradients multiplied by any `s` in 1e-20 ... 1e20 give finite results,
    `s ** degree` times the combined gradient of `s = 1` and
    `s ** (degree - 1)` times its weights (`degree=1`, most methods: the same
    weights; Nash-MTL's `d` does not change with `s`: `degree=0`), within
    1e-4 relative (norms), eager and traced, in both modes' paths and with
    bfloat16 gradients."""
    runs = _scaled_runs(built(factory(), ["a", "b", "c", "d"]))
    for name, (grads, counts) in scale_cases().items():
        for path, run in runs.items():
            reference = run(grads, counts)
            for s in POWER_OF_TWO_SCALES if "bfloat16" in path else SCALES:
                combined, weights = run(s * grads, counts)
                where = f"{name}, {path}, scale {s:g}: weights {weights}, at 1: {reference[1]}"
                assert np.all(np.isfinite(combined)) and np.all(np.isfinite(weights)), where
                unscaled = (combined / s**degree, weights / s ** (degree - 1))
                for value, expected in zip(unscaled, reference):
                    error = np.linalg.norm(value - expected)
                    assert error <= 1e-4 * np.linalg.norm(expected), where
