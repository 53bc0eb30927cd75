"""Child process for tests/test_distributed.py: 2 replicas vs 1, same global batch.

Usage: python distributed_check.py MODE METHOD [METHOD ...], MODE a
gradient-level method's mode or "loss" for loss-level methods. Trains each
method for `EPOCHS` epochs of 5 steps (`distribution_cases`) and prints
the largest difference (`distribution_cases.difference`) of the trained
variables and of the weighting's state on each replica (its variables, seed
states included) as `MAXDIFF <method> <value>`.
"""

import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

from distribution_cases import EPOCHS, data, difference, model  # noqa: E402


def train(strategy, mode, method, x, y):
    with strategy.scope():
        built = model(method, mode)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    built.fit(dataset, epochs=EPOCHS.get(mode, 1), verbose=0)
    # The weighting's state on every replica: each must hold the 1-replica value.
    state = [[np.asarray(c, "float64") for c in strategy.experimental_local_results(v.value)]
             for v in built.weighting.variables]
    return [np.asarray(v) for v in built.trainable_variables], state


def main(mode, *methods):
    x, y = data()
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    # One strategy for every model of the process: a second MirroredStrategy
    # would clash with the first's collectives (docs/reliability.md).
    mirrored = tf.distribute.MirroredStrategy(devices[:2])
    for method in methods:
        two = train(mirrored, mode, method, x, y)
        one = train(tf.distribute.OneDeviceStrategy(devices[0]), mode, method, x, y)
        diff = max(difference(a, b) for a, b in zip(one[0], two[0]))
        for (a,), copies in zip(one[1], two[1]):
            assert len(copies) == 2, copies
            diff = max([diff] + [difference(a, b) for b in copies])
        print("MAXDIFF", method, diff, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
