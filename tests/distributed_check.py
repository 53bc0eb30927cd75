"""Child process for tests/test_distributed.py: 2 replicas vs 1, same global batch.

Usage: python distributed_check.py MODE METHOD [METHOD ...]. Prints, per
method, the max absolute difference of the trained variables as
`MAXDIFF <method> <value>`.
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
    return keras_mtl.weighting.get_class(method)(mode=mode)


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
    model.fit(dataset, epochs=1, verbose=0)
    return [np.asarray(v) for v in model.trainable_variables]


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
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(one, two))
        print("MAXDIFF", method, diff, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
