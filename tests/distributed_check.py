"""Child process for tests/test_distributed.py: 2 replicas vs 1, same global batch.

Usage: python distributed_check.py MODE METHOD [METHOD ...], MODE a
gradient-level method's mode or "loss" for loss-level methods. Trains each
method for `EPOCHS` epochs of 5 steps and prints the max absolute difference of the trained
variables and of the weighting's state (`state_arrays()`: its variables and
seed states) as `MAXDIFF <method> <value>`.
"""

import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import keras_mtl  # noqa: E402
from keras_mtl import tasks as T  # noqa: E402
from keras_mtl.weighting.gradient_base import GradientWeighting  # noqa: E402


class NormalisedGradients(GradientWeighting):
    """w_i = 1/‖g_i‖: depends on the Gram matrix, so a wrong cross-replica
    reduction shows."""

    def gram_weights(self, gram, losses, labelled, training):
        return ops.where(labelled, ops.rsqrt(ops.maximum(ops.diagonal(gram), 1e-12)), 0.0)


def make_weighting(method, mode):
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


def train(strategy, mode, method, x, y):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        tasks = [T.Regression("a"), T.BinaryClassification("b"), T.Segmentation("s", 3)]
        model = keras_mtl.build_model(trunk(), tasks, head_units=(8,))
        model.compile(optimizer=keras.optimizers.SGD(0.01), weighting=make_weighting(method, mode))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model.fit(dataset, epochs=EPOCHS.get(mode, 1), verbose=0)
    # The weighting's state on every replica: each must hold the 1-replica value.
    state = [[np.asarray(c, "float64") for c in strategy.experimental_local_results(v.value)]
             for v in model.weighting.variables]
    return [np.asarray(v) for v in model.trainable_variables], state


def main(mode, *methods):
    rng = np.random.default_rng(0)
    n = 40  # 5 steps of a global batch of 8
    x = rng.uniform(0, 1, (n, 16, 16, 3)).astype("float32")
    y = {
        "a": rng.normal(size=(n, 1)).astype("float32"),
        "b": rng.integers(0, 2, (n, 1)).astype("float32"),
        "s": rng.integers(0, 3, (n, 16, 16)).astype("int32"),
    }
    # Uneven partial labels, so replicas hold different label counts.
    y["a"][rng.random(n) < 0.5] = np.nan
    y["s"][rng.random(n) < 0.3] = -1
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    for method in methods:
        two = train(tf.distribute.MirroredStrategy(devices[:2]), mode, method, x, y)
        one = train(tf.distribute.OneDeviceStrategy(devices[0]), mode, method, x, y)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(one[0], two[0]))
        for (a,), copies in zip(one[1], two[1]):
            assert len(copies) == 2, copies
            diff = max([diff] + [float(np.max(np.abs(a - b))) for b in copies])
        print("MAXDIFF", method, diff, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
